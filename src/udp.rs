//! The UDP endpoint: datagram framing, reply size limits, the queue of
//! replies waiting for the socket, and the memory of recent tagged writes
//! that makes a retried write answer again instead of storing twice.

use crate::handler::Cookie;
use crate::protocol::Envelope;
use mio::net::UdpSocket;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Largest reply to a datagram without an `/id` envelope: the seed's client
/// reads with `recvfrom(1024)`.
pub const RAW_REPLY_LIMIT: usize = 1024;
/// Smallest and largest reply size a client may ask for with `max=`.
pub const MIN_REPLY_LIMIT: usize = 512;
pub const MAX_REPLY_LIMIT: usize = 65_507;

/// The request in a datagram: one trailing `\n` or `\r\n` is not part of it.
pub fn request_bytes(datagram: &[u8]) -> &[u8] {
    let d = datagram.strip_suffix(b"\n").unwrap_or(datagram);
    if d.len() < datagram.len() {
        d.strip_suffix(b"\r").unwrap_or(d)
    } else {
        d
    }
}

/// The reply size limit for a request.
pub fn reply_limit(envelope: Option<&Envelope>, default_tagged: usize) -> usize {
    match envelope {
        None => RAW_REPLY_LIMIT,
        Some(e) => e
            .max_reply
            .unwrap_or(default_tagged)
            .clamp(MIN_REPLY_LIMIT, MAX_REPLY_LIMIT),
    }
}

/// Remembered replies to tagged writes, keyed by (source, tag), oldest
/// forgotten first once `capacity` is reached.
#[derive(Debug)]
pub struct ReplayMemory {
    replies: HashMap<(SocketAddr, Box<str>), Remembered>,
    order: VecDeque<(SocketAddr, Box<str>)>,
    capacity: usize,
}

#[derive(Debug, Clone)]
pub struct Remembered {
    pub id: u64,
    pub reply: Vec<u8>,
}

impl ReplayMemory {
    pub fn new(capacity: usize) -> ReplayMemory {
        ReplayMemory {
            replies: HashMap::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
        }
    }

    pub fn get(&self, from: SocketAddr, tag: &str) -> Option<&Remembered> {
        self.replies.get(&(from, Box::from(tag)))
    }

    pub fn remember(&mut self, from: SocketAddr, tag: &str, id: u64, reply: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        let key = (from, Box::<str>::from(tag));
        if self.replies.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.replies.remove(&old);
        }
        let remembered = Remembered {
            id,
            reply: reply.to_vec(),
        };
        if self.replies.insert(key.clone(), remembered).is_none() {
            self.order.push_back(key);
        }
    }

    /// Forgets writes from `first_lost` on: a failed commit undid them.
    pub fn forget_from(&mut self, first_lost: u64) {
        self.replies.retain(|_, r| r.id < first_lost);
        let replies = &self.replies;
        self.order.retain(|k| replies.contains_key(k));
    }

    pub fn len(&self) -> usize {
        self.replies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }
}

/// A reply to an unproven source outside loopback is at most this many
/// times its request (QUIC's anti-amplification rule).
pub const AMPLIFICATION: usize = 3;

/// Address cookies: a keyed hash of the source IP and the current
/// ten-minute epoch. Holding one proves the source receives what is sent to
/// it, so replies to it may exceed [`AMPLIFICATION`] times the request.
pub struct CookieJar {
    key: std::hash::RandomState,
    started: Instant,
}

impl Default for CookieJar {
    fn default() -> CookieJar {
        CookieJar {
            key: std::hash::RandomState::new(),
            started: Instant::now(),
        }
    }
}

impl CookieJar {
    const EPOCH: Duration = Duration::from_secs(600);

    fn epoch(&self, now: Instant) -> u64 {
        (now.duration_since(self.started).as_secs() / Self::EPOCH.as_secs()) + 1
    }

    fn make(&self, ip: IpAddr, epoch: u64) -> Cookie {
        use std::hash::BuildHasher;
        let hash = self.key.hash_one((ip, epoch));
        let mut cookie = [0u8; 16];
        for (i, byte) in cookie.iter_mut().enumerate() {
            *byte = b"0123456789abcdef"[((hash >> (60 - 4 * i)) & 0xf) as usize];
        }
        cookie
    }

    /// The cookie for `ip` now.
    pub fn issue(&self, ip: IpAddr, now: Instant) -> Cookie {
        self.make(ip, self.epoch(now))
    }

    /// Whether `cookie` was issued to `ip` in this epoch or the one before.
    pub fn check(&self, ip: IpAddr, cookie: &str, now: Instant) -> bool {
        let epoch = self.epoch(now);
        [epoch, epoch - 1]
            .iter()
            .any(|&e| self.make(ip, e).as_slice() == cookie.as_bytes())
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

/// The socket and its outgoing queue.
#[derive(Debug)]
pub struct UdpEndpoint {
    pub socket: UdpSocket,
    /// Replies not yet sent, oldest first.
    pub queue: VecDeque<(SocketAddr, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
    max_queue: usize,
    pub dropped_replies: u64,
}

impl UdpEndpoint {
    pub fn new(socket: UdpSocket, max_queue: usize) -> UdpEndpoint {
        UdpEndpoint {
            socket,
            queue: VecDeque::new(),
            spare: Vec::new(),
            max_queue,
            dropped_replies: 0,
        }
    }

    /// A cleared buffer for a reply, reused from sent ones.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Queues a reply; when the queue is full the reply is dropped, as the
    /// network might have dropped it, and the client's retry covers it.
    /// Returns its position in the queue, if queued.
    pub fn queue_reply(&mut self, to: SocketAddr, reply: Vec<u8>) -> Option<usize> {
        if self.queue.len() >= self.max_queue {
            self.dropped_replies += 1;
            self.recycle(reply);
            return None;
        }
        self.queue.push_back((to, reply));
        Some(self.queue.len() - 1)
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < 64 && buf.capacity() <= 64 * 1024 {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Sends queued replies until done or the socket would block.
    /// Returns whether anything is left.
    pub fn flush(&mut self) -> bool {
        while let Some((to, reply)) = self.queue.front() {
            match self.socket.send_to(reply, *to) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An unreachable peer or an oversize reply is that reply's problem only.
                Err(_) => self.dropped_replies += 1,
            }
            let (_, reply) = self.queue.pop_front().expect("front exists");
            self.recycle(reply);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_bound_to_the_address_and_expire() {
        let jar = CookieJar::default();
        let now = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let cookie = jar.issue(a, now);
        let text = std::str::from_utf8(&cookie).unwrap();
        assert!(jar.check(a, text, now));
        assert!(jar.check(a, text, now + CookieJar::EPOCH));
        assert!(!jar.check(a, text, now + CookieJar::EPOCH * 2), "expires");
        assert!(!jar.check(b, text, now), "bound to its address");
        assert!(!jar.check(a, "0123456789abcdef", now));
        assert!(
            !CookieJar::default().check(a, text, now),
            "bound to the server's key"
        );
    }

    #[test]
    fn one_trailing_newline_is_framing() {
        assert_eq!(request_bytes(b"hi\n"), b"hi");
        assert_eq!(request_bytes(b"hi\r\n"), b"hi");
        assert_eq!(request_bytes(b"hi\n\n"), b"hi\n");
        assert_eq!(request_bytes(b"hi\r"), b"hi\r");
    }

    #[test]
    fn replay_memory_is_bounded_and_forgets_failed_writes() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut m = ReplayMemory::new(2);
        m.remember(a, "t1", 1, b"ok 1");
        m.remember(a, "t2", 2, b"ok 2");
        m.remember(a, "t3", 3, b"ok 3");
        assert_eq!(m.len(), 2);
        assert!(m.get(a, "t1").is_none());
        assert_eq!(m.get(a, "t3").unwrap().reply, b"ok 3");
        m.forget_from(3);
        assert!(m.get(a, "t3").is_none());
        assert!(m.get(a, "t2").is_some());
    }
}
