//! The command handler shared by both transports: [`Request`] → reply bytes,
//! over the [`Store`] it is handed (as mini-redis hands `Db` to each
//! command). It knows no sockets; the transport says only how big a reply
//! may be ([`Transport`]), and fits the reply to its datagram itself.

use crate::protocol::{self, BYE, Command, Request, Since};
use crate::server::history;
use crate::server::service::{Outcome, Transport};
use crate::server::stats::Stats;
use crate::store::{Appended, Record, Store};

/// Most of the diary file a `/past` over UDP looks at: one datagram
/// answers, so a search through more goes over TCP, streamed in pieces
/// (a search that matches rarely would otherwise hold the loop for the
/// whole file, for a datagram of a few bytes).
const UDP_SCAN: u64 = 1 << 20;

/// The `ok ID TIME` of a buffered entry, which waits for its batch.
fn acked(out: &mut Vec<u8>, entry: Appended) -> Outcome {
    let ack_at = out.len();
    protocol::push_ack(out, entry.id_text, entry.timestamp);
    Outcome::Wrote {
        id: entry.id,
        ack_at,
    }
}

fn count_write(stats: &mut Stats, tcp: bool) {
    if tcp {
        stats.tcp_writes += 1;
    } else {
        stats.udp_writes += 1;
    }
}

/// Whether entry `id` may be amended or deleted: it exists, is not an
/// amendment or deletion itself, and is not deleted.
fn editable(store: &Store, id: u64) -> Result<(), String> {
    if id > store.len() {
        return Err(format!(
            "there is no entry #{id} (the newest is #{})",
            store.len()
        ));
    }
    if store.edit_of(id).is_some_and(|e| e.deleted) {
        return Err(format!("entry #{id} is deleted"));
    }
    if store.is_record(id) {
        return Err(format!(
            "#{id} is an amendment or a deletion; amend the entry it changes"
        ));
    }
    Ok(())
}

/// Buffers entry `text` (tagged `tag`, by `author`) and puts its ack in
/// `out`: a `Write` request, or a plain line the TCP side took straight
/// here ([`crate::protocol::plain_write`]).
pub(crate) fn write(
    text: &str,
    (tag, author): (Option<&str>, Option<&str>),
    tcp: bool,
    store: &mut Store,
    stats: &mut Stats,
    out: &mut Vec<u8>,
) -> Outcome {
    count_write(stats, tcp);
    let entry = store.append_by(text, tag, author);
    acked(out, entry)
}

/// Answers one request, appending the reply to `out`; a write is
/// recorded as `author`'s.
pub(crate) fn handle(
    req: &Request,
    (transport, author): (Transport, Option<&str>),
    store: &mut Store,
    stats: &mut Stats,
    out: &mut Vec<u8>,
) -> Outcome {
    let start = out.len();
    if let Some(envelope) = &req.envelope {
        protocol::push_tag(out, envelope.tag);
    }
    match &req.command {
        Err(e) => {
            protocol::push_error(out, e.code(), e);
            Outcome::Replied
        }
        Ok(command) => {
            let body = out.len();
            let tag = req.envelope.map(|e| e.tag);
            let who = (tag, author);
            run(command, who, transport, store, stats, (start, body), out)
        }
    }
}

fn run(
    command: &Command,
    (tag, author): (Option<&str>, Option<&str>),
    transport: Transport,
    store: &mut Store,
    stats: &mut Stats,
    (start, body): (usize, usize),
    out: &mut Vec<u8>,
) -> Outcome {
    let tcp = transport == Transport::Tcp;
    match command {
        Command::Write(text) => write(text, (tag, author), tcp, store, stats, out),
        Command::Import {
            time,
            millis,
            author: original,
            text,
        } => {
            count_write(stats, tcp);
            let entry = store.append_imported(text, tag, (time, *millis), (*original, author));
            acked(out, entry)
        }
        Command::Amend { id, text } => {
            if let Err(why) = editable(store, *id) {
                protocol::push_error(out, protocol::ErrorCode::BadArgument, &why);
                return Outcome::Replied;
            }
            let entry = store.append_record(text, tag, author, Record::Amends(*id));
            acked(out, entry)
        }
        Command::Delete { id } => {
            if let Err(why) = editable(store, *id) {
                protocol::push_error(out, protocol::ErrorCode::BadArgument, &why);
                return Outcome::Replied;
            }
            let text = format!("(deleted #{id})");
            let entry = store.append_record(&text, tag, author, Record::Deletes(*id));
            acked(out, entry)
        }
        Command::Help => {
            protocol::push_help(out);
            Outcome::Replied
        }
        Command::Quit => {
            out.extend_from_slice(BYE);
            Outcome::Quit
        }
        Command::Stats => {
            let mut figures = stats.figures(store.len(), store.bytes());
            figures.extend(store.fsync_figures());
            protocol::push_figures(out, figures);
            Outcome::Replied
        }
        Command::Cookie => {
            match transport {
                Transport::Udp { cookie, .. } => protocol::push_cookie(out, &cookie),
                Transport::Tcp => protocol::push_cookie_is_udp_only(out),
            }
            Outcome::Replied
        }
        Command::Follow { since, diary } => follow(*since, *diary, tcp, store, out),
        Command::Web(_) => {
            // The TCP side answers it for this machine's clients; it ends here from anywhere else.
            let why = "web logins are managed over TCP from the server's machine (diary web-login)";
            protocol::push_error(out, protocol::ErrorCode::TcpOnly, &why);
            Outcome::Replied
        }
        Command::Past { query } => {
            let tag_at = (tag, start, body);
            past(query, transport, store, stats, tag_at, out)
        }
    }
}

/// `/follow`: where the follow starts, or why it cannot.
fn follow(
    since: Option<Since>,
    diary: Option<&str>,
    tcp: bool,
    store: &Store,
    out: &mut Vec<u8>,
) -> Outcome {
    let len = store.len();
    let after = match since {
        Some(Since::Id(id)) => Some(id),
        // The entries from there on, times being mostly in order.
        Some(Since::Time(ms)) => Some(store.first_at_or_after(ms) - 1),
        None => None,
    };
    if !tcp {
        protocol::push_follow_is_tcp_only(out);
    } else if let Some(wanted) = diary.filter(|d| *d != store.identity()) {
        protocol::push_other_diary(out, wanted, store.identity());
    } else if let Some(after) = after.filter(|&a| a > len) {
        protocol::push_past_end(out, after, len);
    } else {
        return Outcome::Follow { after };
    }
    Outcome::Replied
}

/// `/past`: a stream over TCP; over UDP what fits one datagram, or
/// `id TAG truncated` (the client asks over TCP). `tag_at` is the request's
/// tag and where its reply and its body start in `out`.
fn past(
    query: &protocol::PastQuery,
    transport: Transport,
    store: &mut Store,
    stats: &mut Stats,
    (tag, start, body): (Option<&str>, usize, usize),
    out: &mut Vec<u8>,
) -> Outcome {
    if transport == Transport::Tcp {
        stats.tcp_reads += 1;
    } else {
        stats.udp_reads += 1;
    }
    let result = match transport {
        Transport::Tcp => history::cursor(store, query).map(Outcome::Stream),
        Transport::Udp {
            limit, raw: true, ..
        } => {
            let room = limit.saturating_sub(out.len() - start);
            history::fit_newest(store, query, room, UDP_SCAN, out).map(|()| Outcome::Replied)
        }
        Transport::Udp {
            limit, raw: false, ..
        } => history::cursor(store, query).and_then(|mut c| {
            // One byte over the limit is enough to know it does not fit.
            let room = (limit + 1).saturating_sub(out.len() - start);
            let done = history::fill(store, &mut c, out, room, UDP_SCAN)?;
            if let (false, Some(tag)) = (done, tag)
                && out.len() - start <= limit
            {
                // Too much to look through for one datagram: as
                // for a reply too big, the client asks over TCP.
                out.truncate(start);
                protocol::push_truncated(out, tag);
            }
            Ok(Outcome::Replied)
        }),
    };
    result.unwrap_or_else(|e| {
        // The tag line stays: the error answers the same request.
        out.truncate(body);
        protocol::push_read_error(out, &e);
        Outcome::Replied
    })
}
