//! The client side of the protocol: tagged requests over UDP (with retries,
//! backoff and a TCP fallback for replies that do not fit a datagram) or
//! over one TCP connection, and parsing of replies and entry lines.
//!
//! `client/` holds its configuration, its errors, its encrypted sessions
//! and the dates people type. It may import `secure`, `protocol` and
//! `wire`: no server, store or side code, so the `diary` binary links none.

mod config;
pub mod dates;
mod errors;
pub mod secure;

pub use config::{DEFAULT_SERVER, Options, Proto, SecureMode, Security};
pub use errors::{ClientError, KeyChange, Pin, Silence};

use crate::client::secure::{Credentials, FromServer, SecureStream, UdpSession};
use crate::protocol::{ErrorCode, ReplyLine, read_reply_line};
use crate::wire::entry;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

/// Wait for a UDP reply before the first round trip is measured; later
/// waits follow the measured round trips (Jacobson/Karels, as TCP does),
/// and each retry doubles the wait up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(200);
const MIN_WAIT: Duration = Duration::from_millis(25);
const MAX_WAIT: Duration = Duration::from_secs(1);
/// A follower that lost its connection waits this long before its first
/// reconnect, doubling each time up to [`FOLLOW_MAX_PAUSE`]; a follow that
/// starts again resets it.
const FOLLOW_FIRST_PAUSE: Duration = Duration::from_millis(100);
const FOLLOW_MAX_PAUSE: Duration = Duration::from_secs(2);
/// Requests larger than this go over TCP whatever the transport.
const MAX_UDP_REQUEST: usize = 60_000;

/// This machine's name, if it has one without spaces.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
}

/// `USER@HOST`, as syslog and git name people: the default author.
pub fn default_name() -> Option<String> {
    let user = std::env::var("USER").ok().filter(|u| !u.is_empty())?;
    let name = format!("{user}@{}", hostname()?);
    entry::is_author_name(&name).then_some(name)
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

/// An entry as the client shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub id: u64,
    pub time: String,
    /// Who wrote it, when that was recorded.
    pub author: Option<String>,
    /// Who imported it (`-`: not known), for an imported entry: its author
    /// is then only what the import said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imported_by: Option<String>,
    pub text: String,
    /// Its text is an amendment's (the id of the newest amendment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited: Option<u64>,
    /// This line amends (`amends`) or deletes (`deletes`) an earlier entry:
    /// what `--versions` and followers see.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amends: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletes: Option<u64>,
}

/// Parses an entry line of a history reply; `None` for notes and other lines.
pub fn parse_entry(line: &str) -> Option<Entry> {
    let decoded = entry::decode_line(line.as_bytes()).ok()?;
    Some(Entry {
        id: decoded.id,
        time: decoded.timestamp.to_string(),
        author: decoded.author().map(str::to_string),
        imported_by: decoded
            .attr(crate::wire::entry::IMPORTED)
            .map(str::to_string),
        text: decoded.text(),
        edited: decoded.attr("edited").and_then(|v| v.parse().ok()),
        amends: decoded
            .attr(crate::wire::entry::AMENDS)
            .and_then(|v| v.parse().ok()),
        deletes: decoded
            .attr(crate::wire::entry::DELETES)
            .and_then(|v| v.parse().ok()),
    })
}

/// A TCP connection, in plaintext or encrypted.
pub(crate) enum ClientStream {
    Plain(TcpStream),
    Secure(Box<SecureStream>),
}

impl ClientStream {
    /// Connects, with a handshake if there are keys.
    pub(crate) fn connect(
        addr: SocketAddr,
        opts: &Options,
        creds: Option<&Credentials>,
        deadline: Instant,
    ) -> Result<ClientStream, ClientError> {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        let io_err = |e| ClientError::Io(addr, Proto::Tcp, e);
        // Processes of one device race their handshakes now and then.
        let mut tries = 0;
        loop {
            let stream = TcpStream::connect_timeout(&addr, wait).map_err(io_err)?;
            stream.set_nodelay(true).map_err(io_err)?;
            let Some(creds) = creds else {
                return Ok(ClientStream::Plain(stream));
            };
            match SecureStream::connect(stream, creds, opts, deadline) {
                Ok(secure) => return Ok(ClientStream::Secure(Box::new(secure))),
                Err(ClientError::StaleHandshake(_)) if tries < 3 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(stream) => stream,
            ClientStream::Secure(secure) => secure.tcp(),
        }
    }
}

impl io::Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(stream) => stream.read(buf),
            ClientStream::Secure(secure) => secure.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(stream) => stream.write(buf),
            ClientStream::Secure(secure) => secure.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            ClientStream::Plain(stream) => stream.write_all(buf),
            ClientStream::Secure(secure) => secure.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(stream) => stream.flush(),
            ClientStream::Secure(secure) => secure.flush(),
        }
    }
}

struct TcpLink {
    reader: BufReader<ClientStream>,
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
    /// Keys for an encrypted conversation; `None`: plaintext.
    creds: Option<Credentials>,
    udp_session: Option<UdpSession>,
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
        let creds = secure::credentials(&opts, addr)?;
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
            creds,
            udp_session: None,
        })
    }

    pub fn server(&self) -> SocketAddr {
        self.addr
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Whether requests are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.creds.is_some()
    }

    /// A new request tag: this run's random base and a counter.
    pub fn new_tag(&mut self) -> String {
        self.next_tag += 1;
        format!("{}-{}", self.tag_base, self.next_tag)
    }

    /// Sends one request (a line of the protocol, without envelope) and
    /// returns the server's reply.
    pub fn request(&mut self, command: &str) -> Result<Reply, ClientError> {
        let tag = self.new_tag();
        self.request_tagged(&tag, command)
    }

    /// As [`Client::request`], with the tag the caller chose: a write sent
    /// again with its tag is stored once, whatever happened before.
    pub fn request_tagged(&mut self, tag: &str, command: &str) -> Result<Reply, ClientError> {
        self.request_into(tag, command, &mut Sink::gather())
    }

    /// As [`Client::request`], for a reply of lines: each line is handed to
    /// `each` as it arrives rather than gathered, so a history of millions
    /// of entries takes no memory here and is shown while it comes. The
    /// reply is then `Reply::Lines` with no lines. If the connection breaks
    /// mid-reply, the request is sent again and as many lines as `each`
    /// already had are skipped (a history is only appended to; an entry
    /// deleted between the two would shift it by one).
    pub fn request_each_line(
        &mut self,
        command: &str,
        each: &mut EachLine,
    ) -> Result<Reply, ClientError> {
        let tag = self.new_tag();
        self.request_into(&tag, command, &mut Sink::each(each))
    }

    fn request_into(
        &mut self,
        tag: &str,
        command: &str,
        sink: &mut Sink,
    ) -> Result<Reply, ClientError> {
        let use_udp = self.opts.proto == Proto::Udp && command.len() < MAX_UDP_REQUEST;
        if use_udp {
            if let Some(reply) = self.udp_request(tag, command, sink)? {
                return Ok(reply);
            }
            // Truncated: perhaps only by the anti-amplification rule. Once,
            // get a cookie and ask again over UDP; after that, a truncated
            // reply really is too big and goes straight to TCP.
            if self.cookie.is_none() {
                let cookie_tag = self.new_tag();
                let cookie = self.udp_request(&cookie_tag, "/cookie", &mut Sink::gather())?;
                if let Some(Reply::Cookie(cookie)) = cookie {
                    self.cookie = Some(cookie);
                    if let Some(reply) = self.udp_request(tag, command, sink)? {
                        return Ok(reply);
                    }
                }
            }
        }
        self.tcp_request(tag, command, sink)
    }

    /// Stores `text` as one entry, exactly as given.
    pub fn write(&mut self, text: &str) -> Result<Reply, ClientError> {
        let tag = self.new_tag();
        self.write_tagged(&tag, text)
    }

    /// Stores `text` with tag `tag`: sent again with the same tag, it is
    /// answered with the same entry, never stored twice.
    pub fn write_tagged(&mut self, tag: &str, text: &str) -> Result<Reply, ClientError> {
        // One space, then the text as is: leading spaces are part of it.
        self.request_tagged(tag, &format!("/write {text}"))
    }

    /// `Ok(None)` when the reply was truncated and must come over TCP.
    fn udp_request(
        &mut self,
        tag: &str,
        command: &str,
        sink: &mut Sink,
    ) -> Result<Option<Reply>, ClientError> {
        let addr = self.addr;
        let io_err = |e| ClientError::Io(addr, Proto::Udp, e);
        if self.udp.is_none() {
            self.udp = Some(secure::udp_socket(addr).map_err(io_err)?);
        }
        let by = self.opts.by();
        let message = match &self.cookie {
            Some(cookie) => format!(
                "/id {tag} max={} cookie={cookie}{by} {command}",
                self.opts.max_reply
            ),
            None => format!("/id {tag} max={}{by} {command}", self.opts.max_reply),
        };
        let started = Instant::now();
        let deadline = started + self.opts.timeout;
        let mut wait = self.rtt.timeout();
        let mut attempts = 0;
        let mut why = Silence::Quiet;
        while attempts <= self.opts.retries && Instant::now() < deadline {
            attempts += 1;
            let datagram = self.udp_datagram(&message, deadline)?;
            // A refused send (nothing listening yet) is retried like a lost one.
            // The socket is named at each use: reading the reply borrows `self`.
            let _ = self.udp.as_ref().expect("made above").send(&datagram);
            let last = attempts > self.opts.retries;
            let until = if last {
                deadline
            } else {
                (Instant::now() + wait).min(deadline)
            };
            match self.udp_wait(tag, until, &mut why)? {
                Waited::Over => {}
                // The same tagged request again, on a new session.
                Waited::NewSession => attempts -= 1,
                Waited::Answer {
                    truncated: true, ..
                } => return Ok(None),
                Waited::Answer { text, .. } => {
                    if attempts == 1 {
                        self.rtt.sample(started.elapsed());
                    }
                    // The lines after the tag line.
                    let mut lines = text.lines().skip(1).map(|l| Ok(Some(l.to_string())));
                    return read_reply(|| lines.next().unwrap_or(Ok(None)), sink).map(Some);
                }
            }
            wait = (wait * 2).min(MAX_WAIT);
        }
        Err(ClientError::NoAnswer {
            server: addr,
            proto: Proto::Udp,
            waited: started.elapsed(),
            attempts,
            why,
        })
    }

    /// Waits until `until` for the reply tagged `tag`, dropping late
    /// answers to earlier requests; `why` learns why it stays silent.
    fn udp_wait(
        &mut self,
        tag: &str,
        until: Instant,
        why: &mut Silence,
    ) -> Result<Waited, ClientError> {
        let addr = self.addr;
        let io_err = |e| ClientError::Io(addr, Proto::Udp, e);
        while let Some(left) = until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        {
            // The socket is named at each use: reading the reply borrows `self`.
            let socket = self.udp.as_ref().expect("made by udp_request");
            socket.set_read_timeout(Some(left)).map_err(io_err)?;
            let n = match socket.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(Waited::Over);
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    *why = Silence::NothingListens;
                    std::thread::sleep(until.saturating_duration_since(Instant::now()));
                    return Ok(Waited::Over);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(e)),
            };
            let text = match self.udp_heard(n)? {
                Heard::Text(text) => text,
                Heard::Nothing => continue,
                Heard::NewSession => return Ok(Waited::NewSession),
            };
            let first = text.lines().next().unwrap_or_default();
            match read_reply_line(first) {
                ReplyLine::Tag { tag: t, truncated } if t == tag => {
                    return Ok(Waited::Answer { text, truncated });
                }
                // A late answer to an earlier request.
                ReplyLine::Tag { .. } => continue,
                ReplyLine::Error { code, .. } if code == ErrorCode::Auth.as_str() => {
                    return Err(plaintext_refused(addr));
                }
                // diaryd answers every tagged request with its tag.
                _ => {
                    return Err(ClientError::NotDiary {
                        server: addr,
                        got: text.chars().take(80).collect(),
                    });
                }
            }
        }
        Ok(Waited::Over)
    }

    /// The datagram for one try of `message`: sealed with a new nonce (the
    /// server opens each once), on a session made or renewed first.
    fn udp_datagram(&mut self, message: &str, deadline: Instant) -> Result<Vec<u8>, ClientError> {
        let Some(creds) = &self.creds else {
            return Ok(message.as_bytes().to_vec());
        };
        if self
            .udp_session
            .as_ref()
            .is_none_or(UdpSession::needs_renewal)
        {
            let socket = self.udp.as_ref().expect("made by udp_request");
            let session = UdpSession::handshake(socket, creds, &self.opts, self.addr, deadline)?;
            self.udp_session = Some(session);
        }
        let session = self.udp_session.as_mut().expect("made above");
        Ok(session.seal(message.as_bytes()))
    }

    /// What the `n` bytes received in `buf` say.
    fn udp_heard(&mut self, n: usize) -> Result<Heard, ClientError> {
        let (Some(creds), Some(session)) = (&self.creds, &mut self.udp_session) else {
            return Ok(Heard::Text(
                String::from_utf8_lossy(&self.buf[..n]).into_owned(),
            ));
        };
        Ok(match session.open(&self.buf[..n]) {
            FromServer::Plain(plain) => Heard::Text(String::from_utf8_lossy(&plain).into_owned()),
            FromServer::Ignored => Heard::Nothing,
            FromServer::Refused(Some(crate::secure::noise::Refusal::NoSession)) => {
                // Expired, or the server restarted.
                self.udp_session = None;
                Heard::NewSession
            }
            FromServer::Refused(why) => {
                return Err(secure::refusal_error(why, &self.opts, self.addr, creds));
            }
        })
    }

    /// One request over TCP: on a connection that broke, was closed by the
    /// server (idle), or answered out of step, the same tagged request is
    /// sent again on a new connection, with backoff, until the timeout.
    fn tcp_request(
        &mut self,
        tag: &str,
        command: &str,
        sink: &mut Sink,
    ) -> Result<Reply, ClientError> {
        let started = Instant::now();
        let deadline = started + self.opts.timeout;
        let mut pause = Duration::from_millis(50);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match self.tcp_exchange(tag, command, deadline, sink) {
                Ok(Exchange::Reply(reply)) => return Ok(reply),
                Ok(Exchange::Stale) => None,
                Err(e) if e.is_final() => return Err(e),
                Err(e) => Some(e),
            };
            self.tcp = None;
            if Instant::now() + pause >= deadline {
                let why = match &error {
                    Some(ClientError::Io(_, _, e)) => Silence::of(e),
                    _ => Silence::Quiet,
                };
                return Err(match error {
                    Some(ClientError::Io(..)) | None => ClientError::NoAnswer {
                        server: self.addr,
                        proto: Proto::Tcp,
                        waited: started.elapsed(),
                        attempts,
                        why,
                    },
                    Some(e) => e,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_WAIT);
        }
    }

    /// The TCP connection, made if need be. One kept from an earlier
    /// request is dropped if the server has closed it or sent something
    /// unasked (its idle notice): using it would lose the request.
    fn tcp_link(&mut self, deadline: Instant) -> Result<&mut TcpLink, ClientError> {
        if let Some(link) = &mut self.tcp
            && (!link.is_quiet() || link.needs_renewal())
        {
            self.tcp = None;
        }
        if self.tcp.is_none() {
            let wire = ClientStream::connect(self.addr, &self.opts, self.creds.as_ref(), deadline)?;
            self.tcp = Some(TcpLink {
                reader: BufReader::new(wire),
            });
        }
        Ok(self.tcp.as_mut().expect("made above"))
    }

    fn tcp_exchange(
        &mut self,
        tag: &str,
        command: &str,
        deadline: Instant,
        sink: &mut Sink,
    ) -> Result<Exchange, ClientError> {
        let addr = self.addr;
        let by = self.opts.by();
        let link = self.tcp_link(deadline)?;
        let io_err = |e| ClientError::Io(addr, Proto::Tcp, e);
        link.reader
            .get_mut()
            .write_all(format!("/id {tag}{by} {command}\n").as_bytes())
            .map_err(io_err)?;
        let first = link
            .read_line(deadline, addr)?
            .ok_or_else(|| io_err(io::ErrorKind::UnexpectedEof.into()))?;
        let expired = first.as_bytes() == crate::protocol::SESSION_EXPIRED.trim_ascii_end();
        match read_reply_line(&first) {
            ReplyLine::Tag {
                tag: t,
                truncated: false,
            } if t == tag => {
                if sink.each.is_some() {
                    return link.stream_reply(deadline, addr, sink).map(Exchange::Reply);
                }
                read_reply(|| link.read_line(deadline, addr), sink).map(Exchange::Reply)
            }
            // The server's notice before it closed an idle connection, or
            // a reply to an earlier request: not this request's answer.
            ReplyLine::Tag { .. } => Ok(Exchange::Stale),
            ReplyLine::Error { code, .. } if code == ErrorCode::Idle.as_str() => {
                Ok(Exchange::Stale)
            }
            _ if expired => Ok(Exchange::Stale),
            ReplyLine::Error { code, .. } if code == ErrorCode::Auth.as_str() => {
                Err(plaintext_refused(addr))
            }
            // Errors about the envelope itself, or `busy`, come without a tag.
            ReplyLine::Error { .. } => {
                let mut next = || link.read_line(deadline, addr);
                read_reply_from_first(first, &mut next, sink).map(Exchange::Reply)
            }
            _ => Err(ClientError::NotDiary {
                server: addr,
                got: first.chars().take(80).collect(),
            }),
        }
    }
}

/// What one wait for a UDP reply came to.
enum Waited {
    /// The reply to this request (cut short to fit, if `truncated`).
    Answer { text: String, truncated: bool },
    /// Nothing for it by the deadline.
    Over,
    /// The server had forgotten the session: a new one is made, and the
    /// request is sent again on it.
    NewSession,
}

/// What a datagram from the server was, to a UDP request.
enum Heard {
    Text(String),
    /// Not for this session, a replay, or garbage.
    Nothing,
    /// The server has no such session: make a new one and ask again.
    NewSession,
}

/// What one TCP exchange gave.
enum Exchange {
    Reply(Reply),
    /// The connection held something else; send again on a new one.
    Stale,
}

/// The server wants keys from this address, and got plaintext.
fn plaintext_refused(addr: SocketAddr) -> ClientError {
    ClientError::Auth(format!(
        "{addr} takes only encrypted requests from here: make a key with `diary keygen`, \
         have it added to the server's allow file, and connect by an address that is not \
         loopback (or pass --server-key)"
    ))
}

impl TcpLink {
    fn needs_renewal(&self) -> bool {
        matches!(self.reader.get_ref(), ClientStream::Secure(s) if s.needs_renewal())
    }

    /// Whether nothing has arrived unasked: no bytes, no end of stream.
    fn is_quiet(&mut self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        if matches!(self.reader.get_ref(), ClientStream::Secure(s) if s.has_buffered()) {
            return false;
        }
        let stream = self.reader.get_ref().tcp();
        if stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut probe = [0u8; 1];
        let quiet =
            matches!(stream.peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        quiet && stream.set_nonblocking(false).is_ok()
    }

    /// One line, without its ending; the end of the stream is an error.
    fn read_line(
        &mut self,
        deadline: Instant,
        addr: SocketAddr,
    ) -> Result<Option<String>, ClientError> {
        self.with_line(deadline, addr, |line| Ok(line.to_string()))
            .map(Some)
    }

    /// The rest of a reply of lines, each handed to `sink` as it lies in
    /// the read buffer: no allocation per line, for histories of millions.
    fn stream_reply(
        &mut self,
        deadline: Instant,
        addr: SocketAddr,
        sink: &mut Sink,
    ) -> Result<Reply, ClientError> {
        let first = self
            .read_line(deadline, addr)?
            .ok_or_else(|| ClientError::BadReply("empty reply".into()))?;
        if let Some(reply) = one_line_reply(&first) {
            return reply;
        }
        let mut seen = 0;
        if !sink.offer(&first, &mut seen)? {
            while !self.with_line(deadline, addr, |line| sink.offer(line, &mut seen))? {}
        }
        Ok(Reply::Lines(Vec::new()))
    }

    /// Calls `f` with the next line, without its ending; the end of the
    /// stream is an error.
    fn with_line<R>(
        &mut self,
        deadline: Instant,
        addr: SocketAddr,
        f: impl FnOnce(&str) -> Result<R, ClientError>,
    ) -> Result<R, ClientError> {
        let io_err = |e| ClientError::Io(addr, Proto::Tcp, e);
        // A line already buffered needs no wait (and no system call to set
        // one), and is taken in place after one SIMD search: a long history
        // is hundreds of thousands of them, and std's line reader searches
        // a word at a time.
        if let Some(end) = memchr::memchr(b'\n', self.reader.buffer()) {
            let mut line = &self.reader.buffer()[..end];
            while let Some(rest) = line.strip_suffix(b"\r") {
                line = rest;
            }
            let result = match simdutf8::basic::from_utf8(line) {
                Ok(line) => f(line),
                Err(_) => Err(io_err(io::ErrorKind::InvalidData.into())),
            };
            self.reader.consume(end + 1);
            return result;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.reader
            .get_ref()
            .tcp()
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(io_err)?;
        let mut line = String::with_capacity(128);
        match read_bounded_line(&mut self.reader, &mut line) {
            // The connection ended, perhaps mid-reply: a broken link, for
            // the caller to try again on a new one (the request is tagged).
            // A line cut short by the end (no newline) is not a reply either.
            Ok(_) if !line.ends_with('\n') => Err(io_err(io::ErrorKind::UnexpectedEof.into())),
            Ok(0) => Err(io_err(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => f(line.trim_end_matches(['\n', '\r'])),
            // Not diaryd's bytes (a line without end, or not UTF-8): asking
            // again would only bring more of them.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                Err(ClientError::BadReply(e.to_string()))
            }
            Err(e) => Err(io_err(e)),
        }
    }
}

/// The longest line taken from a server: far over any entry line diaryd
/// sends with its default `--max-entry` (64 KiB of text, escaped at most
/// to twice that), and a bound on what a server that is not diaryd (or an
/// impostor) can make the client hold.
pub(crate) const MAX_SERVER_LINE: usize = 8 << 20;

/// `read_line`, but a line over [`MAX_SERVER_LINE`] is an error (the
/// connection is no diary reply) rather than memory without end.
fn read_bounded_line<R: BufRead>(reader: &mut R, line: &mut String) -> io::Result<usize> {
    let n = io::Read::take(reader, MAX_SERVER_LINE as u64 + 1).read_line(line)?;
    if line.len() > MAX_SERVER_LINE {
        line.clear();
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the server sent a line over {} MiB: not a diary reply",
                MAX_SERVER_LINE >> 20
            ),
        ));
    }
    Ok(n)
}

/// Sends many tagged requests (`/write TEXT`, `/import …`) over one TCP
/// connection, keeping up to `window` in flight, each with its own tag; a
/// connection that breaks is made again and the unanswered ones are sent
/// again with the same tags, so each is stored once. `on_reply(i, reply)`
/// hears each answer in order. Stops at the first error it cannot get
/// past, with the index reached.
pub fn write_pipelined(
    opts: &Options,
    entries: &[(String, String)],
    window: usize,
    mut on_reply: impl FnMut(usize, Reply),
) -> Result<(), (usize, ClientError)> {
    let addr = resolve(&opts.server).map_err(|e| (0, e))?;
    let creds = secure::credentials(opts, addr).map_err(|e| (0, e))?;
    let window = window.max(1);
    let mut done = 0;
    let mut pause = Duration::from_millis(50);
    let mut last_progress = Instant::now();
    while done < entries.len() {
        let pass = pipeline_pass(
            (addr, opts, creds.as_ref()),
            &entries[done..],
            window,
            |i, reply| on_reply(done + i, reply),
        );
        match pass {
            Ok(n) => done += n,
            Err((n, e)) => {
                if n > 0 {
                    last_progress = Instant::now();
                    pause = Duration::from_millis(50);
                }
                done += n;
                if e.is_final() || last_progress.elapsed() + pause > opts.timeout {
                    let e = match e {
                        ClientError::Io(_, _, e) => ClientError::NoAnswer {
                            server: addr,
                            proto: Proto::Tcp,
                            waited: last_progress.elapsed(),
                            attempts: 1,
                            why: Silence::of(&e),
                        },
                        e => e,
                    };
                    return Err((done, e));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(MAX_WAIT);
            }
        }
    }
    Ok(())
}

/// One connection's worth of a pipelined write; how many were answered.
fn pipeline_pass(
    (addr, opts, creds): (SocketAddr, &Options, Option<&Credentials>),
    entries: &[(String, String)],
    window: usize,
    mut on_reply: impl FnMut(usize, Reply),
) -> Result<usize, (usize, ClientError)> {
    let timeout = opts.timeout;
    let by = opts.by();
    let wire =
        ClientStream::connect(addr, opts, creds, Instant::now() + timeout).map_err(|e| (0, e))?;
    let mut link = TcpLink {
        reader: BufReader::new(wire),
    };
    let (mut sent, mut answered) = (0, 0);
    let mut batch = Vec::new();
    while answered < entries.len() {
        // Refill once half the window is answered: one write for many lines.
        if sent - answered <= window / 2 {
            batch.clear();
            while sent < entries.len() && sent - answered < window {
                let (tag, command) = &entries[sent];
                batch.extend_from_slice(format!("/id {tag}{by} {command}\n").as_bytes());
                sent += 1;
            }
            if !batch.is_empty() {
                link.reader
                    .get_mut()
                    .write_all(&batch)
                    .map_err(|e| (answered, ClientError::Io(addr, Proto::Tcp, e)))?;
            }
        }
        let deadline = Instant::now() + timeout;
        let mut next = || link.read_line(deadline, addr);
        let first = next()
            .and_then(|l| {
                l.ok_or_else(|| {
                    ClientError::Io(addr, Proto::Tcp, io::ErrorKind::UnexpectedEof.into())
                })
            })
            .map_err(|e| (answered, e))?;
        let (tag, _) = &entries[answered];
        let e = match read_reply_line(&first) {
            ReplyLine::Tag {
                tag: t,
                truncated: false,
            } if t == tag => None,
            ReplyLine::Tag { .. } | ReplyLine::Error { .. } => {
                Some(ClientError::Io(addr, Proto::Tcp, io::Error::other(first)))
            }
            _ => Some(ClientError::NotDiary {
                server: addr,
                got: first.chars().take(80).collect(),
            }),
        };
        if let Some(e) = e {
            return Err((answered, e));
        }
        let reply = read_reply(next, &mut Sink::gather()).map_err(|e| (answered, e))?;
        on_reply(answered, reply);
        answered += 1;
    }
    Ok(answered)
}

fn resolve(server: &str) -> Result<SocketAddr, ClientError> {
    server
        .to_socket_addrs()
        .map_err(|e| ClientError::BadAddress(server.to_string(), e))?
        .next()
        .ok_or_else(|| ClientError::BadAddress(server.to_string(), io::ErrorKind::NotFound.into()))
}

/// What takes the lines of a reply one at a time.
pub(crate) type EachLine<'a> = dyn FnMut(&str) -> io::Result<()> + 'a;

/// Where the lines of a reply of lines go: gathered into
/// [`Reply::Lines`], or handed on one at a time.
struct Sink<'a> {
    each: Option<&'a mut EachLine<'a>>,
    /// Lines handed on so far, over every attempt: a reply sent again
    /// after a broken connection starts with them.
    handed: usize,
}

impl<'a> Sink<'a> {
    fn gather() -> Sink<'a> {
        Sink {
            each: None,
            handed: 0,
        }
    }

    fn each(each: &'a mut EachLine<'a>) -> Sink<'a> {
        Sink {
            each: Some(each),
            handed: 0,
        }
    }

    /// Hands on line `*seen + 1` of this attempt's reply, unless an earlier
    /// attempt already did. Whether it was the end line instead.
    fn offer(&mut self, line: &str, seen: &mut usize) -> Result<bool, ClientError> {
        if read_reply_line(line) == ReplyLine::End {
            return Ok(true);
        }
        *seen += 1;
        if *seen > self.handed
            && let Some(each) = &mut self.each
        {
            each(line).map_err(ClientError::Output)?;
            self.handed += 1;
        }
        Ok(false)
    }
}

/// Reads one reply (after its tag line) from a source of lines.
fn read_reply(
    mut next: impl FnMut() -> Result<Option<String>, ClientError>,
    sink: &mut Sink,
) -> Result<Reply, ClientError> {
    let first = next()?.ok_or_else(|| ClientError::BadReply("empty reply".into()))?;
    read_reply_from_first(first, &mut next, sink)
}

fn read_reply_from_first(
    first: String,
    next: &mut impl FnMut() -> Result<Option<String>, ClientError>,
    sink: &mut Sink,
) -> Result<Reply, ClientError> {
    if let Some(reply) = one_line_reply(&first) {
        return reply;
    }
    let mut lines = Vec::new();
    let mut line = first;
    let mut seen = 0;
    loop {
        if sink.each.is_some() {
            if sink.offer(&line, &mut seen)? {
                break;
            }
        } else if read_reply_line(&line) == ReplyLine::End {
            break;
        } else {
            lines.push(line);
        }
        line = next()?.ok_or_else(ended_early)?;
    }
    Ok(Reply::Lines(lines))
}

/// The reply a first line makes by itself (an ack, a refusal, `bye` or a
/// cookie); `None` when it begins a reply of lines (entries, help, stats).
fn one_line_reply(first: &str) -> Option<Result<Reply, ClientError>> {
    Some(match read_reply_line(first) {
        ReplyLine::Ack { id, time } => id
            .parse()
            .map(|id| Reply::Stored {
                id,
                time: time.to_string(),
            })
            .map_err(|_| ClientError::BadReply(first.to_string())),
        ReplyLine::Error { code, message } => Ok(Reply::Refused {
            code: code.to_string(),
            message: message.to_string(),
        }),
        ReplyLine::Bye => Ok(Reply::Bye),
        ReplyLine::Cookie(cookie) => Ok(Reply::Cookie(cookie.to_string())),
        _ => return None,
    })
}

fn ended_early() -> ClientError {
    ClientError::BadReply("reply ended without its end line".into())
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

/// Follows the diary over TCP: entries after `since` (an id), or from it
/// (a time) — none before now without it — then each new one as it is
/// committed. Reconnects from the
/// last id seen when the connection breaks, the server restarts, or the
/// server drops this follower for falling behind, so nothing is missed.
/// Returns when `on_entry` returns false; fails only if the very first
/// connection cannot be made, or the server refuses the request.
pub fn follow(
    opts: &Options,
    since: Option<crate::client::dates::Point>,
    mut on_entry: impl FnMut(&Entry) -> bool,
    mut on_event: impl FnMut(&FollowEvent),
) -> Result<(), ClientError> {
    let addr = resolve(&opts.server)?;
    let creds = secure::credentials(opts, addr)?;
    let mut state = FollowState::new(since);
    let mut connected_once = false;
    loop {
        let deadline = Instant::now() + opts.timeout;
        let mut wire = match ClientStream::connect(addr, opts, creds.as_ref(), deadline) {
            Ok(wire) => wire,
            Err(e) if !connected_once || e.is_final() => return Err(e),
            Err(e) => {
                on_event(&FollowEvent::Reconnecting(format!("cannot connect: {e}")));
                state.wait();
                continue;
            }
        };
        connected_once = true;
        // Entries may be far apart: no read timeout.
        let _ = wire.tcp().set_read_timeout(None);
        if let Err(e) = wire.write_all(state.request().as_bytes()) {
            on_event(&FollowEvent::Reconnecting(e.to_string()));
            continue;
        }
        let ended = match state.read_feed(BufReader::new(wire), &mut on_entry, &mut on_event)? {
            Feed::Done => return Ok(()),
            Feed::Ended(why) => why,
        };
        if !ended.is_empty() {
            on_event(&FollowEvent::Reconnecting(ended));
            state.wait();
        }
    }
}

/// How one connection of a follow ended.
enum Feed {
    /// The caller has what it wanted.
    Done,
    /// Why it ended (empty: reconnect at once, quietly).
    Ended(String),
}

/// Where a follow stands across its connections.
struct FollowState {
    /// The newest entry had (or the id the server said it starts after).
    after: Option<u64>,
    /// A time is asked for until the server says which id it starts after.
    from_time: Option<String>,
    /// The diary followed, once the server has named it: a resume names it,
    /// so a replaced diary or another server is refused, never followed blind.
    diary: Option<String>,
    pause: Duration,
}

impl FollowState {
    fn new(since: Option<crate::client::dates::Point>) -> FollowState {
        use crate::client::dates::Point;
        FollowState {
            after: match since {
                Some(Point::AfterId(id)) => Some(id),
                _ => None,
            },
            from_time: match since {
                Some(point @ Point::From(_)) => Some(point.canonical()),
                _ => None,
            },
            diary: None,
            pause: FOLLOW_FIRST_PAUSE,
        }
    }

    /// Waits before the next try, twice as long each time, up to a bound.
    fn wait(&mut self) {
        std::thread::sleep(self.pause);
        self.pause = (self.pause * 2).min(FOLLOW_MAX_PAUSE);
    }

    /// The `/follow` request that resumes where this follow stands.
    fn request(&self) -> String {
        let mut request = String::from("/follow");
        if let Some(id) = self.after {
            request.push_str(&format!(" since {id}"));
        } else if let Some(time) = &self.from_time {
            request.push_str(&format!(" since {time}"));
        }
        if let Some(diary) = &self.diary {
            request.push_str(&format!(" diary {diary}"));
        }
        request.push('\n');
        request
    }

    /// Reads one connection's feed until it ends or `on_entry` has enough.
    fn read_feed(
        &mut self,
        mut reader: BufReader<ClientStream>,
        on_entry: &mut impl FnMut(&Entry) -> bool,
        on_event: &mut impl FnMut(&FollowEvent),
    ) -> Result<Feed, ClientError> {
        let mut line = String::new();
        loop {
            line.clear();
            match read_bounded_line(&mut reader, &mut line) {
                Ok(0) => return Ok(Feed::Ended("the server closed the connection".into())),
                // Cut short by the end: not an entry (it resumes from the last whole one).
                Ok(_) if !line.ends_with('\n') => {
                    return Ok(Feed::Ended("the connection ended mid-line".into()));
                }
                Ok(_) => {}
                Err(e) => return Ok(Feed::Ended(e.to_string())),
            }
            let text = line.trim_end_matches(['\n', '\r']);
            if let Some(entry) = parse_entry(text) {
                if self.after.is_none_or(|a| entry.id > a) {
                    self.after = Some(entry.id);
                    if !on_entry(&entry) {
                        return Ok(Feed::Done);
                    }
                }
                continue;
            }
            if text.as_bytes() == crate::protocol::SESSION_EXPIRED.trim_ascii_end() {
                // A new session on a new connection, at once and quietly.
                return Ok(Feed::Ended(String::new()));
            }
            match read_reply_line(text) {
                ReplyLine::Following {
                    after: id,
                    diary: named,
                } => {
                    self.pause = FOLLOW_FIRST_PAUSE;
                    let id = id
                        .parse()
                        .map_err(|_| ClientError::BadReply(text.to_string()))?;
                    if let Some(named) = named {
                        self.diary.get_or_insert_with(|| named.to_string());
                    }
                    self.after.get_or_insert(id);
                    on_event(&FollowEvent::Following(id));
                }
                ReplyLine::Error { code, message } if code == ErrorCode::Behind.as_str() => {
                    let resume = crate::protocol::resume_id(message)
                        .ok_or_else(|| ClientError::BadReply(text.to_string()))?;
                    // Resume from what was actually received, which is
                    // never past the notice's id.
                    let after = self.after.map_or(resume, |a: u64| a.min(resume));
                    self.after = Some(after);
                    on_event(&FollowEvent::Resuming(after));
                    return Ok(Feed::Ended(String::new()));
                }
                ReplyLine::Error { code, message } => {
                    return Err(ClientError::BadReply(format!("{code}: {message}")));
                }
                _ => {}
            }
        }
    }
}
