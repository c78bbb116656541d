//! Issue 26, 2: handshakes that fail cannot lock a real device out, and a
//! flood of them costs the server no Diffie-Hellman work once it is under
//! load (a cookie round trip comes first, as in WireGuard). These run on
//! loopback, where a UDP first message without a cookie is as unproven as
//! a forged one from anywhere; tests/attacks.rs forges sources for real.

mod common;

use common::Daemon;
use diary::client::secure::{Credentials, SecureStream, UdpSession};
use diary::client::{ClientError, Options, Pin};
use diary::secure::keys::{KeyPair, PublicKey};
use diary::secure::noise::{self, Datagram, Refusal};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

/// diaryd taking the keys of one device, `laptop`.
fn keyed(dir: &Path, extra: &[&str]) -> (Daemon, Credentials) {
    let device = KeyPair::generate();
    let allow = dir.join("allow");
    std::fs::write(&allow, format!("{} laptop all\n", device.public)).unwrap();
    let args = [
        &["--fsync", "never", "--allow", allow.to_str().unwrap()][..],
        extra,
    ]
    .concat();
    let server = Daemon::start(&dir.join("d.log"), &args);
    let creds = Credentials {
        own: device,
        server: server.key.parse().unwrap(),
        pin: Pin::Given,
    };
    (server, creds)
}

/// A first message from a key nobody allowed, for `server`: well formed,
/// so the server does both Diffie-Hellman operations before refusing it.
fn stranger_first_message(server: &PublicKey) -> Vec<u8> {
    let mut handshake = noise::initiator(&KeyPair::generate(), server);
    let mut first = [0u8; 256];
    let n = handshake
        .write_message(&noise::stamp_now(), &mut first)
        .unwrap();
    first[..n].to_vec()
}

fn udp_from(ip: &str, to: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind(format!("{ip}:0")).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket.connect(to).unwrap();
    socket
}

fn answer(socket: &UdpSocket, datagram: &[u8]) -> Vec<u8> {
    socket.send(datagram).unwrap();
    let mut buf = vec![0u8; 2048];
    let n = socket.recv(&mut buf).expect("an answer");
    buf.truncate(n);
    buf
}

fn udp_session(creds: &Credentials, to: SocketAddr) -> Result<UdpSession, ClientError> {
    let socket = udp_from("127.0.0.1", to);
    let deadline = Instant::now() + Duration::from_secs(3);
    UdpSession::handshake(&socket, creds, &Options::default(), to, deadline)
}

fn tcp_session(creds: &Credentials, to: SocketAddr) -> Result<SecureStream, ClientError> {
    let stream = TcpStream::connect(to).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    SecureStream::connect(stream, creds, &Options::default(), deadline)
}

/// Failed first messages over UDP from the device's own address (a
/// forger's, as far as the server can tell) lock it out of nothing; failed
/// handshakes over TCP (whose peers have proven their address) lock that
/// address out of TCP only, with a refusal that says so.
#[test]
fn failed_handshakes_lock_no_device_out_and_udp_never_gates_tcp() {
    let dir = tempfile::tempdir().unwrap();
    // Every first message gets its Diffie-Hellman work done (no cookies
    // asked for), as on a quiet server: the most a forger gets.
    let no_cookies = [
        "--handshakes-before-cookies",
        "1000",
        "--handshake-work-ms",
        "10000",
    ];
    let (server, creds) = keyed(dir.path(), &no_cookies);
    let to = server.addr;
    let forger = udp_from("127.0.0.1", to);
    for i in 0..100u32 {
        let mut datagram = Vec::new();
        let garbage = [i as u8; 104];
        let first = if i % 2 == 0 {
            stranger_first_message(&creds.server)
        } else {
            garbage.to_vec()
        };
        noise::push_init(&mut datagram, i + 1, None, &first);
        forger.send(&datagram).unwrap();
    }
    // Each was refused after the Diffie-Hellman work, or (once that work
    // passed the server's budget) answered with a cookie instead.
    common::wait_for("the 100 answered", Duration::from_secs(5), || {
        let stats = common::stats(to);
        common::figure(&stats, "auth_failures") + common::figure(&stats, "handshake_cookie_replies")
            == 100
    });
    let stats = common::stats(to);
    assert!(common::figure(&stats, "auth_failures") >= 10, "{stats:?}");
    udp_session(&creds, to)
        .expect("UDP: 100 failures from its address lock the device out of nothing");
    tcp_session(&creds, to).expect("TCP: UDP failures do not gate TCP");

    // Over TCP an address is proven, so its failures count against it.
    let mut refusals = Vec::new();
    for _ in 0..25 {
        let mut stream = TcpStream::connect(to).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut frame = Vec::new();
        noise::push_frame(
            &mut frame,
            noise::INIT,
            &stranger_first_message(&creds.server),
        );
        std::io::Write::write_all(&mut stream, &frame).unwrap();
        let mut reply = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut reply);
        let (kind, why) = (reply.first().copied(), reply.get(3).copied());
        assert_eq!(kind, Some(noise::REFUSED), "{reply:?}");
        refusals.push(why.and_then(Refusal::from_code));
    }
    assert_eq!(refusals[0], Some(Refusal::UnknownDevice));
    assert_eq!(refusals[24], Some(Refusal::TooMany));
    let Err(ClientError::Auth(message)) = tcp_session(&creds, to) else {
        panic!("20 TCP failures from an address limit TCP from it");
    };
    assert!(message.contains("too many failures"), "{message}");
    assert!(!message.contains("running"), "{message}");
    udp_session(&creds, to).expect("TCP failures do not gate UDP");
    drop(server);
}

/// Under load (here: always) a first message without a cookie gets a
/// cookie and nothing else: no Diffie-Hellman work, no failure counted,
/// and an answer smaller than the request. Brought back from the address
/// it was given to, it is taken; from another it is not. The real client
/// makes the round trip by itself.
#[test]
fn under_load_a_first_message_must_bring_back_a_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let (server, creds) = keyed(dir.path(), &["--handshakes-before-cookies", "0"]);
    let to = server.addr;
    let first = stranger_first_message(&creds.server);
    let mut request = Vec::new();
    noise::push_init(&mut request, 7, None, &first);
    let here = udp_from("127.0.0.1", to);
    let reply = answer(&here, &request);
    assert!(reply.len() < request.len(), "{} bytes", reply.len());
    let Some(Datagram::Cookie {
        receiver: 7,
        cookie,
    }) = noise::parse_datagram(&reply)
    else {
        panic!("a cookie, not {reply:?}");
    };
    let cookie: [u8; noise::COOKIE_LEN] = cookie.try_into().unwrap();
    let stats = common::stats(to);
    assert_eq!(common::figure(&stats, "auth_failures"), 0, "no work done");
    assert_eq!(common::figure(&stats, "handshake_cookie_replies"), 1);

    // Another address with this one's cookie is asked again.
    let elsewhere = udp_from("127.0.0.2", to);
    let mut with_cookie = Vec::new();
    noise::push_init(&mut with_cookie, 8, Some(&cookie), &first);
    let reply = answer(&elsewhere, &with_cookie);
    assert!(matches!(
        noise::parse_datagram(&reply),
        Some(Datagram::Cookie { receiver: 8, .. })
    ));
    // Its own address with it gets the handshake done: refused, as the
    // key is a stranger's.
    let reply = answer(&here, &with_cookie);
    assert_eq!(
        noise::parse_datagram(&reply),
        Some(Datagram::Refused {
            receiver: 8,
            why: Some(Refusal::UnknownDevice)
        })
    );
    // A proven source's failures count: past 20 it is refused as such.
    let mut last = None;
    for i in 0..25 {
        let mut again = Vec::new();
        noise::push_init(
            &mut again,
            100 + i,
            Some(&cookie),
            &stranger_first_message(&creds.server),
        );
        if let Some(Datagram::Refused { why, .. }) = noise::parse_datagram(&answer(&here, &again)) {
            last = why;
        }
    }
    assert_eq!(last, Some(Refusal::TooMany));

    // The device, from another address, gets through by itself.
    let socket = udp_from("127.0.0.3", to);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut session = UdpSession::handshake(&socket, &creds, &Options::default(), to, deadline)
        .expect("the client brings its cookie back");
    socket
        .send(&session.seal(b"/id t1 after a cookie\n"))
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let n = socket.recv(&mut buf).unwrap();
    let diary::client::secure::FromServer::Plain(plain) = session.open(&buf[..n]) else {
        panic!("a sealed reply");
    };
    assert!(
        String::from_utf8_lossy(&plain).contains("\nok 1 "),
        "{}",
        String::from_utf8_lossy(&plain)
    );
    let stats = common::stats(to);
    assert_eq!(common::figure(&stats, "sessions laptop"), 1, "{stats:?}");
    drop(server);
}

/// A replayed first message (after a restart the server has no memory of
/// its stamp) makes no session the device is counted or logged for: only
/// a message that opens confirms one.
#[test]
fn a_replayed_first_message_is_no_session_of_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let (server, creds) = keyed(dir.path(), &[]);
    let to = server.addr;
    // Two the device once sent, captured and played to the server.
    let captured = || {
        let mut handshake = noise::initiator(&creds.own, &creds.server);
        let mut first = [0u8; 256];
        let n = handshake
            .write_message(&noise::stamp_now(), &mut first)
            .unwrap();
        first[..n].to_vec()
    };
    let (for_udp, for_tcp) = (captured(), captured());
    let mut request = Vec::new();
    noise::push_init(&mut request, 5, None, &for_udp);
    let reply = answer(&udp_from("127.0.0.1", to), &request);
    assert!(matches!(
        noise::parse_datagram(&reply),
        Some(Datagram::Reply { receiver: 5, .. })
    ));
    let mut frame = Vec::new();
    noise::push_frame(&mut frame, noise::INIT, &for_tcp);
    let mut stream = TcpStream::connect(to).unwrap();
    std::io::Write::write_all(&mut stream, &frame).unwrap();
    let mut header = [0u8; 1];
    std::io::Read::read_exact(&mut stream, &mut header).unwrap();
    assert_eq!(
        header[0],
        noise::REPLY,
        "the replay is answered, as IK must"
    );
    let stats = common::stats(to);
    assert!(
        !stats.iter().any(|(name, _)| name.starts_with("sessions")),
        "{stats:?}"
    );
    udp_session(&creds, to).unwrap();
    let mut tcp = tcp_session(&creds, to).unwrap();
    std::io::Write::write_all(&mut tcp, b"/stats\n").unwrap();
    let mut text = String::new();
    let mut reader = std::io::BufReader::new(&mut tcp);
    while !text.ends_with("end\n") {
        std::io::BufRead::read_line(&mut reader, &mut text).unwrap();
    }
    assert!(text.contains("sessions laptop 1\n"), "{text}");
    drop(stream);
    let log = server.terminate();
    assert_eq!(log.matches("laptop: TCP session from").count(), 1, "{log}");
    assert!(!log.contains("laptop: UDP session from"), "{log}");
}

/// Issue 26, 9: a client that gets no session says what happened, not
/// "is diaryd running?" for everything: a busy server's own words over an
/// encrypted connection; nothing listening, when nothing does.
#[test]
fn refusals_say_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let (server, creds) = keyed(dir.path(), &["--max-connections", "1"]);
    let to = server.addr;
    // The one slot, taken (answered, so the server has it).
    let mut holder = common::Tcp::connect(to);
    holder.send("/stats");
    assert!(!holder.until_end().is_empty());
    let Err(ClientError::Auth(message)) = tcp_session(&creds, to) else {
        panic!("a busy server's refusal is final, in its words");
    };
    assert!(
        message.contains("turned the connection away: err busy"),
        "{message}"
    );
    drop(server);

    // Nothing at that port now.
    let options = Options {
        server: to.to_string(),
        timeout: Duration::from_millis(800),
        proto: diary::client::Proto::Tcp,
        security: diary::client::Security {
            mode: diary::client::SecureMode::Plain,
            ..Options::default().security
        },
        ..Options::default()
    };
    for proto in [diary::client::Proto::Tcp, diary::client::Proto::Udp] {
        let options = Options {
            proto,
            ..options.clone()
        };
        let mut client = diary::client::Client::new(options).unwrap();
        let message = client.write("hello").unwrap_err().to_string();
        assert!(message.starts_with("nothing listens at"), "{message}");
    }
}
