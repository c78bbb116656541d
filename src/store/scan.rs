//! Reading a diary file into an index: at start (recovering what a crash
//! left), for lines added to the file while diaryd runs, and for a file
//! that replaced the diary at its path.
//!
//! The file's lines (docs/FORMAT.md):
//! - `# diary v2 id=HEX created=TIME`: the header of a file begun by
//!   format 2; `# diary id=HEX …` gives an older file its identity, appended.
//! - `ID<TAB>TIME<TAB>TEXT[<TAB>KEY=VALUE]...`: an entry, ids 1, 2, 3, …
//! - any other line starting with `#`: a comment, kept and ignored.
//!
//! A crash can leave two things at the end: a last line without its
//! newline (a write cut short), and a hole of NUL bytes (a write torn by a
//! power cut: the file grew, part of the data never reached the disk). Both
//! come only from a batch that was never acknowledged, so recovery cuts
//! them off and keeps the bytes aside. A hole is only taken for such a tail
//! if what follows it is one batch (entries with one timestamp: diaryd
//! stamps a batch with one clock reading) or more hole; anything else is
//! damage in the middle and stops the start.

mod blocks;

use crate::wire::entry::{self, LineError};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};

/// Entries per block of the time index's running maximum.
const BLOCK: usize = 1024;
/// The format this version writes.
pub(crate) const FORMAT: u32 = 2;

/// Where each entry starts and when it was written.
///
/// Times need not be in order (imports, hand edits, clock jumps), so a
/// time query bisects a running maximum, kept per block of `BLOCK`
/// entries (8 bytes per 1024 entries), and then filters each candidate by
/// its own time.
#[derive(Debug, Default, Clone)]
pub(crate) struct Index {
    /// `offsets[i]` is where entry `i + 1` starts.
    pub(crate) offsets: Vec<u64>,
    /// `millis[i]` is entry `i + 1`'s own time.
    pub(crate) millis: Vec<i64>,
    /// `block_max[b]`: the latest time among entries `1..=(b + 1) * BLOCK`.
    block_max: Vec<i64>,
}

impl Index {
    pub(crate) fn len(&self) -> usize {
        self.offsets.len()
    }

    /// An index of entries whose offsets and times are known.
    pub(crate) fn from_parts(offsets: Vec<u64>, millis: Vec<i64>) -> Index {
        let mut running = i64::MIN;
        let block_max = millis
            .chunks(BLOCK)
            .map(|block| {
                running = running.max(block.iter().copied().max().unwrap_or(i64::MIN));
                running
            })
            .collect();
        Index {
            offsets,
            millis,
            block_max,
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, offset: u64, millis: i64) {
        let i = self.offsets.len();
        self.offsets.push(offset);
        self.millis.push(millis);
        if i.is_multiple_of(BLOCK) {
            let before = self.block_max.last().copied().unwrap_or(i64::MIN);
            self.block_max.push(before.max(millis));
        } else if let Some(last) = self.block_max.last_mut() {
            *last = (*last).max(millis);
        }
    }

    pub(crate) fn truncate(&mut self, len: usize) {
        self.offsets.truncate(len);
        self.millis.truncate(len);
        self.block_max.truncate(len.div_ceil(BLOCK));
        if let Some(b) = self.block_max.len().checked_sub(1) {
            let before = b.checked_sub(1).map_or(i64::MIN, |p| self.block_max[p]);
            let own = self.millis[b * BLOCK..].iter().copied().max();
            self.block_max[b] = before.max(own.unwrap_or(i64::MIN));
        }
    }

    /// The first of the first `len` entries whose time, or an earlier
    /// entry's, is at or after `millis` (1-based; `len + 1` if none). No
    /// entry before it is at or after `millis`.
    pub(crate) fn first_candidate(&self, millis: i64, len: usize) -> u64 {
        let blocks = len.div_ceil(BLOCK);
        let b = self.block_max[..blocks].partition_point(|&m| m < millis);
        let mut running = b.checked_sub(1).map_or(i64::MIN, |p| self.block_max[p]);
        for i in b * BLOCK..len {
            running = running.max(self.millis[i]);
            if running >= millis {
                return i as u64 + 1;
            }
        }
        len as u64 + 1
    }
}

/// What a scan found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) index: Index,
    /// Bytes of complete, kept lines (where the file is cut to, if cut).
    pub(crate) len: u64,
    /// Complete, kept lines, of every kind.
    pub(crate) lines: u64,
    /// The diary's identity, from its header or identity line.
    pub(crate) identity: Option<String>,
    /// What recovery would cut off the end: from `at` on.
    pub(crate) cut: Option<Cut>,
    /// Amendment and deletion lines: their ids, in order.
    pub(crate) records: Vec<u64>,
}

#[derive(Debug, Clone)]
pub(crate) struct Cut {
    /// Offset of the first byte cut.
    pub(crate) at: u64,
    /// Line number (1-based) of the first line cut.
    pub(crate) line: u64,
    pub(crate) why: CutReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CutReason {
    /// The last line has no newline.
    Unfinished,
    /// A hole of NUL bytes, and after it at most one batch.
    Hole,
}

/// A line that stops the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadLine {
    /// Line number, 1-based.
    pub(crate) line: u64,
    pub(crate) reason: String,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// How strict a scan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// At start: a torn end is reported in [`Scan::cut`].
    Recover,
    /// Lines added while diaryd runs, or a replacing file: everything must
    /// be whole, or nothing is taken.
    Strict,
}

/// Where a scan starts: at the beginning of the file, or after what is
/// already indexed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct From {
    pub(crate) offset: u64,
    pub(crate) line: u64,
    pub(crate) next_id: u64,
}

impl From {
    pub(crate) const START: From = From {
        offset: 0,
        line: 0,
        next_id: 1,
    };
}

/// Scans `file` from `from` to its end: as far as it can with the fast
/// path over whole blocks, then line by line from the first line that
/// needs judging, if any.
pub(crate) fn scan(file: &File, from: From, mode: Mode) -> Result<Scan, ScanError> {
    let mut scan = Scan {
        len: from.offset,
        lines: from.line,
        ..Scan::default()
    };
    blocks::scan_prefix(file, from.next_id, &mut scan)?;
    scan_lines(file, from.next_id, mode, scan)
}

/// The exact scan, one line at a time from `scan.len` on: the only judge
/// of damage, holes and an unfinished end.
fn scan_lines(file: &File, next_id: u64, mode: Mode, mut scan: Scan) -> Result<Scan, ScanError> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader.seek(SeekFrom::Start(scan.len))?;
    let mut line = Vec::with_capacity(256);
    let mut offset = scan.len;
    // A hole seen, and the one timestamp the lines after it may carry.
    let mut hole: Option<(Cut, Option<String>)> = None;
    let mut number = scan.lines;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        number += 1;
        let at = offset;
        offset += n as u64;
        if line.last() != Some(&b'\n') {
            if mode == Mode::Strict {
                return Err(ScanError::Bad(BadLine {
                    line: number,
                    reason: "the last line has no newline (still being written?)".into(),
                }));
            }
            scan.cut = Some(match hole {
                Some((cut, _)) => cut,
                None => Cut {
                    at,
                    line: number,
                    why: CutReason::Unfinished,
                },
            });
            return Ok(scan);
        }
        let body = &line[..n - 1];
        if let Some((_, stamp)) = &mut hole {
            let follows_the_batch = match entry::decode_line(body) {
                Ok(e) => stamp.get_or_insert_with(|| e.timestamp.to_string()) == e.timestamp,
                Err(LineError::Hole) => true,
                Err(_) => false,
            };
            if !follows_the_batch {
                let (cut, _) = hole.expect("inside a hole");
                return Err(ScanError::Bad(BadLine {
                    line: cut.line,
                    reason: format!(
                        "{}, and what follows is more than the one write it tore, \
                         so this is damage in the middle of the file",
                        LineError::Hole
                    ),
                }));
            }
            continue;
        }
        if body.first() == Some(&b'#') {
            read_meta(body, number, &mut scan)?;
        } else {
            match entry::decode_line(body) {
                Ok(e) => {
                    let expected = next_id + scan.index.len() as u64;
                    if e.id != expected {
                        return Err(ScanError::Bad(BadLine {
                            line: number,
                            reason: format!("expected id {expected}, found {}", e.id),
                        }));
                    }
                    scan.index.push(at, e.millis);
                    if entry::has_record_attr(e.attrs) {
                        scan.records.push(e.id);
                    }
                }
                Err(LineError::Hole) if mode == Mode::Recover => {
                    let cut = Cut {
                        at,
                        line: number,
                        why: CutReason::Hole,
                    };
                    hole = Some((cut, None));
                    continue;
                }
                Err(e) => {
                    return Err(ScanError::Bad(BadLine {
                        line: number,
                        reason: format!("not a diary entry: {e}"),
                    }));
                }
            }
        }
        scan.lines += 1;
        scan.len = offset;
    }
    if let Some((cut, _)) = hole {
        scan.cut = Some(cut);
    }
    Ok(scan)
}

/// A `#` line: the header, an identity line, or a comment.
fn read_meta(body: &[u8], number: u64, scan: &mut Scan) -> Result<(), ScanError> {
    let Some(words) = body.strip_prefix(b"# diary ") else {
        return Ok(()); // a comment
    };
    let words = String::from_utf8_lossy(words);
    let mut words = words.split(' ');
    let mut first = words.next().unwrap_or_default();
    if let Some(version) = first.strip_prefix('v') {
        match version.parse::<u32>() {
            Ok(v) if v <= FORMAT => {}
            Ok(v) => {
                return Err(ScanError::Bad(BadLine {
                    line: number,
                    reason: format!(
                        "the file is in diary format {v}, newer than this diaryd's {FORMAT}; \
                         run a newer diaryd"
                    ),
                }));
            }
            Err(_) => return Ok(()),
        }
        first = words.next().unwrap_or_default();
    }
    if let Some(id) = first.strip_prefix("id=")
        && is_identity(id)
        && scan.identity.is_none()
    {
        scan.identity = Some(id.to_string());
    }
    Ok(())
}

/// A diary id: 32 lowercase hex digits.
pub(crate) fn is_identity(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A new random diary id.
pub(crate) fn new_identity() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the system has randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a scan stopped.
#[derive(Debug)]
pub(crate) enum ScanError {
    Io(io::Error),
    Bad(BadLine),
}

impl std::convert::From<io::Error> for ScanError {
    fn from(e: io::Error) -> ScanError {
        ScanError::Io(e)
    }
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::Io(e) => write!(f, "cannot read it: {e}"),
            ScanError::Bad(bad) => write!(f, "{bad}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    /// What a scan found, or why it stopped, in one comparable value.
    fn outcome(scan: Result<Scan, ScanError>) -> String {
        match scan {
            Ok(s) => format!(
                "{:?} {:?} len={} lines={} id={:?} records={:?} cut={:?}",
                s.index.offsets,
                s.index.millis,
                s.len,
                s.lines,
                s.identity,
                s.records,
                s.cut.map(|c| (c.at, c.line, c.why))
            ),
            Err(e) => format!("error: {e}"),
        }
    }

    /// Lines of every kind a diary file meets: the store's own entries,
    /// hand-written ones, comments and headers, and damage.
    fn any_line() -> impl Strategy<Value = (u8, String)> {
        let texts = prop::sample::select(vec![
            "rain",
            "今天下雨了，我在家写日记。",
            "a tab\\there and a backslash \\\\",
            "",
            "bad escape \\q",
            "raw\u{1}control",
            "wide 😀 text",
        ]);
        let attrs = prop::sample::select(vec![
            "",
            "\treq=1f0a9c7e5d3b2a18-1",
            "\treq=t-2\tby=me@laptop",
            "\tamends=1",
            "\tdeletes=2\timported=-",
            "\t",
            "\tBy=x",
            "\tby",
            "\tx=a\\tb",
        ]);
        let times = prop::sample::select(vec![
            "2026-11-26T14:00:03.118+00:00",
            "2026-11-26T15:00:03.118+01:00",
            "2026-11-26T14:00:03Z",
            "2026-02-30T14:00:03.118+00:00",
            "yesterday",
        ]);
        (0u8..20, texts, attrs, times).prop_map(|(kind, text, attrs, time)| {
            let line = match kind {
                // Mostly entries: `kind` 0..=11, with the next id.
                0..=11 => format!("{{ID}}\t{time}\t{text}{attrs}"),
                12 => "# a comment\twith a tab".into(),
                13 => "# diary v2 id=7c0e5b1f9d2a4c6e8b3f1a5d7e9c2b4a created=x".into(),
                14 => "# diary v9 id=7c0e5b1f9d2a4c6e8b3f1a5d7e9c2b4a".into(),
                15 => String::new(),
                16 => format!("{{ID}}\t{time}\t{text}\r"),
                17 => "\0\0\0\0\0\0".into(),
                18 => format!("{{NEXT}}\t{time}\t{text}"),
                _ => format!("{{ID}} {time} {text}"),
            };
            (kind, line)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// The fast path over blocks finds what the exact line-by-line
        /// scan finds, for good files and damaged ones, in both modes.
        #[test]
        fn the_block_scan_agrees_with_the_exact_scan(
            lines in prop::collection::vec(any_line(), 0..40),
            bad_utf8_at in prop::option::of(0usize..40),
            long_line_at in prop::option::of(0usize..40),
            unfinished in any::<bool>(),
        ) {
            let mut file = tempfile::tempfile().unwrap();
            let mut id = 1u64;
            let mut bytes = Vec::new();
            for (i, (kind, line)) in lines.iter().enumerate() {
                let mut line = line.replace("{ID}", &id.to_string());
                line = line.replace("{NEXT}", &(id + 1).to_string());
                if long_line_at == Some(i) {
                    line.push_str(&"long ".repeat(40));
                }
                bytes.extend_from_slice(line.as_bytes());
                if bad_utf8_at == Some(i) {
                    bytes.push(0xff);
                }
                if !(unfinished && i + 1 == lines.len()) {
                    bytes.push(b'\n');
                }
                if *kind <= 11 {
                    id += 1;
                }
            }
            file.write_all(&bytes).unwrap();
            for mode in [Mode::Recover, Mode::Strict] {
                let exact = scan_lines(&file, 1, mode, Scan::default());
                let fast = scan(&file, From::START, mode);
                prop_assert_eq!(outcome(fast), outcome(exact), "{:?}", String::from_utf8_lossy(&bytes));
            }
        }
    }

    #[test]
    fn time_index_finds_the_first_candidate_on_unordered_times() {
        let mut index = Index::default();
        // Mostly in order, with an imported old entry and a clock jump back.
        let times: Vec<i64> = (0..5000)
            .map(|i| match i {
                1500 => 10,
                3000..=3100 => 2_000_000 + i,
                _ => 1_000_000 + i * 10,
            })
            .collect();
        for (i, &t) in times.iter().enumerate() {
            index.push(i as u64 * 100, t);
        }
        let brute = |ms: i64, len: usize| {
            let mut running = i64::MIN;
            for (i, &t) in times[..len].iter().enumerate() {
                running = running.max(t);
                if running >= ms {
                    return i as u64 + 1;
                }
            }
            len as u64 + 1
        };
        for ms in [
            i64::MIN,
            0,
            10,
            11,
            1_000_000,
            1_015_000,
            1_030_005,
            2_000_000,
            2_003_050,
            i64::MAX,
        ] {
            for len in [0, 1, 1023, 1024, 1025, 3050, 5000] {
                assert_eq!(index.first_candidate(ms, len), brute(ms, len), "{ms} {len}");
            }
        }
        index.truncate(3050);
        assert_eq!(
            index.first_candidate(2_003_050, 3050),
            brute(2_003_050, 3050)
        );
        index.truncate(1024);
        for ms in [0, 1_005_000, 1_015_000] {
            assert_eq!(index.first_candidate(ms, 1024), brute(ms, 1024), "{ms}");
        }
    }
}
