//! The server's encrypted UDP sessions, WireGuard's way: a handshake
//! datagram pair makes a session with an index; each later datagram names
//! the index, carries its nonce, and is opened only once (the replay
//! window). Replies are sealed with the session's next nonce as they leave.
//!
//! Memory is bounded: only an allowed device can make a session, and each
//! device holds at most [`UdpSessions::PER_DEVICE`]; its oldest goes first.

use crate::secure::noise::{self, REJECT_AFTER, Refusal, ReplayWindow};
use crate::server::access::gatekeeper::{Gatekeeper, Peer};
use crate::server::stats::Stats;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Session {
    transport: snow::StatelessTransportState,
    peer: Peer,
    /// The initiator's index: what our datagrams name.
    remote: u32,
    /// The address the session has shown it can receive at: its
    /// handshake's (the reply carried what the keys are made of), or one a
    /// cookie proved since. Replies to any other source it sends from are
    /// held to the 3x rule, so a device cannot aim them at someone else.
    proven: SocketAddr,
    started: Instant,
    window: ReplayWindow,
    next_nonce: u64,
}

/// What a datagram that opened holds.
pub struct Opened {
    pub index: u32,
    pub peer: Peer,
    /// It came from the session's proven address.
    pub proven: bool,
}

pub struct UdpSessions {
    sessions: HashMap<u32, Session>,
    generation: u64,
    lifetime: Duration,
}

impl Default for UdpSessions {
    fn default() -> UdpSessions {
        UdpSessions::new(REJECT_AFTER)
    }
}

impl UdpSessions {
    pub const PER_DEVICE: usize = 64;

    /// Sessions forgotten after `lifetime`.
    pub fn new(lifetime: Duration) -> UdpSessions {
        UdpSessions {
            sessions: HashMap::new(),
            generation: 0,
            lifetime,
        }
    }

    /// Sessions held (the fuzz target checks a refused one makes none).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Answers a first message from `from` into `out` (a reply or a
    /// refusal, sent in the clear); nothing when the source is limited.
    pub fn handshake(
        &mut self,
        gate: &mut Gatekeeper,
        sender: u32,
        first: &[u8],
        from: SocketAddr,
        out: &mut Vec<u8>,
        stats: &mut Stats,
    ) {
        let now = Instant::now();
        if gate.is_limited(from.ip(), now) {
            return;
        }
        let room = crate::server::limits::AMPLIFICATION * (noise::UDP_INIT_HEADER + first.len());
        let (mut handshake, peer) = match gate.accept(from.ip(), first, now) {
            Ok(accepted) => accepted,
            Err(why) => {
                stats.auth_failures += 1;
                log::info!("UDP handshake from {from} refused: {}", why.words());
                noise::push_refused(out, sender, why, room);
                return;
            }
        };
        let mut reply = [0u8; 128];
        let Ok(n) = handshake.write_message(&[], &mut reply) else {
            return;
        };
        let Ok(transport) = handshake.into_stateless_transport_mode() else {
            return;
        };
        let index = self.free_index();
        noise::push_reply(out, index, sender, &reply[..n]);
        self.make_room_for(&peer, stats);
        log::info!("{}: UDP session from {from}", peer.name);
        *stats.device_sessions.entry(peer.name.clone()).or_default() += 1;
        self.sessions.insert(
            index,
            Session {
                transport,
                peer,
                remote: sender,
                proven: from,
                started: now,
                window: ReplayWindow::default(),
                next_nonce: 0,
            },
        );
    }

    fn free_index(&self) -> u32 {
        loop {
            let mut random = [0u8; 4];
            getrandom::fill(&mut random).expect("the system's random source works");
            let index = u32::from_le_bytes(random);
            if index != 0 && !self.sessions.contains_key(&index) {
                return index;
            }
        }
    }

    fn make_room_for(&mut self, peer: &Peer, stats: &mut Stats) {
        let theirs = self.sessions.iter().filter(|(_, s)| s.peer.key == peer.key);
        if theirs.clone().count() >= Self::PER_DEVICE
            && let Some(oldest) = theirs.min_by_key(|(_, s)| s.started).map(|(i, _)| *i)
        {
            self.remove(oldest, stats);
        }
    }

    fn remove(&mut self, index: u32, stats: &mut Stats) {
        if let Some(session) = self.sessions.remove(&index)
            && let Some(count) = stats.device_sessions.get_mut(&session.peer.name)
        {
            *count = count.saturating_sub(1);
        }
    }

    /// Opens a data datagram into `plain`. A datagram for no session (or
    /// an expired one) is refused so the client makes a new one; one that
    /// does not open, or was seen before, is dropped unanswered.
    pub fn open(
        &mut self,
        (receiver, nonce, sealed): (u32, u64, &[u8]),
        from: SocketAddr,
        plain: &mut Vec<u8>,
        refusal: &mut Vec<u8>,
        stats: &mut Stats,
    ) -> Option<Opened> {
        let expired = self
            .sessions
            .get(&receiver)
            .is_some_and(|s| s.started.elapsed() >= self.lifetime);
        if expired {
            self.remove(receiver, stats);
        }
        let Some(session) = self.sessions.get_mut(&receiver) else {
            let room =
                crate::server::limits::AMPLIFICATION * (noise::UDP_DATA_HEADER + sealed.len());
            noise::push_refused(refusal, receiver, Refusal::NoSession, room);
            return None;
        };
        if !session.window.is_fresh(nonce) {
            return None;
        }
        plain.resize(sealed.len(), 0);
        let n = session.transport.read_message(nonce, sealed, plain).ok()?;
        plain.truncate(n);
        session.window.mark(nonce);
        Some(Opened {
            index: receiver,
            peer: session.peer.clone(),
            proven: from == session.proven,
        })
    }

    /// Seals `plain` for session `index` into `out`; `None` if the session
    /// is gone. It goes to the source of the request it answers.
    pub fn seal(&mut self, index: u32, plain: &[u8], out: &mut Vec<u8>) -> Option<()> {
        let session = self.sessions.get_mut(&index)?;
        let nonce = session.next_nonce;
        session.next_nonce += 1;
        noise::seal_datagram(&session.transport, session.remote, nonce, plain, out).ok()
    }

    /// Session `index` has proven it receives at `addr` (a cookie came
    /// back from there): replies there are no longer held to the 3x rule.
    pub fn prove(&mut self, index: u32, addr: SocketAddr) {
        if let Some(session) = self.sessions.get_mut(&index) {
            session.proven = addr;
        }
    }

    /// Forgets expired sessions, and after a reload of the allow file
    /// those of removed devices; a device's new scopes apply at once.
    pub fn sweep(&mut self, gate: &Gatekeeper, stats: &mut Stats) {
        let reloaded = gate.generation() != self.generation;
        self.generation = gate.generation();
        let mut gone = Vec::new();
        for (&index, session) in self.sessions.iter_mut() {
            if session.started.elapsed() >= self.lifetime {
                gone.push(index);
            } else if reloaded {
                match gate.device(&session.peer.key) {
                    // The name stays: the session is counted under it.
                    Some(device) => session.peer.scopes = device.scopes,
                    None => {
                        log::info!(
                            "{}: UDP session closed: no longer allowed",
                            session.peer.name
                        );
                        gone.push(index);
                    }
                }
            }
        }
        for index in gone {
            self.remove(index, stats);
        }
        stats.device_sessions.retain(|_, n| *n > 0);
    }
}
