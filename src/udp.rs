//! The UDP side of the server: the socket, datagrams in batches, framing
//! (one datagram is one request), the reply size rule, address cookies,
//! recent sources, and the queue of replies waiting for the socket.
//!
//! It reaches the diary only through the [`Service`] the loop lends it.
//! Replies are queued, never sent, before the loop's commit of the same
//! iteration; an ack of a failed batch is replaced in the queue
//! ([`UdpSide::patch_ack`]).

use crate::cookie::{Cookie, CookieJar};
use crate::datagrams::{self, RecvBatch};
use crate::limits::Limits;
use crate::protocol::{self, Command, Envelope, Oversize};
use crate::service::{AckSite, Outcome, Service, Transport};
use crate::stats::Stats;
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Largest reply to a datagram without an `/id` envelope: the seed's client
/// reads with `recvfrom(1024)`.
pub const RAW_REPLY_LIMIT: usize = 1024;
/// Smallest and largest reply size a client may ask for with `max=`.
pub const MIN_REPLY_LIMIT: usize = 512;
pub const MAX_REPLY_LIMIT: usize = 65_507;
/// A reply to an unproven source outside loopback is at most this many
/// times its request (QUIC's anti-amplification rule).
pub const AMPLIFICATION: usize = 3;
/// Datagrams read per iteration before the loop turns to other work.
const BUDGET: usize = 1024;

/// The request in a datagram: one trailing `\n` or `\r\n` is not part of it.
pub fn request_bytes(datagram: &[u8]) -> &[u8] {
    let d = datagram.strip_suffix(b"\n").unwrap_or(datagram);
    if d.len() < datagram.len() {
        d.strip_suffix(b"\r").unwrap_or(d)
    } else {
        d
    }
}

pub struct UdpSide {
    socket: UdpSocket,
    token: Token,
    batch: RecvBatch,
    /// Datagrams may be waiting (readiness is edge-triggered).
    readable: bool,
    writable_interest: bool,
    /// Replies not yet sent, oldest first.
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
    sources: RecentSources,
    cookies: CookieJar,
    limits: Limits,
}

impl UdpSide {
    pub fn new(socket: UdpSocket, token: Token, limits: &Limits) -> UdpSide {
        UdpSide {
            socket,
            token,
            batch: RecvBatch::default(),
            readable: false,
            writable_interest: false,
            queue: VecDeque::new(),
            spare: Vec::new(),
            sources: RecentSources::default(),
            cookies: CookieJar::default(),
            limits: limits.clone(),
        }
    }

    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(&mut self.socket, self.token, Interest::READABLE)
    }

    pub fn on_readable(&mut self) {
        self.readable = true;
    }

    /// Whether datagrams may still be waiting (the budget ran out).
    pub fn has_waiting(&self) -> bool {
        self.readable
    }

    /// Reads and answers waiting datagrams, up to a budget per iteration.
    pub fn serve(&mut self, service: &mut impl Service) {
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
                        let (datagram, from) = batch.get(i);
                        self.sources.saw(from, now);
                        self.answer(datagram, from, service);
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

    fn answer(&mut self, datagram: &[u8], from: SocketAddr, service: &mut impl Service) {
        let request = protocol::parse(request_bytes(datagram), self.limits.max_entry);
        let limit = self.reply_limit(request.envelope.as_ref(), datagram.len(), from);
        if service.has_pending() && protocol::reads_store(&request) {
            // A read sees every write before it; a failure is settled with
            // the iteration's other acks.
            service.commit();
        }
        let cookie = match request.command {
            Ok(Command::Cookie) => self.cookies.issue(from.ip(), Instant::now()),
            _ => Cookie::default(),
        };
        let transport = Transport::Udp {
            limit,
            raw: request.envelope.is_none(),
            cookie,
        };
        let mut reply = self.spare.pop().unwrap_or_default();
        let outcome = service.answer(&request, transport, &mut reply);
        let oversize = match (&outcome, &request.envelope) {
            (Outcome::Wrote { id, ack_at } | Outcome::Acked { id, ack_at }, _) => Oversize::Ack {
                ack_at: *ack_at,
                id: *id,
            },
            (_, Some(envelope)) => Oversize::Tagged(envelope.tag),
            (_, None) => Oversize::Raw,
        };
        protocol::fit_datagram(&mut reply, 0, limit, oversize);
        let Outcome::Wrote { ack_at, .. } = outcome else {
            self.queue_reply(from, reply, service.stats());
            return;
        };
        if let Some(slot) = self.queue_reply(from, reply, service.stats()) {
            service.await_commit(AckSite::Udp {
                slot,
                at: ack_at,
                limit,
            });
        }
    }

    /// How big the reply to a datagram of `size` bytes from `from` may be:
    /// 1024 bytes to a raw request, the envelope's `max=` or the default
    /// to a tagged one; and to a source that has not proven its address
    /// (loopback, or a valid cookie), at most [`AMPLIFICATION`] times the
    /// request.
    fn reply_limit(&self, envelope: Option<&Envelope>, size: usize, from: SocketAddr) -> usize {
        let limit = match envelope {
            None => RAW_REPLY_LIMIT,
            Some(e) => e
                .max_reply
                .unwrap_or(self.limits.udp_reply)
                .clamp(MIN_REPLY_LIMIT, MAX_REPLY_LIMIT),
        };
        let ip = from.ip();
        let proven = (self.limits.loopback_exempt && ip.is_loopback())
            || envelope
                .and_then(|e| e.cookie)
                .is_some_and(|c| self.cookies.check(ip, c, Instant::now()));
        if proven {
            limit
        } else {
            limit.min(AMPLIFICATION * size)
        }
    }

    /// Queues a reply; when the queue is full the reply is dropped, as the
    /// network might have dropped it, and the client's retry covers it.
    /// Returns its slot in the queue, if queued.
    fn queue_reply(&mut self, to: SocketAddr, reply: Vec<u8>, stats: &mut Stats) -> Option<usize> {
        if self.queue.len() >= self.limits.udp_queue {
            stats.dropped_replies += 1;
            self.recycle(reply);
            return None;
        }
        self.queue.push_back((to, reply));
        Some(self.queue.len() - 1)
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
    pub fn patch_ack(&mut self, slot: usize, at: usize, limit: usize, line: &[u8]) {
        if let Some((_, reply)) = self.queue.get_mut(slot) {
            protocol::replace_ack(reply, at, line, limit);
        }
    }

    /// Once a second: forgets sources gone quiet.
    pub fn sweep(&mut self, now: Instant, stats: &mut Stats) {
        self.sources.prune(now);
        stats.udp_sources = self.sources.len() as u64;
    }

    /// Sends queued replies until done or the socket would block, and asks
    /// for a writable event only while some are left.
    pub fn flush(&mut self, registry: &Registry, stats: &mut Stats) {
        let left = self.send_queued(stats);
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

    /// Sends what it can; whether anything is left.
    pub fn send_queued(&mut self, stats: &mut Stats) -> bool {
        while !self.queue.is_empty() {
            let replies = self.queue.iter().map(|(to, reply)| (*to, &reply[..]));
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
                let (_, reply) = self.queue.pop_front().expect("sent from the queue");
                self.recycle(reply);
            }
        }
        false
    }
}

/// UDP sources seen lately, for `/stats` (UDP has no connections to count).
#[derive(Debug, Default)]
pub struct RecentSources {
    seen: HashMap<SocketAddr, Instant>,
}

impl RecentSources {
    /// How long a source counts as a client after its last datagram.
    pub const WINDOW: Duration = Duration::from_secs(60);
    /// Sources tracked at most; a flood of new ones is not remembered.
    const CAPACITY: usize = 65_536;

    pub fn saw(&mut self, from: SocketAddr, now: Instant) {
        if self.seen.len() < Self::CAPACITY || self.seen.contains_key(&from) {
            self.seen.insert(from, now);
        }
    }

    /// Forgets sources quiet for longer than the window.
    pub fn prune(&mut self, now: Instant) {
        self.seen
            .retain(|_, t| now.duration_since(*t) < Self::WINDOW);
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
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
