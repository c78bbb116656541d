//! Live following: every follower sees every entry once and in order, a
//! stalled follower is bounded and resumes without a gap, and `diary follow`
//! and interactive sessions stay live across terminals and restarts.

mod common;

use common::*;
use diary::event_loop::Limits;
use diary::store::FsyncPolicy;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn follower(addr: SocketAddr, request: &str) -> BufReader<TcpStream> {
    follower_on(TcpStream::connect(addr).unwrap(), request)
}

fn entry_id(line: &str) -> u64 {
    line.split('\t')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("not an entry: {line:?}"))
}

#[test]
fn three_followers_see_every_entry_once_in_order() {
    let server = TestServer::start();
    let mut followers: Vec<_> = (0..3).map(|_| follower(server.addr, "/follow")).collect();
    let addr = server.addr;
    let writers: Vec<_> = (0..6)
        .map(|w| {
            std::thread::spawn(move || {
                if w % 2 == 0 {
                    let mut c = Tcp::connect(addr);
                    for i in 0..50 {
                        c.write(&format!("tcp writer {w} line {i} 你好"));
                    }
                } else {
                    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                    socket
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let mut buf = [0u8; 1024];
                    for i in 0..50 {
                        socket
                            .send_to(format!("udp writer {w} line {i}").as_bytes(), addr)
                            .unwrap();
                        socket.recv_from(&mut buf).unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let stored = file_entries(&server.path);
    assert_eq!(stored.len(), 300);
    for f in &mut followers {
        let mut line = String::new();
        for expected in 1..=300u64 {
            line.clear();
            f.read_line(&mut line).unwrap();
            assert_eq!(entry_id(&line), expected);
            let text = diary::wire::entry::decode_line(line.trim_end().as_bytes())
                .unwrap()
                .text();
            assert_eq!(text, stored[expected as usize - 1].1);
        }
    }
    let figures = stats(server.addr);
    assert_eq!(figure(&figures, "followers"), 3);
    assert_eq!(figure(&figures, "tcp_writes"), 150);
    assert_eq!(figure(&figures, "udp_writes"), 150);
    assert_eq!(figure(&figures, "udp_clients_last_minute"), 3);
    // The writers' connections go once the server has seen them close.
    wait_for(
        "three followers and one stats client",
        Duration::from_secs(5),
        || figure(&stats(server.addr), "tcp_clients") == 4,
    );
    assert_eq!(figure(&figures, "entries"), 300);
}

#[test]
fn follow_since_sends_the_backlog_first() {
    let server = TestServer::start();
    let mut c = Tcp::connect(server.addr);
    for i in 1..=5 {
        c.write(&format!("entry {i}"));
    }
    let mut f = follower(server.addr, "/follow since 2");
    c.write("entry 6");
    let mut line = String::new();
    for expected in 3..=6 {
        line.clear();
        f.read_line(&mut line).unwrap();
        assert_eq!(entry_id(&line), expected);
    }
}

/// Writes `count` entries of about 100 bytes, pipelined 1000 at a time;
/// returns how long it took.
fn write_many(addr: SocketAddr, count: usize) -> Duration {
    let started = Instant::now();
    let mut c = Tcp::connect(addr);
    let filler = "x".repeat(60);
    let mut batch = String::new();
    for start in (0..count).step_by(1000) {
        batch.clear();
        let end = (start + 1000).min(count);
        for i in start..end {
            batch.push_str(&format!("entry {i:06} {filler}\n"));
        }
        c.writer.write_all(batch.as_bytes()).unwrap();
        for _ in start..end {
            assert!(c.line().starts_with("ok "));
        }
    }
    started.elapsed()
}

#[test]
fn a_stalled_follower_is_bounded_then_resumes_without_a_gap() {
    const LIMIT: usize = 256 * 1024;
    const COUNT: usize = 100_000;
    let limits = Limits {
        follow_backlog: LIMIT,
        ..Limits::default()
    };
    let baseline_server = TestServer::start_with(limits.clone(), FsyncPolicy::Never);
    let baseline = write_many(baseline_server.addr, COUNT);
    drop(baseline_server);

    let server = TestServer::start_with(limits, FsyncPolicy::Never);
    // A small receive buffer, so the server's own queue is what fills up.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    let mut stalled = follower_on(stream, "/follow");

    let with_stall = write_many(server.addr, COUNT);
    println!("100k writes: {baseline:?} alone, {with_stall:?} with a stalled follower");
    // A loop that waited for the follower would never finish: the bound
    // is loose so that a busy machine's noise cannot fail it.
    assert!(
        with_stall < baseline * 10 + Duration::from_secs(10),
        "writers must not wait for a stalled follower ({with_stall:?} vs {baseline:?})"
    );
    let figures = stats(server.addr);
    assert_eq!(figure(&figures, "dropped_followers"), 1);
    let peak = figure(&figures, "follower_queue_peak_bytes");
    println!("stalled follower's queue peaked at {peak} bytes (limit {LIMIT})");
    assert!(peak as usize <= LIMIT && peak > 0);

    // The follower reads again: all it was sent, then the notice, then EOF.
    let mut ids = Vec::new();
    let mut resume = None;
    for line in (&mut stalled).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("err behind ") {
            resume = Some(
                rest.rsplit("since ")
                    .next()
                    .unwrap()
                    .trim_end_matches('"')
                    .parse::<u64>()
                    .unwrap(),
            );
        } else {
            ids.push(entry_id(&line));
        }
    }
    let resume = resume.expect("a final notice with the id to resume from");
    assert_eq!(
        ids.last().copied().unwrap_or(0),
        resume,
        "the notice names the last id sent"
    );
    let mut rest = follower(server.addr, &format!("/follow since {resume}"));
    let mut line = String::new();
    while ids.last().copied() != Some(COUNT as u64) {
        line.clear();
        rest.read_line(&mut line).unwrap();
        ids.push(entry_id(&line));
    }
    let expected: Vec<u64> = (1..=COUNT as u64).collect();
    assert!(ids == expected, "every entry exactly once, in order");
}

fn follower_on(mut stream: TcpStream, request: &str) -> BufReader<TcpStream> {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut note = String::new();
    reader.read_line(&mut note).unwrap();
    assert!(note.starts_with("# following entries after "), "{note}");
    reader
}

struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_diary(server: SocketAddr, args: &[&str]) -> (Spawned, LineFeed) {
    let mut child = diary_command(server, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let feed = LineFeed::new(child.stdout.take().unwrap());
    (Spawned(child), feed)
}

#[test]
fn diary_follow_survives_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diary.log");
    let first = Daemon::start(&path, &[]);
    let addr = first.addr;
    let (_follow, feed) = spawn_diary(addr, &["follow", "--json"]);
    // Wait until the follower is connected, then write.
    wait_for("the follower", Duration::from_secs(5), || {
        let mut c = Tcp::connect(addr);
        c.send("/stats");
        c.until_end().iter().any(|l| l == "followers 1")
    });
    let mut c = Tcp::connect(addr);
    for i in 1..=3 {
        c.write(&format!("before restart {i}"));
    }
    let got = feed.until(Duration::from_secs(5), |l| l.contains("before restart 3"));
    assert_eq!(got.len(), 3);
    drop(c);
    drop(first);
    let second =
        Daemon::try_start_at(&path, &addr.to_string(), &[]).expect("restart on the same port");
    let mut c = Tcp::connect(second.addr);
    for i in 1..=3 {
        c.write(&format!("after restart {i}"));
    }
    let got = feed.until(Duration::from_secs(10), |l| l.contains("after restart 3"));
    let texts: Vec<String> = got
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        texts,
        ["after restart 1", "after restart 2", "after restart 3"]
    );
}

#[test]
fn two_interactive_terminals_see_each_others_lines_live() {
    let server = TestServer::start();
    let (mut a, a_out) = spawn_diary(server.addr, &[]);
    let (mut b, b_out) = spawn_diary(server.addr, &["--proto", "tcp"]);
    a_out.until(Duration::from_secs(5), |l| l.starts_with("Writing to"));
    b_out.until(Duration::from_secs(5), |l| l.starts_with("Writing to"));
    wait_for("both live views", Duration::from_secs(5), || {
        figure(&stats(server.addr), "followers") == 2
    });
    let a_in = a.0.stdin.as_mut().unwrap();
    a_in.write_all("你好，我是 A\n".as_bytes()).unwrap();
    a_out.until(Duration::from_secs(5), |l| l.contains("stored #1"));
    let seen_by_b = b_out.until(Duration::from_secs(5), |l| l.contains("你好，我是 A"));
    assert!(seen_by_b.last().unwrap().trim_start().starts_with("1 "));
    let b_in = b.0.stdin.as_mut().unwrap();
    b_in.write_all(b"hello from B\n").unwrap();
    a_out.until(Duration::from_secs(5), |l| l.contains("hello from B"));
    // Each sees its own line once, as "stored", not again from the live view.
    let a_rest = a_out.drain(Duration::from_millis(300));
    assert!(!a_rest.iter().any(|l| l.contains("我是 A")), "{a_rest:?}");
    drop(a.0.stdin.take());
    drop(b.0.stdin.take());
    assert!(a.0.wait().unwrap().success());
    assert!(b.0.wait().unwrap().success());
}
