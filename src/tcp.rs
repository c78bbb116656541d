//! The TCP side of the server: the listener, the connections (in a slab),
//! accepting within the connection limit, reading and answering lines,
//! streaming long replies, feeding followers, flushing, and closing idle
//! or unread connections.
//!
//! It reaches the diary only through the [`Service`] the loop lends it, and
//! the loop only through its methods. Nothing it queues is sent before the
//! loop's commit of the same iteration, and no connection leaves the slab
//! before the iteration's end ([`TcpSide::reap`]), so neither a patched ack
//! nor a stale event can reach the wrong client.
//!
//! `tcp/` holds its line framing, its followers, its encrypted links, and
//! the web logins it gives out.
//! It may import `server`, `handler`, `store`, `secure`, `protocol` and
//! `wire`; never `udp`, `event_loop` or `client`.

pub(crate) mod conns;
pub(crate) mod follow;
pub mod framing;
pub mod secure;
mod web_logins;

use crate::protocol::{self, IdleClose};
use crate::secure::noise;
use crate::server::access::allow::Scopes;
use crate::server::access::gatekeeper::{self, Peer, PlaintextRule, SharedGate};
use crate::server::history::{self, PastCursor};
use crate::server::limits::Limits;
use crate::server::logging::Throttle;
use crate::server::service::{AckSite, Outcome, Service, Transport};
use crate::server::stats::Stats;
use crate::store::Store;
use crate::tcp::follow::{Fed, Follower};
use crate::tcp::framing::{LineFrame, LineFramer, OutBuf};
use crate::tcp::secure::{SecureLink, Step};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Connections the kernel may hold for `accept` (capped by `somaxconn`).
/// std and mio listen with 128, which a burst of clients overflows: the
/// kernel then drops handshakes and those clients wait a second or more.
const LISTEN_BACKLOG: i32 = 4096;

/// Bytes a streamed reply adds per fill.
pub(crate) const STREAM_FILL: usize = 128 * 1024;
/// Most of the diary file a streamed reply looks at per turn of the loop
/// (under a millisecond here): a search that matches rarely must not hold
/// every other client for the whole file.
pub(crate) const STREAM_SCAN: u64 = 1 << 20;

/// A non-blocking TCP listener on `addr` with a deep accept queue.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As mio does: a restarted server can bind while old connections linger.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Answers one request line of a TCP connection into `out`, and says
/// whether it read the store (its reply then waits until what it read is
/// durable). `peer`: the device of an encrypted session.
pub fn answer_line(
    line: &[u8],
    peer: Option<&Peer>,
    max_entry: usize,
    service: &mut impl Service,
    out: &mut Vec<u8>,
) -> (Outcome, bool) {
    // Without a device, a plain line is a write by nobody in particular:
    // it needs none of the general dispatch, and bulk writes are mostly
    // such lines.
    if peer.is_none()
        && let Some(text) = protocol::plain_write(line, max_entry)
    {
        return (service.write_plain(text, out), false);
    }
    let request = protocol::parse(line, max_entry);
    let reads = protocol::reads_store(&request);
    if service.has_pending() && reads {
        // A read sees every write before it; a failure is settled with
        // the iteration's other acks.
        service.commit();
    }
    (service.answer(&request, Transport::Tcp, peer, out), reads)
}

/// Reads and drops what a follower sends; notices when its input ends
/// (and says the follow goes on) or the connection breaks.
fn drain_follower_input(conn: &mut Conn) {
    let mut scratch = [0u8; 4096];
    loop {
        let read = match &mut conn.link {
            Link::Secure(link) => link.reader(&mut conn.stream).read(&mut scratch),
            _ => conn.stream.read(&mut scratch),
        };
        match read {
            Ok(0) => {
                if !std::mem::replace(&mut conn.input_ended, true) {
                    protocol::push_follow_goes_on(&mut conn.out.buf);
                }
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                conn.dead = true;
                return;
            }
        }
    }
}

/// What a connection is doing besides answering request lines.
#[derive(Debug)]
enum Mode {
    Requests,
    /// Sending a long `/past` reply as the client reads it.
    Streaming(PastCursor),
    Following(Follower),
}

/// What a connection speaks, known from its first byte.
enum Link {
    Undecided,
    Plain,
    /// Plaintext from where keys are required: told so, never read again.
    Refused,
    Secure(Box<SecureLink>),
}

/// Whether an accepted connection is from this machine: both its ends are
/// loopback addresses. The handshake proved the peer got our SYN-ACK at a
/// loopback address, which never leaves this machine.
fn from_this_machine(stream: &TcpStream, from: SocketAddr) -> bool {
    gatekeeper::is_loopback(from.ip())
        && stream
            .local_addr()
            .is_ok_and(|ours| gatekeeper::is_loopback(ours.ip()))
}

/// One TCP client.
struct Conn {
    stream: TcpStream,
    from: SocketAddr,
    /// Both ends are loopback addresses: the client is on this machine.
    local: bool,
    link: Link,
    framer: LineFramer,
    out: OutBuf,
    mode: Mode,
    /// Close once the output is sent (after `e`, end of input, or a limit).
    closing: bool,
    /// Broken or finished: removed at the end of the iteration.
    dead: bool,
    /// Input may be waiting in the socket that was not read because the
    /// connection was paused; read it when it resumes.
    stalled: bool,
    writable_interest: bool,
    /// A follower has shut its sending side. It may still read (a half
    /// close), so it is told once that the follow goes on: a peer that is
    /// gone answers that line with a reset, and leaves at once.
    input_ended: bool,
    last_active: Instant,
    /// When the output queue was last empty or last made progress.
    last_sent: Instant,
    accepted: Instant,
}

impl Conn {
    fn new(stream: TcpStream, from: SocketAddr, local: bool, max_line: usize) -> Conn {
        Conn {
            stream,
            from,
            local,
            link: Link::Undecided,
            framer: LineFramer::new(max_line),
            out: OutBuf::default(),
            mode: Mode::Requests,
            closing: false,
            dead: false,
            stalled: false,
            writable_interest: false,
            input_ended: false,
            last_active: Instant::now(),
            last_sent: Instant::now(),
            accepted: Instant::now(),
        }
    }

    /// Ends a stream or follow: the connection closes once its output is sent.
    fn end_session(&mut self) {
        self.mode = Mode::Requests;
        self.closing = true;
    }

    /// Output not yet taken by the socket: queued replies, and sealed bytes.
    fn unsent(&self) -> usize {
        match &self.link {
            Link::Secure(link) => self.out.queued() + link.unsent(),
            _ => self.out.queued(),
        }
    }

    /// Sends what the output may send, sealed first on a secure link.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.link {
            Link::Secure(link) if link.is_open() => {
                link.send_sealed(&mut self.stream)?;
                self.out.flush_to(&mut link.writer(&mut self.stream))
            }
            // A refusal or a key, before any session.
            Link::Secure(link) => link.send_sealed(&mut self.stream),
            _ => self.out.flush_to(&mut self.stream),
        }
    }
}

pub(crate) struct TcpSide {
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    limits: Limits,
    /// Connections with output to flush or state to check this iteration.
    touched: Vec<usize>,
    /// Connections to serve again next iteration without a new event.
    resume: Vec<usize>,
    /// Connections to remove at the end of the iteration.
    dead: Vec<usize>,
    followers: Vec<usize>,
    /// Connections with output held back for a batch.
    held: Vec<usize>,
    accept_log: Throttle,
    gate: SharedGate,
    plaintext: PlaintextRule,
    /// Open connections by address, for those not from this machine.
    per_source: HashMap<IpAddr, usize>,
    /// The allow file's reload that sessions were last checked against.
    generation: u64,
}

impl TcpSide {
    pub(crate) fn new(listener: TcpListener, limits: &Limits, gate: SharedGate) -> TcpSide {
        let plaintext = gate.lock().plaintext_rule();
        TcpSide {
            listener: Some(listener),
            conns: Slab::new(),
            limits: limits.clone(),
            touched: Vec::new(),
            resume: Vec::new(),
            dead: Vec::new(),
            followers: Vec::new(),
            held: Vec::new(),
            accept_log: Throttle::default(),
            plaintext,
            per_source: HashMap::new(),
            gate,
            generation: 0,
        }
    }

    pub(crate) fn register_listener(
        &mut self,
        registry: &Registry,
        token: Token,
    ) -> io::Result<()> {
        match self.listener.as_mut() {
            Some(listener) => registry.register(listener, token, Interest::READABLE),
            None => Ok(()),
        }
    }

    /// Whether connections wait to be served without a new event.
    pub(crate) fn has_resumable(&self) -> bool {
        !self.resume.is_empty()
    }

    /// Accepts every waiting connection, within the connection limit.
    /// Connection `key`'s token is `Token(key)`.
    pub(crate) fn accept(&mut self, registry: &Registry, stats: &mut Stats) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        while let Some((mut stream, from)) =
            conns::accept_next(listener, &mut self.accept_log, "accept")
        {
            let local = from_this_machine(&stream, from);
            if let Some(refusal) = self.refusal(from, local) {
                let _ = stream.write_all(&refusal);
                continue;
            }
            // Replies are already one write per iteration; Nagle would only add latency.
            let _ = stream.set_nodelay(true);
            let max_line = self.limits.max_entry + 128;
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if registry
                .register(&mut stream, Token(key), Interest::READABLE)
                .is_err()
            {
                continue;
            }
            if !local {
                *self.per_source.entry(from.ip()).or_default() += 1;
            }
            entry.insert(Conn::new(stream, from, local, max_line));
            stats.tcp_clients = self.conns.len() as u64;
            // Data may already be waiting; edge-triggered readiness will not repeat it.
            self.resume.push(key);
        }
    }

    /// Why a new connection from `from` is refused, if it is: the total
    /// is reached (outside this machine, all but the local reserve), or
    /// its address has its share.
    fn refusal(&self, from: SocketAddr, local: bool) -> Option<Vec<u8>> {
        let max = self.limits.max_connections;
        let room = if local {
            max
        } else {
            max - self.limits.local_reserve.min(max / 2)
        };
        if self.conns.len() >= room {
            return Some(protocol::busy_line(max));
        }
        let open = self.per_source.get(&from.ip()).copied().unwrap_or(0);
        (!local && open >= self.limits.max_per_source)
            .then(|| protocol::busy_source_line(self.limits.max_per_source))
    }

    /// Handles readiness of connection `key`.
    pub(crate) fn on_event(
        &mut self,
        key: usize,
        event: &mio::event::Event,
        service: &mut impl Service,
    ) {
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            // A hang-up in this event raises no other: read to the end.
            let to_the_end = event.is_read_closed() || event.is_error();
            self.serve(key, to_the_end, service);
        }
        if (event.is_error() || event.is_write_closed())
            && let Some(conn) = self.conns.get_mut(key)
        {
            // Reset, or closed both ways: nothing sent can arrive. (After
            // a FIN, reads only say end of input, so only the event tells.)
            conn.dead = true;
        }
        if event.is_writable() {
            self.touched.push(key);
        }
    }

    /// Serves the connections that were paused or newly accepted.
    pub(crate) fn serve_resumed(&mut self, service: &mut impl Service) {
        for key in std::mem::take(&mut self.resume) {
            // No event will come for what is already waiting: read it all.
            self.serve(key, true, service);
        }
    }

    /// Reads and answers what a connection has sent, as far as its limits allow.
    ///
    /// A read that leaves room in the buffer has emptied the socket, and on
    /// Linux any later arrival raises a new edge, so unless `to_the_end` the
    /// read that would only say "would block" is skipped: one syscall less
    /// per connection per iteration.
    fn serve(&mut self, key: usize, to_the_end: bool, service: &mut impl Service) {
        match self.conns.get_mut(key) {
            Some(conn) if !conn.dead => conn.stalled = false,
            _ => return,
        }
        self.touched.push(key);
        if !self.link_ready(key, service) {
            return;
        }
        let secure = matches!(self.conns[key].link, Link::Secure(_));
        let mut socket_empty = false;
        loop {
            self.continue_stream(key, service);
            if !self.answer_lines(key, service) {
                let conn = &mut self.conns[key];
                if matches!(conn.mode, Mode::Following(_)) {
                    // A follower's input is not read as requests, but its
                    // end or a reset must be seen, to let it go.
                    drain_follower_input(conn);
                } else {
                    conn.stalled = true;
                }
                return;
            }
            if socket_empty {
                return;
            }
            let conn = &mut self.conns[key];
            let read = match &mut conn.link {
                Link::Secure(link) => conn.framer.read_from(&mut link.reader(&mut conn.stream)),
                _ => conn.framer.read_from(&mut conn.stream),
            };
            match read {
                Ok(0) => {
                    // The client is done sending; answer what it asked, then close.
                    conn.closing = true;
                    return;
                }
                Ok(_) => {
                    conn.last_active = Instant::now();
                    if let Link::Secure(link) = &mut conn.link
                        && let Some(peer) = link.newly_confirmed()
                    {
                        log::info!("{}: TCP session from {}", peer.name, conn.from);
                        let stats = service.stats();
                        *stats.device_sessions.entry(peer.name.clone()).or_default() += 1;
                    }
                    // A short read of opened frames says nothing of the socket.
                    socket_empty = !to_the_end && !secure && conn.framer.read_left_room();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    conn.dead = true;
                    return;
                }
            }
        }
    }

    /// Learns what a new connection speaks from its first byte, and takes
    /// an encrypted one through its handshake; whether requests may be
    /// read now. Plaintext from where keys are required gets one line.
    fn link_ready(&mut self, key: usize, service: &mut impl Service) -> bool {
        let conn = &mut self.conns[key];
        if matches!(conn.link, Link::Undecided) {
            let mut first = [0u8; 1];
            match conn.stream.peek(&mut first) {
                Ok(0) => {
                    conn.closing = true;
                    return false;
                }
                Ok(_) if noise::is_encrypted(first[0]) => {
                    conn.link = Link::Secure(Box::default());
                }
                Ok(_) if self.plaintext.allows(conn.local) => {
                    conn.link = Link::Plain;
                }
                Ok(_) => {
                    service.stats().plaintext_refused += 1;
                    // What it sent is read and dropped, unseen: closing on
                    // unread input would reset the connection before the
                    // client reads why.
                    let mut scratch = [0u8; 4096];
                    for _ in 0..16 {
                        if !matches!(conn.stream.read(&mut scratch), Ok(n) if n > 0) {
                            break;
                        }
                    }
                    conn.out.buf.extend_from_slice(protocol::AUTH_REQUIRED);
                    conn.closing = true;
                    conn.link = Link::Refused;
                    return false;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return false,
                Err(_) => {
                    conn.dead = true;
                    return false;
                }
            }
        }
        let link = match &mut conn.link {
            Link::Secure(link) => link,
            Link::Refused => return false,
            _ => return true,
        };
        if link.is_open() {
            return true;
        }
        if conn.closing {
            // Refused, or the client gave up: no second try on this connection.
            return false;
        }
        let step = link.handshake(&mut conn.stream, &mut self.gate.lock(), conn.from);
        match step {
            Step::Waiting => false,
            // Logged and counted once a frame opens (see `newly_confirmed`).
            Step::Open(_) => {
                conn.last_active = Instant::now();
                true
            }
            Step::Refused => {
                service.stats().auth_failures += 1;
                conn.closing = true;
                false
            }
            Step::Broken => {
                conn.dead = true;
                false
            }
        }
    }

    fn paused(&self, key: usize) -> bool {
        let conn = &self.conns[key];
        conn.closing
            || !matches!(conn.mode, Mode::Requests)
            || conn.out.queued() >= self.limits.max_output
    }

    /// Answers complete lines; false when the connection must wait (output
    /// full, a reply still streaming, or the session over).
    fn answer_lines(&mut self, key: usize, service: &mut impl Service) -> bool {
        let max_entry = self.limits.max_entry;
        loop {
            if self.paused(key) {
                return false;
            }
            let conn = &mut self.conns[key];
            let Some(frame) = conn.framer.peek() else {
                return true;
            };
            let range = match &frame {
                LineFrame::TooLong => {
                    protocol::push_line_too_long(&mut conn.out.buf, max_entry);
                    conn.framer.consume(&frame);
                    continue;
                }
                LineFrame::Line(range) => range.clone(),
            };
            let start = conn.out.buf.len();
            let peer = match &conn.link {
                Link::Secure(link) => link.peer(),
                _ => None,
            };
            let line = conn.framer.line(range);
            if web_logins::answer(line, conn.local, peer, &self.gate, &mut conn.out.buf) {
                conn.framer.consume(&frame);
                continue;
            }
            let (outcome, reads) = answer_line(line, peer, max_entry, service, &mut conn.out.buf);
            conn.framer.consume(&frame);
            // What it read may not be durable yet: it goes out no sooner.
            if reads
                && let Some(batch) = service.read_hold()
                && conn.out.hold(batch, start)
            {
                self.held.push(key);
            }
            match outcome {
                Outcome::Replied => {}
                Outcome::Wrote { id, ack_at } | Outcome::Acked { id, ack_at } => {
                    let site = AckSite::Tcp {
                        key,
                        at: conn.out.position(ack_at),
                    };
                    if let Some(batch) = service.await_commit(site, id)
                        && conn.out.hold(batch, ack_at)
                    {
                        self.held.push(key);
                    }
                }
                Outcome::Quit => conn.closing = true,
                Outcome::Stream(cursor) => conn.mode = Mode::Streaming(cursor),
                Outcome::Follow { after } => {
                    let follower = Follower::start(after, service.store(), &mut conn.out.buf);
                    conn.mode = Mode::Following(follower);
                    self.followers.push(key);
                    service.stats().followers += 1;
                    self.continue_stream(key, service);
                }
            }
        }
    }

    /// Tops up a streamed reply or a follower's feed once the client has
    /// read most of what was queued.
    fn continue_stream(&mut self, key: usize, service: &mut impl Service) {
        let conn = &mut self.conns[key];
        if conn.dead {
            return;
        }
        match &mut conn.mode {
            Mode::Requests => {}
            Mode::Following(follower) => {
                let limit = self.limits.follow_backlog;
                let fed = follower.feed(&mut conn.out, service.store(), limit);
                let stats = service.stats();
                let queued = conn.out.queued() as u64;
                stats.follower_queue_peak = stats.follower_queue_peak.max(queued);
                if fed == Fed::Behind {
                    stats.dropped_followers += 1;
                }
                if fed != Fed::Following {
                    conn.end_session();
                }
            }
            Mode::Streaming(cursor) => {
                if conn.out.queued() > self.limits.max_output / 2 {
                    return;
                }
                let store = service.store();
                match history::fill(store, cursor, &mut conn.out.buf, STREAM_FILL, STREAM_SCAN) {
                    Ok(false) => {}
                    Ok(true) => conn.mode = Mode::Requests,
                    Err(e) => {
                        protocol::push_read_error(&mut conn.out.buf, &e);
                        conn.end_session();
                    }
                }
            }
        }
    }

    /// Replaces the ack at stream position `at` of connection `key`'s
    /// output with `line`.
    pub(crate) fn patch_ack(&mut self, key: usize, at: u64, line: &[u8]) {
        if let Some(conn) = self.conns.get_mut(key)
            && let Some(i) = conn.out.index_of(at)
        {
            protocol::replace_ack(&mut conn.out.buf, i, line, usize::MAX);
        }
    }

    /// Lets go of what waited for batches up to `settled`.
    pub(crate) fn release(&mut self, settled: u64) {
        let mut held = conns::take_sorted(&mut self.held);
        held.retain(|&key| match self.conns.get_mut(key) {
            Some(conn) => {
                let still = conn.out.release(settled);
                self.touched.push(key);
                still
            }
            None => false,
        });
        self.held = held;
    }

    /// Feeds every follower what was committed this iteration.
    pub(crate) fn feed_followers(&mut self, service: &mut impl Service) {
        for i in 0..self.followers.len() {
            let key = self.followers[i];
            self.continue_stream(key, service);
            self.touched.push(key);
        }
    }

    /// Closes connections idle too long, and those that have not read
    /// their replies for too long (followers have their own bound).
    pub(crate) fn sweep(&mut self, now: Instant, registry: &Registry, stats: &mut Stats) {
        let (idle, send) = (self.limits.idle_timeout, self.limits.send_timeout);
        let grace = self.limits.login_grace;
        for (key, conn) in self.conns.iter_mut() {
            if conn.dead {
                continue;
            }
            let idle_for = now.duration_since(conn.last_active);
            if let Link::Secure(link) = &mut conn.link
                && idle_for.as_secs() >= 1
            {
                link.release_idle();
            }
            if matches!(conn.mode, Mode::Following(_)) {
                continue;
            }
            let unread_for = now.duration_since(conn.last_sent);
            // From where keys are required, a connection holds a slot only
            // as long as it takes to show one (sshd's LoginGraceTime): idle
            // connections from outside cannot sit on slots for the idle timeout.
            let must_authenticate = !conn.local
                && !self.plaintext.allows(false)
                && !matches!(&conn.link, Link::Secure(link) if link.is_open());
            let why = if must_authenticate && now.duration_since(conn.accepted) >= grace {
                IdleClose::NoSession(grace.as_secs())
            } else if conn.out.queued() > 0 && unread_for >= send {
                IdleClose::Unread(send.as_secs())
            } else if idle_for >= idle {
                IdleClose::Quiet(idle.as_secs())
            } else {
                continue;
            };
            protocol::push_idle(&mut conn.out.buf, why);
            conn.end_session();
            // One last try to say why; a client that never reads will not see it.
            let _ = conn.flush();
            conn.dead = true;
            self.dead.push(key);
        }
        // An accept that failed (out of descriptors) left connections
        // queued that will raise no new event; try them again.
        self.accept(registry, stats);
    }

    /// Sends what the touched connections have queued.
    pub(crate) fn flush(&mut self, registry: &Registry, store: &Store) {
        for key in conns::take_sorted(&mut self.touched) {
            self.flush_conn(key, registry, store);
        }
    }

    fn flush_conn(&mut self, key: usize, registry: &Registry, store: &Store) {
        let max_output = self.limits.max_output;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.dead {
            return;
        }
        let before = conn.unsent();
        if conn.flush().is_err() {
            conn.dead = true;
            return;
        }
        let queued = conn.unsent();
        conns::note_sent(before, queued, &mut conn.last_sent, &mut conn.last_active);
        let streaming = !matches!(conn.mode, Mode::Requests);
        if queued == 0 && conn.closing && !streaming {
            conn.dead = true;
            return;
        }
        // Held bytes wait for a batch, not for the socket.
        let want_writable = conn.out.sendable() > 0 || conn.unsent() > conn.out.queued();
        let (stream, token) = (&mut conn.stream, Token(key));
        if conns::set_writable(
            registry,
            stream,
            token,
            want_writable,
            &mut conn.writable_interest,
        )
        .is_err()
        {
            conn.dead = true;
            return;
        }
        // Serve it again without waiting for an event only if there is work
        // its queue now has room for; anything else would spin the loop.
        let more = match &conn.mode {
            Mode::Requests => conn.stalled && !conn.closing && queued < max_output / 2,
            Mode::Streaming(_) => queued < max_output / 2,
            Mode::Following(f) => f.wants_more(store, queued, self.limits.follow_backlog),
        };
        if more {
            self.resume.push(key);
        }
    }

    /// Removes the connections that died this iteration.
    pub(crate) fn reap(&mut self, registry: &Registry, stats: &mut Stats) {
        self.dead
            .extend(self.conns.iter().filter(|(_, c)| c.dead).map(|(k, _)| k));
        self.dead.sort_unstable();
        self.dead.dedup();
        for key in self.dead.drain(..) {
            if let Some(mut conn) = self.conns.try_remove(key) {
                let _ = registry.deregister(&mut conn.stream);
                if !conn.local
                    && let Some(open) = self.per_source.get_mut(&conn.from.ip())
                {
                    *open -= 1;
                    if *open == 0 {
                        self.per_source.remove(&conn.from.ip());
                    }
                }
                if let Link::Secure(link) = &conn.link {
                    if let Some(peer) = link.confirmed_peer()
                        && let Some(n) = stats.device_sessions.get_mut(&peer.name)
                    {
                        *n = n.saturating_sub(1);
                    } else if let Some(peer) = link.peer() {
                        // No message of it ever opened: a replayed first
                        // message, or a client that left at once.
                        stats.auth_failures += 1;
                        log::info!(
                            "{}: TCP handshake from {} refused: no message followed it",
                            peer.name,
                            conn.from
                        );
                    }
                }
            }
        }
        let conns = &self.conns;
        self.resume.retain(|&k| conns.contains(k));
        self.followers.retain(|&k| {
            conns
                .get(k)
                .is_some_and(|c| matches!(c.mode, Mode::Following(_)))
        });
        stats.followers = self.followers.len() as u64;
        stats.tcp_clients = self.conns.len() as u64;
        stats.device_sessions.retain(|_, n| *n > 0);
    }

    /// Closes the sessions of devices the allow file no longer lists (their
    /// scopes change at once for the others), and those past their
    /// lifetime: a client renews its session with a new connection.
    pub(crate) fn check_sessions(&mut self) {
        let gate = self.gate.lock();
        let reloaded =
            std::mem::replace(&mut self.generation, gate.generation()) != gate.generation();
        for (key, conn) in self.conns.iter_mut() {
            let Link::Secure(link) = &mut conn.link else {
                continue;
            };
            let expired = link
                .started()
                .is_some_and(|t| t.elapsed() >= self.limits.session_lifetime);
            let Some(peer) = link.peer_mut() else {
                continue;
            };
            if reloaded {
                match gate.device(&peer.key) {
                    Some(device) => {
                        peer.scopes = device.scopes;
                        // A follow is one long reply: it stops when its scope goes.
                        if matches!(conn.mode, Mode::Following(_))
                            && !peer.scopes.contains(Scopes::FOLLOW)
                        {
                            log::info!("{}: follow ended: no longer allowed to follow", peer.name);
                            let has = peer.scopes;
                            protocol::push_forbidden(&mut conn.out.buf, &peer.name, "follow", &has);
                            conn.end_session();
                            self.touched.push(key);
                            continue;
                        }
                    }
                    None => {
                        log::info!("{}: TCP session closed: no longer allowed", peer.name);
                        conn.dead = true;
                        self.dead.push(key);
                        continue;
                    }
                }
            }
            // A long reply being streamed ends first.
            let streaming = matches!(conn.mode, Mode::Streaming(_));
            if expired && !conn.closing && !streaming {
                conn.out.buf.extend_from_slice(protocol::SESSION_EXPIRED);
                conn.end_session();
                self.touched.push(key);
            }
        }
    }

    /// Stops taking new connections (at shutdown).
    pub(crate) fn stop_accepting(&mut self, registry: &Registry) {
        if let Some(mut listener) = self.listener.take() {
            let _ = registry.deregister(&mut listener);
        }
    }

    /// One more try to send every connection's output; whether any is left.
    pub(crate) fn flush_all(&mut self) -> bool {
        let mut pending = false;
        for (_, conn) in self.conns.iter_mut() {
            if !conn.dead && conn.flush().is_ok() {
                pending |= conn.unsent() > 0;
            }
        }
        pending
    }
}
