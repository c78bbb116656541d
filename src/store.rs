//! The append-only diary file: recovery at open, the id → offset index,
//! buffered appends with one group commit per loop iteration, and reads.
//!
//! Appends only fill an in-memory buffer; [`Store::commit`] writes it with one
//! `write` and (policy `always`) one `fdatasync`, so every write of a loop
//! iteration shares one disk flush. Reads see only committed entries. A commit
//! that fails cuts the file back to its last good length and forgets the
//! batch, so the file never holds a partial line and ids stay dense.

use crate::entry::{self, LineError};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the file is flushed to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` once per loop iteration, before the writes are acknowledged.
    Always,
    /// `fdatasync` about once a second; a crash may lose the last second.
    Interval,
    /// Leave flushing to the OS; a crash of the machine may lose recent writes.
    Never,
}

impl FsyncPolicy {
    /// The names the command line takes, in the order of the variants.
    pub const NAMES: [&'static str; 3] = ["always", "interval", "never"];
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<FsyncPolicy, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "interval" => Ok(FsyncPolicy::Interval),
            "never" => Ok(FsyncPolicy::Never),
            _ => Err(format!(
                "{s:?} is not an fsync policy; use one of {}",
                FsyncPolicy::NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Interval => "interval",
            FsyncPolicy::Never => "never",
        })
    }
}

/// How long `interval` lets written data wait for its `fdatasync`.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Why the diary could not be opened.
#[derive(Debug)]
pub enum OpenError {
    Io(PathBuf, io::Error),
    Locked(PathBuf),
    Corrupt {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Io(path, e) => write!(f, "cannot open {}: {e}", path.display()),
            OpenError::Locked(path) => write!(
                f,
                "{} is already in use by another diaryd (the file is locked); \
                 stop that server first, or pass --file to serve another diary",
                path.display()
            ),
            OpenError::Corrupt { path, line, reason } => write!(
                f,
                "{p}:{line}: not a diary entry: {reason}.\n\
                 Look at it with: sed -n '{line}p' {p}\n\
                 Every line must be ID<TAB>RFC3339-TIME<TAB>TEXT with ids 1, 2, 3, ...; \
                 fix that line by hand, or restore the file from a backup, then start again.",
                p = path.display()
            ),
        }
    }
}

impl std::error::Error for OpenError {}

/// What recovery did at open.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Bytes of an unfinished last line that were cut off and where they went.
    pub torn_tail: Option<(usize, PathBuf)>,
}

/// A commit that did not reach the disk; every id from `first_lost` on was forgotten.
#[derive(Debug)]
pub struct CommitError {
    pub first_lost: u64,
    pub error: io::Error,
}

/// What [`Store::append`] gave a new entry.
#[derive(Debug, Clone, Copy)]
pub struct Appended<'a> {
    pub id: u64,
    /// `id` in decimal.
    pub id_text: &'a str,
    pub timestamp: &'a str,
}

pub struct Store {
    file: File,
    path: PathBuf,
    policy: FsyncPolicy,
    /// `offsets[i]` is where entry `i + 1` starts, pending ones included.
    offsets: Vec<u64>,
    /// `millis[i]` is entry `i + 1`'s time; never decreasing, so it can be bisected.
    millis: Vec<i64>,
    /// Entries written to the file (visible to reads).
    committed: usize,
    /// File length covering exactly the committed entries.
    committed_len: u64,
    pending: Vec<u8>,
    /// Written but not yet `fdatasync`ed (policy `interval`).
    unsynced_since: Option<Instant>,
    /// The last `fdatasync` failed: what was written may not be on the
    /// disk, so no write is acknowledged until one succeeds (as Redis does
    /// after a failed background fsync).
    sync_failed: bool,
    cached_stamp: (i64, String),
    /// The last appended id in decimal, for its line and its ack.
    id_text: itoa::Buffer,
    /// The time of the batch being built, read at its first append.
    batch_clock: Option<i64>,
}

impl Store {
    /// Opens (creating if needed) and locks the diary, recovering a torn tail.
    pub fn open(path: &Path, policy: FsyncPolicy) -> Result<(Store, Recovery), OpenError> {
        let io_err = |e| OpenError::Io(path.to_path_buf(), e);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked(path.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        let mut store = Store {
            file,
            path: path.to_path_buf(),
            policy,
            offsets: Vec::new(),
            millis: Vec::new(),
            committed: 0,
            committed_len: 0,
            pending: Vec::with_capacity(64 * 1024),
            unsynced_since: None,
            sync_failed: false,
            cached_stamp: (i64::MIN, String::new()),
            id_text: itoa::Buffer::new(),
            batch_clock: None,
        };
        let recovery = store.load()?;
        Ok((store, recovery))
    }

    fn load(&mut self) -> Result<Recovery, OpenError> {
        let io_err = |e| OpenError::Io(self.path.clone(), e);
        let mut reader = BufReader::with_capacity(1 << 20, &self.file);
        let mut line = Vec::with_capacity(256);
        let mut offset = 0u64;
        let mut recovery = Recovery::default();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io_err)?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                recovery.torn_tail = Some((line.len(), self.set_aside(&line)?));
                self.file.set_len(offset).map_err(io_err)?;
                self.file.sync_all().map_err(io_err)?;
                break;
            }
            let expected = self.offsets.len() as u64 + 1;
            let corrupt = |reason: String| OpenError::Corrupt {
                path: self.path.clone(),
                line: expected,
                reason,
            };
            let decoded = entry::decode_line(&line[..n - 1])
                .map_err(|e: LineError| corrupt(e.to_string()))?;
            if decoded.id != expected {
                return Err(corrupt(format!(
                    "expected id {expected}, found {}",
                    decoded.id
                )));
            }
            let last = self.millis.last().copied().unwrap_or(i64::MIN);
            self.offsets.push(offset);
            self.millis.push(decoded.millis.max(last));
            offset += n as u64;
        }
        self.committed = self.offsets.len();
        self.committed_len = offset;
        Ok(recovery)
    }

    fn set_aside(&self, fragment: &[u8]) -> Result<PathBuf, OpenError> {
        let mut side = self.path.clone().into_os_string();
        side.push(".torn");
        let side = PathBuf::from(side);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&side)
            .map_err(|e| OpenError::Io(side.clone(), e))?;
        file.write_all(fragment)
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(|e| OpenError::Io(side.clone(), e))?;
        Ok(side)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Buffers a new entry; it is stored by the next [`Store::commit`].
    pub fn append(&mut self, text: &str) -> Appended<'_> {
        // One clock read per batch: its entries are stored together anyway.
        let now = *self.batch_clock.get_or_insert_with(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        });
        let millis = now.max(self.millis.last().copied().unwrap_or(i64::MIN));
        if self.cached_stamp.0 != millis {
            self.cached_stamp = (millis, entry::format_timestamp(millis));
        }
        let id = self.offsets.len() as u64 + 1;
        let start = self.committed_len + self.pending.len() as u64;
        let id_text = self.id_text.format(id);
        entry::encode_line_digits(id_text, &self.cached_stamp.1, text, &mut self.pending);
        self.offsets.push(start);
        self.millis.push(millis);
        Appended {
            id,
            id_text,
            timestamp: &self.cached_stamp.1,
        }
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes the buffered entries with one `write`, and flushes them as the
    /// policy says. On failure the batch is forgotten and the file cut back.
    pub fn commit(&mut self) -> Result<(), CommitError> {
        self.batch_clock = None;
        if self.pending.is_empty() {
            return Ok(());
        }
        let earlier_sync = if self.sync_failed {
            self.sync_now()
        } else {
            Ok(())
        };
        let result = earlier_sync
            .and_then(|()| self.file.write_all(&self.pending))
            .and_then(|()| {
                match self.policy {
                    FsyncPolicy::Always => self.file.sync_data()?,
                    FsyncPolicy::Interval => {
                        self.unsynced_since.get_or_insert_with(Instant::now);
                    }
                    FsyncPolicy::Never => {}
                }
                Ok(())
            });
        match result {
            Ok(()) => {
                self.committed_len += self.pending.len() as u64;
                self.committed = self.offsets.len();
                self.pending.clear();
                Ok(())
            }
            Err(error) => {
                let first_lost = self.committed as u64 + 1;
                // Best effort: if even this fails, the next open cuts the torn tail.
                let _ = self.file.set_len(self.committed_len);
                self.offsets.truncate(self.committed);
                self.millis.truncate(self.committed);
                self.pending.clear();
                Err(CommitError { first_lost, error })
            }
        }
    }

    /// For policy `interval`: how long until written data is due for its flush.
    pub fn sync_deadline(&self) -> Option<Instant> {
        self.unsynced_since.map(|t| t + SYNC_INTERVAL)
    }

    /// For policy `interval`: flushes if the deadline has passed.
    pub fn sync_if_due(&mut self, now: Instant) -> io::Result<()> {
        match self.sync_deadline() {
            Some(deadline) if now >= deadline => self.sync_now(),
            _ => Ok(()),
        }
    }

    /// Flushes whatever was written (used at shutdown whatever the policy).
    /// Until a flush succeeds after one failed, every commit fails.
    pub fn sync_now(&mut self) -> io::Result<()> {
        self.unsynced_since = None;
        let result = self.file.sync_data();
        self.sync_failed = result.is_err();
        result
    }

    /// Number of committed entries, which is also the newest committed id.
    pub fn len(&self) -> u64 {
        self.committed as u64
    }

    pub fn is_empty(&self) -> bool {
        self.committed == 0
    }

    /// Bytes of committed entries.
    pub fn bytes(&self) -> u64 {
        self.committed_len
    }

    /// The first committed id whose time is at or after `millis` (len + 1 if none).
    pub fn first_at_or_after(&self, millis: i64) -> u64 {
        self.millis[..self.committed].partition_point(|&m| m < millis) as u64 + 1
    }

    fn offset_of(&self, id: u64) -> u64 {
        let i = (id - 1) as usize;
        if i < self.committed {
            self.offsets[i]
        } else {
            self.committed_len
        }
    }

    /// Size in bytes of the committed entries `first..end` (ids, end exclusive).
    pub fn span_len(&self, first: u64, end: u64) -> u64 {
        self.offset_of(end) - self.offset_of(first)
    }

    /// Appends the lines of committed entries `first..end` (end exclusive) to `out`.
    pub fn read_span(&self, first: u64, end: u64, out: &mut Vec<u8>) -> io::Result<()> {
        assert!(first >= 1 && first <= end && end <= self.len() + 1);
        let start = self.offset_of(first);
        let len = (self.offset_of(end) - start) as usize;
        let old = out.len();
        out.resize(old + len, 0);
        if let Err(e) = self.file.read_exact_at(&mut out[old..], start) {
            out.truncate(old);
            return Err(e);
        }
        Ok(())
    }

    /// Calls `f` with each committed entry `first..end` (end exclusive),
    /// newest first, line without its newline, until it breaks.
    pub fn for_each_rev(
        &self,
        first: u64,
        end: u64,
        mut f: impl FnMut(u64, &[u8]) -> ControlFlow<()>,
    ) -> io::Result<()> {
        const CHUNK: u64 = 64 * 1024;
        let mut buf = Vec::new();
        let mut hi = end;
        while hi > first {
            // Take whole entries back from `hi` until the chunk is full (at least one).
            let mut lo = hi - 1;
            while lo > first && self.span_len(lo - 1, hi) <= CHUNK {
                lo -= 1;
            }
            buf.clear();
            self.read_span(lo, hi, &mut buf)?;
            let base = self.offset_of(lo);
            for id in (lo..hi).rev() {
                let from = (self.offset_of(id) - base) as usize;
                let to = (self.offset_of(id + 1) - base) as usize - 1;
                if f(id, &buf[from..to]).is_break() {
                    return Ok(());
                }
            }
            hi = lo;
        }
        Ok(())
    }

    /// Calls `f` with each committed entry `first..end`, oldest first, line
    /// with its newline, reading at most about `chunk` bytes at a time.
    pub fn for_each(
        &self,
        first: u64,
        end: u64,
        chunk: usize,
        mut f: impl FnMut(u64, &[u8]) -> ControlFlow<()>,
    ) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut lo = first;
        while lo < end {
            let mut hi = lo + 1;
            while hi < end && self.span_len(lo, hi + 1) <= chunk as u64 {
                hi += 1;
            }
            buf.clear();
            self.read_span(lo, hi, &mut buf)?;
            let base = self.offset_of(lo);
            for id in lo..hi {
                let from = (self.offset_of(id) - base) as usize;
                let to = (self.offset_of(id + 1) - base) as usize;
                if f(id, &buf[from..to]).is_break() {
                    return Ok(());
                }
            }
            lo = hi;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> Store {
        Store::open(path, FsyncPolicy::Always).unwrap().0
    }

    #[test]
    fn append_commit_reopen_keeps_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("diary.log");
        let mut store = open(&path);
        assert_eq!(store.append("one").id, 1);
        assert_eq!(store.append("二\n行").id, 2);
        assert_eq!(store.len(), 0, "pending entries are not visible");
        store.commit().unwrap();
        assert_eq!(store.len(), 2);
        drop(store);
        let store = open(&path);
        assert_eq!(store.len(), 2);
        let mut out = Vec::new();
        store.read_span(2, 3, &mut out).unwrap();
        let line = entry::decode_line(&out[..out.len() - 1]).unwrap();
        assert_eq!((line.id, line.text().as_str()), (2, "二\n行"));
    }

    #[test]
    fn second_open_is_refused_while_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("diary.log");
        let _first = open(&path);
        match Store::open(&path, FsyncPolicy::Always) {
            Err(e @ OpenError::Locked(_)) => assert!(e.to_string().contains("already in use")),
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn time_lookup_bisects() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir.path().join("d"));
        store.append("a");
        store.append("b");
        store.commit().unwrap();
        assert_eq!(store.first_at_or_after(i64::MIN), 1);
        assert_eq!(store.first_at_or_after(i64::MAX), 3);
    }
}
