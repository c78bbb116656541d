//! The client side of the protocol: tagged requests over UDP (with retries,
//! backoff and a TCP fallback for replies that do not fit a datagram) or
//! over one TCP connection, and parsing of replies and entry lines.

use crate::entry;
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

/// Wait for a UDP reply before the first round trip is measured; later
/// waits follow the measured round trips (Jacobson/Karels, as TCP does),
/// and each retry doubles the wait up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(200);
const MIN_WAIT: Duration = Duration::from_millis(25);
const MAX_WAIT: Duration = Duration::from_secs(1);
/// Requests larger than this go over TCP whatever the transport.
const MAX_UDP_REQUEST: usize = 60_000;

/// Which transport requests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Datagrams, retried on loss, with TCP for replies too big for one.
    Udp,
    /// One TCP connection.
    Tcp,
}

impl Proto {
    /// The names the command line takes.
    pub const NAMES: [&'static str; 2] = ["udp", "tcp"];
}

impl std::str::FromStr for Proto {
    type Err = String;

    fn from_str(s: &str) -> Result<Proto, String> {
        match s {
            "udp" => Ok(Proto::Udp),
            "tcp" => Ok(Proto::Tcp),
            _ => Err(format!("{s:?} is not a transport; use udp or tcp")),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// `HOST:PORT` of the server.
    pub server: String,
    pub proto: Proto,
    /// How long one request may take, retries included.
    pub timeout: Duration,
    /// UDP retries after the first attempt.
    pub retries: u32,
    /// Largest UDP reply this client accepts (`max=` in the envelope).
    pub max_reply: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            server: "127.0.0.1:8888".into(),
            proto: Proto::Udp,
            timeout: Duration::from_secs(5),
            retries: 8,
            max_reply: 1232,
        }
    }
}

/// A server's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Stored {
        id: u64,
        time: String,
    },
    /// The lines of a multi-line reply, without the end line.
    Lines(Vec<String>),
    Bye,
    Refused {
        code: String,
        message: String,
    },
    /// A UDP address cookie (the reply to `/cookie`).
    Cookie(String),
}

#[derive(Debug)]
pub enum ClientError {
    /// No reply within the timeout.
    NoAnswer {
        server: SocketAddr,
        proto: Proto,
        waited: Duration,
        attempts: u32,
    },
    /// The server's address does not resolve.
    BadAddress(String, io::Error),
    Io(SocketAddr, Proto, io::Error),
    BadReply(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NoAnswer {
                server,
                proto,
                waited,
                attempts,
            } => write!(
                f,
                "no answer from {server} over {proto} after {:.1} s ({attempts} attempts); \
                 is diaryd running there? Start it with `diaryd`, or point --server \
                 (or DIARY_SERVER) at it",
                waited.as_secs_f64()
            ),
            ClientError::BadAddress(addr, e) => {
                write!(
                    f,
                    "cannot resolve server address {addr:?}: {e}; use HOST:PORT"
                )
            }
            ClientError::Io(server, proto, e) => write!(
                f,
                "cannot talk to {server} over {proto}: {e}; is diaryd running there?"
            ),
            ClientError::BadReply(why) => write!(f, "unexpected reply from the server: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// An entry as the client shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub id: u64,
    pub time: String,
    pub text: String,
}

/// Parses an entry line of a history reply; `None` for notes and other lines.
pub fn parse_entry(line: &str) -> Option<Entry> {
    let decoded = entry::decode_line(line.as_bytes()).ok()?;
    Some(Entry {
        id: decoded.id,
        time: decoded.timestamp.to_string(),
        text: decoded.text(),
    })
}

struct TcpLink {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

pub struct Client {
    opts: Options,
    addr: SocketAddr,
    udp: Option<UdpSocket>,
    tcp: Option<TcpLink>,
    tag_base: String,
    next_tag: u64,
    buf: Vec<u8>,
    rtt: RttEstimate,
    /// Proof of our address, which lets the server send UDP replies larger
    /// than 3x the request to a source outside its loopback.
    cookie: Option<String>,
}

/// Smoothed round trip and its variation, from replies to first attempts only
/// (Karn: a reply after a retry could answer either attempt).
#[derive(Debug, Default)]
struct RttEstimate {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl RttEstimate {
    fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    fn timeout(&self) -> Duration {
        match self.srtt {
            None => FIRST_WAIT,
            Some(srtt) => (srtt + self.rttvar * 4).clamp(MIN_WAIT, MAX_WAIT),
        }
    }
}

impl Client {
    pub fn new(opts: Options) -> Result<Client, ClientError> {
        let addr = resolve(&opts.server)?;
        // The server knows a write by its tag alone, across sockets and
        // restarts: tags must differ between every client run anywhere.
        let mut random = [0u8; 8];
        getrandom::fill(&mut random)
            .map_err(|e| ClientError::BadAddress(opts.server.clone(), io::Error::other(e)))?;
        let tag_base: String = random.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Client {
            opts,
            addr,
            udp: None,
            tcp: None,
            tag_base,
            next_tag: 0,
            buf: vec![0; 65_536],
            rtt: RttEstimate::default(),
            cookie: None,
        })
    }

    pub fn server(&self) -> SocketAddr {
        self.addr
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Sends one request (a line of the protocol, without envelope) and
    /// returns the server's reply.
    pub fn request(&mut self, command: &str) -> Result<Reply, ClientError> {
        self.next_tag += 1;
        let tag = format!("{}-{}", self.tag_base, self.next_tag);
        let use_udp = self.opts.proto == Proto::Udp && command.len() < MAX_UDP_REQUEST;
        if use_udp {
            if let Some(reply) = self.udp_request(&tag, command)? {
                return Ok(reply);
            }
            // Truncated: perhaps only by the anti-amplification rule. Once,
            // get a cookie and ask again over UDP; after that, a truncated
            // reply really is too big and goes straight to TCP.
            if self.cookie.is_none()
                && let Some(Reply::Cookie(cookie)) =
                    self.udp_request(&format!("{tag}c"), "/cookie")?
            {
                self.cookie = Some(cookie);
                if let Some(reply) = self.udp_request(&tag, command)? {
                    return Ok(reply);
                }
            }
        }
        self.tcp_request(&tag, command)
    }

    /// Stores `text` as one entry.
    pub fn write(&mut self, text: &str) -> Result<Reply, ClientError> {
        self.request(&format!("/write {text}"))
    }

    /// `Ok(None)` when the reply was truncated and must come over TCP.
    fn udp_request(&mut self, tag: &str, command: &str) -> Result<Option<Reply>, ClientError> {
        let io_err = |e| ClientError::Io(self.addr, Proto::Udp, e);
        if self.udp.is_none() {
            let local: SocketAddr = if self.addr.is_ipv4() {
                "0.0.0.0:0".parse().expect("valid")
            } else {
                "[::]:0".parse().expect("valid")
            };
            let socket = UdpSocket::bind(local).map_err(io_err)?;
            socket.connect(self.addr).map_err(io_err)?;
            self.udp = Some(socket);
        }
        let socket = self.udp.as_ref().expect("just made");
        let message = match &self.cookie {
            Some(cookie) => format!(
                "/id {tag} max={} cookie={cookie} {command}",
                self.opts.max_reply
            ),
            None => format!("/id {tag} max={} {command}", self.opts.max_reply),
        };
        let started = Instant::now();
        let deadline = started + self.opts.timeout;
        let mut wait = self.rtt.timeout();
        let mut attempts = 0;
        while attempts <= self.opts.retries && Instant::now() < deadline {
            attempts += 1;
            // A refused send (nothing listening yet) is retried like a lost one.
            let _ = socket.send(message.as_bytes());
            let last = attempts > self.opts.retries;
            let until = if last {
                deadline
            } else {
                (Instant::now() + wait).min(deadline)
            };
            while let Some(left) = until
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            {
                socket.set_read_timeout(Some(left)).map_err(io_err)?;
                match socket.recv(&mut self.buf) {
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&self.buf[..n]).into_owned();
                        let mut lines = text.lines();
                        let first = lines.next().unwrap_or_default();
                        if first == format!("id {tag} truncated") {
                            return Ok(None);
                        }
                        if first != format!("id {tag}") {
                            continue; // a late answer to an earlier request
                        }
                        if attempts == 1 {
                            self.rtt.sample(started.elapsed());
                        }
                        let mut lines = lines.map(|l| Ok(Some(l.to_string())));
                        return read_reply(|| lines.next().unwrap_or(Ok(None))).map(Some);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        std::thread::sleep(until.saturating_duration_since(Instant::now()));
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_err(e)),
                }
            }
            wait = (wait * 2).min(MAX_WAIT);
        }
        Err(ClientError::NoAnswer {
            server: self.addr,
            proto: Proto::Udp,
            waited: started.elapsed(),
            attempts,
        })
    }

    fn tcp_request(&mut self, tag: &str, command: &str) -> Result<Reply, ClientError> {
        let reused = self.tcp.is_some();
        match self.tcp_exchange(tag, command) {
            Err(ClientError::Io(..)) if reused => {
                // The server may have restarted since the last request: reconnect once.
                self.tcp = None;
                self.tcp_exchange(tag, command)
            }
            other => other,
        }
    }

    fn tcp_exchange(&mut self, tag: &str, command: &str) -> Result<Reply, ClientError> {
        let addr = self.addr;
        let io_err = |e| ClientError::Io(addr, Proto::Tcp, e);
        let link = match &mut self.tcp {
            Some(link) => link,
            None => {
                let stream = TcpStream::connect_timeout(&addr, self.opts.timeout).map_err(|e| {
                    if e.kind() == io::ErrorKind::TimedOut {
                        ClientError::NoAnswer {
                            server: addr,
                            proto: Proto::Tcp,
                            waited: self.opts.timeout,
                            attempts: 1,
                        }
                    } else {
                        io_err(e)
                    }
                })?;
                stream.set_nodelay(true).map_err(io_err)?;
                stream
                    .set_read_timeout(Some(self.opts.timeout))
                    .map_err(io_err)?;
                let reader = BufReader::new(stream.try_clone().map_err(io_err)?);
                self.tcp.insert(TcpLink {
                    reader,
                    writer: stream,
                })
            }
        };
        let result = (|| {
            link.writer
                .write_all(format!("/id {tag} {command}\n").as_bytes())
                .map_err(io_err)?;
            let mut next = || -> Result<Option<String>, ClientError> {
                let mut line = String::new();
                match link.reader.read_line(&mut line) {
                    Ok(0) => Err(io_err(io::ErrorKind::UnexpectedEof.into())),
                    Ok(_) => Ok(Some(line.trim_end_matches(['\n', '\r']).to_string())),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        Err(ClientError::NoAnswer {
                            server: addr,
                            proto: Proto::Tcp,
                            waited: self.opts.timeout,
                            attempts: 1,
                        })
                    }
                    Err(e) => Err(io_err(e)),
                }
            };
            let first = next()?.unwrap_or_default();
            if first != format!("id {tag}") {
                // Errors about the envelope itself come without a tag.
                return read_reply_from_first(first, &mut next);
            }
            read_reply(next)
        })();
        if result.is_err() {
            self.tcp = None;
        }
        result
    }
}

fn resolve(server: &str) -> Result<SocketAddr, ClientError> {
    server
        .to_socket_addrs()
        .map_err(|e| ClientError::BadAddress(server.to_string(), e))?
        .next()
        .ok_or_else(|| ClientError::BadAddress(server.to_string(), io::ErrorKind::NotFound.into()))
}

/// Reads one reply (after its tag line) from a source of lines.
fn read_reply(
    mut next: impl FnMut() -> Result<Option<String>, ClientError>,
) -> Result<Reply, ClientError> {
    let first = next()?.ok_or_else(|| ClientError::BadReply("empty reply".into()))?;
    read_reply_from_first(first, &mut next)
}

fn read_reply_from_first(
    first: String,
    next: &mut impl FnMut() -> Result<Option<String>, ClientError>,
) -> Result<Reply, ClientError> {
    if let Some(rest) = first.strip_prefix("ok ") {
        let (id, time) = rest.split_once(' ').unwrap_or((rest, ""));
        let id = id
            .parse()
            .map_err(|_| ClientError::BadReply(first.clone()))?;
        return Ok(Reply::Stored {
            id,
            time: time.to_string(),
        });
    }
    if let Some(rest) = first.strip_prefix("err ") {
        let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
        return Ok(Reply::Refused {
            code: code.to_string(),
            message: message.to_string(),
        });
    }
    if first == "bye" {
        return Ok(Reply::Bye);
    }
    if let Some(cookie) = first.strip_prefix("cookie ") {
        return Ok(Reply::Cookie(cookie.to_string()));
    }
    let mut lines = Vec::new();
    let mut line = first;
    while line != "end" {
        lines.push(line);
        line = next()?
            .ok_or_else(|| ClientError::BadReply("reply ended without its end line".into()))?;
    }
    Ok(Reply::Lines(lines))
}

/// `2026-11-25T06:06:20.608+00:00` → `2026-11-25 06:06:20`, for people.
pub fn short_time(time: &str) -> String {
    time.get(..19).unwrap_or(time).replacen('T', " ", 1)
}

/// One entry for people: `ID  TIME  TEXT`, continuation lines indented.
pub fn format_entry(e: &Entry) -> String {
    let prefix = format!("{:>4}  {}  ", e.id, short_time(&e.time));
    let indent = " ".repeat(prefix.chars().count());
    format!("{prefix}{}", e.text.replace('\n', &format!("\n{indent}")))
}

/// What a follower hears besides entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    /// Connected (again), following entries after this id.
    Following(u64),
    /// The connection ended or could not be made; retrying after a pause.
    Reconnecting(String),
    /// The server dropped this follower for falling behind; resuming at once.
    Resuming(u64),
}

/// Follows the diary over TCP: entries after `since` (none before now
/// without it), then each new one as it is committed. Reconnects from the
/// last id seen when the connection breaks, the server restarts, or the
/// server drops this follower for falling behind, so nothing is missed.
/// Returns when `on_entry` returns false; fails only if the very first
/// connection cannot be made, or the server refuses the request.
pub fn follow(
    opts: &Options,
    since: Option<u64>,
    mut on_entry: impl FnMut(&Entry) -> bool,
    mut on_event: impl FnMut(&FollowEvent),
) -> Result<(), ClientError> {
    let addr = resolve(&opts.server)?;
    let mut after = since;
    // The diary followed, once the server has named it: a resume names it,
    // so a replaced diary or another server is refused, never followed blind.
    let mut diary: Option<String> = None;
    let mut pause = Duration::from_millis(100);
    let mut connected_once = false;
    loop {
        let stream = match TcpStream::connect_timeout(&addr, opts.timeout) {
            Ok(stream) => stream,
            Err(e) if !connected_once => return Err(ClientError::Io(addr, Proto::Tcp, e)),
            Err(e) => {
                on_event(&FollowEvent::Reconnecting(format!("cannot connect: {e}")));
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        connected_once = true;
        let mut writer = stream
            .try_clone()
            .map_err(|e| ClientError::Io(addr, Proto::Tcp, e))?;
        let mut request = String::from("/follow");
        if let Some(id) = after {
            request.push_str(&format!(" since {id}"));
        }
        if let Some(diary) = &diary {
            request.push_str(&format!(" diary {diary}"));
        }
        request.push('\n');
        if let Err(e) = writer.write_all(request.as_bytes()) {
            on_event(&FollowEvent::Reconnecting(e.to_string()));
            continue;
        }
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        let ended = loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => break "the server closed the connection".to_string(),
                Ok(_) => {}
                Err(e) => break e.to_string(),
            }
            let text = line.trim_end_matches(['\n', '\r']);
            if let Some(entry) = parse_entry(text) {
                if after.is_none_or(|a| entry.id > a) {
                    after = Some(entry.id);
                    if !on_entry(&entry) {
                        return Ok(());
                    }
                }
            } else if let Some(rest) = text.strip_prefix("# following entries after ") {
                pause = Duration::from_millis(100);
                let (id, named) = match rest.split_once(" in diary ") {
                    Some((id, named)) => (id, Some(named)),
                    None => (rest, None),
                };
                let id = id
                    .parse()
                    .map_err(|_| ClientError::BadReply(text.to_string()))?;
                if let Some(named) = named {
                    diary.get_or_insert_with(|| named.to_string());
                }
                after.get_or_insert(id);
                on_event(&FollowEvent::Following(id));
            } else if text.starts_with("err behind ") {
                let resume = text
                    .rsplit("since ")
                    .next()
                    .and_then(|s| s.trim_end_matches('"').parse().ok())
                    .ok_or_else(|| ClientError::BadReply(text.to_string()))?;
                // Resume from what was actually received, which is never past the notice's id.
                after = Some(after.map_or(resume, |a: u64| a.min(resume)));
                on_event(&FollowEvent::Resuming(after.unwrap_or(resume)));
                break String::new();
            } else if let Some(rest) = text.strip_prefix("err ") {
                let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
                return Err(ClientError::BadReply(format!("{code}: {message}")));
            }
        };
        if !ended.is_empty() {
            on_event(&FollowEvent::Reconnecting(ended));
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}
