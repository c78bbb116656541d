//! UDP address cookies: proof that a source receives what is sent to it, so
//! that replies to it may exceed the anti-amplification limit.
//!
//! A cookie is a BLAKE3 keyed hash (a MAC) of the source IP and the current
//! ten-minute epoch, under a random key made at start; it is checked in
//! constant time, so its bytes cannot be guessed one at a time.

use std::net::IpAddr;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// A cookie as the hex text sent to the client: 96 bits of MAC, so that a
/// reply to `/id T /cookie` stays within 3x its request.
pub(crate) type Cookie = [u8; 2 * MAC_BYTES];
const MAC_BYTES: usize = 12;
// The same cookie comes back in a handshake's first message.
const _: () = assert!(2 * MAC_BYTES == crate::secure::noise::COOKIE_LEN);

pub struct CookieJar {
    key: [u8; 32],
    started: Instant,
}

impl Default for CookieJar {
    fn default() -> CookieJar {
        let mut key = [0u8; 32];
        if let Err(e) = getrandom::fill(&mut key) {
            // Without a key cookies would be forgeable; no system we run on lacks one.
            panic!("no randomness for the cookie key: {e}");
        }
        CookieJar {
            key,
            started: Instant::now(),
        }
    }
}

impl CookieJar {
    pub(crate) const EPOCH: Duration = Duration::from_secs(600);

    fn epoch(&self, now: Instant) -> u64 {
        (now.duration_since(self.started).as_secs() / Self::EPOCH.as_secs()) + 1
    }

    fn make(&self, ip: IpAddr, epoch: u64) -> Cookie {
        let mut input = [0u8; 24];
        match ip {
            IpAddr::V4(v4) => input[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => input[..16].copy_from_slice(&v6.octets()),
        }
        input[16..].copy_from_slice(&epoch.to_le_bytes());
        // The family is part of the input, so 1.2.3.4 and ::0102:0304 differ.
        let family = [u8::from(ip.is_ipv6())];
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(&family).update(&input);
        let mac = hasher.finalize();
        let mut cookie = [0u8; 2 * MAC_BYTES];
        for (i, byte) in mac.as_bytes()[..MAC_BYTES].iter().enumerate() {
            cookie[2 * i] = b"0123456789abcdef"[usize::from(byte >> 4)];
            cookie[2 * i + 1] = b"0123456789abcdef"[usize::from(byte & 0xf)];
        }
        cookie
    }

    /// The cookie for `ip` now.
    pub(crate) fn issue(&self, ip: IpAddr, now: Instant) -> Cookie {
        self.make(ip, self.epoch(now))
    }

    /// Whether `cookie` was issued to `ip` in this epoch or the one before.
    pub(crate) fn check(&self, ip: IpAddr, cookie: &str, now: Instant) -> bool {
        let epoch = self.epoch(now);
        let mut valid = subtle::Choice::from(0);
        for e in [epoch, epoch - 1] {
            valid |= self.make(ip, e).as_slice().ct_eq(cookie.as_bytes());
        }
        valid.into()
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
            !jar.check(a, &text[..16], now),
            "a prefix is not the cookie"
        );
        assert!(
            !CookieJar::default().check(a, text, now),
            "bound to the server's key"
        );
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(!jar.check(mapped, text, now), "bound to the address family");
    }
}
