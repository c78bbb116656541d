//! What the two sides share: the store, the batch being built and where
//! each of its acks waits, the retry memory, and the stats. It is the
//! loop's [`Service`].
//!
//! A tagged write whose tag was seen is answered from the retry memory and
//! not stored again, whichever transport or socket the retry came by.
//!
//! A commit that fails turns every ack of its batch into an `err io` line;
//! the sites are kept until the loop's "patch acks" step, which hands each
//! to the side that queued it before anything is sent.

use crate::handler;
use crate::logging::{self, Throttle};
use crate::protocol::{self, Command, Request};
use crate::replay::ReplayMemory;
use crate::service::{AckSite, Outcome, Service, Transport};
use crate::stats::Stats;
use crate::store::Store;
use std::time::Instant;

/// A batch whose commit failed: its acks are to become `line`.
#[derive(Debug)]
pub struct FailedBatch {
    pub line: Vec<u8>,
    /// In the order the writes were answered.
    pub sites: Vec<AckSite>,
}

pub struct Shared {
    store: Store,
    replay: ReplayMemory,
    stats: Stats,
    /// The number of the batch being built.
    batch: u64,
    /// Where the acks of the batch being built wait.
    waiting: Vec<AckSite>,
    failed: Vec<FailedBatch>,
    commit_log: Throttle,
    sync_log: Throttle,
}

impl Shared {
    /// Shares `store`, remembering up to `replay_memory` tagged writes,
    /// starting with the newest ones in the file.
    pub fn new(store: Store, replay_memory: usize) -> Shared {
        let mut replay = ReplayMemory::new(replay_memory);
        match store.recent_requests(replay_memory) {
            Ok(recent) => {
                for (tag, id, timestamp) in recent.iter().rev() {
                    replay.remember(tag, *id, 0, timestamp);
                }
            }
            Err(e) => log::warn!(
                "cannot read the newest entries to remember their request tags ({e}); \
                 a retry of a write from before this start may be stored again"
            ),
        }
        Shared {
            store,
            replay,
            stats: Stats::default(),
            batch: 1,
            waiting: Vec::new(),
            failed: Vec::new(),
            commit_log: Throttle::default(),
            sync_log: Throttle::default(),
        }
    }

    /// The batches that failed since the last call, oldest first.
    pub fn take_failed(&mut self) -> Vec<FailedBatch> {
        std::mem::take(&mut self.failed)
    }

    /// For policy `interval`: flushes the file if it is due.
    pub fn sync_if_due(&mut self, now: Instant) {
        if let Err(e) = self.store.sync_if_due(now) {
            logging::warn_throttled(
                &mut self.sync_log,
                format_args!("fdatasync failed: {e}; writes are refused until one succeeds"),
            );
        }
    }

    /// Once a second: notices what a person did to the diary file while
    /// nothing was being written (commits check it themselves).
    pub fn watch_file(&mut self) {
        if !self.store.has_pending() {
            self.store.watch();
        }
    }

    /// Flushes whatever was written, whatever the policy (at shutdown).
    pub fn sync_now(&mut self) {
        if let Err(e) = self.store.sync_now() {
            log::error!("final fdatasync failed: {e}");
        }
    }

    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }
}

impl Service for Shared {
    fn answer(&mut self, request: &Request, transport: Transport, out: &mut Vec<u8>) -> Outcome {
        let tag = match (&request.envelope, &request.command) {
            (Some(envelope), Ok(Command::Write(_))) => envelope.tag,
            // Only tagged writes are remembered: everything else goes straight on.
            _ => return handler::handle(request, transport, &mut self.store, &mut self.stats, out),
        };
        if let Some(seen) = self.replay.get(tag) {
            protocol::push_tag(out, tag);
            let ack_at = out.len();
            let mut digits = itoa::Buffer::new();
            protocol::push_ack(out, digits.format(seen.id), seen.timestamp);
            // A retry of a write still in this batch shares its fate.
            return if seen.id > self.store.len() {
                Outcome::Wrote {
                    id: seen.id,
                    ack_at,
                }
            } else {
                Outcome::Acked {
                    id: seen.id,
                    ack_at,
                }
            };
        }
        let outcome = handler::handle(request, transport, &mut self.store, &mut self.stats, out);
        if let Outcome::Wrote { id, ack_at } = &outcome {
            let timestamp = protocol::ack_timestamp(&out[*ack_at..]);
            self.replay.remember(tag, *id, self.batch, timestamp);
        }
        outcome
    }

    fn commit(&mut self) {
        if !self.store.has_pending() {
            return;
        }
        let batch = self.batch;
        self.batch += 1;
        match self.store.commit() {
            Ok(()) => self.waiting.clear(),
            Err(failure) => {
                // Their ids go to other writes now; a retry must be stored.
                self.replay.forget_batch(batch);
                logging::warn_throttled(
                    &mut self.commit_log,
                    format_args!("could not store entries: {}", failure.error),
                );
                self.stats.failed_commits += 1;
                self.failed.push(FailedBatch {
                    line: protocol::commit_failed_line(&failure.error),
                    sites: std::mem::take(&mut self.waiting),
                });
            }
        }
    }

    fn has_pending(&self) -> bool {
        self.store.has_pending()
    }

    fn await_commit(&mut self, site: AckSite) {
        self.waiting.push(site);
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn stats(&mut self) -> &mut Stats {
        &mut self.stats
    }
}
