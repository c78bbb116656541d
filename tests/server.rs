//! The core server over real sockets: seed commands on both transports,
//! concurrency, restart, recovery, locking and crash durability.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

const CHINESE: &str = "今天下雨了，我在家写日记。🌧️ 「引号」";

#[test]
fn udp_write_p_h_e_like_the_seed_client() {
    let server = TestServer::start();
    let ack = String::from_utf8(udp_raw(server.addr, CHINESE.as_bytes())).unwrap();
    assert_eq!(ack_id(&ack), 1);
    let ack = String::from_utf8(udp_raw(server.addr, b"second line\n")).unwrap();
    assert_eq!(ack_id(&ack), 2);

    let past = String::from_utf8(udp_raw(server.addr, b"p")).unwrap();
    let lines: Vec<&str> = past.lines().collect();
    assert_eq!(lines.len(), 3, "{past}");
    assert!(lines[0].starts_with("1\t") && lines[0].ends_with(&format!("\t{CHINESE}")));
    assert!(lines[1].ends_with("\tsecond line"));
    assert_eq!(lines[2], "end");

    let help = udp_raw(server.addr, b"h");
    assert!(help.len() <= 1024);
    assert!(String::from_utf8(help).unwrap().contains("/past"));
    assert_eq!(udp_raw(server.addr, b"e"), b"bye\n");
    // `e` never stops the server.
    assert_eq!(
        ack_id(&String::from_utf8(udp_raw(server.addr, b"after e")).unwrap()),
        3
    );
    assert_eq!(file_entries(&server.path)[0], (1, CHINESE.to_string()));
}

#[test]
fn tcp_write_p_h_e_and_byte_exact_chinese() {
    let server = TestServer::start();
    let mut c = Tcp::connect(server.addr);
    assert_eq!(c.write(CHINESE), 1);
    c.writer.write_all("crlf 行\r\n".as_bytes()).unwrap();
    assert_eq!(ack_id(&c.line()), 2);
    c.send("p");
    let past = c.until_end();
    assert_eq!(past.len(), 2);
    let first = diary::wire::entry::decode_line(past[0].as_bytes()).unwrap();
    assert_eq!(first.text().as_bytes(), CHINESE.as_bytes());
    assert!(past[1].ends_with("\tcrlf 行"));
    c.send("h");
    assert!(c.until_end().iter().any(|l| l.contains("/write")));
    c.send("e");
    assert_eq!(c.line(), "bye\n");
    assert_eq!(c.line(), "", "the server closes the session after bye");
    // The server still serves others.
    let mut d = Tcp::connect(server.addr);
    assert_eq!(d.write("still here"), 3);
}

#[test]
fn commands_and_their_escapes() {
    let server = TestServer::start();
    let mut c = Tcp::connect(server.addr);
    assert_eq!(c.write("/write p"), 1);
    assert_eq!(c.write("/write /past"), 2);
    assert_eq!(c.write("back\\slash\ttab"), 3);
    c.send("/nope");
    assert!(c.line().starts_with("err unknown-command /nope"));
    c.send("");
    assert!(c.line().starts_with("err empty"));
    c.send("/past 2");
    let past = c.until_end();
    assert_eq!(past.len(), 2);
    assert!(past[1].ends_with("\tback\\\\slash\\ttab"), "{past:?}");
    // Tagged requests are answered with their tag first.
    c.send("/id t1 /past 1");
    assert_eq!(c.line(), "id t1\n");
    assert_eq!(c.until_end().len(), 1);
    let texts: Vec<String> = file_entries(&server.path)
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(texts, ["p", "/past", "back\\slash\ttab"]);
}

#[test]
fn invalid_utf8_and_nul_get_errors_and_store_nothing() {
    let server = TestServer::start();
    let reply = udp_raw(server.addr, b"bad \xff\xfe bytes");
    assert!(
        reply.starts_with(b"err bad-utf8"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let reply = udp_raw(server.addr, b"nul\0inside");
    assert!(reply.starts_with(b"err bad-byte"));
    let mut c = Tcp::connect(server.addr);
    c.writer
        .write_all(b"\xc3\x28\nnul \0 here\nfine\n")
        .unwrap();
    assert!(c.line().starts_with("err bad-utf8"));
    assert!(c.line().starts_with("err bad-byte"));
    assert_eq!(ack_id(&c.line()), 1);
    assert_eq!(file_entries(&server.path), [(1, "fine".to_string())]);
}

#[test]
fn raw_udp_p_shows_the_newest_that_fit_and_says_how_many_are_left_out() {
    let server = TestServer::start();
    let mut c = Tcp::connect(server.addr);
    for i in 1..=200 {
        c.write(&format!("第{i}条日记 entry number {i}"));
    }
    let reply = udp_raw(server.addr, b"p\n");
    assert!(reply.len() <= 1024);
    let text = String::from_utf8(reply).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("# ") && lines[0].contains("left out"),
        "{text}"
    );
    let left_out: u64 = lines[0][2..].split(' ').next().unwrap().parse().unwrap();
    let shown: Vec<u64> = lines[1..lines.len() - 1]
        .iter()
        .map(|l| l.split('\t').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(*lines.last().unwrap(), "end");
    assert_eq!(left_out + shown.len() as u64, 200);
    assert_eq!(shown.last(), Some(&200), "newest last");
    assert!(
        shown.windows(2).all(|w| w[1] == w[0] + 1),
        "oldest first, no gaps"
    );
    assert!(shown.len() >= 5);
    // Over TCP the whole history comes back.
    c.send("p");
    assert_eq!(c.until_end().len(), 200);
}

#[test]
fn many_clients_on_both_transports_every_ack_stored_once() {
    let server = TestServer::start();
    let addr = server.addr;
    let mut threads = Vec::new();
    for t in 0..8 {
        threads.push(std::thread::spawn(move || {
            let mut c = Tcp::connect(addr);
            (0..50)
                .map(|i| {
                    let text = format!("tcp {t} {i} 你好");
                    (c.write(&text), text)
                })
                .collect::<Vec<_>>()
        }));
        threads.push(std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 1024];
            (0..50)
                .map(|i| {
                    let text = format!("udp {t} {i} 世界");
                    socket.send_to(text.as_bytes(), addr).unwrap();
                    let (n, _) = socket.recv_from(&mut buf).unwrap();
                    (ack_id(std::str::from_utf8(&buf[..n]).unwrap()), text)
                })
                .collect::<Vec<_>>()
        }));
    }
    let acked: Vec<(u64, String)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let stored: HashMap<u64, String> = file_entries(&server.path).into_iter().collect();
    assert_eq!(stored.len(), 800);
    for (id, text) in &acked {
        assert_eq!(
            stored.get(id),
            Some(text),
            "ack {id} must point at its own text"
        );
    }
    let mut texts: Vec<&String> = stored.values().collect();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), 800, "nothing stored twice");
}

#[test]
fn restart_keeps_entries_and_ids() {
    let server = TestServer::start();
    let mut c = Tcp::connect(server.addr);
    assert_eq!(c.write("before restart"), 1);
    assert_eq!(c.write("第二条"), 2);
    drop(c);
    let (dir, path) = server.stop();
    let server = TestServer::start_in(
        dir,
        path,
        Default::default(),
        diary::store::FsyncPolicy::Always,
    );
    let mut c = Tcp::connect(server.addr);
    c.send("p");
    let past = c.until_end();
    assert!(past[0].starts_with("1\t") && past[0].ends_with("\tbefore restart"));
    assert!(past[1].starts_with("2\t") && past[1].ends_with("\t第二条"));
    assert_eq!(c.write("after restart"), 3);
}

#[test]
fn a_clean_stop_saves_the_index_and_only_an_unchanged_diary_is_read_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diary.log");
    let index = dir.path().join("diary.log.index");
    let daemon = Daemon::start(&path, &[]);
    let addr = daemon.addr.to_string();
    let mut c = Tcp::connect(daemon.addr);
    assert_eq!(c.write("one"), 1);
    c.send("/id tagged-2 two");
    assert_eq!(c.line(), "id tagged-2\n");
    assert!(c.line().starts_with("ok 2 "));
    assert_eq!(c.write(CHINESE), 3);
    drop(c);
    assert!(!index.exists(), "saved only at a stop");
    daemon.terminate();
    assert!(index.exists(), "a clean stop saves the index");

    // Started again on the same file: read from the index, and whole.
    let mut daemon = Daemon::try_start_at(&path, &addr, &[]).unwrap();
    let mut c = Tcp::connect(daemon.addr);
    c.send("/past");
    let past = c.until_end();
    assert_eq!(past.len(), 3, "{past:?}");
    assert!(past[2].starts_with("3\t") && past[2].ends_with(CHINESE));
    c.send("/id tagged-2 two");
    assert_eq!(c.line(), "id tagged-2\n");
    assert!(
        c.line().starts_with("ok 2 "),
        "the retry memory is back too"
    );
    assert_eq!(c.write("four"), 4);
    drop(c);
    // A crash after a write: the saved index no longer matches the file.
    daemon.child.kill().unwrap();
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("read the index saved at the last stop (3 entries)"),
        "{stderr}"
    );
    let stderr = Daemon::try_start_at(&path, &addr, &[]).unwrap().terminate();
    assert!(stderr.contains("not using the saved index"), "{stderr}");
    assert!(stderr.contains("the diary changed"), "{stderr}");
    let mut daemon = Daemon::try_start_at(&path, &addr, &[]).unwrap();
    let mut c = Tcp::connect(daemon.addr);
    assert_eq!(c.write("five"), 5);
    daemon.child.kill().unwrap();
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("read the index saved at the last stop (4 entries)"),
        "{stderr}"
    );
    let texts: Vec<String> = file_entries(&path).into_iter().map(|(_, t)| t).collect();
    assert_eq!(texts, ["one", "two", CHINESE, "four", "five"]);
}

#[test]
fn torn_tail_is_cut_and_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diary.log");
    std::fs::write(
        &path,
        "1\t2026-11-25T06:00:00.000+00:00\tfirst\n2\t2026-11-25T06:00:01.000+00:00\tsec",
    )
    .unwrap();
    let mut daemon = Daemon::start(&path, &[]);
    let mut c = Tcp::connect(daemon.addr);
    c.send("p");
    assert_eq!(c.until_end().len(), 1);
    assert_eq!(c.write("new second"), 2);
    let side = std::fs::read_to_string(dir.path().join("diary.log.torn")).unwrap();
    assert_eq!(side, "2\t2026-11-25T06:00:01.000+00:00\tsec\n");
    daemon.child.kill().unwrap();
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("warning") && stderr.contains("diary.log.torn"),
        "{stderr}"
    );
    assert_eq!(
        file_entries(&path),
        [(1, "first".to_string()), (2, "new second".to_string())]
    );
}

#[test]
fn corrupt_middle_line_refuses_to_start_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diary.log");
    let content =
        "1\t2026-11-25T06:00:00.000+00:00\tok\n2\tgarbage\n3\t2026-11-25T06:00:01.000+00:00\tok\n";
    std::fs::write(&path, content).unwrap();
    let err = Daemon::try_start(&path, &[])
        .err()
        .expect("must refuse to start");
    assert!(err.contains("diary.log:2:"), "{err}");
    assert!(err.contains("sed -n '2p'"), "says how to look: {err}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        content,
        "file untouched"
    );
}

#[test]
fn second_server_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diary.log");
    let first = Daemon::start(&path, &[]);
    let err = Daemon::try_start(&path, &[])
        .err()
        .expect("second must be refused");
    assert!(err.contains("already in use"), "{err}");
    let mut c = Tcp::connect(first.addr);
    assert_eq!(c.write("first still serves"), 1);
}

#[test]
fn kill_9_during_writes_loses_no_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diary.log");
    let mut daemon = Daemon::start(&path, &["--fsync", "always"]);
    let addr = daemon.addr;
    let writers: Vec<_> = (0..4)
        .map(|who| std::thread::spawn(move || tcp_writer(addr, who)))
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    let acked: Vec<(u64, String)> = writers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(acked.len() > 20, "writers made progress ({})", acked.len());
    let (store, _) = diary::store::Store::open(&path, diary::store::FsyncPolicy::Always).unwrap();
    drop(store); // recovery ran (a torn tail would be cut), and the file reads cleanly
    let stored: HashMap<u64, String> = file_entries(&path).into_iter().collect();
    for (id, text) in &acked {
        assert_eq!(stored.get(id), Some(text));
    }
}

#[test]
fn a_connection_closing_mid_line_stores_nothing_of_it() {
    let server = TestServer::start();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"complete\nhalf a li").unwrap();
    drop(s);
    let mut c = Tcp::connect(server.addr);
    c.send("p");
    let past = c.until_end();
    assert_eq!(past.len(), 1);
    assert!(past[0].ends_with("\tcomplete"));
}

/// A read pipelined behind writes (in one TCP packet, or datagrams of one
/// batch) sees every one of them: the pending batch is committed first.
#[test]
fn a_read_behind_writes_in_the_same_batch_sees_them() {
    let server = TestServer::start();
    let mut c = Tcp::connect(server.addr);
    c.writer
        .write_all("one\n/id t1 two\n/id t2 /past\n/stats\nthree\np\n".as_bytes())
        .unwrap();
    assert_eq!(ack_id(&c.line()), 1);
    assert_eq!(c.line(), "id t1\n");
    assert_eq!(ack_id(&c.line()), 2);
    assert_eq!(c.line(), "id t2\n");
    let past = c.until_end();
    assert_eq!(past.len(), 2, "{past:?}");
    let stats = c.until_end();
    assert!(stats.contains(&"entries 2".to_string()), "{stats:?}");
    assert_eq!(ack_id(&c.line()), 3);
    assert_eq!(c.until_end().len(), 3);

    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    udp.send_to(b"four", server.addr).unwrap();
    udp.send_to(b"/past 1", server.addr).unwrap();
    let mut buf = [0u8; 2048];
    let mut replies = Vec::new();
    for _ in 0..2 {
        let n = udp.recv(&mut buf).unwrap();
        replies.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(replies[0].starts_with("ok 4 "), "{replies:?}");
    assert!(replies[1].contains("\tfour\n"), "{replies:?}");
}

/// A search that has more of the file to look through than one datagram's
/// share (1 MiB) is answered "truncated" over UDP, so the client asks over
/// TCP, where the reply streams a piece per turn of the loop; over both,
/// `diary` finds the same entries.
#[test]
fn a_search_through_a_big_diary_is_answered_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diary.log");
    {
        let policy = diary::store::FsyncPolicy::Never;
        let (mut store, _) = diary::store::Store::open(&path, policy).unwrap();
        for i in 0..20_000 {
            store.append(&format!("entry {i} of a long diary, nothing to see"), None);
        }
        store.append("a zebra passed", None);
        store.commit().unwrap();
    }
    assert!(std::fs::metadata(&path).unwrap().len() > 1 << 20);
    let server = TestServer::start_in(
        dir,
        path,
        diary::server::limits::Limits::default(),
        diary::store::FsyncPolicy::Never,
    );
    let reply = udp_raw(server.addr, b"/id z1 /past grep zebra");
    assert_eq!(String::from_utf8_lossy(&reply), "id z1 truncated\n");
    // The newest few are still looked for in one datagram.
    let reply = udp_raw(server.addr, b"/id z2 /past since 20000 grep zebra");
    assert!(
        String::from_utf8_lossy(&reply).contains("a zebra passed"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // A plain datagram gets what the newest 1 MiB holds, and is told so.
    let reply = String::from_utf8(udp_raw(server.addr, b"/past grep zebra")).unwrap();
    let lines: Vec<&str> = reply.lines().collect();
    assert!(
        lines[0].starts_with("# only the newest ") && lines[0].contains("over TCP"),
        "{reply}"
    );
    assert!(
        lines[1].ends_with("\ta zebra passed") && lines[2] == "end",
        "{reply}"
    );
    for proto in ["udp", "tcp"] {
        let o = run_diary(
            server.addr,
            &["--proto", proto, "past", "--grep", "zebra"],
            b"",
        );
        assert!(o.status.success(), "{proto}: {o:?}");
        let shown = String::from_utf8_lossy(&o.stdout);
        assert_eq!(shown.lines().count(), 1, "{proto}: {shown}");
        assert!(shown.contains("a zebra passed"), "{proto}: {shown}");
    }
}

/// `/stats` says how many flushes ran off the loop and how long they took:
/// what a durable reply waits for at the least.
#[test]
fn stats_show_the_flushes_and_their_durations() {
    let server = TestServer::start();
    let mut tcp = Tcp::connect(server.addr);
    for n in 0..5 {
        tcp.write(&format!("flushed {n}"));
    }
    let figures = stats(server.addr);
    assert!(figure(&figures, "fsyncs") >= 1, "{figures:?}");
    let (p50, p99, max) = (
        figure(&figures, "fsync_p50_us"),
        figure(&figures, "fsync_p99_us"),
        figure(&figures, "fsync_max_us"),
    );
    assert!(p50 > 0 && p50 <= p99 && p99 <= max, "{figures:?}");
    // And how long each result then waited for the loop to take it in.
    assert!(
        figure(&figures, "fsync_handoff_p50_us") <= figure(&figures, "fsync_handoff_max_us"),
        "{figures:?}"
    );
    // With nothing flushed off the loop there is nothing to say.
    let never = TestServer::start_with(
        diary::event_loop::Limits::default(),
        diary::store::FsyncPolicy::Never,
    );
    let figures = stats(never.addr);
    assert!(
        figures.iter().all(|(name, _)| !name.starts_with("fsync")),
        "{figures:?}"
    );
}

/// `/stats` says where the loop's time goes: each phase of a turn, the
/// wait of a written batch for its flush, and the batches' sizes.
#[test]
fn stats_show_where_the_loops_time_goes() {
    let server = TestServer::start();
    let mut tcp = Tcp::connect(server.addr);
    for n in 0..5 {
        tcp.write(&format!("timed {n}"));
    }
    let figures = stats(server.addr);
    assert!(figure(&figures, "turns") >= 5, "{figures:?}");
    assert!(figure(&figures, "batches") >= 5, "{figures:?}");
    for phase in ["serve", "commit", "feed", "flush", "turn", "durable_wait"] {
        let p50 = figure(&figures, &format!("{phase}_p50_us"));
        let max = figure(&figures, &format!("{phase}_max_us"));
        assert!(p50 <= max, "{phase}: {figures:?}");
    }
    // One write in flight at a time: one entry per batch.
    assert_eq!(figure(&figures, "batch_entries_max"), 1, "{figures:?}");
    // A batch waits at least for its fdatasync.
    assert!(
        figure(&figures, "durable_wait_max_us") >= figure(&figures, "fsync_p50_us"),
        "{figures:?}"
    );
    assert!(
        figure(&figures, "turn_max_us") >= figure(&figures, "serve_max_us"),
        "{figures:?}"
    );
}
