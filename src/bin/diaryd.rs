//! `diaryd`: the diary server. Parses the command line, opens the diary and
//! runs the event loop until SIGINT or SIGTERM.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{CommandFactory, Parser};
use diary::event_loop::{Limits, Server};
use diary::server::access::gatekeeper::{AccessConfig, Gatekeeper};
use diary::server::service_manager;
use diary::store::{FsyncPolicy, Store};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Serve one diary over UDP and TCP on the same port.
///
/// Every line a client sends is stored as an entry with an id and a time;
/// `p` lists past entries, `h` shows help, `e` ends a session. Try it with
/// `nc 127.0.0.1 8888` or `nc -u 127.0.0.1 8888`.
#[derive(Parser, Debug)]
#[command(name = "diaryd", version, about, long_about = None)]
struct Args {
    /// Address to listen on; UDP and TCP share the port (0 picks a free one).
    #[arg(long, default_value = diary::protocol::DEFAULT_ADDR, env = "DIARYD_LISTEN")]
    listen: SocketAddr,

    /// The diary file: one entry per line, created if missing.
    #[arg(long, default_value = "diary.log", env = "DIARYD_FILE")]
    file: PathBuf,

    /// When writes reach the disk before they are acknowledged:
    /// `always` = fdatasync once per loop iteration, before any reply;
    /// `interval` = about once a second; `never` = left to the OS.
    #[arg(
        long,
        default_value = "always",
        value_parser = PossibleValuesParser::new(FsyncPolicy::NAMES)
            .try_map(|s| s.parse::<FsyncPolicy>()),
    )]
    fsync: FsyncPolicy,

    /// Largest entry, in bytes; longer ones get an error.
    #[arg(long, default_value_t = Limits::default().max_entry)]
    max_entry: usize,

    /// TCP connections served at once; more are refused with an error line.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,

    /// TCP connections from one address at once (this machine's own
    /// clients are not counted, and keep a reserve of the total).
    #[arg(long, default_value_t = Limits::default().max_per_source)]
    max_per_source: usize,

    /// Reply bytes queued for one TCP client before the server stops reading it.
    #[arg(long, default_value_t = Limits::default().max_output)]
    max_output: usize,

    /// Seconds without traffic after which a TCP connection is closed.
    #[arg(long, default_value_t = Limits::default().idle_timeout.as_secs())]
    idle_timeout: u64,

    /// Seconds a connection from where keys are required may take to make
    /// its encrypted session before it is closed.
    #[arg(long, default_value_t = Limits::default().login_grace.as_secs())]
    login_grace: u64,

    /// Seconds a client may leave its replies unread before it is closed.
    #[arg(long, default_value_t = Limits::default().send_timeout.as_secs())]
    send_timeout: u64,

    /// UDP handshakes a second past which each must first prove its
    /// source address with a cookie round trip (0: always).
    #[arg(long, default_value_t = Limits::default().handshakes_before_cookies)]
    handshakes_before_cookies: u32,

    /// Milliseconds a second the server may spend on handshakes' Diffie-
    /// Hellman work before it asks for cookies whatever their count.
    #[arg(long, default_value_t = Limits::default().handshake_work.as_millis() as u64)]
    handshake_work_ms: u64,

    /// Tagged UDP writes remembered so that a retry is answered, not stored twice.
    #[arg(long, default_value_t = Limits::default().replay_memory)]
    replay_memory: usize,

    /// Reply size for tagged UDP requests that do not ask for another (bytes).
    #[arg(long, default_value_t = Limits::default().udp_reply)]
    udp_reply: usize,

    /// UDP replies waiting for the socket to take them; beyond it replies
    /// are dropped (the client retries).
    #[arg(long, default_value_t = Limits::default().udp_queue)]
    udp_queue: usize,

    /// Bytes a follower may fall behind before it is told where to resume
    /// and closed (at least twice --max-entry).
    #[arg(long, default_value_t = Limits::default().follow_backlog)]
    follow_backlog: usize,

    /// The server's key, made on first start (mode 0600); default: the
    /// diary file's path with `.key` added.
    #[arg(long, env = "DIARYD_KEY")]
    key: Option<PathBuf>,

    /// The devices allowed in, one `PUBLIC-KEY NAME SCOPES` per line
    /// (scopes: write, edit, import, read, follow, all); re-read on SIGHUP. Needed to
    /// listen beyond loopback. Make a device's key with `diary keygen`.
    #[arg(long, env = "DIARYD_ALLOW")]
    allow: Option<PathBuf>,

    /// Require keys on loopback too (plaintext is refused everywhere).
    #[arg(long, requires = "allow")]
    auth_loopback: bool,

    /// Serve plaintext to anyone who can reach the port: no keys, no
    /// encryption. Only for a network you trust entirely.
    #[arg(long, conflicts_with = "allow")]
    insecure_open: bool,

    /// Also serve the diary's web page on ADDR (e.g. 127.0.0.1:8080); a
    /// one-time login URL is printed at start, and by `diary web-login`.
    /// Off loopback it needs HTTPS: put a reverse proxy in front.
    #[arg(long, env = "DIARYD_WEB")]
    web: Option<SocketAddr>,

    /// Connections of the web side at once; more get 503.
    #[arg(long, default_value_t = Limits::default().max_web_connections)]
    web_max_connections: usize,

    /// Serve the page over HTTPS with this PEM certificate chain and key
    /// (needed off loopback).
    #[arg(long, num_args = 2, value_names = ["CERT", "KEY"], requires = "web")]
    web_tls: Option<Vec<PathBuf>>,

    /// The server's name in the login URLs it prints (the name the
    /// certificate is for); default: the address the page listens on.
    #[arg(long, requires = "web")]
    web_host: Option<String>,

    /// Read FILE as a start would, without serving it or changing it, and
    /// report: entries, format, torn end, saved index, any line diaryd
    /// would refuse. Exit 0 if whole, 1 if not, 2 if it cannot be read.
    #[arg(long, value_name = "FILE", exclusive = true)]
    check: Option<PathBuf>,

    /// Print a shell's completion script for diaryd (bash, zsh, fish, …).
    #[arg(long, value_name = "SHELL", exclusive = true)]
    completions: Option<clap_complete::Shell>,

    /// Write diaryd(8) into DIR (contrib/dist.sh runs it).
    #[arg(long, value_name = "DIR", exclusive = true, hide = true)]
    generate_man: Option<PathBuf>,

    /// Where logged-in browsers are kept (hashes only, mode 0600);
    /// default: the diary file's path with `.web-sessions` added.
    #[arg(long, env = "DIARYD_WEB_SESSIONS")]
    web_sessions: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    diary::server::logging::init(log::LevelFilter::Info);
    if let Some(code) = side_command(&args) {
        return code;
    }
    match serve(&args) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(2)
        }
    }
}

/// What diaryd does instead of serving: `--check`, `--completions`,
/// `--generate-man`.
fn side_command(args: &Args) -> Option<ExitCode> {
    if let Some(file) = &args.check {
        return Some(check(file));
    }
    if let Some(shell) = args.completions {
        let mut command = Args::command();
        clap_complete::generate(shell, &mut command, "diaryd", &mut std::io::stdout());
        return Some(ExitCode::SUCCESS);
    }
    let dir = args.generate_man.as_ref()?;
    let page = clap_mangen::Man::new(Args::command().after_long_help(
        "Signals: SIGINT and SIGTERM stop it once what it acknowledged is on disk; SIGHUP \
         re-reads the allow file and the web sessions. The protocol is in \
         diary-protocol(5), the file's format in diary-file(5), the client in diary(1).",
    ))
    .section("8");
    Some(
        match std::fs::create_dir_all(dir).and_then(|()| page.generate_to(dir)) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                log::error!("cannot write diaryd.8 in {}: {e}", dir.display());
                ExitCode::from(1)
            }
        },
    )
}

/// Opens the diary and serves it until stopped. An error stops the start
/// (exit 2) with a line that says what to do.
fn serve(args: &Args) -> Result<ExitCode, String> {
    // Sockets systemd made for us (diaryd.socket) stand in for --listen.
    let activated = service_manager::take_activated_sockets()?;
    let listen = match &activated {
        Some((listener, _)) => listener.local_addr().unwrap_or(args.listen),
        None => args.listen,
    };
    refuse_exposure(args, listen)?;
    let (gate, server_key) = open_gate(args)?;
    let store = open_store(args)?;
    let (entries, identity) = (store.len(), store.identity().to_string());
    let from_systemd = activated.is_some();
    let limits = limits(args);
    let mut server = match activated {
        Some((listener, socket)) => Server::with_sockets(listener, socket, store, limits, gate)
            .map_err(|e| format!("cannot serve on the sockets systemd handed over: {e}"))?,
        None => Server::bind_with(args.listen, store, limits, gate).map_err(|e| {
            format!(
                "cannot listen on {}: {e}; is another server using the port? \
                 Pick another with --listen",
                args.listen
            )
        })?,
    };
    if let Err(e) = server.stop_on_signals() {
        log::error!("cannot handle SIGINT/SIGTERM/SIGHUP: {e}");
        return Ok(ExitCode::from(1));
    }
    let web_login = serve_web(args, &mut server)?;
    raise_open_files_limit(args.max_connections + args.web_max_connections);
    let path = std::fs::canonicalize(&args.file).unwrap_or(args.file.clone());
    // Scripts read the port from this line; a closed stdout must not stop the server.
    let mut stdout = std::io::stdout();
    let _ = writeln!(
        stdout,
        "diaryd: listening on {} (UDP and TCP{}), writing {} ({} entries, fsync {}, diary {})\n\
         server key {server_key}",
        server.local_addr(),
        if from_systemd {
            ", sockets from systemd"
        } else {
            ""
        },
        path.display(),
        entries,
        args.fsync,
        identity
    )
    .and_then(|()| match &web_login {
        // As Jupyter does: the URL to open, with a token good for one login.
        Some((bound, page, url)) => writeln!(
            stdout,
            "web: serving the page on {page} (listening on {bound}); log in once by opening {url} \
             (valid 15 minutes; `diary web-login` makes another)"
        ),
        None => Ok(()),
    })
    .and_then(|()| stdout.flush());
    server.report_to_service_manager();
    match server.run() {
        Ok(()) => {
            log::info!("stopped; everything acknowledged is in {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            log::error!("event loop failed: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Protected by default: plaintext off loopback only when told so.
fn refuse_exposure(args: &Args, listen: SocketAddr) -> Result<(), String> {
    if !listen.ip().is_loopback() && args.allow.is_none() && !args.insecure_open {
        return Err(format!(
            "refusing to listen on {listen} without --allow: anyone who reaches it could read and \
             write your diary. Make a key on each device with `diary keygen`, list them in a \
             file (`PUBLIC-KEY NAME all` per line) and pass --allow FILE; or, on a network \
             you trust entirely, --insecure-open"
        ));
    }
    if let Some(web) = args.web
        && !web.ip().is_loopback()
        && args.web_tls.is_none()
    {
        return Err(format!(
            "refusing to serve the web page on {web}: off loopback it would carry your diary \
             and its login cookie in plaintext. Give it a certificate with --web-tls CERT KEY, or \
             serve it on 127.0.0.1 behind an HTTPS reverse proxy (see README, \"Use it from a \
             phone\")"
        ));
    }
    Ok(())
}

/// `FILE` + `suffix`: where diaryd keeps what belongs with a diary.
fn beside_diary(args: &Args, suffix: &str) -> PathBuf {
    let mut path = args.file.clone().into_os_string();
    path.push(suffix);
    PathBuf::from(path)
}

/// The server's key (made on first start) and who it lets in.
fn open_gate(args: &Args) -> Result<(Gatekeeper, diary::secure::keys::PublicKey), String> {
    let key_path = args
        .key
        .clone()
        .unwrap_or_else(|| beside_diary(args, ".key"));
    let (key, made) = diary::secure::keys::load_or_create(&key_path)?;
    if made {
        log::info!("made the server key {}", key_path.display());
    }
    let access = AccessConfig {
        allow: args.allow.clone(),
        auth_loopback: args.auth_loopback,
        insecure_open: args.insecure_open,
    };
    let server_key = key.public;
    let gate = Gatekeeper::new(key, access)?;
    if args.insecure_open {
        log::warn!(
            "--insecure-open: anyone who can reach {} reads and writes this diary, in plaintext",
            args.listen
        );
    }
    if let Some(allow) = &args.allow {
        log::info!(
            "{} devices allowed by {}; plaintext {}",
            gate.devices(),
            allow.display(),
            if args.auth_loopback {
                "refused everywhere"
            } else {
                "from loopback only"
            }
        );
    }
    Ok((gate, server_key))
}

/// The diary, recovered, with what recovery did said in the log.
fn open_store(args: &Args) -> Result<Store, String> {
    let (store, recovery) = Store::open(&args.file, args.fsync).map_err(|e| e.to_string())?;
    if let Some(warning) = recovery.warning(&args.file) {
        log::warn!("{warning}");
    }
    if let Some(warning) = recovery.exposure_warning(&args.file) {
        log::warn!("{warning}");
    }
    if recovery.identity_added {
        log::info!(
            "{} was begun by an earlier diaryd; it now has the diary id {} \
             (one line appended, nothing rewritten)",
            args.file.display(),
            store.identity()
        );
    }
    Ok(store)
}

fn limits(args: &Args) -> Limits {
    Limits {
        max_entry: args.max_entry,
        max_connections: args.max_connections,
        max_per_source: args.max_per_source.max(1),
        max_output: args.max_output.max(1024),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        send_timeout: Duration::from_secs(args.send_timeout.max(1)),
        login_grace: Duration::from_secs(args.login_grace.max(1)),
        replay_memory: args.replay_memory,
        udp_reply: args.udp_reply,
        udp_queue: args.udp_queue.max(1),
        follow_backlog: args.follow_backlog,
        handshakes_before_cookies: args.handshakes_before_cookies,
        handshake_work: Duration::from_millis(args.handshake_work_ms),
        max_web_connections: args.web_max_connections.max(1),
        ..Limits::default()
    }
}

/// With `--web`: the page's side of the loop; where it listens, its URL,
/// and a one-time login URL.
fn serve_web(
    args: &Args,
    server: &mut Server,
) -> Result<Option<(SocketAddr, String, String)>, String> {
    let Some(web) = args.web else {
        return Ok(None);
    };
    let sessions = args
        .web_sessions
        .clone()
        .unwrap_or_else(|| beside_diary(args, ".web-sessions"));
    let tls = match args.web_tls.as_deref() {
        Some([cert, key]) => Some(diary::web::tls::load(cert, key)?),
        _ => None,
    };
    server
        .serve_web(web, tls, args.web_host.as_deref(), sessions)
        .map(Some)
        .map_err(|e| format!("{e}; pick another address with --web"))
}

/// `diaryd --check FILE`: the report on stdout; 0 whole, 1 not, 2 unreadable.
fn check(file: &std::path::Path) -> ExitCode {
    match diary::store::check::check(file) {
        Ok(report) => {
            print!("{}", report.describe());
            if report.is_whole() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            log::error!("cannot check {}: {e}", file.display());
            ExitCode::from(2)
        }
    }
}

/// Lifts the open-file limit and says so if it is still below what the
/// connection limit needs.
fn raise_open_files_limit(max_connections: usize) {
    let Ok(allowed) = diary::server::open_files::raise_to_hard_limit() else {
        return;
    };
    let wanted = max_connections as u64 + 64;
    if allowed < wanted {
        log::warn!(
            "only {allowed} open files allowed (ulimit -n); \
             --max-connections {max_connections} needs about {wanted}"
        );
    }
}
