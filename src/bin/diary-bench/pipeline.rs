//! The request path without sockets: TCP lines framed, checked, parsed,
//! answered and stored in batches, in this process, with the server's own
//! code. It measures what diaryd adds per write on top of the kernel's
//! socket work, steadily enough to judge a change to the hot path (the
//! socket loads swing ±20% on a shared machine).
//!
//! `--floor` times the least any server storing the same entries must do
//! per line, with the same byte-class helpers, so that the distance from
//! diaryd's request path to what cannot be saved is a measurement too.

use diary::server::service::{AckSite, Outcome, Service};
use diary::server::state::ServerState;
use diary::store::disk::{Disk, SyncFn};
use diary::store::{FsyncPolicy, Store};
use diary::tcp::framing::{LineFrame, LineFramer};
use serde::Serialize;
use std::io;
use std::time::Instant;

/// Where the batches go.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sink {
    /// A disk that keeps nothing: the code alone.
    Null,
    /// A fresh diary in a temp dir: the code and the page cache.
    File,
}

#[derive(Serialize)]
pub struct PipelineReport {
    pub lines: u64,
    pub batch: usize,
    pub size: usize,
    pub sink: Sink,
    /// The floor (`--floor`) rather than diaryd's code.
    pub floor: bool,
    /// Each round's cost per line, in order.
    pub rounds_ns: Vec<f64>,
    /// Their median.
    pub ns_per_line: f64,
}

impl PipelineReport {
    pub fn describe(&self) -> String {
        let rounds: Vec<String> = self.rounds_ns.iter().map(|r| format!("{r:.1}")).collect();
        format!(
            "{}{} lines of {} bytes in batches of {}, stored to {:?}: {:.1} ns per line \
             ({:.2} M lines/s; rounds: {})\n",
            if self.floor { "floor: " } else { "" },
            self.lines,
            self.size,
            self.batch,
            self.sink,
            self.ns_per_line,
            1e3 / self.ns_per_line,
            rounds.join(" ")
        )
    }
}

pub fn run(
    lines: u64,
    batch: usize,
    size: usize,
    sink: Sink,
    rounds: usize,
    floor: bool,
) -> io::Result<PipelineReport> {
    let batch = batch.max(1);
    let mut input = Vec::with_capacity(batch * (size + 1));
    for i in 0..batch {
        let mut line = format!("{i} ").into_bytes();
        line.resize(size.max(line.len()), b'x');
        line.push(b'\n');
        input.extend_from_slice(&line);
    }
    let mut rounds_ns = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        rounds_ns.push(if floor {
            floor_round(&input, batch, lines, sink)?
        } else {
            one_round(&input, batch, lines, sink)?
        });
    }
    Ok(PipelineReport {
        lines,
        batch,
        size,
        sink,
        floor,
        ns_per_line: crate::median_of(&rounds_ns),
        rounds_ns,
    })
}

/// Takes every write and keeps nothing: the code alone, without the page cache.
struct NullDisk;

impl Disk for NullDisk {
    fn append(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn truncate(&mut self, _: u64) -> io::Result<()> {
        Ok(())
    }

    fn read_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
        Err(io::Error::other("the null sink keeps nothing to read"))
    }

    fn is_the_file(&self) -> bool {
        false
    }

    fn sync_handle(&self) -> io::Result<SyncFn> {
        Ok(Box::new(|| Ok(())))
    }
}

/// Serves `lines` lines, `input` (one batch) at a time; nanoseconds per line.
fn one_round(input: &[u8], batch: usize, lines: u64, sink: Sink) -> io::Result<f64> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pipeline.diary");
    let (store, _) = match sink {
        Sink::Null => Store::open_on(&path, FsyncPolicy::Never, |_| Box::new(NullDisk)),
        Sink::File => Store::open(&path, FsyncPolicy::Never),
    }
    .map_err(io::Error::other)?;
    let mut shared = ServerState::new(store, 0);
    let max_entry = 64 * 1024;
    let mut framer = LineFramer::new(max_entry + 128);
    let mut out = Vec::with_capacity(64 * 1024);
    let batches = lines.div_ceil(batch as u64);
    let started = Instant::now();
    for _ in 0..batches {
        let mut src = input;
        while !src.is_empty() {
            framer.read_from(&mut src)?;
            // As the event loop does for each line, minus the sockets.
            while let Some(frame) = framer.peek() {
                let LineFrame::Line(range) = frame.clone() else {
                    return Err(io::Error::other("a generated line was too long"));
                };
                let line = framer.line(range);
                if let (Outcome::Wrote { id, ack_at }, _) =
                    diary::tcp::answer_line(line, None, max_entry, &mut shared, &mut out)
                {
                    let at = ack_at as u64;
                    shared.await_commit(AckSite::Tcp { key: 0, at }, id);
                }
                framer.consume(&frame);
            }
        }
        shared.commit();
        if !shared.take_failed().is_empty() {
            return Err(io::Error::other("a commit failed"));
        }
        out.clear();
    }
    let elapsed = started.elapsed();
    let stored = shared.store().len();
    if stored != batches * batch as u64 {
        return Err(io::Error::other(format!(
            "stored {stored} entries, expected {}",
            batches * batch as u64
        )));
    }
    Ok(elapsed.as_nanos() as f64 / stored as f64)
}

/// The floor: per line, only the work no server storing these entries can
/// skip, in one loop with nothing else (no requests, no commands, no
/// tags, no acks held for a flush): the newline found, the UTF-8 and
/// control bytes checked, `ID TAB TIME TAB TEXT` appended to the batch
/// (escaping checked) and indexed (offset and time, as diaryd's index),
/// `ok ID TIME` appended to the replies and its place noted, with
/// diaryd's own formatting functions. Batches go where diaryd's would.
fn floor_round(input: &[u8], batch: usize, lines: u64, sink: Sink) -> io::Result<f64> {
    let dir = tempfile::tempdir()?;
    let mut disk: Box<dyn io::Write> = match sink {
        Sink::Null => Box::new(io::sink()),
        Sink::File => Box::new(std::fs::File::create(dir.path().join("floor.diary"))?),
    };
    let time = diary::wire::entry::format_timestamp(1_764_000_000_000);
    let mut read = vec![0u8; input.len()];
    let mut entries: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut index: Vec<(u64, i64)> = Vec::new();
    let mut sites: Vec<usize> = Vec::new();
    let mut written = 0u64;
    let mut digits = itoa::Buffer::new();
    let batches = lines.div_ceil(batch as u64);
    let started = Instant::now();
    for _ in 0..batches {
        // What a socket read would do.
        read.copy_from_slice(input);
        let mut rest = &read[..];
        while let Some(newline) = memchr::memchr(b'\n', rest) {
            let line = &rest[..newline];
            rest = &rest[newline + 1..];
            let text = simdutf8::basic::from_utf8(line)
                .map_err(|_| io::Error::other("a generated line is not UTF-8"))?;
            if diary::wire::ascii::has_control(line) {
                return Err(io::Error::other("a generated line has a control byte"));
            }
            let id = digits.format(index.len() as u64 + 1);
            index.push((written + entries.len() as u64, 1_764_000_000_000));
            // diaryd's own formatting: escaping checked, the text copied.
            diary::wire::entry::encode_line_digits(id, &time, text, "", &mut entries);
            sites.push(out.len());
            diary::protocol::push_ack(&mut out, id, &time);
        }
        disk.write_all(&entries)?;
        written += entries.len() as u64;
        entries.clear();
        out.clear();
        sites.clear();
    }
    let elapsed = started.elapsed();
    if index.len() as u64 != batches * batch as u64 {
        return Err(io::Error::other("the floor lost lines"));
    }
    Ok(elapsed.as_nanos() as f64 / index.len() as f64)
}
