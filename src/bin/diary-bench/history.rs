//! History at scale: startup time and the cost of `/past 100` on a small
//! and a large diary, written straight to files in the store's format.

use crate::target::Target;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Instant;

#[derive(Serialize)]
pub struct Diary {
    pub entries: u64,
    pub file_bytes: u64,
    pub startup_ms: f64,
    pub past100_p50_us: f64,
    pub past100_mean_us: f64,
}

#[derive(Serialize)]
pub struct HistoryReport {
    pub small: Diary,
    pub large: Diary,
    /// Large over small, for `/past 100` (median).
    pub past100_ratio: f64,
}

impl HistoryReport {
    pub fn describe(&self) -> String {
        let line = |d: &Diary| {
            format!(
                "{:>9} entries ({:>4} MB): startup {:>7.1} ms, /past 100 p50 {:>6.0} µs, mean {:>6.0} µs\n",
                d.entries,
                d.file_bytes / 1_000_000,
                d.startup_ms,
                d.past100_p50_us,
                d.past100_mean_us
            )
        };
        format!(
            "{}{}/past 100 ratio (large / small): {:.2}\n",
            line(&self.small),
            line(&self.large),
            self.past100_ratio
        )
    }
}

/// Writes a diary of `entries` entries, one a second from 2026-01-01.
fn write_diary(path: &Path, entries: u64) -> io::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    let mut line = Vec::new();
    let start = 1_767_225_600_000i64;
    for id in 1..=entries {
        line.clear();
        let stamp = diary::wire::entry::format_timestamp(start + id as i64 * 1000);
        let text = format!("entry {id}: a day like any other, 日记 with some words in it");
        diary::wire::entry::encode_line(id, &stamp, &text, &mut line);
        out.write_all(&line)?;
    }
    out.flush()
}

fn measure(entries: u64, requests: usize) -> io::Result<Diary> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("diary.log");
    write_diary(&file, entries)?;
    let file_bytes = std::fs::metadata(&file)?.len();
    let target = Target::diaryd_on(&file, "never", &[])?;
    let stream = TcpStream::connect(target.addr)?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut histogram = Histogram::<u64>::new(3).expect("valid");
    let mut line = String::new();
    // The first requests warm the page cache and the allocator.
    for i in 0..requests + requests / 10 {
        let started = Instant::now();
        (&stream).write_all(b"/past 100\n")?;
        let mut lines = 0;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(io::Error::other("the server closed the connection"));
            }
            if line == "end\n" {
                break;
            }
            lines += 1;
        }
        if lines != 100.min(entries) {
            return Err(io::Error::other(format!("/past 100 gave {lines} lines")));
        }
        if i >= requests / 10 {
            histogram
                .record(started.elapsed().as_nanos() as u64)
                .expect("in range");
        }
    }
    Ok(Diary {
        entries,
        file_bytes,
        startup_ms: target.startup.as_secs_f64() * 1000.0,
        past100_p50_us: histogram.value_at_quantile(0.5) as f64 / 1000.0,
        past100_mean_us: histogram.mean() / 1000.0,
    })
}

pub fn run(small: u64, large: u64, requests: usize) -> io::Result<HistoryReport> {
    let small = measure(small, requests)?;
    let large = measure(large, requests)?;
    Ok(HistoryReport {
        past100_ratio: large.past100_p50_us / small.past100_p50_us,
        small,
        large,
    })
}
