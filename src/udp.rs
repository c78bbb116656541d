//! The UDP endpoint: datagram framing, reply size limits, the queue of
//! replies waiting for the socket, and the memory of recent tagged writes
//! that makes a retried write answer again instead of storing twice.

use crate::datagrams;
use crate::handler::Cookie;
use crate::protocol::{Envelope, MAX_TAG_LEN};
use hashbrown::HashTable;
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
///
/// The entries live in a ring in arrival order, reused in place (reply
/// buffers included), so a write allocates nothing once the ring is full.
/// The index holds only slot numbers, 4 bytes an entry (about 640 KiB at
/// 100 000 entries, which caches well); a map of whole entries cost a cache
/// miss per write, for the eviction, in the UDP profile. Evicting reads the
/// oldest slot, next in the ring, and touches no other slot.
pub struct ReplayMemory {
    slots: Vec<Slot>,
    /// The slot the next write fills: the oldest one once the ring is full.
    next: usize,
    /// Slot numbers, by the hash of their key.
    index: HashTable<u32>,
    /// Keyed: sources and tags come from the network.
    hasher: std::hash::RandomState,
    capacity: usize,
}

struct Slot {
    hash: u64,
    from: SocketAddr,
    tag: Tag,
    /// Indexed, as opposed to forgotten after a failed commit.
    live: bool,
    remembered: Remembered,
}

#[derive(Debug, Clone)]
pub struct Remembered {
    pub id: u64,
    pub reply: Vec<u8>,
}

/// An `/id` tag held inline (the parser allows at most [`MAX_TAG_LEN`] bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Tag {
    len: u8,
    bytes: [u8; MAX_TAG_LEN],
}

impl Tag {
    fn new(tag: &str) -> Option<Tag> {
        let mut bytes = [0; MAX_TAG_LEN];
        bytes.get_mut(..tag.len())?.copy_from_slice(tag.as_bytes());
        Some(Tag {
            len: tag.len() as u8,
            bytes,
        })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl ReplayMemory {
    pub fn new(capacity: usize) -> ReplayMemory {
        let capacity = capacity.min(u32::MAX as usize);
        ReplayMemory {
            slots: Vec::new(),
            next: 0,
            index: HashTable::with_capacity(capacity.min(1 << 16)),
            hasher: std::hash::RandomState::new(),
            capacity,
        }
    }

    fn hash(&self, from: SocketAddr, tag: &Tag) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut state = self.hasher.build_hasher();
        from.hash(&mut state);
        state.write(tag.as_bytes());
        state.finish()
    }

    fn find(&self, hash: u64, from: SocketAddr, tag: &Tag) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| {
                let slot = &slots[i as usize];
                slot.from == from && slot.tag == *tag
            })
            .map(|&i| i as usize)
    }

    pub fn get(&self, from: SocketAddr, tag: &str) -> Option<&Remembered> {
        let tag = Tag::new(tag)?;
        let at = self.find(self.hash(from, &tag), from, &tag)?;
        Some(&self.slots[at].remembered)
    }

    pub fn remember(&mut self, from: SocketAddr, tag: &str, id: u64, reply: &[u8]) {
        let Some(tag) = Tag::new(tag).filter(|_| self.capacity > 0) else {
            return;
        };
        let hash = self.hash(from, &tag);
        let at = match self.find(hash, from, &tag) {
            // The same tag again: the newer write is the one to answer.
            Some(at) => at,
            None => self.claim_slot(hash, from, tag),
        };
        let remembered = &mut self.slots[at].remembered;
        remembered.id = id;
        remembered.reply.clear();
        remembered.reply.extend_from_slice(reply);
    }

    /// Indexes the next slot of the ring for a new key, forgetting what it held.
    fn claim_slot(&mut self, hash: u64, from: SocketAddr, tag: Tag) -> usize {
        let at = self.next;
        self.next = (at + 1) % self.capacity;
        if at == self.slots.len() {
            self.slots.push(Slot {
                hash,
                from,
                tag,
                live: false,
                remembered: Remembered {
                    id: 0,
                    reply: Vec::new(),
                },
            });
        } else {
            self.unindex(at);
        }
        let slots = &mut self.slots;
        slots[at].hash = hash;
        slots[at].from = from;
        slots[at].tag = tag;
        slots[at].live = true;
        self.index
            .insert_unique(hash, at as u32, |&i| slots[i as usize].hash);
        at
    }

    fn unindex(&mut self, at: usize) {
        let slot = &mut self.slots[at];
        if std::mem::take(&mut slot.live)
            && let Ok(entry) = self.index.find_entry(slot.hash, |&i| i as usize == at)
        {
            entry.remove();
        }
    }

    /// Forgets writes from `first_lost` on: a failed commit undid them.
    pub fn forget_from(&mut self, first_lost: u64) {
        for at in 0..self.slots.len() {
            if self.slots[at].remembered.id >= first_lost {
                self.unindex(at);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
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
        // Enough small buffers for a whole iteration's datagrams, so that
        // ordinary replies allocate nothing; a big one is given back.
        const SPARE_BUFFERS: usize = 1024;
        const SPARE_CAPACITY: usize = 2048;
        if self.spare.len() < SPARE_BUFFERS && buf.capacity() <= SPARE_CAPACITY {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Sends queued replies until done or the socket would block.
    /// Returns whether anything is left.
    pub fn flush(&mut self) -> bool {
        while !self.queue.is_empty() {
            let replies = self.queue.iter().map(|(to, reply)| (*to, &reply[..]));
            let sent = match datagrams::send(&self.socket, replies) {
                Ok(sent) => sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An unreachable peer or an oversize reply is that reply's problem only.
                Err(_) => {
                    self.dropped_replies += 1;
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

    /// Many laps of the ring, with forgetting and repeated tags mixed in:
    /// exactly the newest `capacity` writes are found, each with its reply.
    #[test]
    fn replay_ring_keeps_exactly_the_newest_writes() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "[::1]:1".parse().unwrap();
        let capacity = 50;
        let mut m = ReplayMemory::new(capacity);
        for id in 1..=1000u64 {
            let from = if id % 3 == 0 { b } else { a };
            m.remember(from, &format!("t{id}"), id, format!("ok {id}").as_bytes());
            assert!(m.len() <= capacity);
        }
        for id in 1..=1000u64 {
            let from = if id % 3 == 0 { b } else { a };
            let other = if id % 3 == 0 { a } else { b };
            let found = m.get(from, &format!("t{id}"));
            if id > 1000 - capacity as u64 {
                assert_eq!(found.unwrap().reply, format!("ok {id}").as_bytes());
                assert_eq!(found.unwrap().id, id);
            } else {
                assert!(found.is_none(), "t{id} should be forgotten");
            }
            assert!(
                m.get(other, &format!("t{id}")).is_none(),
                "the source is part of the key"
            );
        }
        m.forget_from(991);
        assert_eq!(m.len(), capacity - 10);
        assert!(m.get(a, "t991").is_none() && m.get(a, "t989").is_some());
        // The same tag again answers with the newer write, in one slot.
        m.remember(a, "t989", 2000, b"ok 2000");
        assert_eq!(m.get(a, "t989").unwrap().reply, b"ok 2000");
        assert_eq!(m.len(), capacity - 10);
        for id in 2001..=2100u64 {
            m.remember(a, &format!("u{id}"), id, b"ok");
        }
        assert_eq!(m.len(), capacity);
        assert!(m.get(a, "u2051").is_some() && m.get(a, "u2050").is_none());
        let long = "x".repeat(MAX_TAG_LEN + 1);
        m.remember(a, &long, 3000, b"ok");
        assert!(m.get(a, &long).is_none());
        assert!(ReplayMemory::new(0).get(a, "t1").is_none());
    }
}
