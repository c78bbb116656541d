//! `diary`: the client's command line. With no command it is interactive;
//! `write`, `past` and `follow` are for scripts.
//!
//! The REPL, the display, the editor and the outbox are this binary's own
//! modules (as ripgrep keeps its flags in its binary); from the library it
//! uses only `client`, `protocol`, `secure` and `wire` (tests/layout.rs).

mod display;
mod docs;
mod editor;
mod interactive;
mod outbox;
mod settings;

use crate::display::{Display, Zone};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use diary::client::dates::Point;
use diary::client::{Client, ClientError, FollowEvent, Options, Proto, Reply, parse_entry};
use diary::client::{SecureMode, Security};
use diary::secure::keys::PublicKey;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit codes, as documented in --help.
const EXIT_REFUSED: u8 = 1;
const EXIT_USAGE: u8 = 2;
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
                  2 bad command line or key; 3 no answer from the server; 4 a reply the client did not understand, or a changed server key; \
                  5 a local I/O error (reading stdin or writing stdout). Output cut short by its reader \
                  (`diary past | head`) is not an error."
)]
struct Args {
    /// The server, HOST:PORT.
    #[arg(
        long,
        global = true,
        env = "DIARY_SERVER",
        default_value = diary::protocol::DEFAULT_ADDR
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

    /// This device's key (made by `diary keygen`). Requests to a server
    /// off loopback are encrypted with it.
    #[arg(long, global = true, env = "DIARY_KEY")]
    key: Option<PathBuf>,

    /// The server's public key, as diaryd prints it (`server key …`);
    /// without it, the key is pinned on first contact in known_servers.
    /// Given, requests are encrypted even on loopback.
    #[arg(long, global = true, env = "DIARY_SERVER_KEY", value_parser = parse_key)]
    server_key: Option<PublicKey>,

    /// Plaintext, even off loopback: only for a server started with
    /// --insecure-open.
    #[arg(long, global = true, conflicts_with = "server_key")]
    plain: bool,

    /// Show times in UTC instead of your time zone (TZ).
    #[arg(long, global = true)]
    utc: bool,

    /// Who you are, recorded with each entry you write (default USER@HOST;
    /// a server that knows your device key records the device's name).
    #[arg(long, global = true, env = "DIARY_NAME", value_parser = parse_name)]
    name: Option<String>,

    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum ExportFormat {
    Jsonl,
    Md,
    Txt,
}

/// Which stretch of the diary: `past` and `export` take the same.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
struct Span {
    /// Only entries after this id, or from this date/time on, in your
    /// time zone: 120, today, yesterday, "3 days ago", "5 hours ago",
    /// 2026, 2026-11, 2026-11-25, "2026-11-25 08:30", or RFC 3339.
    #[arg(long, value_parser = parse_since)]
    since: Option<Point>,
    /// Only entries up to this id, or up to the end of this date or
    /// time (the same forms as --since: --until yesterday ends at
    /// midnight today).
    #[arg(long, value_parser = parse_until)]
    until: Option<Point>,
}

/// What the text of an entry must hold.
#[derive(clap::Args, Debug, Clone, Default)]
struct TextFilter {
    /// Only entries whose text contains this; several must all be there.
    #[arg(long, value_parser = parse_words)]
    grep: Vec<String>,
    /// Only entries matching this regular expression (the server's, Rust
    /// regex syntax).
    #[arg(long, value_parser = parse_words, conflicts_with = "grep")]
    regex: Option<String>,
    /// --grep and --regex ignore case.
    #[arg(short = 'i', long)]
    ignore_case: bool,
    /// Only entries with this #tag (any case); several must all be there.
    #[arg(long, value_parser = parse_tag_word)]
    tag: Vec<String>,
    /// Only entries written by this author (a device's name, or USER@HOST).
    #[arg(long, value_parser = parse_name)]
    from: Option<String>,
}

impl TextFilter {
    /// The request's filter words (after since/until): tags, -i, then grep
    /// or regex, which take the rest of the line.
    fn request_words(&self) -> String {
        let mut words = String::new();
        if let Some(from) = &self.from {
            words.push_str(&format!(" from {from}"));
        }
        for tag in &self.tag {
            words.push_str(&format!(" tag {tag}"));
        }
        if self.ignore_case {
            words.push_str(" -i");
        }
        if !self.grep.is_empty() {
            words.push_str(&format!(" grep {}", self.grep.join("\t")));
        } else if let Some(regex) = &self.regex {
            words.push_str(&format!(" regex {regex}"));
        }
        words
    }

    /// The same test, here, for what a follow receives: the server's own
    /// matcher, with the pattern compiled by the server's rules.
    fn matcher(&self) -> Result<diary::wire::matching::TextMatch, String> {
        let regex = match &self.regex {
            Some(r) => Some(diary::wire::matching::compile_regex(r, self.ignore_case)?),
            None => None,
        };
        Ok(diary::wire::matching::TextMatch::new(
            self.grep.iter().map(String::as_str),
            self.ignore_case,
            self.tag.iter().map(String::as_str),
            regex,
            self.from.as_deref(),
        ))
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Make this device's key pair; prints its public key (one line) for
    /// the server's allow file.
    /// Where: --key, or DIARY_KEY, or $XDG_CONFIG_HOME/diary/key.
    Keygen {
        /// Replace an existing key (servers that allow the old one will
        /// refuse this device until its line is changed).
        #[arg(long)]
        force: bool,
    },
    /// Store TEXT as one entry; with no TEXT, store each line of stdin
    /// (`diary write < old-diary.txt` imports a file: one entry per line,
    /// over TCP, many in flight; run again, it stores nothing twice).
    Write {
        /// The entry, exactly as given; several words are joined with spaces.
        text: Vec<String>,
        /// Send with this request tag, as a failed `diary write` printed
        /// it: if the entry was stored, it is not stored again.
        #[arg(long, value_parser = parse_tag)]
        tag: Option<String>,
        /// Write the entry in $EDITOR: the whole buffer, paragraphs and
        /// all, becomes one entry.
        #[arg(long, conflicts_with = "text")]
        edit: bool,
    },
    /// Print past entries, oldest first.
    Past {
        /// Only the newest N.
        #[arg(short = 'n', long = "last")]
        last: Option<u64>,
        #[command(flatten)]
        span: Span,
        #[command(flatten)]
        filter: TextFilter,
        /// JSON Lines: {"id":…,"time":…,"text":…} per entry.
        #[arg(long)]
        json: bool,
        /// Every version: entries as first written, then each amendment
        /// and deletion as it was made.
        #[arg(long)]
        versions: bool,
    },
    /// The #tags in your diary, with how many entries hold each.
    Tags,
    /// Correct entry ID: its new text is appended to the file (the old
    /// stays there too); past shows the new text, marked (edited).
    Amend {
        id: u64,
        /// The new text; several words are joined with spaces.
        text: Vec<String>,
        /// Edit the current text in $EDITOR (VISUAL, EDITOR, else vi).
        #[arg(long, conflicts_with = "text")]
        edit: bool,
    },
    /// Hide entry ID from past and follow (it stays in the file, with a
    /// line saying it was deleted; past --versions shows it).
    Delete { id: u64 },
    /// Write entries out: JSON Lines (for `diary import`, or any tool),
    /// Markdown (a page per diary, a heading per day), or text.
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        #[command(flatten)]
        span: Span,
        #[command(flatten)]
        filter: TextFilter,
    },
    /// Store the entries of FILE (`-`: stdin). An export's JSON Lines keep
    /// their times and authors (new ids; marked imported); any other file
    /// is one entry per line. Run again, it stores nothing twice.
    Import { file: PathBuf },
    /// Print new entries as they are written, like `tail -f` (always over
    /// TCP); reconnects by itself and resumes where it left off.
    Follow {
        /// Start with the entries after this id, or from this date or time
        /// (the forms of past --since).
        #[arg(long, value_parser = parse_since)]
        since: Option<Point>,
        #[command(flatten)]
        filter: TextFilter,
        /// Show the newest N entries first, as tail does (without --since).
        #[arg(short = 'n', long = "last", default_value_t = 10)]
        last: u64,
        /// JSON Lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a one-time URL that logs a browser in to the diary's web
    /// page (diaryd --web); run it on the server's machine. The browser
    /// session is a device called NAME (default web-XXXX).
    WebLogin {
        /// What to call this browser (in /stats, the log, and `by=`).
        name: Option<String>,
    },
    /// Log out the browser sessions called NAME (`all`: every one).
    WebLogout { name: String },
    /// List the browsers logged in to the web page, with when.
    WebSessions,
    /// Show each setting (server, proto, timeout, name, key, timezone) and
    /// where it came from: a flag, the environment, the config file
    /// ($XDG_CONFIG_HOME/diary/config.toml, or DIARY_CONFIG), or the default.
    Config,
    /// Print a shell's completion script for diary: `diary completions bash
    /// > /etc/bash_completion.d/diary` (or zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Write the manual pages into DIR (contrib/dist.sh runs it).
    #[command(hide = true)]
    GenerateMan { dir: PathBuf },
}

fn main() -> ExitCode {
    let matches = Args::command().get_matches();
    let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let settings = match settings::apply(&matches, &mut args) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("diary: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(code) = local_command(&args, &settings) {
        return code;
    }
    let mut client = match Client::new(options(&args)) {
        Ok(client) => client,
        Err(e) => return fail(&e),
    };
    let display = Display::new(if args.utc { Zone::Utc } else { Zone::Local });
    match run(&mut client, args.command, display) {
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

/// The commands that need no server: config, keygen, completions, pages.
fn local_command(args: &Args, settings: &settings::Report) -> Option<ExitCode> {
    match &args.command {
        Some(Cmd::Config) => {
            print!("{}", settings.describe());
            Some(ExitCode::SUCCESS)
        }
        Some(Cmd::Keygen { force }) => Some(keygen(args.key.clone(), *force)),
        Some(Cmd::Completions { shell }) => {
            docs::completions(*shell);
            Some(ExitCode::SUCCESS)
        }
        Some(Cmd::GenerateMan { dir }) => Some(match docs::man_pages(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "diary: cannot write the manual pages in {}: {e}",
                    dir.display()
                );
                ExitCode::from(EXIT_LOCAL_IO)
            }
        }),
        _ => None,
    }
}

/// What the client is told by the command line, environment and config file.
fn options(args: &Args) -> Options {
    let mut security = Security::default();
    if let Some(key) = &args.key {
        security.key = key.clone();
    }
    security.server_key = args.server_key;
    if args.plain {
        security.mode = SecureMode::Plain;
    }
    // Web logins are given only over TCP (from the server's machine).
    let web = matches!(
        args.command,
        Some(Cmd::WebLogin { .. } | Cmd::WebLogout { .. } | Cmd::WebSessions)
    );
    Options {
        server: args.server.clone(),
        proto: if web { Proto::Tcp } else { args.proto },
        timeout: Duration::from_secs_f64(args.timeout.max(0.05)),
        retries: args.retries,
        security,
        name: args.name.clone().or_else(diary::client::default_name),
        ..Options::default()
    }
}

/// Runs a command that talks to the server (none: the interactive session).
fn run(client: &mut Client, command: Option<Cmd>, display: Display) -> Outcome {
    match command {
        Some(
            Cmd::Keygen { .. } | Cmd::Completions { .. } | Cmd::GenerateMan { .. } | Cmd::Config,
        ) => {
            unreachable!("handled before connecting")
        }
        None => crate::interactive::run(client, display).map(|()| ExitCode::SUCCESS),
        Some(Cmd::Write {
            edit: true, tag, ..
        }) => write_edited(client, tag),
        Some(Cmd::Write { text, tag, .. }) if text.is_empty() => {
            if tag.is_some() {
                eprintln!("diary: --tag is for one entry; an import makes a tag for each line");
                return Ok(ExitCode::from(2));
            }
            import(client)
        }
        Some(Cmd::Write { text, tag, .. }) => write_one(client, &text.join(" "), tag),
        Some(Cmd::Past {
            last,
            span,
            filter,
            json,
            versions,
        }) => {
            let selection = Selection {
                last,
                span,
                filter,
                versions,
            };
            past(client, &selection, display, json)
        }
        Some(Cmd::Amend { id, text, edit }) => amend(client, id, &text.join(" "), edit),
        Some(Cmd::Delete { id }) => change(client, &format!("/delete {id}"), "deleted", id),
        Some(Cmd::Tags) => tags(client),
        Some(Cmd::Export {
            format,
            span,
            filter,
        }) => {
            let selection = Selection {
                last: None,
                span,
                filter,
                versions: false,
            };
            export(client, &selection, format, display)
        }
        Some(Cmd::Import { file }) => import_file(client, &file),
        Some(Cmd::Follow {
            since,
            filter,
            last,
            json,
        }) => follow(client, (since, last), &filter, display, json),
        Some(Cmd::WebLogin { name }) => {
            let command = match name {
                Some(name) => format!("/web-login {name}"),
                None => "/web-login".to_string(),
            };
            web_command(client, &command)
        }
        Some(Cmd::WebLogout { name }) => web_command(client, &format!("/web-logout {name}")),
        Some(Cmd::WebSessions) => web_command(client, "/web-sessions"),
    }
}

type Outcome = Result<ExitCode, Box<dyn std::error::Error>>;

fn fail(e: &ClientError) -> ExitCode {
    if let ClientError::Output(e) = e {
        // The reader of our output has all it wanted (`| head`).
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return ExitCode::SUCCESS;
        }
        eprintln!("diary: {e}");
        return ExitCode::from(EXIT_LOCAL_IO);
    }
    eprintln!("diary: {}", display::printable(&e.to_string()));
    ExitCode::from(match e {
        ClientError::BadReply(_)
        | ClientError::NotDiary { .. }
        | ClientError::ServerKeyChanged(_) => EXIT_BAD_REPLY,
        ClientError::Auth(_) => EXIT_REFUSED,
        ClientError::Key(_) => EXIT_USAGE,
        _ => EXIT_NO_SERVER,
    })
}

/// `diary keygen`: the public key alone on stdout, for scripts; the rest
/// on stderr.
fn keygen(path: Option<PathBuf>, force: bool) -> ExitCode {
    let path = path.unwrap_or_else(diary::secure::keys::default_device_key);
    match diary::secure::keys::create_key_file(&path, force) {
        Ok(pair) => {
            println!("{}", pair.public);
            let name = diary::client::hostname().unwrap_or_else(|| "my-device".into());
            eprintln!(
                "diary: key written to {} (keep it private)\n\
                 diary: on the server, add this line to the allow file, then send diaryd SIGHUP:\n  \
                 {} {name} all",
                path.display(),
                pair.public
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("diary: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn parse_key(text: &str) -> Result<PublicKey, String> {
    text.parse()
}

fn parse_tag(tag: &str) -> Result<String, String> {
    let ok = (1..=diary::protocol::MAX_TAG_LEN).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(tag.to_string())
    } else {
        Err("a tag is 1 to 32 letters, digits, '-' or '_'".into())
    }
}

fn parse_since(text: &str) -> Result<Point, String> {
    diary::client::dates::parse_point(text, chrono::Local::now())
}

fn parse_until(text: &str) -> Result<Point, String> {
    diary::client::dates::parse_until(text, chrono::Local::now())
}

/// Words to look for: any text on one line.
fn parse_name(text: &str) -> Result<String, String> {
    if diary::wire::entry::is_author_name(text) {
        Ok(text.to_string())
    } else {
        Err("a name is 1 to 64 bytes without spaces or backslashes, as in ann@laptop".into())
    }
}

fn parse_tag_word(text: &str) -> Result<String, String> {
    let word = text.strip_prefix('#').unwrap_or(text);
    if diary::wire::matching::is_tag_word(word) {
        Ok(word.to_string())
    } else {
        Err("a tag is letters (any script), digits, _ and -, as in #health or #日记".into())
    }
}

fn parse_words(words: &str) -> Result<String, String> {
    if words.is_empty() {
        return Err("give some words to look for".into());
    }
    if words.chars().any(char::is_control) {
        return Err("the words cannot hold a line break or other control character".into());
    }
    Ok(words.to_string())
}

/// `diary write --edit`: one entry from the editor's buffer. Several lines
/// go in one datagram (a TCP request is one line).
fn write_edited(client: &mut Client, tag: Option<String>) -> Outcome {
    let Some(text) = crate::editor::edit("")? else {
        eprintln!("diary: nothing written (the buffer was empty)");
        return Ok(ExitCode::SUCCESS);
    };
    if text.contains('\n') && client.options().proto == Proto::Tcp {
        let mut options = client.options().clone();
        options.proto = Proto::Udp;
        let mut udp = Client::new(options)?;
        return write_one(&mut udp, &text, tag);
    }
    write_one(client, &text, tag)
}

fn write_one(client: &mut Client, text: &str, tag: Option<String>) -> Outcome {
    let tag = tag.unwrap_or_else(|| client.new_tag());
    match client.write_tagged(&tag, text) {
        Ok(Reply::Stored { id, time }) => {
            println!("stored #{id} at {time}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(other) => refused(other),
        Err(e @ (ClientError::NoAnswer { .. } | ClientError::Io(..))) => {
            eprintln!("diary: {e}");
            eprintln!(
                "diary: the entry may or may not have been stored. To be sure it is stored \
                 once, send it again with its tag: diary write --tag {tag} {}",
                shell_words(text)
            );
            Ok(ExitCode::from(EXIT_NO_SERVER))
        }
        Err(e) => Err(Box::new(e)),
    }
}

/// `text` as one shell word.
fn shell_words(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn refused(reply: Reply) -> Outcome {
    match reply {
        Reply::Refused { code, message } => {
            eprintln!(
                "diary: the server refused ({}): {}",
                display::printable(&code),
                display::printable(&message)
            );
            Ok(ExitCode::from(EXIT_REFUSED))
        }
        other => Err(Box::new(ClientError::BadReply(format!("{other:?}")))),
    }
}

/// Lines in flight during an import.
const IMPORT_WINDOW: usize = 1024;

/// An import of more lines than this is also checked against the whole
/// diary for an earlier run of it ([`stored_earlier`]); a smaller one
/// relies on the server's retry memory (the newest 100 000 tagged writes
/// by default), which a rerun of a larger one can outgrow.
const IMPORT_CHECK_LINES: usize = 1000;

/// One entry per stdin line; empty lines are skipped, bad ones reported.
///
/// Each line's tag is made from the input (a hash of its first 64 KiB) and
/// the line's number and text, so running the same import again, after an
/// interruption or not, stores each line once. It always goes over TCP,
/// many lines in flight.
fn import(client: &mut Client) -> Outcome {
    let mut input = Vec::new();
    std::io::stdin().lock().read_to_end(&mut input)?;
    import_input(client, &input, "stdin", false)
}

/// `diary import FILE`: JSON Lines from `diary export --format jsonl` (or
/// any with `time` and `text`, `author` optional) keep their times and
/// authors; other files are read as one entry per line, as `diary write <
/// FILE` reads them.
fn import_file(client: &mut Client, path: &std::path::Path) -> Outcome {
    let input = if path.as_os_str() == "-" {
        let mut input = Vec::new();
        std::io::stdin().lock().read_to_end(&mut input)?;
        input
    } else {
        std::fs::read(path)?
    };
    import_input(client, &input, &path.display().to_string(), true)
}

/// The lines of an import as tagged requests, then sent. With `jsonl`
/// allowed, input whose first line is a JSON object is read as an export.
fn import_input(client: &mut Client, input: &[u8], name: &str, jsonl: bool) -> Outcome {
    let head = blake3::hash(&input[..input.len().min(64 * 1024)]);
    let is_jsonl = jsonl
        && input
            .split(|&b| b == b'\n')
            .find(|l| !l.trim_ascii().is_empty())
            .is_some_and(|l| l.trim_ascii_start().starts_with(b"{"));
    let mut entries = Vec::new();
    let mut numbers = Vec::new();
    let mut failed = 0u64;
    for (i, raw) in input.split(|&b| b == b'\n').enumerate() {
        let number = i + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        // (A line of spaces is an entry, as `write < FILE` has always taken it.)
        if line.is_empty() || (is_jsonl && line.trim_ascii().is_empty()) {
            continue;
        }
        let command = if is_jsonl {
            match import_command(line) {
                Ok(command) => command,
                Err(why) => {
                    eprintln!("diary: {name} line {number}: {why}; skipped");
                    failed += 1;
                    continue;
                }
            }
        } else {
            match std::str::from_utf8(line) {
                Ok(text) => format!("/write {text}"),
                Err(_) => {
                    eprintln!("diary: {name} line {number}: not UTF-8, skipped");
                    failed += 1;
                    continue;
                }
            }
        };
        // From the input: running the same import again stores nothing twice.
        let mut hasher = blake3::Hasher::new();
        hasher.update(head.as_bytes());
        hasher.update(&(number as u64).to_le_bytes());
        hasher.update(line);
        entries.push((format!("i{}", &hasher.finalize().to_hex()[..24]), command));
        numbers.push(number);
    }
    // Ids up to this one were there before: a line answered with one of
    // them was stored by an earlier run (the retry memory knew its tag).
    let before = newest_id(client)?;
    let mut earlier = 0;
    if entries.len() > IMPORT_CHECK_LINES {
        let stored = stored_earlier(client, &entries)?;
        if !stored.is_empty() {
            earlier = stored.len();
            (entries, numbers) = entries
                .into_iter()
                .zip(numbers)
                .enumerate()
                .filter(|(i, _)| !stored.contains(i))
                .map(|(_, pair)| pair)
                .unzip();
        }
    }
    send_import(
        client,
        (&entries, &numbers),
        (before, earlier),
        failed,
        name,
    )
}

/// The newest entry's id (`entries` in `/stats`: ids run from 1); 0 when
/// the server will not say (a device allowed only to write), so that
/// every answered line counts as stored now, as it always did.
fn newest_id(client: &mut Client) -> Result<u64, ClientError> {
    Ok(match client.request("/stats")? {
        Reply::Lines(lines) => lines
            .iter()
            .find_map(|l| l.strip_prefix("entries ")?.parse().ok())
            .unwrap_or(0),
        _ => 0,
    })
}

/// The entries (by index) that an earlier run of this same import stored.
/// The first entry holding the tag of one of its first lines (found by
/// searching the diary for the line's words) marks where that run began;
/// every tag of this import found from there on was stored by it. Lines
/// stored and then deleted count as stored: a rerun does not bring them
/// back.
fn stored_earlier(
    client: &mut Client,
    entries: &[(String, String)],
) -> Result<std::collections::HashSet<usize>, ClientError> {
    let mut began: Option<u64> = None;
    for (tag, command) in entries.iter().take(3) {
        let Some(words) = search_words(command) else {
            continue;
        };
        let reply =
            client.request_each_line(&format!("/past versions grep {words}"), &mut |line| {
                if let Some((id, Some(req))) = id_and_attr(line, "req")
                    && req == tag.as_str()
                {
                    began = Some(began.map_or(id, |b| b.min(id)));
                }
                Ok(())
            })?;
        if !matches!(reply, Reply::Lines(_)) {
            // (A server that cannot search: its retry memory is all there is.)
            return Ok(Default::default());
        }
        if began.is_some() {
            break;
        }
    }
    let mut stored = std::collections::HashSet::new();
    let Some(began) = began else {
        return Ok(stored);
    };
    let index: std::collections::HashMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, (tag, _))| (tag.as_str(), i))
        .collect();
    let reply = client.request_each_line(
        &format!("/past since {} versions", began - 1),
        &mut |line| {
            if let Some((_, Some(req))) = id_and_attr(line, "req")
                && let Some(&i) = index.get(req)
            {
                stored.insert(i);
            }
            Ok(())
        },
    )?;
    if !matches!(reply, Reply::Lines(_)) {
        return Ok(Default::default());
    }
    Ok(stored)
}

/// Words that find the entry an import command stores: the longest run of
/// its text without a tab or line break, trimmed, at most 64 bytes.
fn search_words(command: &str) -> Option<String> {
    // Read back with the server's own parser: `/import` text comes escaped.
    let request = diary::protocol::parse(command.as_bytes(), usize::MAX);
    let text = match request.command.ok()? {
        diary::protocol::Command::Write(text) => std::borrow::Cow::Borrowed(text),
        diary::protocol::Command::Import { text, .. } => text,
        _ => return None,
    };
    let longest = text
        .split(['\t', '\n', '\r'])
        .map(|run| run.trim_matches(' '))
        .max_by_key(|run| run.len())?;
    let mut end = longest.len().min(64);
    while !longest.is_char_boundary(end) {
        end -= 1;
    }
    let words = longest[..end].trim_end_matches(' ');
    (!words.is_empty()).then(|| words.to_string())
}

/// One JSON line of an export as an `/import` request.
fn import_command(line: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Exported {
        time: String,
        text: String,
        author: Option<String>,
    }
    let e: Exported = serde_json::from_slice(line).map_err(|e| format!("not an entry: {e}"))?;
    if diary::wire::entry::parse_timestamp(&e.time).is_none() {
        return Err(format!("{:?} is not an RFC 3339 time", e.time));
    }
    let author = match e.author {
        Some(a) if diary::wire::entry::is_author_name(&a) => a,
        Some(a) => return Err(format!("{a:?} is not an author's name")),
        None => "-".into(),
    };
    if e.text.is_empty() {
        return Err("an empty text".into());
    }
    // Escaped as the file escapes it: a multi-line entry is one line.
    let mut text = Vec::new();
    diary::wire::entry::escape_into(&e.text, &mut text);
    let text = String::from_utf8(text).expect("escaping keeps UTF-8");
    Ok(format!("/import {} {author} {text}", e.time))
}

/// Sends an import's requests pipelined, reporting each refusal by its
/// line of `source`.
///
/// Ids up to `before` existed when it began, and `earlier` lines were
/// found stored by an earlier run and not sent: both are reported as
/// stored earlier, not as stored now.
fn send_import(
    client: &Client,
    (entries, numbers): (&[(String, String)], &[usize]),
    (before, mut earlier): (u64, usize),
    mut failed: u64,
    source: &str,
) -> Outcome {
    let (mut stored, mut first, mut last) = (0u64, None, 0);
    let result =
        diary::client::write_pipelined(client.options(), entries, IMPORT_WINDOW, |i, reply| {
            match reply {
                Reply::Stored { id, .. } if id <= before => earlier += 1,
                Reply::Stored { id, .. } => {
                    stored += 1;
                    first.get_or_insert(id);
                    last = id;
                }
                Reply::Refused { code, message } => {
                    eprintln!(
                        "diary: {source} line {}: refused ({code}): {message}",
                        numbers[i]
                    );
                    failed += 1;
                }
                other => {
                    eprintln!(
                        "diary: {source} line {}: unexpected reply {other:?}",
                        numbers[i]
                    );
                    failed += 1;
                }
            }
        });
    match first {
        Some(first) => println!("stored {stored} entries (#{first} to #{last})"),
        None => println!("stored 0 entries"),
    }
    match earlier {
        0 => {}
        1 => println!("1 line was stored by an earlier run of this import; not stored again"),
        n => println!("{n} lines were stored by an earlier run of this import; not stored again"),
    }
    if let Err((done, e)) = result {
        let line = numbers.get(done).copied().unwrap_or(0);
        eprintln!("diary: {e}");
        eprintln!(
            "diary: stopped at {source} line {line}: the {done} lines before it were answered. \
             Run the same import again to store the rest: lines already stored are \
             recognised by their tags and not stored twice."
        );
        return Err(Box::new(e));
    }
    if failed > 0 {
        eprintln!("diary: {failed} lines were not stored");
        return Ok(ExitCode::from(EXIT_REFUSED));
    }
    Ok(ExitCode::SUCCESS)
}

/// Which entries `past` asks for.
struct Selection {
    last: Option<u64>,
    span: Span,
    filter: TextFilter,
    versions: bool,
}

impl Selection {
    /// The request: canonical values only, so nothing a person typed
    /// becomes request syntax (grep's words come last, and the server
    /// takes the rest of the line).
    fn request(&self) -> String {
        let mut request = String::from("/past");
        if let Some(n) = self.last {
            request.push_str(&format!(" {n}"));
        }
        if let Some(since) = self.span.since {
            request.push_str(&format!(" since {}", since.canonical()));
        }
        if let Some(until) = self.span.until {
            request.push_str(&format!(" until {}", until.canonical()));
        }
        if self.versions {
            request.push_str(" versions");
        }
        request.push_str(&self.filter.request_words());
        request
    }
}

/// Prints the entry lines of a reply (notes go to stderr); the newest id.
fn print_entries(lines: &[String], display: &mut Display, json: bool) -> std::io::Result<u64> {
    let stdout = std::io::stdout();
    let mut printer = Printer::new(display, json, std::io::BufWriter::new(stdout.lock()));
    for line in lines {
        printer.line(line)?;
    }
    printer.finish()
}

/// Prints the entry lines of a reply as they come. The first lines wait,
/// so that a reply of up to `HELD` lines is printed with its ids aligned
/// to the widest; a longer one is printed as it streams in, its id column
/// widening when an id needs it.
struct Printer<'d, W: Write> {
    display: &'d mut Display,
    json: bool,
    out: W,
    held: Vec<String>,
    streaming: bool,
    /// The newest id among the lines released so far.
    newest: u64,
    /// The last line printed as it streamed in (ids ascend: the newest).
    last: String,
}

impl<'d, W: Write> Printer<'d, W> {
    const HELD: usize = 4096;

    fn new(display: &'d mut Display, json: bool, out: W) -> Self {
        Printer {
            display,
            json,
            out,
            held: Vec::new(),
            streaming: false,
            newest: 0,
            last: String::new(),
        }
    }

    fn line(&mut self, line: &str) -> std::io::Result<()> {
        if self.streaming {
            self.print(line)?;
            self.last.clear();
            self.last.push_str(line);
            return Ok(());
        }
        self.held.push(line.to_string());
        if self.held.len() >= Self::HELD {
            self.release()?;
            self.streaming = true;
        }
        Ok(())
    }

    fn release(&mut self) -> std::io::Result<()> {
        let held = std::mem::take(&mut self.held);
        if let Some(newest) = crate::display::newest_id(held.iter()) {
            self.newest = newest;
            self.display.fit_ids(newest);
        }
        held.iter().try_for_each(|line| self.print(line))
    }

    fn print(&mut self, line: &str) -> std::io::Result<()> {
        let shown = if self.json {
            match parse_entry(line) {
                Some(entry) => {
                    writeln!(self.out, "{}", serde_json::to_string(&entry)?)?;
                    true
                }
                None => false,
            }
        } else {
            self.display.write_entry_line(&mut self.out, line)?
        };
        if !shown {
            eprintln!("{}", display::printable(line));
        }
        Ok(())
    }

    /// Prints what is held; the newest id printed (0 if none).
    fn finish(mut self) -> std::io::Result<u64> {
        self.release()?;
        self.out.flush()?;
        let last = crate::display::newest_id(std::iter::once(&self.last)).unwrap_or(0);
        Ok(self.newest.max(last))
    }
}

fn past(client: &mut Client, selection: &Selection, mut display: Display, json: bool) -> Outcome {
    let stdout = std::io::stdout();
    let out = std::io::BufWriter::new(stdout.lock());
    let mut printer = Printer::new(&mut display, json, out);
    match client.request_each_line(&selection.request(), &mut |line| printer.line(line))? {
        Reply::Lines(_) => {
            printer.finish()?;
            Ok(ExitCode::SUCCESS)
        }
        other => refused(other),
    }
}

/// `diary amend`: the new text from the command line, or from $EDITOR.
fn amend(client: &mut Client, id: u64, text: &str, edit: bool) -> Outcome {
    let text = if edit {
        let current =
            match client.request(&format!("/past since {} until {id}", id.saturating_sub(1)))? {
                Reply::Lines(lines) => lines.iter().find_map(|l| parse_entry(l)).map(|e| e.text),
                other => return refused(other),
            };
        let Some(current) = current else {
            eprintln!("diary: there is no entry #{id} to amend");
            return Ok(ExitCode::from(EXIT_REFUSED));
        };
        match crate::editor::edit(&current)? {
            Some(text) if text != current => text,
            _ => {
                eprintln!("diary: #{id} unchanged");
                return Ok(ExitCode::SUCCESS);
            }
        }
    } else if text.is_empty() {
        eprintln!("diary: give the new text, or --edit");
        return Ok(ExitCode::from(EXIT_USAGE));
    } else {
        text.to_string()
    };
    if text.contains('\n') && client.options().proto == Proto::Tcp {
        eprintln!("diary: a text of several lines goes over UDP (--proto udp)");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    change(client, &format!("/amend {id} {text}"), "amended", id)
}

/// Sends an amendment or a deletion, tagged like a write.
fn change(client: &mut Client, request: &str, done: &str, id: u64) -> Outcome {
    let tag = client.new_tag();
    match client.request_tagged(&tag, request)? {
        Reply::Stored { id: line, .. } => {
            println!("{done} #{id} (line #{line} of the diary says so)");
            Ok(ExitCode::SUCCESS)
        }
        other => refused(other),
    }
}

/// `diary export`: the selected entries as JSON Lines, Markdown or text.
fn export(
    client: &mut Client,
    selection: &Selection,
    format: ExportFormat,
    mut display: Display,
) -> Outcome {
    match format {
        ExportFormat::Jsonl => return export_jsonl(client, selection),
        // Text is what `diary past` prints.
        ExportFormat::Txt => return past(client, selection, display, false),
        ExportFormat::Md => {}
    }
    // Markdown is written as the entries stream in.
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut day = String::new();
    let mut begun = false;
    let reply = client.request_each_line(&selection.request(), &mut |line| {
        if !begun {
            writeln!(out, "# Diary")?;
            begun = true;
        }
        let Some(entry) = parse_entry(line) else {
            return Ok(());
        };
        let shown = display.time(&entry.time);
        let (date, clock) = shown.split_once(' ').unwrap_or((&shown, ""));
        if date != day {
            day = date.to_string();
            writeln!(out, "\n## {day}\n")?;
        }
        let by = display::byline(&entry)
            .map(|by| format!(" ({by})"))
            .unwrap_or_default();
        // Continuation lines indented, so they stay in the item.
        let text = display::printable(&entry.text).replace('\n', "\n  ");
        writeln!(out, "- **{clock}**{by} {text}")
    })?;
    match reply {
        Reply::Lines(_) => {
            if !begun {
                writeln!(out, "# Diary")?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        other => refused(other),
    }
}

/// One entry of a JSON Lines export: as it is now, and for an amended
/// one every version, first text first.
#[derive(serde::Serialize)]
struct Exported<'a> {
    id: u64,
    time: &'a str,
    author: Option<&'a str>,
    /// Who imported it into this diary, when it was (`-`: not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    imported_by: Option<&'a str>,
    text: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    versions: Vec<Version<'a>>,
}

#[derive(serde::Serialize)]
struct Version<'a> {
    time: &'a str,
    author: Option<&'a str>,
    text: &'a str,
}

/// JSON Lines, written as the entries stream in until the first amended
/// one: its versions can be asked for only once the selection is in, so
/// the lines from there on wait in a temporary file, not in memory (held
/// in memory, an export of a million entries took 355 MB).
fn export_jsonl(client: &mut Client, selection: &Selection) -> Outcome {
    use std::io::{BufRead, Seek};
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut amended = std::collections::HashSet::new();
    let mut waiting: Option<std::io::BufWriter<std::fs::File>> = None;
    let reply = client.request_each_line(&selection.request(), &mut |line| {
        // Each line is decoded once: in full until it waits, then only
        // for its id and whether it was amended.
        if let Some(file) = &mut waiting {
            if let Some((id, Some(_))) = id_and_number_attr(line, "edited") {
                amended.insert(id);
            }
            return writeln!(file, "{line}");
        }
        let Some(entry) = parse_entry(line) else {
            return Ok(());
        };
        if entry.edited.is_none() {
            return write_exported(&mut out, &entry, None);
        }
        amended.insert(entry.id);
        let file = waiting.insert(std::io::BufWriter::new(tempfile::tempfile()?));
        writeln!(file, "{line}")
    })?;
    if !matches!(reply, Reply::Lines(_)) {
        return refused(reply);
    }
    let Some(waiting) = waiting else {
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    };
    // The versions of the amended entries: every line from the first on.
    let first = amended.iter().copied().min().unwrap_or(1);
    let mut history: std::collections::HashMap<u64, Vec<diary::client::Entry>> =
        std::collections::HashMap::new();
    let reply = client.request_each_line(
        &format!("/past since {} versions", first - 1),
        &mut |line| {
            // Most lines are not versions of these: only those are decoded in full.
            let Some((id, amends)) = id_and_number_attr(line, diary::wire::entry::AMENDS) else {
                return Ok(());
            };
            let target = amends.unwrap_or(id);
            if amended.contains(&target)
                && let Some(version) = parse_entry(line)
            {
                history.entry(target).or_default().push(version);
            }
            Ok(())
        },
    )?;
    if !matches!(reply, Reply::Lines(_)) {
        return refused(reply);
    }
    let mut file = waiting.into_inner().map_err(|e| e.into_error())?;
    file.rewind()?;
    for line in std::io::BufReader::new(file).lines() {
        if let Some(entry) = parse_entry(&line?) {
            let versions = entry.edited.and(history.get(&entry.id));
            write_exported(&mut out, &entry, versions.map(Vec::as_slice))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// An entry line's id and its attribute `key` (still escaped), without
/// decoding its text; `None` for notes and other lines.
fn id_and_attr<'l>(line: &'l str, key: &str) -> Option<(u64, Option<&'l str>)> {
    let decoded = diary::wire::entry::decode_line(line.as_bytes()).ok()?;
    Some((decoded.id, decoded.attr(key)))
}

/// An entry line's id and the number in its attribute `key`.
fn id_and_number_attr(line: &str, key: &str) -> Option<(u64, Option<u64>)> {
    let (id, value) = id_and_attr(line, key)?;
    Some((id, value.and_then(|v| v.parse().ok())))
}

/// One JSON line for `entry`, with its `versions` when it was amended.
fn write_exported(
    out: &mut impl Write,
    entry: &diary::client::Entry,
    versions: Option<&[diary::client::Entry]>,
) -> std::io::Result<()> {
    let exported = Exported {
        id: entry.id,
        time: &entry.time,
        author: entry.author.as_deref(),
        imported_by: entry.imported_by.as_deref(),
        text: &entry.text,
        versions: versions
            .unwrap_or_default()
            .iter()
            .map(|v| Version {
                time: &v.time,
                author: v.author.as_deref(),
                text: &v.text,
            })
            .collect(),
    };
    serde_json::to_writer(&mut *out, &exported)?;
    out.write_all(b"\n")
}

/// `diary tags`: every #tag and its count, most used first.
/// `diary web-login`, `web-logout`, `web-sessions`: the server's lines, printed.
fn web_command(client: &mut Client, command: &str) -> Outcome {
    match client.request(command)? {
        Reply::Lines(lines) => {
            for line in lines {
                let line = line.strip_prefix("# ").unwrap_or(&line);
                println!("{}", display::printable(line));
            }
            Ok(ExitCode::SUCCESS)
        }
        other => refused(other),
    }
}

fn tags(client: &mut Client) -> Outcome {
    // Counted as the entries stream in: only the counts are kept.
    let mut counts: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let reply = client.request_each_line("/past grep #", &mut |line| {
        if let Some(entry) = parse_entry(line) {
            let mut seen: Vec<String> = diary::wire::matching::tags_in(&entry.text).collect();
            seen.sort();
            seen.dedup();
            for tag in seen {
                *counts.entry(tag).or_default() += 1;
            }
        }
        Ok(())
    })?;
    if !matches!(reply, Reply::Lines(_)) {
        return refused(reply);
    }
    let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (tag, count) in counts {
        writeln!(out, "{count:>6}  #{tag}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn follow(
    client: &mut Client,
    (since, last): (Option<Point>, u64),
    filter: &TextFilter,
    mut display: Display,
    json: bool,
) -> Outcome {
    // Context first, as tail shows it; then from the newest shown on.
    let context = Selection {
        last: Some(last),
        span: Span::default(),
        filter: filter.clone(),
        versions: false,
    };
    let since = match since {
        Some(since) => Some(since),
        None if last > 0 => match client.request(&context.request())? {
            Reply::Lines(lines) => Some(Point::AfterId(print_entries(&lines, &mut display, json)?)),
            // A device that may follow but not read: no context, only what comes.
            Reply::Refused { code, .. } if code == "forbidden" => None,
            other => return refused(other),
        },
        None => None,
    };
    // The context request has checked the pattern with the server.
    let matcher = filter.matcher()?;
    let stdout = std::io::stdout();
    let mut failed = None;
    diary::client::follow(
        client.options(),
        since,
        |entry| {
            if !matcher.matches(&entry.text, entry.author.as_deref()) {
                return true;
            }
            let mut out = stdout.lock();
            let written = if json {
                serde_json::to_string(entry)
                    .map_err(std::io::Error::other)
                    .and_then(|line| writeln!(out, "{line}"))
            } else {
                writeln!(out, "{}", display.entry(entry))
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
