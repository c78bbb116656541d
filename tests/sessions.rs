//! Encrypted sessions over time, on loopback with keys required there too
//! (`--auth-loopback`): sessions that expire are renewed by the client
//! without losing or doubling a write, on UDP, TCP and a live follow; and
//! a retried write crosses a server restart (new sessions, same key) and
//! is stored once.

use diary::client::{self, Client, FollowEvent, Options, Proto, Reply};
use diary::client::{SecureMode, Security};
use diary::event_loop::{Limits, Server, StopHandle};
use diary::secure::keys::{self, PublicKey};
use diary::server::access::gatekeeper::{AccessConfig, Gatekeeper};
use diary::store::{FsyncPolicy, Store};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

struct KeyedServer {
    addr: SocketAddr,
    stop: StopHandle,
    thread: Option<JoinHandle<()>>,
}

impl KeyedServer {
    /// diaryd's loop in a thread, with the server key at `dir/server.key`
    /// and `dir/allow`, taking keys only (loopback included).
    fn start(dir: &Path, listen: SocketAddr, lifetime: Duration) -> KeyedServer {
        let (store, _) = Store::open(&dir.join("diary.log"), FsyncPolicy::Always).unwrap();
        let (key, _) = keys::load_or_create(&dir.join("server.key")).unwrap();
        let access = AccessConfig {
            allow: Some(dir.join("allow")),
            auth_loopback: true,
            insecure_open: false,
        };
        let gate = Gatekeeper::new(key, access).unwrap();
        let limits = Limits {
            session_lifetime: lifetime,
            ..Limits::default()
        };
        let mut server = Server::bind_with(listen, store, limits, gate).unwrap();
        let addr = server.local_addr();
        let stop = server.stop_handle();
        let thread = std::thread::spawn(move || server.run().unwrap());
        KeyedServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.stop.stop();
        self.thread.take().unwrap().join().unwrap();
    }
}

impl Drop for KeyedServer {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A device allowed by `dir/allow`; its options for `addr`.
fn device(dir: &Path) -> PathBuf {
    let key = dir.join("device.key");
    let pair = keys::create_key_file(&key, false).unwrap();
    std::fs::write(dir.join("allow"), format!("{} tester all\n", pair.public)).unwrap();
    key
}

fn options(dir: &Path, key: &Path, addr: SocketAddr, proto: Proto) -> Options {
    let server_key: PublicKey = keys::load_key_file(&dir.join("server.key")).unwrap().public;
    Options {
        server: addr.to_string(),
        proto,
        timeout: Duration::from_secs(5),
        security: Security {
            mode: SecureMode::Auto,
            key: key.to_path_buf(),
            server_key: Some(server_key),
            known_servers: dir.join("known_servers"),
        },
        ..Options::default()
    }
}

fn stored_id(reply: Reply) -> u64 {
    match reply {
        Reply::Stored { id, .. } => id,
        other => panic!("not stored: {other:?}"),
    }
}

fn texts(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("diary.log")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').nth(2).unwrap().to_string())
        .collect()
}

#[test]
fn expired_sessions_are_renewed_without_losing_or_doubling_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let key = device(dir.path());
    let lifetime = Duration::from_millis(1500);
    let server = KeyedServer::start(dir.path(), "127.0.0.1:0".parse().unwrap(), lifetime);
    let (udp_opts, tcp_opts) = (
        options(dir.path(), &key, server.addr, Proto::Udp),
        options(dir.path(), &key, server.addr, Proto::Tcp),
    );
    let (tx, rx) = mpsc::channel();
    let follow_opts = tcp_opts.clone();
    let reconnects = Arc::new(AtomicUsize::new(0));
    let counted = reconnects.clone();
    std::thread::spawn(move || {
        let _ = client::follow(
            &follow_opts,
            Some(diary::client::dates::Point::AfterId(0)),
            |entry| tx.send(entry.text.clone()).is_ok(),
            |event| {
                if matches!(event, FollowEvent::Reconnecting(_)) {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            },
        );
    });
    let mut udp = Client::new(udp_opts).unwrap();
    let mut tcp = Client::new(tcp_opts).unwrap();
    assert!(udp.is_encrypted() && tcp.is_encrypted());
    let mut written = Vec::new();
    for round in 0..3 {
        for (name, client) in [("udp", &mut udp), ("tcp", &mut tcp)] {
            let text = format!("{name} round {round}");
            stored_id(client.write(&text).unwrap());
            written.push(text);
        }
        // Past the server's lifetime: every session is gone by the next round.
        std::thread::sleep(lifetime + Duration::from_millis(1100));
    }
    assert_eq!(texts(dir.path()), written);
    let followed: Vec<String> = (0..written.len())
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    assert_eq!(followed, written, "the follower missed or doubled nothing");
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    // Told its session expired, it renewed it quietly, without the pause
    // and the note of a connection that broke.
    assert_eq!(reconnects.load(Ordering::SeqCst), 0);
    let Reply::Lines(stats) = tcp.request("/stats").unwrap() else {
        panic!("stats");
    };
    assert!(
        stats.iter().any(|l| l.starts_with("sessions tester ")),
        "{stats:?}"
    );
    server.stop();
}

#[test]
fn a_retried_write_crosses_a_restart_and_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = device(dir.path());
    let lifetime = Limits::default().session_lifetime;
    let server = KeyedServer::start(dir.path(), "127.0.0.1:0".parse().unwrap(), lifetime);
    let addr = server.addr;
    for proto in [Proto::Udp, Proto::Tcp] {
        let mut client = Client::new(options(dir.path(), &key, addr, proto)).unwrap();
        let _ = client.write("warm up the session").unwrap();
    }
    let mut udp = Client::new(options(dir.path(), &key, addr, Proto::Udp)).unwrap();
    let mut tcp = Client::new(options(dir.path(), &key, addr, Proto::Tcp)).unwrap();
    let first_udp = stored_id(udp.write_tagged("retry-udp-1", "sent before").unwrap());
    let first_tcp = stored_id(tcp.write_tagged("retry-tcp-1", "sent before too").unwrap());
    server.stop();
    // The same port, key and file: the sessions are gone, the tags are not.
    let server = KeyedServer::start(dir.path(), addr, lifetime);
    let again_udp = stored_id(udp.write_tagged("retry-udp-1", "sent before").unwrap());
    let again_tcp = stored_id(tcp.write_tagged("retry-tcp-1", "sent before too").unwrap());
    assert_eq!((again_udp, again_tcp), (first_udp, first_tcp));
    stored_id(udp.write("after the restart").unwrap());
    assert_eq!(
        texts(dir.path()),
        [
            "warm up the session",
            "warm up the session",
            "sent before",
            "sent before too",
            "after the restart"
        ]
    );
    server.stop();
}
