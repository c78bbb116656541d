//! `diaryd --check FILE`: a diary read as diaryd's start would read it,
//! without serving it or changing a byte (no lock taken, no torn end cut,
//! no identity added), for backups and cron.
//!
//! It may import `store` and `wire`.

use crate::store::saved_index;
use crate::store::scan::{self, CutReason, Mode, ScanError};
use crate::wire::entry;
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// What a check found.
#[derive(Debug)]
pub struct Check {
    pub(crate) path: PathBuf,
    pub(crate) bytes: u64,
    pub(crate) lines: u64,
    pub(crate) entries: u64,
    /// Amendment and deletion lines among the entries.
    pub(crate) records: u64,
    /// `2` with a `# diary v2` header; `1` for a file begun without one.
    pub(crate) format: u32,
    pub(crate) identity: Option<String>,
    pub(crate) first_time: Option<String>,
    pub(crate) last_time: Option<String>,
    /// A torn end diaryd's next start would set aside: (line, bytes, why).
    pub(crate) torn: Option<(u64, u64, &'static str)>,
    /// A line diaryd would refuse to start on: (line, why).
    pub(crate) refused: Option<(u64, String)>,
    /// Whether the index saved at the last stop matches the file, and why not.
    pub(crate) saved_index: Result<(), String>,
    /// A running diaryd holds the file.
    pub(crate) in_use: bool,
}

impl Check {
    /// Whole and clean: nothing to cut, nothing refused.
    pub fn is_whole(&self) -> bool {
        self.torn.is_none() && self.refused.is_none()
    }

    /// The report, one `name: value` line each.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "file: {}", self.path.display());
        let _ = writeln!(out, "bytes: {}", self.bytes);
        let _ = writeln!(
            out,
            "format: {}",
            match self.format {
                1 => "1 (begun without a header; diaryd gives it an id line at its next start)"
                    .into(),
                v => format!("{v}"),
            }
        );
        if let Some(id) = &self.identity {
            let _ = writeln!(out, "diary id: {id}");
        }
        let _ = writeln!(out, "lines: {}", self.lines);
        let _ = writeln!(
            out,
            "entries: {} ({} of them amendments or deletions)",
            self.entries, self.records
        );
        if let (Some(first), Some(last)) = (&self.first_time, &self.last_time) {
            let _ = writeln!(out, "first entry: {first}");
            let _ = writeln!(out, "last entry: {last}");
        }
        let _ = writeln!(
            out,
            "saved index: {}",
            match &self.saved_index {
                Ok(()) => "matches the file (the next start skips the scan)".to_string(),
                Err(why) => format!("not used ({why}); the next start reads the whole file"),
            }
        );
        if self.in_use {
            let _ = writeln!(out, "in use: a running diaryd holds it");
        }
        match (&self.refused, &self.torn) {
            (Some((line, why)), _) => {
                let _ = writeln!(
                    out,
                    "refused: line {line}: {why}; diaryd will not start on this file until it is fixed"
                );
            }
            (None, Some((line, bytes, why))) => {
                let _ = writeln!(
                    out,
                    "torn end: {bytes} bytes from line {line} ({why}); diaryd's next start sets them aside in {}",
                    torn_path(&self.path).display()
                );
            }
            (None, None) => {
                let _ = writeln!(out, "whole: yes");
            }
        }
        out
    }
}

fn torn_path(path: &Path) -> PathBuf {
    let mut side = path.as_os_str().to_owned();
    side.push(".torn");
    PathBuf::from(side)
}

/// Reads the diary at `path` as a start of diaryd would, changing nothing.
pub fn check(path: &Path) -> io::Result<Check> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a file",
            path.display()
        )));
    }
    let in_use = matches!(
        file.try_lock_shared(),
        Err(std::fs::TryLockError::WouldBlock)
    );
    let _ = file.unlock();
    let mut check = Check {
        path: path.to_path_buf(),
        bytes: meta.len(),
        lines: 0,
        entries: 0,
        records: 0,
        format: 1,
        identity: None,
        first_time: None,
        last_time: None,
        torn: None,
        refused: None,
        saved_index: saved_index::load(path, &file, &meta).map(|_| ()),
        in_use,
    };
    let scanned = match scan::scan(&file, scan::From::START, Mode::Recover) {
        Ok(scanned) => scanned,
        Err(ScanError::Io(e)) => return Err(e),
        Err(ScanError::Bad(bad)) => {
            check.refused = Some((bad.line, bad.reason));
            return Ok(check);
        }
    };
    check.lines = scanned.lines;
    check.entries = scanned.index.len() as u64;
    check.records = scanned.records.len() as u64;
    check.identity = scanned.identity.clone();
    check.format = header_version(&file).unwrap_or(1);
    let time = |millis: Option<&i64>| millis.map(|&m| entry::format_timestamp(m));
    check.first_time = time(scanned.index.millis.first());
    check.last_time = time(scanned.index.millis.last());
    if let Some(cut) = &scanned.cut {
        let why = match cut.why {
            CutReason::Unfinished => "the last line has no newline: a write cut short",
            CutReason::Hole => "NUL bytes: a write torn by a power cut",
        };
        check.torn = Some((cut.line, meta.len() - cut.at, why));
    }
    Ok(check)
}

/// The version of a `# diary vN` header on the first line.
fn header_version(file: &File) -> Option<u32> {
    use std::os::unix::fs::FileExt;
    let mut first = [0u8; 32];
    let n = file.read_at(&mut first, 0).ok()?;
    let rest = first[..n].strip_prefix(b"# diary v")?;
    let digits: Vec<u8> = rest
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}
