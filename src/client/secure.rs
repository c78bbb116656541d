//! The client's side of encrypted sessions: which keys to use (the
//! device's, and the server's as given or pinned on first contact, as ssh
//! pins host keys), the TCP handshake and a sealed stream, and UDP
//! sessions with their nonces and replay window.

use crate::client::config::{Options, Proto, SecureMode};
use crate::client::errors::{ClientError, KeyChange, Pin, Silence};
use crate::secure::keys::{self, KeyPair, PublicKey};
use crate::secure::noise::{
    self, DATA, Datagram, KEY, MAX_FRAME_PLAINTEXT, NotAFrame, REFUSED, REKEY_AFTER,
    REKEY_AFTER_MESSAGES, REPLY, Refusal, ReplayWindow,
};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// The keys of one encrypted conversation.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub own: KeyPair,
    pub server: PublicKey,
    pub pin: Pin,
}

/// The keys to use with the server at `addr`, or `None` for plaintext.
/// On first contact the server's key is asked for, pinned and shown.
pub(crate) fn credentials(
    opts: &Options,
    addr: SocketAddr,
) -> Result<Option<Credentials>, ClientError> {
    let security = &opts.security;
    let wanted = match security.mode {
        SecureMode::Plain => false,
        SecureMode::Auto => !addr.ip().is_loopback() || security.server_key.is_some(),
    };
    if !wanted {
        return Ok(None);
    }
    let key_path = &security.key;
    let own = match keys::load_key_file(key_path) {
        Ok(own) => own,
        Err(_) if !key_path.exists() => {
            return Err(ClientError::Key(format!(
                "no device key at {}: make one with `diary keygen` and add the line it \
                 suggests to the server's allow file (or pass --plain for a server started \
                 with --insecure-open)",
                key_path.display()
            )));
        }
        Err(e) => return Err(ClientError::Key(e)),
    };
    if let Some(server) = security.server_key {
        return Ok(Some(Credentials {
            own,
            server,
            pin: Pin::Given,
        }));
    }
    let file = &security.known_servers;
    // Pinned under the address it resolved to, so that another spelling
    // of it (`10.0.0.1:08888`, `[::ffff:10.0.0.1]:8888`) finds the pin
    // instead of pinning whoever answers there now; and under a host
    // name as typed too, so that the name keeps its key if its address
    // changes (ssh's CheckHostIP, the other way round).
    let resolved = pin_address(addr);
    let by_name = opts
        .server
        .parse::<SocketAddr>()
        .is_err()
        .then_some(&opts.server);
    // The spelling typed comes second: it is a host name's pin, or one an
    // older version kept under a spelling of an address.
    for name in [&resolved, &opts.server] {
        if let Some((server, line)) = keys::pinned_key(file, name).map_err(ClientError::Key)? {
            return Ok(Some(Credentials {
                own,
                server,
                pin: Pin::File(file.clone(), line),
            }));
        }
    }
    let server = fetch_server_key(opts, addr)?;
    for name in std::iter::once(&resolved).chain(by_name) {
        keys::pin_key(file, name, &server).map_err(ClientError::Key)?;
    }
    eprintln!(
        "diary: first contact with {} ({resolved}): its key is {server}\n\
         diary: pinned in {}; compare it with the `server key` line diaryd printed",
        opts.server,
        file.display()
    );
    let line = keys::pinned_key(file, &resolved)
        .ok()
        .flatten()
        .map_or(0, |(_, line)| line);
    Ok(Some(Credentials {
        own,
        server,
        pin: Pin::File(file.clone(), line),
    }))
}

/// The one spelling of a server's address its pin is kept under: an IPv4
/// address as such even when reached as `::ffff:a.b.c.d`, the port in
/// plain digits.
pub(crate) fn pin_address(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    };
    SocketAddr::new(ip, addr.port()).to_string()
}

/// Asks the server for its public key, over the chosen transport.
pub(crate) fn fetch_server_key(opts: &Options, addr: SocketAddr) -> Result<PublicKey, ClientError> {
    let io_err = |e| ClientError::Io(addr, opts.proto, e);
    let deadline = Instant::now() + opts.timeout;
    match opts.proto {
        Proto::Tcp => {
            let mut stream = TcpStream::connect_timeout(&addr, opts.timeout).map_err(io_err)?;
            let mut request = Vec::new();
            noise::push_frame(&mut request, KEY, &[]);
            stream.write_all(&request).map_err(io_err)?;
            let (kind, body) =
                read_frame(&mut stream, deadline).map_err(turned_away(addr, opts.proto))?;
            match kind {
                KEY => PublicKey::from_slice(&body)
                    .ok_or_else(|| ClientError::BadReply("a key of the wrong length".into())),
                _ => Err(ClientError::BadReply(
                    "the server did not send its key".into(),
                )),
            }
        }
        Proto::Udp => {
            let socket = udp_socket(addr).map_err(io_err)?;
            let mut buf = [0u8; 2048];
            let mut wait = Duration::from_millis(200);
            let mut attempts = 0;
            let mut why = Silence::Quiet;
            while Instant::now() < deadline {
                attempts += 1;
                let _ = socket.send(&noise::key_request());
                let until = (Instant::now() + wait).min(deadline);
                while let Some(left) = until.checked_duration_since(Instant::now()) {
                    socket
                        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                        .map_err(io_err)?;
                    match socket.recv(&mut buf) {
                        Ok(n) => {
                            if let Some(Datagram::Key(key)) = noise::parse_datagram(&buf[..n]) {
                                return Ok(key);
                            }
                        }
                        Err(e) => {
                            why = Silence::of(&e);
                            break;
                        }
                    }
                }
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            Err(ClientError::NoAnswer {
                server: addr,
                proto: Proto::Udp,
                waited: opts.timeout,
                attempts,
                why,
            })
        }
    }
}

/// A UDP socket connected to `addr`.
pub(crate) fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(addr)?;
    Ok(socket)
}

/// What a refusal means to the person at the keyboard.
pub(crate) fn refusal_error(
    why: Option<Refusal>,
    opts: &Options,
    addr: SocketAddr,
    creds: &Credentials,
) -> ClientError {
    let Some(why) = why else {
        return ClientError::BadReply("a refusal with an unknown code".into());
    };
    if why == Refusal::Replayed {
        return ClientError::StaleHandshake(addr);
    }
    if why == Refusal::BadHandshake
        && let Ok(now) = fetch_server_key(opts, addr)
        && now != creds.server
    {
        return ClientError::ServerKeyChanged(Box::new(KeyChange {
            server: opts.server.clone(),
            pinned: creds.server,
            offered: now,
            pin: creds.pin.clone(),
        }));
    }
    let hint = match why {
        Refusal::UnknownDevice => format!(
            "; add this line to the server's allow file, then send diaryd SIGHUP:\n  {} NAME all",
            creds.own.public
        ),
        Refusal::NoKeys => {
            "; the server was started without --allow (use --plain if it serves plaintext)".into()
        }
        Refusal::TooMany => "; wait a minute and try again".into(),
        _ => String::new(),
    };
    ClientError::Auth(format!("{addr} refused this device: {}{hint}", why.words()))
}

/// What a failed frame read means: the server's own words when it sent a
/// text line (busy, keys required) instead of a frame, final; otherwise
/// an I/O error, to be tried again.
fn turned_away(addr: SocketAddr, proto: Proto) -> impl Fn(io::Error) -> ClientError {
    move |e| {
        if e.kind() == io::ErrorKind::InvalidData {
            ClientError::Auth(format!("{addr} turned the connection away: {e}"))
        } else {
            ClientError::Io(addr, proto, e)
        }
    }
}

/// Reads one whole frame (blocking, until `deadline`).
fn read_frame(stream: &mut TcpStream, deadline: Instant) -> io::Result<(u8, Vec<u8>)> {
    let left = deadline.saturating_duration_since(Instant::now());
    stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
    let mut header = [0u8; noise::TCP_HEADER];
    stream.read_exact(&mut header)?;
    if !noise::is_encrypted(header[0]) {
        // A text line instead (`err busy …` from a server with no slot
        // left): its words, as the error.
        let mut text = header.to_vec();
        let _ = (&mut *stream).take(512).read_to_end(&mut text);
        let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            String::from_utf8_lossy(line).into_owned(),
        ));
    }
    let mut body = vec![0u8; u16::from_be_bytes([header[1], header[2]]) as usize];
    stream.read_exact(&mut body)?;
    Ok((header[0], body))
}

/// An encrypted TCP connection, after its handshake.
pub struct SecureStream {
    stream: TcpStream,
    transport: snow::TransportState,
    started: Instant,
    rx: Vec<u8>,
    plain: Vec<u8>,
    plain_start: usize,
}

impl SecureStream {
    /// Runs the handshake on a new connection.
    pub fn connect(
        mut stream: TcpStream,
        creds: &Credentials,
        opts: &Options,
        deadline: Instant,
    ) -> Result<SecureStream, ClientError> {
        let addr = stream
            .peer_addr()
            .map_err(|e| ClientError::Io(peer_unknown(), Proto::Tcp, e))?;
        let io_err = |e| ClientError::Io(addr, Proto::Tcp, e);
        let mut handshake = noise::initiator(&creds.own, &creds.server);
        let mut first = [0u8; 256];
        let n = handshake
            .write_message(&noise::stamp_now(), &mut first)
            .map_err(|e| ClientError::Key(format!("handshake: {e}")))?;
        let mut frame = Vec::new();
        noise::push_frame(&mut frame, noise::INIT, &first[..n]);
        stream.write_all(&frame).map_err(io_err)?;
        let (kind, body) =
            read_frame(&mut stream, deadline).map_err(turned_away(addr, Proto::Tcp))?;
        match kind {
            REPLY => {}
            REFUSED => {
                let why = body.first().copied().and_then(Refusal::from_code);
                return Err(refusal_error(why, opts, addr, creds));
            }
            _ => {
                return Err(ClientError::BadReply(
                    "the server did not answer the handshake".into(),
                ));
            }
        }
        handshake
            .read_message(&body, &mut [0u8; 64])
            .map_err(|_| ClientError::BadReply("the handshake's reply did not open".into()))?;
        let transport = handshake
            .into_transport_mode()
            .map_err(|e| ClientError::BadReply(format!("handshake: {e}")))?;
        Ok(SecureStream {
            stream,
            transport,
            started: Instant::now(),
            rx: Vec::new(),
            plain: Vec::new(),
            plain_start: 0,
        })
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.stream
    }

    /// The connection and its session, for a caller that frames messages
    /// itself (the benchmark's non-blocking generator).
    pub fn into_parts(self) -> (TcpStream, snow::TransportState) {
        (self.stream, self.transport)
    }

    /// Received bytes not yet read.
    pub(crate) fn has_buffered(&self) -> bool {
        self.plain_start < self.plain.len() || !self.rx.is_empty()
    }

    /// Past its lifetime: a new connection makes a new session.
    pub(crate) fn needs_renewal(&self) -> bool {
        self.started.elapsed() >= REKEY_AFTER
    }
}

fn peer_unknown() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

fn broken(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl Read for SecureStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.plain_start < self.plain.len() {
                let n = buf.len().min(self.plain.len() - self.plain_start);
                buf[..n].copy_from_slice(&self.plain[self.plain_start..self.plain_start + n]);
                self.plain_start += n;
                return Ok(n);
            }
            match noise::parse_frame(&self.rx) {
                Ok(Some((frame, used))) if frame.kind == DATA => {
                    self.plain.resize(frame.body.len(), 0);
                    let n = self
                        .transport
                        .read_message(frame.body, &mut self.plain)
                        .map_err(|_| broken("a frame from the server did not open"))?;
                    self.plain.truncate(n);
                    self.plain_start = 0;
                    self.rx.drain(..used);
                }
                Ok(Some(_)) | Err(NotAFrame) => return Err(broken("not a data frame")),
                Ok(None) => {
                    let mut chunk = [0u8; 16 * 1024];
                    let n = self.stream.read(&mut chunk)?;
                    if n == 0 {
                        return Ok(0);
                    }
                    self.rx.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}

impl Write for SecureStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut frames = Vec::with_capacity(buf.len() + 64);
        for chunk in buf.chunks(MAX_FRAME_PLAINTEXT) {
            noise::seal_frame(&mut self.transport, chunk, &mut frames)
                .map_err(|_| broken("cannot seal"))?;
        }
        self.stream.write_all(&frames)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// An encrypted UDP session.
pub struct UdpSession {
    /// Our index: the server's datagrams name it.
    index: u32,
    /// The server's index: ours name it.
    remote: u32,
    transport: snow::StatelessTransportState,
    next_nonce: u64,
    window: ReplayWindow,
    started: Instant,
}

/// What a datagram from the server was.
pub enum FromServer {
    Plain(Vec<u8>),
    Refused(Option<Refusal>),
    /// Not for this session, a replay, or garbage.
    Ignored,
}

impl UdpSession {
    /// Makes a session: first messages, retried with backoff, until a
    /// reply opens or the deadline passes.
    pub fn handshake(
        socket: &UdpSocket,
        creds: &Credentials,
        opts: &Options,
        addr: SocketAddr,
        deadline: Instant,
    ) -> Result<UdpSession, ClientError> {
        let io_err = |e| ClientError::Io(addr, Proto::Udp, e);
        let started = Instant::now();
        let mut attempts: Vec<(u32, snow::HandshakeState)> = Vec::new();
        let mut wait = Duration::from_millis(200);
        let mut buf = vec![0u8; 2048];
        let mut why = Silence::Quiet;
        // Under load the server first asks for proof of our address.
        let mut cookie: Option<[u8; noise::COOKIE_LEN]> = None;
        while Instant::now() < deadline {
            let mut handshake = noise::initiator(&creds.own, &creds.server);
            let mut first = [0u8; 256];
            let n = handshake
                .write_message(&noise::stamp_now(), &mut first)
                .map_err(|e| ClientError::Key(format!("handshake: {e}")))?;
            let index = random_index();
            let mut datagram = Vec::new();
            noise::push_init(&mut datagram, index, cookie.as_ref(), &first[..n]);
            let _ = socket.send(&datagram);
            attempts.push((index, handshake));
            let until = (Instant::now() + wait).min(deadline);
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                socket
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .map_err(io_err)?;
                let n = match socket.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        why = Silence::NothingListens;
                        std::thread::sleep(until.saturating_duration_since(Instant::now()));
                        break;
                    }
                    Err(_) => break,
                };
                match noise::parse_datagram(&buf[..n]) {
                    Some(Datagram::Reply {
                        sender,
                        receiver,
                        noise,
                    }) => {
                        let Some(i) = attempts.iter().position(|(ix, _)| *ix == receiver) else {
                            continue;
                        };
                        let (index, mut handshake) = attempts.swap_remove(i);
                        if handshake.read_message(noise, &mut [0u8; 64]).is_err() {
                            continue;
                        }
                        let transport = handshake
                            .into_stateless_transport_mode()
                            .map_err(|e| ClientError::BadReply(format!("handshake: {e}")))?;
                        return Ok(UdpSession {
                            index,
                            remote: sender,
                            transport,
                            next_nonce: 0,
                            window: ReplayWindow::default(),
                            started: Instant::now(),
                        });
                    }
                    Some(Datagram::Cookie {
                        receiver,
                        cookie: given,
                    }) if attempts.iter().any(|(ix, _)| *ix == receiver) => {
                        // Anyone could send one; the worst a forged one does
                        // is cost the next attempt a round trip.
                        cookie = given.try_into().ok();
                        break;
                    }
                    Some(Datagram::Refused { receiver, why })
                        if attempts.iter().any(|(ix, _)| *ix == receiver)
                            && why != Some(Refusal::Replayed) =>
                    {
                        return Err(refusal_error(why, opts, addr, creds));
                    }
                    _ => {}
                }
            }
            wait = (wait * 2).min(Duration::from_secs(1));
        }
        Err(ClientError::NoAnswer {
            server: addr,
            proto: Proto::Udp,
            waited: started.elapsed(),
            attempts: attempts.len() as u32,
            why,
        })
    }

    /// Past its lifetime or its message count: make a new one.
    pub(crate) fn needs_renewal(&self) -> bool {
        self.started.elapsed() >= REKEY_AFTER || self.next_nonce >= REKEY_AFTER_MESSAGES
    }

    /// One request, sealed with a nonce of its own (each retry too).
    pub fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + noise::UDP_DATA_OVERHEAD);
        self.seal_into(plain, &mut out);
        out
    }

    /// As [`UdpSession::seal`], into `out` (cleared first).
    pub fn seal_into(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        noise::seal_datagram(&self.transport, self.remote, nonce, plain, out)
            .expect("a request fits one Noise message");
    }

    pub fn open(&mut self, datagram: &[u8]) -> FromServer {
        let mut plain = Vec::new();
        match self.open_into(datagram, &mut plain) {
            Received::Plain => FromServer::Plain(plain),
            Received::Refused(why) => FromServer::Refused(why),
            Received::Ignored => FromServer::Ignored,
        }
    }

    /// As [`UdpSession::open`], the plaintext into `plain`.
    pub fn open_into(&mut self, datagram: &[u8], plain: &mut Vec<u8>) -> Received {
        match noise::parse_datagram(datagram) {
            Some(Datagram::Data {
                receiver,
                nonce,
                sealed,
            }) if receiver == self.index && self.window.is_fresh(nonce) => {
                plain.resize(sealed.len(), 0);
                match self.transport.read_message(nonce, sealed, plain) {
                    Ok(n) => {
                        self.window.mark(nonce);
                        plain.truncate(n);
                        Received::Plain
                    }
                    Err(_) => Received::Ignored,
                }
            }
            // A refusal is not sealed (there may be no session to seal
            // it with): anyone could forge one, and all it can make the
            // client do is a new handshake.
            Some(Datagram::Refused { receiver, why }) if receiver == self.remote => {
                Received::Refused(why)
            }
            _ => Received::Ignored,
        }
    }
}

/// What [`UdpSession::open_into`] found.
pub enum Received {
    Plain,
    Refused(Option<Refusal>),
    Ignored,
}

fn random_index() -> u32 {
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).expect("the system's random source works");
    u32::from_le_bytes(random).max(1)
}
