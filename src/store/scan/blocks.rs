//! The scan's fast path: a block of the file at a time, the checks every
//! line needs are made once for the whole block (UTF-8 with SIMD, and
//! whether any byte needs a closer look: a control byte or a backslash),
//! so each clean entry line costs only finding its fields.
//!
//! It vouches for a prefix of the file and stops before the first line it
//! cannot, leaving that line and everything after it to the exact
//! line-by-line scan, which alone judges damage, holes and an unfinished
//! end. A line this path accepts is one the exact scan accepts, with the
//! same id and time: a line it is unsure of goes through the exact
//! decoder, and only one that decoder refuses stops the prefix.

use super::{Scan, ScanError, read_meta};
use crate::wire::entry;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes read at a time: small enough that a block is still in the CPU's
/// cache for the pass over its lines after the passes over its bytes.
/// Tests read a few bytes at a time, so that lines cross reads.
const READ_BYTES: usize = if cfg!(test) { 48 } else { 256 * 1024 };

/// Scans from `scan.len` (entry ids from `next_id`) for as long as every
/// line is a whole entry or `#` line this path vouches for, adding them to
/// `scan`. What it leaves, from `scan.len` on, is for the exact scan.
pub(super) fn scan_prefix(file: &File, next_id: u64, scan: &mut Scan) -> Result<(), ScanError> {
    let mut buf = vec![0u8; READ_BYTES];
    let mut filled = 0;
    // The file offset of `buf[0]`.
    let mut base = scan.len;
    let mut times = entry::TimeCache::default();
    loop {
        if filled == buf.len() {
            // One line longer than the buffer: a hand edit, or damage.
            buf.resize(buf.len() * 2, 0);
        }
        let n = match file.read_at(&mut buf[filled..], base + filled as u64) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let Some(last) = memchr::memrchr(b'\n', &buf[..filled]) else {
            continue;
        };
        let whole = last + 1;
        if !scan_block(&buf[..whole], (base, next_id), &mut times, scan)? {
            return Ok(());
        }
        buf.copy_within(whole..filled, 0);
        filled -= whole;
        base += whole as u64;
    }
}

/// Takes the lines of `block` (whole lines, starting at file offset
/// `base`) into `scan` up to the first one the exact scan must judge.
/// Whether it took them all.
fn scan_block(
    block: &[u8],
    (base, next_id): (u64, u64),
    times: &mut entry::TimeCache,
    scan: &mut Scan,
) -> Result<bool, ScanError> {
    let clean =
        simdutf8::basic::from_utf8(block).is_ok() && !crate::wire::ascii::has_special(block);
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', block) {
        let body = &block[start..end];
        let number = scan.lines + 1;
        if body.first() == Some(&b'#') {
            if let Err(ScanError::Bad(_)) = read_meta(body, number, scan) {
                return Ok(false);
            }
        } else {
            let fields = match clean.then(|| clean_entry(body, times)).flatten() {
                Some(fields) => Some(fields),
                None => entry::decode_line(body)
                    .ok()
                    .map(|e| (e.id, e.millis, entry::has_record_attr(e.attrs))),
            };
            let expected = next_id + scan.index.len() as u64;
            match fields {
                Some((id, millis, record)) if id == expected => {
                    scan.index.push(base + start as u64, millis);
                    if record {
                        scan.records.push(id);
                    }
                }
                _ => return Ok(false),
            }
        }
        scan.lines = number;
        scan.len = base + end as u64 + 1;
        start = end + 1;
    }
    Ok(true)
}

/// An entry line of a clean block (valid UTF-8, no control byte but tabs,
/// no backslash) in the store's own shape: its id, time and whether it is
/// an amendment or deletion. `None` when it is not in that shape, which
/// does not make it wrong: the exact decoder decides.
fn clean_entry(body: &[u8], times: &mut entry::TimeCache) -> Option<(u64, i64, bool)> {
    if !matches!(body.first(), Some(b'1'..=b'9')) {
        return None;
    }
    let mut id: u64 = 0;
    let mut i = 0;
    while let Some(&digit @ b'0'..=b'9') = body.get(i) {
        // 18 digits cannot overflow; a longer id takes the exact path.
        if i == 18 {
            return None;
        }
        id = id * 10 + u64::from(digit - b'0');
        i += 1;
    }
    // `ID<TAB>` then the store's 29-byte time and a tab.
    if body.get(i) != Some(&b'\t') || body.get(i + 30) != Some(&b'\t') {
        return None;
    }
    let millis = times.millis(&body[i + 1..i + 30])?;
    let after_text = &body[i + 31..];
    let record = match memchr::memchr(b'\t', after_text) {
        None => false,
        Some(tab) => clean_attrs(&after_text[tab + 1..])?,
    };
    Some((id, millis, record))
}

/// Attributes of a clean line, `KEY=VALUE` separated by tabs: whether one
/// makes the line an amendment or deletion. The values need no check in a
/// clean block (no control byte, no backslash).
fn clean_attrs(attrs: &[u8]) -> Option<bool> {
    let mut record = false;
    for attr in attrs.split(|&b| b == b'\t') {
        let eq = attr.iter().position(|&b| !b.is_ascii_lowercase())?;
        if eq == 0 || attr[eq] != b'=' {
            return None;
        }
        record |= entry::is_record_key(&attr[..eq]);
    }
    Some(record)
}
