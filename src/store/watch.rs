//! diaryd owns its file while it runs: before every batch and its commit
//! (and once a second when idle) the store looks at what the path names.
//! Lines a person appended are indexed if they are entries; an editor's save
//! of the same diary is re-opened; anything else refuses writes ([`Lost`])
//! and keeps serving reads, so no write is acknowledged into a file that is
//! no longer the diary. Writes not yet flushed into a file that went away
//! are given up, for their acks to say so.

use super::{Store, open_locked};
use crate::disk::Disk;
use crate::scan::{self, Mode, Scan, ScanError};
use crate::syncer::Syncer;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;

/// Why writes are refused: the file at the path is not the diary diaryd
/// holds, or not as it left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// Nothing is at the path any more (removed, or renamed away).
    Removed,
    /// Another file is at the path, and it is not this diary.
    Replaced(String),
    /// The file is shorter than what was written to it.
    Truncated { len: u64, expected: u64 },
    /// A line added to the file is not an entry that can follow.
    BadLine { line: u64, reason: String },
}

impl Store {
    /// Written entries not yet durable are in a file that is no longer the
    /// diary at the path: they will not be stored. Waits for the flush in
    /// flight (of that old file) and forgets them.
    fn drop_unsynced_of_old_file(&mut self) {
        if let Some(result) = self.syncer.as_mut().and_then(Syncer::wait) {
            self.sync_returned(result);
        }
        if self.committed > self.durable.0 {
            self.lose_unsynced(io::Error::other(
                "the diary file changed before this write reached the disk; nothing stored, \
                 send it again",
            ));
        }
    }

    /// Before a commit: the file must be the one held, as it was left.
    pub(super) fn check_file(&mut self) -> io::Result<()> {
        let changed = self.watch();
        match &self.lost {
            Some(lost) => Err(io::Error::other(self.describe(lost))),
            None if changed => Err(io::Error::other(
                "the diary file changed while this write waited; nothing stored, send it again",
            )),
            None => Ok(()),
        }
    }

    /// Looks at what the path names now, and follows what a person did to
    /// the file: lines they appended are indexed, a valid copy of this
    /// diary saved over it is re-opened, anything else refuses writes until
    /// it is put right. Returns whether the index changed. Call it only
    /// with no batch pending (a commit does so itself).
    pub fn watch(&mut self) -> bool {
        if !self.disk.is_the_file() {
            return false;
        }
        let before = self.lost.clone();
        let outcome = self.look();
        let changed = matches!(outcome, Ok(true));
        self.lost = outcome.err();
        if self.lost != before {
            match &self.lost {
                Some(lost) => log::error!("{}", self.describe(lost)),
                None => log::warn!(
                    "{} is this diary again ({} entries); writes are accepted again",
                    self.path.display(),
                    self.committed
                ),
            }
        }
        changed
    }

    fn look(&mut self) -> Result<bool, Lost> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.drop_unsynced_of_old_file();
                return Err(Lost::Removed);
            }
            Err(e) => return Err(Lost::Replaced(format!("cannot look at it: {e}"))),
        };
        if (meta.dev(), meta.ino()) != self.held {
            self.drop_unsynced_of_old_file();
            return self.adopt().map(|()| true);
        }
        let len = meta.len();
        if len < self.committed_len {
            self.drop_unsynced_of_old_file();
            return Err(Lost::Truncated {
                len,
                expected: self.committed_len,
            });
        }
        if len == self.committed_len {
            return Ok(false);
        }
        self.index_appended().map(|()| true)
    }

    /// Indexes lines appended to the file by someone else.
    fn index_appended(&mut self) -> Result<(), Lost> {
        let file = File::open(&self.path).map_err(|e| Lost::Replaced(e.to_string()))?;
        let from = scan::From {
            offset: self.committed_len,
            line: self.lines,
            next_id: self.committed as u64 + 1,
        };
        let scan = scan::scan(&file, from, Mode::Strict).map_err(|e| match e {
            ScanError::Bad(bad) => Lost::BadLine {
                line: bad.line,
                reason: bad.reason,
            },
            ScanError::Io(e) => Lost::Replaced(e.to_string()),
        })?;
        let added = scan.index.len();
        for i in 0..added {
            self.index.push(scan.index.offsets[i], scan.index.millis[i]);
        }
        let records = scan.records.clone();
        let all_durable = self.durable == self.written();
        self.committed = self.index.len();
        self.committed_len = scan.len;
        self.lines = scan.lines;
        // An amendment or deletion a person appended counts too.
        let _ = self.note_records(&records);
        if all_durable {
            // Someone else's lines: whatever their writer promised, and
            // nothing of ours waits on a flush.
            self.durable = self.written();
        } else {
            self.start_sync();
        }
        log::warn!(
            "{} lines were added to {} by hand; {added} entries among them are indexed",
            scan.lines - from.line,
            self.path.display()
        );
        Ok(())
    }

    /// Re-opens the path, which names another file now: an editor's save
    /// or `sed -i` replaced the diary. Only a whole, valid copy of this
    /// same diary is taken.
    fn adopt(&mut self) -> Result<(), Lost> {
        let file = open_locked(&self.path).map_err(|e| {
            Lost::Replaced(match e {
                None => "another diaryd holds it".into(),
                Some(e) => format!("cannot open it: {e}"),
            })
        })?;
        let meta = file.metadata().map_err(|e| Lost::Replaced(e.to_string()))?;
        let scan: Scan = scan::scan(&file, scan::From::START, Mode::Strict)
            .map_err(|e| Lost::Replaced(format!("it is not a whole diary ({e})")))?;
        if scan.identity.as_deref() != Some(self.identity.as_str()) {
            return Err(Lost::Replaced(match scan.identity {
                Some(other) => format!("it is another diary (id {other})"),
                None => "it has no diary id, so it is not this diary".into(),
            }));
        }
        log::warn!(
            "{} was replaced by an edited copy of this diary ({} entries); writing to the new file",
            self.path.display(),
            scan.index.len()
        );
        if let Some(waker) = self.waker.clone() {
            let handle = file
                .sync_handle()
                .map_err(|e| Lost::Replaced(e.to_string()))?;
            self.syncer =
                Some(Syncer::start(handle, waker).map_err(|e| Lost::Replaced(e.to_string()))?);
        }
        self.disk = Box::new(file);
        self.held = (meta.dev(), meta.ino());
        self.committed = scan.index.len();
        self.committed_len = scan.len;
        self.lines = scan.lines;
        self.index = scan.index;
        self.unsynced_since = None;
        self.durable = self.written();
        Ok(())
    }

    /// What happened to the file and what to do, for the log and `err io`.
    pub fn describe(&self, lost: &Lost) -> String {
        let p = self.path.display();
        let n = self.committed;
        let keep = format!(
            "writes are refused so that none is acknowledged into a file that is not the \
             diary; entries 1 to {n} are still served"
        );
        match lost {
            Lost::Removed => format!(
                "{p} was removed or renamed while diaryd ran; {keep}. Move it back, or restart \
                 diaryd to begin a new diary there (save the old one first: diary past > saved.txt)"
            ),
            Lost::Replaced(why) => format!(
                "{p} was replaced by another file, and {why}; {keep}. Put this diary back \
                 there, or restart diaryd to serve the new file"
            ),
            Lost::Truncated { len, expected } => format!(
                "{p} was cut to {len} bytes while diaryd ran (it wrote {expected}); {keep}. \
                 Restore it from a backup, or restart diaryd to accept it as it is"
            ),
            Lost::BadLine { line, reason } => format!(
                "{p}:{line}: a line added while diaryd ran is not an entry that can follow: \
                 {reason}; {keep}. Remove that line (write it with `diary write` instead), \
                 or fix it"
            ),
        }
    }
}
