//! diaryd owns its file while it runs: before every batch and its commit
//! (and once a second when idle) the store looks at what the path names.
//! Lines a person appended are indexed if they are entries; an editor's save
//! of the same diary is re-opened, with any acknowledged entries the saved
//! copy lacks appended back to it first; anything else refuses writes
//! ([`Lost`]) and keeps serving reads, so no write is acknowledged into a
//! file that is no longer the diary, and no acknowledged entry is lost to
//! an older copy. Writes not yet flushed into a file that went away are
//! given up, for their acks to say so.

use super::{FileId, Store, open_locked};
use crate::store::disk::Disk;
use crate::store::scan::{self, Mode, Scan, ScanError};
use crate::store::syncer::Syncer;
use crate::wire::entry;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

/// Why writes are refused: the file at the path is not the diary diaryd
/// holds, or not as it left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lost {
    /// Nothing is at the path any more (removed, or renamed away).
    Removed,
    /// Another file is at the path, and it is not this diary.
    Replaced(String),
    /// The file is shorter than what was written to it.
    Truncated { len: u64, expected: u64 },
    /// A line added to the file is not an entry that can follow.
    BadLine { line: u64, reason: String },
    /// A copy of this diary was saved over it whose entries from `first`
    /// on are not the ones diaryd acknowledged under those ids (lines
    /// added to the copy by hand while diaryd wrote others): both cannot
    /// keep the ids. diaryd's own file was copied whole to `kept`.
    Conflict { first: u64, kept: PathBuf },
}

/// A file seen at the path and refused: not looked at again while it
/// stays the same (a whole scan each second would be wasted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refused {
    /// The file, its length and its modification time.
    seen: (FileId, u64, (i64, i64)),
    lost: Lost,
}

impl Store {
    /// Written entries not yet durable are in a file that is no longer the
    /// diary at the path: they will not be stored. Waits for the flush in
    /// flight (of that old file) and forgets them.
    fn drop_unsynced_of_old_file(&mut self) {
        if let Some(result) = self.flush.syncer.as_mut().and_then(Syncer::wait) {
            self.sync_returned(result);
        }
        if self.committed > self.flush.durable.entries {
            self.lose_unsynced(io::Error::other(
                "the diary file changed before this write reached the disk; nothing stored, \
                 send it again",
            ));
        }
    }

    /// Before a commit: the file must be the one held, as it was left.
    pub(super) fn check_file(&mut self) -> io::Result<()> {
        let changed = self.watch();
        match &self.watched.lost {
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
    pub(crate) fn watch(&mut self) -> bool {
        if !self.disk.is_the_file() {
            return false;
        }
        let before = self.watched.lost.clone();
        let outcome = self.look();
        let changed = matches!(outcome, Ok(true));
        self.watched.lost = outcome.err();
        if self.watched.lost != before {
            match &self.watched.lost {
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
        if (meta.dev(), meta.ino()) != self.watched.held {
            let seen = (
                (meta.dev(), meta.ino()),
                meta.len(),
                (meta.mtime(), meta.mtime_nsec()),
            );
            if let Some(refused) = self.watched.refused.as_ref().filter(|r| r.seen == seen) {
                return Err(refused.lost.clone());
            }
            self.drop_unsynced_of_old_file();
            return self.adopt().map(|()| true).inspect_err(|lost| {
                self.watched.refused = Some(Refused {
                    seen,
                    lost: lost.clone(),
                });
            });
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
        let all_durable = self.flush.durable == self.written();
        self.committed = self.index.len();
        self.committed_len = scan.len;
        self.lines = scan.lines;
        // An amendment or deletion a person appended counts too.
        let _ = self.note_records(&records);
        if all_durable {
            // Someone else's lines: whatever their writer promised, and
            // nothing of ours waits on a flush.
            self.flush.durable = self.written();
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
    /// same diary is taken, and only once it holds every entry diaryd
    /// acknowledged: those an older copy lacks are appended back to it,
    /// with their ids, times, text and tags, before anything else.
    fn adopt(&mut self) -> Result<(), Lost> {
        let file = open_locked(&self.path).map_err(|e| {
            Lost::Replaced(match e {
                None => "another diaryd holds it".into(),
                Some(e) => format!("cannot open it: {e}"),
            })
        })?;
        let meta = file.metadata().map_err(|e| Lost::Replaced(e.to_string()))?;
        // As at start, a torn last line is allowed: a copy read while
        // diaryd was appending (`sed -i`, a sync tool) ends in part of a
        // line, and refusing it would refuse every write until someone came.
        let mut scan: Scan = scan::scan(&file, scan::From::START, Mode::Recover)
            .map_err(|e| Lost::Replaced(format!("it is not a whole diary ({e})")))?;
        if scan.identity.as_deref() != Some(self.identity.as_str()) {
            return Err(Lost::Replaced(match scan.identity {
                Some(other) => format!("it is another diary (id {other})"),
                None => "it has no diary id, so it is not this diary".into(),
            }));
        }
        let unreadable = |e: io::Error| Lost::Replaced(format!("cannot read it: {e}"));
        if let Some(first) = self.first_other(&file, &scan).map_err(unreadable)? {
            // Left as the person saved it, torn end and all.
            let kept = self.keep_conflict().map_err(|e| {
                Lost::Replaced(format!(
                    "its entries from {first} on differ from the ones diaryd \
                     acknowledged, and diaryd could not keep its own copy aside: {e}"
                ))
            })?;
            return Err(Lost::Conflict { first, kept });
        }
        if let Some(cut) = scan.cut.take() {
            self.cut_torn_end(&file, meta.len(), &cut)?;
        }
        let copy_entries = scan.index.len();
        let both = copy_entries.min(self.committed);
        let edited = self.edited_in(&file, &scan, both).map_err(unreadable)?;
        if copy_entries < self.committed {
            let first_missing = copy_entries as u64 + 1;
            self.restore(&file, &mut scan, first_missing)
                .map_err(|e| Lost::Replaced(format!("cannot append to it: {e}")))?;
            log::warn!(
                "{} was replaced by an older copy of this diary ({copy_entries} entries), \
                 without entries {first_missing} to {} that diaryd had acknowledged since \
                 it was read; they were appended back to it, with their ids, times and \
                 text{}",
                self.path.display(),
                self.committed,
                edited_note(&edited)
            );
        } else {
            log::warn!(
                "{} was replaced by an edited copy of this diary ({} entries); writing to \
                 the new file{}",
                self.path.display(),
                scan.index.len(),
                edited_note(&edited)
            );
        }
        if let Some(waker) = self.flush.waker.clone() {
            let handle = file
                .sync_handle()
                .map_err(|e| Lost::Replaced(e.to_string()))?;
            self.flush.syncer =
                Some(Syncer::start(handle, waker).map_err(|e| Lost::Replaced(e.to_string()))?);
        }
        self.disk = Box::new(file);
        self.watched.held = (meta.dev(), meta.ino());
        self.committed = scan.index.len();
        self.committed_len = scan.len;
        self.lines = scan.lines;
        self.index = scan.index;
        self.flush.unsynced_since = None;
        self.flush.durable = self.written();
        self.watched.refused = None;
        // The copy's amendments and deletions are the ones that count now.
        self.journal.edits.clear();
        self.journal.records.clear();
        self.note_records(&scan.records)
            .map_err(|e| Lost::Replaced(format!("cannot read it: {e}")))?;
        Ok(())
    }

    /// Cuts the torn end of a copy saved over the diary (from `cut.at` of
    /// its `len` bytes), keeping it in `FILE.torn` as a start does. A copy
    /// read mid-append ends in part of an entry diaryd holds whole, which
    /// the comparison then appends back.
    fn cut_torn_end(&self, file: &File, len: u64, cut: &scan::Cut) -> Result<(), Lost> {
        let kept = super::set_aside(file, &self.path, cut.at, len - cut.at)
            .map_err(|e| Lost::Replaced(format!("cannot keep its torn end aside: {e}")))?;
        file.set_len(cut.at)
            .and_then(|()| file.sync_data())
            .map_err(|e| Lost::Replaced(format!("cannot cut its torn end: {e}")))?;
        log::warn!(
            "{}: the copy saved over the diary ended in part of a line (line {}, {} bytes), \
             read while it was being written; it was cut off and kept in {}",
            self.path.display(),
            cut.line,
            len - cut.at,
            kept.display()
        );
        Ok(())
    }

    /// The first of the entries at the end of a copy saved over the diary
    /// (`file`, scanned as `copy`) that are other entries than diaryd's
    /// under the same ids, if there are any. Compared by id: an entry whose
    /// time or text is as diaryd wrote it is the same entry (a hand edit
    /// changes one of them); one that differs in both, with none the same
    /// after it, is another: a line added to the copy while diaryd wrote
    /// others.
    fn first_other(&self, file: &File, copy: &Scan) -> io::Result<Option<u64>> {
        let both = self.committed.min(copy.index.len());
        let copy_line = |i: usize| -> io::Result<Vec<u8>> { line_at(file, copy.index.offsets[i]) };
        let mut first_other = both;
        for i in (0..both).rev() {
            if self.index.millis[i] == copy.index.millis[i] {
                break;
            }
            let mine = self.read_line(i as u64 + 1)?;
            let theirs = copy_line(i)?;
            if text_of(&mine) == text_of(&theirs) {
                break;
            }
            first_other = i;
        }
        Ok((first_other < both).then_some(first_other as u64 + 1))
    }

    /// The ids among the first `count` entries whose line in the copy is
    /// not the line diaryd wrote. Read a span at a time, both files side by
    /// side, line by line only where a span differs.
    fn edited_in(&self, file: &File, copy: &Scan, count: usize) -> io::Result<Vec<u64>> {
        const SPAN: u64 = 1 << 20;
        let copy_offset = |i: usize| copy.index.offsets.get(i).copied().unwrap_or(copy.len);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let mut edited = Vec::new();
        let mut first = 1;
        while first <= count as u64 {
            let end = self.id_after_bytes(first, SPAN).min(count as u64 + 1);
            ours.clear();
            self.read_span(first, end, &mut ours)?;
            let (from, to) = (
                copy_offset(first as usize - 1),
                copy_offset(end as usize - 1),
            );
            theirs.resize((to - from) as usize, 0);
            file.read_exact_at(&mut theirs, from)?;
            if ours != theirs {
                let base = self.offset_of(first);
                for id in first..end {
                    let mine = self.line_in(&ours, base, id)?;
                    let at = (copy_offset(id as usize - 1) - from) as usize;
                    let line = theirs[at..]
                        .split(|&b| b == b'\n')
                        .next()
                        .unwrap_or_default();
                    if mine.strip_suffix(b"\n").unwrap_or(mine) != line {
                        edited.push(id);
                    }
                }
            }
            first = end;
        }
        Ok(edited)
    }

    /// Appends to `file` (an older copy, scanned as `copy`) the lines of
    /// the file diaryd holds from entry `first` to its end, flushes them,
    /// and indexes them into `copy`. Comments among them go along.
    fn restore(&self, file: &File, copy: &mut Scan, first: u64) -> io::Result<()> {
        self.copy_held(self.offset_of(first), &mut &*file)?;
        file.sync_data()?;
        let after = scan::From {
            offset: copy.len,
            line: copy.lines,
            next_id: copy.index.len() as u64 + 1,
        };
        let added = scan::scan(file, after, Mode::Strict).map_err(|e| match e {
            ScanError::Io(e) => e,
            ScanError::Bad(bad) => io::Error::other(bad.to_string()),
        })?;
        for i in 0..added.index.len() {
            copy.index
                .push(added.index.offsets[i], added.index.millis[i]);
        }
        copy.records.extend(&added.records);
        copy.len = added.len;
        copy.lines = added.lines;
        Ok(())
    }

    /// Copies the whole file diaryd holds to `FILE.conflict-TIME` (mode
    /// 0600, flushed), for a person to merge; its path.
    fn keep_conflict(&self) -> io::Result<PathBuf> {
        let stamp = chrono::Local::now().format("%Y%m%dT%H%M%S");
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".conflict-{stamp}"));
        let kept = PathBuf::from(name);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&kept)?;
        self.copy_held(0, &mut out)?;
        out.sync_all()?;
        Ok(kept)
    }

    /// Writes the file diaryd holds, from byte `from` to the end of what it
    /// wrote, to `out`, a piece at a time (an old copy may lack a lot).
    fn copy_held(&self, from: u64, out: &mut impl Write) -> io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        let mut buf = Vec::new();
        let mut at = from;
        while at < self.committed_len {
            let len = CHUNK.min(self.committed_len - at);
            buf.resize(len as usize, 0);
            self.disk.read_at(&mut buf, at)?;
            out.write_all(&buf)?;
            at += len;
        }
        Ok(())
    }

    /// What happened to the file and what to do, for the log and `err io`.
    pub(crate) fn describe(&self, lost: &Lost) -> String {
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
            Lost::Conflict { first, kept } => format!(
                "{p} was replaced by a copy of this diary whose entries from {first} on are \
                 not the ones diaryd acknowledged under those ids ({first} to {n}): lines \
                 were added to the copy while diaryd wrote others, and both cannot keep the \
                 ids. diaryd's own file is kept whole in {kept}; {keep}. Put it back \
                 (mv {qk} {qp}) and write the copy's new lines again with `diary write`, or \
                 restart diaryd to take the new file as it is",
                kept = kept.display(),
                qk = super::shell_quote(kept),
                qp = super::shell_quote(&self.path),
            ),
            Lost::BadLine { line, reason } => format!(
                "{p}:{line}: a line added while diaryd ran is not an entry that can follow: \
                 {reason}; {keep}. Remove that line (write it with `diary write` instead), \
                 or fix it"
            ),
        }
    }
}

/// The line that starts at `offset` in `file`, without its newline.
fn line_at(file: &File, offset: u64) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    let mut at = offset;
    loop {
        let n = FileExt::read_at(file, &mut buf, at)?;
        if n == 0 {
            return Ok(line);
        }
        if let Some(end) = memchr::memchr(b'\n', &buf[..n]) {
            line.extend_from_slice(&buf[..end]);
            return Ok(line);
        }
        line.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
}

/// An entry line's text, as stored (escaped); the whole line if it is not
/// one (it then matches only itself).
fn text_of(line: &[u8]) -> &[u8] {
    match entry::decode_line(line) {
        Ok(e) => e.escaped_text.as_bytes(),
        Err(_) => line,
    }
}

/// ", keeping the hand edits of entries 2, 7" for the log, or "".
fn edited_note(edited: &[u64]) -> String {
    const SHOWN: usize = 10;
    if edited.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = edited.iter().take(SHOWN).map(u64::to_string).collect();
    let more = if edited.len() > SHOWN {
        format!(" and {} more", edited.len() - SHOWN)
    } else {
        String::new()
    };
    format!(
        "; entries {}{more} were edited by hand in the copy, and are kept as edited",
        ids.join(", ")
    )
}
