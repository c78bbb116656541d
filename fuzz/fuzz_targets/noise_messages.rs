//! Fuzzes what an attacker can send to the encrypted side: datagrams and
//! TCP frames, malformed, truncated and replayed. Parsing must not panic;
//! a first message must not open without the keys; a sealed datagram must
//! open once and never again; and the replay window must agree with a set.
#![no_main]

use diary::server::access::gatekeeper::{AccessConfig, Gatekeeper};
use diary::secure::keys::KeyPair;
use diary::secure::noise::{self, Datagram, ReplayWindow};
use diary::tcp::secure::{SecureLink, Step};
use diary::server::stats::Stats;
use diary::server::cookie::CookieJar;
use diary::udp::sessions::{FirstMessage, UdpSessions};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::OnceLock;

struct Keys {
    server: KeyPair,
    device: KeyPair,
    allow: std::path::PathBuf,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let device = KeyPair::from_private([7; 32]);
        let allow = std::env::temp_dir().join(format!("diary-fuzz-allow-{}", std::process::id()));
        std::fs::write(&allow, format!("{} fuzzer all\n", device.public)).unwrap();
        Keys {
            server: KeyPair::from_private([9; 32]),
            device,
            allow,
        }
    })
}

fn gate() -> Gatekeeper {
    let config = AccessConfig {
        allow: Some(keys().allow.clone()),
        ..AccessConfig::default()
    };
    Gatekeeper::new(keys().server.clone(), config).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let from: SocketAddr = "10.0.0.2:4000".parse().unwrap();
    let mut stats = Stats::default();
    let mut gate = gate();
    let mut sessions = UdpSessions::default();
    let cookies = CookieJar::default();
    let (mut out, mut plain) = (Vec::new(), Vec::new());

    // Any datagram: parsed, and if it is a first message or a data
    // message, answered as the server would.
    match noise::parse_datagram(data) {
        Some(Datagram::Init { sender, cookie, noise }) => {
            let first = FirstMessage { sender, cookie, noise };
            sessions.handshake(&mut gate, first, from, &cookies, &mut out, &mut stats);
            // Nobody without the device's private key gets a session.
            assert!(sessions.is_empty());
        }
        Some(Datagram::Data { receiver, nonce, sealed }) => {
            assert!(sessions.open((receiver, nonce, sealed), from, &mut plain, &mut out, &mut stats).is_none());
        }
        _ => {}
    }
    let _ = noise::parse_frame(data);

    // A real session, then the input as a tampered data message for it.
    out.clear();
    let mut initiator = noise::initiator(&keys().device, &keys().server.public);
    let mut first = [0u8; 256];
    let n = initiator.write_message(&noise::stamp_now(), &mut first).unwrap();
    let message = FirstMessage { sender: 1, cookie: None, noise: &first[..n] };
    sessions.handshake(&mut gate, message, from, &cookies, &mut out, &mut stats);
    let Some(Datagram::Reply { sender: index, noise, .. }) = noise::parse_datagram(&out) else {
        panic!("the real device gets a reply");
    };
    initiator.read_message(noise, &mut [0u8; 64]).unwrap();
    let client = initiator.into_stateless_transport_mode().unwrap();
    let mut sealed = Vec::new();
    noise::seal_datagram(&client, index, 5, b"/id t1 p", &mut sealed).unwrap();
    let mut tampered = sealed.clone();
    for (i, b) in data.iter().enumerate() {
        let at = noise::UDP_DATA_HEADER + i % (tampered.len() - noise::UDP_DATA_HEADER);
        tampered[at] ^= b;
    }
    let mut refusal = Vec::new();
    let changed = tampered != sealed;
    if let Some(Datagram::Data { receiver, nonce, sealed: body }) = noise::parse_datagram(&tampered) {
        let opened = sessions.open((receiver, nonce, body), from, &mut plain, &mut refusal, &mut stats);
        assert_eq!(opened.is_some(), !changed, "only the untouched message opens");
    }
    if changed {
        // The real one still opens once, and its replay does not.
        let Some(Datagram::Data { receiver, nonce, sealed: body }) = noise::parse_datagram(&sealed) else { unreachable!() };
        assert!(sessions.open((receiver, nonce, body), from, &mut plain, &mut refusal, &mut stats).is_some());
        assert_eq!(plain, b"/id t1 p");
        assert!(sessions.open((receiver, nonce, body), from, &mut plain, &mut refusal, &mut stats).is_none());
    }

    // The input as a TCP stream, in uneven pieces: a handshake that fails
    // or waits, never panics, never opens.
    let mut link = SecureLink::default();
    let mut stream = data;
    loop {
        match link.handshake(&mut stream, &mut gate, from) {
            Step::Open(_) => panic!("a session without the device's key"),
            Step::Waiting | Step::Refused | Step::Broken => break,
        }
    }

    // The replay window against a set, on nonces taken from the input.
    let mut window = ReplayWindow::default();
    let mut seen = BTreeSet::new();
    let mut top = None;
    for chunk in data.chunks(2) {
        let nonce = u16::from_le_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]) as u64;
        let fresh = match top {
            None => true,
            Some(top) if nonce > top => true,
            Some(top) => top - nonce < ReplayWindow::SIZE && !seen.contains(&nonce),
        };
        assert_eq!(window.is_fresh(nonce), fresh);
        if fresh {
            window.mark(nonce);
            seen.insert(nonce);
            top = Some(top.map_or(nonce, |t: u64| t.max(nonce)));
        }
    }
});
