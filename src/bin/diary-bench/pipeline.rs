//! The request path without sockets: TCP lines framed, checked, parsed,
//! answered and stored in batches, in this process, with the server's own
//! code. It measures what diaryd adds per write on top of the kernel's
//! socket work, steadily enough to judge a change to the hot path (the
//! socket loads swing ±20% on a shared machine).

use diary::disk::{Disk, SyncFn};
use diary::framing::{Frame, LineFramer};
use diary::service::{AckSite, Outcome, Service, Transport};
use diary::shared::Shared;
use diary::store::{FsyncPolicy, Store};
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
    /// Each round's cost per line, in order.
    pub rounds_ns: Vec<f64>,
    /// Their median.
    pub ns_per_line: f64,
}

impl PipelineReport {
    pub fn describe(&self) -> String {
        let rounds: Vec<String> = self.rounds_ns.iter().map(|r| format!("{r:.1}")).collect();
        format!(
            "{} lines of {} bytes in batches of {}, stored to {:?}: {:.1} ns per line \
             ({:.2} M lines/s; rounds: {})\n",
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
        rounds_ns.push(one_round(&input, batch, lines, sink)?);
    }
    Ok(PipelineReport {
        lines,
        batch,
        size,
        sink,
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
    let mut shared = Shared::new(store, 0);
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
                let Frame::Line(range) = frame.clone() else {
                    return Err(io::Error::other("a generated line was too long"));
                };
                let request = diary::protocol::parse(framer.line(range), max_entry);
                if shared.has_pending() && diary::protocol::reads_store(&request) {
                    return Err(io::Error::other("a generated line reads the store"));
                }
                if let Outcome::Wrote { id, ack_at } =
                    shared.answer(&request, Transport::Tcp, None, &mut out)
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
