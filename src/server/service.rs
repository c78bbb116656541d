//! The narrow interface between the loop's two sides and the diary: a side
//! hands a parsed request to a [`Service`] and learns what to do next
//! ([`Outcome`]); it never touches the loop, the handler or the commit.
//!
//! The loop implements the trait ([`crate::server::state::ServerState`]) and lends it to
//! the UDP side, then the TCP side, for each step of an iteration.

use crate::protocol::Request;
use crate::server::access::gatekeeper::Peer;
use crate::server::cookie::Cookie;
use crate::server::history::PastCursor;
use crate::server::stats::Stats;
use crate::store::Store;

/// Where a request came from, as far as the reply's shape is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One datagram answers, of at most `limit` bytes; `raw` when the
    /// request had no `/id` envelope; `cookie` is the source's address cookie.
    Udp {
        limit: usize,
        raw: bool,
        cookie: Cookie,
    },
    /// A stream: replies of any size, sent as the client reads them.
    Tcp,
}

/// What the transport must do after a request was answered.
#[derive(Debug)]
pub enum Outcome {
    /// The whole reply is in the output.
    Replied,
    /// An entry was buffered (or this is a retry of a write still in the
    /// batch); its `ok` line starts at `ack_at` in the output and waits for
    /// the commit ([`Service::await_commit`]).
    Wrote { id: u64, ack_at: usize },
    /// A retry of a write already written: its `ok` line, at `ack_at`, is
    /// true once the entry is durable ([`Service::await_commit`] says).
    Acked { id: u64, ack_at: usize },
    /// `bye` is in the output; a TCP session ends once it is sent.
    Quit,
    /// TCP only: the rest of the reply comes from [`crate::server::history::fill`].
    Stream(PastCursor),
    /// TCP only: entries after `after` (after the newest when `None`), then
    /// new ones (the TCP side's `tcp/follow.rs` feeds them).
    Follow { after: Option<u64> },
}

/// Where a write's `ok` line waits for its batch, so that a failed commit
/// can replace it with an error before anything is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckSite {
    /// At stream position `at` of TCP connection `key`'s output.
    Tcp { key: usize, at: u64 },
    /// At byte `at` of the UDP reply queued as the `slot`th reply ever, a
    /// datagram of at most `limit` bytes.
    Udp { slot: u64, at: usize, limit: usize },
    /// In the `request`th held response of web connection `key`.
    Web { key: usize, request: u64 },
}

/// What a side may ask of the diary during one step of the loop.
pub trait Service {
    /// Answers one request, appending the reply to `out`. `peer` is the
    /// device of an encrypted session, whose scopes the command must be
    /// in; `None` for plaintext, which is served only where it is allowed.
    fn answer(
        &mut self,
        request: &Request,
        transport: Transport,
        peer: Option<&Peer>,
        out: &mut Vec<u8>,
    ) -> Outcome;
    /// Answers a plain write ([`crate::protocol::plain_write`]) from a
    /// plaintext TCP connection: what [`Service::answer`] does for it
    /// (no envelope, no device, nothing to remember), without the dispatch.
    fn write_plain(&mut self, text: &str, out: &mut Vec<u8>) -> Outcome;
    /// Writes the pending batch now, so that a read sees every write
    /// before it. Its acks are settled by the loop later in the iteration.
    fn commit(&mut self);
    /// Whether writes are waiting for a commit.
    fn has_pending(&self) -> bool;
    /// Records where the ack of entry `id` waits for its batch, and says
    /// which batch that is (the reply is held until it is settled); `None`
    /// when the entry is durable already.
    fn await_commit(&mut self, site: AckSite, id: u64) -> Option<u64>;
    /// The batch a reply that read the store waits for: what it read may
    /// be written but not yet durable. `None`: it need not wait.
    fn read_hold(&self) -> Option<u64>;
    /// Every batch up to this one is durable or failed (and its acks
    /// patched): replies held for it may go.
    fn settled_batch(&self) -> u64;
    fn store(&self) -> &Store;
    fn stats(&mut self) -> &mut Stats;
}
