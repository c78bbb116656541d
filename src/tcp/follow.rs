//! Following: a TCP connection that gets every committed entry after an id,
//! then each new one as it is committed, within a backlog limit.
//!
//! Entries that existed when the follow began are sent as the client reads
//! them and never count as falling behind. Past that, a follower whose
//! queued plus unsent entries pass `--follow-backlog` bytes is sent the id
//! to resume from and closed, so one slow reader never holds memory or the
//! loop.

use crate::protocol;
use crate::server::history;
use crate::store::Store;
use crate::tcp::framing::OutBuf;

/// Room kept for the final notice, so the queue never passes the limit.
const NOTICE_ROOM: usize = 200;

/// Where a follower stands.
#[derive(Debug)]
pub(crate) struct Follower {
    /// The next entry to send.
    next: u64,
    /// The newest entry when the follow began.
    backlog_end: u64,
}

/// Whether a follow goes on after a feed. When it does not, the reason
/// is queued and the connection is to close once it is sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fed {
    Following,
    /// It fell more than the limit behind.
    Behind,
    /// The diary could not be read.
    ReadFailed,
}

impl Follower {
    /// Starts a follow of the entries after `after` (after the newest when
    /// `None`) and queues the line that says so.
    pub(crate) fn start(after: Option<u64>, store: &Store, out: &mut Vec<u8>) -> Follower {
        let head = store.durable();
        let after = after.unwrap_or(head);
        protocol::push_following(out, after, store.identity());
        Follower {
            next: after.saturating_add(1),
            backlog_end: head,
        }
    }

    /// Queues the committed entries this follower has not had, within
    /// `limit` bytes of backlog.
    /// Only durable entries are fed: a follower never sees one that a
    /// failed flush then takes back.
    pub(crate) fn feed(&mut self, out: &mut OutBuf, store: &Store, limit: usize) -> Fed {
        let head = store.durable();
        if self.next > head {
            return Fed::Following;
        }
        let lag_from = self.next.max(self.backlog_end + 1);
        let lag = if lag_from <= head {
            store.span_len(lag_from, head + 1) as usize
        } else {
            0
        };
        let queued = out.queued();
        if queued + lag + NOTICE_ROOM > limit {
            protocol::push_behind(&mut out.buf, limit, self.next - 1);
            return Fed::Behind;
        }
        // Refill only once half is read, so each refill is one sizeable read.
        if queued > limit / 2 {
            return Fed::Following;
        }
        let room = limit - NOTICE_ROOM - queued;
        match history::fill_follow(store, &mut self.next, head + 1, &mut out.buf, room) {
            Ok(()) => Fed::Following,
            Err(e) => {
                protocol::push_read_error(&mut out.buf, &e);
                Fed::ReadFailed
            }
        }
    }

    /// Whether a feed now would queue more: entries are waiting and the
    /// queue has room for a refill.
    pub(crate) fn wants_more(&self, store: &Store, queued: usize, limit: usize) -> bool {
        self.next <= store.durable() && queued <= limit / 2
    }
}
