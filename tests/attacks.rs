//! Attacks from another machine, each reproduced as that machine would
//! send it: `diaryd` in one network namespace, the attacker in another,
//! joined by a veth pair, with a raw sender that forges any source
//! address. Those need root (CI runs as root and fails them rather than
//! skip them); the ones about files run anywhere. docs/SECURITY.md lists
//! what each one shows.

mod common;

use common::netns::{self, Link};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `diaryd` listening on every address of the server's namespace, IPv4
/// and IPv6 on one dual-stack socket, with keys required (an allow file
/// with no device in it): plaintext is for this machine only.
fn keyed_server(link: &Link, dir: &Path) -> (common::Daemon, PathBuf) {
    let allow = dir.join("allow");
    std::fs::write(&allow, "# no devices\n").unwrap();
    let file = dir.join("d.log");
    let args = ["--listen", "[::]:0", "--fsync", "never", "--allow"];
    let allow = allow.to_str().unwrap();
    (
        link.diaryd(&file, &[&args[..], &[allow]].concat()).unwrap(),
        file,
    )
}

/// `diaryd` in the server's namespace with `args`, allowing one device
/// named `name` (all scopes); that device's credentials for it.
fn device_server(
    link: &Link,
    dir: &Path,
    name: &str,
    args: &[&str],
) -> (common::Daemon, diary::client::secure::Credentials) {
    let device = diary::secure::keys::KeyPair::generate();
    let allow = dir.join("allow");
    std::fs::write(&allow, format!("{} {name} all\n", device.public)).unwrap();
    let allow = ["--fsync", "never", "--allow", allow.to_str().unwrap()];
    let server = link
        .diaryd(&dir.join("d.log"), &[args, &allow[..]].concat())
        .unwrap();
    let creds = diary::client::secure::Credentials {
        own: device,
        server: server.key.parse().unwrap(),
        pin: diary::client::Pin::Given,
    };
    (server, creds)
}

/// The server's `/stats`, asked from its own machine.
fn stats_inside(link: &Link, port: u16) -> Vec<(String, u64)> {
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    link.in_server_ns(move || common::stats(local))
}

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// Issue 26, 1: a datagram from a forged loopback source, v4-mapped
/// (`::ffff:127.0.0.1`, which Linux delivers from any interface) or plain
/// IPv4 (delivered where `route_localnet` is on), is plaintext from
/// another machine: refused, nothing stored. The same over TCP cannot
/// even connect. A real client on the server's machine is still served.
#[test]
fn a_forged_loopback_source_is_not_trusted() {
    let Some(link) = Link::new() else {
        return;
    };
    // The plain IPv4 form reaches the socket only with these on.
    for key in ["route_localnet", "accept_local"] {
        for dev in ["all", &link.server_dev] {
            let key = format!("net.ipv4.conf.{dev}.{key}");
            netns::sysctl(&link.server_ns, &key, "1");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, file) = keyed_server(&link, dir.path());
    let port = server.addr.port();
    let to6 = at(&link.server_ip6, port);
    let to4 = at(&link.server_ip, port);
    let forged = [
        netns::udp_packet(
            at("::ffff:127.0.0.1", 40_001),
            to6,
            b"/write forged v4-mapped\n",
        ),
        netns::udp_packet(at("127.0.0.1", 40_002), to4, b"/write forged plain v4\n"),
        // Both ends loopback, yet it came in on the link.
        netns::udp_packet(
            at("127.0.0.1", 40_005),
            at("127.0.0.1", port),
            b"/write forged to loopback\n",
        ),
        // The same, honest about its source: the control.
        netns::udp_packet(
            at(&link.client_ip6, 40_003),
            to6,
            b"/write honest outsider\n",
        ),
    ];
    for packet in forged {
        link.send_raw(packet);
    }
    // Every one reached the socket and was refused as plaintext.
    common::wait_for("four refusals", Duration::from_secs(5), || {
        common::figure(&stats_inside(&link, port), "plaintext_refused") >= 4
    });
    // TCP from a forged loopback source: the SYN-ACK goes to this
    // machine's loopback, so a blind guess of the rest stores nothing.
    let from = at("::ffff:127.0.0.1", 40_004);
    link.send_raw(netns::tcp_packet(from, to6, 0x02, (1000, 0), b""));
    link.send_raw(netns::tcp_packet(from, to6, 0x10, (1001, 1), b""));
    link.send_raw(netns::tcp_packet(
        from,
        to6,
        0x18,
        (1001, 1),
        b"/write forged over tcp\n",
    ));
    // On the server's own machine plaintext is served, on both forms.
    link.in_server_ns(move || {
        for local in [at("127.0.0.1", port), at("::1", port)] {
            let mut c = common::Tcp::connect(local);
            c.send("/write from this machine");
            assert!(c.line().starts_with("ok "));
            let reply = common::udp_raw(local, b"/write from this machine over udp\n");
            assert!(
                reply.starts_with(b"ok "),
                "{:?}",
                String::from_utf8_lossy(&reply)
            );
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let texts: Vec<String> = common::file_entries(&file)
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert_eq!(
        texts,
        [
            "from this machine",
            "from this machine over udp",
            "from this machine",
            "from this machine over udp",
        ]
    );
    drop(server);
}

/// `diaryd` started by `sh` with umask `mask`, on `file`, with `extra` args.
fn start_with_umask(mask: &str, file: &Path, extra: &[&str]) -> Result<common::Daemon, String> {
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(format!("umask {mask} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_diaryd"))
        .args(["--listen", "127.0.0.1:0", "--file"])
        .arg(file)
        .args(extra);
    common::Daemon::spawn(command)
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Issue 26, 7: the diary and every file diaryd makes beside it are
/// private at any umask; one others may read is named at start.
#[test]
fn the_diary_and_its_side_files_are_private_at_any_umask() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = start_with_umask("000", &file, &[]).unwrap();
    let mut c = common::Tcp::connect(daemon.addr);
    assert_eq!(c.write("private"), 1);
    drop(c);
    daemon.terminate();
    let index = dir.path().join("diary.log.index");
    let key = dir.path().join("diary.log.key");
    for path in [&file, &index, &key] {
        assert_eq!(mode_of(path), 0o600, "{}", path.display());
    }
    // A torn last line is kept aside in a private file too; a diary that
    // others may read is named, with the command that makes it private.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"2\t2026-01-01T00:00"))
        .unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let daemon = start_with_umask("000", &file, &[]).unwrap();
    let log = daemon.terminate();
    assert_eq!(mode_of(&dir.path().join("diary.log.torn")), 0o600);
    assert!(
        log.contains("may be read by users other than you (mode 644)") && log.contains("chmod 600"),
        "{log}"
    );
}

/// Issue 26, 7: an allow file that others may write is refused at start,
/// and so is one in a directory anyone may write.
#[test]
fn an_allow_file_others_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let allow = dir.path().join("allow");
    std::fs::write(&allow, "# no devices yet\n").unwrap();
    std::fs::set_permissions(&allow, std::fs::Permissions::from_mode(0o664)).unwrap();
    let allow_arg = ["--allow", allow.to_str().unwrap()];
    let refused = start_with_umask("022", &file, &allow_arg).err().unwrap();
    assert!(
        refused.contains("may be written by others (mode 664)") && refused.contains("chmod go-w"),
        "{refused}"
    );
    std::fs::set_permissions(&allow, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = start_with_umask("022", &file, &allow_arg).err().unwrap();
    assert!(refused.contains("which anyone may write"), "{refused}");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    start_with_umask("022", &file, &allow_arg).expect("starts with a private allow file");
}

/// Gives the client's end of the link a second address, `.3` of its
/// subnet, and returns it.
fn third_address(link: &Link) -> String {
    let (subnet, _) = link.client_ip.rsplit_once('.').unwrap();
    let third = format!("{subnet}.3");
    let with_prefix = format!("{third}/24");
    let dev = &link.client_dev;
    netns::ip(&[
        "-n",
        &link.client_ns,
        "addr",
        "add",
        &with_prefix,
        "dev",
        dev,
    ])
    .unwrap();
    third
}

/// Opens TCP connections to `to` from `from` (an address of the client's
/// namespace), holding them; returns, for each, the line it was sent at
/// once ("" when it was taken in and left waiting for a request).
fn connections_from(
    link: &Link,
    from: &str,
    to: SocketAddr,
    count: usize,
) -> (Vec<std::net::TcpStream>, Vec<String>) {
    let from: SocketAddr = format!("{from}:0").parse().unwrap();
    link.in_client_ns(move || {
        let streams: Vec<std::net::TcpStream> = (0..count)
            .map(|_| {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                        .unwrap();
                socket.bind(&from.into()).unwrap();
                socket.connect(&to.into()).unwrap();
                socket.into()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let firsts = streams
            .iter()
            .map(|s| {
                use std::io::Read;
                s.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 512];
                match (&*s).read(&mut buf) {
                    Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
                    Err(_) => String::new(),
                }
            })
            .collect();
        (streams, firsts)
    })
}

/// Issue 26, 6: idle connections from one address take at most its
/// share of the slots, and addresses outside this machine together leave
/// a reserve for its own clients; each refused one hears `err busy`.
#[test]
fn one_address_cannot_take_every_connection_slot() {
    let Some(link) = Link::new() else {
        return;
    };
    let second = third_address(&link);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.log");
    let server = link
        .diaryd(
            &file,
            &[
                "--listen",
                "0.0.0.0:0",
                "--insecure-open",
                "--max-connections",
                "40",
                "--max-per-source",
                "15",
            ],
        )
        .unwrap();
    let to = SocketAddr::new(link.server_ip.parse().unwrap(), server.addr.port());
    let (_held, firsts) = connections_from(&link, &link.client_ip, to, 18);
    assert!(firsts[..15].iter().all(String::is_empty), "{firsts:?}");
    for refused in &firsts[15..] {
        assert!(
            refused.starts_with("err busy this address has its maximum of 15"),
            "{refused:?}"
        );
    }
    // Another address gets the rest of the 20 slots outside the reserve.
    let (_held_too, firsts) = connections_from(&link, &second, to, 7);
    assert!(firsts[..5].iter().all(String::is_empty), "{firsts:?}");
    for refused in &firsts[5..] {
        assert!(
            refused.starts_with("err busy the server has its maximum of 40"),
            "{refused:?}"
        );
    }
    // This machine's own clients still get in.
    let port = to.port();
    link.in_server_ns(move || {
        let local = SocketAddr::from(([127, 0, 0, 1], port));
        let held: Vec<common::Tcp> = (0..10).map(|_| common::Tcp::connect(local)).collect();
        let mut c = common::Tcp::connect(local);
        c.send("/write still reachable");
        assert!(c.line().starts_with("ok "));
        drop(held);
    });
}

/// Issue 26, 5: an allowed device that sends its sealed requests from
/// another address (forged, or a new one it roams to) gets replies there
/// within 3x of each request until that address proves itself with a
/// cookie; sealed replies never follow the newest source at full size.
#[test]
fn sealed_replies_to_an_unproven_address_keep_the_3x_rule() {
    use diary::client::secure::{FromServer, UdpSession};
    let Some(link) = Link::new() else {
        return;
    };
    let second = third_address(&link);
    let dir = tempfile::tempdir().unwrap();
    let (server, creds) = device_server(&link, dir.path(), "sensor", &["--listen", "0.0.0.0:0"]);
    let port = server.addr.port();
    link.in_server_ns(move || {
        let mut c = common::Tcp::connect(SocketAddr::from(([127, 0, 0, 1], port)));
        for i in 0..60 {
            c.write(&format!(
                "entry {i} with some words to make the history long"
            ));
        }
    });
    let to = SocketAddr::new(link.server_ip.parse().unwrap(), port);
    let (first, first_len, moved, moved_len) = {
        let (ip, second) = (link.client_ip.clone(), second.clone());
        link.in_client_ns(move || {
            let home = std::net::UdpSocket::bind(format!("{ip}:0")).unwrap();
            let away = std::net::UdpSocket::bind(format!("{second}:0")).unwrap();
            for s in [&home, &away] {
                s.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                s.connect(to).unwrap();
            }
            let opts = diary::client::Options::default();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let mut session = UdpSession::handshake(&home, &creds, &opts, to, deadline).unwrap();
            let mut exchange = |socket: &std::net::UdpSocket, tag: &str| {
                // Retried with a new nonce, as the client does, if lost.
                let mut buf = vec![0u8; 65_536];
                let (request, n) = (0..5)
                    .find_map(|_| {
                        let request =
                            session.seal(format!("/id {tag} max=60000 /past 60").as_bytes());
                        socket.send(&request).unwrap();
                        socket.recv(&mut buf).ok().map(|n| (request, n))
                    })
                    .expect("a reply");
                let FromServer::Plain(plain) = session.open(&buf[..n]) else {
                    panic!("no sealed reply");
                };
                (
                    String::from_utf8(plain).unwrap(),
                    n as f64 / request.len() as f64,
                )
            };
            let (first, first_ratio) = exchange(&home, "home");
            let (moved, moved_ratio) = exchange(&away, "away");
            (first, first_ratio, moved, moved_ratio)
        })
    };
    // From the handshake's address: the whole history, far over 3x.
    assert!(first.lines().count() > 60, "{first}");
    assert!(first_len > 3.0, "{first_len}");
    // From another address: at most 3x, marked truncated (ask over TCP).
    assert!(moved_len <= 3.0, "{moved_len}x: {moved}");
    assert_eq!(moved.trim_end(), "id away truncated", "{moved}");
    drop(server);
}

/// Issue 26, 2: forged first messages, 50 in the device's own name (its
/// address as source) and one each from 5 000 other addresses, lock
/// nobody out: the device then makes sessions over UDP and TCP from that
/// address. On the old limiter the first 20 locked its address out of
/// both for a minute, and the 5 000 filled the table whose shared
/// overflow count locked out everyone else.
#[test]
fn forged_failed_handshakes_lock_no_device_out() {
    use diary::client::secure::{SecureStream, UdpSession};
    use diary::secure::noise;
    let Some(link) = Link::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (server, creds) = device_server(&link, dir.path(), "laptop", &["--listen", "[::]:0"]);
    let server_key = creds.server;
    let port = server.addr.port();
    let to = at(&link.server_ip6, port);
    // From-spec first messages of keys nobody allowed: each costs the
    // server its Diffie-Hellman work unless it asks for a cookie first.
    let strangers: Vec<Vec<u8>> = (0..64)
        .map(|_| {
            let mut hs = noise::initiator(&diary::secure::keys::KeyPair::generate(), &server_key);
            let mut first = [0u8; 256];
            let n = hs.write_message(&noise::stamp_now(), &mut first).unwrap();
            first[..n].to_vec()
        })
        .collect();
    let forged = |i: usize, from: SocketAddr| {
        let mut datagram = Vec::new();
        noise::push_init(&mut datagram, i as u32 + 1, None, &strangers[i % 64]);
        netns::udp_packet(from, to, &datagram)
    };
    let mut packets: Vec<Vec<u8>> = (0..50)
        .map(|i| forged(i, at(&link.client_ip6, 50_000 + i as u16)))
        .collect();
    packets.extend((0..5_000).map(|i| {
        let from = format!("fd99:{:x}:{:x}::7", i / 256, i % 256);
        forged(i, at(&from, 40_000))
    }));
    for chunk in packets.chunks(250) {
        link.send_raw_all(chunk.to_vec());
        std::thread::sleep(Duration::from_millis(10));
    }
    // More than the server can do Diffie-Hellman work for: it asked for
    // cookies (and the socket's buffer dropped the rest, as a flood's).
    let stats = stats_inside(&link, port);
    assert!(
        common::figure(&stats, "handshake_cookie_replies") > 0,
        "{stats:?}"
    );

    let client_ip6 = link.client_ip6.clone();
    let (udp, tcp) = link.in_client_ns(move || {
        let opts = diary::client::Options::default();
        let socket = std::net::UdpSocket::bind(format!("[{client_ip6}]:0")).unwrap();
        socket.connect(to).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let udp = UdpSession::handshake(&socket, &creds, &opts, to, deadline).map(|_| ());
        let stream = std::net::TcpStream::connect(to).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let tcp = SecureStream::connect(stream, &creds, &opts, deadline).map(|_| ());
        (
            udp.map_err(|e| e.to_string()),
            tcp.map_err(|e| e.to_string()),
        )
    });
    udp.expect("UDP: the device gets a session from its own address");
    tcp.expect("TCP: the device gets a session from its own address");
    drop(server);
}

/// Issue 26, 6: from where keys are required, a connection holds a slot
/// only as long as it takes to make a session (`--login-grace`), not for
/// the idle timeout: idle connections from outside give their slots back,
/// while a device's session stays.
#[test]
fn connections_without_a_session_give_their_slot_back() {
    use diary::client::secure::SecureStream;
    use std::io::{BufRead, Read, Write};
    let Some(link) = Link::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--listen",
        "0.0.0.0:0",
        "--login-grace",
        "1",
        "--idle-timeout",
        "3",
    ];
    let (server, creds) = device_server(&link, dir.path(), "laptop", &args);
    let to = SocketAddr::new(link.server_ip.parse().unwrap(), server.addr.port());
    // A first message of the device's, as if captured and replayed.
    let replayed = {
        let mut hs = diary::secure::noise::initiator(&creds.own, &creds.server);
        let mut first = [0u8; 256];
        let n = hs
            .write_message(&diary::secure::noise::stamp_now(), &mut first)
            .unwrap();
        let mut frame = Vec::new();
        diary::secure::noise::push_frame(&mut frame, diary::secure::noise::INIT, &first[..n]);
        frame
    };
    let (idle, session, replay_closed) = link.in_client_ns(move || {
        let started = std::time::Instant::now();
        let idle: Vec<std::net::TcpStream> = (0..5)
            .map(|_| std::net::TcpStream::connect(to).unwrap())
            .collect();
        let mut replay = std::net::TcpStream::connect(to).unwrap();
        replay.write_all(&replayed).unwrap();
        let stream = std::net::TcpStream::connect(to).unwrap();
        let deadline = started + Duration::from_secs(5);
        let mut session =
            SecureStream::connect(stream, &creds, &diary::client::Options::default(), deadline)
                .unwrap();
        writeln!(session, "/write in session").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&mut session)
            .read_line(&mut line)
            .unwrap();
        let mut told = Vec::new();
        for mut c in idle {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut text = String::new();
            let _ = c.read_to_string(&mut text);
            told.push((text, started.elapsed()));
        }
        // The replay got its answer (IK must), and held its connection
        // no longer than the idle time-out: no message of it opened.
        replay
            .set_read_timeout(Some(Duration::from_secs(8)))
            .unwrap();
        let mut answered = Vec::new();
        let _ = replay.read_to_end(&mut answered);
        let replay_closed = (answered.first().copied(), started.elapsed());
        drop(session);
        (told, line, replay_closed)
    });
    let log = server.terminate();
    assert_eq!(replay_closed.0, Some(diary::secure::noise::REPLY));
    assert!(
        replay_closed.1 < Duration::from_secs(6),
        "{replay_closed:?}: {log}"
    );
    for (text, after) in &idle {
        assert_eq!(
            text, "err idle no session made within 1 s; closing\n",
            "after {after:?}"
        );
        assert!(*after < Duration::from_secs(4), "{after:?}");
    }
    assert!(session.starts_with("ok "), "{session}");
    assert!(
        log.contains("laptop: TCP handshake from")
            && log.contains("refused: no message followed it"),
        "{log}"
    );
    assert_eq!(log.matches("laptop: TCP session from").count(), 1, "{log}");
}
