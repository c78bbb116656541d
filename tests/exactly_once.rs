//! The server's promises across restarts and hand edits: a tagged write is
//! stored once however often and by whichever transport it is retried,
//! restarts included; no write is acknowledged into a file that is no
//! longer the diary at its path; recovery tells a torn write from damage;
//! time queries hold on unordered times; the log never stops the server.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

/// One request over UDP, one reply.
fn udp(addr: SocketAddr, request: &str) -> String {
    String::from_utf8(udp_raw(addr, request.as_bytes())).unwrap()
}

/// One request on a new TCP connection; the reply's lines up to its first
/// line that ends it (`ok`, `err`, or `end`).
fn tcp_once(addr: SocketAddr, request: &str) -> Vec<String> {
    let mut c = Tcp::connect(addr);
    c.send(request);
    let mut lines = Vec::new();
    loop {
        let line = c.line();
        assert!(!line.is_empty(), "closed after {lines:?}");
        let line = line.trim_end().to_string();
        let last = line.starts_with("ok") || line.starts_with("err") || line == "end";
        lines.push(line);
        if last {
            return lines;
        }
    }
}

fn restart(daemon: Daemon, file: &Path) -> Daemon {
    let addr = daemon.addr.to_string();
    drop(daemon); // kill -9
    Daemon::try_start_at(file, &addr, &[]).expect("restarts")
}

fn past_texts(addr: SocketAddr) -> Vec<String> {
    let mut c = Tcp::connect(addr);
    c.send("/past");
    c.until_end()
        .iter()
        .map(|l| {
            diary::wire::entry::decode_line(l.as_bytes())
                .unwrap()
                .text()
        })
        .collect()
}

#[test]
fn a_retry_after_a_restart_gets_the_same_id_on_either_transport() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = Daemon::start(&file, &[]);
    let first = udp(daemon.addr, "/id retry-1 before the crash");
    assert!(first.starts_with("id retry-1\nok 1 "), "{first}");
    let tcp_first = tcp_once(daemon.addr, "/id retry-2 over tcp");
    assert!(tcp_first[1].starts_with("ok 2 "), "{tcp_first:?}");

    let daemon = restart(daemon, &file);
    assert_eq!(udp(daemon.addr, "/id retry-1 before the crash"), first);
    let again = tcp_once(daemon.addr, "/id retry-1 before the crash");
    assert_eq!(format!("{}\n{}\n", again[0], again[1]), first);
    assert_eq!(tcp_once(daemon.addr, "/id retry-2 over tcp"), tcp_first);
    let other = udp(daemon.addr, "/id retry-3 a new one");
    assert!(other.starts_with("id retry-3\nok 3 "), "{other}");
    assert_eq!(
        file_entries(&file),
        [
            (1, "before the crash".to_string()),
            (2, "over tcp".to_string()),
            (3, "a new one".to_string())
        ]
    );
}

#[test]
fn a_removed_diary_gets_no_acknowledged_write_and_is_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = Daemon::start(&file, &[]);
    let mut c = Tcp::connect(daemon.addr);
    assert_eq!(c.write("kept"), 1);
    std::fs::remove_file(&file).unwrap();
    c.send("after rm");
    let reply = c.line();
    assert!(
        reply.starts_with("err io ") && reply.contains("removed"),
        "{reply}"
    );
    let udp_reply = udp(daemon.addr, "after rm too");
    assert!(udp_reply.starts_with("err io"), "{udp_reply}");
    assert_eq!(past_texts(daemon.addr), ["kept"]);
    assert!(!file.exists(), "nothing was written at the path");
}

#[test]
fn a_renamed_diary_is_not_followed_and_ids_do_not_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let rotated = dir.path().join("diary.log.1");
    let daemon = Daemon::start(&file, &[]);
    let mut c = Tcp::connect(daemon.addr);
    c.write("one");
    std::fs::rename(&file, &rotated).unwrap();
    c.send("two");
    assert!(c.line().starts_with("err io "));
    // Moved back, it is the diary again and writes go on from its last id.
    std::fs::rename(&rotated, &file).unwrap();
    assert_eq!(c.write("two"), 2);
    assert_eq!(
        file_entries(&file),
        [(1, "one".to_string()), (2, "two".to_string())]
    );
}

#[test]
fn an_editors_save_of_the_same_diary_is_followed_and_another_file_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = Daemon::start(&file, &[]);
    let mut c = Tcp::connect(daemon.addr);
    c.write("teh typo");
    c.write("second");
    // What `sed -i` and most editors do: write a copy, rename it over.
    let edited = std::fs::read_to_string(&file)
        .unwrap()
        .replace("teh typo", "the typo");
    let copy = dir.path().join(".diary.log.swp");
    std::fs::write(&copy, &edited).unwrap();
    std::fs::rename(&copy, &file).unwrap();
    assert_eq!(c.write("third"), 3);
    assert_eq!(past_texts(daemon.addr), ["the typo", "second", "third"]);

    // A file that is not this diary, saved over it, is not written to.
    std::fs::write(&copy, "1\t2026-11-25T06:00:00.000+00:00\tsomeone else's\n").unwrap();
    std::fs::rename(&copy, &file).unwrap();
    c.send("fourth");
    let reply = c.line();
    assert!(
        reply.starts_with("err io ") && reply.contains("no diary id"),
        "{reply}"
    );
    assert_eq!(past_texts(daemon.addr), ["the typo", "second", "third"]);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "1\t2026-11-25T06:00:00.000+00:00\tsomeone else's\n"
    );
}

#[test]
fn a_truncated_or_cut_short_diary_refuses_writes_until_restored() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = Daemon::start(&file, &[]);
    let mut c = Tcp::connect(daemon.addr);
    for i in 1..=5 {
        c.write(&format!("entry {i}"));
    }
    let whole = std::fs::read(&file).unwrap();
    for cut in [0, whole.len() - 7] {
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.set_len(cut as u64).unwrap();
        c.send("too soon");
        let reply = c.line();
        assert!(
            reply.starts_with("err io ") && reply.contains("was cut to"),
            "{reply}"
        );
        // Put back as it was (same file), and writes go on.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        f.write_all(&whole[cut..]).unwrap();
    }
    assert_eq!(c.write("six"), 6);
    assert_eq!(file_entries(&file).len(), 6);
}

#[test]
fn lines_appended_by_hand_are_indexed_if_they_are_entries() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = Daemon::start(&file, &[]);
    let mut c = Tcp::connect(daemon.addr);
    c.write("one");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    writeln!(f, "# a comment a person added").unwrap();
    writeln!(f, "2\t2026-11-25T06:00:00.000+00:00\tadded by hand").unwrap();
    assert_eq!(c.write("three"), 3);
    assert_eq!(past_texts(daemon.addr), ["one", "added by hand", "three"]);

    // `echo … >> diary.log`: not an entry, so writes stop, naming the line.
    writeln!(f, "just some words").unwrap();
    c.send("four");
    let reply = c.line();
    assert!(reply.starts_with("err io "), "{reply}");
    assert!(reply.contains("diary.log:6:"), "names file:line: {reply}");
    // Reads never send the half-understood line; the client reads whole replies.
    let out = diary_command(daemon.addr, &["--proto", "tcp", "past"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 3);
}

#[test]
fn a_torn_write_with_a_hole_is_cut_at_start_and_the_server_starts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let t = "2026-11-25T06:00:01.000+00:00";
    let good = "1\t2026-11-25T06:00:00.000+00:00\tkept\n".to_string();
    let torn = format!("2\t{t}\tfi\0\0\0\0\0\0\0\0\0\0\0\0\n4\t{t}\tlast of the batch\n");
    std::fs::write(&file, format!("{good}{torn}")).unwrap();
    let mut daemon = Daemon::start(&file, &[]);
    assert_eq!(udp(daemon.addr, "p").lines().count(), 2, "one entry, end");
    let mut c = Tcp::connect(daemon.addr);
    assert_eq!(c.write("after the crash"), 2);
    drop(c);
    let side = std::fs::read(dir.path().join("diary.log.torn")).unwrap();
    assert_eq!(side, torn.as_bytes());
    daemon.child.kill().unwrap();
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("NUL") && stderr.contains("diary.log.torn"),
        "{stderr}"
    );
}

#[test]
fn hand_edit_mistakes_are_named_for_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let t = "2026-11-25T06:00:00.000+00:00";
    let cases = [
        (format!("1\t{t}\ta\n\n2\t{t}\tb\n"), 2, "blank"),
        (format!("1\t{t}\ta\n2 {t} b\n"), 2, "separated by spaces"),
        (format!("1\t{t}\ta\r\n2\t{t}\tb\r\n"), 1, "dos2unix"),
    ];
    for (content, line, says) in cases {
        let file = dir.path().join("my diary.log");
        std::fs::write(&file, &content).unwrap();
        let err = Daemon::try_start(&file, &[])
            .err()
            .expect("must refuse to start");
        assert!(err.contains(&format!("my diary.log:{line}:")), "{err}");
        assert!(err.contains(says), "{says}: {err}");
        assert!(
            err.contains(&format!("sed -n '{line}p' '")),
            "quotes the path: {err}"
        );
    }
    // A last line without its newline may be a hand edit: say both, and how to put it back.
    let file = dir.path().join("diary.log");
    std::fs::write(&file, format!("1\t{t}\ta\n2\t{t}\tb")).unwrap();
    let mut daemon = Daemon::start(&file, &[]);
    daemon.child.kill().unwrap();
    let stderr = daemon.stderr();
    assert!(stderr.contains("without its newline"), "{stderr}");
    assert!(stderr.contains("edited"), "{stderr}");
    assert!(stderr.contains("tail -n 1"), "{stderr}");
}

#[test]
fn since_a_date_is_right_on_entries_out_of_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let lines = [
        "1\t2026-11-25T08:00:00.000+00:00\tmorning",
        "2\t2026-11-25T10:00:00.000+00:00\tlate morning",
        // Imported, or written in another zone: earlier than the one before.
        "3\t2026-11-24T12:00:00.000+00:00\tyesterday, imported",
        "4\t2026-11-25T17:00:00.000+08:00\tnine o'clock UTC",
        "5\t2026-11-25T11:00:00.000+00:00\tnoon-ish",
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let daemon = Daemon::start(&file, &[]);
    let got = |since: &str| {
        let mut c = Tcp::connect(daemon.addr);
        c.send(&format!("/past since {since}"));
        c.until_end()
            .iter()
            .map(|l| l.split('\t').next().unwrap().parse::<u64>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(got("2026-11-25T08:30:00+00:00"), [2, 4, 5]);
    assert_eq!(got("2026-11-25T09:30:00+00:00"), [2, 5]);
    assert_eq!(got("2026-11-24T00:00:00+00:00"), [1, 2, 3, 4, 5]);
    assert_eq!(got("2026-11-25T00:00:00+00:00"), [1, 2, 4, 5]);
    let mut c = Tcp::connect(daemon.addr);
    c.send("/past 2 since 2026-11-25T08:30:00+00:00");
    assert_eq!(c.until_end().len(), 2);
}

#[test]
fn a_clock_that_jumped_ahead_is_not_carried_forever() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    // Written while the clock was ten years ahead.
    std::fs::write(&file, "1\t2036-11-25T06:00:00.000+00:00\tfrom the future\n").unwrap();
    let daemon = Daemon::start(&file, &[]);
    let reply = udp(daemon.addr, "now");
    let time = reply.trim_end().split(' ').nth(2).unwrap();
    let millis = diary::wire::entry::parse_timestamp(time).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((millis - now).abs() < 60_000, "stamped {time}, not now");
}

#[test]
fn a_follower_resuming_past_the_end_or_in_another_diary_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = Daemon::start(&file, &[]);
    let mut c = Tcp::connect(daemon.addr);
    c.write("one");
    c.send("/follow since 0");
    let note = c.line();
    let diary_id = note
        .trim_end()
        .split(" in diary ")
        .nth(1)
        .unwrap_or_else(|| panic!("names the diary: {note}"))
        .to_string();
    assert!(c.line().ends_with("\tone\n"));
    let past_end = tcp_once(daemon.addr, "/follow since 99");
    assert!(past_end[0].starts_with("err past-end "), "{past_end:?}");
    let mut same = Tcp::connect(daemon.addr);
    same.send(&format!("/follow since 1 diary {diary_id}"));
    assert_eq!(same.line(), note.replace("after 0", "after 1"));
    let other = tcp_once(daemon.addr, &format!("/follow diary {}", "0".repeat(32)));
    assert!(other[0].starts_with("err other-diary "), "{other:?}");
}

#[test]
fn a_follower_that_left_is_not_counted() {
    let server = TestServer::start();
    let stream = TcpStream::connect(server.addr).unwrap();
    (&stream).write_all(b"/follow\n").unwrap();
    let mut note = String::new();
    BufReader::new(&stream).read_line(&mut note).unwrap();
    assert!(note.starts_with("# following"), "{note}");
    assert_eq!(figure(&stats(server.addr), "followers"), 1);
    drop(stream);
    wait_for("the follower to be gone", Duration::from_secs(5), || {
        figure(&stats(server.addr), "followers") == 0
    });
}

#[test]
fn an_unwritable_stderr_and_an_error_flood_do_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let mut daemon = Daemon::start(&file, &[]);
    let addr = daemon.addr;
    // Nobody reads its stderr any more: every log line fails to be written.
    drop(daemon.child.stderr.take());
    std::fs::remove_file(&file).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 1024];
    for i in 0..500 {
        socket.send_to(format!("w{i}").as_bytes(), addr).unwrap();
        let n = socket.recv(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"err io"));
    }
    assert!(daemon.child.try_wait().unwrap().is_none(), "still running");
    assert!(tcp_once(addr, "h").last().unwrap() == "end");
    drop(daemon);

    // With stderr read: the 500 failures made a handful of lines, not 500.
    let file = dir.path().join("diary2.log");
    let mut daemon = Daemon::start(&file, &[]);
    std::fs::remove_file(&file).unwrap();
    for i in 0..500 {
        assert!(udp(daemon.addr, &format!("w{i}")).starts_with("err io"));
    }
    daemon.child.kill().unwrap();
    let stderr = daemon.stderr();
    assert!(stderr.lines().count() < 20, "{stderr}");
}
