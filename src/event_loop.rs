//! The server: one thread, one `mio::Poll` over a UDP socket, a TCP listener
//! and the TCP connections (in a slab).
//!
//! Each iteration: gather readiness, run every complete request through the
//! handler (replies only queued), commit the store once (group commit), fix
//! up the replies of a failed commit, then flush replies to the sockets.
//! Nothing is sent before the commit that makes it true, and no connection
//! is removed from the slab before the end of the iteration, so neither a
//! patched reply nor a stale event can reach the wrong client.

use crate::datagrams::RecvBatch;
use crate::handler::{Handler, Outcome, Transport};
use crate::protocol::{self, Command, Request};
use crate::store::Store;
use crate::tcp::{self, Conn, Frame, Mode};
use crate::udp::{self, CookieJar, RecentSources, ReplayMemory, UdpEndpoint};
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const UDP: Token = Token(usize::MAX - 1);
const LISTENER: Token = Token(usize::MAX - 2);
const WAKER: Token = Token(usize::MAX - 3);
const SIGNALS: Token = Token(usize::MAX - 4);

/// Datagrams read per iteration before the loop turns to other work.
const UDP_BUDGET: usize = 1024;
/// Bytes a streamed reply adds per fill.
const STREAM_FILL: usize = 128 * 1024;

/// Per-client limits; see README "Limits and safety".
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest entry text, in bytes.
    pub max_entry: usize,
    /// TCP connections served at once; more are refused with an error line.
    pub max_connections: usize,
    /// Reply bytes queued per connection before it stops being read.
    pub max_output: usize,
    /// A connection with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// Tagged UDP writes remembered to answer retries.
    pub replay_memory: usize,
    /// Reply size for tagged UDP requests that do not say `max=`.
    pub udp_reply: usize,
    /// UDP replies waiting for the socket; beyond it replies are dropped.
    pub udp_queue: usize,
    /// Bytes a follower may lag behind (queued plus not yet queued) before
    /// it is sent a notice with the id to resume from and closed.
    pub follow_backlog: usize,
    /// A connection whose queued output makes no progress for this long
    /// (a client that never reads) is closed.
    pub send_timeout: Duration,
    /// Loopback UDP sources are trusted with replies over 3x their request
    /// (the seed's client works locally); off only to test the rule.
    pub loopback_exempt: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_entry: 64 * 1024,
            max_connections: 10_000,
            max_output: 1024 * 1024,
            idle_timeout: Duration::from_secs(300),
            replay_memory: 100_000,
            udp_reply: 1232,
            udp_queue: 4096,
            follow_backlog: 1024 * 1024,
            send_timeout: Duration::from_secs(30),
            loopback_exempt: true,
        }
    }
}

/// Stops a running [`Server`] from another thread (tests) or a signal.
#[derive(Clone)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// Where a write's `ok` line waits, so a failed commit can replace it.
#[derive(Debug, Clone, Copy)]
enum AckSite {
    Tcp {
        key: usize,
        at: usize,
    },
    Udp {
        slot: usize,
        at: usize,
        limit: usize,
    },
}

pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    udp: UdpEndpoint,
    udp_batch: RecvBatch,
    udp_readable: bool,
    udp_writable_interest: bool,
    replay: ReplayMemory,
    udp_sources: RecentSources,
    cookies: CookieJar,
    conns: Slab<Conn>,
    handler: Handler,
    limits: Limits,
    local_addr: SocketAddr,
    acks: Vec<AckSite>,
    /// Connections with output to flush or state to check this iteration.
    touched: Vec<usize>,
    /// Connections to serve again next iteration without a new event.
    resume: Vec<usize>,
    /// Connections to remove at the end of the iteration.
    dead: Vec<usize>,
    /// Connections in follow mode.
    followers: Vec<usize>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    last_sweep: Instant,
}

impl Server {
    /// Binds UDP and TCP on the same port (an ephemeral one for port 0).
    pub fn bind(addr: SocketAddr, store: Store, mut limits: Limits) -> io::Result<Server> {
        // A follower's queue must hold the largest entry twice over (it is
        // refilled at half), or it could never be sent.
        limits.follow_backlog = limits.follow_backlog.max(2 * limits.max_entry + 4096);
        let (listener, socket) = bind_pair(addr)?;
        let local_addr = listener.local_addr()?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut server = Server {
            listener: Some(listener),
            udp: UdpEndpoint::new(socket, limits.udp_queue),
            udp_batch: RecvBatch::default(),
            udp_readable: false,
            udp_writable_interest: false,
            replay: ReplayMemory::new(limits.replay_memory),
            udp_sources: RecentSources::default(),
            cookies: CookieJar::default(),
            conns: Slab::new(),
            handler: Handler::new(store),
            limits,
            local_addr,
            acks: Vec::new(),
            touched: Vec::new(),
            resume: Vec::new(),
            dead: Vec::new(),
            followers: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            signals: None,
            last_sweep: Instant::now(),
            poll,
        };
        let registry = server.poll.registry();
        registry.register(
            server.listener.as_mut().expect("just bound"),
            LISTENER,
            Interest::READABLE,
        )?;
        registry.register(&mut server.udp.socket, UDP, Interest::READABLE)?;
        Ok(server)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            flag: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Makes SIGINT and SIGTERM stop the server gracefully (see [`Server::run`]).
    pub fn stop_on_signals(&mut self) -> io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Serves until stopped, then commits, answers what is queued and returns.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !self.stop.load(Ordering::SeqCst) {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    UDP => {
                        if event.is_readable() {
                            self.udp_readable = true;
                        }
                    }
                    LISTENER => self.accept(),
                    WAKER => {}
                    SIGNALS => {
                        if let Some(signals) = &mut self.signals
                            && signals.pending().next().is_some()
                        {
                            // This iteration still commits and answers what it has.
                            self.stop.store(true, Ordering::SeqCst);
                        }
                    }
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            // A hang-up in this event raises no other: read to the end.
                            let to_the_end = event.is_read_closed() || event.is_error();
                            self.service(key, to_the_end);
                        }
                        if event.is_writable() {
                            self.touched.push(key);
                        }
                    }
                }
            }
            if self.udp_readable {
                self.drain_udp();
            }
            for key in std::mem::take(&mut self.resume) {
                // No event will come for what is already waiting: read it all.
                self.service(key, true);
            }
            self.end_iteration();
        }
        self.shut_down();
        Ok(())
    }

    fn poll_timeout(&self) -> Duration {
        if self.udp_readable || !self.resume.is_empty() {
            return Duration::ZERO;
        }
        let mut timeout = Duration::from_secs(1);
        if let Some(deadline) = self.handler.store().sync_deadline() {
            timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
        }
        timeout
    }

    /// Group commit, followers fed, replies out, dead connections removed.
    fn end_iteration(&mut self) {
        self.commit();
        for i in 0..self.followers.len() {
            let key = self.followers[i];
            self.continue_stream(key);
            self.touched.push(key);
        }
        let now = Instant::now();
        if let Err(e) = self.handler.store_mut().sync_if_due(now) {
            eprintln!("diaryd: fdatasync failed: {e}");
        }
        if now.duration_since(self.last_sweep) >= Duration::from_secs(1) {
            self.last_sweep = now;
            self.sweep_idle(now);
            self.udp_sources.prune(now);
            // An accept that failed (out of descriptors) left connections
            // queued that will raise no new event; try them again.
            self.accept();
        }
        self.flush();
        self.remove_dead();
        self.handler.stats.udp_sources = self.udp_sources.len() as u64;
    }

    fn accept(&mut self) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        loop {
            let (mut stream, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors and the like: shed this one, keep serving.
                    eprintln!("diaryd: accept failed: {e}");
                    return;
                }
            };
            if self.conns.len() >= self.limits.max_connections {
                use std::io::Write;
                let _ = stream.write_all(
                    format!(
                        "err busy the server has its maximum of {} connections; try again later\n",
                        self.limits.max_connections
                    )
                    .as_bytes(),
                );
                continue;
            }
            // Replies are already one write per iteration; Nagle would only add latency.
            let _ = stream.set_nodelay(true);
            let max_line = self.limits.max_entry + 128;
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if self
                .poll
                .registry()
                .register(&mut stream, Token(key), Interest::READABLE)
                .is_err()
            {
                continue;
            }
            entry.insert(Conn::new(stream, peer, max_line));
            self.handler.stats.tcp_clients = self.conns.len() as u64;
            // Data may already be waiting; edge-triggered readiness will not repeat it.
            self.resume.push(key);
        }
    }

    /// Reads and answers what a connection has sent, as far as its limits allow.
    ///
    /// A read that leaves room in the buffer has emptied the socket, and on
    /// Linux any later arrival raises a new edge, so unless `to_the_end` the
    /// read that would only say "would block" is skipped: one syscall less
    /// per connection per iteration.
    fn service(&mut self, key: usize, to_the_end: bool) {
        match self.conns.get_mut(key) {
            Some(conn) if !conn.dead => conn.stalled = false,
            _ => return,
        }
        self.touched.push(key);
        let mut socket_empty = false;
        loop {
            self.continue_stream(key);
            if !self.answer_lines(key) {
                self.conns[key].stalled = true;
                return;
            }
            if socket_empty {
                return;
            }
            let conn = &mut self.conns[key];
            match conn.framer.read_from(&mut conn.stream) {
                Ok(0) => {
                    // The client is done sending; answer what it asked, then close.
                    if !matches!(conn.mode, Mode::Following { .. }) {
                        conn.closing = true;
                    }
                    return;
                }
                Ok(_) => {
                    conn.last_active = Instant::now();
                    socket_empty = !to_the_end && conn.framer.read_left_room();
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

    fn paused(&self, key: usize) -> bool {
        let conn = &self.conns[key];
        conn.closing
            || !matches!(conn.mode, Mode::Requests)
            || conn.out.queued() >= self.limits.max_output
    }

    /// Answers complete lines; false when the connection must wait (output
    /// full, a reply still streaming, or the session over).
    fn answer_lines(&mut self, key: usize) -> bool {
        loop {
            if self.paused(key) {
                return false;
            }
            let Some(frame) = self.conns[key].framer.peek() else {
                return true;
            };
            let range = match &frame {
                Frame::TooLong => {
                    let conn = &mut self.conns[key];
                    protocol::push_error(
                        &mut conn.out.buf,
                        "too-long",
                        &format_args!(
                            "line is over the limit of {} bytes; nothing stored",
                            self.limits.max_entry
                        ),
                    );
                    conn.framer.consume(&frame);
                    continue;
                }
                Frame::Line(range) => range.clone(),
            };
            if self.handler.store().has_pending()
                && protocol::may_read_store(self.conns[key].framer.line(range.clone()))
            {
                self.commit();
            }
            let conn = &mut self.conns[key];
            let request = protocol::parse(conn.framer.line(range), self.limits.max_entry);
            let outcome = self
                .handler
                .handle(&request, Transport::Tcp, &mut conn.out.buf);
            conn.framer.consume(&frame);
            match outcome {
                Outcome::Replied => {}
                Outcome::Wrote { ack_at, .. } => self.acks.push(AckSite::Tcp { key, at: ack_at }),
                Outcome::Quit => conn.closing = true,
                Outcome::Stream(cursor) => conn.mode = Mode::Streaming(cursor),
                Outcome::Follow { after } => {
                    let head = self.handler.store().len();
                    let after = if after == u64::MAX { head } else { after };
                    let _ = writeln!(conn.out.buf, "# following entries after {after}");
                    conn.mode = Mode::Following {
                        next: after.saturating_add(1),
                        backlog_end: head,
                    };
                    self.followers.push(key);
                    self.handler.stats.followers += 1;
                    self.continue_stream(key);
                }
            }
        }
    }

    /// Tops up a streamed reply or a follower's feed once the client has
    /// read most of what was queued.
    fn continue_stream(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if let Mode::Following { .. } = conn.mode {
            return self.feed_follower(key);
        }
        let Mode::Streaming(cursor) = &mut conn.mode else {
            return;
        };
        if conn.out.queued() > self.limits.max_output / 2 {
            return;
        }
        match self.handler.fill(cursor, &mut conn.out.buf, STREAM_FILL) {
            Ok(false) => {}
            Ok(true) => conn.mode = Mode::Requests,
            Err(e) => end_with_read_error(conn, &e),
        }
    }

    /// Queues the committed entries a follower has not had, within its
    /// backlog limit; one that lags past the limit gets a notice and is closed.
    fn feed_follower(&mut self, key: usize) {
        /// Room kept for the final notice, so the queue never passes the limit.
        const NOTICE_ROOM: usize = 200;
        let limit = self.limits.follow_backlog;
        let store = self.handler.store();
        let head = store.len();
        let conn = &mut self.conns[key];
        let Mode::Following { next, backlog_end } = &mut conn.mode else {
            return;
        };
        if conn.dead || *next > head {
            return;
        }
        let lag_from = (*next).max(*backlog_end + 1);
        let lag = if lag_from <= head {
            store.span_len(lag_from, head + 1) as usize
        } else {
            0
        };
        let queued = conn.out.queued();
        if queued + lag + NOTICE_ROOM > limit {
            let resume = *next - 1;
            let _ = writeln!(
                conn.out.buf,
                "err behind this follower fell more than {limit} bytes behind; \
                 resume with \"/follow since {resume}\""
            );
            conn.mode = Mode::Requests;
            conn.closing = true;
            self.handler.stats.dropped_followers += 1;
            return;
        }
        // Refill only once half is read, so each refill is one sizeable read.
        if queued > limit / 2 {
            return;
        }
        let room = limit - NOTICE_ROOM - queued;
        let mut cursor = *next;
        let result = self
            .handler
            .fill_follow(&mut cursor, &mut conn.out.buf, room);
        *next = cursor;
        if let Err(e) = result {
            end_with_read_error(conn, &e);
        }
        let peak = &mut self.handler.stats.follower_queue_peak;
        *peak = (*peak).max(conn.out.queued() as u64);
    }

    fn drain_udp(&mut self) {
        let mut batch = std::mem::take(&mut self.udp_batch);
        let now = Instant::now();
        let mut read = 0;
        while read < UDP_BUDGET {
            match batch.recv(&self.udp.socket) {
                Ok(n) => {
                    read += n.max(1);
                    for i in 0..n {
                        let (datagram, from) = batch.get(i);
                        self.udp_sources.saw(from, now);
                        self.answer_datagram(datagram, from);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.udp_readable = false;
                    break;
                }
                // ICMP errors from earlier sends surface here; they concern no one now.
                Err(_) => read += 1,
            }
        }
        self.udp_batch = batch;
    }

    fn answer_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        let request = protocol::parse(udp::request_bytes(datagram), self.limits.max_entry);
        let limit = self.reply_limit(&request, datagram.len(), from);
        if let (Some(envelope), Ok(Command::Write(_))) = (&request.envelope, &request.command)
            && let Some(seen) = self.replay.get(from, envelope.tag)
        {
            let (id, copy) = (seen.id, seen.reply.clone());
            let at = copy.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
            // A retry of a write still in this batch shares its fate.
            if let Some(slot) = self.udp.queue_reply(from, copy)
                && id > self.handler.store().len()
            {
                self.acks.push(AckSite::Udp { slot, at, limit });
            }
            return;
        }
        if self.handler.store().has_pending() && protocol::reads_store(&request) {
            self.commit();
        }
        let cookie = match request.command {
            Ok(Command::Cookie) => self.cookies.issue(from.ip(), Instant::now()),
            _ => [b'0'; 16],
        };
        let transport = Transport::Udp {
            limit,
            raw: request.envelope.is_none(),
            cookie,
        };
        let mut reply = self.udp.buffer();
        let outcome = self.handler.handle(&request, transport, &mut reply);
        if let Outcome::Wrote { id, ack_at } = outcome {
            if let Some(envelope) = &request.envelope {
                self.replay.remember(from, envelope.tag, id, &reply);
            }
            if let Some(slot) = self.udp.queue_reply(from, reply) {
                self.acks.push(AckSite::Udp {
                    slot,
                    at: ack_at,
                    limit,
                });
            }
        } else {
            self.udp.queue_reply(from, reply);
        }
    }

    /// How big the reply to a datagram of `size` bytes from `from` may be:
    /// the envelope's or the default size, and to a source that has not
    /// proven its address (loopback, or a valid cookie), at most
    /// [`udp::AMPLIFICATION`] times the request.
    fn reply_limit(&self, request: &Request, size: usize, from: SocketAddr) -> usize {
        let ip = from.ip();
        let proven = (self.limits.loopback_exempt && ip.is_loopback())
            || request
                .envelope
                .and_then(|e| e.cookie)
                .is_some_and(|c| self.cookies.check(ip, c, Instant::now()));
        let limit = udp::reply_limit(request.envelope.as_ref(), self.limits.udp_reply);
        if proven {
            limit
        } else {
            limit.min(udp::AMPLIFICATION * size)
        }
    }

    /// Writes this iteration's entries to the file; if that fails, every
    /// waiting `ok` becomes an error and the batch is forgotten.
    fn commit(&mut self) {
        let result = self.handler.store_mut().commit();
        let acks = std::mem::take(&mut self.acks);
        let Err(failure) = result else {
            self.acks = acks;
            self.acks.clear();
            return;
        };
        eprintln!("diaryd: could not store entries: {}", failure.error);
        self.handler.stats.failed_commits += 1;
        self.replay.forget_from(failure.first_lost);
        let mut line = Vec::new();
        protocol::push_error(
            &mut line,
            "io",
            &format_args!(
                "could not store the entry: {}; nothing stored",
                failure.error
            ),
        );
        // Later sites first, so that earlier offsets in the same buffer stay valid.
        for site in acks.iter().rev() {
            let (buf, at, limit) = match *site {
                AckSite::Tcp { key, at } => match self.conns.get_mut(key) {
                    Some(conn) => (&mut conn.out.buf, at, usize::MAX),
                    None => continue,
                },
                AckSite::Udp { slot, at, limit } => match self.udp.queue.get_mut(slot) {
                    Some((_, reply)) => (reply, at, limit),
                    None => continue,
                },
            };
            let end = buf[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(buf.len(), |i| at + i + 1);
            buf.splice(at..end, line.iter().copied());
            if buf.len() > limit {
                // An amplification-limited datagram: the short form, cut if need be.
                buf.truncate(at);
                buf.extend_from_slice(b"err io\n");
                buf.truncate(limit);
            }
        }
    }

    fn flush(&mut self) {
        let udp_left = self.udp.flush();
        if udp_left != self.udp_writable_interest {
            let interest = if udp_left {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut self.udp.socket, UDP, interest)
                .is_ok()
            {
                self.udp_writable_interest = udp_left;
            }
        }
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for &key in &touched {
            self.flush_conn(key);
        }
        touched.clear();
        self.touched = touched;
    }

    fn flush_conn(&mut self, key: usize) {
        let max_output = self.limits.max_output;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.dead {
            return;
        }
        let before = conn.out.queued();
        if conn.out.flush_to(&mut conn.stream).is_err() {
            conn.dead = true;
            return;
        }
        let queued = conn.out.queued();
        if queued < before || queued == 0 {
            conn.last_sent = Instant::now();
        }
        if queued < before {
            conn.last_active = conn.last_sent;
        }
        let streaming = matches!(conn.mode, Mode::Streaming(_) | Mode::Following { .. });
        if queued == 0 && conn.closing && !streaming {
            conn.dead = true;
            return;
        }
        let want_writable = queued > 0;
        if want_writable != conn.writable_interest {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(key), interest)
                .is_err()
            {
                conn.dead = true;
                return;
            }
            conn.writable_interest = want_writable;
        }
        // Serve it again without waiting for an event only if there is work
        // its queue now has room for; anything else would spin the loop.
        let more = match &conn.mode {
            Mode::Requests => conn.stalled && !conn.closing && queued < max_output / 2,
            Mode::Streaming(_) => queued < max_output / 2,
            Mode::Following { next, .. } => {
                *next <= self.handler.store().len() && queued <= self.limits.follow_backlog / 2
            }
        };
        if more {
            self.resume.push(key);
        }
    }

    /// Closes connections idle too long, and those that have not read
    /// their replies for too long (followers have their own bound).
    fn sweep_idle(&mut self, now: Instant) {
        let (idle, send) = (self.limits.idle_timeout, self.limits.send_timeout);
        for (key, conn) in self.conns.iter_mut() {
            if conn.dead || matches!(conn.mode, Mode::Following { .. }) {
                continue;
            }
            let idle_for = now.duration_since(conn.last_active);
            let unread_for = now.duration_since(conn.last_sent);
            let reason = if conn.out.queued() > 0 && unread_for >= send {
                format!("replies unread for {} s; closing", send.as_secs())
            } else if idle_for >= idle {
                format!("no traffic for {} s; closing", idle.as_secs())
            } else {
                continue;
            };
            protocol::push_error(&mut conn.out.buf, "idle", &reason);
            conn.closing = true;
            conn.mode = Mode::Requests;
            // One last try to say why; a client that never reads will not see it.
            let _ = conn.out.flush_to(&mut conn.stream);
            conn.dead = true;
            self.dead.push(key);
        }
    }

    fn remove_dead(&mut self) {
        self.dead
            .extend(self.conns.iter().filter(|(_, c)| c.dead).map(|(k, _)| k));
        self.dead.sort_unstable();
        self.dead.dedup();
        for key in self.dead.drain(..) {
            if let Some(mut conn) = self.conns.try_remove(key) {
                let _ = self.poll.registry().deregister(&mut conn.stream);
            }
        }
        let conns = &self.conns;
        self.resume.retain(|&k| conns.contains(k));
        self.followers.retain(|&k| {
            conns
                .get(k)
                .is_some_and(|c| matches!(c.mode, Mode::Following { .. }))
        });
        self.handler.stats.followers = self.followers.len() as u64;
        self.handler.stats.tcp_clients = self.conns.len() as u64;
    }

    /// Stop accepting, store what was written, answer what is queued.
    fn shut_down(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.commit();
        if let Err(e) = self.handler.store_mut().sync_now() {
            eprintln!("diaryd: final fdatasync failed: {e}");
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            self.udp.flush();
            let mut pending = false;
            for (_, conn) in self.conns.iter_mut() {
                if !conn.dead && conn.out.flush_to(&mut conn.stream).is_ok() {
                    pending |= conn.out.queued() > 0;
                }
            }
            if (!pending && self.udp.queue.is_empty()) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A streamed reply or follow that cannot read the diary says why and ends
/// the connection.
fn end_with_read_error(conn: &mut Conn, e: &io::Error) {
    protocol::push_error(
        &mut conn.out.buf,
        "io",
        &format_args!("cannot read the diary: {e}"),
    );
    conn.mode = Mode::Requests;
    conn.closing = true;
}

/// The address in a server's first line on stdout, `… listening on ADDR …`
/// (diaryd's, and diary-bench echo's): how scripts, tests and the benchmark
/// learn the port a server bound with port 0.
pub fn announced_addr(line: &str) -> Option<SocketAddr> {
    line.split("listening on ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Binds a TCP listener and a UDP socket on one port. With port 0 the
/// listener picks the port and UDP follows; a UDP clash there is retried.
fn bind_pair(addr: SocketAddr) -> io::Result<(TcpListener, UdpSocket)> {
    let mut last_err = None;
    for _ in 0..16 {
        let listener = tcp::listen(addr)?;
        let port = listener.local_addr()?.port();
        let mut udp_addr = addr;
        udp_addr.set_port(port);
        match UdpSocket::bind(udp_addr) {
            Ok(socket) => return Ok((listener, socket)),
            Err(e) if addr.port() == 0 => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.expect("the loop ran"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_addr_reads_the_first_line_of_either_server() {
        let diaryd = "diaryd: listening on 127.0.0.1:41234 (UDP and TCP), writing /tmp/d (0 entries, fsync Always)";
        assert_eq!(
            announced_addr(diaryd),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        let echo = "diary-bench echo: listening on [::1]:9 (UDP and TCP)";
        assert_eq!(announced_addr(echo), Some("[::1]:9".parse().unwrap()));
        assert_eq!(
            announced_addr("diaryd: cannot bind 127.0.0.1:8888: in use"),
            None
        );
        assert_eq!(announced_addr("listening on nowhere"), None);
        assert_eq!(announced_addr(""), None);
    }
}
