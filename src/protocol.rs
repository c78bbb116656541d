//! The text protocol: bytes of one request → [`Request`], and every byte of
//! every reply: acks, errors (one table of codes, [`ErrorCode`]), notes, and
//! the fitting of a reply into one datagram.
//!
//! Pure functions, no I/O. Framing (TCP lines, UDP datagrams) is the
//! transports' job; they hand over one request without its line ending.
//! docs/PROTOCOL.md is the user-facing grammar; keep the two in step (a
//! test checks that it lists every error code).

use crate::wire::matching;
use std::fmt;

/// Where diaryd listens and the client looks, unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8888";
/// The UDP reply size both ends use unless told otherwise: what crosses
/// most paths unfragmented (DNS flag day 2020's EDNS buffer size).
pub(crate) const DEFAULT_UDP_REPLY: usize = 1232;

/// Longest request tag the official client may use.
pub const MAX_TAG_LEN: usize = 32;
/// Last line of every multi-line reply.
pub(crate) const END: &[u8] = b"end\n";
/// Reply to `e` / `/quit`.
pub(crate) const BYE: &[u8] = b"bye\n";

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Store this text as a new entry.
    Write(&'a str),
    /// Store an entry from elsewhere (an export, another diary) with its
    /// own time and author; it gets a new id and is marked imported.
    Import {
        time: &'a str,
        millis: i64,
        author: Option<&'a str>,
        /// Sent escaped as in the file (`\n`, `\t`, `\\`), so that a
        /// multi-line entry is one request line.
        text: std::borrow::Cow<'a, str>,
    },
    /// `p` or `/past …`.
    Past {
        query: PastQuery<'a>,
    },
    /// Replace entry `id`'s text (an amendment line is appended).
    Amend {
        id: u64,
        text: &'a str,
    },
    /// Hide entry `id` (a deletion line is appended).
    Delete {
        id: u64,
    },
    Help,
    Quit,
    /// Send entries after this id or from this time (after the newest
    /// when `None`), then every new one as it is committed; `diary` names
    /// the diary the client followed before, when it resumes.
    Follow {
        since: Option<Since>,
        diary: Option<&'a str>,
    },
    Stats,
    /// UDP: a cookie proving the source address, for replies over 3x the request.
    Cookie,
    /// The web page's logins: answered over TCP to a client on the
    /// server's machine only (the TCP side answers it, not the handler).
    Web(WebCommand<'a>),
}

/// `/web-login [NAME]`, `/web-logout NAME|all`, `/web-sessions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebCommand<'a> {
    /// A one-time login URL for a browser session called NAME.
    Login(Option<&'a str>),
    /// Log out the browser sessions called NAME (`all`: every one).
    Logout(&'a str),
    /// The logged-in browsers.
    Sessions,
}

/// Which entries `/past` selects: those after `since` and up to `until`,
/// with every tag in `tags`, containing every `grep` term or matching
/// `regex`, the newest `last` of them; always sent oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PastQuery<'a> {
    pub(crate) last: Option<u64>,
    pub(crate) since: Option<Since>,
    /// Up to this id (included), or before this time (excluded).
    pub(crate) until: Option<Since>,
    /// Terms separated by tabs, each of which the text must contain.
    pub(crate) grep: Option<&'a str>,
    /// A regular expression (the `regex` crate's syntax) the text must match.
    pub(crate) regex: Option<&'a str>,
    /// `#tags` the text must hold (any case).
    pub(crate) tags: Vec<&'a str>,
    /// grep and regex ignore case.
    pub(crate) ignore_case: bool,
    /// Written by this author.
    pub(crate) from: Option<&'a str>,
    /// Every version: amendment and deletion lines as they are, entries
    /// with their first text.
    pub(crate) versions: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// Entries with a greater id.
    Id(u64),
    /// Entries written at or after this time (Unix milliseconds).
    Time(i64),
}

/// The official client's wrapper around a request: `/id TAG [max=N] [cookie=C] [by=NAME] REQUEST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    pub(crate) tag: &'a str,
    /// Largest UDP reply the client can take.
    pub(crate) max_reply: Option<usize>,
    pub(crate) cookie: Option<&'a str>,
    /// Who writes (`by=NAME`), recorded with a write from a client that has
    /// no device key; an encrypted session's device name overrides it.
    pub(crate) by: Option<&'a str>,
}

/// A parsed request. The envelope is read even when the command is bad so
/// that the error reply still carries the tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub(crate) envelope: Option<Envelope<'a>>,
    pub command: Result<Command<'a>, RequestError>,
}

/// Why a request was refused; the reply is `err CODE MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    InvalidUtf8 { at: usize },
    ControlByte { byte: u8, at: usize },
    Empty,
    TooLong { len: usize, max: usize },
    UnknownCommand(String),
    BadArgument(String),
}

impl RequestError {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            RequestError::InvalidUtf8 { .. } => ErrorCode::BadUtf8,
            RequestError::ControlByte { .. } => ErrorCode::BadByte,
            RequestError::Empty => ErrorCode::Empty,
            RequestError::TooLong { .. } => ErrorCode::TooLong,
            RequestError::UnknownCommand(_) => ErrorCode::UnknownCommand,
            RequestError::BadArgument(_) => ErrorCode::BadArgument,
        }
    }
}

/// Every error code a reply can carry: `err CODE REASON`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    BadUtf8,
    BadByte,
    Empty,
    TooLong,
    UnknownCommand,
    BadArgument,
    TcpOnly,
    UdpOnly,
    Io,
    PastEnd,
    OtherDiary,
    Busy,
    Idle,
    Behind,
    Auth,
    Forbidden,
}

impl ErrorCode {
    #[cfg(test)]
    pub(crate) const ALL: [ErrorCode; 16] = [
        ErrorCode::BadUtf8,
        ErrorCode::BadByte,
        ErrorCode::Empty,
        ErrorCode::TooLong,
        ErrorCode::UnknownCommand,
        ErrorCode::BadArgument,
        ErrorCode::TcpOnly,
        ErrorCode::UdpOnly,
        ErrorCode::Io,
        ErrorCode::PastEnd,
        ErrorCode::OtherDiary,
        ErrorCode::Busy,
        ErrorCode::Idle,
        ErrorCode::Behind,
        ErrorCode::Auth,
        ErrorCode::Forbidden,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadUtf8 => "bad-utf8",
            ErrorCode::BadByte => "bad-byte",
            ErrorCode::Empty => "empty",
            ErrorCode::TooLong => "too-long",
            ErrorCode::UnknownCommand => "unknown-command",
            ErrorCode::BadArgument => "bad-argument",
            ErrorCode::TcpOnly => "tcp-only",
            ErrorCode::UdpOnly => "udp-only",
            ErrorCode::Io => "io",
            ErrorCode::PastEnd => "past-end",
            ErrorCode::OtherDiary => "other-diary",
            ErrorCode::Busy => "busy",
            ErrorCode::Idle => "idle",
            ErrorCode::Behind => "behind",
            ErrorCode::Auth => "auth",
            ErrorCode::Forbidden => "forbidden",
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::InvalidUtf8 { at } => {
                write!(f, "request is not valid UTF-8 (byte {at}); nothing stored")
            }
            RequestError::ControlByte { byte, at } => write!(
                f,
                "request has control byte 0x{byte:02x} at byte {at}; nothing stored"
            ),
            RequestError::Empty => write!(f, "empty entry; nothing stored"),
            RequestError::TooLong { len, max } => {
                write!(
                    f,
                    "entry is {len} bytes, over the limit of {max}; nothing stored"
                )
            }
            RequestError::UnknownCommand(name) => write!(
                f,
                "{name} is not a command; send h for help, or \"/write {name} ...\" to store such a line"
            ),
            RequestError::BadArgument(why) => write!(f, "{why}"),
        }
    }
}

/// Parses one request (without its line ending). `max_entry` bounds the text of a write.
pub fn parse(raw: &[u8], max_entry: usize) -> Request<'_> {
    let (envelope, body) = match split_envelope(raw) {
        Ok(parts) => parts,
        Err(e) => {
            return Request {
                envelope: None,
                command: Err(e),
            };
        }
    };
    Request {
        envelope,
        command: parse_command(body, max_entry),
    }
}

fn split_envelope(raw: &[u8]) -> Result<(Option<Envelope<'_>>, &[u8]), RequestError> {
    let Some(rest) = raw.strip_prefix(b"/id ") else {
        return Ok((None, raw));
    };
    let bad = |why: &str| RequestError::BadArgument(format!("bad /id envelope: {why}"));
    let mut words = rest.splitn(2, |&b| b == b' ');
    let tag = words.next().unwrap_or_default();
    if tag.is_empty()
        || tag.len() > MAX_TAG_LEN
        || !tag
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    {
        return Err(bad("the tag must be 1 to 32 letters, digits, '-' or '_'"));
    }
    let tag = std::str::from_utf8(tag).expect("checked ASCII");
    let mut envelope = Envelope {
        tag,
        max_reply: None,
        cookie: None,
        by: None,
    };
    let mut body = words.next().unwrap_or_default();
    loop {
        let (word, after) = match body.iter().position(|&b| b == b' ') {
            Some(i) => (&body[..i], &body[i + 1..]),
            None => (body, &b""[..]),
        };
        if let Some(n) = word.strip_prefix(b"max=") {
            let n = std::str::from_utf8(n).ok().and_then(|n| n.parse().ok());
            envelope.max_reply = Some(n.ok_or_else(|| bad("max= takes a number of bytes"))?);
        } else if let Some(c) = word.strip_prefix(b"cookie=") {
            if !c.iter().all(u8::is_ascii_hexdigit) {
                return Err(bad("cookie= takes hex digits"));
            }
            envelope.cookie = Some(std::str::from_utf8(c).expect("checked hex"));
        } else if let Some(name) = word.strip_prefix(b"by=") {
            let name = std::str::from_utf8(name)
                .ok()
                .filter(|n| crate::wire::entry::is_author_name(n))
                .ok_or_else(|| {
                    bad("by= takes a name of 1 to 64 bytes without spaces or backslashes")
                })?;
            envelope.by = Some(name);
        } else {
            break;
        }
        body = after;
    }
    Ok((Some(envelope), body))
}

/// Whether a request reads the store. Those must see every write before
/// them, so a pending batch is committed first.
pub(crate) fn reads_store(request: &Request) -> bool {
    matches!(
        request.command,
        Ok(Command::Past { .. } | Command::Stats | Command::Follow { .. })
    )
}

/// Checks that `raw` is text a diary can hold: UTF-8 without control bytes
/// other than tab and newline.
pub fn check_text(raw: &[u8]) -> Result<&str, RequestError> {
    // simdutf8 takes half the time of std's check on a 64-byte line; std
    // says where the bad byte is when there is one.
    let text = simdutf8::basic::from_utf8(raw).or_else(|_| {
        std::str::from_utf8(raw).map_err(|e| RequestError::InvalidUtf8 {
            at: e.valid_up_to(),
        })
    })?;
    if !crate::wire::ascii::has_control(raw) {
        return Ok(text);
    }
    if let Some(at) = refused_byte_at(raw) {
        return Err(RequestError::ControlByte { byte: raw[at], at });
    }
    Ok(text)
}

/// Where entry text holds a byte no entry may: a control byte below 0x20
/// other than tab and newline, or DEL. Writes and imports refuse the same
/// ones, so that whatever one stored, the other takes back (an export
/// imports). C1 controls and bidi overrides are text here; clients show
/// them escaped.
fn refused_byte_at(text: &[u8]) -> Option<usize> {
    text.iter()
        .position(|&b| (b < 0x20 && b != b'\t' && b != b'\n') || b == 0x7f)
}

/// The text of `raw` when it is a valid plain write: what [`parse`] makes
/// a [`Command::Write`] without an envelope. `None` for anything else
/// (commands, envelopes, text that is not valid), which `parse` answers.
/// Plain lines are most of a bulk writer's traffic; this lets the TCP
/// side store them without the general dispatch.
pub(crate) fn plain_write(raw: &[u8], max_entry: usize) -> Option<&str> {
    match raw {
        [b'/', ..] | b"p" | b"h" | b"e" => None,
        _ => entry_text(check_text(raw).ok()?, max_entry).ok(),
    }
}

fn parse_command(raw: &[u8], max_entry: usize) -> Result<Command<'_>, RequestError> {
    let line = check_text(raw)?;
    match line {
        "p" => {
            return Ok(Command::Past {
                query: PastQuery::default(),
            });
        }
        "h" => return Ok(Command::Help),
        "e" => return Ok(Command::Quit),
        _ => {}
    }
    let Some(command) = line.strip_prefix('/') else {
        return entry_text(line, max_entry).map(Command::Write);
    };
    let (name, text) = command.split_once(' ').unwrap_or((command, ""));
    // `/write` takes everything after its one space as is, leading spaces
    // included; other commands' arguments are words.
    let args = text.trim_start_matches(' ');
    let no_args = |c: Command<'static>| {
        if args.trim().is_empty() {
            Ok(c)
        } else {
            Err(RequestError::BadArgument(format!(
                "/{name} takes no arguments"
            )))
        }
    };
    match name {
        "write" => entry_text(text, max_entry).map(Command::Write),
        "import" => parse_import(text, max_entry),
        "amend" => {
            let (id, new_text) = text.split_once(' ').unwrap_or((text, ""));
            let id = parse_entry_id(id, "/amend ID TEXT")?;
            entry_text(new_text, max_entry).map(|text| Command::Amend { id, text })
        }
        "delete" => parse_entry_id(args.trim(), "/delete ID").map(|id| Command::Delete { id }),
        "past" => parse_past(args).map(|query| Command::Past { query }),
        "help" => no_args(Command::Help),
        "quit" => no_args(Command::Quit),
        "stats" => no_args(Command::Stats),
        "cookie" => no_args(Command::Cookie),
        "follow" => parse_follow(args),
        "web-login" | "web-logout" | "web-sessions" => parse_web(name, args.trim()),
        _ => Err(RequestError::UnknownCommand(format!("/{name}"))),
    }
}

/// Whether a web session may be called `name`: 1 to 64 letters, digits,
/// `-`, `_` or `.` (it is written into entries as `by=NAME`).
pub(crate) fn valid_session_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn parse_web<'a>(name: &str, arg: &'a str) -> Result<Command<'a>, RequestError> {
    let named = |usage: &str| {
        if valid_session_name(arg) {
            Ok(arg)
        } else {
            Err(RequestError::BadArgument(format!(
                "{arg:?} is not a session name (1 to 64 letters, digits, '-', '_', '.'); usage: {usage}"
            )))
        }
    };
    let command = match name {
        "web-login" if arg.is_empty() => WebCommand::Login(None),
        // `/web-logout all` means every session: no session may be called so.
        "web-login" if arg == "all" => {
            return Err(RequestError::BadArgument(
                "\"all\" is kept for /web-logout all; pick another name".into(),
            ));
        }
        "web-login" => WebCommand::Login(Some(named("/web-login [NAME]")?)),
        "web-logout" => WebCommand::Logout(named("/web-logout NAME|all")?),
        _ if arg.is_empty() => WebCommand::Sessions,
        _ => {
            return Err(RequestError::BadArgument(
                "/web-sessions takes no arguments".into(),
            ));
        }
    };
    Ok(Command::Web(command))
}

fn parse_entry_id(id: &str, usage: &str) -> Result<u64, RequestError> {
    id.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
        RequestError::BadArgument(format!("{id:?} is not an entry id; usage: {usage}"))
    })
}

/// `/import TIME AUTHOR TEXT`: TIME is RFC 3339 with an offset, kept as
/// written; AUTHOR is a name, or `-` for none; TEXT escaped as the file
/// escapes it.
fn parse_import(args: &str, max_entry: usize) -> Result<Command<'_>, RequestError> {
    let usage =
        |why: String| RequestError::BadArgument(format!("{why}; usage: /import TIME AUTHOR TEXT"));
    let mut parts = args.splitn(3, ' ');
    let (Some(time), Some(author), Some(text)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(usage("three fields are needed".into()));
    };
    let millis = crate::wire::entry::parse_timestamp(time)
        .filter(|_| !time.contains([' ', '\t']))
        .ok_or_else(|| usage(format!("{time:?} is not an RFC 3339 time with an offset")))?;
    let author = match author {
        "-" => None,
        name if crate::wire::entry::is_author_name(name) => Some(name),
        name => return Err(usage(format!("{name:?} is not an author's name"))),
    };
    let text = match text.contains('\\') {
        false => std::borrow::Cow::Borrowed(text),
        true => crate::wire::entry::unescape(text)
            .map(std::borrow::Cow::Owned)
            .ok_or_else(|| usage("the text has an unknown backslash escape".into()))?,
    };
    if let Some(at) = refused_byte_at(text.as_bytes()) {
        return Err(usage(format!(
            "the text has a control byte 0x{:02x}",
            text.as_bytes()[at]
        )));
    }
    entry_text(&text, max_entry)?;
    Ok(Command::Import {
        time,
        millis,
        author,
        text,
    })
}

fn entry_text(text: &str, max_entry: usize) -> Result<&str, RequestError> {
    if text.is_empty() {
        Err(RequestError::Empty)
    } else if text.len() > max_entry {
        Err(RequestError::TooLong {
            len: text.len(),
            max: max_entry,
        })
    } else {
        Ok(text)
    }
}

fn parse_past(args: &str) -> Result<PastQuery<'_>, RequestError> {
    let usage = |why: String| {
        RequestError::BadArgument(format!(
            "{why}; usage: /past [N] [since ID|DATE] [until ID|DATE] [from NAME] [tag TAG]... [-i] [versions] \
             [grep WORDS[<TAB>WORDS...] | regex PATTERN]"
        ))
    };
    let mut query = PastQuery::default();
    // Only the start is trimmed: trailing spaces belong to grep's words.
    let mut rest = args.trim_start();
    while !rest.trim_end().is_empty() {
        let (word, after) = rest.split_once(' ').unwrap_or((rest, ""));
        let after = after.trim_start();
        let (value, after2) = after.split_once(' ').unwrap_or((after, ""));
        match word {
            "grep" => {
                if after.split('\t').any(str::is_empty) {
                    return Err(usage("grep needs words to look for".into()));
                }
                query.grep = Some(after);
                break;
            }
            "regex" => {
                if after.is_empty() {
                    return Err(usage("regex needs a pattern".into()));
                }
                matching::compile_regex(after, query.ignore_case).map_err(usage)?;
                query.regex = Some(after);
                break;
            }
            "-i" => {
                query.ignore_case = true;
                rest = after;
            }
            "versions" => {
                query.versions = true;
                rest = after;
            }
            "from" => {
                if !crate::wire::entry::is_author_name(value) {
                    return Err(usage(format!("{value:?} is not an author's name")));
                }
                query.from = Some(value);
                rest = after2.trim_start();
            }
            "tag" => {
                let tag = value.strip_prefix('#').unwrap_or(value);
                if !matching::is_tag_word(tag) {
                    return Err(usage(format!(
                        "{value:?} is not a tag (letters, digits, _ and -)"
                    )));
                }
                query.tags.push(tag);
                rest = after2.trim_start();
            }
            "since" => {
                query.since = Some(parse_since(value).map_err(usage)?);
                rest = after2.trim_start();
            }
            "until" => {
                query.until = Some(parse_since(value).map_err(usage)?);
                rest = after2.trim_start();
            }
            "-n" | "last" => {
                query.last = Some(parse_count(value).map_err(usage)?);
                rest = after2.trim_start();
            }
            n if n.bytes().all(|b| b.is_ascii_digit()) => {
                query.last = Some(parse_count(n).map_err(usage)?);
                rest = after;
            }
            other => return Err(usage(format!("unexpected {other:?}"))),
        }
    }
    Ok(query)
}

fn parse_count(s: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a count of entries"))
}

fn parse_follow(args: &str) -> Result<Command<'_>, RequestError> {
    let usage = |why: String| {
        RequestError::BadArgument(format!(
            "{why}; usage: /follow [since ID|DATE] [diary DIARY-ID]"
        ))
    };
    let (mut since, mut diary) = (None, None);
    let mut words = args.split_whitespace();
    while let Some(word) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| usage(format!("{word} needs a value")))?;
        match word {
            "since" => since = Some(parse_since(value).map_err(usage)?),
            "diary" => diary = Some(value),
            other => return Err(usage(format!("unexpected {other:?}"))),
        }
    }
    Ok(Command::Follow { since, diary })
}

/// `ID` (entries after it), a date `YYYY-MM-DD`, a local time
/// `YYYY-MM-DDTHH:MM[:SS]`, or an RFC 3339 time with offset.
pub(crate) fn parse_since(s: &str) -> Result<Since, String> {
    use chrono::{Local, NaiveDate, NaiveDateTime, TimeZone};
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Since::Id)
            .map_err(|_| format!("{s:?} is too large for an id"));
    }
    if let Some(ms) = crate::wire::entry::parse_timestamp(s) {
        return Ok(Since::Time(ms));
    }
    let local = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists"))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M"))
        .map_err(|_| {
            format!("{s:?} is neither an id nor a date like 2026-11-25 or 2026-11-25T08:30")
        })?;
    Local
        .from_local_datetime(&local)
        .earliest()
        .map(|t| Since::Time(t.timestamp_millis()))
        .ok_or_else(|| format!("{s} does not exist in the local time zone"))
}

/// The words that begin or mark reply lines: written below, and read by
/// [`read_reply_line`], so that client and server share one spelling.
const TAG_WORD: &str = "id ";
const TRUNCATED_WORD: &str = " truncated";
const ACK_WORD: &str = "ok ";
const ERROR_WORD: &str = "err ";
const COOKIE_WORD: &str = "cookie ";
const FOLLOWING_WORDS: &str = "# following entries after ";
const IN_DIARY_WORDS: &str = " in diary ";
const RESUME_WORDS: &str = "/follow since ";

/// `id TAG\n`: first line of a reply to an enveloped request.
pub(crate) fn push_tag(out: &mut Vec<u8>, tag: &str) {
    out.extend_from_slice(TAG_WORD.as_bytes());
    out.extend_from_slice(tag.as_bytes());
    out.push(b'\n');
}

/// `id TAG truncated\n`: the whole reply to an enveloped UDP request whose
/// real reply is over the datagram limit; the client asks again over TCP.
pub(crate) fn push_truncated(out: &mut Vec<u8>, tag: &str) {
    out.extend_from_slice(TAG_WORD.as_bytes());
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(TRUNCATED_WORD.as_bytes());
    out.push(b'\n');
}

/// `ok ID TIMESTAMP\n`: the entry is stored.
pub fn push_ack(out: &mut Vec<u8>, id: &str, timestamp: &str) {
    out.extend_from_slice(ACK_WORD.as_bytes());
    out.extend_from_slice(id.as_bytes());
    out.push(b' ');
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b'\n');
}

/// The TIME of the `ok ID TIME` line at the start of `ack` ("" if none).
pub(crate) fn ack_timestamp(ack: &[u8]) -> &str {
    let line = ack.split(|&b| b == b'\n').next().unwrap_or_default();
    let time = line.splitn(3, |&b| b == b' ').nth(2).unwrap_or_default();
    std::str::from_utf8(time).unwrap_or_default()
}

/// `err CODE MESSAGE\n`.
pub(crate) fn push_error(out: &mut Vec<u8>, code: ErrorCode, message: &dyn fmt::Display) {
    use std::io::Write;
    out.extend_from_slice(ERROR_WORD.as_bytes());
    out.extend_from_slice(code.as_str().as_bytes());
    out.push(b' ');
    let _ = write!(out, "{message}");
    out.push(b'\n');
}

/// The reply to plaintext from where keys are required: short, so that
/// it stays within three times any request worth answering.
pub(crate) const AUTH_REQUIRED: &[u8] = b"err auth keys required\n";

/// Sent before the server closes an encrypted connection whose session
/// is past its lifetime; the client reconnects, with a new handshake.
pub(crate) const SESSION_EXPIRED: &[u8] = b"# session expired; reconnect to renew it\n";

/// A device asked for what its scopes do not cover.
pub(crate) fn push_forbidden(
    out: &mut Vec<u8>,
    device: &str,
    needed: &str,
    has: &dyn fmt::Display,
) {
    push_error(
        out,
        ErrorCode::Forbidden,
        &format_args!(
            "device {device} may not {needed} (its scopes: {has}); \
             widen them in the server's allow file"
        ),
    );
}

/// `end\n`: the last line of a multi-line reply.
pub(crate) fn push_end(out: &mut Vec<u8>) {
    out.extend_from_slice(END);
}

/// The help text and its end line.
pub(crate) fn push_help(out: &mut Vec<u8>) {
    out.extend_from_slice(HELP.as_bytes());
    push_end(out);
}

/// `cookie HEX\n`: the reply to `/cookie` over UDP.
pub(crate) fn push_cookie(out: &mut Vec<u8>, cookie: &[u8]) {
    out.extend_from_slice(COOKIE_WORD.as_bytes());
    out.extend_from_slice(cookie);
    out.push(b'\n');
}

/// `/cookie` over TCP, where replies have no size limit.
pub(crate) fn push_cookie_is_udp_only(out: &mut Vec<u8>) {
    push_error(
        out,
        ErrorCode::UdpOnly,
        &"/cookie is for UDP; over TCP replies have no size limit",
    );
}

/// `/follow` over UDP, which cannot stream.
pub(crate) fn push_follow_is_tcp_only(out: &mut Vec<u8>) {
    push_error(
        out,
        ErrorCode::TcpOnly,
        &"/follow needs a TCP connection (nc HOST PORT, or diary follow)",
    );
}

/// The first line of a follow: entries after `after` of diary `diary` come next.
pub(crate) fn push_following(out: &mut Vec<u8>, after: u64, diary: &str) {
    use std::io::Write;
    let _ = writeln!(out, "{FOLLOWING_WORDS}{after}{IN_DIARY_WORDS}{diary}");
}

/// To a follower whose input ended: the follow goes on.
pub(crate) fn push_follow_goes_on(out: &mut Vec<u8>) {
    out.extend_from_slice(b"# end of your input seen; following goes on\n");
}

/// A follow that asks to resume after an entry the diary does not have.
pub(crate) fn push_past_end(out: &mut Vec<u8>, after: u64, len: u64) {
    push_error(
        out,
        ErrorCode::PastEnd,
        &format_args!(
            "there is no entry {after} here: this diary has {len}; it may have been \
             restored from an older copy. Follow from its start with \"/follow since 0\", \
             or new entries with \"/follow\""
        ),
    );
}

/// A follow that asks to resume a diary other than the one served here.
pub(crate) fn push_other_diary(out: &mut Vec<u8>, wanted: &str, served: &str) {
    push_error(
        out,
        ErrorCode::OtherDiary,
        &format_args!(
            "this server keeps diary {served}, not {wanted}: the file was replaced, or \
             this is another server. Follow it afresh with \"/follow\""
        ),
    );
}

/// The last line to a follower that fell `limit` bytes behind.
pub(crate) fn push_behind(out: &mut Vec<u8>, limit: usize, resume: u64) {
    push_error(
        out,
        ErrorCode::Behind,
        &format_args!(
            "this follower fell more than {limit} bytes behind; resume with \"{RESUME_WORDS}{resume}\""
        ),
    );
}

/// Over raw UDP, before the entries of a `p` that did not all fit.
pub(crate) fn push_left_out(out: &mut Vec<u8>, left_out: u64, selected: u64) {
    use std::io::Write;
    let _ = writeln!(
        out,
        "# {left_out} older entries left out to fit one datagram; \
         send \"/past {selected}\" over TCP to the same port to see them"
    );
}

/// The first line of a plain UDP `/past` that looked through only the
/// newest `looked` entries, when the selection may go on before them.
pub(crate) fn push_searched_newest(out: &mut Vec<u8>, looked: u64) {
    use std::io::Write;
    let _ = writeln!(
        out,
        "# only the newest {looked} entries were searched for one datagram; \
         send the same request over TCP to the same port to search them all"
    );
}

/// A TCP line over the entry limit.
pub(crate) fn push_line_too_long(out: &mut Vec<u8>, max_entry: usize) {
    push_error(
        out,
        ErrorCode::TooLong,
        &format_args!("line is over the limit of {max_entry} bytes; nothing stored"),
    );
}

/// The one line a connection over the limit gets before it is closed.
pub(crate) fn busy_line(max_connections: usize) -> Vec<u8> {
    let mut out = Vec::new();
    push_error(
        &mut out,
        ErrorCode::Busy,
        &format_args!(
            "the server has its maximum of {max_connections} connections; try again later"
        ),
    );
    out
}

/// Why a connection is being closed by the sweep.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IdleClose {
    /// No traffic either way for this many seconds.
    Quiet(u64),
    /// Replies left unread for this many seconds.
    Unread(u64),
    /// No encrypted session made within this many seconds, from where
    /// keys are required.
    NoSession(u64),
}

pub(crate) fn push_idle(out: &mut Vec<u8>, why: IdleClose) {
    let reason = match why {
        IdleClose::Unread(s) => format!("replies unread for {s} s; closing"),
        IdleClose::Quiet(s) => format!("no traffic for {s} s; closing"),
        IdleClose::NoSession(s) => format!("no session made within {s} s; closing"),
    };
    push_error(out, ErrorCode::Idle, &reason);
}

/// The line that replaces the ack of every write of a failed commit.
pub(crate) fn commit_failed_line(error: &dyn fmt::Display) -> Vec<u8> {
    let mut line = Vec::new();
    push_error(
        &mut line,
        ErrorCode::Io,
        &format_args!("could not store the entry: {error}; nothing stored"),
    );
    line
}

/// The reply to a retry of write `id` while the file at the diary's path
/// is not the diary diaryd wrote it into (`why`): "stored" would not be
/// true of the file there, so the client is told to send it again later.
pub(crate) fn stored_elsewhere_line(id: u64, why: &dyn fmt::Display) -> Vec<u8> {
    let mut line = Vec::new();
    push_error(
        &mut line,
        ErrorCode::Io,
        &format_args!(
            "this write was stored as #{id} in the file diaryd wrote, but {why}; send it \
             again once the diary is back"
        ),
    );
    line
}

/// A reply that could not read the diary.
pub(crate) fn push_read_error(out: &mut Vec<u8>, error: &dyn fmt::Display) {
    push_error(
        out,
        ErrorCode::Io,
        &format_args!("cannot read the diary: {error}"),
    );
}

/// The reply to `/stats`: one `NAME VALUE` line per figure, then `end`.
pub(crate) fn push_figures<N: AsRef<str>>(
    out: &mut Vec<u8>,
    figures: impl IntoIterator<Item = (N, u64)>,
) {
    let mut digits = itoa::Buffer::new();
    for (name, value) in figures {
        out.extend_from_slice(name.as_ref().as_bytes());
        out.push(b' ');
        out.extend_from_slice(digits.format(value).as_bytes());
        out.push(b'\n');
    }
    push_end(out);
}

/// To a new connection from an address that has `limit` open already.
pub(crate) fn busy_source_line(limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    push_error(
        &mut out,
        ErrorCode::Busy,
        &format_args!(
            "this address has its maximum of {limit} connections open; close some or try \
             again later"
        ),
    );
    out
}

/// How a datagram reply that came out over its limit is made to fit.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Oversize<'a> {
    /// A write: the entry is stored either way, so the ack at `ack_at` is
    /// shortened to `ok ID`, or `ok`.
    Ack { ack_at: usize, id: u64 },
    /// A tagged request: the whole reply becomes `id TAG truncated`, and
    /// the client asks again over TCP.
    Tagged(&'a str),
    /// A raw request (`nc -u`): cut at a line boundary, with a note.
    Raw,
}

/// Makes the reply in `out[start..]` fit in `limit` bytes, as `how` says.
/// The one place the datagram limit is enforced.
pub(crate) fn fit_datagram(out: &mut Vec<u8>, start: usize, limit: usize, how: Oversize) {
    if out.len() - start <= limit {
        return;
    }
    match how {
        Oversize::Ack { ack_at, id } => shorten_ack(out, ack_at, id, limit - (ack_at - start)),
        Oversize::Tagged(tag) => {
            out.truncate(start);
            push_truncated(out, tag);
        }
        Oversize::Raw => cut_to_limit(out, start, limit),
    }
}

/// Replaces the `ok ID TIME` line at `at` with `ok ID`, or `ok`, whichever
/// fits in `room` bytes.
fn shorten_ack(out: &mut Vec<u8>, at: usize, id: u64, room: usize) {
    out.truncate(at);
    let mut digits = itoa::Buffer::new();
    let id = digits.format(id);
    if 4 + id.len() <= room {
        out.extend_from_slice(b"ok ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    } else {
        out.extend_from_slice(&b"ok\n"[..room.min(3)]);
    }
}

/// Cuts a raw datagram reply at a line boundary so it fits `limit`, saying so.
fn cut_to_limit(out: &mut Vec<u8>, start: usize, limit: usize) {
    const NOTE: &[u8] = b"# reply cut to fit one datagram; ask over TCP for all of it\n";
    let keep = limit.saturating_sub(NOTE.len());
    let cut = out[start..start + keep.min(out.len() - start)]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(start, |i| start + i + 1);
    out.truncate(cut);
    if out.len() - start + NOTE.len() <= limit {
        out.extend_from_slice(NOTE);
    }
}

/// Replaces the ack line at `at` in `buf` with `line` (a failed commit's
/// error); in a datagram of at most `limit` bytes, the short `err io`.
pub(crate) fn replace_ack(buf: &mut Vec<u8>, at: usize, line: &[u8], limit: usize) {
    let end = buf[at..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(buf.len(), |i| at + i + 1);
    buf.splice(at..end, line.iter().copied());
    if buf.len() > limit {
        buf.truncate(at);
        buf.extend_from_slice(b"err io\n");
        buf.truncate(limit);
    }
}

/// The reply to `h` / `/help`, without its end line.
pub(crate) const HELP: &str = "\
diary: every line you send is stored as an entry and answered with \"ok ID TIME\".
  p                      past entries, oldest first
  h                      this help
  e                      leave (closes a TCP session)
  /past [N] [since ID|DATE] [until ID|DATE] [from NAME] [tag T]... [-i] [versions] [grep WORDS | regex RE]
  /amend ID TEXT         replace an entry's text (the old one stays in the file)
  /delete ID             hide an entry (it stays in the file)
                         the newest N entries, those after ID or from DATE on,
                         or those containing WORDS
  /write TEXT            store TEXT even if it looks like a command
  /follow [since ID|DATE] (TCP) entries after ID or from DATE, then new ones
  /stats                 server figures
  /cookie                (UDP) proof of your address, for large UDP replies
  /help  /quit           same as h and e
Entry lines are ID<TAB>TIME<TAB>TEXT; \\n \\t \\\\ in TEXT stand for newline, tab, backslash.
Multi-line replies end with a line \"end\"; errors are \"err CODE REASON\".
";

/// A reply line, read as the client reads it (the reading side of the
/// writers above, with the same words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyLine<'a> {
    /// `id TAG` or `id TAG truncated`: whose reply follows.
    Tag {
        tag: &'a str,
        truncated: bool,
    },
    /// `ok ID TIME`.
    Ack {
        id: &'a str,
        time: &'a str,
    },
    /// `err CODE MESSAGE`.
    Error {
        code: &'a str,
        message: &'a str,
    },
    /// `cookie HEX`.
    Cookie(&'a str),
    /// `# following entries after ID [in diary NAME]`.
    Following {
        after: &'a str,
        diary: Option<&'a str>,
    },
    Bye,
    End,
    /// An entry, a note, a help or stats line: the caller reads it.
    Other(&'a str),
}

pub(crate) fn read_reply_line(line: &str) -> ReplyLine<'_> {
    if let Some(rest) = line.strip_prefix(TAG_WORD) {
        return match rest.strip_suffix(TRUNCATED_WORD) {
            Some(tag) => ReplyLine::Tag {
                tag,
                truncated: true,
            },
            None => ReplyLine::Tag {
                tag: rest,
                truncated: false,
            },
        };
    }
    if let Some(rest) = line.strip_prefix(ACK_WORD) {
        let (id, time) = rest.split_once(' ').unwrap_or((rest, ""));
        return ReplyLine::Ack { id, time };
    }
    if let Some(rest) = line.strip_prefix(ERROR_WORD) {
        let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
        return ReplyLine::Error { code, message };
    }
    if let Some(cookie) = line.strip_prefix(COOKIE_WORD) {
        return ReplyLine::Cookie(cookie);
    }
    if let Some(rest) = line.strip_prefix(FOLLOWING_WORDS) {
        let (after, diary) = match rest.split_once(IN_DIARY_WORDS) {
            Some((after, diary)) => (after, Some(diary)),
            None => (rest, None),
        };
        return ReplyLine::Following { after, diary };
    }
    if line.as_bytes() == BYE.trim_ascii_end() {
        return ReplyLine::Bye;
    }
    if line.as_bytes() == END.trim_ascii_end() {
        return ReplyLine::End;
    }
    ReplyLine::Other(line)
}

/// The id a `behind` error's message says to resume from.
pub(crate) fn resume_id(message: &str) -> Option<u64> {
    let (_, after) = message.rsplit_once(RESUME_WORDS)?;
    after.trim_end_matches('"').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 26, 8: a write and an import of the same text are both
    /// taken or both refused, byte for byte.
    #[test]
    fn web_login_commands_parse_with_their_names() {
        fn web(line: &str) -> Result<Command<'_>, RequestError> {
            parse(line.as_bytes(), 100).command
        }
        assert_eq!(web("/web-login"), Ok(Command::Web(WebCommand::Login(None))));
        assert_eq!(
            web("/web-login phone"),
            Ok(Command::Web(WebCommand::Login(Some("phone"))))
        );
        assert_eq!(
            web("/web-logout all"),
            Ok(Command::Web(WebCommand::Logout("all")))
        );
        assert_eq!(web("/web-sessions"), Ok(Command::Web(WebCommand::Sessions)));
        for bad in [
            "/web-login all",
            "/web-login a b",
            "/web-logout",
            "/web-sessions x",
        ] {
            assert!(
                matches!(web(bad), Err(RequestError::BadArgument(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn writes_and_imports_refuse_the_same_bytes() {
        let mut chars: Vec<char> = (0u8..0x20).chain([0x7f]).map(char::from).collect();
        chars.extend(['\u{85}', '\u{9b}', '\u{202e}', 'a', '\u{1b}']);
        for c in chars {
            let text = format!("x{c}y");
            let written = cmd(&format!("/write {text}")).is_ok();
            let mut escaped = Vec::new();
            crate::wire::entry::escape_into(&text, &mut escaped);
            let escaped = String::from_utf8(escaped).unwrap();
            let imported = cmd(&format!("/import 2020-01-01T00:00:00Z - {escaped}")).is_ok();
            // A newline ends a write's line; an import carries it escaped.
            if c != '\n' {
                assert_eq!(written, imported, "{:?}", c);
            }
        }
    }

    fn cmd(raw: &str) -> Result<Command<'_>, RequestError> {
        parse(raw.as_bytes(), 100).command
    }

    /// Every reply line the server writes reads back as what it is.
    #[test]
    fn reply_lines_read_back_as_written() {
        let read = |out: &[u8]| std::str::from_utf8(out).unwrap().trim_end().to_string();
        let mut out = Vec::new();
        push_tag(&mut out, "t1");
        assert_eq!(
            read_reply_line(&read(&out)),
            ReplyLine::Tag {
                tag: "t1",
                truncated: false
            }
        );
        out.clear();
        push_truncated(&mut out, "t1");
        assert_eq!(
            read_reply_line(&read(&out)),
            ReplyLine::Tag {
                tag: "t1",
                truncated: true
            }
        );
        out.clear();
        push_ack(&mut out, "12", "2026-11-25T06:00:28.123+00:00");
        assert_eq!(
            read_reply_line(&read(&out)),
            ReplyLine::Ack {
                id: "12",
                time: "2026-11-25T06:00:28.123+00:00"
            }
        );
        out.clear();
        push_behind(&mut out, 1024, 77);
        let line = read(&out);
        let ReplyLine::Error {
            code: "behind",
            message,
        } = read_reply_line(&line)
        else {
            panic!("{line}");
        };
        assert_eq!(resume_id(message), Some(77));
        out.clear();
        push_cookie(&mut out, b"abc");
        assert_eq!(read_reply_line(&read(&out)), ReplyLine::Cookie("abc"));
        out.clear();
        push_following(&mut out, 5, "d-1");
        assert_eq!(
            read_reply_line(&read(&out)),
            ReplyLine::Following {
                after: "5",
                diary: Some("d-1")
            }
        );
        assert_eq!(read_reply_line(&read(BYE)), ReplyLine::Bye);
        assert_eq!(read_reply_line(&read(END)), ReplyLine::End);
        assert_eq!(
            read_reply_line("1\tT\ttext"),
            ReplyLine::Other("1\tT\ttext")
        );
    }

    #[test]
    fn protocol_doc_lists_every_error_code() {
        let doc = include_str!("../docs/PROTOCOL.md");
        for code in ErrorCode::ALL {
            assert!(
                doc.contains(&format!("`{}`", code.as_str())),
                "docs/PROTOCOL.md does not list err {}",
                code.as_str()
            );
        }
    }

    #[test]
    fn oversize_replies_fit_their_datagram() {
        let mut out = b"id t\nok 12 2026-11-25T06:00:28.123+00:00\n".to_vec();
        fit_datagram(&mut out, 0, 14, Oversize::Ack { ack_at: 5, id: 12 });
        assert_eq!(out, b"id t\nok 12\n");
        let mut out = b"id t\n".to_vec();
        out.extend_from_slice(&[b'x'; 100]);
        fit_datagram(&mut out, 0, 50, Oversize::Tagged("t"));
        assert_eq!(out, b"id t truncated\n");
        let mut out = b"1\ta\n2\tb\n".repeat(40);
        fit_datagram(&mut out, 0, 100, Oversize::Raw);
        assert!(out.len() <= 100 && out.ends_with(b"all of it\n"), "{out:?}");
        let mut buf = b"id t\nok 1 T\nnext\n".to_vec();
        replace_ack(&mut buf, 5, b"err io failed\n", usize::MAX);
        assert_eq!(buf, b"id t\nerr io failed\nnext\n");
        let mut buf = b"id t\nok 1 T\n".to_vec();
        replace_ack(&mut buf, 5, b"err io a long reason\n", 12);
        assert_eq!(buf, b"id t\nerr io\n");
    }

    #[test]
    fn seed_commands_and_entries() {
        assert!(matches!(cmd("p"), Ok(Command::Past { .. })));
        assert_eq!(cmd("h"), Ok(Command::Help));
        assert_eq!(cmd("e"), Ok(Command::Quit));
        assert_eq!(cmd("今天天气很好"), Ok(Command::Write("今天天气很好")));
        assert_eq!(cmd("pp"), Ok(Command::Write("pp")));
        assert_eq!(cmd(" p"), Ok(Command::Write(" p")));
        assert_eq!(cmd("/write p"), Ok(Command::Write("p")));
        assert_eq!(cmd("/write /past"), Ok(Command::Write("/past")));
        assert_eq!(
            cmd("/write    indented "),
            Ok(Command::Write("   indented "))
        );
        assert_eq!(cmd("/write  "), Ok(Command::Write(" ")));
        assert_eq!(
            cmd("/import 2026-11-25T06:06:20.608+08:00 ann@laptop  two spaces"),
            Ok(Command::Import {
                time: "2026-11-25T06:06:20.608+08:00",
                millis: 1_795_557_980_608,
                author: Some("ann@laptop"),
                text: " two spaces".into(),
            })
        );
        assert!(matches!(
            cmd("/import 2026-11-25T06:06:20Z - x"),
            Ok(Command::Import { author: None, .. })
        ));
        assert!(matches!(
            cmd("/import 2026-11-25T06:06:20Z - two\\nlines"),
            Ok(Command::Import { text, .. }) if text == "two\nlines"
        ));
        for bad in [
            "/import yesterday - x",
            "/import 2026-11-25T06:06:20Z",
            "/import 2026-11-25T06:06:20Z a\\b x",
        ] {
            assert!(cmd(bad).is_err(), "{bad}");
        }
    }

    /// The TCP side stores a line through `plain_write` instead of `parse`
    /// when it gives text: it must give the text `parse` would write, and
    /// give it for every plain line `parse` writes.
    fn agrees_with_parse(raw: &[u8]) {
        let request = parse(raw, 100);
        let parsed = match (&request.envelope, &request.command) {
            (None, Ok(Command::Write(text))) => Some(*text),
            _ => None,
        };
        match plain_write(raw, 100) {
            Some(text) => assert_eq!(parsed, Some(text), "{raw:?}"),
            None => assert!(
                parsed.is_none() || raw.starts_with(b"/"),
                "{raw:?} is a plain write the fast path leaves out"
            ),
        }
    }

    #[test]
    fn plain_writes_are_what_parse_writes() {
        let lines = "hello|今天天气很好|p|h|e|pp| p|p |/write p|/id t hi|/id t|/past|/|| |\\/x|a\tb|a\0b|a\x7fb";
        for raw in lines.split('|') {
            agrees_with_parse(raw.as_bytes());
        }
        agrees_with_parse("x".repeat(101).as_bytes());
        agrees_with_parse(b"a\xffb");
        agrees_with_parse(b"a\xff");
        assert_eq!(plain_write(b"hello", 100), Some("hello"));
        assert_eq!(plain_write(b"/write hello", 100), None);
    }

    proptest::proptest! {
        #[test]
        fn any_line_agrees_with_parse(raw in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(b"/pheid tx \t\x7f".to_vec()),
                proptest::num::u8::ANY,
            ],
            0..12,
        )) {
            agrees_with_parse(&raw);
        }
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(
            parse(b"a\xffb", 100).command,
            Err(RequestError::InvalidUtf8 { at: 1 })
        );
        assert_eq!(
            parse(b"a\0b", 100).command,
            Err(RequestError::ControlByte { byte: 0, at: 1 })
        );
        assert_eq!(cmd(""), Err(RequestError::Empty));
        assert_eq!(cmd("/write"), Err(RequestError::Empty));
        assert_eq!(
            cmd(&"x".repeat(101)),
            Err(RequestError::TooLong { len: 101, max: 100 })
        );
        assert!(matches!(cmd("/nope"), Err(RequestError::UnknownCommand(_))));
        assert!(matches!(cmd("/help me"), Err(RequestError::BadArgument(_))));
        assert!(matches!(
            cmd("/past many"),
            Err(RequestError::BadArgument(_))
        ));
    }

    #[test]
    fn past_arguments() {
        let q = |raw| match cmd(raw) {
            Ok(Command::Past { query, .. }) => query,
            other => panic!("{raw}: {other:?}"),
        };
        assert_eq!(q("/past").last, None);
        assert_eq!(q("/past 5").last, Some(5));
        assert_eq!(q("/past -n 7").last, Some(7));
        let full = q("/past 3 since 10 grep 早上 好");
        assert_eq!(full.last, Some(3));
        assert_eq!(full.since, Some(Since::Id(10)));
        assert_eq!(full.grep, Some("早上 好"));
        assert_eq!(q("/past grep a ").grep, Some("a "));
        assert_eq!(q("/past 5 ").last, Some(5));
        assert!(matches!(
            q("/past since 2026-11-25").since,
            Some(Since::Time(_))
        ));
        assert!(matches!(
            q("/past since 2026-11-25T08:30:00.000+08:00").since,
            Some(Since::Time(_))
        ));
    }

    #[test]
    fn envelope_is_read_even_for_bad_commands() {
        let r = parse(b"/id a1 max=4000 cookie=ab12 /past 2", 100);
        assert_eq!(
            r.envelope,
            Some(Envelope {
                tag: "a1",
                max_reply: Some(4000),
                cookie: Some("ab12"),
                by: None,
            })
        );
        assert!(matches!(r.command, Ok(Command::Past { .. })));
        let r = parse(b"/id t7 \xff", 100);
        assert_eq!(r.envelope.unwrap().tag, "t7");
        assert!(r.command.is_err());
        assert!(parse(b"/id bad!tag p", 100).command.is_err());
    }
}
