//! Hostile and unlucky conditions: bad bytes, huge lines, clients that never
//! read or never speak, SIGTERM mid-burst, a full disk, and UDP sources that
//! have not proven their address. Throughout, fresh clients are served and
//! the diary holds exactly the lines that were acknowledged.

mod common;

use common::*;
use diary::event_loop::Limits;
use diary::store::FsyncPolicy;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a fresh client may wait for its ack while the server is under
/// attack. A served client takes milliseconds; this is generous so that a
/// busy 2-core CI machine cannot flake it, while a blocked loop still fails.
const PROMPT: Duration = Duration::from_secs(5);

/// A fresh client on each transport writes one line and is answered within
/// [`PROMPT`]; returns the texts written, which the diary must then hold.
fn fresh_clients_served(addr: SocketAddr, while_: &str) -> Vec<String> {
    let started = Instant::now();
    let udp_text = format!("fresh udp client {while_}");
    let reply = udp_raw(addr, udp_text.as_bytes());
    ack_id(std::str::from_utf8(&reply).unwrap());
    let tcp_text = format!("fresh tcp client {while_}");
    Tcp::connect(addr).write(&tcp_text);
    let took = started.elapsed();
    assert!(took < PROMPT, "fresh clients waited {took:?} {while_}");
    vec![udp_text, tcp_text]
}

fn stored_texts(path: &Path) -> Vec<String> {
    file_entries(path).into_iter().map(|(_, t)| t).collect()
}

fn tcp_clients(addr: SocketAddr) -> u64 {
    // The connection asking is one of them.
    figure(&stats(addr), "tcp_clients") - 1
}

#[test]
fn hostile_input_gets_errors_and_only_good_lines_are_stored() {
    let limits = Limits {
        max_entry: 4096,
        ..Limits::default()
    };
    let server = TestServer::start_with(limits, FsyncPolicy::Always);
    let mut good = fresh_clients_served(server.addr, "at start");

    // Bad bytes of every kind, on both transports: one error each.
    let noise: Vec<u8> = (0..=255u8).rev().collect();
    for bad in [&b"\xff\xfe"[..], b"nul\0inside", b"bell\x07", &noise] {
        let reply = udp_raw(server.addr, bad);
        assert!(
            reply.starts_with(b"err bad-"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
    let mut c = Tcp::connect(server.addr);
    c.writer
        .write_all(b"\xff\xfe\nnul\0inside\nbell\x07\n")
        .unwrap();
    // The noise holds one newline, so it is two lines.
    c.writer.write_all(&noise).unwrap();
    c.writer.write_all(b"\n").unwrap();
    for _ in 0..5 {
        let reply = c.line();
        assert!(reply.starts_with("err bad-"), "{reply:?}");
    }

    // A datagram over the entry limit.
    let reply = udp_raw(server.addr, &[b'u'; 10_000]);
    assert!(reply.starts_with(b"err too-long"));

    // A 4 MiB line: refused once it passes the limit, long before its end...
    let mut long = Tcp::connect(server.addr);
    let mut writer = long.writer.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        writer.write_all(&vec![b'x'; 4 << 20]).unwrap();
        writer
    });
    let reply = long.line();
    assert!(reply.starts_with("err too-long"), "{reply:?}");
    good.extend(fresh_clients_served(server.addr, "during a 4 MiB line"));
    let mut writer = sender.join().unwrap();
    // ...and after its newline the connection is served as usual.
    writer
        .write_all(b" still the long line\nafter the long line\n")
        .unwrap();
    ack_id(&long.line());
    good.push("after the long line".to_string());

    // A client that vanishes mid-line.
    let mut vanishing = TcpStream::connect(server.addr).unwrap();
    vanishing.write_all(b"never finished").unwrap();
    drop(vanishing);
    good.extend(fresh_clients_served(server.addr, "after a client vanished"));

    assert_eq!(stored_texts(&server.path), good);
}

#[test]
fn a_client_flooding_p_that_never_reads_is_bounded_then_closed() {
    let limits = Limits {
        max_output: 64 * 1024,
        send_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let server = TestServer::start_with(limits, FsyncPolicy::Never);
    let mut good = Vec::new();
    let mut c = Tcp::connect(server.addr);
    for i in 0..500 {
        let text = format!("entry {i} {}", "padding ".repeat(8));
        c.write(&text);
        good.push(text);
    }
    drop(c);

    // `p` as fast as the socket takes it, never reading a reply. Once its
    // queue is full the server stops reading, so the socket stops taking.
    let flooder = TcpStream::connect(server.addr).unwrap();
    flooder.set_nonblocking(true).unwrap();
    let requests = b"p\n".repeat(4096);
    let give_up = Instant::now() + Duration::from_secs(10);
    let mut stuck_since: Option<Instant> = None;
    let mut sent = 0usize;
    while stuck_since.is_none_or(|t| t.elapsed() < Duration::from_millis(300)) {
        match (&flooder).write(&requests) {
            Ok(n) => {
                sent += n;
                stuck_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                stuck_since.get_or_insert_with(Instant::now);
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("flood write failed: {e}"),
        }
        assert!(
            Instant::now() < give_up,
            "the server kept reading a client that never reads ({sent} bytes taken)"
        );
    }
    good.extend(fresh_clients_served(server.addr, "while a client floods p"));

    // Its replies go unread past the send timeout: it is closed.
    wait_for("the flooder to be closed", Duration::from_secs(15), || {
        tcp_clients(server.addr) == 0
    });
    flooder.set_nonblocking(false).unwrap();
    flooder
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = vec![0; 1 << 20];
    loop {
        match (&flooder).read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the flooder's connection was not closed: {e}"),
        }
    }
    good.extend(fresh_clients_served(server.addr, "after the flooder"));
    assert_eq!(stored_texts(&server.path), good);
}

#[test]
fn two_thousand_idle_connections_are_shed_while_fresh_clients_are_served() {
    const IDLE: usize = 2000;
    // Both ends of every connection live in this process.
    let want = 2 * IDLE as u64 + 1024;
    match diary::server::open_files::raise_to_hard_limit() {
        Ok(allowed) if allowed >= want => {}
        Ok(allowed) => {
            return skip(&format!(
                "cannot open {IDLE} connections here: only {allowed} open files allowed"
            ));
        }
        Err(e) => {
            return skip(&format!(
                "cannot open {IDLE} connections here: getrlimit: {e}"
            ));
        }
    }
    // Long enough that opening the connections and counting them fits
    // before it on a busy machine.
    let limits = Limits {
        idle_timeout: Duration::from_secs(8),
        ..Limits::default()
    };
    let server = TestServer::start_with(limits, FsyncPolicy::Always);
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|i| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            if i % 2 == 0 {
                // Half of them go quiet mid-line.
                s.write_all(b"half a li").unwrap();
            }
            s
        })
        .collect();
    let mut good = fresh_clients_served(server.addr, "with 2000 idle connections open");
    // The fresh client's own connection may take an iteration to be removed.
    wait_for("exactly the idle connections open", PROMPT, || {
        tcp_clients(server.addr) == IDLE as u64
    });

    wait_for(
        "the idle connections to be shed",
        Duration::from_secs(30),
        || tcp_clients(server.addr) == 0,
    );
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut said = String::new();
        s.read_to_string(&mut said).unwrap();
        assert!(said.starts_with("err idle "), "{said:?}");
    }
    good.extend(fresh_clients_served(
        server.addr,
        "after the idle ones left",
    ));
    assert_eq!(stored_texts(&server.path), good);
}

/// As [`tcp_writer`], with raw datagrams; stops at the first unanswered one.
fn udp_writer(addr: SocketAddr) -> Vec<(u64, String)> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut acked = Vec::new();
    let mut buf = [0u8; 1024];
    for i in 0.. {
        let text = format!("udp writer line {i}");
        socket.send_to(text.as_bytes(), addr).unwrap();
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            break;
        };
        acked.push((ack_id(std::str::from_utf8(&buf[..n]).unwrap()), text));
    }
    acked
}

#[test]
fn sigterm_during_a_write_burst_keeps_every_acknowledged_write_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = Daemon::start(&file, &["--fsync", "always"]);
    let addr = daemon.addr;
    let mut writers: Vec<_> = (0..6)
        .map(|who| std::thread::spawn(move || tcp_writer(addr, who)))
        .collect();
    writers.push(std::thread::spawn(move || udp_writer(addr)));
    wait_for("a burst of writes", Duration::from_secs(10), || {
        std::fs::metadata(&file).is_ok_and(|m| m.len() > 20_000)
    });
    daemon.terminate();

    let acked: Vec<(u64, String)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let stored: std::collections::HashMap<u64, String> = file_entries(&file).into_iter().collect();
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    for (id, text) in &acked {
        assert_eq!(stored.get(id), Some(text), "acknowledged entry {id} lost");
    }
}

/// A size-limited tmpfs, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: PathBuf, size: &str) -> Result<SmallDisk, String> {
        std::fs::create_dir(&at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(SmallDisk(at))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_writes_cleanly_keeps_reads_and_recovers() {
    let outer = tempfile::tempdir().unwrap();
    let disk = match SmallDisk::mount(outer.path().join("disk"), "256k") {
        Ok(disk) => disk,
        Err(why) => return skip(&format!("cannot mount a small tmpfs (needs root): {why}")),
    };
    // Most of the space goes to a file the test frees later.
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; 192 * 1024]).unwrap();
    let dir = tempfile::tempdir_in(&disk.0).unwrap();
    let path = dir.path().join("diary.log");
    let server = TestServer::start_in(dir, path, Limits::default(), FsyncPolicy::Always);

    let mut c = Tcp::connect(server.addr);
    let mut acked: Vec<(u64, String)> = Vec::new();
    let mut failures = 0;
    for i in 0..200 {
        let text = format!("{i:04} {}", "日记".repeat(300));
        c.send(&text);
        let reply = c.line();
        if reply.starts_with("ok ") {
            assert_eq!(failures, 0, "a write succeeded on a full disk");
            acked.push((ack_id(&reply), text));
        } else {
            assert!(reply.starts_with("err io "), "{reply:?}");
            failures += 1;
            if failures == 3 {
                break;
            }
        }
    }
    assert!(!acked.is_empty() && failures == 3, "the disk never filled");
    // Bigger than the one that failed, so it cannot fit in what is left either.
    let text = format!("over udp {}", "日记".repeat(301));
    let reply = udp_raw(server.addr, text.as_bytes());
    assert!(
        reply.starts_with(b"err io "),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    // No partial line: the file is exactly the acknowledged entries.
    let bytes = std::fs::read(&server.path).unwrap();
    assert_eq!(bytes.last(), Some(&b'\n'));
    assert_eq!(file_entries(&server.path), acked);
    // Reads keep working.
    c.send("p");
    assert_eq!(c.until_end().len(), acked.len());

    std::fs::remove_file(&filler).unwrap();
    let id = c.write("after space returned");
    assert_eq!(id, acked.len() as u64 + 1, "ids continue without a gap");
    acked.push((id, "after space returned".to_string()));
    let reply = udp_raw(server.addr, "and over udp".as_bytes());
    acked.push((
        ack_id(std::str::from_utf8(&reply).unwrap()),
        "and over udp".to_string(),
    ));
    assert_eq!(file_entries(&server.path), acked);
    assert!(figure(&stats(server.addr), "failed_commits") >= 4);
    drop(server);
    drop(disk);
}

/// One datagram, the whole reply (whatever its size).
fn udp_exchange(socket: &UdpSocket, to: SocketAddr, request: &str) -> String {
    socket.send_to(request.as_bytes(), to).unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// Checks the 3x rule from `socket` (a source the server must not trust),
/// then that a cookie lifts it.
fn check_amplification_rule(socket: &UdpSocket, server: SocketAddr) {
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for request in [
        "p",
        "h",
        "/past 40",
        "/stats",
        "/id a1 p",
        "/id a2 /past 40",
    ] {
        let reply = udp_exchange(socket, server, request);
        assert!(
            reply.len() <= 3 * request.len(),
            "{} bytes in reply to {request:?}: {reply:?}",
            reply.len()
        );
    }
    let reply = udp_exchange(socket, server, "/id a3 p");
    assert_eq!(reply, "id a3 truncated\n");
    // A write's ack shrinks to fit, but the write is stored and said so.
    let reply = udp_exchange(socket, server, "hi");
    assert!(reply.starts_with("ok") && reply.len() <= 6, "{reply:?}");

    let reply = udp_exchange(socket, server, "/id c1 /cookie");
    let cookie = reply
        .strip_prefix("id c1\ncookie ")
        .and_then(|c| c.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("no cookie in {reply:?}"))
        .to_string();
    let request = format!("/id a4 cookie={cookie} /past 3");
    let reply = udp_exchange(socket, server, &request);
    assert!(reply.len() > 3 * request.len(), "{reply:?}");
    assert!(reply.starts_with("id a4\n") && reply.ends_with("\nend\n"));
    // A cookie made up, or another address's, is worth nothing.
    let forged = format!("/id a5 cookie={} p", "0".repeat(cookie.len()));
    assert_eq!(udp_exchange(socket, server, &forged), "id a5 truncated\n");
}

fn fill_diary(addr: SocketAddr, count: usize) {
    let mut c = Tcp::connect(addr);
    for i in 0..count {
        c.write(&format!(
            "entry {i} with enough text to make the history long"
        ));
    }
}

#[test]
fn unproven_udp_sources_never_get_more_than_3x_their_request() {
    let limits = Limits {
        loopback_exempt: false,
        ..Limits::default()
    };
    let server = TestServer::start_with(limits, FsyncPolicy::Never);
    fill_diary(server.addr, 50);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    check_amplification_rule(&socket, server.addr);

    // The client gets its cookie by itself and reads the history over UDP.
    let out = diary_command(server.addr, &["past", "-n", "5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 5);
    assert_eq!(figure(&stats(server.addr), "tcp_reads"), 0, "used TCP");
}

/// Runs `f` on a thread inside a new network namespace whose loopback
/// device also carries `10.77.0.1`, a non-loopback address.
fn in_network_namespace(f: impl FnOnce(SocketAddr) + Send + 'static) -> Result<(), String> {
    std::thread::spawn(move || {
        // SAFETY: only this thread moves; the namespace is freed with it.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!("unshare: {}", std::io::Error::last_os_error()));
        }
        for args in [
            &["link", "set", "lo", "up"][..],
            &["addr", "add", "10.77.0.1/32", "dev", "lo"],
        ] {
            let status = Command::new("ip").args(args).status();
            if !status.is_ok_and(|s| s.success()) {
                return Err(format!("ip {} failed", args.join(" ")));
            }
        }
        f("10.77.0.1:0".parse().unwrap());
        Ok(())
    })
    .join()
    .unwrap()
}

#[test]
fn a_non_loopback_source_in_a_test_namespace_gets_at_most_3x() {
    let result = in_network_namespace(|listen| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("diary.log");
        let server =
            TestServer::start_listening(dir, path, listen, Limits::default(), FsyncPolicy::Never);
        fill_diary(server.addr, 50);
        let socket = UdpSocket::bind("10.77.0.1:0").unwrap();
        check_amplification_rule(&socket, server.addr);
    });
    if let Err(why) = result {
        skip(&format!(
            "no test network namespace (needs root and iproute2): {why}"
        ));
    }
}
