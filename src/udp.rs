//! The UDP side of the server: the socket, datagrams in batches, framing
//! (one datagram is one request), the reply size rule, address cookies,
//! recent sources, and the queue of replies waiting for the socket.
//!
//! It reaches the diary only through the [`Service`] the loop lends it.
//! Replies are queued, never sent, before the loop's commit of the same
//! iteration; an ack of a failed batch is replaced in the queue
//! ([`UdpSide::patch_ack`]).
//!
//! `udp/` holds its batches of datagrams and its encrypted sessions. It may
//! import `server`, `handler`, `store`, `secure`, `protocol` and `wire`;
//! never `tcp`, `event_loop` or `client`.

pub mod datagrams;
pub mod sessions;

use crate::protocol::{self, Command, Envelope, Oversize};
use crate::secure::noise::{self, Datagram, Refusal};
use crate::server::access::gatekeeper::{self, PlaintextRule, SharedGate};
use crate::server::cookie::{Cookie, CookieJar};
use crate::server::limits::{AMPLIFICATION, Limits};
use crate::server::service::{AckSite, Outcome, Service, Transport};
use crate::server::stats::Stats;
use crate::udp::datagrams::RecvBatch;
use crate::udp::sessions::{FirstMessage, SessionRequest, UdpSessions};
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Largest reply to a datagram without an `/id` envelope: the seed's client
/// reads with `recvfrom(1024)`.
pub(crate) const RAW_REPLY_LIMIT: usize = 1024;
/// Smallest and largest reply size a client may ask for with `max=`.
pub(crate) const MIN_REPLY_LIMIT: usize = 512;
pub(crate) const MAX_REPLY_LIMIT: usize = 65_507;
/// Datagrams read per iteration before the loop turns to other work.
const BUDGET: usize = 1024;

/// The request in a datagram: one trailing `\n` or `\r\n` is not part of it.
pub(crate) fn request_bytes(datagram: &[u8]) -> &[u8] {
    let d = datagram.strip_suffix(b"\n").unwrap_or(datagram);
    if d.len() < datagram.len() {
        d.strip_suffix(b"\r").unwrap_or(d)
    } else {
        d
    }
}

/// Where a datagram came from.
#[derive(Debug, Clone, Copy)]
struct Source {
    addr: SocketAddr,
    /// Sent from this machine: a loopback source that came in over the
    /// loopback interface.
    local: bool,
}

/// A reply waiting for the socket.
struct Queued {
    to: SocketAddr,
    reply: Vec<u8>,
    /// The batch it waits for (0: none).
    hold: u64,
    /// The encrypted session it is sealed for as it leaves (0: plaintext).
    session: u32,
}

pub(crate) struct UdpSide {
    socket: UdpSocket,
    token: Token,
    batch: RecvBatch,
    /// Datagrams may be waiting (readiness is edge-triggered).
    readable: bool,
    writable_interest: bool,
    /// Replies not yet sent, oldest first.
    queue: VecDeque<Queued>,
    /// How many replies ever left the queue: the slot of its front.
    sent: u64,
    spare: Vec<Vec<u8>>,
    sources: RecentSources,
    cookies: CookieJar,
    limits: Limits,
    gate: SharedGate,
    plaintext: PlaintextRule,
    sessions: UdpSessions,
    /// An opened datagram's request.
    plain: Vec<u8>,
}

impl UdpSide {
    pub(crate) fn new(
        socket: UdpSocket,
        token: Token,
        limits: &Limits,
        gate: SharedGate,
    ) -> UdpSide {
        let plaintext = gate.lock().plaintext_rule();
        UdpSide {
            socket,
            token,
            batch: RecvBatch::default(),
            readable: false,
            writable_interest: false,
            queue: VecDeque::new(),
            sent: 0,
            spare: Vec::new(),
            sources: RecentSources::default(),
            cookies: CookieJar::default(),
            limits: limits.clone(),
            plaintext,
            gate,
            sessions: UdpSessions::new(limits),
            plain: Vec::new(),
        }
    }

    pub(crate) fn register(&mut self, registry: &Registry) -> io::Result<()> {
        datagrams::report_arrival(&self.socket)?;
        registry.register(&mut self.socket, self.token, Interest::READABLE)
    }

    pub(crate) fn on_readable(&mut self) {
        self.readable = true;
    }

    /// Whether datagrams may still be waiting (the budget ran out).
    pub(crate) fn has_waiting(&self) -> bool {
        self.readable
    }

    /// Reads and answers waiting datagrams, up to a budget per iteration.
    pub(crate) fn serve(&mut self, service: &mut impl Service) {
        if !self.readable {
            return;
        }
        let mut batch = std::mem::take(&mut self.batch);
        let now = Instant::now();
        let mut read = 0;
        while read < BUDGET {
            match batch.recv(&self.socket) {
                Ok(n) => {
                    read += n.max(1);
                    for i in 0..n {
                        let (datagram, addr) = batch.get(i);
                        self.sources.saw(addr, now);
                        let local = batch.via_loopback(i) && gatekeeper::is_loopback(addr.ip());
                        self.answer(datagram, Source { addr, local }, service);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    break;
                }
                // ICMP errors from earlier sends surface here; they concern no one now.
                Err(_) => read += 1,
            }
        }
        self.batch = batch;
        service.stats().udp_sources = self.sources.len() as u64;
    }

    fn answer(&mut self, datagram: &[u8], from: Source, service: &mut impl Service) {
        if datagram.first().is_some_and(|&b| noise::is_encrypted(b)) {
            self.answer_encrypted(datagram, from.addr, service);
        } else if self.plaintext.allows(from.local) {
            self.answer_request(request_bytes(datagram), datagram.len(), from, None, service);
        } else {
            // Nothing else: no history, nothing stored, and within 3x.
            service.stats().plaintext_refused += 1;
            if protocol::AUTH_REQUIRED.len() <= AMPLIFICATION * datagram.len() {
                let mut reply = self.spare.pop().unwrap_or_default();
                reply.extend_from_slice(protocol::AUTH_REQUIRED);
                self.push(from.addr, reply, 0, 0, service);
            }
        }
    }

    /// Handshakes, key requests and sealed requests.
    fn answer_encrypted(&mut self, datagram: &[u8], from: SocketAddr, service: &mut impl Service) {
        let mut out = self.spare.pop().unwrap_or_default();
        match noise::parse_datagram(datagram) {
            Some(Datagram::KeyRequest) => {
                noise::push_key(&mut out, &self.gate.lock().public_key());
            }
            Some(Datagram::Init {
                sender,
                cookie,
                noise,
            }) => {
                let first = FirstMessage {
                    sender,
                    cookie,
                    noise,
                };
                let mut gate = self.gate.lock();
                let stats = service.stats();
                self.sessions
                    .handshake(&mut gate, first, from, &self.cookies, &mut out, stats);
            }
            Some(Datagram::Data {
                receiver,
                nonce,
                sealed,
            }) => {
                let mut plain = std::mem::take(&mut self.plain);
                let stats = service.stats();
                let opened = self.sessions.open(
                    (receiver, nonce, sealed),
                    from,
                    &mut plain,
                    &mut out,
                    stats,
                );
                if let Some(opened) = opened {
                    let request = request_bytes(&plain);
                    let from = Source {
                        addr: from,
                        local: false,
                    };
                    self.answer_request(request, datagram.len(), from, Some(opened), service);
                }
                self.plain = plain;
            }
            // A client's message sent to the server, or garbage. Not
            // counted against its source, which may be forged.
            _ => {}
        }
        if out.is_empty() {
            self.recycle(out);
        } else {
            self.push(from, out, 0, 0, service);
        }
    }

    /// Queues a reply, or drops it when the queue is full: as the network
    /// might have dropped it, and the client's retry covers it (a write's,
    /// with its tag, is answered again). Whether it was queued.
    fn push(
        &mut self,
        to: SocketAddr,
        reply: Vec<u8>,
        hold: u64,
        session: u32,
        service: &mut impl Service,
    ) -> bool {
        if self.queue.len() >= self.limits.udp_queue {
            service.stats().dropped_replies += 1;
            self.recycle(reply);
            return false;
        }
        self.queue.push_back(Queued {
            to,
            reply,
            hold,
            session,
        });
        true
    }

    /// Answers one request (opened from a session's datagram, or plaintext
    /// where that is allowed) of a datagram of `size` bytes.
    fn answer_request(
        &mut self,
        request: &[u8],
        size: usize,
        from: Source,
        session: Option<SessionRequest>,
        service: &mut impl Service,
    ) {
        let request = protocol::parse(request, self.limits.max_entry);
        let envelope = request.envelope.as_ref();
        let limit = match &session {
            // A session's own address is proven by its handshake, another
            // by a cookie from there; the seal takes its share.
            Some(opened) => {
                let proven = opened.proven || self.proven(envelope, from);
                if proven && !opened.proven {
                    self.sessions.prove(opened.index, from.addr);
                }
                self.reply_limit(envelope, size, proven)
                    .saturating_sub(noise::UDP_DATA_OVERHEAD)
            }
            None => self.reply_limit(envelope, size, self.proven(envelope, from)),
        };
        let reads = protocol::reads_store(&request);
        if service.has_pending() && reads {
            // A read sees every write before it; a failure is settled with
            // the iteration's other acks.
            service.commit();
        }
        let cookie = match request.command {
            Ok(Command::Cookie) => self.cookies.issue(from.addr.ip(), Instant::now()),
            _ => Cookie::default(),
        };
        let transport = Transport::Udp {
            limit,
            raw: request.envelope.is_none(),
            cookie,
        };
        let mut reply = self.spare.pop().unwrap_or_default();
        let peer = session.as_ref().map(|s| &s.peer);
        let outcome = service.answer(&request, transport, peer, &mut reply);
        let oversize = match (&outcome, &request.envelope) {
            (Outcome::Wrote { id, ack_at } | Outcome::Acked { id, ack_at }, _) => Oversize::Ack {
                ack_at: *ack_at,
                id: *id,
            },
            (_, Some(envelope)) => Oversize::Tagged(envelope.tag),
            (_, None) => Oversize::Raw,
        };
        protocol::fit_datagram(&mut reply, 0, limit, oversize);
        if self.queue.len() >= self.limits.udp_queue {
            service.stats().dropped_replies += 1;
            self.recycle(reply);
            return;
        }
        let hold = match outcome {
            Outcome::Wrote { id, ack_at } | Outcome::Acked { id, ack_at } => {
                let slot = self.sent + self.queue.len() as u64;
                service.await_commit(
                    AckSite::Udp {
                        slot,
                        at: ack_at,
                        limit,
                    },
                    id,
                )
            }
            // What it read may not be durable yet: it goes out no sooner.
            _ if reads => service.read_hold(),
            _ => None,
        };
        let index = session.map_or(0, |s| s.index);
        self.push(from.addr, reply, hold.unwrap_or(0), index, service);
    }

    /// How big the reply to a datagram of `size` bytes may be: 1024 bytes
    /// to a raw request, the envelope's `max=` or the default to a tagged
    /// one; and, unless its source is `proven`, at most [`AMPLIFICATION`]
    /// times the request.
    fn reply_limit(&self, envelope: Option<&Envelope>, size: usize, proven: bool) -> usize {
        let limit = match envelope {
            None => RAW_REPLY_LIMIT,
            Some(e) => e
                .max_reply
                .unwrap_or(self.limits.udp_reply)
                .clamp(MIN_REPLY_LIMIT, MAX_REPLY_LIMIT),
        };
        if proven {
            limit
        } else {
            limit.min(AMPLIFICATION * size)
        }
    }

    /// Whether `from` has proven its address: this machine, or a valid
    /// cookie in the envelope.
    fn proven(&self, envelope: Option<&Envelope>, from: Source) -> bool {
        (self.limits.loopback_exempt && from.local)
            || envelope
                .and_then(|e| e.cookie)
                .is_some_and(|c| self.cookies.check(from.addr.ip(), c, Instant::now()))
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        // Enough small buffers for a whole iteration's datagrams, so that
        // ordinary replies allocate nothing; a big one is given back.
        const SPARE_BUFFERS: usize = 1024;
        const SPARE_CAPACITY: usize = 2048;
        if self.spare.len() < SPARE_BUFFERS && buf.capacity() <= SPARE_CAPACITY {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Replaces the ack at byte `at` of the reply in `slot` with `line`.
    pub(crate) fn patch_ack(&mut self, slot: u64, at: usize, limit: usize, line: &[u8]) {
        let queued = slot
            .checked_sub(self.sent)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.queue.get_mut(i));
        if let Some(queued) = queued {
            protocol::replace_ack(&mut queued.reply, at, line, limit);
        }
    }

    /// Once a second, and after the allow file is re-read: forgets
    /// sources gone quiet, expired sessions and those of removed devices.
    pub(crate) fn sweep(&mut self, now: Instant, stats: &mut Stats) {
        self.sources.prune(now);
        stats.udp_sources = self.sources.len() as u64;
        self.sessions.sweep(&self.gate.lock(), stats);
    }

    /// Sends the queued replies whose batch is settled, until one is held
    /// or the socket would block; asks for a writable event only while the
    /// socket is what they wait for.
    pub(crate) fn flush(&mut self, registry: &Registry, stats: &mut Stats, settled: u64) {
        let left = self.send_queued(stats, settled);
        if left != self.writable_interest {
            let interest = if left {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if registry
                .reregister(&mut self.socket, self.token, interest)
                .is_ok()
            {
                self.writable_interest = left;
            }
        }
    }

    /// Whether replies wait in the queue, held or not.
    pub(crate) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Sends what it can; whether the socket would take no more.
    pub(crate) fn send_queued(&mut self, stats: &mut Stats, settled: u64) -> bool {
        while self.queue.front().is_some_and(|q| q.hold <= settled) {
            self.seal_released(settled);
            let replies = self
                .queue
                .iter()
                .take_while(|q| q.hold <= settled)
                .map(|q| (q.to, &q.reply[..]));
            let sent = match datagrams::send(&self.socket, replies) {
                Ok(sent) => sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An unreachable peer or an oversize reply is that reply's problem only.
                Err(_) => {
                    stats.dropped_replies += 1;
                    1
                }
            };
            for _ in 0..sent {
                let queued = self.queue.pop_front().expect("sent from the queue");
                self.sent += 1;
                self.recycle(queued.reply);
            }
        }
        false
    }

    /// Seals the replies about to leave. Only now: until its batch is
    /// settled an ack may still be patched, and nonces go out in order.
    /// A reply whose session is gone becomes a refusal, so the client
    /// makes a new one and asks again.
    fn seal_released(&mut self, settled: u64) {
        for queued in self.queue.iter_mut().take_while(|q| q.hold <= settled) {
            if queued.session == 0 {
                continue;
            }
            let mut sealed = self.spare.pop().unwrap_or_default();
            match self
                .sessions
                .seal(queued.session, &queued.reply, &mut sealed)
            {
                Some(()) => {}
                None => {
                    sealed.clear();
                    noise::push_refused(&mut sealed, queued.session, Refusal::NoSession, 64);
                }
            }
            std::mem::swap(&mut queued.reply, &mut sealed);
            queued.session = 0;
            if self.spare.len() < 1024 {
                sealed.clear();
                self.spare.push(sealed);
            }
        }
    }
}

/// UDP sources seen lately, for `/stats` (UDP has no connections to count).
#[derive(Debug, Default)]
pub(crate) struct RecentSources {
    seen: HashMap<SocketAddr, Instant>,
}

impl RecentSources {
    /// How long a source counts as a client after its last datagram.
    pub(crate) const WINDOW: Duration = Duration::from_secs(60);
    /// Sources tracked at most; a flood of new ones is not remembered.
    const CAPACITY: usize = 65_536;

    pub(crate) fn saw(&mut self, from: SocketAddr, now: Instant) {
        if self.seen.len() < Self::CAPACITY || self.seen.contains_key(&from) {
            self.seen.insert(from, now);
        }
    }

    /// Forgets sources quiet for longer than the window.
    pub(crate) fn prune(&mut self, now: Instant) {
        self.seen
            .retain(|_, t| now.duration_since(*t) < Self::WINDOW);
    }

    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_framing() {
        assert_eq!(request_bytes(b"hi\n"), b"hi");
        assert_eq!(request_bytes(b"hi\r\n"), b"hi");
        assert_eq!(request_bytes(b"hi\n\n"), b"hi\n");
        assert_eq!(request_bytes(b"hi\r"), b"hi\r");
    }
}
