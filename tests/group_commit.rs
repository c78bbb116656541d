//! Pipelined group commit: while a batch's fdatasync runs (here: waits at
//! a gate the test holds), the loop goes on serving, but no ack and no
//! read of an entry leaves before the flush that covers it has returned.

mod common;

use common::*;
use diary::event_loop::{Limits, Server};
use diary::store::disk::{Disk, SyncFn};
use diary::store::{FsyncPolicy, Store};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Flushes wait until the gate is open; `fail_next` makes the next one fail.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
    waiting: Mutex<u32>,
    fail_next: AtomicBool,
}

impl Gate {
    fn pass(&self) {
        *self.waiting.lock().unwrap() += 1;
        let open = self.open.lock().unwrap();
        let _open = self.changed.wait_while(open, |open| !*open).unwrap();
        *self.waiting.lock().unwrap() -= 1;
    }

    fn set(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.changed.notify_all();
    }
}

struct GatedDisk {
    file: File,
    gate: Arc<Gate>,
}

impl Disk for GatedDisk {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.gate.pass();
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn sync_handle(&self) -> io::Result<SyncFn> {
        let (file, gate) = (self.file.try_clone()?, self.gate.clone());
        Ok(Box::new(move || {
            gate.pass();
            if gate.fail_next.swap(false, Ordering::SeqCst) {
                return Err(io::Error::other("injected fdatasync failure"));
            }
            file.sync_data()
        }))
    }
}

/// Whether a line arrives within `wait`.
fn replies_within(c: &mut Tcp, wait: Duration) -> Option<String> {
    c.writer.set_read_timeout(Some(wait)).unwrap();
    let mut line = String::new();
    let got = std::io::BufRead::read_line(&mut c.reader, &mut line);
    c.writer
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    match got {
        Ok(n) if n > 0 => Some(line),
        _ => None,
    }
}

/// A server whose flushes pass `gate`, not yet running.
fn gated_unstarted(path: &std::path::Path, gate: &Arc<Gate>) -> Server {
    let disk_gate = gate.clone();
    let (store, _) = Store::open_on(path, FsyncPolicy::Always, move |file| {
        Box::new(GatedDisk {
            file,
            gate: disk_gate,
        })
    })
    .unwrap();
    Server::bind("127.0.0.1:0".parse().unwrap(), store, Limits::default()).unwrap()
}

/// A server in a thread whose flushes pass `gate`.
fn gated_server(
    path: &std::path::Path,
    gate: &Arc<Gate>,
) -> (
    std::net::SocketAddr,
    diary::event_loop::StopHandle,
    std::thread::JoinHandle<()>,
) {
    let mut server = gated_unstarted(path, gate);
    let addr = server.local_addr();
    let stop = server.stop_handle();
    (
        addr,
        stop,
        std::thread::spawn(move || server.run().unwrap()),
    )
}

#[test]
fn the_loop_serves_while_a_flush_runs_and_acks_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diary.log");
    let gate = Arc::new(Gate::default());
    let (addr, stop, thread) = gated_server(&path, &gate);

    let mut first = Tcp::connect(addr);
    first.send("first, flushing");
    wait_for("the flush to start", Duration::from_secs(5), || {
        *gate.waiting.lock().unwrap() == 1
    });
    assert_eq!(replies_within(&mut first, Duration::from_millis(300)), None);

    // The loop is free: other clients are served meanwhile.
    let mut other = Tcp::connect(addr);
    other.send("h");
    assert!(other.until_end().iter().any(|l| l.contains("/write")));
    let udp_help = udp_raw(addr, b"h");
    assert!(String::from_utf8_lossy(&udp_help).contains("/past"));
    // A second write is written behind the first and waits too, and so
    // does a read that would show them, on either transport.
    let mut second = Tcp::connect(addr);
    second.send("second, behind it");
    let mut reader = Tcp::connect(addr);
    reader.send("p");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"p", addr).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(udp.recv(&mut buf).is_err(), "a read waits for the flush");
    assert_eq!(
        replies_within(&mut second, Duration::from_millis(300)),
        None
    );
    assert_eq!(
        replies_within(&mut reader, Duration::from_millis(100)),
        None
    );
    assert_eq!(file_entries(&path).len(), 2, "both are written");

    gate.set(true);
    assert_eq!(ack_id(&first.line()), 1);
    assert_eq!(ack_id(&second.line()), 2);
    let mut past = vec![reader.line()];
    past.extend(reader.until_end());
    assert_eq!(past.len(), 2, "{past:?}");
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = udp.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("first, flushing"));
    stop.stop();
    thread.join().unwrap();
}

#[test]
fn a_failed_flush_fails_exactly_the_writes_not_yet_durable_and_cuts_them_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diary.log");
    let gate = Arc::new(Gate::default());
    let (addr, stop, thread) = gated_server(&path, &gate);
    gate.set(true);
    let mut kept = Tcp::connect(addr);
    assert_eq!(kept.write("durable before"), 1);

    gate.set(false);
    let mut first = Tcp::connect(addr);
    first.send("/id f1 in the failing flush");
    wait_for("the flush to start", Duration::from_secs(5), || {
        *gate.waiting.lock().unwrap() == 1
    });
    // The next batch grows behind the flush (a read would write it at once).
    let mut second = Tcp::connect(addr);
    second.send("/id f2 behind it");
    // The tag line may go; the ack after it waits.
    assert_eq!(second.line(), "id f2\n");
    assert_eq!(
        replies_within(&mut second, Duration::from_millis(300)),
        None
    );
    gate.fail_next.store(true, Ordering::SeqCst);
    gate.set(true);
    assert_eq!(first.line(), "id f1\n");
    for c in [&mut first, &mut second] {
        let reply = c.line();
        assert!(reply.starts_with("err io "), "{reply}");
    }
    assert_eq!(
        file_entries(&path),
        [(1, "durable before".to_string())],
        "cut back to what was durable"
    );
    // Writes go on, the failed ids are given again, and a retry is stored.
    first.send("/id f1 in the failing flush");
    assert_eq!(first.line(), "id f1\n");
    assert_eq!(ack_id(&first.line()), 2);
    assert_eq!(kept.write("after"), 3);
    stop.stop();
    thread.join().unwrap();
    assert_eq!(file_entries(&path).len(), 3);
}

/// The page's writes wait for their flush as TCP acks do, and a failed
/// flush answers them with its error, never an `ok`.
#[test]
fn a_web_write_is_answered_once_durable_and_a_failed_flush_says_so() {
    use common::web::{Http, log_in};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diary.log");
    let gate = Arc::new(Gate::default());
    let mut server = gated_unstarted(&path, &gate);
    let (web, _, url) = server
        .serve_web(
            "127.0.0.1:0".parse().unwrap(),
            None,
            None,
            dir.path().join("sessions"),
        )
        .unwrap();
    let stop = server.stop_handle();
    let thread = std::thread::spawn(move || server.run().unwrap());
    gate.set(true);
    let cookie = format!("diary_session={}", log_in(web, &url));
    let origin = format!("http://{web}");
    let headers = [("Origin", origin.as_str()), ("Cookie", cookie.as_str())];
    let request = format!(
        "POST /api HTTP/1.1\r\nHost: {web}\r\nOrigin: {origin}\r\nCookie: {cookie}\r\n\
         Content-Length: 32\r\n\r\n/id w1 /write held for its flush"
    );
    let mut raw = std::net::TcpStream::connect(web).unwrap();
    gate.set(false);
    raw.write_all(request.as_bytes()).unwrap();
    wait_for("the flush to start", Duration::from_secs(5), || {
        *gate.waiting.lock().unwrap() == 1
    });
    // Nothing of the response comes back while its flush runs.
    raw.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        std::io::Read::read(&mut raw, &mut byte).is_err(),
        "a response before the flush returned"
    );
    gate.fail_next.store(true, Ordering::SeqCst);
    gate.set(true);
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut http = Http::over(raw, web);
    let failed = http.response();
    assert_eq!(failed.status, 200);
    assert!(
        failed.text().starts_with("id w1\nerr io "),
        "{}",
        failed.text()
    );
    assert!(file_entries(&path).is_empty(), "cut back: nothing durable");
    // Sent again, it is stored.
    let stored = http.request(
        "POST",
        "/api",
        &headers,
        b"/id w1 /write held for its flush",
    );
    assert!(
        stored.text().starts_with("id w1\nok 1 "),
        "{}",
        stored.text()
    );
    stop.stop();
    thread.join().unwrap();
    assert_eq!(file_entries(&path).len(), 1);
}
