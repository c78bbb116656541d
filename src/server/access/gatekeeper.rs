//! Who may talk to the diary: the server's key, the allow file (re-read on
//! SIGHUP), whether plaintext is taken from an address, the responder's
//! half of every Noise handshake, and the limit on failed handshakes per
//! proven source address (see [`Gatekeeper::failed`]). The UDP and TCP sides share one, each holding it only
//! for the length of a call (a mutex only so that the server may be moved
//! to another thread: the loop's one thread is the only one that locks it).

use crate::secure::keys::{KeyPair, PublicKey};
use crate::secure::noise::{self, Refusal, STAMP_LEN};
use crate::server::access::allow::{AllowList, Device, Scopes};
use crate::server::access::web_sessions::{self, WebSessions};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Shared by the loop's two sides.
#[derive(Clone)]
pub(crate) struct SharedGate(Arc<Mutex<Gatekeeper>>);

impl SharedGate {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Gatekeeper> {
        // A panic elsewhere cannot leave it half-changed: reload swaps whole lists.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Where plaintext is served: fixed at start, so checked without the lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlaintextRule {
    keys_required: bool,
    auth_loopback: bool,
}

impl PlaintextRule {
    /// Whether a plaintext request is served, given whether it provably
    /// came from this machine: the transport's word, never the address
    /// alone (a UDP source can be forged; see `UdpSide` and `TcpSide`).
    pub(crate) fn allows(self, local: bool) -> bool {
        !self.keys_required || (!self.auth_loopback && local)
    }
}

/// The server's access settings, from its command line.
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// The allow file: without one, no key is taken and plaintext is
    /// served (the server listens on loopback, or was told `--insecure-open`).
    pub allow: Option<PathBuf>,
    /// Keys on loopback too: no plaintext from anywhere.
    pub auth_loopback: bool,
    /// Plaintext to anyone, off loopback included.
    pub insecure_open: bool,
}

/// An established session's device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub(crate) key: PublicKey,
    pub(crate) name: Arc<str>,
    pub(crate) scopes: Scopes,
}

pub struct Gatekeeper {
    key: KeyPair,
    config: AccessConfig,
    allow: Option<AllowList>,
    /// The newest first-message stamp seen from each device.
    stamps: HashMap<PublicKey, u64>,
    failures: FailureLimiter,
    /// Bumped by each reload, so sessions know to look again.
    generation: u64,
    /// The web page's logins and browser sessions, with `--web`.
    web: Option<WebSessions>,
}

impl Gatekeeper {
    /// Reads the allow file if there is one: a bad one stops the start.
    pub fn new(key: KeyPair, config: AccessConfig) -> Result<Gatekeeper, String> {
        let allow = match &config.allow {
            Some(path) => Some(AllowList::load(path)?),
            None => None,
        };
        Ok(Gatekeeper {
            key,
            config,
            allow,
            stamps: HashMap::new(),
            failures: FailureLimiter::default(),
            generation: 0,
            web: None,
        })
    }

    /// Plaintext from everyone, and no keys: tests and the seed's setup.
    pub(crate) fn open() -> Gatekeeper {
        Gatekeeper::new(KeyPair::generate(), AccessConfig::default()).expect("no file to read")
    }

    pub(crate) fn shared(self) -> SharedGate {
        SharedGate(Arc::new(Mutex::new(self)))
    }

    /// Lets browsers in through `sessions` (the web side is on).
    pub(crate) fn enable_web(&mut self, sessions: WebSessions) {
        self.web = Some(sessions);
    }

    pub(crate) fn web_sessions_mut(&mut self) -> Option<&mut WebSessions> {
        self.web.as_mut()
    }

    /// The browser session a cookie's value stands for.
    pub(crate) fn web_peer(&self, cookie: &str) -> Option<Peer> {
        let (digest, name) = self.web.as_ref()?.session(cookie)?;
        Some(Peer {
            key: PublicKey(digest),
            name,
            scopes: web_sessions::SCOPES,
        })
    }

    pub(crate) fn web_session_open(&self, peer: &Peer) -> bool {
        self.web
            .as_ref()
            .is_some_and(|web| web.is_open(&peer.key.0))
    }

    /// Counts logouts, so that open pages are checked again.
    pub(crate) fn web_generation(&self) -> u64 {
        self.web.as_ref().map_or(0, WebSessions::generation)
    }

    pub(crate) fn public_key(&self) -> PublicKey {
        self.key.public
    }

    pub fn devices(&self) -> usize {
        self.allow.as_ref().map_or(0, AllowList::len)
    }

    pub(crate) fn insecure_open(&self) -> bool {
        self.config.insecure_open
    }

    pub(crate) fn plaintext_rule(&self) -> PlaintextRule {
        PlaintextRule {
            keys_required: self.allow.is_some(),
            auth_loopback: self.config.auth_loopback,
        }
    }

    /// Re-reads the allow file; on error the old list stays. Returns how
    /// many devices it now allows.
    pub(crate) fn has_allow_file(&self) -> bool {
        self.config.allow.is_some()
    }

    pub(crate) fn reload(&mut self) -> Result<usize, String> {
        let Some(path) = &self.config.allow else {
            return Err("no --allow file to re-read".into());
        };
        let list = AllowList::load(path)?;
        let devices = list.len();
        self.allow = Some(list);
        self.generation += 1;
        Ok(devices)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The device `key` is now, after a reload: `None` once it is removed.
    pub(crate) fn device(&self, key: &PublicKey) -> Option<&Device> {
        self.allow.as_ref()?.get(key)
    }

    /// Whether handshakes over `over` from `ip` are refused for now
    /// (too many failed).
    pub(crate) fn is_limited(&mut self, over: Over, ip: IpAddr, now: Instant) -> bool {
        self.failures.is_limited((over, holder(ip)), now)
    }

    /// Counts a failed handshake (or garbage) from `ip`. Only for a source
    /// that proved it receives at its address (a TCP peer, or a UDP first
    /// message that brought its cookie back): counting a forged source
    /// would let anyone lock a real device out by sending in its name.
    pub(crate) fn failed(&mut self, over: Over, ip: IpAddr, now: Instant) {
        self.failures.failed((over, holder(ip)), now);
    }

    /// The responder's side of a first message: the device, and the
    /// handshake ready to write its reply. The caller counts a failure if
    /// its source is proven.
    pub(crate) fn accept(&mut self, first: &[u8]) -> Result<(snow::HandshakeState, Peer), Refusal> {
        self.check(first)
    }

    fn check(&mut self, first: &[u8]) -> Result<(snow::HandshakeState, Peer), Refusal> {
        let allow = self.allow.as_ref().ok_or(Refusal::NoKeys)?;
        let mut handshake = noise::responder(&self.key);
        let mut payload = [0u8; 64];
        let n = handshake
            .read_message(first, &mut payload)
            .map_err(|_| Refusal::BadHandshake)?;
        let key = handshake
            .get_remote_static()
            .and_then(PublicKey::from_slice)
            .ok_or(Refusal::BadHandshake)?;
        let device = allow.get(&key).ok_or(Refusal::UnknownDevice)?;
        let stamp: [u8; STAMP_LEN] = payload[..n].try_into().map_err(|_| Refusal::BadHandshake)?;
        let stamp = u64::from_be_bytes(stamp);
        let last = self.stamps.entry(key).or_insert(0);
        if stamp <= *last {
            return Err(Refusal::Replayed);
        }
        *last = stamp;
        let peer = Peer {
            key,
            name: device.name.clone(),
            scopes: device.scopes,
        };
        Ok((handshake, peer))
    }
}

/// Whether `ip` is a loopback address, `::ffff:127.0.0.1` included. On
/// its own it proves nothing about where a datagram came from.
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Which side a handshake came in on: failures on one never gate the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Over {
    Udp,
    Tcp,
}

/// What one party is taken to hold: an IPv4 address (a v4-mapped IPv6
/// one included), or an IPv6 /64, the least a network hands one host.
fn holder(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// Failed handshakes per proven source: past [`FailureLimiter::MAX`] in a
/// window, that source's handshakes are refused without Diffie-Hellman
/// work until the window ends. The table is bounded; when it is full of
/// live entries a new source goes uncounted rather than sharing a count
/// with others, so filling it locks nobody out. What bounds the work
/// then is the UDP cookie (see `UdpSessions`) and TCP's connection limits.
#[derive(Debug, Default)]
struct FailureLimiter {
    sources: HashMap<(Over, IpAddr), (u32, Instant)>,
}

impl FailureLimiter {
    const MAX: u32 = 20;
    const WINDOW: Duration = Duration::from_secs(60);
    const SOURCES: usize = 4096;

    fn is_limited(&mut self, source: (Over, IpAddr), now: Instant) -> bool {
        self.sources.get(&source).is_some_and(|(count, since)| {
            now.duration_since(*since) < Self::WINDOW && *count >= Self::MAX
        })
    }

    fn failed(&mut self, source: (Over, IpAddr), now: Instant) {
        if self.sources.len() >= Self::SOURCES && !self.sources.contains_key(&source) {
            self.sources
                .retain(|_, (_, since)| now.duration_since(*since) < Self::WINDOW);
            if self.sources.len() >= Self::SOURCES {
                return;
            }
        }
        let entry = self.sources.entry(source).or_insert((0, now));
        if now.duration_since(entry.1) >= Self::WINDOW {
            *entry = (1, now);
        } else {
            entry.0 += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::noise::{initiator, stamp_now};

    fn gate_with(device: &KeyPair, scopes: &str) -> (Gatekeeper, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let allow = dir.path().join("allow");
        std::fs::write(&allow, format!("{} laptop {scopes}\n", device.public)).unwrap();
        let config = AccessConfig {
            allow: Some(allow),
            ..AccessConfig::default()
        };
        (Gatekeeper::new(KeyPair::generate(), config).unwrap(), dir)
    }

    fn first_message(device: &KeyPair, server: &PublicKey, stamp: [u8; 8]) -> Vec<u8> {
        let mut hs = initiator(device, server);
        let mut m = vec![0u8; 256];
        let n = hs.write_message(&stamp, &mut m).unwrap();
        m.truncate(n);
        m
    }

    #[test]
    fn an_allowed_device_is_named_and_others_are_refused() {
        let device = KeyPair::generate();
        let (mut gate, _dir) = gate_with(&device, "write");
        let m = first_message(&device, &gate.public_key(), stamp_now());
        let (_, peer) = gate.accept(&m).unwrap();
        assert_eq!(&*peer.name, "laptop");
        assert_eq!(peer.scopes, Scopes::WRITE);
        // The same first message again is a replay.
        assert_eq!(gate.accept(&m).unwrap_err(), Refusal::Replayed);
        let stranger = KeyPair::generate();
        let m = first_message(&stranger, &gate.public_key(), stamp_now());
        assert_eq!(gate.accept(&m).unwrap_err(), Refusal::UnknownDevice);
        let wrong_server = KeyPair::generate().public;
        let m = first_message(&device, &wrong_server, stamp_now());
        assert_eq!(gate.accept(&m).unwrap_err(), Refusal::BadHandshake);
        assert_eq!(gate.accept(b"").unwrap_err(), Refusal::BadHandshake);
    }

    #[test]
    fn plaintext_is_for_loopback_only_once_keys_are_required() {
        let device = KeyPair::generate();
        let (gate, _dir) = gate_with(&device, "all");
        let rule = gate.plaintext_rule();
        assert!(rule.allows(true));
        assert!(!rule.allows(false));
        let open = Gatekeeper::open().plaintext_rule();
        assert!(open.allows(false));
    }

    #[test]
    fn failures_are_limited_per_source_and_transport_in_bounded_memory() {
        let mut gate = Gatekeeper::open();
        let now = Instant::now();
        let bad: IpAddr = "10.0.0.9".parse().unwrap();
        for _ in 0..FailureLimiter::MAX {
            assert!(!gate.is_limited(Over::Tcp, bad, now));
            gate.failed(Over::Tcp, bad, now);
        }
        assert!(gate.is_limited(Over::Tcp, bad, now));
        assert!(
            !gate.is_limited(Over::Udp, bad, now),
            "TCP failures do not gate UDP"
        );
        let mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        assert!(gate.is_limited(Over::Tcp, mapped, now));
        assert!(!gate.is_limited(Over::Tcp, "10.0.0.8".parse().unwrap(), now));
        assert!(!gate.is_limited(Over::Tcp, bad, now + FailureLimiter::WINDOW));

        // An IPv6 /64 is one holder: its other addresses are no way around.
        for i in 0..FailureLimiter::MAX {
            let ip = IpAddr::V6(((u128::from(0x2001_0db8_u64 << 32) << 64) | u128::from(i)).into());
            gate.failed(Over::Udp, ip, now);
        }
        assert!(gate.is_limited(Over::Udp, "2001:db8::ffff:1".parse().unwrap(), now));
        assert!(!gate.is_limited(Over::Udp, "2001:db8:0:1::1".parse().unwrap(), now));

        // Filling the table locks out nobody who was not counted.
        for i in 0..(FailureLimiter::SOURCES as u32 + 500) {
            for _ in 0..FailureLimiter::MAX {
                gate.failed(Over::Tcp, IpAddr::from((i | 1 << 31).to_be_bytes()), now);
            }
        }
        assert!(gate.failures.sources.len() <= FailureLimiter::SOURCES);
        let newcomer: IpAddr = "192.0.2.77".parse().unwrap();
        gate.failed(Over::Tcp, newcomer, now);
        assert!(!gate.is_limited(Over::Tcp, newcomer, now));
        assert!(gate.is_limited(Over::Tcp, bad, now), "still counted");
    }
}
