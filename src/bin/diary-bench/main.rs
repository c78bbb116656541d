//! `diary-bench`: load generator and benchmarks for diaryd, with a bare mio
//! echo server as the ceiling, so figures are ratios measured in one run.
//! BENCHMARKS.md says which command gives which figure.

mod echo;
mod flood;
mod history;
mod load;
mod pipeline;
mod startup;
mod target;
mod web;

use clap::{Args, Parser, Subcommand};
use diary::client::Pin;
use diary::client::secure::Credentials;
use load::{Load, Proto, Report};
use serde::Serialize;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use target::Target;

/// Load generator and benchmarks for diaryd.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Drive a load at a running server.
    Load {
        /// The server to load.
        #[arg(long, default_value = diary::protocol::DEFAULT_ADDR)]
        server: SocketAddr,
        #[command(flatten)]
        load: LoadArgs,
        /// Then print the server's `/stats` (its flushes and loop phases
        /// included): where a reply's time went.
        #[arg(long)]
        stats: bool,
    },
    /// Run the same load at a baseline and at diaryd, each spawned here on a
    /// fresh diary, and print both and their ratio.
    Compare {
        #[command(flatten)]
        load: LoadArgs,
        /// diaryd's --fsync; or a baseline's name, to measure it instead of
        /// diaryd (`--fsync echo-append-always --baseline echo-append`: what
        /// durability costs the least log server).
        #[arg(long, default_value = "never")]
        fsync: String,
        /// The baseline: the bare echo server (`echo`), the echo server that
        /// appends what it reads to a file, one write per batch
        /// (`echo-append`: the floor of any log server), the same echoing a
        /// batch only once it is flushed, as diaryd's group commit does
        /// (`echo-append-always`: the floor of any durable one), diaryd with
        /// another --fsync (`always`, `interval`, `never`), or `plaintext`:
        /// the same diaryd (with an allow file) loaded in plaintext, against
        /// encrypted sessions (Noise) for the measured runs.
        #[arg(long, default_value = "echo")]
        baseline: String,
        /// Runs of each, alternating; the medians are compared, so that a
        /// noisy moment on a shared machine moves one run, not the figure.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Rounds run first and not counted. On a VM that hands idle memory
        /// back to its host, the first runs after a pause pay to get it
        /// back with every new page of the diary (BENCHMARKS.md).
        #[arg(long, default_value_t = 1)]
        warmup_rounds: usize,
        /// The measured diaryd also serves the web page (`--web`, no page
        /// open): what the web side costs the other transports.
        #[arg(long)]
        web: bool,
    },
    /// Resident memory diaryd needs per idle TCP connection.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
    },
    /// `/past 100` cost and startup time on a small and a large diary.
    History {
        #[arg(long, default_value_t = 1_000)]
        small: u64,
        #[arg(long, default_value_t = 1_000_000)]
        large: u64,
        /// `/past 100` requests timed on each.
        #[arg(long, default_value_t = 2_000)]
        requests: usize,
    },
    /// Startup on a large diary, with and without the index saved at a
    /// clean stop, against `cat` of the file.
    Startup {
        #[arg(long, default_value_t = 2_000_000)]
        entries: u64,
        /// Runs of each, alternated.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// The request path without sockets, in this process: lines framed,
    /// parsed, answered and stored in batches; nanoseconds per line.
    Pipeline {
        /// Lines to serve per round.
        #[arg(long, default_value_t = 4_000_000)]
        lines: u64,
        /// Lines per batch (one commit each); diaryd's batches under the
        /// TCP load of BENCHMARKS.md hold about 1 000.
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        /// Bytes of text per line.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Where batches are written.
        #[arg(long, value_enum, default_value_t = pipeline::Sink::Null)]
        sink: pipeline::Sink,
        /// Rounds, each on a fresh store; the median is reported.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Time the floor instead of diaryd's code: only what any server
        /// storing these entries must do per line (find the newline, check
        /// the UTF-8 and control bytes, write `ID TAB TIME TAB TEXT`, index
        /// it, write the `ok ID TIME` ack), with diaryd's own helpers.
        #[arg(long)]
        floor: bool,
    },
    /// An allowed device making sessions (UDP and TCP, each with a sealed
    /// write) while a flood of strangers' first messages comes from its
    /// own address; without the flood, then with it.
    Flood {
        /// First messages a second.
        #[arg(long, default_value_t = 15_000)]
        rate: u64,
        /// Seconds of each phase.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Many open web pages (event streams of one browser session): diaryd's
    /// memory per page, and how long after its ack an entry reaches them.
    Web {
        /// Event streams held open.
        #[arg(long, default_value_t = 1_000)]
        pages: usize,
        /// Entries written, one at a time, while they are open.
        #[arg(long, default_value_t = 200)]
        writes: u64,
        /// diaryd's --fsync.
        #[arg(long, default_value = "always")]
        fsync: String,
    },
    /// Run the bare echo server (UDP and TCP on one port) until killed.
    Echo {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Append everything read to this file, one write per batch, before
        /// echoing it: the floor of any log server.
        #[arg(long)]
        append: Option<std::path::PathBuf>,
        /// With --append: echo a batch only once `fdatasync` of it has
        /// returned (diaryd's syncer thread, the next batch written while
        /// one flushes): the floor of any durable log server.
        #[arg(long, requires = "append")]
        sync: bool,
    },
}

#[derive(Args, Debug)]
struct LoadArgs {
    #[arg(long, value_enum, default_value_t = Proto::Udp)]
    proto: Proto,
    /// Concurrent clients (UDP sockets or TCP connections).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Writes each client keeps in flight.
    #[arg(long, default_value_t = 8)]
    depth: usize,
    /// Bytes of text per entry.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stop after this many replies instead (within --duration).
    #[arg(long)]
    count: Option<u64>,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

impl LoadArgs {
    fn load(&self) -> Load {
        Load {
            proto: self.proto,
            clients: self.clients.max(1),
            depth: self.depth.max(1),
            size: self.size,
            duration: Duration::from_secs_f64(self.duration),
            count: self.count,
            warmup: Duration::from_secs_f64(self.warmup),
            keys: None,
            encrypted: false,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Echo {
            listen,
            append,
            sync,
        } => run_echo(listen, append, sync),
        Cmd::Load {
            server,
            load,
            stats,
        } => {
            let load = load.load();
            load.run(server, &|| None).and_then(|report| {
                if !stats {
                    print(cli.json, &report, || describe("server", &report));
                    return Ok(());
                }
                let figures = server_stats(server)?;
                let both = LoadAndStats {
                    load: &report,
                    server_stats: figures.iter().cloned().collect(),
                };
                print(cli.json, &both, || {
                    let mut text = describe("server", &report);
                    for (name, value) in &figures {
                        text.push_str(&format!("{name} {value}\n"));
                    }
                    text
                });
                Ok(())
            })
        }
        Cmd::Compare {
            load,
            fsync,
            baseline,
            rounds,
            warmup_rounds,
            web,
        } => compare(
            &load.load(),
            (&fsync, web),
            &baseline,
            (warmup_rounds, rounds.max(1)),
            cli.json,
        ),
        Cmd::Idle { connections } => idle(connections, cli.json),
        Cmd::Web {
            pages,
            writes,
            fsync,
        } => web::run(pages, writes, &fsync).map(|r| print(cli.json, &r, || r.describe())),
        Cmd::Flood { rate, seconds } => {
            flood::run(rate, seconds).map(|r| print(cli.json, &r, || r.describe()))
        }
        Cmd::History {
            small,
            large,
            requests,
        } => history::run(small, large, requests).map(|r| print(cli.json, &r, || r.describe())),
        Cmd::Startup { entries, rounds } => {
            startup::run(entries, rounds).map(|r| print(cli.json, &r, || r.describe()))
        }
        Cmd::Pipeline {
            lines,
            batch,
            size,
            sink,
            rounds,
            floor,
        } => pipeline::run(lines, batch, size, sink, rounds, floor)
            .map(|r| print(cli.json, &r, || r.describe())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("diary-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `load --stats --json`: the load's report and the server's figures after it.
#[derive(Serialize)]
struct LoadAndStats<'a> {
    load: &'a Report,
    server_stats: std::collections::BTreeMap<String, u64>,
}

fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string(value).expect("plain data"));
    } else {
        print!("{}", text());
    }
}

fn run_echo(listen: SocketAddr, append: Option<std::path::PathBuf>, sync: bool) -> io::Result<()> {
    let open = |path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    };
    let sink = match append {
        Some(path) if sync => echo::Sink::Durable(open(path)?),
        Some(path) => echo::Sink::Append(open(path)?),
        None => echo::Sink::None,
    };
    let (addr, serve) = echo::bind(listen, sink)?;
    println!("diary-bench echo: listening on {addr} (UDP and TCP)");
    io::stdout().flush()?;
    serve()
}

fn describe(name: &str, r: &Report) -> String {
    let cpu = match (r.server_cpu_us_per_reply, r.server_cores) {
        (Some(us), Some(cores)) => format!(", server CPU {us:.2} µs/reply ({cores:.2} cores)"),
        _ => String::new(),
    };
    let cpu = format!(
        "{cpu}, generator {:.2} µs/reply ({:.2} cores)",
        r.client_cpu_us_per_reply, r.client_cores
    );
    format!(
        "{name:<22} {:>10.0} replies/s  p50 {:>7.0} µs  p99 {:>7.0} µs  p99.9 {:>7.0} µs  \
         ({} replies in {:.1} s, {} errors, {} retries{cpu})\n",
        r.per_second, r.p50_us, r.p99_us, r.p999_us, r.completed, r.seconds, r.errors, r.retries
    )
}

#[derive(Serialize)]
struct Comparison {
    load: Load,
    baseline_name: String,
    diaryd_fsync: String,
    /// The median run of each (by throughput).
    baseline: Report,
    diaryd: Report,
    /// diaryd's median throughput over the baseline's.
    ratio: f64,
    /// Rounds run before these and not counted.
    warmup_rounds: usize,
    /// Each round's ratio, in order.
    round_ratios: Vec<f64>,
    /// Each round's runs, in order: on a shared VM a round's two runs may
    /// land in different machine speeds, which these show.
    rounds: Vec<Round>,
}

#[derive(Serialize)]
struct Round {
    baseline: Report,
    diaryd: Report,
}

impl Round {
    fn describe(&self) -> String {
        let run = |r: &Report| match r.server_cpu_us_per_reply {
            Some(us) => format!("{:.2} M/s {us:.2} µs", r.per_second / 1e6),
            None => format!("{:.2} M/s", r.per_second / 1e6),
        };
        format!("{} / {}", run(&self.baseline), run(&self.diaryd))
    }
}

/// A device key and the allow file that lets it in, for encrypted runs.
struct BenchDevice {
    dir: tempfile::TempDir,
    key: diary::secure::keys::KeyPair,
}

impl BenchDevice {
    fn new() -> io::Result<BenchDevice> {
        let dir = tempfile::tempdir()?;
        let key = diary::secure::keys::KeyPair::generate();
        std::fs::write(
            dir.path().join("allow"),
            format!("{} bench all\n", key.public),
        )?;
        Ok(BenchDevice { dir, key })
    }

    fn allow(&self) -> String {
        self.dir.path().join("allow").display().to_string()
    }
}

fn spawn(name: &str, device: Option<&BenchDevice>, web: bool) -> io::Result<Target> {
    let allow;
    let mut extra: Vec<&str> = match device {
        Some(device) => {
            allow = device.allow();
            vec!["--allow", &allow]
        }
        None => Vec::new(),
    };
    if web {
        extra.extend(["--web", "127.0.0.1:0"]);
    }
    match name {
        "echo" => Target::echo(),
        "echo-append" => Target::echo_append(false),
        "echo-append-always" => Target::echo_append(true),
        fsync => Target::diaryd(fsync, &extra),
    }
}

/// What [`spawn`] runs for `name`, as the report calls it.
fn target_name(name: &str) -> String {
    match name {
        "echo" => "echo (bare mio loop)".to_string(),
        "echo-append" => "echo + append (one write per batch)".to_string(),
        "echo-append-always" => "echo + append + fdatasync per batch".to_string(),
        fsync => format!("diaryd --fsync {fsync}"),
    }
}

/// The middle of `values` (the upper one of the two middles when even).
pub fn median_of(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn median(mut runs: Vec<Report>) -> Report {
    runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
    runs.swap_remove(runs.len() / 2)
}

fn compare(
    load: &Load,
    (fsync, web): (&str, bool),
    baseline: &str,
    (warmup_rounds, rounds): (usize, usize),
    json: bool,
) -> io::Result<()> {
    // `plaintext`: the same diaryd both times; the measured runs encrypted.
    let encrypting = baseline == "plaintext";
    let device = encrypting.then(BenchDevice::new).transpose()?;
    let measure = |name: &str, measured: bool| -> io::Result<Report> {
        let encrypted = measured && encrypting;
        let target = spawn(name, device.as_ref(), measured && web)?;
        let mut load = load.clone();
        if encrypted && let Some(device) = &device {
            let server = target
                .server_key
                .ok_or_else(|| io::Error::other("diaryd printed no server key"))?;
            load.keys = Some(Credentials {
                own: device.key.clone(),
                server,
                pin: Pin::Given,
            });
            load.encrypted = true;
        }
        let report = load.run(target.addr, &|| target.cpu_seconds())?;
        if report.completed == 0 {
            return Err(io::Error::other(format!("{name}: no request completed")));
        }
        Ok(report)
    };
    let baseline_target = if encrypting { fsync } else { baseline };
    let (mut baselines, mut diaryds, mut round_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut each = Vec::new();
    for _ in 0..warmup_rounds {
        measure(baseline_target, false)?;
        measure(fsync, true)?;
    }
    for _ in 0..rounds {
        let b = measure(baseline_target, false)?;
        let d = measure(fsync, true)?;
        round_ratios.push(d.per_second / b.per_second);
        each.push(Round {
            baseline: b.clone(),
            diaryd: d.clone(),
        });
        baselines.push(b);
        diaryds.push(d);
    }
    let baseline_name = match baseline {
        "plaintext" => format!("diaryd --fsync {fsync}, plaintext"),
        name => target_name(name),
    };
    let mut measured_name = match encrypting {
        true => format!("diaryd --fsync {fsync}, Noise"),
        false => target_name(fsync),
    };
    if web {
        measured_name.push_str(" --web (idle)");
    }
    let (b, d) = (median(baselines), median(diaryds));
    let result = Comparison {
        // `encrypted`: the measured runs' load (the baseline's is plaintext).
        load: Load {
            encrypted: encrypting,
            ..load.clone()
        },
        ratio: d.per_second / b.per_second,
        baseline_name,
        diaryd_fsync: fsync.to_string(),
        baseline: b,
        diaryd: d,
        warmup_rounds,
        round_ratios,
        rounds: each,
    };
    print(json, &result, || {
        let rounds: Vec<String> = result
            .round_ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect();
        let each: Vec<String> = result.rounds.iter().map(Round::describe).collect();
        format!(
            "{:?} writes: {} clients x {} in flight, {}-byte entries; median of {rounds_n} runs each after {warmup_rounds} uncounted\n{}{}ratio {:.2} (rounds: {})\n\
             each round, baseline / diaryd (replies/s, server CPU per reply): {}\n",
            load.proto,
            load.clients,
            load.depth,
            load.size,
            describe(&result.baseline_name, &result.baseline),
            describe(&measured_name, &result.diaryd),
            result.ratio,
            rounds.join(" "),
            each.join("; "),
            rounds_n = result.round_ratios.len(),
        )
    });
    Ok(())
}

#[derive(Serialize)]
struct IdleReport {
    connections: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    bytes_per_connection: f64,
}

/// `/stats` over plaintext TCP (loopback is served without keys).
fn server_stats(to: SocketAddr) -> io::Result<Vec<(String, u64)>> {
    let mut stream = TcpStream::connect(to)?;
    stream.write_all(b"/stats\n")?;
    let mut figures = Vec::new();
    for line in BufReader::new(stream).lines() {
        let line = line?;
        if line == "end" {
            break;
        }
        if let Some((name, value)) = line.rsplit_once(' ')
            && let Ok(value) = value.parse()
        {
            figures.push((name.to_string(), value));
        }
    }
    Ok(figures)
}

/// Connections the server counts (the asking one not included).
fn tcp_clients(addr: SocketAddr) -> io::Result<u64> {
    let figures = server_stats(addr)?;
    let (_, n) = figures
        .iter()
        .find(|(name, _)| name == "tcp_clients")
        .ok_or_else(|| io::Error::other("no tcp_clients in /stats"))?;
    Ok(n - 1)
}

fn idle(connections: usize, json: bool) -> io::Result<()> {
    // The connections' descriptors are this process's too; a low limit
    // shows up as a connect error below.
    let _ = diary::server::open_files::raise_to_hard_limit();
    // Room for the idle ones and the connection asking for /stats.
    let max = (connections + 16).to_string();
    let target = Target::diaryd("never", &["--max-connections", &max])?;
    // One exchange first, so that what every server allocates once is in the baseline.
    tcp_clients(target.addr)?;
    std::thread::sleep(Duration::from_millis(200));
    let before = target
        .rss_kib()
        .ok_or_else(|| io::Error::other("no VmRSS"))?;
    let mut open = Vec::with_capacity(connections);
    for _ in 0..connections {
        open.push(TcpStream::connect(target.addr)?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while tcp_clients(target.addr)? < connections as u64 {
        if Instant::now() > deadline {
            return Err(io::Error::other(
                "the server did not accept every connection",
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = target
        .rss_kib()
        .ok_or_else(|| io::Error::other("no VmRSS"))?;
    let report = IdleReport {
        connections,
        rss_before_kib: before,
        rss_after_kib: after,
        bytes_per_connection: (after.saturating_sub(before) * 1024) as f64 / connections as f64,
    };
    print(json, &report, || {
        format!(
            "{} idle TCP connections: diaryd RSS {} KiB -> {} KiB, {:.0} bytes per connection\n",
            report.connections,
            report.rss_before_kib,
            report.rss_after_kib,
            report.bytes_per_connection
        )
    });
    Ok(())
}
