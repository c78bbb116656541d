//! A handshake flood against an allowed device (issue 26, 2): diaryd with
//! one device in its allow file; a sender floods it with Noise first
//! messages of keys nobody allowed, from the device's own address
//! (127.0.0.1, as a forger would), never answering a cookie; meanwhile
//! the device makes one session after another over UDP and TCP, each
//! followed by a sealed write. Reported: how many of the device's
//! sessions succeeded and how long a session plus its write took, without
//! the flood and during it, and the server's CPU.

use crate::target::Target;
use diary::client::secure::{Credentials, FromServer, SecureStream, UdpSession};
use diary::client::{Options, Pin};
use diary::secure::keys::{KeyPair, PublicKey};
use diary::secure::noise;
use serde::Serialize;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Serialize)]
pub struct FloodReport {
    /// First messages a second the flood aimed at.
    pub target_rate: u64,
    pub seconds: f64,
    pub quiet: Phase,
    pub flooded: Phase,
}

#[derive(Serialize)]
pub struct Phase {
    /// First messages a second the flood sent (0 when quiet).
    pub flood_rate: f64,
    pub udp: Sessions,
    pub tcp: Sessions,
    /// Server CPU, in cores, over the phase.
    pub server_cores: f64,
    /// The server's handshake figures after the phase.
    pub auth_failures: u64,
    pub cookie_replies: u64,
}

#[derive(Serialize, Default)]
pub struct Sessions {
    pub tried: u64,
    pub made: u64,
    /// Session plus one sealed write, in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl FloodReport {
    pub fn describe(&self) -> String {
        let phase = |name: &str, p: &Phase| {
            let line = |proto: &str, s: &Sessions| {
                format!(
                    "  {proto}: {}/{} sessions made, session + write p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
                    s.made, s.tried, s.p50_ms, s.p99_ms, s.max_ms
                )
            };
            format!(
                "{name}: flood {:.0} first messages/s, server {:.2} cores, \
                 {} handshakes refused, {} cookie replies\n{}{}",
                p.flood_rate,
                p.server_cores,
                p.auth_failures,
                p.cookie_replies,
                line("UDP", &p.udp),
                line("TCP", &p.tcp),
            )
        };
        format!(
            "{}{}",
            phase("quiet", &self.quiet),
            phase("flooded", &self.flooded)
        )
    }
}

pub fn run(rate: u64, seconds: f64) -> io::Result<FloodReport> {
    let dir = tempfile::tempdir()?;
    let device = KeyPair::generate();
    let allow = dir.path().join("allow");
    std::fs::write(&allow, format!("{} laptop all\n", device.public))?;
    let allow = allow.to_str().expect("a temporary path is UTF-8");
    let target = Target::diaryd_logging_to("never", &["--allow", allow], &dir.path().join("log"))?;
    let server = target
        .server_key
        .ok_or_else(|| io::Error::other("no server key"))?;
    let creds = Credentials {
        own: device,
        server,
        pin: Pin::Given,
    };
    let span = Duration::from_secs_f64(seconds);
    let quiet = phase(&target, &creds, 0, span)?;
    let flooded = phase(&target, &creds, rate, span)?;
    Ok(FloodReport {
        target_rate: rate,
        seconds,
        quiet,
        flooded,
    })
}

fn phase(target: &Target, creds: &Credentials, rate: u64, span: Duration) -> io::Result<Phase> {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = (rate > 0).then(|| {
        let (stop, sent, to, server) = (stop.clone(), sent.clone(), target.addr, creds.server);
        std::thread::spawn(move || flood(to, &server, rate, &stop, &sent))
    });
    let cpu_before = target.cpu_seconds();
    let started = Instant::now();
    let (mut udp, mut tcp) = (Vec::new(), Vec::new());
    let (mut udp_tried, mut tcp_tried) = (0, 0);
    let mut n = 0u64;
    while started.elapsed() < span {
        n += 1;
        udp_tried += 1;
        if let Some(took) = udp_session(target.addr, creds, n) {
            udp.push(took);
        }
        tcp_tried += 1;
        if let Some(took) = tcp_session(target.addr, creds, n) {
            tcp.push(took);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(flood) = flood {
        let _ = flood.join();
    }
    let cores = match (cpu_before, target.cpu_seconds()) {
        (Some(a), Some(b)) => (b - a) / elapsed,
        _ => 0.0,
    };
    let stats = crate::server_stats(target.addr)?;
    let figure = |name: &str| stats.iter().find(|(k, _)| k == name).map_or(0, |(_, v)| *v);
    Ok(Phase {
        flood_rate: sent.load(Ordering::Relaxed) as f64 / elapsed,
        udp: summary(udp_tried, udp),
        tcp: summary(tcp_tried, tcp),
        server_cores: cores,
        auth_failures: figure("auth_failures"),
        cookie_replies: figure("handshake_cookie_replies"),
    })
}

/// Sends first messages of strangers' keys at `rate` a second, in bursts
/// each millisecond, from one socket on 127.0.0.1; reads nothing.
fn flood(to: SocketAddr, server: &PublicKey, rate: u64, stop: &AtomicBool, sent: &AtomicU64) {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0").and_then(|s| s.connect(to).map(|()| s)) else {
        return;
    };
    let messages: Vec<Vec<u8>> = (0..256u32)
        .map(|i| {
            let mut hs = noise::initiator(&KeyPair::generate(), server);
            let mut first = [0u8; 256];
            let n = hs
                .write_message(&noise::stamp_now(), &mut first)
                .expect("a first message fits");
            let mut datagram = Vec::new();
            noise::push_init(&mut datagram, i + 1, None, &first[..n]);
            datagram
        })
        .collect();
    let started = Instant::now();
    let mut count = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while count < due {
            // A full socket buffer drops it, as a flood's would be.
            let _ = socket.send(&messages[count as usize % messages.len()]);
            count += 1;
        }
        sent.store(count, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(1));
    }
}

const DEADLINE: Duration = Duration::from_secs(5);

fn udp_session(to: SocketAddr, creds: &Credentials, n: u64) -> Option<Duration> {
    let started = Instant::now();
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket.connect(to).ok()?;
    let deadline = started + DEADLINE;
    let mut session =
        UdpSession::handshake(&socket, creds, &Options::default(), to, deadline).ok()?;
    let request = format!("/id flood-udp-{n} /write a line while flooded\n");
    let mut buf = vec![0u8; 2048];
    // Retried with a new nonce, as the client does, if lost.
    while Instant::now() < deadline {
        socket.send(&session.seal(request.as_bytes())).ok()?;
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .ok()?;
        let Ok(got) = socket.recv(&mut buf) else {
            continue;
        };
        if let FromServer::Plain(reply) = session.open(&buf[..got])
            && reply.windows(3).any(|w| w == b"ok ")
        {
            return Some(started.elapsed());
        }
    }
    None
}

fn tcp_session(to: SocketAddr, creds: &Credentials, n: u64) -> Option<Duration> {
    let started = Instant::now();
    let stream = TcpStream::connect_timeout(&to, DEADLINE).ok()?;
    // As the client does: a write right after the handshake is not held
    // back waiting for the handshake's ACK.
    stream.set_nodelay(true).ok()?;
    let mut stream =
        SecureStream::connect(stream, creds, &Options::default(), started + DEADLINE).ok()?;
    writeln!(stream, "/id flood-tcp-{n} /write a line while flooded").ok()?;
    let mut reader = BufReader::new(&mut stream);
    let mut line = String::new();
    while reader.read_line(&mut line).ok()? > 0 {
        if line.starts_with("ok ") {
            return Some(started.elapsed());
        }
        line.clear();
    }
    None
}

fn summary(tried: u64, mut took: Vec<Duration>) -> Sessions {
    took.sort_unstable();
    let at = |q: f64| {
        took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    Sessions {
        tried,
        made: took.len() as u64,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: took.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    }
}
