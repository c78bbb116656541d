//! The syncer: one thread that only calls `fdatasync`, so that the loop
//! goes on serving sockets while a batch reaches the disk (Redis waits for
//! its `appendfsync always` flush; this does not have to).
//!
//! The loop writes batch k to the file, asks for a flush, and goes on
//! writing batch k+1 behind it; the flush's result comes back through a
//! channel and wakes the loop (mio's `Waker`). Acks of a batch are held
//! until a flush that covered it has returned. Sockets, parsing and the
//! store's buffers stay on the loop's thread.

use crate::store::disk::SyncFn;
use hdrhistogram::Histogram;
use mio::Waker;
use std::io;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

/// The longest flush the histogram tells apart (a minute, in µs); longer
/// ones count as this long.
const LONGEST_FLUSH_US: u64 = 60_000_000;

pub struct Syncer {
    requests: Option<Sender<()>>,
    /// A flush's result, how long it took, and when it returned.
    results: Receiver<(io::Result<()>, Duration, Instant)>,
    in_flight: bool,
    thread: Option<std::thread::JoinHandle<()>>,
    /// How long each flush took, in microseconds: what a durable reply
    /// waits for at the least (`/stats`: `fsync_…`).
    durations: Histogram<u64>,
    /// How long a returned flush waited for the loop to take it in (the
    /// wake-up, and the rest of a turn): `/stats`' `fsync_handoff_…`.
    handoffs: Histogram<u64>,
}

impl Syncer {
    /// Starts the thread; each request runs `sync` once and wakes `waker`.
    pub fn start(mut sync: SyncFn, waker: Arc<Waker>) -> io::Result<Syncer> {
        let (requests, incoming) = mpsc::channel::<()>();
        let (done, results) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("diaryd-syncer".into())
            .spawn(move || {
                while incoming.recv().is_ok() {
                    let started = Instant::now();
                    let result = sync();
                    let finished = Instant::now();
                    if done.send((result, finished - started, finished)).is_err() {
                        return;
                    }
                    // A loop that cannot be woken still sees the result at
                    // its next iteration (it polls at least once a second).
                    let _ = waker.wake();
                }
            })?;
        Ok(Syncer {
            requests: Some(requests),
            results,
            in_flight: false,
            thread: Some(thread),
            // Bounds, not `new`: `saturating_record` never grows a
            // histogram, and `new`'s first range ends near 2 ms.
            durations: Histogram::new_with_bounds(1, LONGEST_FLUSH_US, 3).expect("valid bounds"),
            handoffs: Histogram::new_with_bounds(1, LONGEST_FLUSH_US, 3).expect("valid bounds"),
        })
    }

    /// Flushes done, and their durations' p50, p99, p99.9 and maximum in
    /// microseconds.
    pub(crate) fn durations(&self) -> (u64, [u64; 4]) {
        quantiles(&self.durations)
    }

    /// The same of the waits between a flush's return and the loop's
    /// taking it in.
    pub(crate) fn handoffs(&self) -> (u64, [u64; 4]) {
        quantiles(&self.handoffs)
    }

    fn note(
        &mut self,
        (result, took, finished): (io::Result<()>, Duration, Instant),
    ) -> io::Result<()> {
        self.durations.saturating_record(took.as_micros() as u64);
        self.handoffs
            .saturating_record(finished.elapsed().as_micros() as u64);
        result
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Asks for a flush; only when none is in flight.
    pub fn request(&mut self) {
        debug_assert!(!self.in_flight);
        let sent = self.requests.as_ref().is_some_and(|r| r.send(()).is_ok());
        self.in_flight = sent;
    }

    /// The result of the flush in flight, if it has come.
    pub fn try_result(&mut self) -> Option<io::Result<()>> {
        if !self.in_flight {
            return None;
        }
        match self.results.try_recv() {
            Ok(done) => {
                self.in_flight = false;
                Some(self.note(done))
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.in_flight = false;
                Some(Err(io::Error::other("the syncer thread stopped")))
            }
        }
    }

    /// Waits for the flush in flight, if any.
    pub(crate) fn wait(&mut self) -> Option<io::Result<()>> {
        if !self.in_flight {
            return None;
        }
        self.in_flight = false;
        Some(match self.results.recv() {
            Ok(done) => self.note(done),
            Err(_) => Err(io::Error::other("the syncer thread stopped")),
        })
    }
}

fn quantiles(h: &Histogram<u64>) -> (u64, [u64; 4]) {
    let at = |q| h.value_at_quantile(q);
    (h.len(), [at(0.5), at(0.99), at(0.999), h.max()])
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_flush_is_counted_at_its_length() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let slow = Box::new(|| {
            std::thread::sleep(Duration::from_millis(30));
            Ok(())
        });
        let mut syncer = Syncer::start(slow, waker).unwrap();
        syncer.request();
        // The loop takes the result in 50 ms after asking: 20 ms late.
        std::thread::sleep(Duration::from_millis(50));
        assert!(syncer.try_result().is_some());
        let (count, [p50, _, _, max]) = syncer.durations();
        assert_eq!(count, 1);
        assert!((30_000..1_000_000).contains(&max), "{max} µs");
        assert!(p50 >= 29_000, "{p50} µs");
        let (count, [_, _, _, late]) = syncer.handoffs();
        assert_eq!(count, 1);
        assert!((15_000..1_000_000).contains(&late), "{late} µs");
    }
}
