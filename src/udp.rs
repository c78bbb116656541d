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
    /// Replies not yet sent, oldest first, each with the batch it waits
    /// for (0: none).
    queue: VecDeque<(SocketAddr, Vec<u8>, u64)>,
    /// How many replies ever left the queue: the slot of its front.
    sent: u64,
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
            sent: 0,
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
        let reads = protocol::reads_store(&request);
        if service.has_pending() && reads {
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
        if self.queue.len() >= self.limits.udp_queue {
            // Dropped as the network might have dropped it; the client's
            // retry covers it (a write's, with its tag, is answered again).
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
        self.queue.push_back((from, reply, hold.unwrap_or(0)));
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
    pub fn patch_ack(&mut self, slot: u64, at: usize, limit: usize, line: &[u8]) {
        let queued = slot
            .checked_sub(self.sent)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.queue.get_mut(i));
        if let Some((_, reply, _)) = queued {
            protocol::replace_ack(reply, at, line, limit);
        }
    }

    /// Once a second: forgets sources gone quiet.
    pub fn sweep(&mut self, now: Instant, stats: &mut Stats) {
        self.sources.prune(now);
        stats.udp_sources = self.sources.len() as u64;
    }

    /// Sends the queued replies whose batch is settled, until one is held
    /// or the socket would block; asks for a writable event only while the
    /// socket is what they wait for.
    pub fn flush(&mut self, registry: &Registry, stats: &mut Stats, settled: u64) {
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
    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Sends what it can; whether the socket would take no more.
    pub fn send_queued(&mut self, stats: &mut Stats, settled: u64) -> bool {
        while self
            .queue
            .front()
            .is_some_and(|&(_, _, hold)| hold <= settled)
        {
            let replies = self
                .queue
                .iter()
                .take_while(|&&(_, _, hold)| hold <= settled)
                .map(|(to, reply, _)| (*to, &reply[..]));
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
                let (_, reply, _) = self.queue.pop_front().expect("sent from the queue");
                self.sent += 1;
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
