//! What the two sides share: the store, the batch being built and where
//! each of its acks waits, the retry memory, and the stats. It is the
//! loop's [`Service`].
//!
//! A tagged write whose tag was seen is answered from the retry memory and
//! not stored again, whichever transport or socket the retry came by.
//!
//! Batches are numbered. A batch's acks wait until the batch is durable:
//! at once under `--fsync never`/`interval`, or once the syncer's flush
//! that covered it returns under `always` (the loop goes on meanwhile);
//! the sides hold each reply behind the batch it waits for
//! ([`Service::await_commit`], [`Service::read_hold`]), and send it once
//! [`Service::settled_batch`] has passed it. A batch that fails (a write or
//! a flush) turns every ack of it into an `err io` line; the sites are kept
//! until the loop's "patch acks" step, which hands each to the side that
//! queued it, and only then is the batch settled.

use crate::handler;
use crate::protocol::{self, Command, ErrorCode, Request};
use crate::server::access::allow::Scopes;
use crate::server::access::gatekeeper::Peer;
use crate::server::logging::{self, Throttle};
use crate::server::replay::{Remembered, ReplayMemory};
use crate::server::service::{AckSite, Outcome, Service, Transport};
use crate::server::stats::Stats;
use crate::store::{CommitError, Store};
use crate::wire::entry;
use std::collections::VecDeque;
use std::time::Instant;

/// Site lists kept for reuse: one per batch in flight is enough (a flush
/// and the batch behind it, with room to spare).
const SPARE_SITE_LISTS: usize = 4;

/// A batch written to the file, waiting for the flush that covers it.
#[derive(Debug)]
struct Written {
    batch: u64,
    /// Its entries' ids.
    first_id: u64,
    last_id: u64,
    sites: Vec<AckSite>,
    /// When it was written: the wait for its flush is a phase of /stats.
    written_at: Instant,
}

/// A batch whose commit failed: its acks are to become `line`.
#[derive(Debug)]
pub struct FailedBatch {
    pub(crate) line: Vec<u8>,
    /// In the order the writes were answered.
    pub(crate) sites: Vec<AckSite>,
}

pub struct ServerState {
    store: Store,
    replay: ReplayMemory,
    stats: Stats,
    /// The number of the batch being built.
    batch: u64,
    /// Where the acks of the batch being built wait.
    waiting: Vec<AckSite>,
    /// Batches written and not yet durable, oldest first.
    unsynced: VecDeque<Written>,
    /// Emptied site lists of settled batches, for the next ones: a fresh
    /// list per batch regrew from nothing, and writing a thousand sites
    /// into memory not in the cache was 6% of the server under load.
    spare_sites: Vec<Vec<AckSite>>,
    failed: Vec<FailedBatch>,
    commit_log: Throttle,
    sync_log: Throttle,
}

impl ServerState {
    /// The answer to a tagged write already stored as `seen`: its ack
    /// again, unless the request's text is another one, or the file at the
    /// path is not the one it was stored in.
    fn answer_retry(
        &self,
        seen: Remembered,
        tag: &str,
        command: &Result<Command, protocol::RequestError>,
        out: &mut Vec<u8>,
    ) -> Outcome {
        protocol::push_tag(out, tag);
        if let Ok(command) = command
            && self.differs_from(seen.id, command)
        {
            // Never a false "stored": the tag holds another text.
            protocol::push_error(
                out,
                ErrorCode::BadArgument,
                &format_args!(
                    "tag {tag} was used for another entry (#{}); a new request needs a new tag",
                    seen.id
                ),
            );
            return Outcome::Replied;
        }
        if let Some(lost) = self.store.lost() {
            let why = self.store.describe(lost);
            out.extend_from_slice(&protocol::stored_elsewhere_line(seen.id, &why));
            return Outcome::Replied;
        }
        let ack_at = out.len();
        let mut digits = itoa::Buffer::new();
        protocol::push_ack(out, digits.format(seen.id), seen.timestamp);
        // A retry of a write not yet durable shares its fate.
        if seen.id > self.store.durable() {
            Outcome::Wrote {
                id: seen.id,
                ack_at,
            }
        } else {
            Outcome::Acked {
                id: seen.id,
                ack_at,
            }
        }
    }

    /// Whether the stored entry `id` holds another text than `command`
    /// asks for (`false` when it cannot be told: not yet in the file).
    fn differs_from(&self, id: u64, command: &Command) -> bool {
        let text = match command {
            Command::Write(text) | Command::Amend { text, .. } => *text,
            Command::Import { text, .. } => text,
            _ => return false,
        };
        if id > self.store.len() {
            return false;
        }
        let Ok(line) = self.store.read_line(id) else {
            return false;
        };
        let mut escaped = Vec::with_capacity(text.len());
        entry::escape_into(text, &mut escaped);
        entry::stored_text(&line).is_some_and(|stored| stored != escaped)
    }

    /// Shares `store`, remembering up to `replay_memory` tagged writes,
    /// starting with the newest ones in the file.
    pub fn new(store: Store, replay_memory: usize) -> ServerState {
        let mut replay = ReplayMemory::new(replay_memory);
        let recent = store.recent_requests(replay_memory, |key, id, timestamp| {
            replay.remember(key, id, 0, timestamp);
        });
        match recent {
            Ok(()) => {}
            Err(e) => log::warn!(
                "cannot read the newest entries to remember their request tags ({e}); \
                 a retry of a write from before this start may be stored again"
            ),
        }
        ServerState {
            store,
            replay,
            stats: Stats::default(),
            batch: 1,
            waiting: Vec::new(),
            unsynced: VecDeque::new(),
            spare_sites: Vec::new(),
            failed: Vec::new(),
            commit_log: Throttle::default(),
            sync_log: Throttle::default(),
        }
    }

    /// The loop's group commit, at the end of an iteration: a small batch
    /// waits while a flush is in flight (see [`Store::commit_when_due`]).
    pub(crate) fn commit_when_due(&mut self) {
        let first_id = self.store.len() + 1;
        let result = self.store.commit_when_due();
        self.after_commit(first_id, result);
    }

    fn after_commit(&mut self, first_id: u64, result: Result<bool, CommitError>) {
        match result {
            Ok(false) => {}
            Ok(true) => {
                let batch = self.batch;
                self.batch += 1;
                let last_id = self.store.len();
                if last_id >= first_id {
                    let sites = self.take_waiting();
                    self.stats.phases.batch_written(last_id - first_id + 1);
                    self.unsynced.push_back(Written {
                        batch,
                        first_id,
                        last_id,
                        sites,
                        written_at: Instant::now(),
                    });
                }
                // Sites still waiting belong to writes a loss took before
                // they were written: settling fails them.
                self.settle();
            }
            Err(failure) => {
                let batch = self.batch;
                self.batch += 1;
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

    /// The batches that failed since the last call, oldest first.
    pub fn take_failed(&mut self) -> Vec<FailedBatch> {
        std::mem::take(&mut self.failed)
    }

    /// Takes in flushes that returned: their batches are durable; a loss
    /// (a flush failed, or the file changed under unflushed writes) fails
    /// every batch not durable, the one being built included.
    pub(crate) fn settle(&mut self) {
        self.store.poll_sync();
        for loss in self.store.take_losses() {
            logging::warn_throttled(
                &mut self.commit_log,
                format_args!(
                    "entries from #{} on were not stored: {}",
                    loss.first_lost, loss.error
                ),
            );
            self.stats.failed_commits += 1;
            let line = protocol::commit_failed_line(&loss.error);
            for written in std::mem::take(&mut self.unsynced) {
                self.replay.forget_batch(written.batch);
                self.failed.push(FailedBatch {
                    line: line.clone(),
                    sites: written.sites,
                });
            }
            // The batch being built went too (its entries were pending);
            // it is over, so what was held for it may go, and writes from
            // now on are a new batch.
            self.replay.forget_batch(self.batch);
            if !self.waiting.is_empty() {
                self.failed.push(FailedBatch {
                    line,
                    sites: std::mem::take(&mut self.waiting),
                });
            }
            self.batch += 1;
        }
        let durable = self.store.durable();
        while let Some(written) = self.unsynced.pop_front_if(|w| w.last_id <= durable) {
            self.stats.phases.batch_durable(written.written_at);
            if self.spare_sites.len() < SPARE_SITE_LISTS {
                let mut sites = written.sites;
                sites.clear();
                self.spare_sites.push(sites);
            }
        }
    }

    /// The sites of the batch being built, leaving a spare list (or a new
    /// one) for the next batch.
    fn take_waiting(&mut self) -> Vec<AckSite> {
        let next = self.spare_sites.pop().unwrap_or_default();
        std::mem::replace(&mut self.waiting, next)
    }

    /// For policy `interval`: flushes the file if it is due.
    pub(crate) fn sync_if_due(&mut self, now: Instant) {
        if let Err(e) = self.store.sync_if_due(now) {
            logging::warn_throttled(
                &mut self.sync_log,
                format_args!("fdatasync failed: {e}; writes are refused until one succeeds"),
            );
        }
    }

    /// Once a second: notices what a person did to the diary file while
    /// nothing was being written (commits check it themselves).
    pub(crate) fn watch_file(&mut self) {
        if !self.store.has_pending() {
            self.store.watch();
        }
    }

    /// Flushes whatever was written, whatever the policy (at shutdown).
    pub(crate) fn sync_now(&mut self) {
        if let Err(e) = self.store.sync_now() {
            log::error!("final fdatasync failed: {e}");
        }
        self.settle();
    }

    pub(crate) fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }
}

impl Service for ServerState {
    fn answer(
        &mut self,
        request: &Request,
        transport: Transport,
        peer: Option<&Peer>,
        out: &mut Vec<u8>,
    ) -> Outcome {
        if let (Some(peer), Ok(command)) = (peer, &request.command) {
            let needed = Scopes::needed_by(command);
            if !peer.scopes.contains(needed) {
                if let Some(envelope) = &request.envelope {
                    protocol::push_tag(out, envelope.tag);
                }
                log::info!(
                    "{}: refused a request that needs {}",
                    peer.name,
                    needed.name()
                );
                protocol::push_forbidden(out, &peer.name, needed.name(), &peer.scopes);
                return Outcome::Replied;
            }
        }
        // A device's name from its key; otherwise the name the client gave.
        let author = match peer {
            Some(peer) => Some(&*peer.name),
            None => request.envelope.as_ref().and_then(|e| e.by),
        };
        let how = (transport, author);
        let tag = match (&request.envelope, &request.command) {
            (
                Some(envelope),
                Ok(
                    Command::Write(_)
                    | Command::Import { .. }
                    | Command::Amend { .. }
                    | Command::Delete { .. },
                ),
            ) => envelope.tag,
            // Only tagged writes are remembered: everything else goes straight on.
            _ => return handler::handle(request, how, &mut self.store, &mut self.stats, out),
        };
        if let Some(seen) = self.replay.get(author, tag) {
            return self.answer_retry(seen, tag, &request.command, out);
        }
        let outcome = handler::handle(request, how, &mut self.store, &mut self.stats, out);
        if let Outcome::Wrote { id, ack_at } = &outcome {
            let timestamp = protocol::ack_timestamp(&out[*ack_at..]);
            self.replay
                .remember((author, tag), *id, self.batch, timestamp);
        }
        outcome
    }

    fn write_plain(&mut self, text: &str, out: &mut Vec<u8>) -> Outcome {
        let who = (None, None);
        handler::write(text, who, true, &mut self.store, &mut self.stats, out)
    }

    fn commit(&mut self) {
        if !self.store.has_pending() {
            return;
        }
        let first_id = self.store.len() + 1;
        let result = self.store.commit();
        self.after_commit(first_id, result.map(|()| true));
    }

    fn has_pending(&self) -> bool {
        self.store.has_pending()
    }

    // Inlined into the sides: in a profile under load, reading back here
    // the site the caller had just built was the largest user-space cost
    // (a store-forwarding stall); the gain was not measurable alone.
    #[inline]
    fn await_commit(&mut self, site: AckSite, id: u64) -> Option<u64> {
        if id > self.store.len() {
            self.waiting.push(site);
            return Some(self.batch);
        }
        let written = self
            .unsynced
            .iter_mut()
            .find(|w| w.first_id <= id && id <= w.last_id)?;
        written.sites.push(site);
        Some(written.batch)
    }

    fn read_hold(&self) -> Option<u64> {
        self.unsynced.back().map(|w| w.batch)
    }

    fn settled_batch(&self) -> u64 {
        match self.unsynced.front() {
            Some(w) => w.batch - 1,
            None => self.batch - 1,
        }
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn stats(&mut self) -> &mut Stats {
        &mut self.stats
    }
}
