//! Startup at scale: the time from spawning diaryd on a large diary to its
//! "listening" line, after a crash (no saved index: every line is read)
//! and after a clean stop (the saved index), against `cat FILE >
//! /dev/null` of the same file, which the page cache serves too.
//!
//! The diary is written in the store's format as a busy diary looks: two
//! entries in three carry a request tag and an author, some text is
//! Chinese. Runs alternate, so the three figures see the same machine.

use crate::median_of;
use crate::target::Target;
use serde::Serialize;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Serialize)]
pub struct StartupReport {
    pub entries: u64,
    pub file_bytes: u64,
    /// Bytes of the saved index per entry.
    pub index_bytes_per_entry: f64,
    pub cat_ms: Vec<f64>,
    pub scan_ms: Vec<f64>,
    pub saved_index_ms: Vec<f64>,
    pub scan_over_cat: f64,
    pub saved_index_over_cat: f64,
}

impl StartupReport {
    pub fn describe(&self) -> String {
        let runs = |v: &[f64]| {
            v.iter()
                .map(|ms| format!("{ms:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "{} entries ({} MB), median of {} runs each, alternated:\n\
             cat FILE > /dev/null      {:>7.1} ms  ({})\n\
             diaryd, whole file read  {:>7.1} ms  ({}) = {:.2} x cat\n\
             diaryd, saved index      {:>7.1} ms  ({}) = {:.2} x cat\n\
             saved index: {:.1} bytes per entry\n",
            self.entries,
            self.file_bytes / 1_000_000,
            self.cat_ms.len(),
            median_of(&self.cat_ms),
            runs(&self.cat_ms),
            median_of(&self.scan_ms),
            runs(&self.scan_ms),
            self.scan_over_cat,
            median_of(&self.saved_index_ms),
            runs(&self.saved_index_ms),
            self.saved_index_over_cat,
            self.index_bytes_per_entry,
        )
    }
}

/// Writes `entries` entries, one a second from 2026-01-01 (UTC).
fn write_diary(path: &Path, entries: u64) -> io::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "# diary v2 id=7c0e5b1f9d2a4c6e8b3f1a5d7e9c2b4a created=2026-01-01T00:00:00.000+00:00"
    )?;
    let start = 1_767_225_600_000i64;
    let mut line = Vec::new();
    for id in 1..=entries {
        line.clear();
        let stamp = diary::wire::entry::format_timestamp_utc(start + id as i64 * 1000);
        let text = match id % 4 {
            0 => "今天下雨了，我在家写日记。",
            1 => "went for a walk by the river, tea after",
            2 => "a day like any other, with some words in it",
            _ => "meeting notes: ship the index, measure it",
        };
        let mut attrs = String::new();
        if id % 3 != 0 {
            diary::wire::entry::push_req_attr(&format!("{id:016x}-1"), &mut attrs);
            diary::wire::entry::push_by_attr("me@laptop", &mut attrs);
        }
        diary::wire::entry::encode_line_digits(&id.to_string(), &stamp, text, &attrs, &mut line);
        out.write_all(&line)?;
    }
    out.flush()
}

fn time_cat(file: &Path) -> io::Result<f64> {
    let started = Instant::now();
    let status = Command::new("cat")
        .arg(file)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "cat {}: {status}",
            file.display()
        )));
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

fn time_diaryd(file: &Path) -> io::Result<f64> {
    let target = Target::diaryd_on(file, "never", &[])?;
    Ok(target.startup.as_secs_f64() * 1000.0)
}

pub fn run(entries: u64, rounds: usize) -> io::Result<StartupReport> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("diary.log");
    let index = dir.path().join("diary.log.index");
    write_diary(&file, entries)?;
    // Started once and stopped cleanly: the index is saved.
    Target::diaryd_on(&file, "never", &[])?.terminate(Duration::from_secs(60))?;
    let saved = std::fs::read(&index)?;
    let file_bytes = std::fs::metadata(&file)?.len();
    let (mut cat_ms, mut scan_ms, mut saved_index_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        cat_ms.push(time_cat(&file)?);
        // As after a crash: no saved index (the runs are killed, which
        // saves none).
        std::fs::remove_file(&index)?;
        scan_ms.push(time_diaryd(&file)?);
        std::fs::write(&index, &saved)?;
        saved_index_ms.push(time_diaryd(&file)?);
    }
    let cat = median_of(&cat_ms);
    Ok(StartupReport {
        entries,
        file_bytes,
        index_bytes_per_entry: saved.len() as f64 / entries.max(1) as f64,
        scan_over_cat: median_of(&scan_ms) / cat,
        saved_index_over_cat: median_of(&saved_index_ms) / cat,
        cat_ms,
        scan_ms,
        saved_index_ms,
    })
}
