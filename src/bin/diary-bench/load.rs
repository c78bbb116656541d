//! The load generator: N clients, each with up to D writes in flight, on
//! one `mio` thread (so it needs one core, like the server it drives).
//!
//! UDP clients send tagged writes (`/id SEQ TEXT`, as `diary` does) and
//! match replies by tag, retrying a lost one with the same tag; TCP clients
//! pipeline plain lines and match replies in order. Against the echo
//! server the same bytes come back, so the same code measures both.

use diary::client::Options;
use diary::client::secure::{Credentials, Received, SecureStream, UdpSession};
use diary::secure::noise::{self, DATA};
use diary::tcp::framing::OutBuf;
use hdrhistogram::Histogram;
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A UDP request unanswered this long is sent again (same tag).
const UDP_RETRY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Udp,
    Tcp,
}

/// The shape of a load.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    pub proto: Proto,
    pub clients: usize,
    pub depth: usize,
    /// Bytes of entry text per write.
    pub size: usize,
    /// How long to measure (after the warmup), unless `count` comes first.
    #[serde(serialize_with = "as_seconds")]
    pub duration: Duration,
    /// Stop after this many measured replies.
    pub count: Option<u64>,
    /// Replies before this are not measured.
    #[serde(serialize_with = "as_seconds")]
    pub warmup: Duration,
    /// Keys: every client makes an encrypted session first.
    #[serde(skip)]
    pub keys: Option<Credentials>,
    /// Whether the load is encrypted (it has keys).
    pub encrypted: bool,
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What a load measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub completed: u64,
    pub errors: u64,
    pub retries: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// CPU the server used in the measured window, per reply (when known).
    pub server_cpu_us_per_reply: Option<f64>,
    /// The server's CPU use in the window, in cores (when known).
    pub server_cores: Option<f64>,
    /// The load generator's own CPU per reply and in cores: a generator
    /// near one core is the limit, not the server.
    pub client_cpu_us_per_reply: f64,
    pub client_cores: f64,
}

/// User plus system CPU seconds this process has used so far.
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

struct InFlight {
    seq: u64,
    first_sent: Instant,
    last_sent: Instant,
}

struct UdpClient {
    socket: UdpSocket,
    /// Slot `seq % depth` holds request `seq` while it waits.
    slots: Vec<Option<InFlight>>,
    next_seq: u64,
    session: Option<UdpSession>,
    /// A request before it is sealed, or a reply once opened.
    plain: Vec<u8>,
}

struct TcpClient {
    stream: TcpStream,
    sent_at: VecDeque<Instant>,
    out: OutBuf,
    /// Reply bytes of a line not yet complete.
    partial: Vec<u8>,
    /// An encrypted session: requests are sealed into frames, replies
    /// opened from `rx`.
    session: Option<Box<snow::TransportState>>,
    rx: Vec<u8>,
    plain: Vec<u8>,
    /// Lines of a top-up, before they are sealed.
    lines: Vec<u8>,
    /// The `depth` lines this client sends, one after another, and where
    /// each starts (plus the end): the writes are the same every time
    /// round, so a top-up is one copy, not a `write!` per line (string
    /// formatting was a fifth of the generator's CPU).
    script: Vec<u8>,
    starts: Vec<usize>,
}

enum Clients {
    Udp(Vec<UdpClient>),
    Tcp(Vec<TcpClient>),
}

struct Tally {
    histogram: Histogram<u64>,
    completed: u64,
    errors: u64,
    retries: u64,
    measuring: bool,
}

impl Tally {
    fn reply(&mut self, sent: Instant, now: Instant, error: bool) {
        if !self.measuring {
            return;
        }
        self.completed += 1;
        self.errors += error as u64;
        let nanos = now.duration_since(sent).as_nanos() as u64;
        self.histogram.saturating_record(nanos.max(1));
    }
}

/// The text of write `seq` from `client`, `size` bytes long.
fn entry_text(client: usize, seq: u64, size: usize, out: &mut Vec<u8>) {
    let start = out.len();
    let _ = write!(out, "bench c{client} n{seq} ");
    out.resize(start + size.max(out.len() - start), b'x');
}

impl Load {
    /// Runs the load against `addr`. `server_cpu` reads the server's CPU
    /// seconds so far, if the server is known.
    pub fn run(
        &self,
        addr: SocketAddr,
        server_cpu: &dyn Fn() -> Option<f64>,
    ) -> io::Result<Report> {
        let mut poll = Poll::new()?;
        let mut clients = self.connect(addr, &poll)?;
        let mut events = Events::with_capacity(1024);
        let mut tally = Tally {
            histogram: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
            completed: 0,
            errors: 0,
            retries: 0,
            measuring: false,
        };
        let mut buf = vec![0u8; 65_536];
        let started = Instant::now();
        let window_start = started + self.warmup;
        let mut window = None;
        let mut last_retry_check = started;
        for i in 0..self.clients {
            self.top_up(&mut clients, i, started)?;
        }
        loop {
            let now = Instant::now();
            if window.is_none() && now >= window_start {
                tally.measuring = true;
                window = Some((now, server_cpu(), own_cpu_seconds()));
            }
            if let Some((from, _, _)) = window
                && (now.duration_since(from) >= self.duration
                    || self.count.is_some_and(|c| tally.completed >= c))
            {
                break;
            }
            poll.poll(&mut events, Some(Duration::from_millis(10)))?;
            let now = Instant::now();
            for event in events.iter() {
                let i = event.token().0;
                match &mut clients {
                    Clients::Udp(all) => udp_receive(&mut all[i], &mut buf, now, &mut tally)?,
                    Clients::Tcp(all) => tcp_receive(&mut all[i], &mut buf, now, &mut tally)?,
                }
                self.top_up(&mut clients, i, now)?;
            }
            if let Clients::Udp(all) = &mut clients
                && now.duration_since(last_retry_check) >= UDP_RETRY / 4
            {
                last_retry_check = now;
                for (i, client) in all.iter_mut().enumerate() {
                    tally.retries += udp_retry(client, i, now, self.size);
                }
            }
        }
        let (from, cpu_before, own_before) = window.expect("the loop ends in the window");
        let seconds = from.elapsed().as_secs_f64();
        let own = own_cpu_seconds() - own_before;
        let cpu = cpu_before.zip(server_cpu()).map(|(a, b)| b - a);
        let h = &tally.histogram;
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Ok(Report {
            completed: tally.completed,
            errors: tally.errors,
            retries: tally.retries,
            seconds,
            per_second: tally.completed as f64 / seconds,
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: h.max() as f64 / 1000.0,
            server_cpu_us_per_reply: cpu
                .filter(|_| tally.completed > 0)
                .map(|c| c * 1e6 / tally.completed as f64),
            server_cores: cpu.map(|c| c / seconds),
            client_cpu_us_per_reply: own * 1e6 / tally.completed.max(1) as f64,
            client_cores: own / seconds,
        })
    }

    fn connect(&self, addr: SocketAddr, poll: &Poll) -> io::Result<Clients> {
        match self.proto {
            Proto::Udp => {
                let mut all = Vec::with_capacity(self.clients);
                for i in 0..self.clients {
                    let local: SocketAddr = if addr.is_ipv4() {
                        "0.0.0.0:0".parse().expect("literal")
                    } else {
                        "[::]:0".parse().expect("literal")
                    };
                    let std = std::net::UdpSocket::bind(local)?;
                    std.connect(addr)?;
                    let session = match &self.keys {
                        Some(keys) => {
                            let deadline = Instant::now() + Duration::from_secs(5);
                            let opts = Options::default();
                            Some(
                                UdpSession::handshake(&std, keys, &opts, addr, deadline)
                                    .map_err(io::Error::other)?,
                            )
                        }
                        None => None,
                    };
                    std.set_nonblocking(true)?;
                    let mut socket = UdpSocket::from_std(std);
                    poll.registry()
                        .register(&mut socket, Token(i), Interest::READABLE)?;
                    all.push(UdpClient {
                        socket,
                        slots: (0..self.depth).map(|_| None).collect(),
                        next_seq: 0,
                        session,
                        plain: Vec::new(),
                    });
                }
                Ok(Clients::Udp(all))
            }
            Proto::Tcp => {
                let mut all = Vec::with_capacity(self.clients);
                for i in 0..self.clients {
                    let mut std = std::net::TcpStream::connect(addr)?;
                    std.set_nodelay(true)?;
                    let mut session = None;
                    if let Some(keys) = &self.keys {
                        let deadline = Instant::now() + Duration::from_secs(5);
                        let secure =
                            SecureStream::connect(std, keys, &Options::default(), deadline)
                                .map_err(io::Error::other)?;
                        let (stream, transport) = secure.into_parts();
                        std = stream;
                        session = Some(Box::new(transport));
                    }
                    std.set_read_timeout(None)?;
                    std.set_nonblocking(true)?;
                    let mut stream = TcpStream::from_std(std);
                    poll.registry().register(
                        &mut stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    let mut script = Vec::new();
                    let mut starts = Vec::with_capacity(self.depth + 1);
                    for seq in 0..self.depth as u64 {
                        starts.push(script.len());
                        entry_text(i, seq, self.size, &mut script);
                        script.push(b'\n');
                    }
                    starts.push(script.len());
                    all.push(TcpClient {
                        stream,
                        sent_at: VecDeque::with_capacity(self.depth),
                        out: OutBuf::default(),
                        partial: Vec::new(),
                        session,
                        rx: Vec::new(),
                        plain: Vec::new(),
                        lines: Vec::new(),
                        script,
                        starts,
                    });
                }
                Ok(Clients::Tcp(all))
            }
        }
    }

    /// Sends new writes until client `i` has `depth` in flight.
    fn top_up(&self, clients: &mut Clients, i: usize, now: Instant) -> io::Result<()> {
        match clients {
            Clients::Udp(all) => {
                let client = &mut all[i];
                let mut datagram = Vec::with_capacity(self.size + 32);
                while client.slots[(client.next_seq % self.depth as u64) as usize].is_none() {
                    let seq = client.next_seq;
                    datagram.clear();
                    udp_request(i, seq, self.size, &mut datagram);
                    if let Some(session) = &mut client.session {
                        std::mem::swap(&mut datagram, &mut client.plain);
                        session.seal_into(&client.plain, &mut datagram);
                    }
                    match client.socket.send(&datagram) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                    client.slots[(seq % self.depth as u64) as usize] = Some(InFlight {
                        seq,
                        first_sent: now,
                        last_sent: now,
                    });
                    client.next_seq += 1;
                }
            }
            Clients::Tcp(all) => {
                let client = &mut all[i];
                // Sealed, the lines of one top-up go in one frame.
                // (Plaintext lines go straight after what is still unsent.)
                let mut lines = match client.session {
                    Some(_) => {
                        let mut lines = std::mem::take(&mut client.lines);
                        lines.clear();
                        lines
                    }
                    None => std::mem::take(&mut client.out.buf),
                };
                let in_flight = client.sent_at.len();
                lines.extend_from_slice(&client.script[client.starts[in_flight]..]);
                client.sent_at.resize(self.depth, now);
                match &mut client.session {
                    Some(session) => {
                        if !lines.is_empty() {
                            noise::seal_frame(session, &lines, &mut client.out.buf)
                                .map_err(io::Error::other)?;
                        }
                        client.lines = lines;
                    }
                    None => client.out.buf = lines,
                }
                client.out.flush_to(&mut client.stream)?;
            }
        }
        Ok(())
    }
}

fn udp_request(client: usize, seq: u64, size: usize, out: &mut Vec<u8>) {
    let _ = write!(out, "/id {seq} ");
    entry_text(client, seq, size, out);
}

/// The tag of a diaryd reply (`id SEQ\n…`) or of an echoed request (`/id SEQ …`).
fn reply_tag(reply: &[u8]) -> Option<(u64, &[u8])> {
    let rest = reply.strip_prefix(b"/").unwrap_or(reply);
    let rest = rest.strip_prefix(b"id ")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    let seq = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((seq, &rest[end..]))
}

fn udp_receive(
    client: &mut UdpClient,
    buf: &mut [u8],
    now: Instant,
    tally: &mut Tally,
) -> io::Result<()> {
    loop {
        let n = match client.socket.recv(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(e),
            Err(_) => continue,
        };
        let reply = match &mut client.session {
            Some(session) => match session.open_into(&buf[..n], &mut client.plain) {
                Received::Plain => &client.plain[..],
                _ => {
                    tally.errors += tally.measuring as u64;
                    continue;
                }
            },
            None => &buf[..n],
        };
        let Some((seq, rest)) = reply_tag(reply) else {
            tally.errors += tally.measuring as u64;
            continue;
        };
        let depth = client.slots.len() as u64;
        let slot = &mut client.slots[(seq % depth) as usize];
        // A late answer to a retried request finds its slot already free.
        if slot.as_ref().is_some_and(|f| f.seq == seq) {
            let flight = slot.take().expect("checked");
            let error = rest.starts_with(b"\nerr");
            tally.reply(flight.first_sent, now, error);
        }
    }
}

/// Sends again, with the same tag, what has waited too long; returns how many.
fn udp_retry(client: &mut UdpClient, index: usize, now: Instant, size: usize) -> u64 {
    let mut retried = 0;
    let mut datagram = Vec::new();
    for flight in client.slots.iter_mut().flatten() {
        if now.duration_since(flight.last_sent) < UDP_RETRY {
            continue;
        }
        datagram.clear();
        udp_request(index, flight.seq, size, &mut datagram);
        if let Some(session) = &mut client.session {
            std::mem::swap(&mut datagram, &mut client.plain);
            session.seal_into(&client.plain, &mut datagram);
        }
        // A send that fails now is like one lost on the way: tried again later.
        let _ = client.socket.send(&datagram);
        flight.last_sent = now;
        retried += 1;
    }
    retried
}

fn tcp_receive(
    client: &mut TcpClient,
    buf: &mut [u8],
    now: Instant,
    tally: &mut Tally,
) -> io::Result<()> {
    client.out.flush_to(&mut client.stream)?;
    loop {
        let n = match client.stream.read(buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed a connection",
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        let Some(session) = &mut client.session else {
            tcp_lines(
                &mut client.partial,
                &mut client.sent_at,
                &buf[..n],
                now,
                tally,
            )?;
            continue;
        };
        client.rx.extend_from_slice(&buf[..n]);
        let mut used = 0;
        while let Ok(Some((frame, len))) = noise::parse_frame(&client.rx[used..]) {
            if frame.kind != DATA {
                return Err(io::Error::other("not a data frame"));
            }
            client.plain.resize(frame.body.len(), 0);
            let opened = session
                .read_message(frame.body, &mut client.plain)
                .map_err(io::Error::other)?;
            used += len;
            let plain = &client.plain[..opened];
            tcp_lines(&mut client.partial, &mut client.sent_at, plain, now, tally)?;
        }
        client.rx.drain(..used);
    }
}

/// Counts the reply lines in `bytes`.
fn tcp_lines(
    partial: &mut Vec<u8>,
    sent_at: &mut VecDeque<Instant>,
    bytes: &[u8],
    now: Instant,
    tally: &mut Tally,
) -> io::Result<()> {
    let mut start = 0;
    for newline in memchr::memchr_iter(b'\n', bytes) {
        let error = if partial.is_empty() {
            bytes[start..newline].starts_with(b"err")
        } else {
            partial.extend_from_slice(&bytes[start..newline]);
            let e = partial.starts_with(b"err");
            partial.clear();
            e
        };
        start = newline + 1;
        let sent = sent_at
            .pop_front()
            .ok_or_else(|| io::Error::other("a reply nobody asked for"))?;
        tally.reply(sent, now, error);
    }
    // Only the start of a line matters (is it an error?).
    if partial.len() < 8 {
        partial.extend_from_slice(&bytes[start..]);
    }
    Ok(())
}
