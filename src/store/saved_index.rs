//! The index saved beside the diary at a clean stop (`FILE.index`), so the
//! next start reads 16 bytes per entry instead of scanning every line.
//!
//! The text file stays the only source of truth. The saved index is used
//! only when the file is exactly as diaryd left it: same file (device and
//! inode), same size and modification time, the same bytes at its end
//! (a hash of the last 64 KiB), and a sample of entries found where the
//! index says, with the ids and times it says. Anything else, and a saved
//! index that is itself damaged (a checksum covers all of it), is ignored: the
//! start scans the file as it always did and the next clean stop saves a
//! new one. It is written to a temporary name and renamed, without a
//! flush: a copy torn by a power cut fails its checksum and is rebuilt.
//!
//! Layout, little-endian: the magic `diary index\n`, a u32 version, the
//! file's device, inode, length, mtime seconds and nanoseconds, its line,
//! entry and record counts, its 32-hex identity, the tail hash; then every
//! entry's offset, every entry's time (milliseconds), the record ids; then
//! a CRC-32 of everything before it (a check against damage, computed at
//! memory speed: the file is 16 bytes per entry).

use crate::store::scan::{self, Index, Scan};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 12] = b"diary index\n";
const VERSION: u32 = 1;
/// Bytes at the end of the diary whose hash is kept.
const TAIL: u64 = 64 * 1024;
/// Entries checked against the file at load, spread evenly, plus the last.
const SAMPLES: usize = 32;
const HEADER: usize = 12 + 4 + 8 * 8 + 32 + 32;

/// `FILE.index` for the diary at `path`.
pub(crate) fn path_for(diary: &Path) -> PathBuf {
    let mut name = diary.as_os_str().to_owned();
    name.push(".index");
    PathBuf::from(name)
}

/// What the diary file was when its index was saved.
#[derive(Debug, PartialEq, Eq)]
struct FileState {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileState {
    fn of(meta: &Metadata) -> FileState {
        FileState {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// Saves the index of `file` (held at `diary`, `lines` lines, with its
/// `identity`), which must be whole and flushed: nothing pending.
pub(crate) fn save(
    diary: &Path,
    file: &File,
    index: &Index,
    lines: u64,
    identity: &str,
    records: &[u64],
) -> io::Result<()> {
    let meta = file.metadata()?;
    let state = FileState::of(&meta);
    let entries = index.len();
    let mut out = Vec::with_capacity(HEADER + 16 * entries + 8 * records.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    for n in [state.dev, state.ino, state.len] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    for n in [state.mtime, state.mtime_nsec] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    for n in [lines, entries as u64, records.len() as u64] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    let identity: [u8; 32] = identity
        .as_bytes()
        .try_into()
        .map_err(|_| io::Error::other("the diary id is not 32 hex digits"))?;
    out.extend_from_slice(&identity);
    out.extend_from_slice(tail_hash(file, state.len)?.as_bytes());
    for &offset in &index.offsets {
        out.extend_from_slice(&offset.to_le_bytes());
    }
    for &millis in &index.millis {
        out.extend_from_slice(&millis.to_le_bytes());
    }
    for &id in records {
        out.extend_from_slice(&id.to_le_bytes());
    }
    let checksum = crc32fast::hash(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    let target = path_for(diary);
    let mut temporary = target.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    // Readable by whoever may read the diary, and no one else: it holds
    // every entry's time.
    let mut tmp = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(meta.mode() & 0o777)
        .open(&temporary)?;
    // An older temporary file keeps its mode through `create`.
    tmp.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o777))?;
    tmp.write_all(&out)?;
    drop(tmp);
    fs::rename(&temporary, &target)
}

/// The scan of `file` (held at `diary`, with metadata `meta`) that its
/// saved index gives, if there is one and it matches the file exactly;
/// why not, otherwise (for the log).
pub(crate) fn load(diary: &Path, file: &File, meta: &Metadata) -> Result<Scan, String> {
    let mut saved = match File::open(path_for(diary)) {
        Ok(saved) => saved,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err("none saved".into()),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let damaged = |_| "it is damaged".to_string();
    let mut header = [0u8; HEADER];
    saved.read_exact(&mut header).map_err(damaged)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header);
    let mut fields = Fields {
        bytes: &header,
        at: 0,
    };
    if fields.take::<12>() != *MAGIC {
        return Err("it is not a diary index".into());
    }
    if u32::from_le_bytes(fields.take()) != VERSION {
        return Err("it is from another version".into());
    }
    let state = FileState {
        dev: fields.u64(),
        ino: fields.u64(),
        len: fields.u64(),
        mtime: fields.u64() as i64,
        mtime_nsec: fields.u64() as i64,
    };
    // Checked before anything else is read: the common reason to refuse.
    if state != FileState::of(meta) {
        return Err("the diary changed since it was saved".into());
    }
    let lines = fields.u64();
    let entries = fields.u64();
    let record_count = fields.u64();
    let identity: [u8; 32] = fields.take();
    let tail: [u8; 32] = fields.take();
    let size = saved.metadata().map_err(damaged)?.len();
    let expected = entries
        .checked_add(entries)
        .and_then(|n| n.checked_add(record_count))
        .and_then(|n| n.checked_mul(8))
        .and_then(|n| n.checked_add(HEADER as u64 + 4));
    if expected != Some(size) {
        return Err("its counts do not match its size".into());
    }
    let identity = String::from_utf8(identity.to_vec()).map_err(|_| "bad identity")?;
    if !scan::is_identity(&identity) {
        return Err("bad identity".into());
    }
    let tail_now = tail_hash(file, state.len).map_err(|e| format!("cannot read the diary: {e}"))?;
    if tail_now.as_bytes() != &tail {
        return Err("the end of the diary changed since it was saved".into());
    }
    let mut words = Words {
        file: &saved,
        hasher: &mut hasher,
        buf: vec![0; 1 << 20],
    };
    let offsets = words.read(entries as usize, |w| w).map_err(damaged)?;
    let millis = words
        .read(entries as usize, |w| w as i64)
        .map_err(damaged)?;
    let records = words.read(record_count as usize, |w| w).map_err(damaged)?;
    let mut checksum = [0u8; 4];
    saved.read_exact(&mut checksum).map_err(damaged)?;
    if hasher.finalize() != u32::from_le_bytes(checksum) {
        return Err("it is damaged".into());
    }
    let ascending = offsets
        .iter()
        .zip(offsets.iter().skip(1))
        .fold(true, |ascending, (a, b)| ascending & (a < b));
    if !ascending || offsets.last().is_some_and(|&o| o >= state.len) {
        return Err("its offsets are out of order".into());
    }
    let index = Index::from_parts(offsets, millis);
    check_samples(file, &index, state.len)?;
    Ok(Scan {
        index,
        len: state.len,
        lines,
        identity: Some(identity),
        cut: None,
        records,
    })
}

/// Reads arrays of little-endian words through a reused buffer, adding
/// what it reads to the checksum.
struct Words<'a> {
    file: &'a File,
    hasher: &'a mut crc32fast::Hasher,
    buf: Vec<u8>,
}

impl Words<'_> {
    fn read<T>(&mut self, count: usize, word: impl Fn(u64) -> T) -> io::Result<Vec<T>> {
        let mut words = Vec::with_capacity(count);
        while words.len() < count {
            let n = (count - words.len()).min(self.buf.len() / 8);
            let bytes = &mut self.buf[..8 * n];
            (&mut &*self.file).read_exact(bytes)?;
            self.hasher.update(bytes);
            words.extend(
                bytes
                    .chunks_exact(8)
                    .map(|w| word(u64::from_le_bytes(w.try_into().expect("8 bytes")))),
            );
        }
        Ok(words)
    }
}

/// Reads fixed-size fields in order.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let field = self.bytes[self.at..self.at + N]
            .try_into()
            .expect("N bytes");
        self.at += N;
        field
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

fn tail_hash(file: &File, len: u64) -> io::Result<blake3::Hash> {
    let from = len.saturating_sub(TAIL);
    let mut tail = vec![0; (len - from) as usize];
    file.read_exact_at(&mut tail, from)?;
    Ok(blake3::hash(&tail))
}

/// Whether entries spread over the file are where the index says, with
/// the ids and times it says.
fn check_samples(file: &File, index: &Index, len: u64) -> Result<(), String> {
    let n = index.len();
    if n == 0 {
        return Ok(());
    }
    let picks = (0..SAMPLES).map(|k| k * n / SAMPLES).chain([n - 1]);
    let mut line = Vec::new();
    for i in picks {
        let start = index.offsets[i];
        let end = index.offsets.get(i + 1).copied().unwrap_or(len);
        line.resize((end - start) as usize, 0);
        file.read_exact_at(&mut line, start)
            .map_err(|e| format!("cannot read the diary: {e}"))?;
        let body = line.split(|&b| b == b'\n').next().unwrap_or_default();
        let agrees = crate::wire::entry::decode_line(body)
            .is_ok_and(|e| e.id == i as u64 + 1 && e.millis == index.millis[i]);
        if !agrees {
            return Err(format!("entry {} is not where it says", i + 1));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::scan::Mode;
    use crate::store::{FsyncPolicy, Record, Store};
    use std::os::unix::fs::FileExt;

    /// A diary of `n` entries, one of them amended, stopped cleanly with
    /// its index saved.
    fn saved_diary(dir: &Path, n: usize) -> PathBuf {
        let path = dir.join("d.log");
        let (mut store, recovery) = Store::open(&path, FsyncPolicy::Always).unwrap();
        assert!(!recovery.from_saved_index);
        for i in 0..n {
            store.append(&format!("entry {i} 今天"), Some(&format!("tag-{i}")));
        }
        store.commit().unwrap();
        store.append_record("new text", None, None, Record::Amends(2));
        store.commit().unwrap();
        store.save_index().unwrap();
        drop(store);
        path
    }

    fn load_of(path: &Path) -> Result<Scan, String> {
        let file = File::open(path).unwrap();
        load(path, &file, &file.metadata().unwrap())
    }

    fn summary(scan: &Scan) -> String {
        format!(
            "{:?} {:?} {} {} {:?} {:?}",
            scan.index.offsets,
            scan.index.millis,
            scan.len,
            scan.lines,
            scan.identity,
            scan.records
        )
    }

    #[test]
    fn the_saved_index_is_what_a_scan_finds() {
        let dir = tempfile::tempdir().unwrap();
        let path = saved_diary(dir.path(), 300);
        let scanned = scan::scan(&File::open(&path).unwrap(), scan::From::START, Mode::Strict);
        assert_eq!(
            summary(&load_of(&path).unwrap()),
            summary(&scanned.unwrap())
        );
        let (store, recovery) = Store::open(&path, FsyncPolicy::Always).unwrap();
        assert!(recovery.from_saved_index);
        assert_eq!(store.len(), 301);
        assert!(store.is_record(301));
        assert!(store.edit_of(2).is_some(), "the amendment is known again");
        assert_eq!(store.first_at_or_after(i64::MIN), 1);
        // As private as the diary.
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        store.save_index().unwrap();
        assert_eq!(mode(&path_for(&path)), 0o600);
    }

    #[test]
    fn a_diary_changed_after_the_stop_is_scanned_instead() {
        let dir = tempfile::tempdir().unwrap();
        let path = saved_diary(dir.path(), 50);
        let text = std::fs::read(&path).unwrap();

        // A line appended by hand.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"# a note\n").unwrap();
        assert!(load_of(&path).unwrap_err().contains("changed"));
        let (store, recovery) = Store::open(&path, FsyncPolicy::Always).unwrap();
        assert!(!recovery.from_saved_index);
        assert_eq!(store.len(), 51);
        drop(store);

        // The same bytes back, written anew: not the file that was saved.
        std::fs::write(&path, &text).unwrap();
        assert!(load_of(&path).unwrap_err().contains("changed"));
    }

    #[test]
    fn an_edit_that_keeps_the_size_and_the_time_is_caught_by_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = saved_diary(dir.path(), 50);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let modified = file.metadata().unwrap().modified().unwrap();
        let len = file.metadata().unwrap().len();
        // "entry 4…" becomes "entrx 4…", and the time is put back.
        let text = std::fs::read(&path).unwrap();
        let at = memchr::memmem::find(&text, b"entry 4").unwrap();
        file.write_all_at(b"x", at as u64 + 4).unwrap();
        file.set_modified(modified).unwrap();
        assert_eq!(file.metadata().unwrap().len(), len);
        assert!(
            load_of(&path)
                .unwrap_err()
                .contains("end of the diary changed")
        );
    }

    #[test]
    fn a_damaged_or_foreign_index_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = saved_diary(dir.path(), 50);
        let index = path_for(&path);
        let good = std::fs::read(&index).unwrap();
        // One bit of one offset.
        let mut bad = good.clone();
        bad[HEADER + 8 * 10] ^= 1;
        std::fs::write(&index, &bad).unwrap();
        assert!(load_of(&path).unwrap_err().contains("damaged"));
        // Cut short, as a power cut after the rename can leave it.
        std::fs::write(&index, &good[..good.len() / 2]).unwrap();
        assert!(load_of(&path).unwrap_err().contains("do not match"));
        std::fs::write(&index, b"").unwrap();
        assert!(load_of(&path).unwrap_err().contains("damaged"));
        // Whole and well-formed, but not this file's entries.
        let file = File::open(&path).unwrap();
        let mut wrong = scan::scan(&file, scan::From::START, Mode::Strict).unwrap();
        wrong.index.millis[0] += 1;
        save(
            &path,
            &file,
            &wrong.index,
            wrong.lines,
            "7c0e5b1f9d2a4c6e8b3f1a5d7e9c2b4a",
            &[],
        )
        .unwrap();
        assert!(
            load_of(&path)
                .unwrap_err()
                .contains("entry 1 is not where it says")
        );
        // And the store scans instead, and still opens.
        let (store, recovery) = Store::open(&path, FsyncPolicy::Always).unwrap();
        assert!(!recovery.from_saved_index);
        assert_eq!(store.len(), 51);
    }
}
