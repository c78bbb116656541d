//! The server's loop: one thread, one `mio::Poll`, and the order of each
//! iteration, as Redis's `beforeSleep` keeps it:
//!
//! poll → serve UDP → serve TCP and web → commit → patch acks → feed
//! followers → sweep (once a second) → flush → reap.
//!
//! Every reply is only queued until the commit that makes it true; a
//! failed commit's acks are patched into errors before the flush; and no
//! connection leaves the slab before the reap, so neither a patched reply
//! nor a stale event can reach the wrong client. The UDP side, the TCP side
//! and the diary they share ([`ServerState`]) each own their state; this file
//! only calls them in order.

use crate::server::access::gatekeeper::{Gatekeeper, SharedGate};
use crate::server::access::web_sessions::WebSessions;
use crate::server::phases::Phase;
use crate::server::service::{AckSite, Service};
use crate::server::service_manager;
use crate::server::state::ServerState;
use crate::store::Store;
use crate::tcp::{self, TcpSide};
use crate::udp::UdpSide;
use crate::web::{self, WebSide};
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Poll, Token, Waker};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use crate::server::limits::Limits;

const UDP: Token = Token(usize::MAX - 1);
const LISTENER: Token = Token(usize::MAX - 2);
const WAKER: Token = Token(usize::MAX - 3);
const SIGNALS: Token = Token(usize::MAX - 4);
const WEB_LISTENER: Token = Token(usize::MAX - 5);

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

pub struct Server {
    poll: Poll,
    udp: UdpSide,
    tcp: TcpSide,
    /// With `--web`: the page and its API.
    web: Option<WebSide>,
    limits: Limits,
    shared: ServerState,
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    last_sweep: Instant,
    gate: SharedGate,
    /// Under systemd: tell it when the server stops.
    reports_to_manager: bool,
    /// The entry count in the status line the manager shows.
    reported_entries: u64,
    /// Ping systemd's watchdog this often, from the loop, so that a stuck
    /// loop is noticed.
    watchdog: Option<Duration>,
    last_watchdog: Instant,
}

impl Server {
    /// Binds UDP and TCP on the same port (an ephemeral one for port 0),
    /// serving plaintext to everyone and taking no keys.
    pub fn bind(addr: SocketAddr, store: Store, limits: Limits) -> io::Result<Server> {
        Server::bind_with(addr, store, limits, Gatekeeper::open())
    }

    /// As [`Server::bind`], letting in whom `gate` allows.
    pub fn bind_with(
        addr: SocketAddr,
        store: Store,
        limits: Limits,
        gate: Gatekeeper,
    ) -> io::Result<Server> {
        let (listener, socket) = bind_pair(addr)?;
        Server::serve_on(listener, socket, store, limits, gate)
    }

    /// As [`Server::bind_with`], on sockets made elsewhere (handed over by
    /// systemd): a TCP listener and a UDP socket on the same port.
    pub fn with_sockets(
        listener: std::net::TcpListener,
        socket: std::net::UdpSocket,
        store: Store,
        limits: Limits,
        gate: Gatekeeper,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        socket.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener);
        let socket = UdpSocket::from_std(socket);
        Server::serve_on(listener, socket, store, limits, gate)
    }

    fn serve_on(
        listener: TcpListener,
        socket: UdpSocket,
        store: Store,
        mut limits: Limits,
        gate: Gatekeeper,
    ) -> io::Result<Server> {
        // A follower's queue must hold the largest entry twice over (it is
        // refilled at half), or it could never be sent.
        limits.follow_backlog = limits.follow_backlog.max(2 * limits.max_entry + 4096);
        let local_addr = listener.local_addr()?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut store = store;
        store.flush_off_the_loop(waker.clone())?;
        let insecure_open = gate.insecure_open();
        let gate = gate.shared();
        let mut udp = UdpSide::new(socket, UDP, &limits, gate.clone());
        let mut tcp = TcpSide::new(listener, &limits, gate.clone());
        let kept_limits = limits.clone();
        tcp.register_listener(poll.registry(), LISTENER)?;
        udp.register(poll.registry())?;
        let mut shared = ServerState::new(store, limits.replay_memory);
        shared.stats().insecure_open = insecure_open;
        Ok(Server {
            poll,
            udp,
            tcp,
            web: None,
            limits: kept_limits,
            shared,
            local_addr,
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            signals: None,
            last_sweep: Instant::now(),
            gate,
            reports_to_manager: false,
            reported_entries: 0,
            watchdog: None,
            last_watchdog: Instant::now(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves the web page on `addr` too (over HTTPS with `tls`), keeping
    /// browser sessions in `sessions_file`; returns the address bound, the
    /// page's URL and a one-time login URL. `host` names the server in
    /// URLs (default: the address bound).
    pub fn serve_web(
        &mut self,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        host: Option<&str>,
        sessions_file: std::path::PathBuf,
    ) -> Result<(SocketAddr, String, String), String> {
        let listener = tcp::listen(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = match host {
            Some(host) => format!("{scheme}://{host}:{}", bound.port()),
            None => format!("{scheme}://{bound}"),
        };
        let mut sessions = WebSessions::open(sessions_file, base.clone())?;
        let url = sessions.login_url(None);
        self.gate.lock().enable_web(sessions);
        let mut side = WebSide::new(listener, &self.limits, self.gate.clone(), tls);
        side.register_listener(self.poll.registry(), WEB_LISTENER)
            .map_err(|e| e.to_string())?;
        self.web = Some(side);
        Ok((bound, base, url))
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            flag: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Reports to systemd from now on: ready (now), with a status line
    /// whose entry count is brought up to date once a second at most, the
    /// watchdog if it asked for one, and stopping at shutdown. Outside
    /// systemd: nothing.
    pub fn report_to_service_manager(&mut self) {
        self.reported_entries = self.shared.store().len();
        service_manager::ready(&service_manager::serving_status(
            self.reported_entries,
            self.local_addr(),
        ));
        self.reports_to_manager = true;
        self.watchdog = service_manager::watchdog_interval();
    }

    /// Makes SIGINT and SIGTERM stop the server gracefully (see
    /// [`Server::run`]), and SIGHUP re-read the allow file.
    pub fn stop_on_signals(&mut self) -> io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, mio::Interest::READABLE)?;
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
            self.shared.stats().phases.turn_begins();
            // Readiness first; UDP is served after, in one batch.
            for event in events.iter() {
                match event.token() {
                    UDP => {
                        if event.is_readable() {
                            self.udp.on_readable();
                        }
                    }
                    LISTENER => self.tcp.accept(self.poll.registry(), self.shared.stats()),
                    WAKER => {}
                    SIGNALS => self.on_signal(),
                    WEB_LISTENER => {
                        if let Some(web) = &mut self.web {
                            web.accept(self.poll.registry(), self.shared.stats());
                        }
                    }
                    Token(key) if key >= web::TOKEN_BASE => {
                        if let Some(web) = &mut self.web {
                            web.on_event(key - web::TOKEN_BASE, event, &mut self.shared);
                        }
                    }
                    Token(key) => self.tcp.on_event(key, event, &mut self.shared),
                }
            }
            self.udp.serve(&mut self.shared);
            self.tcp.serve_resumed(&mut self.shared);
            if let Some(web) = &mut self.web {
                web.serve_resumed(&mut self.shared);
            }
            self.shared.stats().phases.phase_done(Phase::Serve);
            self.end_iteration();
        }
        self.shut_down();
        Ok(())
    }

    fn on_signal(&mut self) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        let mut reload = false;
        for signal in signals.pending() {
            if signal == signal_hook::consts::SIGHUP {
                reload = true;
            } else {
                // This iteration still commits and answers what it has.
                self.stop.store(true, Ordering::SeqCst);
            }
        }
        if reload {
            self.reload_allow_file();
        }
    }

    /// Re-reads the allow file; a removed device's sessions end before
    /// anything else is read. A bad file keeps the old list.
    pub(crate) fn reload_allow_file(&mut self) {
        let mut gate = self.gate.lock();
        if gate.has_allow_file() {
            match gate.reload() {
                Ok(devices) => log::info!("allow file re-read: {devices} devices allowed"),
                Err(e) => log::error!("{e}; still allowing the devices of the previous allow file"),
            }
        }
        if let Some(sessions) = gate.web_sessions_mut() {
            match sessions.reload() {
                Ok(n) => log::info!("web sessions re-read: {n} browsers logged in"),
                Err(e) => log::error!("{e}; keeping the web sessions known before"),
            }
        }
        drop(gate);
        self.udp.sweep(Instant::now(), self.shared.stats());
        self.tcp.check_sessions();
    }

    fn poll_timeout(&self) -> Duration {
        let web_resumable = self.web.as_ref().is_some_and(WebSide::has_resumable);
        if self.udp.has_waiting() || self.tcp.has_resumable() || web_resumable {
            return Duration::ZERO;
        }
        let mut timeout = Duration::from_secs(1);
        if let Some(deadline) = self.shared.store().sync_deadline() {
            timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
        }
        timeout
    }

    fn report_entry_count(&mut self) {
        let entries = self.shared.store().len();
        if self.reports_to_manager && entries != self.reported_entries {
            self.reported_entries = entries;
            service_manager::status(&service_manager::serving_status(entries, self.local_addr()));
        }
    }

    /// commit → patch acks → feed followers → sweep (once a second, with a
    /// look at the diary file) → flush → reap.
    fn end_iteration(&mut self) {
        self.commit_and_patch();
        self.shared.stats().phases.phase_done(Phase::Commit);
        self.tcp.feed_followers(&mut self.shared);
        if let Some(web) = &mut self.web {
            web.feed_followers(&mut self.shared);
        }
        self.shared.stats().phases.phase_done(Phase::Feed);
        let now = Instant::now();
        self.shared.sync_if_due(now);
        if let Some(every) = self.watchdog
            && now.duration_since(self.last_watchdog) >= every
        {
            self.last_watchdog = now;
            service_manager::watchdog_ping();
        }
        if now.duration_since(self.last_sweep) >= Duration::from_secs(1) {
            self.last_sweep = now;
            self.tcp
                .sweep(now, self.poll.registry(), self.shared.stats());
            self.udp.sweep(now, self.shared.stats());
            self.tcp.check_sessions();
            if let Some(web) = &mut self.web {
                web.sweep(now, self.poll.registry(), self.shared.stats());
            }
            self.shared.watch_file();
            self.report_entry_count();
        }
        let registry = self.poll.registry();
        let settled = self.shared.settled_batch();
        self.udp.flush(registry, self.shared.stats(), settled);
        self.tcp.flush(registry, self.shared.store());
        self.tcp.reap(registry, self.shared.stats());
        if let Some(web) = &mut self.web {
            web.flush(registry, self.shared.store());
            web.reap(registry, self.shared.stats());
        }
        self.shared.stats().phases.phase_done(Phase::Flush);
    }

    /// Group commit, then every ack of a batch that failed this iteration
    /// becomes its error, later sites first so that earlier offsets in the
    /// same buffer stay valid.
    fn commit_and_patch(&mut self) {
        // A flush that returned first: then this batch need not wait.
        self.shared.settle();
        self.shared.commit_when_due();
        self.shared.settle();
        for failed in self.shared.take_failed().iter().rev() {
            for site in failed.sites.iter().rev() {
                match *site {
                    AckSite::Tcp { key, at } => self.tcp.patch_ack(key, at, &failed.line),
                    AckSite::Udp { slot, at, limit } => {
                        self.udp.patch_ack(slot, at, limit, &failed.line)
                    }
                    AckSite::Web { key, request } => {
                        if let Some(web) = &mut self.web {
                            web.patch_ack(key, request, &failed.line);
                        }
                    }
                }
            }
        }
        // Only now that failed acks say so may what waited on them go.
        self.tcp.release(self.shared.settled_batch());
        if let Some(web) = &mut self.web {
            web.release(self.shared.settled_batch());
        }
    }

    /// Stop accepting, store what was written, answer what is queued.
    fn shut_down(&mut self) {
        if self.reports_to_manager {
            service_manager::stopping();
        }
        self.tcp.stop_accepting(self.poll.registry());
        if let Some(web) = &mut self.web {
            web.stop_accepting(self.poll.registry());
        }
        self.shared.commit();
        // The flush in flight, then one of everything written.
        self.shared.sync_now();
        self.commit_and_patch();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let settled = self.shared.settled_batch();
            self.udp.send_queued(self.shared.stats(), settled);
            let tcp_left = self.tcp.flush_all();
            let web_left = self.web.as_mut().is_some_and(WebSide::flush_all);
            if (!self.udp.has_queued() && !tcp_left && !web_left) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Err(e) = self.shared.store_mut().save_index() {
            log::info!("the index was not saved ({e}); the next start reads the whole diary");
        }
    }
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
        let listener: TcpListener = tcp::listen(addr)?;
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
