//! Privacy across machines, tested as two machines: `diaryd` runs in one
//! network namespace and `diary` in another, joined by a veth pair, so
//! every request comes from an address that is not loopback. The tests
//! need root (CI runs as root and fails them rather than skip them).

mod common;

use common::netns::Link;
use common::skip;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `diaryd` in the server's namespace, killed on drop.
struct Server {
    daemon: common::Daemon,
    file: PathBuf,
}

/// `server.addr`, `server.key`: the daemon's.
impl std::ops::Deref for Server {
    type Target = common::Daemon;

    fn deref(&self) -> &common::Daemon {
        &self.daemon
    }
}

impl Server {
    fn start(link: &Link, file: &Path, port: u16, extra: &[&str]) -> Result<Server, String> {
        let listen = format!("{}:{port}", link.server_ip);
        let args = [&["--listen", &listen, "--fsync", "never"][..], extra].concat();
        Ok(Server {
            daemon: link.diaryd(file, &args)?,
            file: file.to_path_buf(),
        })
    }

    fn signal(&self, signal: i32) {
        // SAFETY: a signal to our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    fn entries(&self) -> Vec<String> {
        common::file_entries(&self.file)
            .into_iter()
            .map(|(_, text)| text)
            .collect()
    }
}

/// One device: its own config directory (key, known_servers).
struct Device {
    config: tempfile::TempDir,
    public: String,
}

impl Device {
    fn new() -> Device {
        let config = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_diary"))
            .arg("keygen")
            .env("XDG_CONFIG_HOME", config.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let public = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            public.lines().count(),
            1,
            "keygen prints one line: {public}"
        );
        Device {
            config,
            public: public.trim().to_string(),
        }
    }

    /// Runs `diary --server ADDR ARGS…` in the client's namespace.
    fn run(&self, link: &Link, server: &str, args: &[&str]) -> Output {
        Link::command(&link.client_ns, env!("CARGO_BIN_EXE_diary"))
            .args(["--server", server, "--timeout", "5"])
            .args(args)
            .env("XDG_CONFIG_HOME", self.config.path())
            .env_remove("DIARY_SERVER_KEY")
            .env_remove("DIARY_KEY")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn spawn(&self, link: &Link, server: &str, args: &[&str]) -> Child {
        Link::command(&link.client_ns, env!("CARGO_BIN_EXE_diary"))
            .args(["--server", server])
            .args(args)
            .env("XDG_CONFIG_HOME", self.config.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn known_servers(&self) -> PathBuf {
        self.config.path().join("diary/known_servers")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn allow_file(dir: &Path, lines: &[String]) -> PathBuf {
    let path = dir.join("allow");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// Two machines: diaryd in one, allowing one device (`NAME SCOPES`), and
/// that device in the other. (Bound in this order, they drop server first.)
/// diaryd on port 0 in the server's namespace, letting in the devices
/// of `lines`; and the allow file it reads (in `dir`), to change.
fn allowing(link: &Link, dir: &Path, lines: &[String]) -> (Server, PathBuf) {
    let allow = allow_file(dir, lines);
    let server = Server::start(
        link,
        &dir.join("d.log"),
        0,
        &["--allow", allow.to_str().unwrap()],
    )
    .unwrap();
    (server, allow)
}

fn scene(device_line: &str) -> Option<(Link, tempfile::TempDir, Device, Server)> {
    let link = Link::new()?;
    let dir = tempfile::tempdir().unwrap();
    let device = Device::new();
    let allow = allow_file(dir.path(), &[format!("{} {device_line}", device.public)]);
    let file = dir.path().join("d.log");
    let server = Server::start(&link, &file, 0, &["--allow", allow.to_str().unwrap()]).unwrap();
    Some((link, dir, device, server))
}

#[test]
fn protected_mode_refuses_to_listen_beyond_loopback_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let out = Command::new(env!("CARGO_BIN_EXE_diaryd"))
        .args(["--listen", "0.0.0.0:0", "--file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--allow") && stderr.contains("diary keygen"),
        "{stderr}"
    );
    assert!(!file.exists(), "nothing was created");
    // A bad allow file stops the start too, naming the line.
    let bad = dir.path().join("allow");
    std::fs::write(&bad, "not-a-key laptop all\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_diaryd"))
        .args(["--listen", "0.0.0.0:0", "--allow"])
        .arg(&bad)
        .arg("--file")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("allow:1:"), "{out:?}");
}

#[test]
fn plaintext_from_another_machine_gets_only_err_auth() {
    let Some((link, _dir, device, server)) = scene("laptop all") else {
        return;
    };
    // One entry written the right way, which no plaintext request may see.
    let addr = server.addr.to_string();
    let out = device.run(&link, &addr, &["write", "the secret entry"]);
    assert!(out.status.success(), "{out:?}");
    let before = std::fs::read(&server.file).unwrap();
    let to = server.addr;
    let replies = link.in_client_ns(move || {
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut replies = Vec::new();
        let mut buf = [0u8; 4096];
        for request in [
            &b"plaintext entry from outside\n"[..],
            b"/past 10\n",
            b"p\n",
        ] {
            udp.send_to(request, to).unwrap();
            replies.push(match udp.recv(&mut buf) {
                Ok(n) => text(&buf[..n]),
                Err(_) => String::new(),
            });
        }
        for request in [&b"p\n"[..], b"plaintext over tcp\n/follow\n"] {
            let mut tcp = TcpStream::connect(to).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            tcp.write_all(request).unwrap();
            let mut all = Vec::new();
            tcp.read_to_end(&mut all).unwrap();
            replies.push(text(&all));
        }
        replies
    });
    assert_eq!(
        replies,
        [
            "err auth keys required\n",
            "err auth keys required\n",
            // Over three times a two-byte request: nothing at all.
            "",
            "err auth keys required\n",
            "err auth keys required\n",
        ]
    );
    assert_eq!(
        std::fs::read(&server.file).unwrap(),
        before,
        "file unchanged"
    );
    // The official client, told to speak plaintext, hears why it is refused.
    let out = device.run(&link, &addr, &["--plain", "--proto", "tcp", "past"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("diary keygen"), "{out:?}");
    assert!(!text(&out.stdout).contains("secret"));
}

/// A UDP relay in the client's namespace that drops every third datagram
/// each way: a lossy network between the two machines.
fn lossy_relay(link: &Link, server: SocketAddr) -> (SocketAddr, Arc<AtomicBool>) {
    let bind = format!("{}:0", link.client_ip);
    let stop = Arc::new(AtomicBool::new(false));
    let done = stop.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let path = format!("/var/run/netns/{}", link.client_ns);
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        // SAFETY: as in Link::in_client_ns.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let front = UdpSocket::bind(&bind).unwrap();
        let back = UdpSocket::bind(&bind).unwrap();
        back.connect(server).unwrap();
        front.set_nonblocking(true).unwrap();
        back.set_nonblocking(true).unwrap();
        tx.send(front.local_addr().unwrap()).unwrap();
        let mut client = None;
        let mut buf = [0u8; 65_536];
        let mut count = 0u64;
        while !done.load(Ordering::SeqCst) {
            let mut idle = true;
            if let Ok((n, from)) = front.recv_from(&mut buf) {
                idle = false;
                client = Some(from);
                count += 1;
                if !count.is_multiple_of(3) {
                    let _ = back.send(&buf[..n]);
                }
            }
            if let Ok(n) = back.recv(&mut buf) {
                idle = false;
                count += 1;
                if !count.is_multiple_of(3)
                    && let Some(to) = client
                {
                    let _ = front.send_to(&buf[..n], to);
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    (rx.recv().unwrap(), stop)
}

#[test]
fn an_allowed_device_writes_and_reads_over_udp_and_tcp_exactly_once_under_loss() {
    let Some((link, _dir, device, server)) = scene("laptop all") else {
        return;
    };
    let direct = server.addr.to_string();
    // First contact pins the key, and says so.
    let out = device.run(
        &link,
        &direct,
        &["--proto", "tcp", "write", "over tcp 中文"],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("first contact"), "{out:?}");
    let pins = std::fs::read_to_string(device.known_servers()).unwrap();
    assert_eq!(pins, format!("{direct} {}\n", server.key));

    let (relay, stop) = lossy_relay(&link, server.addr);
    let relay = relay.to_string();
    let key = server.key.as_str();
    let mut written = vec!["over tcp 中文".to_string()];
    for i in 0..12 {
        let entry = format!("lossy udp entry {i} 日记");
        let out = device.run(
            &link,
            &relay,
            &["--server-key", key, "--proto", "udp", "write", &entry],
        );
        assert!(out.status.success(), "{entry}: {out:?}");
        written.push(entry);
    }
    // Reads over UDP through the same loss: a reply too big for a
    // datagram comes over TCP (to the relay's address, which is not a
    // TCP relay), so read a small one over UDP, and all over TCP direct.
    let out = device.run(
        &link,
        &relay,
        &["--server-key", key, "--proto", "udp", "past", "-n", "2"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout).lines().count(), 2, "{out:?}");
    stop.store(true, Ordering::SeqCst);
    let out = device.run(&link, &direct, &["--proto", "tcp", "past"]);
    assert!(out.status.success(), "{out:?}");
    let shown = text(&out.stdout);
    for entry in &written {
        assert_eq!(shown.matches(entry.as_str()).count(), 1, "{entry}: {shown}");
    }
    assert_eq!(server.entries(), written, "each stored once, in order");
    // The device's name from its key, whatever name the client gave.
    let file = std::fs::read_to_string(&server.file).unwrap();
    let by: Vec<&str> = file.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(by.iter().all(|l| l.ends_with("\tby=laptop")), "{file}");
    let out = device.run(
        &link,
        &direct,
        &["--name", "impostor", "--proto", "tcp", "past", "-n", "1"],
    );
    assert!(text(&out.stdout).contains("[laptop]"), "{out:?}");
}

#[test]
fn a_write_only_device_cannot_read_or_follow() {
    let Some((link, _dir, device, server)) = scene("sensor write") else {
        return;
    };
    let addr = server.addr.to_string();
    for proto in ["udp", "tcp"] {
        let out = device.run(&link, &addr, &["--proto", proto, "write", "a reading"]);
        assert!(out.status.success(), "{out:?}");
        let out = device.run(&link, &addr, &["--proto", proto, "past"]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("forbidden") && stderr.contains("sensor may not read"),
            "{stderr}"
        );
        assert!(!text(&out.stdout).contains("a reading"));
    }
    let out = device.run(&link, &addr, &["follow"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stderr).contains("may not follow"), "{out:?}");
    assert_eq!(server.entries(), ["a reading", "a reading"]);
}

/// Issue 26, 3: `write` adds entries and nothing more. Amending or
/// deleting anyone's entries needs `edit`; importing entries under another
/// author and time needs `import`.
#[test]
fn a_write_only_device_cannot_change_or_forge_entries() {
    let Some((link, dir, device, server)) = scene("sensor write") else {
        return;
    };
    let addr = server.addr.to_string();
    let out = device.run(&link, &addr, &["write", "a reading"]);
    assert!(out.status.success(), "{out:?}");
    let forged = dir.path().join("forged.jsonl");
    std::fs::write(
        &forged,
        "{\"id\":1,\"time\":\"2020-01-01T00:00:00.000+00:00\",\"author\":\"admin\",\"text\":\"forged\"}\n",
    )
    .unwrap();
    for (args, scope) in [
        (vec!["amend", "1", "rewritten"], "edit"),
        (vec!["delete", "1"], "edit"),
        (vec!["import", forged.to_str().unwrap()], "import"),
    ] {
        let out = device.run(&link, &addr, &args);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("forbidden") && stderr.contains(&format!("sensor may not {scope}")),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(server.entries(), ["a reading"]);
}

#[test]
fn a_revoked_device_is_refused_after_sighup_and_its_sessions_end() {
    let Some(link) = Link::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (kept, lost) = (Device::new(), Device::new());
    let both = [
        format!("{} desk all", kept.public),
        format!("{} phone all", lost.public),
    ];
    let (server, allow) = allowing(&link, dir.path(), &both);
    let addr = server.addr.to_string();
    for device in [&kept, &lost] {
        let out = device.run(&link, &addr, &["write", "before"]);
        assert!(out.status.success(), "{out:?}");
    }
    // From entry 2 on: what is written next reaches it however soon it starts.
    let mut follower = lost.spawn(&link, &addr, &["follow", "--since", "2"]);
    let lines = common::LineFeed::new(follower.stdout.take().unwrap());
    let out = kept.run(&link, &addr, &["write", "seen by the follower"]);
    assert!(out.status.success(), "{out:?}");
    let seen = lines.until(Duration::from_secs(10), |l| {
        l.contains("seen by the follower")
    });
    assert!(seen.iter().any(|l| l.contains("seen by")), "{seen:?}");

    // A bad file at reload keeps the old list.
    std::fs::write(&allow, "garbage\n").unwrap();
    server.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    let out = lost.run(&link, &addr, &["write", "still allowed"]);
    assert!(out.status.success(), "{out:?}");

    std::fs::write(&allow, both[0].clone() + "\n").unwrap();
    server.signal(libc::SIGHUP);
    // The follow session is closed; its reconnection is refused, and it stops.
    let stderr = cut_off(&mut follower, Duration::from_secs(10));
    assert!(stderr.contains("device key not allowed"), "{stderr}");
    for proto in ["udp", "tcp"] {
        let out = lost.run(&link, &addr, &["--proto", proto, "write", "after"]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            text(&out.stderr).contains("device key not allowed"),
            "{out:?}"
        );
        let out = kept.run(&link, &addr, &["--proto", proto, "write", "kept"]);
        assert!(out.status.success(), "{out:?}");
    }
    assert_eq!(
        server.entries(),
        [
            "before",
            "before",
            "seen by the follower",
            "still allowed",
            "kept",
            "kept"
        ]
    );
}

#[test]
fn a_changed_server_key_is_refused_by_the_client() {
    let Some((link, dir, device, server)) = scene("laptop all") else {
        return;
    };
    let (file, allow) = (dir.path().join("d.log"), dir.path().join("allow"));
    let allow = allow.to_str().unwrap();
    let addr = server.addr.to_string();
    let port = server.addr.port();
    let out = device.run(&link, &addr, &["write", "first"]);
    assert!(out.status.success(), "{out:?}");
    drop(server);
    // The server comes back with another key (as an impostor would).
    std::fs::remove_file(dir.path().join("d.log.key")).unwrap();
    let server = Server::start(&link, &file, port, &["--allow", allow]).unwrap();
    for proto in ["udp", "tcp"] {
        let out = device.run(&link, &addr, &["--proto", proto, "write", "second"]);
        assert_eq!(out.status.code(), Some(4), "{out:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("HAS CHANGED"), "{stderr}");
        assert!(
            stderr.contains(&format!("{}:1", device.known_servers().display())),
            "names the file and line to edit: {stderr}"
        );
        assert!(stderr.contains(&server.key), "{stderr}");
    }
    // Issue 26, 9: another spelling of the same address finds the pin; it
    // does not pin the impostor as a new server.
    for spelling in [
        format!("{}:0{port}", link.server_ip),
        format!("[::ffff:{}]:{port}", link.server_ip),
    ] {
        let out = device.run(&link, &spelling, &["--proto", "tcp", "write", "third"]);
        assert_eq!(out.status.code(), Some(4), "{spelling}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("HAS CHANGED"), "{spelling}: {stderr}");
    }
    let pins = std::fs::read_to_string(device.known_servers()).unwrap();
    assert_eq!(pins.lines().count(), 1, "{pins}");
    assert_eq!(server.entries(), ["first"]);
}

/// `tcpdump` on the server's end of the link, writing a capture file.
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(link: &Link, file: PathBuf) -> Option<Capture> {
        if !common::have_tool("tcpdump") {
            skip("no tcpdump on PATH (apt-get install tcpdump)");
            return None;
        }
        // Its messages go to a file: a closed pipe would kill it mid-capture.
        let log = file.with_extension("log");
        let child = Link::command(&link.server_ns, "tcpdump")
            .args([
                "-i",
                &link.server_dev,
                "-Z",
                "root",
                "--immediate-mode",
                "-U",
                "-s",
                "0",
            ])
            .arg("-w")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                skip(&format!("no tcpdump: {e}"));
                return None;
            }
        };
        // It says "listening on" once it captures.
        common::wait_for("tcpdump to listen", Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on"))
        });
        Some(Capture { child, file })
    }

    fn stop(mut self) -> Vec<u8> {
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: a signal to our own child; SIGINT makes tcpdump flush.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        std::fs::read(&self.file).unwrap()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_packet_capture_holds_no_entry_or_reply_text() {
    let Some((link, dir, device, server)) = scene("laptop all") else {
        return;
    };
    let addr = server.addr.to_string();
    let Some(capture) = Capture::start(&link, dir.path().join("link.pcap")) else {
        return;
    };
    let mut texts = Vec::new();
    for (i, proto) in ["udp", "tcp", "udp", "tcp"].iter().enumerate() {
        let entry = format!("private thought {i} 私密的想法");
        let out = device.run(&link, &addr, &["--proto", proto, "write", &entry]);
        assert!(out.status.success(), "{out:?}");
        texts.push(entry);
    }
    let import = "imported line one\nimported line two\n";
    let mut child = Link::command(&link.client_ns, env!("CARGO_BIN_EXE_diary"))
        .args(["--server", &addr, "write"])
        .env("XDG_CONFIG_HOME", device.config.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(import.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    texts.extend(import.lines().map(str::to_string));
    let mut replies = Vec::new();
    for proto in ["udp", "tcp"] {
        let out = device.run(&link, &addr, &["--proto", proto, "past", "-n", "3"]);
        assert!(out.status.success(), "{out:?}");
        replies.push(text(&out.stdout));
    }
    // A canary sent in plaintext proves the capture sees payloads.
    let to = server.addr;
    link.in_client_ns(move || {
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        udp.send_to(b"CANARY-IN-THE-CLEAR\n", to).unwrap();
    });
    let pcap = capture.stop();
    assert!(
        contains(&pcap, b"CANARY-IN-THE-CLEAR"),
        "the capture works ({} bytes; tcpdump said {:?})",
        pcap.len(),
        std::fs::read_to_string(dir.path().join("link.log"))
    );
    assert!(contains(&pcap, b"err auth"), "its refusal is plaintext too");
    for entry in &texts {
        assert!(
            !contains(&pcap, entry.as_bytes()),
            "{entry} crossed in clear"
        );
        assert!(!contains(&pcap, "私密".as_bytes()));
    }
    // Nothing of any reply: not its times, its acks, its tags, its words.
    let stored = std::fs::read_to_string(&server.file).unwrap();
    for line in stored.lines().filter(|l| !l.starts_with('#')) {
        let time = line.split('\t').nth(1).unwrap();
        assert!(!contains(&pcap, time.as_bytes()), "{time} crossed in clear");
    }
    // (Words long enough that ciphertext will not hold them by chance.)
    for word in [
        &b"/id "[..],
        b"/write",
        b"/past",
        b"req=",
        b"imported",
        b"stored",
    ] {
        assert!(!contains(&pcap, word), "{:?} crossed in clear", text(word));
    }
    assert_eq!(server.entries().len(), texts.len());
    assert!(
        replies.iter().all(|r| r.lines().count() == 3),
        "{replies:?}"
    );
}

#[test]
fn the_interactive_client_from_another_machine_is_encrypted_and_live() {
    use expectrl::{Expect, Session};
    let Some((link, _dir, device, server)) = scene("laptop all") else {
        return;
    };
    let addr = server.addr.to_string();
    let state = tempfile::tempdir().unwrap();
    let mut command = Link::command(&link.client_ns, env!("CARGO_BIN_EXE_diary"));
    command
        .args(["--server", &addr])
        .env("XDG_CONFIG_HOME", device.config.path())
        .env("XDG_STATE_HOME", state.path())
        .env("TERM", "xterm");
    let mut p = Session::spawn(command).expect("a pty");
    p.set_expect_timeout(Some(Duration::from_secs(15)));
    p.expect("(encrypted)").unwrap();
    p.expect("diary> ").unwrap();
    p.send("typed on the laptop 笔记本\r").unwrap();
    p.expect("stored #1").unwrap();
    // Another terminal of the same device writes; the live view shows it.
    let out = device.run(
        &link,
        &addr,
        &["--proto", "tcp", "write", "from a second terminal"],
    );
    assert!(out.status.success(), "{out:?}");
    p.expect("from a second terminal").unwrap();
    p.send("p\r").unwrap();
    p.expect("typed on the laptop 笔记本").unwrap();
    p.send("e\r").unwrap();
    p.expect(expectrl::Eof).unwrap();
    assert_eq!(
        server.entries(),
        ["typed on the laptop 笔记本", "from a second terminal"]
    );
}

/// Issue 26, 9: a device's `follow` scope taken away by SIGHUP ends its
/// live follow at once, with the reason, rather than at the end of its
/// session; the client does not reconnect to a follow it may not have.
#[test]
fn a_follow_ends_at_once_when_sighup_takes_its_scope() {
    let Some(link) = Link::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (desk, phone) = (Device::new(), Device::new());
    let desk_line = format!("{} desk all", desk.public);
    let lines = [desk_line.clone(), format!("{} phone all", phone.public)];
    let (server, allow) = allowing(&link, dir.path(), &lines);
    let addr = server.addr.to_string();
    let mut follower = phone.spawn(&link, &addr, &["follow"]);
    let lines = common::LineFeed::new(follower.stdout.take().unwrap());
    let out = desk.run(&link, &addr, &["write", "seen while allowed"]);
    assert!(out.status.success(), "{out:?}");
    let seen = lines.until(Duration::from_secs(10), |l| l.contains("seen while"));
    assert!(seen.iter().any(|l| l.contains("seen while")), "{seen:?}");

    std::fs::write(
        &allow,
        format!("{desk_line}\n{} phone write,read\n", phone.public),
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    let stderr = cut_off(&mut follower, Duration::from_secs(5));
    assert!(stderr.contains("phone may not follow"), "{stderr}");
    let out = desk.run(&link, &addr, &["write", "after the cut"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !lines
            .drain(Duration::from_millis(300))
            .iter()
            .any(|l| l.contains("after the cut")),
        "nothing reaches it afterwards"
    );
    // It may still write and read.
    let out = phone.run(&link, &addr, &["write", "from the phone"]);
    assert!(out.status.success(), "{out:?}");
}

/// Waits for a follower to be cut off (to exit, and not with success),
/// at most `within`; what it said on stderr.
fn cut_off(follower: &mut Child, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = follower.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the follower was not cut off");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    follower
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

/// A phone on the LAN: the page over HTTPS (`--web-tls`) from another
/// machine, login, a write and the live feed, with nothing of the entry,
/// the cookie or the login token on the wire; plain HTTP there gets no page.
#[test]
fn the_page_reaches_a_phone_on_the_lan_over_https_only() {
    let Some(link) = Link::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = common::web::self_signed(dir.path(), &[&link.server_ip]);
    let allow = allow_file(dir.path(), &[]);
    let web_addr = format!("{}:{}", link.server_ip, 8443);
    let server = Server::start(
        &link,
        &dir.path().join("d.log"),
        0,
        &[
            "--allow",
            allow.to_str().unwrap(),
            "--web",
            &web_addr,
            "--web-tls",
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
        ],
    )
    .unwrap();
    let mut daemon = server.daemon;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut daemon.stdout, &mut line).unwrap();
    assert!(
        line.contains(&format!("serving the page on https://{web_addr} ")),
        "{line}"
    );
    let url = common::web::login_url_in(&line);
    let token = url.split_once('#').unwrap().1.to_string();
    let Some(capture) = Capture::start(&link, dir.path().join("web.pcap")) else {
        return;
    };
    let entry = "from my phone 手机上写的";
    let to: SocketAddr = web_addr.parse().unwrap();
    let origin = format!("https://{web_addr}");
    let (cookie, reply, event, plain) = link.in_client_ns({
        let (token, origin, der, ip) = (
            token.clone(),
            origin.clone(),
            der.clone(),
            link.server_ip.clone(),
        );
        move || {
            use common::web::Http;
            let mut http = Http::connect_tls(to, &ip, &der);
            let login = http.request(
                "POST",
                "/api/login",
                &[("Origin", &origin)],
                token.as_bytes(),
            );
            assert_eq!(login.status, 200, "{}", login.text());
            let cookie = login.header("set-cookie").unwrap().to_string();
            assert!(cookie.contains("; Secure"), "{cookie}");
            let value = cookie.split(';').next().unwrap().to_string();
            let mut events = Http::connect_tls(to, &ip, &der);
            events.send("GET", "/api/events", &[("Cookie", &value)], b"");
            assert_eq!(events.head().status, 200);
            assert_eq!(events.event().unwrap().1, "note");
            let write = format!("/id p1 /write {entry}");
            let reply = http.request(
                "POST",
                "/api",
                &[("Origin", &origin), ("Cookie", &value)],
                write.as_bytes(),
            );
            let event = events.event().unwrap().2;
            // Plain HTTP to the HTTPS port gets no page.
            let mut stream = TcpStream::connect(to).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut got = Vec::new();
            let _ = stream.read_to_end(&mut got);
            (value, reply.text(), event, got)
        }
    });
    assert!(reply.contains("ok 1 "), "{reply}");
    assert!(event.contains(entry), "{event}");
    assert!(!contains(&plain, b"HTTP/1.1 200"), "{}", text(&plain));
    let pcap = capture.stop();
    assert!(
        contains(&pcap, b"GET / HTTP/1.1"),
        "the capture sees payloads"
    );
    let secret = cookie.split('=').nth(1).unwrap();
    for needle in [
        entry.as_bytes(),
        "手机".as_bytes(),
        secret.as_bytes(),
        token.as_bytes(),
        b"/write",
        b"diary_session",
    ] {
        assert!(
            !contains(&pcap, needle),
            "{:?} crossed in clear",
            text(needle)
        );
    }
}
