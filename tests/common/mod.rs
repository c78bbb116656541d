//! Shared test helpers: a server on 127.0.0.1 port 0 over a tempdir diary
//! (in a thread, or as the real `diaryd` process), and small clients.
#![allow(dead_code)]

use diary::event_loop::{Limits, Server, StopHandle};
use diary::store::{FsyncPolicy, Store};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod browser;
pub mod netns;
pub mod web;
pub mod writers;

/// A server running in a thread of the test; stopped and joined on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub path: PathBuf,
    pub dir: tempfile::TempDir,
    stop: StopHandle,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(Limits::default(), FsyncPolicy::Always)
    }

    pub fn start_with(limits: Limits, policy: FsyncPolicy) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("diary.log");
        Self::start_in(dir, path, limits, policy)
    }

    pub fn start_in(
        dir: tempfile::TempDir,
        path: PathBuf,
        limits: Limits,
        policy: FsyncPolicy,
    ) -> TestServer {
        Self::start_listening(dir, path, "127.0.0.1:0".parse().unwrap(), limits, policy)
    }

    /// As [`TestServer::start_in`], on another address (a test namespace's).
    pub fn start_listening(
        dir: tempfile::TempDir,
        path: PathBuf,
        listen: SocketAddr,
        limits: Limits,
        policy: FsyncPolicy,
    ) -> TestServer {
        let (store, _) = Store::open(&path, policy).unwrap();
        let mut server = Server::bind(listen, store, limits).unwrap();
        let addr = server.local_addr();
        let stop = server.stop_handle();
        let thread = std::thread::spawn(move || server.run().unwrap());
        TestServer {
            addr,
            path,
            dir,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the server and hands back its directory (to start another on it).
    pub fn stop(mut self) -> (tempfile::TempDir, PathBuf) {
        self.shutdown();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, self.path.clone())
    }

    fn shutdown(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The real `diaryd` binary, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    /// The server's public key, from its second line.
    pub key: String,
    /// The rest of what it prints (the web login line, with `--web`).
    pub stdout: BufReader<std::process::ChildStdout>,
}

impl Daemon {
    pub fn start(file: &Path, extra: &[&str]) -> Daemon {
        match Self::try_start(file, extra) {
            Ok(d) => d,
            Err(stderr) => panic!("diaryd did not start: {stderr}"),
        }
    }

    /// Starts diaryd and waits for its "listening on" line; on failure returns its stderr.
    pub fn try_start(file: &Path, extra: &[&str]) -> Result<Daemon, String> {
        Self::try_start_at(file, "127.0.0.1:0", extra)
    }

    pub fn try_start_at(file: &Path, listen: &str, extra: &[&str]) -> Result<Daemon, String> {
        Self::try_start_with_env(file, listen, extra, &[])
    }

    /// As [`Daemon::try_start_at`], with environment variables set (`TZ`).
    pub fn try_start_with_env(
        file: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Daemon, String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_diaryd"));
        command
            .envs(env.iter().copied())
            .arg("--listen")
            .arg(listen)
            .arg("--file")
            .arg(file)
            .args(extra);
        Self::spawn(command)
    }

    /// Runs `command` (diaryd, perhaps through `ip netns exec`) and waits
    /// for its two lines: where it listens, and its key.
    pub fn spawn(mut command: Command) -> Result<Daemon, String> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let Some(addr) = diary::event_loop::announced_addr(&line) else {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            child.wait().unwrap();
            return Err(stderr);
        };
        let mut second = String::new();
        stdout.read_line(&mut second).unwrap();
        let key = second
            .strip_prefix("server key ")
            .expect("the server key on the second line")
            .trim()
            .to_string();
        Ok(Daemon {
            child,
            addr,
            key,
            stdout,
        })
    }

    /// Stops diaryd as a service manager does (SIGTERM), waits at most
    /// 10 s for it to exit, asserts it exited 0, and returns what it logged.
    pub fn terminate(mut self) -> String {
        // SAFETY: signalling our own child.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "diaryd ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = self.stderr();
        assert!(status.success(), "{status}: {stderr}");
        stderr
    }

    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut s).unwrap();
        }
        s
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `diary` client binary aimed at `server`, with `args` after it.
/// Without USER or DIARY_NAME, entries carry no author unless a test
/// names one, and no config file is read (the tester's own could set
/// another transport), so what tests read does not depend on who runs them.
pub fn diary_command(server: SocketAddr, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_diary"));
    command
        .env_remove("USER")
        .env_remove("DIARY_NAME")
        .env("DIARY_CONFIG", "/nonexistent/diary-tests/config.toml")
        .arg("--server")
        .arg(server.to_string())
        .args(args);
    command
}

/// Runs `diary` against `server` with `stdin` fed in; its output.
pub fn run_diary(server: SocketAddr, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = diary_command(server, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// A line-oriented TCP client.
pub struct Tcp {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Tcp {
    pub fn connect(addr: SocketAddr) -> Tcp {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Tcp {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    pub fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    /// Lines up to (not including) the end line.
    pub fn until_end(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            assert!(
                !line.is_empty(),
                "connection closed before end line; got {lines:?}"
            );
            if line == "end\n" {
                return lines;
            }
            lines.push(line.trim_end_matches('\n').to_string());
        }
    }

    /// Sends a line and returns the id from its `ok ID TIME` reply.
    pub fn write(&mut self, text: &str) -> u64 {
        self.send(text);
        ack_id(&self.line())
    }
}

/// The id in an `ok ID TIME` line.
pub fn ack_id(reply: &str) -> u64 {
    let mut words = reply.split(' ');
    assert_eq!(words.next(), Some("ok"), "not an ack: {reply:?}");
    words.next().unwrap().parse().unwrap()
}

/// Writes over TCP one line at a time until the server goes away; returns
/// what was acknowledged.
pub fn tcp_writer(addr: SocketAddr, who: usize) -> Vec<(u64, String)> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut acked = Vec::new();
    for i in 0.. {
        let text = format!("tcp writer {who} line {i}");
        if (&stream).write_all(format!("{text}\n").as_bytes()).is_err() {
            break;
        }
        let mut reply = String::new();
        if !matches!(reader.read_line(&mut reply), Ok(n) if n > 0) || !reply.starts_with("ok ") {
            break;
        }
        acked.push((ack_id(&reply), text));
    }
    acked
}

/// The server's `/stats` figures, by name.
pub fn stats(addr: SocketAddr) -> Vec<(String, u64)> {
    let mut c = Tcp::connect(addr);
    c.send("/stats");
    c.until_end()
        .into_iter()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// One figure from [`stats`].
pub fn figure(stats: &[(String, u64)], name: &str) -> u64 {
    stats.iter().find(|(k, _)| k == name).unwrap().1
}

/// A seed-style exchange: one datagram out, one reply read with a 1024-byte buffer.
pub fn udp_raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let here = if addr.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let socket = UdpSocket::bind(here).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(request, addr).unwrap();
    let mut buf = [0u8; 1024];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    buf[..n].to_vec()
}

/// The entries of a diary file as (id, text) pairs, read directly from
/// disk; `#` lines (the header, comments) are not entries.
pub fn file_entries(path: &Path) -> Vec<(u64, String)> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && l[0] != b'#')
        .map(|l| {
            let line = diary::wire::entry::decode_line(l).unwrap();
            (line.id, line.text())
        })
        .collect()
}

/// Polls `cond` until true or the deadline; panics with `what` on timeout.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lines of a child's output, gathered by a thread, read with a deadline.
pub struct LineFeed(std::sync::mpsc::Receiver<String>);

impl LineFeed {
    pub fn new(source: impl Read + Send + 'static) -> LineFeed {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(source).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LineFeed(rx)
    }

    /// Lines until one satisfies `done` (included); panics after `timeout`.
    pub fn until(&self, timeout: Duration, mut done: impl FnMut(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) => {
                    let stop = done(&line);
                    lines.push(line);
                    if stop {
                        return lines;
                    }
                }
                Err(_) => panic!("timed out; got so far: {lines:?}"),
            }
        }
    }

    /// Every line that arrives within `wait`.
    pub fn drain(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut lines = Vec::new();
        while let Ok(line) = self
            .0
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            lines.push(line);
        }
        lines
    }
}

/// Whether `program` is on `PATH`: a test that needs a tool asks this
/// before it starts one, rather than learning of its absence by a time-out
/// (`ip netns exec tcpdump` spawns fine and only then fails to exec).
pub fn have_tool(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// A test that cannot run here (it needs root, a network namespace, more
/// open files) says so and passes on a developer's machine; where
/// `DIARY_TEST_NO_SKIP` is set, as `.ci/run` sets it, it fails instead, so
/// CI never passes a test it did not run.
pub fn skip(why: &str) {
    if std::env::var_os("DIARY_TEST_NO_SKIP").is_some() {
        panic!("cannot run this test here, and DIARY_TEST_NO_SKIP is set: {why}");
    }
    eprintln!("SKIPPED: {why}");
}
