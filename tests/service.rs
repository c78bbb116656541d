//! diaryd as a service: what it tells systemd over a notify socket
//! (ready, watchdog, stopping), sockets handed over as systemd hands them
//! (fds 3 and 4, `LISTEN_FDS`, `LISTEN_PID`), the unit files checked by
//! `systemd-analyze verify`, and `diaryd --check` for backups and cron.
//! The notify socket and the handed-over fds are made by the test, exactly
//! as systemd makes them; tests/systemd.rs runs the installed units under
//! a real one.

mod common;

use common::{Daemon, file_entries, have_tool, skip};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The messages on a notify socket within `timeout`, until `done` says so.
fn notes_until(
    socket: &UnixDatagram,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut notes = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        let Ok(n) = socket.recv(&mut buf) else {
            break;
        };
        let note = String::from_utf8_lossy(&buf[..n]).into_owned();
        let stop = done(&note);
        notes.push(note);
        if stop {
            break;
        }
    }
    notes
}

#[test]
fn diaryd_says_ready_pings_the_watchdog_and_says_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_diaryd"));
    command
        .args(["--listen", "127.0.0.1:0", "--file"])
        .arg(dir.path().join("d.log"))
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "2000000");
    let daemon = Daemon::spawn(command).unwrap();
    let ready = notes_until(&notify, Duration::from_secs(10), |n| n.contains("READY=1"));
    let ready = ready.last().expect("a note");
    assert!(ready.contains("READY=1\n"), "{ready:?}");
    assert!(ready.contains("STATUS=serving 0 entries on"), "{ready:?}");
    // Ready means serving.
    let mut tcp = common::Tcp::connect(daemon.addr);
    assert_eq!(tcp.write("ready and serving"), 1);
    // WatchdogSec=2: a ping at least every second, from the loop.
    let started = Instant::now();
    let pings = notes_until(&notify, Duration::from_secs(5), |n| {
        n.contains("WATCHDOG=1")
    });
    assert!(pings.iter().any(|n| n == "WATCHDOG=1\n"), "{pings:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // The status line keeps up with the diary, within a second or so.
    let status = notes_until(&notify, Duration::from_secs(5), |n| n.contains("STATUS="));
    assert!(
        status
            .iter()
            .any(|n| n.contains("STATUS=serving 1 entry on")),
        "{status:?}"
    );
    // SIGTERM: stopping first, then exit 0 with everything stored.
    let pid = daemon.child.id() as i32;
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let stopping = notes_until(&notify, Duration::from_secs(10), |n| {
        n.contains("STOPPING=1")
    });
    assert!(
        stopping.iter().any(|n| n.contains("STOPPING=1")),
        "{stopping:?}"
    );
    daemon.terminate();
    assert_eq!(file_entries(&dir.path().join("d.log")).len(), 1);
}

/// Starts diaryd with `fds` as systemd hands sockets over: at 3, 4, …,
/// with `LISTEN_FDS` and `LISTEN_PID` (set by a shell that then execs
/// diaryd, so the pid is diaryd's).
fn spawn_with_fds(file: &std::path::Path, fds: &[i32]) -> Command {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_diaryd"))
        .arg("--file")
        .arg(file)
        .env("LISTEN_FDS", fds.len().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let fds = fds.to_vec();
    // SAFETY: only dup2 and fcntl between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // Out of the way first, so that moving one to 3 never closes another.
            let high: Vec<i32> = fds
                .iter()
                .map(|&fd| libc::fcntl(fd, libc::F_DUPFD, 100))
                .collect();
            for (i, fd) in high.into_iter().enumerate() {
                if fd < 0 || libc::dup2(fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command
}

#[test]
fn sockets_handed_over_as_systemd_does_are_served_with_their_queued_clients() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.log");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let udp = UdpSocket::bind(addr).unwrap();
    // A client that came before diaryd did (socket activation's point):
    // the kernel queued it on the listener.
    let mut early = TcpStream::connect(addr).unwrap();
    early
        .write_all("came before diaryd 早到了\n".as_bytes())
        .unwrap();
    let command = spawn_with_fds(&file, &[listener.as_raw_fd(), udp.as_raw_fd()]);
    let daemon = Daemon::spawn(command).unwrap();
    assert_eq!(daemon.addr, addr, "it serves the sockets it was given");
    drop((listener, udp));
    early
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = String::new();
    BufReader::new(&early).read_line(&mut reply).unwrap();
    assert!(reply.starts_with("ok 1 "), "{reply}");
    let answer = common::udp_raw(addr, b"over the handed-over UDP socket");
    assert!(
        answer.starts_with(b"ok 2 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let log = daemon.terminate();
    assert!(!log.contains("error"), "{log}");
    let texts: Vec<String> = file_entries(&file).into_iter().map(|e| e.1).collect();
    assert_eq!(
        texts,
        [
            "came before diaryd 早到了",
            "over the handed-over UDP socket"
        ]
    );
}

#[test]
fn a_handover_without_both_sockets_is_refused_with_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let command = spawn_with_fds(&dir.path().join("d.log"), &[listener.as_raw_fd()]);
    let Err(stderr) = Daemon::spawn(command) else {
        panic!("diaryd served a TCP listener without its UDP socket");
    };
    assert!(stderr.contains("ListenDatagram="), "{stderr}");
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    let command = spawn_with_fds(
        &dir.path().join("d.log"),
        &[listener.as_raw_fd(), other.as_raw_fd()],
    );
    let Err(stderr) = Daemon::spawn(command) else {
        panic!("diaryd served sockets on two ports");
    };
    assert!(stderr.contains("different ports"), "{stderr}");
}

#[test]
fn the_unit_files_pass_systemd_analyze_verify() {
    if !have_tool("systemd-analyze") {
        skip("no systemd-analyze on PATH (apt-get install systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let contrib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    for unit in ["diaryd.service", "diaryd.socket"] {
        let text = std::fs::read_to_string(contrib.join(unit)).unwrap();
        // verify wants ExecStart's binary to exist: this build's.
        let text = text.replace("/usr/local/bin/diaryd", env!("CARGO_BIN_EXE_diaryd"));
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "diaryd.socket", "diaryd.service"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    let service = std::fs::read_to_string(contrib.join("diaryd.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "DynamicUser=yes",
        "StateDirectory=diary",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
    ] {
        assert!(service.contains(line), "diaryd.service lacks {line}");
    }
}

#[test]
fn check_reports_a_diary_without_changing_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.log");
    let check = |path: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_diaryd"))
            .arg("--check")
            .arg(path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let daemon = Daemon::start(&file, &[]);
    common::run_diary(daemon.addr, &["write", "one"], b"");
    common::run_diary(daemon.addr, &["write", "two"], b"");
    common::run_diary(daemon.addr, &["amend", "1", "one, amended"], b"");
    let (code, report) = check(&file);
    assert_eq!(code, Some(0), "{report}");
    for line in [
        "format: 2",
        "entries: 3 (1 of them amendments or deletions)",
        "in use: a running diaryd holds it",
        "whole: yes",
    ] {
        assert!(report.contains(line), "{line} missing from {report}");
    }
    daemon.terminate();
    let (_, report) = check(&file);
    assert!(report.contains("saved index: matches the file"), "{report}");
    // A torn end: reported, exit 1, and left as it was.
    let mut torn = std::fs::read(&file).unwrap();
    torn.extend_from_slice(b"4\t2026-12-06T10:00:00.000+00:00\thalf a li");
    std::fs::write(&file, &torn).unwrap();
    let (code, report) = check(&file);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains("torn end: 41 bytes from line 5"),
        "{report}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), torn, "not a byte changed");
    assert!(!dir.path().join("d.log.torn").exists());
    // A line diaryd would refuse.
    let bad = dir.path().join("bad.log");
    std::fs::write(&bad, "1\t2026-12-06T10:00:00.000+00:00\tok\nnot an entry\n").unwrap();
    let (code, report) = check(&bad);
    assert_eq!(code, Some(1));
    assert!(
        report.contains("refused: line 2: not a diary entry"),
        "{report}"
    );
    let (code, _) = check(&dir.path().join("missing.log"));
    assert_eq!(code, Some(2));
}
