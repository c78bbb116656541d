//! The web side of the server (`diaryd --web ADDR`): one more listener in
//! the same loop, beside UDP and TCP, serving the page and its API over
//! HTTP/1.1 with keep-alive.
//!
//! - `GET /`, `/login` and the page's files: the embedded page (`web/page/`).
//! - `POST /api/login`: a one-time login token for a session cookie.
//! - `POST /api`: one request of the text protocol as the body, its reply
//!   as the response, answered by the same [`Service`] as UDP and TCP, as
//!   the browser session's device. A write's response waits for its batch
//!   like a TCP ack, and a failed commit turns it into the error.
//! - `GET /api/events`: server-sent events fed by the follow machinery
//!   (`tcp/follow.rs`), resumed after `Last-Event-ID`.
//!
//! With `--web-tls` every connection is HTTPS (rustls, `web/tls.rs`).
//!
//! Every connection has the TCP side's kinds of limits: how many, how big
//! a request, how long idle, how much unread output. Nothing queued is
//! sent before the iteration's commit, and no connection leaves the slab
//! before [`WebSide::reap`].
//!
//! It may import `server`, `store`, `protocol`, `tcp::follow` and
//! `tcp::framing`; never `udp`, `event_loop` or `client`.

pub(crate) mod assets;
pub(crate) mod events;
pub(crate) mod http;
pub mod tls;

use crate::protocol::{self, Command};
use crate::server::access::gatekeeper::{Peer, SharedGate};
use crate::server::access::web_sessions::COOKIE_NAME;
use crate::server::history::{self, PastCursor};
use crate::server::limits::Limits;
use crate::server::logging::Throttle;
use crate::server::service::{AckSite, Outcome, Service, Transport};
use crate::server::stats::Stats;
use crate::store::Store;
use crate::tcp::conns;
use crate::tcp::follow::{Fed, Follower};
use crate::tcp::framing::OutBuf;
use crate::tcp::{STREAM_FILL, STREAM_SCAN};
use http::{Body, HttpRequest, Parsed};
use mio::net::TcpListener;
use mio::{Interest, Registry, Token};
use rustls::ServerConfig;
use slab::Slab;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tls::WebStream;

/// Connection `key`'s token is `Token(TOKEN_BASE + key)`: far above any
/// TCP connection's key, below the loop's fixed tokens.
pub(crate) const TOKEN_BASE: usize = 1 << 40;

/// A quiet event stream gets a comment this often, so that proxies and
/// phones' network stacks keep it, and a vanished browser is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Input kept for a connection whose requests are not being read.
const READ_CHUNK: usize = 8 * 1024;
/// Buffers of an idle connection above this are given back.
const KEEP_CAPACITY: usize = 16 * 1024;

const NOT_LOGGED_IN: &[u8] = b"not logged in: run `diary web-login` on the server's machine \
and open the link it prints\n";

/// What a connection is doing.
enum State {
    /// Reading requests.
    Requests,
    /// A write's response, waiting for the batch that makes it true; a
    /// failed commit patches its ack into the error first.
    Held {
        request: u64,
        body: Vec<u8>,
        ack_at: usize,
        batch: u64,
        close: bool,
    },
    /// A long reply, sent in chunks as the browser reads it.
    Streaming(PastCursor),
    /// An open page's event stream, until the connection ends.
    Events { follower: Follower, peer: Peer },
}

struct WebConn {
    stream: WebStream,
    from: SocketAddr,
    input: Vec<u8>,
    out: OutBuf,
    state: State,
    /// Close once the output is sent.
    closing: bool,
    dead: bool,
    /// Input may wait in the socket while a response was pending.
    stalled: bool,
    writable_interest: bool,
    last_active: Instant,
    last_sent: Instant,
}

/// What routing a request needs besides the connection.
struct Ctx<'a, S: Service> {
    key: usize,
    service: &'a mut S,
    gate: &'a SharedGate,
    limits: &'a Limits,
    tls: bool,
    next_request: &'a mut u64,
    held: &'a mut Vec<usize>,
    followers: &'a mut Vec<usize>,
    from: SocketAddr,
}

pub(crate) struct WebSide {
    listener: Option<TcpListener>,
    conns: Slab<WebConn>,
    limits: Limits,
    gate: SharedGate,
    /// HTTPS (`--web-tls`): cookies are `Secure`, origins `https`.
    tls: Option<Arc<ServerConfig>>,
    touched: Vec<usize>,
    resume: Vec<usize>,
    followers: Vec<usize>,
    held: Vec<usize>,
    /// Numbers each held write, so that a patch finds only its own.
    next_request: u64,
    /// The web sessions' revocation count event streams were checked at.
    generation: u64,
    accept_log: Throttle,
}

impl WebSide {
    pub(crate) fn new(
        listener: TcpListener,
        limits: &Limits,
        gate: SharedGate,
        tls: Option<Arc<ServerConfig>>,
    ) -> WebSide {
        WebSide {
            listener: Some(listener),
            conns: Slab::new(),
            limits: limits.clone(),
            gate,
            tls,
            touched: Vec::new(),
            resume: Vec::new(),
            followers: Vec::new(),
            held: Vec::new(),
            next_request: 0,
            generation: 0,
            accept_log: Throttle::default(),
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

    pub(crate) fn has_resumable(&self) -> bool {
        !self.resume.is_empty()
    }

    /// Accepts waiting connections, within `--web-max-connections` and
    /// `--max-per-source` (a browser opens a few at once).
    pub(crate) fn accept(&mut self, registry: &Registry, stats: &mut Stats) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        while let Some((mut stream, from)) =
            conns::accept_next(listener, &mut self.accept_log, "web accept")
        {
            let from_source = self
                .conns
                .iter()
                .filter(|(_, c)| c.from.ip() == from.ip())
                .count();
            let local = crate::server::access::gatekeeper::is_loopback(from.ip());
            if self.conns.len() >= self.limits.max_web_connections
                || (!local && from_source >= self.limits.max_per_source)
            {
                let mut busy = Vec::new();
                http::push_text(
                    &mut busy,
                    503,
                    b"too many connections; try again soon\n",
                    true,
                );
                let _ = stream.write_all(&busy);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if registry
                .register(&mut stream, Token(TOKEN_BASE + key), Interest::READABLE)
                .is_err()
            {
                continue;
            }
            let Ok(stream) = WebStream::new(stream, self.tls.as_ref()) else {
                continue;
            };
            entry.insert(WebConn {
                stream,
                from,
                input: Vec::new(),
                out: OutBuf::default(),
                state: State::Requests,
                closing: false,
                dead: false,
                stalled: false,
                writable_interest: false,
                last_active: Instant::now(),
                last_sent: Instant::now(),
            });
            stats.web_clients = self.conns.len() as u64;
            self.resume.push(key);
        }
    }

    pub(crate) fn on_event(
        &mut self,
        key: usize,
        event: &mio::event::Event,
        service: &mut impl Service,
    ) {
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.serve(key, service);
        }
        if (event.is_error() || event.is_write_closed())
            && let Some(conn) = self.conns.get_mut(key)
        {
            conn.dead = true;
        }
        if event.is_writable() {
            self.touched.push(key);
        }
    }

    pub(crate) fn serve_resumed(&mut self, service: &mut impl Service) {
        for key in std::mem::take(&mut self.resume) {
            self.serve(key, service);
        }
    }

    /// Answers what a connection has sent and reads more, until its
    /// socket is empty or it must wait (a response pending, output full).
    fn serve(&mut self, key: usize, service: &mut impl Service) {
        match self.conns.get_mut(key) {
            Some(conn) if !conn.dead => conn.stalled = false,
            _ => return,
        }
        self.touched.push(key);
        let max_input = http::MAX_HEAD + self.max_body();
        loop {
            self.continue_stream(key, service);
            if !self.answer_requests(key, service) {
                let conn = &mut self.conns[key];
                if matches!(conn.state, State::Events { .. }) {
                    drain(conn);
                } else {
                    conn.stalled = true;
                }
                return;
            }
            let conn = &mut self.conns[key];
            if conn.input.len() >= max_input {
                conn.stalled = true;
                return;
            }
            let mut chunk = [0u8; READ_CHUNK];
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    // The client is done sending: what it asked whole is
                    // answered (now, or once a pending response is out),
                    // a request cut off by the close is not.
                    let _ = self.answer_requests(key, service);
                    let conn = &mut self.conns[key];
                    if matches!(conn.state, State::Requests) {
                        conn.input.clear();
                        conn.closing = true;
                    }
                    return;
                }
                Ok(n) => {
                    conn.input.extend_from_slice(&chunk[..n]);
                    conn.last_active = Instant::now();
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

    /// A request body: one entry, escaped for an import at worst, plus its command.
    fn max_body(&self) -> usize {
        2 * self.limits.max_entry + 1024
    }

    /// Answers whole requests; false when the connection must wait.
    fn answer_requests(&mut self, key: usize, service: &mut impl Service) -> bool {
        let max_body = self.max_body();
        loop {
            let conn = &mut self.conns[key];
            if conn.closing
                || conn.dead
                || !matches!(conn.state, State::Requests)
                || conn.out.queued() >= self.limits.max_output
            {
                return false;
            }
            let WebConn {
                input, out, state, ..
            } = conn;
            let used = match http::parse(input, max_body) {
                Parsed::Partial => return true,
                Parsed::Bad(status, why) => {
                    http::push_text(&mut out.buf, status, format!("{why}\n").as_bytes(), true);
                    input.clear();
                    conn.closing = true;
                    return false;
                }
                Parsed::Request(request, used) => {
                    let mut ctx = Ctx {
                        key,
                        service: &mut *service,
                        gate: &self.gate,
                        limits: &self.limits,
                        tls: self.tls.is_some(),
                        next_request: &mut self.next_request,
                        held: &mut self.held,
                        followers: &mut self.followers,
                        from: conn.from,
                    };
                    if route(&request, &mut ctx, out, state) {
                        conn.closing = true;
                    }
                    used
                }
            };
            let conn = &mut self.conns[key];
            conn.input.drain(..used);
            if conn.input.is_empty() && conn.input.capacity() > KEEP_CAPACITY {
                conn.input = Vec::new();
            }
            if matches!(conn.state, State::Events { .. } | State::Streaming(_)) {
                self.continue_stream(key, service);
            }
        }
    }

    /// Tops up a streamed reply or an event stream.
    fn continue_stream(&mut self, key: usize, service: &mut impl Service) {
        let conn = &mut self.conns[key];
        if conn.dead {
            return;
        }
        match &mut conn.state {
            State::Requests | State::Held { .. } => {}
            State::Events { follower, .. } => {
                let limit = self.limits.follow_backlog;
                let start = conn.out.buf.len();
                let fed = follower.feed(&mut conn.out, service.store(), limit);
                if conn.out.buf.len() > start {
                    let lines = conn.out.buf.split_off(start);
                    events::push_lines(&mut conn.out.buf, &lines);
                }
                let stats = service.stats();
                if fed == Fed::Behind {
                    stats.dropped_followers += 1;
                }
                if fed != Fed::Following {
                    // The browser reconnects after the last id it got.
                    conn.closing = true;
                }
            }
            State::Streaming(cursor) => {
                if conn.out.queued() > self.limits.max_output / 2 {
                    return;
                }
                let mut chunk = Vec::new();
                let store = service.store();
                let done = match history::fill(store, cursor, &mut chunk, STREAM_FILL, STREAM_SCAN)
                {
                    Ok(done) => done,
                    Err(e) => {
                        protocol::push_read_error(&mut chunk, &e);
                        conn.closing = true;
                        true
                    }
                };
                if !chunk.is_empty() {
                    http::push_chunk(&mut conn.out.buf, &chunk);
                }
                if done {
                    http::push_chunk(&mut conn.out.buf, b"");
                    conn.state = State::Requests;
                    self.resume.push(key);
                }
            }
        }
    }

    /// Replaces the ack of held write `request` on connection `key` with `line`.
    pub(crate) fn patch_ack(&mut self, key: usize, request: u64, line: &[u8]) {
        if let Some(conn) = self.conns.get_mut(key)
            && let State::Held {
                request: held,
                body,
                ack_at,
                ..
            } = &mut conn.state
            && *held == request
        {
            protocol::replace_ack(body, *ack_at, line, usize::MAX);
        }
    }

    /// Sends what waited for batches up to `settled`.
    pub(crate) fn release(&mut self, settled: u64) {
        let mut held = conns::take_sorted(&mut self.held);
        held.retain(|&key| {
            let Some(conn) = self.conns.get_mut(key) else {
                return false;
            };
            self.touched.push(key);
            let mut waiting = conn.out.release(settled);
            if let State::Held { batch, .. } = conn.state {
                if batch <= settled {
                    let State::Held { body, close, .. } =
                        std::mem::replace(&mut conn.state, State::Requests)
                    else {
                        unreachable!("matched above");
                    };
                    http::push_text(&mut conn.out.buf, 200, &body, close);
                    self.resume.push(key);
                } else {
                    waiting = true;
                }
            }
            waiting
        });
        self.held = held;
    }

    pub(crate) fn feed_followers(&mut self, service: &mut impl Service) {
        for i in 0..self.followers.len() {
            let key = self.followers[i];
            self.continue_stream(key, service);
            self.touched.push(key);
        }
    }

    /// Once a second: closes idle and unread connections, keeps quiet
    /// event streams alive, and ends those of logged-out sessions.
    pub(crate) fn sweep(&mut self, now: Instant, registry: &Registry, stats: &mut Stats) {
        let gate = self.gate.lock();
        let generation = gate.web_generation();
        let recheck = std::mem::replace(&mut self.generation, generation) != generation;
        for (key, conn) in self.conns.iter_mut() {
            if conn.dead {
                continue;
            }
            if let State::Events { peer, .. } = &conn.state {
                if recheck && !gate.web_session_open(peer) {
                    log::info!("{}: web page closed: logged out", peer.name);
                    conn.dead = true;
                } else if conn.out.queued() == 0 && now.duration_since(conn.last_sent) >= KEEPALIVE
                {
                    events::push_keepalive(&mut conn.out.buf);
                    self.touched.push(key);
                }
                continue;
            }
            let waiting = matches!(conn.state, State::Held { .. });
            let unread = conn.out.queued() > 0
                && now.duration_since(conn.last_sent) >= self.limits.send_timeout;
            let idle = !waiting && now.duration_since(conn.last_active) >= self.limits.idle_timeout;
            if unread || idle {
                conn.dead = true;
            }
        }
        drop(gate);
        self.accept(registry, stats);
    }

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
        let before = conn.out.queued();
        if conn.out.flush_to(&mut conn.stream).is_err() || conn.stream.flush_pending().is_err() {
            conn.dead = true;
            return;
        }
        let queued = conn.out.queued();
        conns::note_sent(before, queued, &mut conn.last_sent, &mut conn.last_active);
        if queued == 0 && conn.out.buf.capacity() > KEEP_CAPACITY {
            conn.out.buf = Vec::new();
        }
        let busy = matches!(conn.state, State::Held { .. } | State::Streaming(_));
        if queued == 0 && conn.closing && !busy && !conn.stream.pending() {
            conn.dead = true;
            return;
        }
        let want_writable = conn.out.sendable() > 0 || conn.stream.pending();
        let (stream, token) = (conn.stream.socket(), Token(TOKEN_BASE + key));
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
        let more = match &conn.state {
            State::Requests => conn.stalled && !conn.closing && queued < max_output / 2,
            State::Streaming(_) => queued < max_output / 2,
            State::Events { follower, .. } => {
                follower.wants_more(store, queued, self.limits.follow_backlog)
            }
            State::Held { .. } => false,
        };
        if more {
            self.resume.push(key);
        }
    }

    pub(crate) fn reap(&mut self, registry: &Registry, stats: &mut Stats) {
        let dead: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.dead)
            .map(|(k, _)| k)
            .collect();
        for key in dead {
            let mut conn = self.conns.remove(key);
            let _ = registry.deregister(conn.stream.socket());
            if let State::Events { peer, .. } = &conn.state
                && let Some(n) = stats.device_sessions.get_mut(&peer.name)
            {
                *n = n.saturating_sub(1);
            }
        }
        let conns = &self.conns;
        self.resume.retain(|&k| conns.contains(k));
        self.followers.retain(|&k| {
            conns
                .get(k)
                .is_some_and(|c| matches!(c.state, State::Events { .. }))
        });
        stats.web_pages = self.followers.len() as u64;
        stats.web_clients = self.conns.len() as u64;
        stats.device_sessions.retain(|_, n| *n > 0);
    }

    pub(crate) fn stop_accepting(&mut self, registry: &Registry) {
        if let Some(mut listener) = self.listener.take() {
            let _ = registry.deregister(&mut listener);
        }
    }

    /// One more try to send every connection's output; whether any is left.
    pub(crate) fn flush_all(&mut self) -> bool {
        let mut pending = false;
        for (_, conn) in self.conns.iter_mut() {
            if !conn.dead
                && conn.out.flush_to(&mut conn.stream).is_ok()
                && conn.stream.flush_pending().is_ok()
            {
                pending |= conn.out.queued() > 0 || conn.stream.pending();
            }
        }
        pending
    }
}

/// Reads and drops what an event stream's browser sends, noticing its end.
fn drain(conn: &mut WebConn) {
    let mut scratch = [0u8; 1024];
    loop {
        match conn.stream.read(&mut scratch) {
            Ok(0) => {
                conn.dead = true;
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

/// Whether a request comes from the page itself: the browser's
/// `Sec-Fetch-Site`, when sent, says same-origin, and `Origin`, when sent
/// (always, on a POST), is this server as the browser reached it.
fn same_origin(request: &HttpRequest, tls: bool, origin_required: bool) -> bool {
    if let Some(site) = request.fetch_site
        && site != "same-origin"
        && site != "none"
    {
        return false;
    }
    match (request.origin, request.host) {
        (Some(origin), Some(host)) => {
            // Served in plaintext, the page may be behind an HTTPS proxy
            // that passes the Host on: the same host and port, either scheme.
            let bare = origin
                .strip_prefix("https://")
                .or_else(|| (!tls).then(|| origin.strip_prefix("http://")).flatten());
            bare == Some(host)
        }
        (Some(_), None) => false,
        (None, _) => !origin_required,
    }
}

/// Answers one request; whether the connection closes after the response.
fn route<S: Service>(
    request: &HttpRequest,
    ctx: &mut Ctx<S>,
    out: &mut OutBuf,
    state: &mut State,
) -> bool {
    let close = request.close;
    let method = request.method;
    let read_only = method == "GET" || method == "HEAD";
    match request.path {
        "/api" | "/api/login" | "/api/logout" if method != "POST" => {
            http::push_text(&mut out.buf, 405, b"use POST\n", close);
        }
        "/api/events" if method != "GET" => {
            http::push_text(&mut out.buf, 405, b"use GET\n", close);
        }
        "/api" | "/api/login" | "/api/logout" | "/api/events"
            if !same_origin(request, ctx.tls, !read_only) =>
        {
            http::push_text(
                &mut out.buf,
                403,
                b"refused: this request did not come from the diary's own page\n",
                close,
            );
        }
        "/api/login" => login(request, ctx, out),
        "/api" | "/api/logout" | "/api/events" => {
            let peer = request
                .cookie
                .and_then(|cookie| ctx.gate.lock().web_peer(cookie));
            let Some(peer) = peer else {
                http::push_text(&mut out.buf, 401, NOT_LOGGED_IN, close);
                return close;
            };
            match request.path {
                "/api" => api(request, &peer, ctx, out, state),
                "/api/events" => return start_events(request, peer, ctx, out, state),
                _ => logout(&peer, ctx, out, close),
            }
        }
        path => match assets::find(path) {
            Some(asset) if read_only => {
                let extra = "Cache-Control: no-cache\r\n";
                if method == "HEAD" {
                    let body = Body::Length(asset.body.len());
                    http::push_head(&mut out.buf, 200, asset.content_type, body, extra, close);
                } else {
                    http::push_response(
                        &mut out.buf,
                        200,
                        asset.content_type,
                        extra,
                        asset.body,
                        close,
                    );
                }
            }
            Some(_) => http::push_text(&mut out.buf, 405, b"use GET\n", close),
            None => http::push_text(&mut out.buf, 404, b"no such page\n", close),
        },
    }
    close
}

/// `POST /api/login`: the token from the login URL's fragment, for a cookie.
fn login<S: Service>(request: &HttpRequest, ctx: &mut Ctx<S>, out: &mut OutBuf) {
    let close = request.close;
    let token = std::str::from_utf8(request.body).unwrap_or("");
    let exchanged = match ctx.gate.lock().web_sessions_mut() {
        Some(sessions) => sessions.exchange(token),
        None => Err("the web side is off".into()),
    };
    match exchanged {
        Ok((cookie, name)) => {
            log::info!("{name}: web login from {}", ctx.from);
            let secure = if ctx.tls { "; Secure" } else { "" };
            let extra = format!(
                "Set-Cookie: {COOKIE_NAME}={cookie}; Path=/; HttpOnly; SameSite=Strict; \
                 Max-Age=31536000{secure}\r\nCache-Control: no-store\r\n"
            );
            let body = format!("{name}\n");
            let kind = "text/plain; charset=utf-8";
            http::push_response(&mut out.buf, 200, kind, &extra, body.as_bytes(), close);
        }
        Err(why) => {
            log::info!("web login from {} refused: {why}", ctx.from);
            http::push_text(&mut out.buf, 403, format!("{why}\n").as_bytes(), close);
        }
    }
}

/// `POST /api/logout`: this browser's session ends, everywhere.
fn logout<S: Service>(peer: &Peer, ctx: &mut Ctx<S>, out: &mut OutBuf, close: bool) {
    if let Some(sessions) = ctx.gate.lock().web_sessions_mut() {
        let _ = sessions.revoke(&peer.name);
    }
    log::info!("{}: web logout", peer.name);
    let extra = format!(
        "Set-Cookie: {COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0\r\n\
         Cache-Control: no-store\r\n"
    );
    http::push_response(
        &mut out.buf,
        200,
        "text/plain; charset=utf-8",
        &extra,
        b"bye\n",
        close,
    );
}

/// `POST /api`: the body is one request of the text protocol.
fn api<S: Service>(
    request: &HttpRequest,
    peer: &Peer,
    ctx: &mut Ctx<S>,
    out: &mut OutBuf,
    state: &mut State,
) {
    let close = request.close;
    let line = request.body;
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parsed = protocol::parse(line, ctx.limits.max_entry);
    if matches!(parsed.command, Ok(Command::Follow { .. })) {
        let reply = b"err bad-argument the page follows with GET /api/events\n";
        http::push_text(&mut out.buf, 200, reply, close);
        return;
    }
    let reads = protocol::reads_store(&parsed);
    if reads && ctx.service.has_pending() {
        ctx.service.commit();
    }
    let mut body = Vec::new();
    let outcome = ctx
        .service
        .answer(&parsed, Transport::Tcp, Some(peer), &mut body);
    let start = out.buf.len();
    match outcome {
        Outcome::Wrote { id, ack_at } | Outcome::Acked { id, ack_at } => {
            let request = *ctx.next_request;
            *ctx.next_request += 1;
            let site = AckSite::Web {
                key: ctx.key,
                request,
            };
            match ctx.service.await_commit(site, id) {
                Some(batch) => {
                    *state = State::Held {
                        request,
                        body,
                        ack_at,
                        batch,
                        close,
                    };
                    ctx.held.push(ctx.key);
                }
                None => http::push_text(&mut out.buf, 200, &body, close),
            }
            return;
        }
        Outcome::Stream(cursor) => {
            let kind = "text/plain; charset=utf-8";
            let extra = "Cache-Control: no-store\r\n";
            http::push_head(&mut out.buf, 200, kind, Body::Chunked, extra, close);
            if !body.is_empty() {
                http::push_chunk(&mut out.buf, &body);
            }
            *state = State::Streaming(cursor);
        }
        Outcome::Replied | Outcome::Quit | Outcome::Follow { .. } => {
            http::push_text(&mut out.buf, 200, &body, close);
        }
    }
    // What it read may not be durable yet: it goes out no sooner.
    if reads
        && let Some(batch) = ctx.service.read_hold()
        && out.hold(batch, start)
    {
        ctx.held.push(ctx.key);
    }
}

/// `GET /api/events[?since=ID&diary=ID]`: the page's live feed, through
/// the same `/follow` request (and checks) as a TCP follower's. Whether
/// the connection closes once the response is sent: only when refused (a
/// stream goes on until the browser leaves).
fn start_events<S: Service>(
    request: &HttpRequest,
    peer: Peer,
    ctx: &mut Ctx<S>,
    out: &mut OutBuf,
    state: &mut State,
) -> bool {
    let since = http::query_param(request.query, "since");
    let after = events::resume_after(request.last_event_id, since);
    let diary = http::query_param(request.query, "diary").filter(|d| {
        d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    let mut line = String::from("/follow");
    if let Some(after) = after {
        line.push_str(&format!(" since {after}"));
    }
    if let Some(diary) = diary {
        line.push_str(&format!(" diary {diary}"));
    }
    let parsed = protocol::parse(line.as_bytes(), ctx.limits.max_entry);
    let mut reply = Vec::new();
    let outcome = ctx
        .service
        .answer(&parsed, Transport::Tcp, Some(&peer), &mut reply);
    let extra = "Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n";
    http::push_head(
        &mut out.buf,
        200,
        "text/event-stream; charset=utf-8",
        Body::UntilClose,
        extra,
        true,
    );
    events::push_start(&mut out.buf);
    let Outcome::Follow { after } = outcome else {
        // Refused (another diary, an id past its end): the page starts over.
        events::push_lines(&mut out.buf, &reply);
        *state = State::Requests;
        return true;
    };
    let mut note = Vec::new();
    let follower = Follower::start(after, ctx.service.store(), &mut note);
    events::push_lines(&mut out.buf, &note);
    log::info!("{}: web page open from {}", peer.name, ctx.from);
    let stats = ctx.service.stats();
    *stats.device_sessions.entry(peer.name.clone()).or_default() += 1;
    *state = State::Events { follower, peer };
    ctx.followers.push(ctx.key);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin_ok(headers: &str, tls: bool, required: bool) -> bool {
        let raw = format!("POST /api HTTP/1.1\r\nHost: diary.home:8443\r\n{headers}\r\n");
        let Parsed::Request(request, _) = http::parse(raw.as_bytes(), 10) else {
            panic!("not parsed");
        };
        same_origin(&request, tls, required)
    }

    #[test]
    fn only_the_pages_own_origin_is_taken() {
        let ours = "Origin: https://diary.home:8443\r\n";
        assert!(origin_ok(ours, true, true));
        assert!(origin_ok(ours, false, true), "behind an HTTPS proxy");
        assert!(origin_ok("Origin: http://diary.home:8443\r\n", false, true));
        assert!(!origin_ok("Origin: http://diary.home:8443\r\n", true, true));
        assert!(!origin_ok("Origin: https://evil.example\r\n", true, true));
        assert!(!origin_ok(
            "Origin: https://diary.home:8443.evil\r\n",
            true,
            true
        ));
        assert!(!origin_ok("Origin: null\r\n", false, true));
        assert!(!origin_ok("", false, true), "a POST without Origin");
        assert!(origin_ok("", false, false), "a same-origin GET has none");
        let cross = "Origin: https://diary.home:8443\r\nSec-Fetch-Site: cross-site\r\n";
        assert!(!origin_ok(cross, true, true));
        let same = "Origin: https://diary.home:8443\r\nSec-Fetch-Site: same-origin\r\n";
        assert!(origin_ok(same, true, true));
    }
}
