//! The servers a benchmark runs against, as child processes on port 0:
//! `diaryd` (from the same build as this binary) or the bare echo server.
//! Each is watched through /proc for its CPU time and resident memory.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Target {
    child: Child,
    pub addr: SocketAddr,
    /// How long from spawn to its "listening on" line.
    pub startup: Duration,
    /// diaryd's public key (its second line).
    pub server_key: Option<diary::secure::keys::PublicKey>,
    /// Where a spawned diaryd keeps its diary (removed on drop).
    _dir: Option<tempfile::TempDir>,
    /// The rest of what it prints (diaryd's web line, with `--web`).
    stdout: BufReader<std::process::ChildStdout>,
}

/// A binary built alongside this one.
fn sibling(name: &str) -> io::Result<PathBuf> {
    let me = std::env::current_exe()?;
    Ok(me.with_file_name(name))
}

impl Target {
    /// diaryd with `--fsync fsync` (and `extra` options) on a fresh diary
    /// in a temporary directory.
    pub fn diaryd(fsync: &str, extra: &[&str]) -> io::Result<Target> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("diary.log");
        let mut target = Self::diaryd_on(&file, fsync, extra)?;
        target._dir = Some(dir);
        Ok(target)
    }

    /// diaryd on an existing diary file.
    pub fn diaryd_on(file: &Path, fsync: &str, extra: &[&str]) -> io::Result<Target> {
        Self::spawn(Self::diaryd_command(file, fsync, extra))
    }

    /// As [`Target::diaryd`], its log going to `log` instead of our stderr
    /// (a benchmark that makes a session a millisecond would drown in it).
    pub fn diaryd_logging_to(fsync: &str, extra: &[&str], log: &Path) -> io::Result<Target> {
        let dir = tempfile::tempdir()?;
        let mut command = Self::diaryd_command(&dir.path().join("diary.log"), fsync, extra);
        command.stderr(std::fs::File::create(log)?);
        let mut target = Self::spawn(command)?;
        target._dir = Some(dir);
        Ok(target)
    }

    fn diaryd_command(file: &Path, fsync: &str, extra: &[&str]) -> Command {
        let mut command = Command::new(sibling("diaryd").unwrap_or_else(|_| "diaryd".into()));
        command
            .args(["--listen", "127.0.0.1:0", "--fsync", fsync, "--file"])
            .arg(file)
            .args(extra)
            .stderr(Stdio::inherit());
        command
    }

    /// The bare echo server (`diary-bench echo`).
    pub fn echo() -> io::Result<Target> {
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["echo", "--listen", "127.0.0.1:0"]);
        Self::spawn(command)
    }

    /// The echo server appending what it reads to a file in a temporary
    /// directory (removed on drop); echoing only flushed batches if `sync`.
    pub fn echo_append(sync: bool) -> io::Result<Target> {
        let dir = tempfile::tempdir()?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["echo", "--listen", "127.0.0.1:0", "--append"])
            .arg(dir.path().join("echo.log"));
        if sync {
            command.arg("--sync");
        }
        let mut target = Self::spawn(command)?;
        target._dir = Some(dir);
        Ok(target)
    }

    fn spawn(mut command: Command) -> io::Result<Target> {
        let started = Instant::now();
        let mut child = command.stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        stdout.read_line(&mut line)?;
        let startup = started.elapsed();
        let mut server_key = None;
        if line.starts_with("diaryd:") {
            let mut second = String::new();
            stdout.read_line(&mut second)?;
            server_key = second
                .strip_prefix("server key ")
                .and_then(|k| k.trim().parse().ok());
        }
        let Some(addr) = diary::event_loop::announced_addr(&line) else {
            let _ = child.kill();
            return Err(io::Error::other(format!(
                "{command:?} did not start (said {line:?})"
            )));
        };
        Ok(Target {
            child,
            addr,
            startup,
            server_key,
            _dir: None,
            stdout,
        })
    }

    /// diaryd's web line (started with `--web`): the address the page
    /// listens on and the one-time login URL.
    pub fn web_login(&mut self) -> io::Result<(SocketAddr, String)> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let bad = || io::Error::other(format!("no web line from diaryd: {line:?}"));
        let addr = line
            .split("(listening on ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(bad)?;
        let url = line
            .split("opening ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(bad)?;
        Ok((addr, url.to_string()))
    }

    /// Stops the server as a service manager does (SIGTERM) and waits for
    /// it to exit, at most `patience`.
    pub fn terminate(mut self, patience: Duration) -> io::Result<()> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + patience;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                return Err(io::Error::other("the server did not stop on SIGTERM"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// User plus system CPU seconds the server has used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf only reads a constant.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Some(ticks as f64 / per_second as f64)
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
