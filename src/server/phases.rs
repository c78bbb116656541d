//! Where the loop's time goes, for `/stats`: a histogram per phase of a
//! turn (serving what was readable, the commit with its look at the file,
//! feeding followers, sending), of whole turns, of how long a written
//! batch waits to be durable (the flush and the wake-up after it), and of
//! batch sizes. A reply's latency is made of these, so a tail shows in
//! the phase it comes from.
//!
//! It may import nothing else of the crate.

use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// The longest time a histogram tells apart (a minute, in µs); longer
/// ones count as this long.
const LONGEST_US: u64 = 60_000_000;

/// One figure's samples, in microseconds (sizes for `batch_entries`).
#[derive(Clone)]
struct Figure {
    name: &'static str,
    samples: Histogram<u64>,
}

impl Figure {
    fn new(name: &'static str) -> Figure {
        Figure {
            name,
            // Bounds, not `new`: `saturating_record` never grows a
            // histogram, and `new`'s first range ends near 2 ms.
            samples: Histogram::new_with_bounds(1, LONGEST_US, 3).expect("valid bounds"),
        }
    }
}

/// The phases of a turn, in the order the loop runs them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    /// Readiness: reading, parsing and answering requests.
    Serve,
    /// The group commit (the look at the file at its path included) and
    /// the acks of batches that became durable or failed.
    Commit,
    /// Followers and event streams fed with new entries.
    Feed,
    /// The periodic sweep and sending every reply that may go.
    Flush,
}

/// The histograms, kept from the start.
#[derive(Clone)]
pub(crate) struct Phases {
    figures: [Figure; 7],
    turn_started: Instant,
    phase_started: Instant,
}

const TURN: usize = 4;
const DURABLE_WAIT: usize = 5;
const BATCH_ENTRIES: usize = 6;

impl Default for Phases {
    fn default() -> Phases {
        let now = Instant::now();
        Phases {
            figures: [
                Figure::new("serve"),
                Figure::new("commit"),
                Figure::new("feed"),
                Figure::new("flush"),
                Figure::new("turn"),
                Figure::new("durable_wait"),
                Figure::new("batch_entries"),
            ],
            turn_started: now,
            phase_started: now,
        }
    }
}

impl std::fmt::Debug for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Phases")
            .field("turns", &self.figures[TURN].samples.len())
            .finish_non_exhaustive()
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

impl Phases {
    /// A turn begins: poll returned.
    pub(crate) fn turn_begins(&mut self) {
        let now = Instant::now();
        self.turn_started = now;
        self.phase_started = now;
    }

    /// `phase` is over; the next one begins now. Flush ends the turn.
    pub(crate) fn phase_done(&mut self, phase: Phase) {
        let now = Instant::now();
        let took = micros(now - self.phase_started);
        self.figures[phase as usize].samples.saturating_record(took);
        self.phase_started = now;
        if let Phase::Flush = phase {
            let turn = micros(now - self.turn_started);
            self.figures[TURN].samples.saturating_record(turn);
        }
    }

    /// A batch of `entries` was written to the file.
    pub(crate) fn batch_written(&mut self, entries: u64) {
        self.figures[BATCH_ENTRIES]
            .samples
            .saturating_record(entries);
    }

    /// A batch written at `written` is durable, as the loop learned now.
    pub(crate) fn batch_durable(&mut self, written: Instant) {
        self.figures[DURABLE_WAIT]
            .samples
            .saturating_record(micros(written.elapsed()));
    }

    /// `NAME_p50_us`, `_p99_us`, `_p999_us` and `_max_us` of each figure
    /// with samples (`turns` and `batches` count them), for `/stats`.
    pub(crate) fn figures(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let turns = self.figures[TURN].samples.len();
        let batches = self.figures[BATCH_ENTRIES].samples.len();
        out.push(("turns".to_string(), turns));
        out.push(("batches".to_string(), batches));
        for figure in &self.figures {
            let h = &figure.samples;
            if h.is_empty() {
                continue;
            }
            let unit = if figure.name == "batch_entries" {
                ""
            } else {
                "_us"
            };
            for (q, value) in [
                ("p50", h.value_at_quantile(0.5)),
                ("p99", h.value_at_quantile(0.99)),
                ("p999", h.value_at_quantile(0.999)),
                ("max", h.max()),
            ] {
                out.push((format!("{}_{q}{unit}", figure.name), value));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_and_the_turn_are_counted_once_per_turn() {
        let mut phases = Phases::default();
        for _ in 0..3 {
            phases.turn_begins();
            std::thread::sleep(Duration::from_millis(2));
            phases.phase_done(Phase::Serve);
            phases.phase_done(Phase::Commit);
            phases.phase_done(Phase::Feed);
            phases.phase_done(Phase::Flush);
        }
        phases.batch_written(40);
        let figures: std::collections::HashMap<_, _> = phases.figures().into_iter().collect();
        assert_eq!(figures["turns"], 3);
        assert_eq!(figures["batches"], 1);
        assert!(figures["serve_p50_us"] >= 2000, "{figures:?}");
        assert!(figures["turn_max_us"] >= figures["serve_max_us"]);
        assert_eq!(figures["batch_entries_max"], 40);
        // No batch became durable: no figure made of nothing.
        assert!(!figures.contains_key("durable_wait_p50_us"));
    }
}
