//! The encrypted wire format, shared by client and server: message types,
//! how a Noise IK handshake and its transport messages are laid out in a
//! datagram or a TCP frame, refusals, and the UDP replay window (RFC 6479).
//!
//! No cryptography is made here: every byte that is sealed or opened goes
//! through `snow`. This file only frames what snow produces.
//!
//! A message starts with a type byte below 0x09, which no text request can
//! start with (text is printable, a tab or a newline at most), so one port
//! serves both. See docs/PROTOCOL.md "Encrypted sessions".

use crate::secure::keys::{KEY_LEN, KeyPair, NOISE_PARAMS, PublicKey};

/// Handshake, first message (initiator → responder).
pub const INIT: u8 = 1;
/// Handshake, second message (responder → initiator).
pub const REPLY: u8 = 2;
/// A request for the server's public key (first contact), and its answer.
pub(crate) const KEY: u8 = 3;
/// An encrypted message of an established session.
pub const DATA: u8 = 4;
/// The server will not go on: why, in a code and a few words.
pub const REFUSED: u8 = 5;
/// UDP, under load: before any Diffie-Hellman work the server asks the
/// source to prove it receives at its address, with a cookie to send back
/// (WireGuard's cookie reply).
pub(crate) const COOKIE: u8 = 6;
/// UDP: a first message carrying the cookie its source was given.
pub(crate) const INIT_WITH_COOKIE: u8 = 7;
/// A cookie as sent: 96 bits of MAC in hex.
pub const COOKIE_LEN: usize = 24;

/// Bound into every handshake: a peer speaking anything else fails it.
pub(crate) const PROLOGUE: &[u8] = b"diary noise v1";
/// Snow's authentication tag, added to every sealed message.
pub(crate) const TAG_LEN: usize = 16;
/// Largest Noise message.
pub(crate) const MAX_MESSAGE: usize = 65_535;
/// Largest plaintext in one TCP frame.
pub(crate) const MAX_FRAME_PLAINTEXT: usize = MAX_MESSAGE - TAG_LEN;
/// The handshake's first payload: the initiator's clock (nanoseconds), so
/// a replayed first message is refused, as WireGuard's TAI64N stamp is.
pub(crate) const STAMP_LEN: usize = 8;
/// A key request is padded to this, so its answer is smaller than it.
pub(crate) const KEY_REQUEST_LEN: usize = 64;

/// A session is renewed by a new handshake after this long (WireGuard's
/// REKEY_AFTER_TIME) …
pub(crate) const REKEY_AFTER: std::time::Duration = std::time::Duration::from_secs(120);
/// … and the server forgets it after this long (REJECT_AFTER_TIME).
pub(crate) const REJECT_AFTER: std::time::Duration = std::time::Duration::from_secs(180);
/// A session is also renewed after this many messages sent.
pub(crate) const REKEY_AFTER_MESSAGES: u64 = 1 << 40;

/// UDP: type, then the index the sender picked for itself.
pub(crate) const UDP_INIT_HEADER: usize = 1 + 4;
/// UDP: type, the sender's index, then the cookie.
pub(crate) const UDP_INIT_WITH_COOKIE_HEADER: usize = UDP_INIT_HEADER + COOKIE_LEN;
/// UDP: type, the responder's index, the initiator's index.
pub(crate) const UDP_REPLY_HEADER: usize = 1 + 4 + 4;
/// UDP: type, the receiver's index, the nonce.
pub const UDP_DATA_HEADER: usize = 1 + 4 + 8;
/// What sealing adds to a datagram's plaintext.
pub(crate) const UDP_DATA_OVERHEAD: usize = UDP_DATA_HEADER + TAG_LEN;
/// TCP frames: type, then the body's length (big-endian u16).
pub(crate) const TCP_HEADER: usize = 3;

/// Why the server refused; the code byte of a [`REFUSED`] message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The device's key is not in the allow file.
    UnknownDevice = 1,
    /// The first message did not open: made for another server key, or garbage.
    BadHandshake = 2,
    /// UDP: no session by that index (it expired, or the server restarted).
    NoSession = 3,
    /// Too many failed handshakes from this address lately.
    TooMany = 4,
    /// The server was started without `--allow`, so it knows no keys.
    NoKeys = 5,
    /// A first message older than one already seen from the device.
    Replayed = 6,
}

impl Refusal {
    pub fn from_code(code: u8) -> Option<Refusal> {
        Some(match code {
            1 => Refusal::UnknownDevice,
            2 => Refusal::BadHandshake,
            3 => Refusal::NoSession,
            4 => Refusal::TooMany,
            5 => Refusal::NoKeys,
            6 => Refusal::Replayed,
            _ => return None,
        })
    }

    /// The few words sent with the code (short: a refusal must stay
    /// within three times the request it answers).
    pub(crate) fn words(self) -> &'static str {
        match self {
            Refusal::UnknownDevice => "device key not allowed",
            Refusal::BadHandshake => "handshake failed",
            Refusal::NoSession => "no such session",
            Refusal::TooMany => "too many failures",
            Refusal::NoKeys => "server takes no keys",
            Refusal::Replayed => "stale handshake",
        }
    }
}

pub(crate) fn params() -> snow::params::NoiseParams {
    NOISE_PARAMS.parse().expect("valid Noise parameters")
}

/// The initiator's side of a handshake with the server whose key is `server`.
pub fn initiator(own: &KeyPair, server: &PublicKey) -> snow::HandshakeState {
    snow::Builder::new(params())
        .local_private_key(&own.private)
        .and_then(|b| b.remote_public_key(&server.0))
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_initiator())
        .expect("a complete IK initiator")
}

pub(crate) fn responder(own: &KeyPair) -> snow::HandshakeState {
    snow::Builder::new(params())
        .local_private_key(&own.private)
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_responder())
        .expect("a complete IK responder")
}

/// The payload of a first message: now, in nanoseconds since the epoch.
pub fn stamp_now() -> [u8; STAMP_LEN] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos.to_be_bytes()
}

/// A UDP message, split into its parts; `None` for anything malformed.
#[derive(Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// A first message; `cookie` when it brings one back.
    Init {
        sender: u32,
        cookie: Option<&'a [u8]>,
        noise: &'a [u8],
    },
    /// Prove your address: send the first message again with `cookie`.
    Cookie {
        receiver: u32,
        cookie: &'a [u8],
    },
    Reply {
        sender: u32,
        receiver: u32,
        noise: &'a [u8],
    },
    KeyRequest,
    Key(PublicKey),
    Data {
        receiver: u32,
        nonce: u64,
        sealed: &'a [u8],
    },
    Refused {
        receiver: u32,
        why: Option<Refusal>,
    },
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Whether a datagram or stream starts as an encrypted message would.
pub(crate) fn is_encrypted(first: u8) -> bool {
    (INIT..=INIT_WITH_COOKIE).contains(&first)
}

pub fn parse_datagram(d: &[u8]) -> Option<Datagram<'_>> {
    let (&kind, _) = d.split_first()?;
    Some(match kind {
        INIT => Datagram::Init {
            sender: u32_at(d, 1)?,
            cookie: None,
            noise: d.get(UDP_INIT_HEADER..).filter(|n| !n.is_empty())?,
        },
        INIT_WITH_COOKIE => Datagram::Init {
            sender: u32_at(d, 1)?,
            cookie: Some(d.get(UDP_INIT_HEADER..UDP_INIT_WITH_COOKIE_HEADER)?),
            noise: d
                .get(UDP_INIT_WITH_COOKIE_HEADER..)
                .filter(|n| !n.is_empty())?,
        },
        COOKIE if d.len() == UDP_INIT_HEADER + COOKIE_LEN => Datagram::Cookie {
            receiver: u32_at(d, 1)?,
            cookie: &d[UDP_INIT_HEADER..],
        },
        REPLY => Datagram::Reply {
            sender: u32_at(d, 1)?,
            receiver: u32_at(d, 5)?,
            noise: d.get(UDP_REPLY_HEADER..).filter(|n| !n.is_empty())?,
        },
        KEY if d.len() == KEY_REQUEST_LEN => Datagram::KeyRequest,
        KEY if d.len() == 1 + KEY_LEN => Datagram::Key(PublicKey::from_slice(&d[1..])?),
        DATA => Datagram::Data {
            receiver: u32_at(d, 1)?,
            nonce: u64::from_le_bytes(d.get(5..13)?.try_into().ok()?),
            sealed: d.get(UDP_DATA_HEADER..).filter(|s| s.len() >= TAG_LEN)?,
        },
        REFUSED => Datagram::Refused {
            receiver: u32_at(d, 1)?,
            why: d.get(5).copied().and_then(Refusal::from_code),
        },
        _ => return None,
    })
}

/// A first message, with the cookie the server gave if it asked for one.
pub fn push_init(out: &mut Vec<u8>, sender: u32, cookie: Option<&[u8; COOKIE_LEN]>, noise: &[u8]) {
    match cookie {
        None => out.push(INIT),
        Some(_) => out.push(INIT_WITH_COOKIE),
    }
    out.extend_from_slice(&sender.to_le_bytes());
    if let Some(cookie) = cookie {
        out.extend_from_slice(cookie);
    }
    out.extend_from_slice(noise);
}

/// The answer to a first message under load: no handshake yet, only a
/// cookie for the address it came from (smaller than the first message,
/// so it amplifies nothing).
pub(crate) fn push_cookie(out: &mut Vec<u8>, receiver: u32, cookie: &[u8; COOKIE_LEN]) {
    out.push(COOKIE);
    out.extend_from_slice(&receiver.to_le_bytes());
    out.extend_from_slice(cookie);
}

pub(crate) fn push_reply(out: &mut Vec<u8>, sender: u32, receiver: u32, noise: &[u8]) {
    out.push(REPLY);
    out.extend_from_slice(&sender.to_le_bytes());
    out.extend_from_slice(&receiver.to_le_bytes());
    out.extend_from_slice(noise);
}

pub(crate) fn key_request() -> [u8; KEY_REQUEST_LEN] {
    let mut request = [0u8; KEY_REQUEST_LEN];
    request[0] = KEY;
    request
}

pub(crate) fn push_key(out: &mut Vec<u8>, key: &PublicKey) {
    out.push(KEY);
    out.extend_from_slice(&key.0);
}

/// A refusal within `room` bytes (the words are cut to fit).
pub(crate) fn push_refused(out: &mut Vec<u8>, receiver: u32, why: Refusal, room: usize) {
    out.push(REFUSED);
    out.extend_from_slice(&receiver.to_le_bytes());
    out.push(why as u8);
    let words = why.words().as_bytes();
    out.extend_from_slice(&words[..words.len().min(room.saturating_sub(6))]);
}

/// Seals `plain` as a UDP data message of session `receiver`.
pub fn seal_datagram(
    transport: &snow::StatelessTransportState,
    receiver: u32,
    nonce: u64,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), snow::Error> {
    let start = out.len();
    out.push(DATA);
    out.extend_from_slice(&receiver.to_le_bytes());
    out.extend_from_slice(&nonce.to_le_bytes());
    let at = out.len();
    out.resize(at + plain.len() + TAG_LEN, 0);
    match transport.write_message(nonce, plain, &mut out[at..]) {
        Ok(n) => {
            out.truncate(at + n);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// A TCP frame: its type and body, once it has fully arrived.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub body: &'a [u8],
}

/// A stream's bytes are not a frame: its type byte is no frame's.
#[derive(Debug, PartialEq, Eq)]
pub struct NotAFrame;

/// The first complete frame in `buf` and its length; `Ok(None)` until it
/// has all arrived.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, NotAFrame> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    if !is_encrypted(kind) {
        return Err(NotAFrame);
    }
    let Some(len) = buf.get(1..TCP_HEADER) else {
        return Ok(None);
    };
    let len = u16::from_be_bytes([len[0], len[1]]) as usize;
    Ok(buf
        .get(TCP_HEADER..TCP_HEADER + len)
        .map(|body| (Frame { kind, body }, TCP_HEADER + len)))
}

pub fn push_frame(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    debug_assert!(body.len() <= MAX_MESSAGE);
    out.push(kind);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// Seals `plain` (at most [`MAX_FRAME_PLAINTEXT`]) as one TCP data frame.
pub fn seal_frame(
    transport: &mut snow::TransportState,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), snow::Error> {
    let start = out.len();
    out.extend_from_slice(&[DATA, 0, 0]);
    let at = out.len();
    out.resize(at + plain.len() + TAG_LEN, 0);
    match transport.write_message(plain, &mut out[at..]) {
        Ok(n) => {
            out.truncate(at + n);
            out[start + 1..at].copy_from_slice(&(n as u16).to_be_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Which nonces of a UDP session were already received: a packet seen
/// before, or older than the window, is dropped before it is answered.
/// RFC 6479's bitmap, as WireGuard keeps it: 2048 bits, one word of which
/// is the slack that lets the window slide a word at a time.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    top: u64,
    seen_any: bool,
    bits: [u64; ReplayWindow::WORDS],
}

impl Default for ReplayWindow {
    fn default() -> ReplayWindow {
        ReplayWindow {
            top: 0,
            seen_any: false,
            bits: [0; ReplayWindow::WORDS],
        }
    }
}

impl ReplayWindow {
    const WORDS: usize = 32;
    const BITS: u64 = 64 * Self::WORDS as u64;
    /// How far behind the newest nonce a packet may still arrive.
    pub const SIZE: u64 = Self::BITS - 64;

    /// Whether `nonce` is new and within the window. Call
    /// [`ReplayWindow::mark`] only once the packet has opened: a forged
    /// nonce must not move the window.
    pub fn is_fresh(&self, nonce: u64) -> bool {
        if !self.seen_any || nonce > self.top {
            return true;
        }
        if self.top - nonce >= Self::SIZE {
            return false;
        }
        let bit = nonce % Self::BITS;
        self.bits[(bit / 64) as usize] & (1 << (bit % 64)) == 0
    }

    pub fn mark(&mut self, nonce: u64) {
        if !self.seen_any || nonce > self.top {
            let (from, to) = (self.top / 64, nonce / 64);
            if !self.seen_any || to - from >= Self::WORDS as u64 {
                self.bits = [0; Self::WORDS];
            } else {
                for word in from + 1..=to {
                    self.bits[(word % Self::WORDS as u64) as usize] = 0;
                }
            }
            self.top = nonce;
            self.seen_any = true;
        }
        let bit = nonce % Self::BITS;
        self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window_takes_each_nonce_once_within_its_reach() {
        let mut w = ReplayWindow::default();
        assert!(w.is_fresh(0));
        w.mark(0);
        assert!(!w.is_fresh(0));
        for n in [5, 3, 4, 1, 2] {
            assert!(w.is_fresh(n), "{n}");
            w.mark(n);
            assert!(!w.is_fresh(n), "{n}");
        }
        w.mark(10_000);
        assert!(!w.is_fresh(10_000 - ReplayWindow::SIZE));
        assert!(w.is_fresh(10_000 - ReplayWindow::SIZE + 1));
        assert!(!w.is_fresh(5));
        // Sliding clears the words the window moved past, and only those.
        w.mark(10_000 - 100);
        w.mark(10_000 + 70);
        assert!(!w.is_fresh(10_000 - 100));
        assert!(w.is_fresh(10_000 - 99));
        assert!(!w.is_fresh(10_000));
        assert!(w.is_fresh(10_000 + 69));
    }

    #[test]
    fn replay_window_agrees_with_a_set_on_random_traffic() {
        let mut w = ReplayWindow::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut top = 0u64;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = (top + (x % 64)).saturating_sub(x % 2500);
            let expect = if seen.is_empty() || n > top {
                true
            } else {
                top - n < ReplayWindow::SIZE && !seen.contains(&n)
            };
            assert_eq!(w.is_fresh(n), expect, "nonce {n}, top {top}");
            if expect {
                w.mark(n);
                seen.insert(n);
                top = top.max(n);
            }
        }
    }

    #[test]
    fn datagrams_parse_back_and_garbage_does_not() {
        let mut out = Vec::new();
        push_init(&mut out, 7, None, b"noise");
        assert_eq!(
            parse_datagram(&out),
            Some(Datagram::Init {
                sender: 7,
                cookie: None,
                noise: b"noise"
            })
        );
        out.clear();
        let cookie = [b'c'; COOKIE_LEN];
        push_init(&mut out, 7, Some(&cookie), b"noise");
        assert_eq!(
            parse_datagram(&out),
            Some(Datagram::Init {
                sender: 7,
                cookie: Some(&cookie[..]),
                noise: b"noise"
            })
        );
        out.clear();
        push_cookie(&mut out, 8, &cookie);
        assert!(out.len() < UDP_INIT_HEADER + 32 + 48 + STAMP_LEN + TAG_LEN);
        assert_eq!(
            parse_datagram(&out),
            Some(Datagram::Cookie {
                receiver: 8,
                cookie: &cookie[..]
            })
        );
        out.clear();
        push_refused(&mut out, 9, Refusal::NoSession, 100);
        assert_eq!(
            parse_datagram(&out),
            Some(Datagram::Refused {
                receiver: 9,
                why: Some(Refusal::NoSession)
            })
        );
        assert_eq!(parse_datagram(&key_request()), Some(Datagram::KeyRequest));
        for bad in [
            &b""[..],
            b"\x01\x00",
            b"\x04\x01\x00\x00\x00\x00",
            b"\x03",
            b"\x06\x01\x00\x00\x00short",
            b"\x07\x01\x00\x00\x00cookie-too-short",
            b"hello",
        ] {
            assert_eq!(parse_datagram(bad), None, "{bad:?}");
        }
        out.clear();
        push_refused(&mut out, 1, Refusal::UnknownDevice, 12);
        assert_eq!(out.len(), 12);
    }

    #[test]
    fn a_handshake_and_messages_go_both_ways() {
        let (client, server) = (KeyPair::generate(), KeyPair::generate());
        let mut i = initiator(&client, &server.public);
        let mut r = responder(&server);
        let mut m1 = vec![0u8; 256];
        let n = i.write_message(&stamp_now(), &mut m1).unwrap();
        let mut payload = [0u8; 64];
        assert_eq!(r.read_message(&m1[..n], &mut payload).unwrap(), STAMP_LEN);
        assert_eq!(r.get_remote_static().unwrap(), &client.public.0);
        let mut m2 = vec![0u8; 256];
        let n2 = r.write_message(&[], &mut m2).unwrap();
        i.read_message(&m2[..n2], &mut payload).unwrap();
        let mut ti = i.into_transport_mode().unwrap();
        let mut tr = r.into_transport_mode().unwrap();
        let mut frames = Vec::new();
        seal_frame(&mut ti, b"hello\n", &mut frames).unwrap();
        let (frame, used) = parse_frame(&frames).unwrap().unwrap();
        assert_eq!(used, frames.len());
        let mut plain = [0u8; 64];
        let n = tr.read_message(frame.body, &mut plain).unwrap();
        assert_eq!(&plain[..n], b"hello\n");
        assert_eq!(parse_frame(&frames[..used - 1]), Ok(None));
        assert_eq!(parse_frame(b"x"), Err(NotAFrame));
    }
}
