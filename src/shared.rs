//! What the two sides share: the store, the batch being built and where
//! each of its acks waits, and the stats. It is the loop's [`Service`].
//!
//! A commit that fails turns every ack of its batch into an `err io` line;
//! the sites are kept until the loop's "patch acks" step, which hands each
//! to the side that queued it before anything is sent.

use crate::handler;
use crate::logging::{self, Throttle};
use crate::protocol::{self, Request};
use crate::service::{AckSite, Outcome, Service, Transport};
use crate::stats::Stats;
use crate::store::Store;
use std::time::Instant;

/// A batch whose commit failed: its acks are to become `line`.
#[derive(Debug)]
pub struct FailedBatch {
    pub batch: u64,
    pub line: Vec<u8>,
    /// In the order the writes were answered.
    pub sites: Vec<AckSite>,
}

pub struct Shared {
    store: Store,
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
    pub fn new(store: Store) -> Shared {
        Shared {
            store,
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
        handler::handle(request, transport, &mut self.store, &mut self.stats, out)
    }

    fn commit(&mut self) -> Result<(), u64> {
        if !self.store.has_pending() {
            return Ok(());
        }
        let batch = self.batch;
        self.batch += 1;
        match self.store.commit() {
            Ok(()) => {
                self.waiting.clear();
                Ok(())
            }
            Err(failure) => {
                logging::warn_throttled(
                    &mut self.commit_log,
                    format_args!("could not store entries: {}", failure.error),
                );
                self.stats.failed_commits += 1;
                self.failed.push(FailedBatch {
                    batch,
                    line: protocol::commit_failed_line(&failure.error),
                    sites: std::mem::take(&mut self.waiting),
                });
                Err(batch)
            }
        }
    }

    fn has_pending(&self) -> bool {
        self.store.has_pending()
    }

    fn batch(&self) -> u64 {
        self.batch
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
