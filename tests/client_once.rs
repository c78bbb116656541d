//! The `diary` client never loses or doubles what a person writes: text is
//! stored byte for byte, a write that may have failed can be sent again
//! with its tag, an import interrupted by a crash is run again without
//! doubling anything, and a server that is not diaryd is never written to
//! twice.

mod common;

use common::*;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn run(server: SocketAddr, args: &[&str], stdin: &[u8]) -> Output {
    run_diary(server, args, stdin)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Sends `signal` (as `kill` spells it) to process `pid`.
fn signal(pid: &str, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([signal, pid])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal} {pid}: {sent}");
}

fn texts(path: &Path) -> Vec<String> {
    file_entries(path).into_iter().map(|(_, t)| t).collect()
}

#[test]
fn leading_and_trailing_spaces_are_kept_byte_for_byte() {
    let server = TestServer::start();
    for proto in ["udp", "tcp"] {
        let out = run(
            server.addr,
            &["--proto", proto, "write", "   indented "],
            b"",
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = run(
        server.addr,
        &["write"],
        "  imported, indented\n\tand a tab\n".as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // And from nc: `/write` takes everything after its one space.
    udp_raw(server.addr, b"/write    four spaces");
    Tcp::connect(server.addr).write("/write  one more");
    assert_eq!(
        texts(&server.path),
        [
            "   indented ",
            "   indented ",
            "  imported, indented",
            "\tand a tab",
            "   four spaces",
            " one more"
        ]
    );
}

/// A UDP and TCP server that is not diaryd: it answers every request
/// with the seed's prompt, and counts what it got.
fn not_diaryd() -> (SocketAddr, Arc<AtomicU64>) {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let udp = UdpSocket::bind(addr).unwrap();
    let got = Arc::new(AtomicU64::new(0));
    let counted = got.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = udp.send_to(b"Continue to Write:--->", from);
        }
    });
    let counted = got.clone();
    std::thread::spawn(move || {
        for mut stream in tcp.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(b"Continue to Write:--->\n");
        }
    });
    (addr, got)
}

#[test]
fn a_server_that_is_not_diaryd_is_written_to_once_and_named() {
    let (addr, got) = not_diaryd();
    for proto in ["udp", "tcp"] {
        got.store(0, Ordering::SeqCst);
        let started = Instant::now();
        let out = run(addr, &["--proto", proto, "write", "hello"], b"");
        assert_eq!(out.status.code(), Some(4), "{proto}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("Continue to Write"),
            "{}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("not the diary protocol"));
        assert_eq!(got.load(Ordering::SeqCst), 1, "{proto}: sent once");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

#[test]
fn a_write_that_may_have_failed_is_sent_again_with_its_tag_and_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = Daemon::start(&file, &[]);
    let pid = daemon.child.id().to_string();
    // A stopped server: the datagrams wait in its socket, unanswered.
    signal(&pid, "-STOP");
    let out = run(
        daemon.addr,
        &["--timeout", "1", "write", "did it get there?"],
        b"",
    );
    assert_eq!(out.status.code(), Some(3));
    let message = stderr(&out);
    assert!(
        message.contains("may or may not have been stored"),
        "{message}"
    );
    let tag = message
        .split("--tag ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("prints the tag: {message}"))
        .to_string();
    signal(&pid, "-CONT");
    for proto in ["udp", "tcp"] {
        let again = run(
            daemon.addr,
            &[
                "--proto",
                proto,
                "write",
                "--tag",
                &tag,
                "did it get there?",
            ],
            b"",
        );
        assert!(again.status.success(), "{}", stderr(&again));
        assert!(String::from_utf8_lossy(&again.stdout).starts_with("stored #1 "));
    }
    assert_eq!(texts(&file), ["did it get there?"]);
    let bad = run(
        daemon.addr,
        &["write", "--tag", "no spaces allowed", "x"],
        b"",
    );
    assert_eq!(bad.status.code(), Some(2));
}

/// Counts the entry lines of a diary file as it grows.
fn entries_in(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| {
            b.split(|&c| c == b'\n')
                .filter(|l| l.first().is_some_and(u8::is_ascii_digit))
                .count()
        })
        .unwrap_or(0)
}

fn interrupted_import_then_run_again(proto: &str) {
    const LINES: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let input: String = (1..=LINES)
        .map(|i| format!("imported line {i} of the old diary\n"))
        .collect();
    let daemon = Daemon::start(&file, &[]);
    let addr = daemon.addr;
    let mut import = diary_command(addr, &["--proto", proto, "--timeout", "1", "write"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = import.stdin.take().unwrap();
    let feed = input.clone();
    std::thread::spawn(move || {
        let _ = stdin.write_all(feed.as_bytes());
    });
    wait_for("a part of the import", Duration::from_secs(60), || {
        entries_in(&file) >= 20_000
    });
    drop(daemon); // kill -9 in the middle of the import
    let first = import.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(3), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("Run the same import again"),
        "{}",
        stderr(&first)
    );
    let stored_before = entries_in(&file);
    assert!(stored_before < LINES, "the import really was cut short");

    let daemon = Daemon::try_start_at(&file, &addr.to_string(), &[]).unwrap();
    // What the restart kept (a torn last line is cut) is found, not sent again.
    let kept = entries_in(&file);
    let second = run(daemon.addr, &["--proto", proto, "write"], input.as_bytes());
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(
        String::from_utf8_lossy(&second.stdout).trim(),
        format!(
            "stored {} entries (#{} to #{LINES})\n\
             {kept} lines were stored by an earlier run of this import; not stored again",
            LINES - kept,
            kept + 1
        )
    );
    let stored = texts(&file);
    assert_eq!(stored.len(), LINES, "each line once");
    for (i, text) in stored.iter().enumerate() {
        assert_eq!(text, &format!("imported line {} of the old diary", i + 1));
    }
    // A third run of the same import stores nothing new.
    let third = run(daemon.addr, &["--proto", proto, "write"], input.as_bytes());
    assert!(third.status.success());
    assert_eq!(texts(&file).len(), LINES);
    assert_eq!(
        String::from_utf8_lossy(&third.stdout).trim(),
        format!(
            "stored 0 entries\n\
             {LINES} lines were stored by an earlier run of this import; not stored again"
        )
    );
    println!("{proto}: {stored_before} lines stored before the crash, the rest by the second run");
}

#[test]
fn an_import_cut_by_a_crash_and_run_again_stores_each_line_once_udp() {
    interrupted_import_then_run_again("udp");
}

#[test]
fn an_import_cut_by_a_crash_and_run_again_stores_each_line_once_tcp() {
    interrupted_import_then_run_again("tcp");
}

/// The server remembers only its newest tagged writes (`--replay-memory`);
/// an import bigger than that, run again, is found in the diary itself and
/// stored nothing twice, even after other writes.
#[test]
fn an_import_bigger_than_the_retry_memory_is_stored_once_however_often_it_runs() {
    const LINES: usize = 3000;
    let limits = diary::server::limits::Limits {
        replay_memory: 100,
        ..diary::server::limits::Limits::default()
    };
    let server = TestServer::start_with(limits, diary::store::FsyncPolicy::Never);
    let input: String = (1..=LINES).map(|i| format!("old line {i}\n")).collect();
    let first = run(server.addr, &["write"], input.as_bytes());
    assert!(first.status.success(), "{}", stderr(&first));
    for text in ["a line of today", "old line 1"] {
        let o = run(server.addr, &["write", text], b"");
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for round in 0..2 {
        let again = run(server.addr, &["write"], input.as_bytes());
        assert!(again.status.success(), "round {round}: {}", stderr(&again));
        assert_eq!(
            String::from_utf8_lossy(&again.stdout).trim(),
            format!(
                "stored 0 entries\n\
                 {LINES} lines were stored by an earlier run of this import; not stored again"
            ),
            "round {round}"
        );
    }
    let stored = texts(&server.path);
    assert_eq!(stored.len(), LINES + 2, "each line once");
    assert_eq!(stored[0], "old line 1");
    assert_eq!(
        stored[LINES + 1],
        "old line 1",
        "the same text written by hand is its own entry"
    );
}

/// A small import run again is answered from the server's retry memory;
/// the client says so rather than reporting the old entries as stored.
#[test]
fn a_small_import_run_again_says_its_lines_were_stored_earlier() {
    let server = TestServer::start();
    let first = run(server.addr, &["write"], b"a\nb\n");
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(
        String::from_utf8_lossy(&first.stdout).trim(),
        "stored 2 entries (#1 to #2)"
    );
    let again = run(server.addr, &["write"], b"a\nb\n");
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "stored 0 entries\n2 lines were stored by an earlier run of this import; not stored again"
    );
    assert_eq!(texts(&server.path), ["a", "b"]);
}
