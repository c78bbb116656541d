//! The append-only diary file: recovery and identity at open, the index,
//! buffered appends with one group commit per loop iteration, reads, and
//! watching that the file at the path is still the one being written.
//!
//! Appends only fill an in-memory buffer; [`Store::commit`] writes it with one
//! `write` and (policy `always`) one `fdatasync`, so every write of a loop
//! iteration shares one disk flush. Reads see only committed entries. A commit
//! that fails cuts the file back to its last good length and forgets the
//! batch, so the file never holds a partial line and ids stay dense.
//!
//! diaryd owns its file while it runs (`store/watch.rs`).
//! Before every commit (and once a second when idle) it checks that the
//! path still names the file it holds
//! and that the file is the size it wrote. Lines a person appended are
//! indexed if they are entries; a copy of this diary saved over it (an
//! editor's save) is re-opened, with what it lacks of the acknowledged
//! entries appended back first; anything else refuses writes (`err io`,
//! with what happened and what to do) and keeps serving reads, so no write
//! is ever acknowledged into a file that is no longer the diary.
//!
//! `store/` holds the scan, the syncer thread, the disk seam, the watch and
//! the saved index. It may import `wire` only: no sockets, no protocol.

pub mod check;
pub mod disk;
mod id_digits;
pub(crate) mod lines;
mod saved_index;
pub(crate) mod scan;
pub mod syncer;
mod watch;

pub(crate) use watch::Lost;

use crate::store::disk::Disk;
use crate::store::scan::{CutReason, Index, Mode, ScanError};
use crate::store::syncer::Syncer;
use crate::wire::entry;
use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
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
pub(crate) const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// A small step back of the clock (NTP slewing, a VM's correction) is
/// absorbed: the entry keeps the previous time. A bigger one is believed
/// and logged; the diary's times are then out of order, which every time
/// query allows for.
const CLOCK_SLACK_MS: i64 = 2_000;

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
                "{p}:{line}: {reason}.\n\
                 Look at it with: sed -n '{line}p' {q}\n\
                 Every line must be an entry ID<TAB>TIME<TAB>TEXT with ids 1, 2, 3, ... \
                 (or a line starting with #); fix that line by hand, or restore the file \
                 from a backup, then start again.",
                p = path.display(),
                q = shell_quote(path),
            ),
        }
    }
}

impl std::error::Error for OpenError {}

/// `path` quoted for a POSIX shell, for the commands hints suggest.
pub(crate) fn shell_quote(path: &Path) -> String {
    let text = path.display().to_string();
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%".contains(&b))
    {
        return text;
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// What recovery did at open.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The end of the file that was cut off, and where its bytes went.
    pub cut: Option<RecoveryCut>,
    /// The file had no identity (written by an earlier version), and was
    /// given one by an appended line.
    pub identity_added: bool,
    /// The index came from `FILE.index`, saved at the last clean stop,
    /// instead of a scan of the file.
    pub from_saved_index: bool,
    /// The file's permission bits, when users other than its owner may
    /// read or write it (a diary begun by hand, or before diaryd made them
    /// private).
    pub(crate) open_to_others: Option<u32>,
}

#[derive(Debug)]
pub struct RecoveryCut {
    pub(crate) bytes: usize,
    /// The file's line where the cut began.
    pub(crate) line: u64,
    pub(crate) why: CutReason,
    pub(crate) side: PathBuf,
}

impl Recovery {
    /// What to tell the owner of a diary others may read, if they may.
    pub fn exposure_warning(&self, path: &Path) -> Option<String> {
        let mode = self.open_to_others?;
        Some(format!(
            "{p} may be read by users other than you (mode {mode:o}), and it holds your \
             diary in plain text; run: chmod 600 {q}",
            p = path.display(),
            q = shell_quote(path),
        ))
    }

    /// What to tell the person who owns the file, if anything was cut.
    pub fn warning(&self, path: &Path) -> Option<String> {
        let cut = self.cut.as_ref()?;
        let (file, side) = (path.display(), cut.side.display());
        Some(match cut.why {
            CutReason::Unfinished => format!(
                "{file}:{line} was a last line without its newline ({bytes} bytes). Either a \
                 crash cut a write short (such a write was never acknowledged), or the file was \
                 edited and saved without a final newline. It was cut off and kept in {side}. \
                 If it was a complete entry of yours, stop diaryd, put it back with \
                 `tail -n 1 {qs} >> {qf}`, and start diaryd again.",
                line = cut.line,
                bytes = cut.bytes,
                qs = shell_quote(&cut.side),
                qf = shell_quote(path),
            ),
            CutReason::Hole => format!(
                "{file}:{line} held NUL bytes: a write torn by a crash or power cut, never \
                 acknowledged. From that line to the end ({bytes} bytes) was cut off and kept \
                 in {side}.",
                line = cut.line,
                bytes = cut.bytes,
            ),
        })
    }
}

/// Written entries that will not be stored after all (a flush failed, or
/// the file changed under them before they reached the disk): every id
/// from `first_lost` on was forgotten, pending ones included.
#[derive(Debug)]
pub(crate) struct Loss {
    pub(crate) first_lost: u64,
    pub(crate) error: io::Error,
}

/// A commit that did not reach the disk; every entry not committed before
/// it was forgotten.
#[derive(Debug)]
pub struct CommitError {
    pub(crate) error: io::Error,
}

/// A line that changes an earlier entry, kept after it (append-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    /// Its text replaces entry N's (`amends=N`).
    Amends(u64),
    /// Entry N is hidden (`deletes=N`).
    Deletes(u64),
}

impl Record {
    pub(crate) fn target(self) -> u64 {
        match self {
            Record::Amends(n) | Record::Deletes(n) => n,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Record::Amends(_) => entry::AMENDS,
            Record::Deletes(_) => entry::DELETES,
        }
    }

    /// The record a stored line is, if it is one.
    pub(crate) fn of(line: &entry::EntryLine) -> Option<Record> {
        let number = |v: &str| v.parse().ok().filter(|&n| n > 0);
        if let Some(n) = line.attr(entry::AMENDS).and_then(number) {
            return Some(Record::Amends(n));
        }
        line.attr(entry::DELETES)
            .and_then(number)
            .map(Record::Deletes)
    }
}

/// How an entry was changed: the newest amendment (0: none), and whether
/// it was deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Edit {
    pub(crate) latest: u64,
    pub(crate) deleted: bool,
}

/// What [`Store::append`] gave a new entry.
#[derive(Debug, Clone, Copy)]
pub struct Appended<'a> {
    pub(crate) id: u64,
    /// `id` in decimal.
    pub(crate) id_text: &'a str,
    pub(crate) timestamp: &'a str,
}

/// The device and inode of a file: what "the same file" means.
type FileId = (u64, u64);

/// How far the file goes: its entries, bytes and lines (of every kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct FileMark {
    entries: usize,
    bytes: u64,
    lines: u64,
}

/// A time given to an entry, in milliseconds and as written.
#[derive(Debug)]
struct StampCache {
    millis: i64,
    text: String,
}

pub struct Store {
    disk: Box<dyn Disk>,
    path: PathBuf,
    policy: FsyncPolicy,
    identity: String,
    /// Entries, pending ones included.
    index: Index,
    /// Entries written to the file (visible to reads).
    committed: usize,
    /// File length covering exactly the committed entries.
    committed_len: u64,
    /// Complete lines in the file, of every kind.
    lines: u64,
    pending: Vec<u8>,
    /// The last appended id in decimal, for its line and its ack.
    id_text: id_digits::IdDigits,
    /// Attributes of the entry being appended.
    attrs: String,
    /// The time of the batch being built, read at its first append.
    batch_clock: Option<i64>,
    /// The time given to the last batch.
    last_stamp: i64,
    /// The newest time given, as written: the next entry of the same
    /// millisecond reuses the text.
    cached_stamp: StampCache,
    /// Amendments and deletions.
    journal: Journal,
    /// The file at the path, as diaryd holds it.
    watched: Watched,
    /// What is durable, and the flushes that make it so.
    flush: FlushState,
}

/// Amendments and deletions, appended as lines of their own.
#[derive(Default)]
struct Journal {
    /// By the entry they change.
    edits: HashMap<u64, Edit>,
    /// The ids of amendment and deletion lines.
    records: std::collections::HashSet<u64>,
}

/// The file diaryd holds, against what is at the path (see `watch`).
struct Watched {
    held: FileId,
    lost: Option<Lost>,
    /// The last file seen at the path and refused, while it stays as it was.
    refused: Option<watch::Refused>,
}

/// What is durable, and the flushes that make it so.
#[derive(Default)]
struct FlushState {
    /// Written but not yet `fdatasync`ed (policy `interval`).
    unsynced_since: Option<Instant>,
    /// The last `fdatasync` failed: what was written may not be on the
    /// disk, so no write is acknowledged until one succeeds (as Redis does
    /// after a failed background fsync).
    sync_failed: bool,
    /// Policy `always` with a syncer: flushes run off the loop's thread.
    syncer: Option<Syncer>,
    waker: Option<std::sync::Arc<mio::Waker>>,
    /// What a flush has made durable.
    durable: FileMark,
    /// What the flush in flight makes durable when it returns.
    sync_target: FileMark,
    losses: Vec<Loss>,
}

impl Store {
    /// Opens (creating if needed) and locks the diary, recovering a torn end.
    pub fn open(path: &Path, policy: FsyncPolicy) -> Result<(Store, Recovery), OpenError> {
        Store::open_on(path, policy, |file| Box::new(file))
    }

    /// As [`Store::open`], writing through the [`Disk`] that `wrap` makes of
    /// the opened file (a fault-injecting layer in a test).
    pub fn open_on(
        path: &Path,
        policy: FsyncPolicy,
        wrap: impl FnOnce(File) -> Box<dyn Disk>,
    ) -> Result<(Store, Recovery), OpenError> {
        let io_err = |e| OpenError::Io(path.to_path_buf(), e);
        let mut file = open_locked(path).map_err(|e| match e {
            None => OpenError::Locked(path.to_path_buf()),
            Some(e) => io_err(e),
        })?;
        let meta = file.metadata().map_err(io_err)?;
        let held = (meta.dev(), meta.ino());
        let (mut scan, from_saved_index) = read_index(path, &file, &meta)?;
        let mut recovery = Recovery {
            from_saved_index,
            open_to_others: Some(meta.mode() & 0o777).filter(|m| m & 0o077 != 0),
            ..Recovery::default()
        };
        if let Some(cut) = scan.cut.take() {
            recovery.cut = Some(cut_torn_end(&file, path, meta.len(), &cut)?);
        }
        let identity = match scan.identity.take() {
            Some(identity) => identity,
            None => {
                recovery.identity_added = scan.len > 0;
                give_identity(&mut file, &mut scan).map_err(io_err)?
            }
        };
        let last_stamp = scan.index.millis.last().copied().unwrap_or(i64::MIN);
        let records = std::mem::take(&mut scan.records);
        let store = Store {
            disk: wrap(file),
            path: path.to_path_buf(),
            policy,
            identity,
            committed: scan.index.len(),
            committed_len: scan.len,
            lines: scan.lines,
            index: scan.index,
            pending: Vec::with_capacity(64 * 1024),
            id_text: id_digits::IdDigits::default(),
            attrs: String::new(),
            batch_clock: None,
            last_stamp,
            cached_stamp: StampCache {
                millis: i64::MIN,
                text: String::new(),
            },
            journal: Journal::default(),
            watched: Watched {
                held,
                lost: None,
                refused: None,
            },
            flush: FlushState::default(),
        };
        let mut store = store;
        store.flush.durable = store.written();
        store
            .note_records(&records)
            .map_err(|e| OpenError::Io(path.to_path_buf(), e))?;
        Ok((store, recovery))
    }

    /// Takes in the amendment and deletion lines a scan found (`ids`).
    fn note_records(&mut self, ids: &[u64]) -> io::Result<()> {
        for &id in ids {
            let line = self.read_line(id)?;
            if let Ok(e) = entry::decode_line(&line)
                && let Some(record) = Record::of(&e)
            {
                self.note_record(id, record);
            }
        }
        Ok(())
    }

    pub(crate) fn note_record(&mut self, id: u64, record: Record) {
        self.journal.records.insert(id);
        let edit = self.journal.edits.entry(record.target()).or_default();
        match record {
            Record::Amends(_) => edit.latest = edit.latest.max(id),
            Record::Deletes(_) => edit.deleted = true,
        }
    }

    /// How entry `id` was changed since it was written, if it was.
    pub(crate) fn edit_of(&self, id: u64) -> Option<Edit> {
        self.journal.edits.get(&id).copied()
    }

    /// Whether any entry was ever amended or deleted.
    pub(crate) fn has_edits(&self) -> bool {
        !self.journal.edits.is_empty()
    }

    /// Whether line `id` is an amendment or a deletion.
    pub(crate) fn is_record(&self, id: u64) -> bool {
        self.journal.records.contains(&id)
    }

    /// Committed line `id`, without its newline.
    pub(crate) fn read_line(&self, id: u64) -> io::Result<Vec<u8>> {
        let mut lines = self.lines(id, id + 1, 4096);
        let line = lines.next_line()?.map_or(&[][..], |(_, line)| line);
        Ok(line.strip_suffix(b"\n").unwrap_or(line).to_vec())
    }

    /// Buffers an amendment or a deletion of an entry: a line of its own,
    /// after everything, the entry's line untouched (append-only).
    pub(crate) fn append_record(
        &mut self,
        text: &str,
        req: Option<&str>,
        by: Option<&str>,
        record: Record,
    ) -> Appended<'_> {
        self.append_entry(text, req, by, None, Some(record))
    }

    /// Saves the index beside the diary (`FILE.index`) for a quick next
    /// start. Only at a clean stop: everything written durable, the file at
    /// the path the one written, and as long as it was written.
    pub(crate) fn save_index(&self) -> io::Result<()> {
        let settled = !self.has_pending()
            && self.flush.durable == self.written()
            && self.committed == self.index.len()
            && self.watched.lost.is_none()
            && self.disk.is_the_file();
        if !settled {
            return Err(io::Error::other("the diary has writes not yet durable"));
        }
        let file = File::open(&self.path)?;
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != self.watched.held || meta.len() != self.committed_len {
            return Err(io::Error::other(
                "the file at the path is not the one written",
            ));
        }
        let mut records: Vec<u64> = self.journal.records.iter().copied().collect();
        records.sort_unstable();
        saved_index::save(
            &self.path,
            &file,
            &self.index,
            self.lines,
            &self.identity,
            &records,
        )
    }

    /// The diary's unique id, from its header.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Why writes are refused, if they are.
    pub(crate) fn lost(&self) -> Option<&Lost> {
        self.watched.lost.as_ref()
    }

    /// Buffers a new entry; it is stored by the next [`Store::commit`].
    /// `req` is the tag of the request that writes it, kept with the entry
    /// so that a retry is answered, not stored again, even after a restart.
    pub fn append(&mut self, text: &str, req: Option<&str>) -> Appended<'_> {
        self.append_by(text, req, None)
    }

    /// As [`Store::append`], recording who wrote it (`by=`).
    pub(crate) fn append_by(
        &mut self,
        text: &str,
        req: Option<&str>,
        by: Option<&str>,
    ) -> Appended<'_> {
        self.append_entry(text, req, by, None, None)
    }

    /// Buffers an entry from elsewhere with its own time (RFC 3339, kept as
    /// written) and author, marked `imported=IMPORTER` (`-`: unknown).
    /// Times need not be in order: the index is built for that.
    pub(crate) fn append_imported(
        &mut self,
        text: &str,
        req: Option<&str>,
        (time, millis): (&str, i64),
        (author, importer): (Option<&str>, Option<&str>),
    ) -> Appended<'_> {
        self.append_entry(text, req, author, Some((time, millis, importer)), None)
    }

    fn append_entry(
        &mut self,
        text: &str,
        req: Option<&str>,
        by: Option<&str>,
        imported: Option<(&str, i64, Option<&str>)>,
        record: Option<Record>,
    ) -> Appended<'_> {
        if self.pending.is_empty() {
            // What a person did to the file since the last batch is taken
            // in before ids are given out; the commit looks again.
            self.watch();
        }
        // One clock read per batch: its entries are stored together anyway.
        let millis = match self.batch_clock {
            Some(millis) => millis,
            None => {
                let millis = self.next_stamp();
                self.batch_clock = Some(millis);
                millis
            }
        };
        let millis = match imported {
            Some((time, millis, _)) => {
                // The next entry of the batch formats its own time again.
                self.cached_stamp = StampCache {
                    millis: i64::MIN,
                    text: time.to_string(),
                };
                millis
            }
            None => {
                if self.cached_stamp.millis != millis {
                    self.cached_stamp = StampCache {
                        millis,
                        text: entry::format_timestamp(millis),
                    };
                }
                millis
            }
        };
        let id = self.index.len() as u64 + 1;
        if let Some(record) = record {
            // Only now is the id known: a person's lines may just have been taken in.
            self.note_record(id, record);
        }
        let start = self.committed_len + self.pending.len() as u64;
        let id_text = self.id_text.of(id);
        self.attrs.clear();
        if let Some(tag) = req {
            entry::push_req_attr(tag, &mut self.attrs);
        }
        if let Some(name) = by.filter(|n| entry::is_author_name(n)) {
            entry::push_by_attr(name, &mut self.attrs);
        }
        if let Some((_, _, importer)) = imported {
            let importer = importer.filter(|n| entry::is_author_name(n)).unwrap_or("-");
            self.attrs.push('\t');
            self.attrs.push_str(entry::IMPORTED);
            self.attrs.push('=');
            self.attrs.push_str(importer);
        }
        if let Some(record) = record {
            self.attrs
                .push_str(&format!("\t{}={}", record.key(), record.target()));
        }
        entry::encode_line_digits(
            id_text,
            &self.cached_stamp.text,
            text,
            &self.attrs,
            &mut self.pending,
        );
        self.index.push(start, millis);
        Appended {
            id,
            id_text,
            timestamp: &self.cached_stamp.text,
        }
    }

    /// The time for a new batch: the clock, unless it stepped back a little.
    fn next_stamp(&mut self) -> i64 {
        let now = wall_clock();
        let last = self.last_stamp;
        let stamp = if now >= last || last - now > CLOCK_SLACK_MS {
            if now < last {
                log::warn!(
                    "the clock stepped back {} s (from {} to {}); new entries carry the \
                     clock's time, earlier than the last entry's",
                    (last - now) / 1000,
                    entry::format_timestamp(last),
                    entry::format_timestamp(now)
                );
            }
            now
        } else {
            last
        };
        self.last_stamp = stamp;
        stamp
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes the buffered entries with one `write`, and flushes them as the
    /// policy says. On failure the batch is forgotten and the file cut back.
    ///
    /// First it checks that the file at the path is still the one it holds
    /// ([`Store::watch`]); if anything changed, the batch is refused, since
    /// its ids and offsets were reckoned on the file as it was.
    pub fn commit(&mut self) -> Result<(), CommitError> {
        self.batch_clock = None;
        if self.pending.is_empty() {
            return Ok(());
        }
        self.write_batch()
    }

    /// As [`Store::commit`], unless a flush is in flight and the batch is
    /// small: then it keeps growing until the flush returns, so that each
    /// flush covers as many writes as came during the one before (fewer,
    /// larger writes; the loop serves meanwhile). Whether it was written.
    pub(crate) fn commit_when_due(&mut self) -> Result<bool, CommitError> {
        const SMALL: usize = 64 * 1024;
        if self.pending.is_empty()
            || (self.flush.syncer.as_ref().is_some_and(Syncer::in_flight)
                && self.pending.len() < SMALL)
        {
            return Ok(false);
        }
        self.batch_clock = None;
        self.write_batch().map(|()| true)
    }

    fn write_batch(&mut self) -> Result<(), CommitError> {
        if let Err(error) = self.check_file() {
            return Err(self.forget_batch(error));
        }
        let earlier_sync = if self.flush.sync_failed {
            self.sync_now()
        } else {
            Ok(())
        };
        let off_the_loop = self.flush.syncer.is_some();
        let result = earlier_sync
            .and_then(|()| self.disk.append(&self.pending))
            .and_then(|()| {
                match self.policy {
                    FsyncPolicy::Always if off_the_loop => {}
                    FsyncPolicy::Always => self.disk.sync()?,
                    FsyncPolicy::Interval => {
                        self.flush.unsynced_since.get_or_insert_with(Instant::now);
                    }
                    FsyncPolicy::Never => {}
                }
                Ok(())
            });
        match result {
            Ok(()) => {
                self.committed_len += self.pending.len() as u64;
                self.lines += (self.index.len() - self.committed) as u64;
                self.committed = self.index.len();
                self.pending.clear();
                if off_the_loop {
                    self.start_sync();
                } else {
                    self.flush.durable = self.written();
                }
                Ok(())
            }
            Err(error) => {
                // Best effort: if even this fails, the next open cuts the torn tail.
                let _ = self.disk.truncate(self.committed_len);
                Err(self.forget_batch(error))
            }
        }
    }

    fn forget_batch(&mut self, error: io::Error) -> CommitError {
        self.index.truncate(self.committed);
        self.pending.clear();
        CommitError { error }
    }

    /// How far the file is written.
    fn written(&self) -> FileMark {
        FileMark {
            entries: self.committed,
            bytes: self.committed_len,
            lines: self.lines,
        }
    }

    /// For policy `always`: flushes run on a thread of their own from now
    /// on, and `waker` wakes the loop when one returns. Writes of a batch
    /// are then durable only once [`Store::durable`] covers them.
    pub(crate) fn flush_off_the_loop(
        &mut self,
        waker: std::sync::Arc<mio::Waker>,
    ) -> io::Result<()> {
        if self.policy == FsyncPolicy::Always {
            self.flush.syncer = Some(Syncer::start(self.disk.sync_handle()?, waker.clone())?);
            self.flush.waker = Some(waker);
        }
        Ok(())
    }

    /// `/stats` figures of the flushes made off the loop (`--fsync
    /// always`): how many, how long they took, and how long each one's
    /// result then waited for the loop.
    pub(crate) fn fsync_figures(&self) -> Vec<(String, u64)> {
        let Some(syncer) = &self.flush.syncer else {
            return Vec::new();
        };
        let (count, [p50, p99, p999, max]) = syncer.durations();
        let (_, [h50, h99, h999, hmax]) = syncer.handoffs();
        [
            ("fsyncs", count),
            ("fsync_p50_us", p50),
            ("fsync_p99_us", p99),
            ("fsync_p999_us", p999),
            ("fsync_max_us", max),
            ("fsync_handoff_p50_us", h50),
            ("fsync_handoff_p99_us", h99),
            ("fsync_handoff_p999_us", h999),
            ("fsync_handoff_max_us", hmax),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
    }

    /// Entries that have reached the disk as the policy promises; with
    /// flushes off the loop, fewer than [`Store::len`] while one runs.
    pub(crate) fn durable(&self) -> u64 {
        self.flush.durable.entries as u64
    }

    /// Asks for a flush of what was written, unless one is in flight (its
    /// return asks again).
    fn start_sync(&mut self) {
        let target = self.written();
        if let Some(syncer) = &mut self.flush.syncer
            && !syncer.in_flight()
            && target.entries > self.flush.durable.entries
        {
            self.flush.sync_target = target;
            syncer.request();
        }
    }

    /// Takes in a flush that returned, if one has.
    pub(crate) fn poll_sync(&mut self) {
        if let Some(result) = self.flush.syncer.as_mut().and_then(Syncer::try_result) {
            self.sync_returned(result);
        }
    }

    fn sync_returned(&mut self, result: io::Result<()>) {
        match result {
            Ok(()) => {
                self.flush.durable = self.flush.sync_target;
                self.start_sync();
            }
            Err(error) => {
                // As after any failed fdatasync: what it covered may be
                // gone, so cut back to what is known durable, and take no
                // write until a flush succeeds.
                self.flush.sync_failed = true;
                let _ = self.disk.truncate(self.flush.durable.bytes);
                self.lose_unsynced(error);
            }
        }
    }

    /// Forgets every entry not yet durable, pending ones included, and
    /// records the loss for the acks that wait on them.
    fn lose_unsynced(&mut self, error: io::Error) {
        let FileMark {
            entries: count,
            bytes: len,
            lines,
        } = self.flush.durable;
        if self.index.len() > count {
            self.flush.losses.push(Loss {
                first_lost: count as u64 + 1,
                error,
            });
        }
        self.index.truncate(count);
        self.committed = count;
        self.committed_len = len;
        self.lines = lines;
        self.pending.clear();
        self.batch_clock = None;
    }

    /// The losses since the last call, oldest first.
    pub(crate) fn take_losses(&mut self) -> Vec<Loss> {
        std::mem::take(&mut self.flush.losses)
    }

    /// For policy `interval`: how long until written data is due for its flush.
    pub(crate) fn sync_deadline(&self) -> Option<Instant> {
        self.flush.unsynced_since.map(|t| t + SYNC_INTERVAL)
    }

    /// For policy `interval`: flushes if the deadline has passed.
    pub(crate) fn sync_if_due(&mut self, now: Instant) -> io::Result<()> {
        match self.sync_deadline() {
            Some(deadline) if now >= deadline => self.sync_now(),
            _ => Ok(()),
        }
    }

    /// Flushes whatever was written (used at shutdown whatever the policy).
    /// Until a flush succeeds after one failed, every commit fails.
    pub(crate) fn sync_now(&mut self) -> io::Result<()> {
        self.flush.unsynced_since = None;
        if let Some(result) = self.flush.syncer.as_mut().and_then(Syncer::wait) {
            self.sync_returned(result);
        }
        let result = self.disk.sync();
        self.flush.sync_failed = result.is_err();
        if result.is_ok() {
            self.flush.durable = self.written();
        }
        result
    }

    /// Number of committed entries, which is also the newest committed id.
    pub fn len(&self) -> u64 {
        self.committed as u64
    }

    pub fn is_empty(&self) -> bool {
        self.committed == 0
    }

    /// Bytes of the file as written (committed entries and other lines).
    pub(crate) fn bytes(&self) -> u64 {
        self.committed_len
    }

    /// The first committed id at or after which entries may be at or after
    /// `millis` (len + 1 if none): none before it is. Times need not be in
    /// order, so entries from it on must still be checked with
    /// [`Store::millis_of`].
    pub(crate) fn first_at_or_after(&self, millis: i64) -> u64 {
        self.index.first_candidate(millis, self.committed)
    }

    /// The time of committed entry `id`.
    pub(crate) fn millis_of(&self, id: u64) -> i64 {
        self.index.millis[(id - 1) as usize]
    }

    fn offset_of(&self, id: u64) -> u64 {
        let i = (id - 1) as usize;
        if i < self.committed {
            self.index.offsets[i]
        } else {
            self.committed_len
        }
    }

    /// Size in bytes of the committed entries `first..end` (ids, end
    /// exclusive), with any other lines among them.
    pub(crate) fn span_len(&self, first: u64, end: u64) -> u64 {
        self.offset_of(end) - self.offset_of(first)
    }

    /// The first entry after `first` at least `bytes` further into the
    /// file (the end of the committed entries if none is): where a scan
    /// that may read only so much stops.
    pub(crate) fn id_after_bytes(&self, first: u64, bytes: u64) -> u64 {
        let end = self.len() + 1;
        if first >= end {
            return end;
        }
        let limit = self.offset_of(first).saturating_add(bytes);
        let offsets = &self.index.offsets[first as usize..self.committed];
        (first + 1 + offsets.partition_point(|&at| at < limit) as u64).min(end)
    }

    /// The first of the entries before `end` that take up at most `bytes`
    /// of the file (at least one entry, if there is one): where a scan back
    /// from `end` that may read only so much stops.
    pub(crate) fn id_before_bytes(&self, end: u64, bytes: u64) -> u64 {
        let end = end.min(self.len() + 1);
        if end <= 1 {
            return 1;
        }
        let limit = self.offset_of(end).saturating_sub(bytes);
        let offsets = &self.index.offsets[..(end - 1) as usize];
        (1 + offsets.partition_point(|&at| at < limit) as u64).min(end - 1)
    }

    /// Appends the bytes of the file from entry `first` up to entry `end`
    /// (end exclusive), other lines among them included.
    fn read_span(&self, first: u64, end: u64, out: &mut Vec<u8>) -> io::Result<()> {
        assert!(first >= 1 && first <= end && end <= self.len() + 1);
        let start = self.offset_of(first);
        let len = (self.offset_of(end) - start) as usize;
        let old = out.len();
        out.resize(old + len, 0);
        if let Err(e) = self.disk.read_at(&mut out[old..], start) {
            out.truncate(old);
            return Err(e);
        }
        Ok(())
    }

    /// Entry `id`'s line (newline included) in `buf`, which holds the file
    /// from `base` on: from its start to the first newline.
    fn line_in<'b>(&self, buf: &'b [u8], base: u64, id: u64) -> io::Result<&'b [u8]> {
        let from = (self.offset_of(id) - base) as usize;
        match memchr::memchr(b'\n', &buf[from..]) {
            Some(i) => Ok(&buf[from..from + i + 1]),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the diary file changed under its index",
            )),
        }
    }

    /// Calls `f` with the writer and request tag, id and timestamp of
    /// each of the newest `limit` entries that has a tag, oldest first: the
    /// retry memory after a restart. The writer is who sent the request:
    /// the importer of an imported entry, otherwise its author. Only lines
    /// holding a tag are looked at, and only those fields: every line here
    /// passed the scan already.
    pub(crate) fn recent_requests(
        &self,
        limit: usize,
        mut f: impl FnMut((Option<&str>, &str), u64, &str),
    ) -> io::Result<()> {
        const TAG: &[u8] = b"\treq=";
        let end = self.len() + 1;
        let first = end.saturating_sub(limit as u64).max(1);
        let finder = memchr::memmem::Finder::new(TAG);
        let mut lines = self.lines(first, end, 1 << 20);
        while let Some((id, line)) = lines.next_holding(&finder)? {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let field = |from: usize| {
                let len = memchr::memchr(b'\t', &line[from..]).unwrap_or(line.len() - from);
                std::str::from_utf8(&line[from..from + len]).ok()
            };
            let timestamp = memchr::memchr(b'\t', line).and_then(|tab| field(tab + 1));
            let tag = finder.find(line).and_then(|at| field(at + TAG.len()));
            let attrs = entry::stored_text_and_attrs(line).map_or("", |(_, attrs)| attrs);
            let writer = match entry::attr_in(attrs, entry::IMPORTED) {
                Some(importer) => Some(importer).filter(|&i| i != "-"),
                None => entry::author_in(attrs),
            };
            if let (Some(tag), Some(timestamp)) = (tag, timestamp) {
                f((writer, tag), id, timestamp);
            }
        }
        Ok(())
    }
}

fn wall_clock() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The mode of the files diaryd creates: the diary, its side files.
const PRIVATE: u32 = 0o600;

/// The index of the diary at `path`: from the index saved at the last
/// clean stop when it matches the file exactly, else by reading the file;
/// and whether it came from the saved one.
fn read_index(
    path: &Path,
    file: &File,
    meta: &std::fs::Metadata,
) -> Result<(scan::Scan, bool), OpenError> {
    let scanned = match saved_index::load(path, file, meta) {
        Ok(scan) => {
            log::info!(
                "read the index saved at the last stop ({} entries) from {}",
                scan.index.len(),
                saved_index::path_for(path).display()
            );
            return Ok((scan, true));
        }
        Err(why) => {
            if meta.len() > 0 {
                log::info!(
                    "not using the saved index {}: {why}; reading the whole diary",
                    saved_index::path_for(path).display()
                );
            }
            scan::scan(file, scan::From::START, Mode::Recover)
        }
    };
    match scanned {
        Ok(scan) => Ok((scan, false)),
        Err(ScanError::Io(e)) => Err(OpenError::Io(path.to_path_buf(), e)),
        Err(ScanError::Bad(bad)) => Err(OpenError::Corrupt {
            path: path.to_path_buf(),
            line: bad.line,
            reason: bad.reason,
        }),
    }
}

/// Sets a torn end aside (`PATH.torn`) and cuts it off the file, which
/// is `len` bytes long.
fn cut_torn_end(
    file: &File,
    path: &Path,
    len: u64,
    cut: &scan::Cut,
) -> Result<RecoveryCut, OpenError> {
    let bytes = len - cut.at;
    let side = set_aside(file, path, cut.at, bytes)?;
    let io_err = |e| OpenError::Io(path.to_path_buf(), e);
    file.set_len(cut.at).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    Ok(RecoveryCut {
        bytes: bytes as usize,
        line: cut.line,
        why: cut.why,
        side,
    })
}

/// Gives a diary without an identity one: the header of a new file, or
/// one appended line for a file begun by an earlier version (nothing is
/// rewritten). Returns the identity.
fn give_identity(file: &mut File, scan: &mut scan::Scan) -> io::Result<String> {
    let identity = scan::new_identity();
    let line = if scan.len == 0 {
        format!(
            "# diary v{} id={identity} created={}\n",
            scan::FORMAT,
            entry::format_timestamp(wall_clock())
        )
    } else {
        format!(
            "# diary id={identity} (given by diaryd {} to a diary begun without one)\n",
            env!("CARGO_PKG_VERSION")
        )
    };
    file.write_all(line.as_bytes())?;
    file.sync_all()?;
    scan.len += line.len() as u64;
    scan.lines += 1;
    Ok(identity)
}

/// Opens the diary for reading and appending, created if missing, and
/// takes its lock. `Err(None)`: another process holds the lock.
fn open_locked(path: &Path) -> Result<File, Option<io::Error>> {
    use std::os::unix::fs::OpenOptionsExt;
    // Only you may read a new diary, whatever the umask (as with the key).
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(PRIVATE)
        .open(path)
        .map_err(Some)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(None),
        Err(std::fs::TryLockError::Error(e)) => Err(Some(e)),
    }
}

/// Copies `len` bytes from `at` to the side file `PATH.torn`, ending them
/// with a newline, before they are cut off the diary.
fn set_aside(file: &File, path: &Path, at: u64, len: u64) -> Result<PathBuf, OpenError> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let mut fragment = vec![0; len as usize];
    file.read_exact_at(&mut fragment, at)
        .map_err(|e| OpenError::Io(path.to_path_buf(), e))?;
    if fragment.last() != Some(&b'\n') {
        fragment.push(b'\n');
    }
    let mut side = path.to_path_buf().into_os_string();
    side.push(".torn");
    let side = PathBuf::from(side);
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(PRIVATE)
        .open(&side)
        .map_err(|e| OpenError::Io(side.clone(), e))?;
    out.write_all(&fragment)
        .and_then(|()| out.sync_all())
        .map_err(|e| OpenError::Io(side.clone(), e))?;
    Ok(side)
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
        assert_eq!(store.append("one", None).id, 1);
        assert_eq!(store.append("二\n行", Some("t-1")).id, 2);
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

    const T0: &str = "2026-11-25T06:00:00.000+00:00";

    #[test]
    fn a_new_diary_gets_a_header_and_keeps_its_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("diary.log");
        let mut store = open(&path);
        let identity = store.identity().to_string();
        assert!(scan::is_identity(&identity));
        store.append("one", Some("tag-1"));
        store.commit().unwrap();
        drop(store);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with(&format!("# diary v2 id={identity} created=")),
            "{text}"
        );
        assert!(
            lines.next().unwrap().ends_with("\tone\treq=tag-1"),
            "{text}"
        );
        let mut store = open(&path);
        assert_eq!(store.identity(), identity);
        // The writer of each: its author, or for an import its importer.
        store.append_by("two", Some("tag-2"), Some("laptop"));
        let t0 = entry::parse_timestamp(T0).unwrap();
        store.append_imported(
            "three",
            Some("tag-3"),
            (T0, t0),
            (Some("admin"), Some("phone")),
        );
        store.append_imported("four", Some("tag-4"), (T0, t0), (Some("admin"), None));
        store.commit().unwrap();
        drop(store);
        let store = open(&path);
        let mut recent = Vec::new();
        store
            .recent_requests(10, |(writer, tag), id, _| {
                recent.push((writer.map(str::to_string), tag.to_string(), id))
            })
            .unwrap();
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            recent,
            vec![
                (None, "tag-1".to_string(), 1),
                (some("laptop"), "tag-2".to_string(), 2),
                (some("phone"), "tag-3".to_string(), 3),
                (None, "tag-4".to_string(), 4),
            ]
        );
        let mut times = Vec::new();
        store
            .recent_requests(1, |_, id, time| times.push((id, time.to_string())))
            .unwrap();
        assert_eq!(times, vec![(4, T0.to_string())]);
    }

    #[test]
    fn an_older_file_opens_unchanged_and_gets_an_identity_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("diary.log");
        let old = format!("1\t{T0}\tfirst\n2\t{T0}\tsecond\n");
        std::fs::write(&path, &old).unwrap();
        let (mut store, recovery) = Store::open(&path, FsyncPolicy::Always).unwrap();
        assert!(recovery.identity_added && recovery.cut.is_none());
        let identity = store.identity().to_string();
        assert_eq!(store.append("third", None).id, 3);
        store.commit().unwrap();
        let mut out = Vec::new();
        let mut lines = store.lines(1, 4, 1 << 16);
        while let Some((_, line)) = lines.next_line().unwrap() {
            out.extend_from_slice(line);
        }
        let entries = String::from_utf8(out).unwrap();
        assert!(
            !entries.contains('#'),
            "reads skip the identity line: {entries}"
        );
        assert_eq!(entries.lines().count(), 3);
        drop(store);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&old), "nothing rewritten: {text}");
        let (store, recovery) = Store::open(&path, FsyncPolicy::Always).unwrap();
        assert!(!recovery.identity_added);
        assert_eq!((store.identity(), store.len()), (identity.as_str(), 3));
    }

    #[test]
    fn a_hole_in_the_tail_is_cut_and_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("diary.log");
        let t1 = "2026-11-25T06:00:01.000+00:00";
        // A torn batch: the file grew, part of it never reached the disk.
        let good = format!("1\t{T0}\tkept\n");
        let torn = format!("\0\0\0\0\0\0\0\03\t{t1}\tb\n4\t{t1}\tc\n");
        std::fs::write(&path, format!("{good}{torn}")).unwrap();
        let (store, recovery) = Store::open(&path, FsyncPolicy::Always).unwrap();
        let cut = recovery.cut.as_ref().unwrap();
        assert_eq!(
            (cut.why, cut.line, cut.bytes),
            (CutReason::Hole, 2, torn.len())
        );
        assert!(recovery.warning(&path).unwrap().contains("NUL"));
        assert_eq!(store.len(), 1);
        let side = std::fs::read(dir.path().join("diary.log.torn")).unwrap();
        assert_eq!(side, torn.as_bytes());
        drop(store);
        assert!(std::fs::read_to_string(&path).unwrap().starts_with(&good));
    }

    #[test]
    fn a_hole_in_the_middle_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("diary.log");
        let t1 = "2026-11-25T06:00:01.000+00:00";
        let t2 = "2026-11-25T06:00:02.000+00:00";
        let content = format!("1\t{T0}\ta\n\0\0\0\n3\t{t1}\tb\n4\t{t2}\tc\n");
        std::fs::write(&path, &content).unwrap();
        match Store::open(&path, FsyncPolicy::Always) {
            Err(e @ OpenError::Corrupt { line: 2, .. }) => {
                assert!(e.to_string().contains("damage in the middle"), "{e}")
            }
            other => panic!("expected a refusal at line 2, got {:?}", other.map(|_| ())),
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            content,
            "untouched"
        );
    }

    #[test]
    fn hints_quote_paths_for_the_shell() {
        assert_eq!(shell_quote(Path::new("/tmp/d.log")), "/tmp/d.log");
        assert_eq!(shell_quote(Path::new("/tmp/my diary")), "'/tmp/my diary'");
        assert_eq!(shell_quote(Path::new("it's")), r"'it'\''s'");
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
        store.append("a", None);
        store.append("b", None);
        store.commit().unwrap();
        assert_eq!(store.first_at_or_after(i64::MIN), 1);
        assert_eq!(store.first_at_or_after(i64::MAX), 3);
    }
}
