//! The memory of recent tagged writes, keyed by (source, tag), that makes a
//! retried write answer again instead of storing twice.

use crate::protocol::MAX_TAG_LEN;
use hashbrown::HashTable;
use std::net::SocketAddr;

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
    /// The commit batch the write joined.
    batch: u64,
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

    /// Remembers the reply to a write of batch `batch`.
    pub fn remember(&mut self, from: SocketAddr, tag: &str, id: u64, batch: u64, reply: &[u8]) {
        let Some(tag) = Tag::new(tag).filter(|_| self.capacity > 0) else {
            return;
        };
        let hash = self.hash(from, &tag);
        let at = match self.find(hash, from, &tag) {
            // The same tag again: the newer write is the one to answer.
            Some(at) => at,
            None => self.claim_slot(hash, from, tag),
        };
        self.slots[at].batch = batch;
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
                batch: 0,
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

    /// Forgets the writes of `batch`: its commit failed, and their ids
    /// will be given to other writes.
    pub fn forget_batch(&mut self, batch: u64) {
        for at in 0..self.slots.len() {
            if self.slots[at].batch == batch {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_memory_is_bounded_and_forgets_failed_writes() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut m = ReplayMemory::new(2);
        m.remember(a, "t1", 1, 1, b"ok 1");
        m.remember(a, "t2", 2, 2, b"ok 2");
        m.remember(a, "t3", 3, 3, b"ok 3");
        assert_eq!(m.len(), 2);
        assert!(m.get(a, "t1").is_none());
        assert_eq!(m.get(a, "t3").unwrap().reply, b"ok 3");
        m.forget_batch(3);
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
            m.remember(
                from,
                &format!("t{id}"),
                id,
                id,
                format!("ok {id}").as_bytes(),
            );
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
        (991..=1000).for_each(|batch| m.forget_batch(batch));
        assert_eq!(m.len(), capacity - 10);
        assert!(m.get(a, "t991").is_none() && m.get(a, "t989").is_some());
        // The same tag again answers with the newer write, in one slot.
        m.remember(a, "t989", 2000, 2000, b"ok 2000");
        assert_eq!(m.get(a, "t989").unwrap().reply, b"ok 2000");
        assert_eq!(m.len(), capacity - 10);
        for id in 2001..=2100u64 {
            m.remember(a, &format!("u{id}"), id, id, b"ok");
        }
        assert_eq!(m.len(), capacity);
        assert!(m.get(a, "u2051").is_some() && m.get(a, "u2050").is_none());
        let long = "x".repeat(MAX_TAG_LEN + 1);
        m.remember(a, &long, 3000, 3000, b"ok");
        assert!(m.get(a, &long).is_none());
        assert!(ReplayMemory::new(0).get(a, "t1").is_none());
    }
}
