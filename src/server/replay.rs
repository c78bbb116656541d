//! The memory of recent tagged writes, keyed by writer and tag, that makes
//! a retried write answer again instead of storing twice, on either
//! transport.
//!
//! A retry may come from a new socket (a new TCP connection, a client run
//! again with `--tag`), so the source address cannot be part of the key;
//! the writer is: a device's name from its key, or for plaintext the name
//! the client gave (plaintext is served to this machine, or to anyone
//! only with `--insecure-open`). So one device cannot claim another's tag
//! in advance and have its write answered with someone else's entry. The
//! store keeps each tag and writer with its entry, so the memory is
//! rebuilt from the file's newest entries after a restart.

use crate::protocol::MAX_TAG_LEN;
use hashbrown::HashTable;

/// Remembered tagged writes, oldest forgotten first once `capacity` is
/// reached.
///
/// The entries live in a ring in arrival order, reused in place, so a write
/// allocates nothing. The index holds only slot numbers, 4 bytes an entry
/// (about 640 KiB at 100 000 entries, which caches well); a map of whole
/// entries cost a cache miss per write, for the eviction, in the UDP
/// profile. Evicting reads the oldest slot, next in the ring, and touches no
/// other slot.
pub(crate) struct ReplayMemory {
    slots: Vec<Slot>,
    /// The slot the next write fills: the oldest one once the ring is full.
    next: usize,
    /// Slot numbers, by the hash of their key.
    index: HashTable<u32>,
    /// Keyed: tags come from the network.
    hasher: std::hash::RandomState,
    capacity: usize,
}

struct Slot {
    hash: u64,
    /// The writer's name, hashed with the memory's key: 8 bytes a slot
    /// rather than 65, and two names colliding in it is a 2^-64 chance an
    /// outsider cannot aim at.
    writer: u64,
    tag: Inline<MAX_TAG_LEN>,
    /// Indexed, as opposed to forgotten after a failed commit.
    live: bool,
    /// The commit batch the write joined.
    batch: u64,
    id: u64,
    timestamp: Inline<STAMP_LEN>,
}

/// Room for a timestamp as diaryd writes it (29 bytes) and then some.
const STAMP_LEN: usize = 40;

/// A remembered write: what its ack said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Remembered<'a> {
    pub(crate) id: u64,
    pub(crate) timestamp: &'a str,
}

/// Short text held inline.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Inline<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Inline<N> {
    fn new(text: &str) -> Option<Inline<N>> {
        let mut bytes = [0; N];
        bytes
            .get_mut(..text.len())?
            .copy_from_slice(text.as_bytes());
        Some(Inline {
            len: text.len() as u8,
            bytes,
        })
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).expect("made from a str")
    }
}

impl ReplayMemory {
    pub(crate) fn new(capacity: usize) -> ReplayMemory {
        let capacity = capacity.min(u32::MAX as usize);
        ReplayMemory {
            slots: Vec::new(),
            next: 0,
            index: HashTable::with_capacity(capacity.min(1 << 16)),
            hasher: std::hash::RandomState::new(),
            capacity,
        }
    }

    fn writer(&self, writer: Option<&str>) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(writer)
    }

    fn hash(&self, writer: u64, tag: &Inline<MAX_TAG_LEN>) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one((writer, tag.as_str()))
    }

    fn find(&self, hash: u64, writer: u64, tag: &Inline<MAX_TAG_LEN>) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| {
                let slot = &slots[i as usize];
                slot.writer == writer && slot.tag == *tag
            })
            .map(|&i| i as usize)
    }

    /// The write `writer` tagged `tag`, if it is remembered.
    pub(crate) fn get(&self, writer: Option<&str>, tag: &str) -> Option<Remembered<'_>> {
        let tag = Inline::new(tag)?;
        let writer = self.writer(writer);
        let slot = &self.slots[self.find(self.hash(writer, &tag), writer, &tag)?];
        Some(Remembered {
            id: slot.id,
            timestamp: slot.timestamp.as_str(),
        })
    }

    /// Remembers that `writer`'s write tagged `tag`, of batch `batch`, got
    /// `id` at `timestamp`.
    pub(crate) fn remember(
        &mut self,
        (writer, tag): (Option<&str>, &str),
        id: u64,
        batch: u64,
        timestamp: &str,
    ) {
        let (Some(tag), Some(timestamp)) = (Inline::new(tag), Inline::new(timestamp)) else {
            return;
        };
        if self.capacity == 0 {
            return;
        }
        let writer = self.writer(writer);
        let hash = self.hash(writer, &tag);
        let at = match self.find(hash, writer, &tag) {
            // The same tag again: the newer write is the one to answer.
            Some(at) => at,
            None => self.claim_slot(hash, writer, tag),
        };
        let slot = &mut self.slots[at];
        slot.batch = batch;
        slot.id = id;
        slot.timestamp = timestamp;
    }

    /// Indexes the next slot of the ring for a new key, forgetting what it held.
    fn claim_slot(&mut self, hash: u64, writer: u64, tag: Inline<MAX_TAG_LEN>) -> usize {
        let at = self.next;
        self.next = (at + 1) % self.capacity;
        if at == self.slots.len() {
            self.slots.push(Slot {
                hash,
                writer,
                tag,
                live: false,
                batch: 0,
                id: 0,
                timestamp: Inline::new("").expect("empty fits"),
            });
        } else {
            self.unindex(at);
        }
        let slots = &mut self.slots;
        slots[at].hash = hash;
        slots[at].writer = writer;
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
    pub(crate) fn forget_batch(&mut self, batch: u64) {
        for at in 0..self.slots.len() {
            if self.slots[at].batch == batch {
                self.unindex(at);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "2026-11-25T06:00:28.123+00:00";

    #[test]
    fn replay_memory_is_bounded_and_forgets_failed_writes() {
        let mut m = ReplayMemory::new(2);
        m.remember((None, "t1"), 1, 1, T);
        m.remember((None, "t2"), 2, 2, T);
        m.remember((None, "t3"), 3, 3, T);
        assert_eq!(m.len(), 2);
        assert!(m.get(None, "t1").is_none());
        assert_eq!(
            m.get(None, "t3"),
            Some(Remembered {
                id: 3,
                timestamp: T
            })
        );
        m.forget_batch(3);
        assert!(m.get(None, "t3").is_none());
        assert!(m.get(None, "t2").is_some());
    }

    /// Many laps of the ring, with forgetting and repeated tags mixed in:
    /// exactly the newest `capacity` writes are found, each with its id.
    #[test]
    fn replay_ring_keeps_exactly_the_newest_writes() {
        let capacity = 50;
        let mut m = ReplayMemory::new(capacity);
        for id in 1..=1000u64 {
            m.remember((None, &format!("t{id}")), id, id, &format!("time {id}"));
            assert!(m.len() <= capacity);
        }
        for id in 1..=1000u64 {
            let found = m.get(None, &format!("t{id}"));
            if id > 1000 - capacity as u64 {
                let time = format!("time {id}");
                assert_eq!(
                    found,
                    Some(Remembered {
                        id,
                        timestamp: &time
                    })
                );
            } else {
                assert!(found.is_none(), "t{id} should be forgotten");
            }
        }
        (991..=1000).for_each(|batch| m.forget_batch(batch));
        assert_eq!(m.len(), capacity - 10);
        assert!(m.get(None, "t991").is_none() && m.get(None, "t989").is_some());
        // The same tag again answers with the newer write, in one slot.
        m.remember((None, "t989"), 2000, 2000, T);
        assert_eq!(m.get(None, "t989").unwrap().id, 2000);
        assert_eq!(m.len(), capacity - 10);
        for id in 2001..=2100u64 {
            m.remember((None, &format!("u{id}")), id, id, T);
        }
        assert_eq!(m.len(), capacity);
        assert!(m.get(None, "u2051").is_some() && m.get(None, "u2050").is_none());
        let long = "x".repeat(MAX_TAG_LEN + 1);
        m.remember((None, &long), 3000, 3000, T);
        assert!(m.get(None, &long).is_none());
        assert!(ReplayMemory::new(0).get(None, "t1").is_none());
    }

    /// Issue 26, 4: a tag is one writer's. Another device's write under
    /// it is its own; neither answers for the other.
    #[test]
    fn a_tag_is_remembered_per_writer() {
        let mut m = ReplayMemory::new(10);
        m.remember((Some("mallory"), "victim-tag-1"), 8, 1, T);
        assert!(m.get(Some("laptop"), "victim-tag-1").is_none());
        assert!(m.get(None, "victim-tag-1").is_none());
        m.remember((Some("laptop"), "victim-tag-1"), 9, 2, T);
        assert_eq!(m.get(Some("mallory"), "victim-tag-1").unwrap().id, 8);
        assert_eq!(m.get(Some("laptop"), "victim-tag-1").unwrap().id, 9);
        assert_eq!(m.len(), 2);
    }
}
