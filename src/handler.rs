//! The command handler shared by both transports: [`Request`] → reply bytes,
//! over the [`Store`]. It knows no sockets; the transport says only how big a
//! reply may be ([`Transport`]).

use crate::entry;
use crate::protocol::{self, BYE, Command, END, HELP, PastQuery, Request, Since};
use crate::store::Store;
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::time::Instant;

/// Where a request came from, as far as the reply's shape is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One datagram answers, of at most `limit` bytes; `raw` when the
    /// request had no `/id` envelope; `cookie` is the source's address cookie.
    Udp {
        limit: usize,
        raw: bool,
        cookie: Cookie,
    },
    /// A stream: replies of any size, sent as the client reads them.
    Tcp,
}

/// A UDP address cookie, as the hex text sent to the client.
pub type Cookie = [u8; 16];

/// What the transport must do after [`Handler::handle`].
#[derive(Debug)]
pub enum Outcome {
    /// The whole reply is in the output.
    Replied,
    /// An entry was buffered; its `ok` line starts at `ack_at` in the output
    /// and must be replaced by an error if the commit fails.
    Wrote { id: u64, ack_at: usize },
    /// `bye` is in the output; a TCP session ends once it is sent.
    Quit,
    /// TCP only: the rest of the reply comes from [`Handler::fill`].
    Stream(PastCursor),
    /// TCP only: entries after `after` and then new ones (see the follow module).
    Follow { after: u64 },
}

/// Figures for `/stats`, kept by the handler and the event loop.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub udp_writes: u64,
    pub tcp_writes: u64,
    pub udp_reads: u64,
    pub tcp_reads: u64,
    pub tcp_clients: u64,
    /// UDP source addresses heard from in the last minute.
    pub udp_sources: u64,
    pub followers: u64,
    pub dropped_followers: u64,
    /// Most reply bytes ever queued for one follower.
    pub follower_queue_peak: u64,
    pub failed_commits: u64,
}

/// A TCP `/past` reply still to be sent: entries `next..end` (ids, end exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastCursor {
    next: u64,
    end: u64,
    grep: Option<Box<str>>,
}

/// Where to stop: a reply reads at most this much of the file per fill.
const FILL_CHUNK: usize = 64 * 1024;
/// Room kept in a raw datagram for the "left out" line.
const NOTICE_ROOM: usize = 100;

pub struct Handler {
    store: Store,
    pub stats: Stats,
    started: Instant,
}

impl Handler {
    pub fn new(store: Store) -> Handler {
        Handler {
            store,
            stats: Stats::default(),
            started: Instant::now(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Answers one request, appending the reply to `out`.
    pub fn handle(&mut self, req: &Request, transport: Transport, out: &mut Vec<u8>) -> Outcome {
        let start = out.len();
        let tag = req.envelope.map(|e| e.tag);
        if let Some(tag) = tag {
            protocol::push_tag(out, tag);
        }
        let outcome = match &req.command {
            Err(e) => {
                protocol::push_error(out, e.code(), e);
                Outcome::Replied
            }
            Ok(command) => self.run(command, transport, start, out),
        };
        if let Transport::Udp { limit, .. } = transport
            && out.len() - start > limit
        {
            match (&outcome, tag) {
                // The entry is stored either way: say so in as few bytes as needed.
                (Outcome::Wrote { id, ack_at }, _) => {
                    shorten_ack(out, *ack_at, *id, limit - (ack_at - start))
                }
                (_, Some(tag)) => {
                    out.truncate(start);
                    protocol::push_truncated(out, tag);
                }
                (_, None) => cut_to_limit(out, start, limit),
            }
        }
        outcome
    }

    fn run(
        &mut self,
        command: &Command,
        transport: Transport,
        start: usize,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let tcp = transport == Transport::Tcp;
        match command {
            Command::Write(text) => {
                if tcp {
                    self.stats.tcp_writes += 1;
                } else {
                    self.stats.udp_writes += 1;
                }
                let entry = self.store.append(text);
                let ack_at = out.len();
                protocol::push_ack(out, entry.id_text, entry.timestamp);
                Outcome::Wrote {
                    id: entry.id,
                    ack_at,
                }
            }
            Command::Help => {
                out.extend_from_slice(HELP.as_bytes());
                out.extend_from_slice(END);
                Outcome::Replied
            }
            Command::Quit => {
                out.extend_from_slice(BYE);
                Outcome::Quit
            }
            Command::Stats => {
                self.push_stats(out);
                Outcome::Replied
            }
            Command::Cookie => {
                match transport {
                    Transport::Udp { cookie, .. } => {
                        out.extend_from_slice(b"cookie ");
                        out.extend_from_slice(&cookie);
                        out.push(b'\n');
                    }
                    Transport::Tcp => protocol::push_error(
                        out,
                        "udp-only",
                        &"/cookie is for UDP; over TCP replies have no size limit",
                    ),
                }
                Outcome::Replied
            }
            Command::Follow { after } => {
                if tcp {
                    Outcome::Follow { after: *after }
                } else {
                    protocol::push_error(
                        out,
                        "tcp-only",
                        &"/follow needs a TCP connection (nc HOST PORT, or diary follow)",
                    );
                    Outcome::Replied
                }
            }
            Command::Past { query, .. } => {
                if tcp {
                    self.stats.tcp_reads += 1;
                } else {
                    self.stats.udp_reads += 1;
                }
                let result = match transport {
                    Transport::Tcp => self.cursor(query).map(Outcome::Stream),
                    Transport::Udp {
                        limit, raw: true, ..
                    } => {
                        let room = limit.saturating_sub(out.len() - start);
                        self.fit_newest(query, room, out).map(|()| Outcome::Replied)
                    }
                    Transport::Udp {
                        limit, raw: false, ..
                    } => self.cursor(query).and_then(|mut c| {
                        // One byte over the limit is enough to know it does not fit.
                        let room = (limit + 1).saturating_sub(out.len() - start);
                        self.fill(&mut c, out, room)?;
                        Ok(Outcome::Replied)
                    }),
                };
                result.unwrap_or_else(|e| {
                    out.truncate(start);
                    protocol::push_error(out, "io", &format_args!("cannot read the diary: {e}"));
                    Outcome::Replied
                })
            }
        }
    }

    /// The entries a query selects, as a cursor to stream oldest first.
    pub fn cursor(&self, query: &PastQuery) -> io::Result<PastCursor> {
        let end = self.store.len() + 1;
        let first = self.first_selected(query.since).min(end);
        let grep = query.grep.map(Box::from);
        let first = match (query.last, &grep) {
            (None, _) => first,
            (Some(n), None) => first.max(end.saturating_sub(n)),
            (Some(n), Some(words)) => {
                let mut start = end;
                let mut found = 0;
                self.store.for_each_rev(first, end, |id, line| {
                    if found == n {
                        return ControlFlow::Break(());
                    }
                    if line_contains(line, words) {
                        found += 1;
                        start = id;
                    }
                    ControlFlow::Continue(())
                })?;
                start
            }
        };
        Ok(PastCursor {
            next: first,
            end,
            grep,
        })
    }

    fn first_selected(&self, since: Option<Since>) -> u64 {
        match since {
            None => 1,
            Some(Since::Id(id)) => id.saturating_add(1),
            Some(Since::Time(ms)) => self.store.first_at_or_after(ms),
        }
    }

    /// Appends about `budget` more bytes of the reply (at least one entry);
    /// once the cursor is used up, appends the end line and returns true.
    pub fn fill(
        &self,
        cursor: &mut PastCursor,
        out: &mut Vec<u8>,
        budget: usize,
    ) -> io::Result<bool> {
        let target = out.len() + budget;
        let end = cursor.end;
        if cursor.next < end {
            let chunk = budget.clamp(1, FILL_CHUNK);
            let mut next = cursor.next;
            self.store.for_each(cursor.next, end, chunk, |id, line| {
                if out.len() >= target {
                    return ControlFlow::Break(());
                }
                if cursor
                    .grep
                    .as_deref()
                    .is_none_or(|w| line_contains(line, w))
                {
                    out.extend_from_slice(line);
                }
                next = id + 1;
                ControlFlow::Continue(())
            })?;
            cursor.next = next;
        }
        if cursor.next >= end {
            out.extend_from_slice(END);
            return Ok(true);
        }
        Ok(false)
    }

    /// Appends whole committed entries from `*next` on while they fit in
    /// `room` bytes, advancing `*next`.
    pub fn fill_follow(&self, next: &mut u64, out: &mut Vec<u8>, room: usize) -> io::Result<()> {
        let end = self.store.len() + 1;
        let mut left = room;
        let mut cursor = *next;
        if cursor >= end {
            return Ok(());
        }
        self.store
            .for_each(cursor, end, room.clamp(1, FILL_CHUNK), |id, line| {
                if line.len() > left {
                    return ControlFlow::Break(());
                }
                left -= line.len();
                out.extend_from_slice(line);
                cursor = id + 1;
                ControlFlow::Continue(())
            })?;
        *next = cursor;
        Ok(())
    }

    /// The seed's `p` over raw UDP: the newest selected entries that fit in
    /// `room` bytes, oldest first, after a line saying how many were left out.
    fn fit_newest(&self, query: &PastQuery, room: usize, out: &mut Vec<u8>) -> io::Result<()> {
        let end = self.store.len() + 1;
        let first = self.first_selected(query.since).min(end);
        let wanted = query.last.unwrap_or(u64::MAX);
        let budget = room.saturating_sub(END.len() + NOTICE_ROOM);
        let mut shown: Vec<u8> = Vec::new();
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        let mut selected = 0u64;
        let mut full = false;
        self.store.for_each_rev(first, end, |_, line| {
            if selected == wanted {
                return ControlFlow::Break(());
            }
            if query.grep.is_some_and(|w| !line_contains(line, w)) {
                return ControlFlow::Continue(());
            }
            selected += 1;
            if !full && shown.len() + line.len() < budget {
                let at = shown.len();
                shown.extend_from_slice(line);
                shown.push(b'\n');
                ranges.push((at, shown.len()));
            } else {
                full = true;
                if query.grep.is_none() {
                    // The rest is only counted, and without grep the index counts it.
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })?;
        if query.grep.is_none() {
            selected = wanted.min(end - first);
        }
        let left_out = selected - ranges.len() as u64;
        if left_out > 0 {
            let _ = writeln!(
                out,
                "# {left_out} older entries left out to fit one datagram; \
                 send \"/past {selected}\" over TCP to the same port to see them"
            );
        }
        for &(from, to) in ranges.iter().rev() {
            out.extend_from_slice(&shown[from..to]);
        }
        out.extend_from_slice(END);
        Ok(())
    }

    fn push_stats(&self, out: &mut Vec<u8>) {
        let s = &self.stats;
        let _ = write!(
            out,
            "uptime_seconds {}\nentries {}\nbytes {}\ntcp_clients {}\nudp_clients_last_minute {}\n\
             followers {}\ndropped_followers {}\nfollower_queue_peak_bytes {}\n\
             udp_writes {}\ntcp_writes {}\nudp_reads {}\ntcp_reads {}\nfailed_commits {}\n",
            self.started.elapsed().as_secs(),
            self.store.len(),
            self.store.bytes(),
            s.tcp_clients,
            s.udp_sources,
            s.followers,
            s.dropped_followers,
            s.follower_queue_peak,
            s.udp_writes,
            s.tcp_writes,
            s.udp_reads,
            s.tcp_reads,
            s.failed_commits,
        );
        out.extend_from_slice(END);
    }
}

/// Whether the text of a stored line (with or without its newline) contains `words`.
fn line_contains(line: &[u8], words: &str) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let Ok(line) = entry::decode_line(line) else {
        return false;
    };
    if line.escaped_text.contains('\\') {
        line.text().contains(words)
    } else {
        line.escaped_text.contains(words)
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
