//! The server's encrypted UDP sessions, WireGuard's way: a handshake
//! datagram pair makes a session with an index; each later datagram names
//! the index, carries its nonce, and is opened only once (the replay
//! window). Replies are sealed with the session's next nonce as they leave.
//!
//! Memory is bounded: only an allowed device can make a session, and each
//! device holds at most [`UdpSessions::PER_DEVICE`]; its oldest goes first.
//!
//! Work is bounded too. A first message costs two Diffie-Hellman
//! operations and its source address may be forged, so past
//! `Limits::handshakes_before_cookies` a second the server answers one
//! without a cookie with a cookie and nothing else (WireGuard's cookie
//! reply); only a source that got it can come back. Failures count against
//! a source only when it brought one: a forged source never locks out the
//! device whose address it wears.
//!
//! A session counts as the device's (in the log and `/stats`) once its
//! first message opens: a Noise IK first message can be replayed, and
//! after a restart the server has no memory of its stamp. One not used
//! within [`UdpSessions::CONFIRM_WITHIN`] is dropped and logged as refused.

use crate::secure::noise::{self, COOKIE_LEN, Refusal, ReplayWindow};
use crate::server::access::gatekeeper::{Gatekeeper, Over, Peer};
use crate::server::cookie::CookieJar;
use crate::server::limits::Limits;
use crate::server::logging::Throttle;
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
    /// A message of it has opened: its initiator holds the keys, so it
    /// was no replay of an old first message.
    confirmed: bool,
    window: ReplayWindow,
    next_nonce: u64,
}

/// A first message as it arrived.
pub struct FirstMessage<'a> {
    /// The index the initiator picked.
    pub sender: u32,
    /// The cookie it brought back, if it was asked for one.
    pub cookie: Option<&'a [u8]>,
    pub noise: &'a [u8],
}

/// The handshake load: first messages a second, and the time their
/// Diffie-Hellman work took, each over two one-second windows (the older
/// one weighted by how much of it is still within the last second).
#[derive(Debug)]
struct HandshakeLoad {
    window_start: Instant,
    /// (first messages, work) in the current window and the one before.
    this: (u32, Duration),
    last: (u32, Duration),
}

impl HandshakeLoad {
    fn new() -> HandshakeLoad {
        HandshakeLoad {
            window_start: Instant::now(),
            this: (0, Duration::ZERO),
            last: (0, Duration::ZERO),
        }
    }

    fn roll(&mut self, now: Instant) -> f64 {
        let second = Duration::from_secs(1);
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= 2 * second {
            self.window_start = now;
            self.last = (0, Duration::ZERO);
            self.this = (0, Duration::ZERO);
        } else if elapsed >= second {
            self.window_start += second;
            self.last = std::mem::replace(&mut self.this, (0, Duration::ZERO));
        }
        let into = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64();
        1.0 - into.min(1.0)
    }

    /// Counts a first message at `now`: whether the server is now past
    /// `limit` a second or `budget` of work a second.
    fn note(&mut self, now: Instant, (limit, budget): (u32, Duration)) -> bool {
        let older = self.roll(now);
        self.this.0 = self.this.0.saturating_add(1);
        let rate = (f64::from(self.last.0) * older) as u32 + self.this.0;
        let work = self.last.1.mul_f64(older) + self.this.1;
        rate > limit || work > budget
    }

    /// Adds the time a first message's Diffie-Hellman work took.
    fn worked(&mut self, took: Duration) {
        self.this.1 += took;
    }
}

/// What a datagram that opened holds.
pub struct SessionRequest {
    pub(crate) index: u32,
    pub(crate) peer: Peer,
    /// It came from the session's proven address.
    pub(crate) proven: bool,
}

pub struct UdpSessions {
    sessions: HashMap<u32, Session>,
    generation: u64,
    lifetime: Duration,
    load: HandshakeLoad,
    /// Past this many first messages or this much work a second, cookies first.
    before_cookies: (u32, Duration),
    /// Refusals of sources that may be forged are logged a few a minute.
    refusal_log: Throttle,
}

impl Default for UdpSessions {
    fn default() -> UdpSessions {
        UdpSessions::new(&Limits::default())
    }
}

impl UdpSessions {
    pub(crate) const PER_DEVICE: usize = 64;
    /// A session none of whose messages opened by then is dropped.
    pub(crate) const CONFIRM_WITHIN: Duration = Duration::from_secs(30);

    /// Sessions forgotten after `limits.session_lifetime`.
    pub(crate) fn new(limits: &Limits) -> UdpSessions {
        UdpSessions {
            sessions: HashMap::new(),
            generation: 0,
            lifetime: limits.session_lifetime,
            load: HandshakeLoad::new(),
            before_cookies: (limits.handshakes_before_cookies, limits.handshake_work),
            refusal_log: Throttle::default(),
        }
    }

    /// Whether no session is held (the fuzz target checks a refused one makes none).
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Answers a first message from `from` into `out`: a reply, a
    /// refusal (sent in the clear), or under load a cookie to come back with.
    pub fn handshake(
        &mut self,
        gate: &mut Gatekeeper,
        first: FirstMessage,
        from: SocketAddr,
        cookies: &CookieJar,
        out: &mut Vec<u8>,
        stats: &mut Stats,
    ) {
        let now = Instant::now();
        let proven = first
            .cookie
            .and_then(|c| std::str::from_utf8(c).ok())
            .is_some_and(|c| cookies.check(from.ip(), c, now));
        let under_load = self.load.note(now, self.before_cookies);
        let room =
            crate::server::limits::AMPLIFICATION * (noise::UDP_INIT_HEADER + first.noise.len());
        if !proven && under_load {
            let cookie: [u8; COOKIE_LEN] = cookies.issue(from.ip(), now);
            noise::push_cookie(out, first.sender, &cookie);
            stats.cookie_replies += 1;
            return;
        }
        if proven && gate.is_limited(Over::Udp, from.ip(), now) {
            noise::push_refused(out, first.sender, Refusal::TooMany, room);
            return;
        }
        let accepted = gate.accept(first.noise);
        self.load.worked(now.elapsed());
        let (mut handshake, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(why) => {
                stats.auth_failures += 1;
                if proven {
                    gate.failed(Over::Udp, from.ip(), now);
                    log::info!("UDP handshake from {from} refused: {}", why.words());
                } else {
                    crate::server::logging::log_throttled(
                        log::Level::Info,
                        &mut self.refusal_log,
                        format_args!("UDP handshake from {from} refused: {}", why.words()),
                    );
                }
                noise::push_refused(out, first.sender, why, room);
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
        noise::push_reply(out, index, first.sender, &reply[..n]);
        self.make_room_for(&peer, stats);
        self.sessions.insert(
            index,
            Session {
                transport,
                peer,
                remote: first.sender,
                proven: from,
                started: now,
                confirmed: false,
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

    /// The device's unconfirmed sessions go first (replays among them),
    /// then its oldest.
    fn make_room_for(&mut self, peer: &Peer, stats: &mut Stats) {
        let theirs = self.sessions.iter().filter(|(_, s)| s.peer.key == peer.key);
        if theirs.clone().count() >= Self::PER_DEVICE
            && let Some(first_out) = theirs
                .min_by_key(|(_, s)| (s.confirmed, s.started))
                .map(|(i, _)| *i)
        {
            self.remove(first_out, stats);
        }
    }

    fn remove(&mut self, index: u32, stats: &mut Stats) {
        if let Some(session) = self.sessions.remove(&index)
            && session.confirmed
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
    ) -> Option<SessionRequest> {
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
        if !session.confirmed {
            session.confirmed = true;
            log::info!("{}: UDP session from {from}", session.peer.name);
            *stats
                .device_sessions
                .entry(session.peer.name.clone())
                .or_default() += 1;
        }
        Some(SessionRequest {
            index: receiver,
            peer: session.peer.clone(),
            proven: from == session.proven,
        })
    }

    /// Seals `plain` for session `index` into `out`; `None` if the session
    /// is gone. It goes to the source of the request it answers.
    pub(crate) fn seal(&mut self, index: u32, plain: &[u8], out: &mut Vec<u8>) -> Option<()> {
        let session = self.sessions.get_mut(&index)?;
        let nonce = session.next_nonce;
        session.next_nonce += 1;
        noise::seal_datagram(&session.transport, session.remote, nonce, plain, out).ok()
    }

    /// Session `index` has proven it receives at `addr` (a cookie came
    /// back from there): replies there are no longer held to the 3x rule.
    pub(crate) fn prove(&mut self, index: u32, addr: SocketAddr) {
        if let Some(session) = self.sessions.get_mut(&index) {
            session.proven = addr;
        }
    }

    /// Forgets expired sessions, and after a reload of the allow file
    /// those of removed devices; a device's new scopes apply at once.
    pub(crate) fn sweep(&mut self, gate: &Gatekeeper, stats: &mut Stats) {
        let reloaded = gate.generation() != self.generation;
        self.generation = gate.generation();
        let mut gone = Vec::new();
        for (&index, session) in self.sessions.iter_mut() {
            let age = session.started.elapsed();
            if age >= self.lifetime {
                gone.push(index);
            } else if !session.confirmed && age >= Self::CONFIRM_WITHIN {
                stats.auth_failures += 1;
                log::info!(
                    "{}: UDP handshake from {} refused: no message followed it within {} s \
                     (a replayed first message, or a client that left)",
                    session.peer.name,
                    session.proven,
                    Self::CONFIRM_WITHIN.as_secs()
                );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_is_first_messages_or_work_in_the_last_second() {
        let start = Instant::now();
        let mut load = HandshakeLoad::new();
        load.window_start = start;
        let budget = Duration::from_millis(100);
        for i in 0..10 {
            assert!(!load.note(start + Duration::from_millis(i), (10, budget)));
        }
        assert!(
            load.note(start + Duration::from_millis(20), (10, budget)),
            "the 11th"
        );
        // Half a second into the next window, half the old one still counts.
        let later = start + Duration::from_millis(1500);
        assert!(!load.note(later, (10, budget)), "5 + 1 of the last second");
        let much_later = start + Duration::from_secs(4);
        assert!(!load.note(much_later, (10, budget)), "forgotten");
        load.worked(budget + Duration::from_millis(1));
        assert!(load.note(much_later, (1000, budget)), "too slow");
        assert!(load.note(much_later, (0, Duration::MAX)), "0: always");
    }
}
