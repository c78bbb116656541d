//! `diary`: the client's command line. With no command it is interactive;
//! `write`, `past` and `follow` are for scripts.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use diary::client::{
    Client, ClientError, FollowEvent, Options, Proto, Reply, format_entry, parse_entry,
};
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

/// Exit codes, as documented in --help.
const EXIT_REFUSED: u8 = 1;
const EXIT_NO_SERVER: u8 = 3;
const EXIT_BAD_REPLY: u8 = 4;
const EXIT_LOCAL_IO: u8 = 5;

/// Write to and read your diary on a diaryd server.
///
/// With no command, diary is interactive: it shows your recent entries,
/// then every line you type is stored (p: past entries, h: help, e: leave).
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Exit codes: 0 done; 1 the server refused a request (or some lines of an import); \
                  2 bad command line; 3 no answer from the server; 4 a reply the client did not understand; \
                  5 a local I/O error (reading stdin or writing stdout). Output cut short by its reader \
                  (`diary past | head`) is not an error."
)]
struct Args {
    /// The server, HOST:PORT.
    #[arg(
        long,
        global = true,
        env = "DIARY_SERVER",
        default_value = "127.0.0.1:8888"
    )]
    server: String,

    /// Transport: udp (retries lost datagrams, uses TCP for big replies) or tcp.
    #[arg(
        long,
        global = true,
        default_value = "udp",
        value_parser = PossibleValuesParser::new(Proto::NAMES).try_map(|s| s.parse::<Proto>()),
    )]
    proto: Proto,

    /// Seconds one request may take, retries included.
    #[arg(long, global = true, default_value_t = 5.0)]
    timeout: f64,

    /// UDP retries after the first try (each waits twice as long, up to 1 s).
    #[arg(long, global = true, default_value_t = 8)]
    retries: u32,

    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Store TEXT as one entry; with no TEXT, store each line of stdin
    /// (`diary write < old-diary.txt` imports a file).
    Write {
        /// The entry; several words are joined with spaces.
        text: Vec<String>,
    },
    /// Print past entries, oldest first.
    Past {
        /// Only the newest N.
        #[arg(short = 'n', long = "last")]
        last: Option<u64>,
        /// Only entries after this id, or from this date/time on
        /// (2026-11-25, 2026-11-25T08:30, or RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only entries whose text contains this (case-sensitive).
        #[arg(long)]
        grep: Option<String>,
        /// JSON Lines: {"id":…,"time":…,"text":…} per entry.
        #[arg(long)]
        json: bool,
    },
    /// Print new entries as they are written, like `tail -f` (always over
    /// TCP); reconnects by itself and resumes where it left off.
    Follow {
        /// Start with the entries after this id.
        #[arg(long)]
        since: Option<u64>,
        /// JSON Lines instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = Options {
        server: args.server.clone(),
        proto: args.proto,
        timeout: Duration::from_secs_f64(args.timeout.max(0.05)),
        retries: args.retries,
        ..Options::default()
    };
    let mut client = match Client::new(options) {
        Ok(client) => client,
        Err(e) => return fail(&e),
    };
    let result = match args.command {
        None => diary::interactive::run(&mut client).map(|()| ExitCode::SUCCESS),
        Some(Cmd::Write { text }) if text.is_empty() => import(&mut client),
        Some(Cmd::Write { text }) => write_one(&mut client, &text.join(" ")),
        Some(Cmd::Past {
            last,
            since,
            grep,
            json,
        }) => past(&mut client, last, since, grep, json),
        Some(Cmd::Follow { since, json }) => follow(client.options(), since, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(e) = e.downcast_ref::<ClientError>() {
                return fail(e);
            }
            if let Some(e) = e.downcast_ref::<std::io::Error>() {
                // The reader of our output has all it wanted (`| head`).
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
                eprintln!("diary: {e}");
                return ExitCode::from(EXIT_LOCAL_IO);
            }
            eprintln!("diary: {e}");
            ExitCode::from(EXIT_BAD_REPLY)
        }
    }
}

type Outcome = Result<ExitCode, Box<dyn std::error::Error>>;

fn fail(e: &ClientError) -> ExitCode {
    eprintln!("diary: {e}");
    ExitCode::from(match e {
        ClientError::BadReply(_) => EXIT_BAD_REPLY,
        _ => EXIT_NO_SERVER,
    })
}

fn write_one(client: &mut Client, text: &str) -> Outcome {
    match client.write(text)? {
        Reply::Stored { id, time } => {
            println!("stored #{id} at {time}");
            Ok(ExitCode::SUCCESS)
        }
        other => refused(other),
    }
}

fn refused(reply: Reply) -> Outcome {
    match reply {
        Reply::Refused { code, message } => {
            eprintln!("diary: the server refused ({code}): {message}");
            Ok(ExitCode::from(EXIT_REFUSED))
        }
        other => Err(Box::new(ClientError::BadReply(format!("{other:?}")))),
    }
}

/// One entry per stdin line; empty lines are skipped, bad ones reported.
fn import(client: &mut Client) -> Outcome {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut raw = Vec::new();
    let (mut stored, mut failed, mut first, mut last) = (0u64, 0u64, None, 0);
    for number in 1.. {
        raw.clear();
        if input.read_until(b'\n', &mut raw)? == 0 {
            break;
        }
        let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            eprintln!("diary: stdin line {number}: not UTF-8, skipped");
            failed += 1;
            continue;
        };
        match client.write(text)? {
            Reply::Stored { id, .. } => {
                stored += 1;
                first.get_or_insert(id);
                last = id;
            }
            Reply::Refused { code, message } => {
                eprintln!("diary: stdin line {number}: refused ({code}): {message}");
                failed += 1;
            }
            other => return Err(Box::new(ClientError::BadReply(format!("{other:?}")))),
        }
    }
    match first {
        Some(first) => println!("stored {stored} entries (#{first} to #{last})"),
        None => println!("stored 0 entries"),
    }
    if failed > 0 {
        eprintln!("diary: {failed} lines were not stored");
        return Ok(ExitCode::from(EXIT_REFUSED));
    }
    Ok(ExitCode::SUCCESS)
}

fn past(
    client: &mut Client,
    last: Option<u64>,
    since: Option<String>,
    grep: Option<String>,
    json: bool,
) -> Outcome {
    let mut request = String::from("/past");
    if let Some(n) = last {
        request.push_str(&format!(" {n}"));
    }
    if let Some(since) = since {
        request.push_str(&format!(" since {since}"));
    }
    if let Some(words) = grep {
        request.push_str(&format!(" grep {words}"));
    }
    let lines = match client.request(&request)? {
        Reply::Lines(lines) => lines,
        other => return refused(other),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for line in &lines {
        match parse_entry(line) {
            Some(entry) if json => writeln!(out, "{}", serde_json::to_string(&entry)?)?,
            Some(entry) => writeln!(out, "{}", format_entry(&entry))?,
            None => eprintln!("{line}"),
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn follow(options: &Options, since: Option<u64>, json: bool) -> Outcome {
    let stdout = std::io::stdout();
    let mut failed = None;
    diary::client::follow(
        options,
        since,
        |entry| {
            let mut out = stdout.lock();
            let written = if json {
                serde_json::to_string(entry)
                    .map_err(std::io::Error::other)
                    .and_then(|line| writeln!(out, "{line}"))
            } else {
                writeln!(out, "{}", format_entry(entry))
            };
            // A closed pipe (`diary follow | head`) ends the follow.
            match written.and_then(|()| out.flush()) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        },
        |event| match event {
            FollowEvent::Following(_) => {}
            FollowEvent::Reconnecting(why) => eprintln!("diary: {why}; reconnecting"),
            FollowEvent::Resuming(id) => {
                eprintln!("diary: fell behind the server; resuming after #{id}")
            }
        },
    )?;
    match failed {
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Some(e) => Err(e.into()),
        None => Ok(ExitCode::SUCCESS),
    }
}
