//! Reading history out of the store: which entries a `/past` query selects,
//! a cursor that streams them oldest first in bounded pieces, the newest
//! that fit one datagram, and the committed entries a follower has not had.
//!
//! Every piece reads at most about `FILL_CHUNK` bytes of the file at a
//! time, so a reply costs memory in proportion to what it sends; a piece of
//! a streamed reply also looks at no more than a given share of the file,
//! so a search that matches rarely is spread over many turns of the loop
//! instead of holding it for the whole file.

use crate::protocol::{self, PastQuery, Since};
use crate::store::Store;
use crate::wire::entry;
use crate::wire::matching::{self, TextMatch, text_matches};
use std::borrow::Cow;
use std::io;

/// Most of the file a piece of a reply reads at once.
const FILL_CHUNK: usize = 64 * 1024;
/// Room kept in a raw datagram for the "left out" line.
const NOTICE_ROOM: usize = 100;

/// A `/past` reply still to be sent: entries `next..end` (ids, end
/// exclusive) that pass the filter.
#[derive(Debug, Clone)]
pub struct PastCursor {
    next: u64,
    end: u64,
    filter: Filter,
}

/// What a selected entry must satisfy besides its place in the range.
#[derive(Debug, Clone, Default)]
struct Filter {
    text: TextMatch,
    /// Amendment and deletion lines as they are, entries as first written.
    versions: bool,
    /// Written at or after this time. Times need not be in order, so the
    /// range only starts where such entries can begin; each is checked.
    from_millis: Option<i64>,
    /// Written before this time (each is checked).
    before_millis: Option<i64>,
}

impl Filter {
    fn new(query: &PastQuery) -> Filter {
        // Checked when the request was parsed; a pattern that no longer
        // compiles selects nothing rather than everything.
        let regex = query.regex.map(|r| {
            matching::compile_regex(r, query.ignore_case)
                .unwrap_or_else(|_| regex::Regex::new("[^\\s\\S]").expect("valid"))
        });
        Filter {
            text: TextMatch::new(
                query.grep.into_iter().flat_map(|g| g.split('\t')),
                query.ignore_case,
                query.tags.iter().copied(),
                regex,
                query.from,
            ),
            versions: query.versions,
            from_millis: match query.since {
                Some(Since::Time(ms)) => Some(ms),
                _ => None,
            },
            before_millis: match query.until {
                Some(Since::Time(ms)) => Some(ms),
                _ => None,
            },
        }
    }

    fn is_empty(&self) -> bool {
        self.text.is_empty() && self.from_millis.is_none() && self.before_millis.is_none()
    }

    /// Whether the index alone can count the selection: no filter, and
    /// no amendment or deletion to hide.
    fn counts_by_index(&self, store: &Store) -> bool {
        self.is_empty() && (self.versions || !store.has_edits())
    }

    /// Whether entries are shown as they are now (amended, deleted).
    fn current(&self, store: &Store) -> bool {
        !self.versions && store.has_edits()
    }

    /// Entry `id`'s line as the reply shows it, if the entry is selected:
    /// as it is now (amended; `None` when deleted) unless every version
    /// was asked for. Decided and shaped at once, so an amended entry's
    /// amendment is read once.
    fn view<'l>(&self, store: &Store, id: u64, line: &'l [u8]) -> Option<Cow<'l, [u8]>> {
        let line = if self.current(store) {
            match current_line(store, id, line)? {
                Some(now) => Cow::Owned(now),
                None => Cow::Borrowed(line),
            }
        } else {
            Cow::Borrowed(line)
        };
        let selected = self.from_millis.is_none_or(|ms| store.millis_of(id) >= ms)
            && self.before_millis.is_none_or(|ms| store.millis_of(id) < ms)
            && (self.text.is_empty() || text_matches(&self.text, &line));
        selected.then_some(line)
    }

    fn matches(&self, store: &Store, id: u64, line: &[u8]) -> bool {
        self.view(store, id, line).is_some()
    }

    /// A term every selected line holds as bytes, for the fast scan.
    fn needle(&self, store: &Store) -> Option<&str> {
        // An amended entry's words may be in its amendment only.
        if self.current(store) {
            return None;
        }
        self.text.needle()
    }
}

/// Entry `id` as it is now: `None` when it is hidden (deleted, or an
/// amendment or deletion line), `Some(None)` when it is as written, and
/// `Some(Some(line))` with an amendment's text: the entry's id, time and
/// author, the newest text, and `edited=ID` (that amendment's id).
fn current_line(store: &Store, id: u64, line: &[u8]) -> Option<Option<Vec<u8>>> {
    if store.is_record(id) {
        return None;
    }
    let Some(edit) = store.edit_of(id) else {
        return Some(None);
    };
    if edit.deleted {
        return None;
    }
    if edit.latest == 0 {
        return Some(None);
    }
    let amended = store.read_line(edit.latest).ok()?;
    let amended = entry::decode_line(&amended).ok()?;
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let original = entry::decode_line(line).ok()?;
    let mut out = Vec::with_capacity(line.len() + amended.escaped_text.len());
    let mut digits = itoa::Buffer::new();
    let mut attrs = String::new();
    if let Some(by) = original.author() {
        entry::push_by_attr(by, &mut attrs);
    }
    attrs.push_str("\tedited=");
    attrs.push_str(digits.format(edit.latest));
    let mut id_digits = itoa::Buffer::new();
    entry::encode_line_digits(
        id_digits.format(id),
        original.timestamp,
        &amended.text(),
        &attrs,
        &mut out,
    );
    Some(Some(out))
}

/// One past the last id a query may select.
fn end_selected(store: &Store, query: &PastQuery) -> u64 {
    let end = store.len() + 1;
    match query.until {
        Some(Since::Id(id)) => end.min(id.saturating_add(1)),
        _ => end,
    }
}

/// The entries a query selects, as a cursor to stream oldest first.
pub(crate) fn cursor(store: &Store, query: &PastQuery) -> io::Result<PastCursor> {
    let end = end_selected(store, query);
    let first = first_selected(store, query.since).min(end);
    let filter = Filter::new(query);
    let first = match query.last {
        None => first,
        Some(n) if filter.counts_by_index(store) => first.max(end.saturating_sub(n)),
        Some(n) => {
            let mut start = end;
            let mut found = 0;
            let mut lines = store.lines_rev(first, end);
            while found < n
                && let Some((id, line)) = lines.next_line()?
            {
                if filter.matches(store, id, line) {
                    found += 1;
                    start = id;
                }
            }
            start
        }
    };
    Ok(PastCursor {
        next: first,
        end,
        filter,
    })
}

fn first_selected(store: &Store, since: Option<Since>) -> u64 {
    match since {
        None => 1,
        Some(Since::Id(id)) => id.saturating_add(1),
        Some(Since::Time(ms)) => store.first_at_or_after(ms),
    }
}

/// Appends about `budget` more bytes of the reply, looking at entries
/// that take up at most about `scan` bytes of the file (at least one);
/// once the cursor is used up, appends the end line and returns true.
pub(crate) fn fill(
    store: &Store,
    cursor: &mut PastCursor,
    out: &mut Vec<u8>,
    budget: usize,
    scan: u64,
) -> io::Result<bool> {
    let target = out.len() + budget;
    let end = store.id_after_bytes(cursor.next, scan).min(cursor.end);
    if let Some(words) = cursor.filter.needle(store).map(str::to_owned)
        && cursor.next < end
    {
        // Only lines holding the words' bytes are looked at: grep's speed.
        let finder = memchr::memmem::Finder::new(words.as_bytes());
        let mut lines = store.lines(cursor.next, end, FILL_CHUNK);
        while out.len() < target
            && let Some((id, line)) = lines.next_holding(&finder)?
        {
            if let Some(shown) = cursor.filter.view(store, id, line) {
                out.extend_from_slice(&shown);
            }
        }
        cursor.next = lines.position();
    } else if cursor.next < end {
        let mut lines = store.lines(cursor.next, end, budget.clamp(1, FILL_CHUNK));
        while out.len() < target
            && let Some((id, line)) = lines.next_line()?
        {
            if let Some(shown) = cursor.filter.view(store, id, line) {
                out.extend_from_slice(&shown);
            }
        }
        cursor.next = lines.position();
    }
    if cursor.next >= cursor.end {
        protocol::push_end(out);
        return Ok(true);
    }
    Ok(false)
}

/// Appends whole entries from `*next` up to `end` (exclusive) while they
/// fit in `room` bytes, advancing `*next`.
pub(crate) fn fill_follow(
    store: &Store,
    next: &mut u64,
    end: u64,
    out: &mut Vec<u8>,
    room: usize,
) -> io::Result<()> {
    let mut left = room;
    if *next >= end {
        return Ok(());
    }
    let mut lines = store.lines(*next, end, room.clamp(1, FILL_CHUNK));
    while let Some((id, line)) = lines.next_line()? {
        if line.len() > left {
            break;
        }
        left -= line.len();
        out.extend_from_slice(line);
        *next = id + 1;
    }
    Ok(())
}

/// The seed's `p` over raw UDP: the newest selected entries that fit in
/// `room` bytes, oldest first, after a line saying how many were left out.
/// Entries that must each be looked at are looked for only among the
/// newest that take up `scan` bytes of the file; if the selection may go
/// on further back, the first line says so instead.
pub(crate) fn fit_newest(
    store: &Store,
    query: &PastQuery,
    room: usize,
    scan: u64,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let end = end_selected(store, query);
    let all = first_selected(store, query.since).min(end);
    let filter = Filter::new(query);
    let first = if filter.counts_by_index(store) {
        all
    } else {
        store.id_before_bytes(end, scan).max(all)
    };
    let wanted = query.last.unwrap_or(u64::MAX);
    let budget = room.saturating_sub(protocol::END.len() + NOTICE_ROOM);
    let mut shown: Vec<u8> = Vec::new();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut selected = 0u64;
    let mut full = false;
    let mut lines = store.lines_rev(first, end);
    while selected < wanted
        && let Some((id, line)) = lines.next_line()?
    {
        let Some(now) = filter.view(store, id, line) else {
            continue;
        };
        selected += 1;
        let line = now.strip_suffix(b"\n").unwrap_or(&now);
        if !full && shown.len() + line.len() < budget {
            let at = shown.len();
            shown.extend_from_slice(line);
            shown.push(b'\n');
            ranges.push((at, shown.len()));
        } else {
            full = true;
            if filter.counts_by_index(store) {
                // The rest is only counted, and without a filter the index counts it.
                break;
            }
        }
    }
    if filter.counts_by_index(store) {
        selected = wanted.min(end - first);
    }
    let left_out = selected - ranges.len() as u64;
    if first > all && selected < wanted {
        protocol::push_searched_newest(out, end - first);
    } else if left_out > 0 {
        protocol::push_left_out(out, left_out, selected);
    }
    for &(from, to) in ranges.iter().rev() {
        out.extend_from_slice(&shown[from..to]);
    }
    protocol::push_end(out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FsyncPolicy;

    fn text_of(line: &[u8]) -> String {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        entry::decode_line(line).unwrap().text()
    }

    fn select(store: &Store, query: PastQuery) -> Vec<String> {
        let mut cursor = cursor(store, &query).unwrap();
        let mut out = Vec::new();
        while !fill(store, &mut cursor, &mut out, 4096, u64::MAX).unwrap() {}
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty() && *l != b"end")
            .map(text_of)
            .collect()
    }

    #[test]
    fn tags_terms_case_and_regex_all_narrow_the_selection() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(&dir.path().join("d"), FsyncPolicy::Never).unwrap();
        for text in [
            "ran 5k #Health #run",
            "@Health check, no tag",
            "晚饭 #健康 #health",
            "C# is not a tag, #health-care is one",
            "line one\n#health on the second line",
        ] {
            store.append(text, None);
        }
        store.commit().unwrap();
        let q = PastQuery::default;
        let tags = |t: Vec<&'static str>| select(&store, PastQuery { tags: t, ..q() });
        assert_eq!(tags(vec!["health"]).len(), 3);
        assert_eq!(tags(vec!["HEALTH", "run"]), ["ran 5k #Health #run"]);
        assert_eq!(tags(vec!["健康"]), ["晚饭 #健康 #health"]);
        assert_eq!(tags(vec!["health-care"]).len(), 1);
        assert!(tags(vec!["c"]).is_empty());
        let grep = |g: &'static str, i: bool| {
            select(
                &store,
                PastQuery {
                    grep: Some(g),
                    ignore_case: i,
                    ..q()
                },
            )
        };
        assert_eq!(grep("Health", false).len(), 2);
        assert_eq!(grep("health", false).len(), 3);
        assert_eq!(grep("health", true).len(), 5);
        assert_eq!(grep("HEALTH\tcheck", true), ["@Health check, no tag"]);
        assert_eq!(grep("line\tsecond", false).len(), 1);
        let regex = |r: &'static str, i: bool| {
            select(
                &store,
                PastQuery {
                    regex: Some(r),
                    ignore_case: i,
                    ..q()
                },
            )
        };
        assert_eq!(regex(r"^\S+ \d+k", false), ["ran 5k #Health #run"]);
        assert_eq!(regex(r"^@health", true).len(), 1);
        assert_eq!(regex(r"one\n#", false).len(), 1);
        let mut tags_seen: Vec<String> = ["a #Tag and #tag, x#no, #新年快乐!"]
            .iter()
            .flat_map(|t| matching::tags_in(t).collect::<Vec<_>>())
            .collect();
        tags_seen.sort();
        assert_eq!(tags_seen, ["tag", "tag", "新年快乐"]);
    }

    /// The byte search finds exactly what decoding every entry finds,
    /// whatever lies in timestamps, attributes and escapes.
    #[test]
    fn grep_by_byte_search_agrees_with_decoding_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(&dir.path().join("d"), FsyncPolicy::Never).unwrap();
        let words = [
            "cat", "a\ncat", "猫 cat", "concat", "dog", "c\tat", "2026", "req", "\\cat",
        ];
        for i in 0..5000usize {
            let text = format!(
                "{} {i} {}",
                words[i % words.len()],
                words[(i * 7) % words.len()]
            );
            let tag = format!("t{i}");
            store.append(&text, (i % 3 == 0).then_some(tag.as_str()));
            if i % 100 == 0 {
                store.commit().unwrap();
            }
        }
        store.commit().unwrap();
        for needle in [
            "cat", "at", "猫", "2026", "req", "t1", "dog 1", "zzz", "n", "at c",
        ] {
            let mut slow = Vec::new();
            let mut lines = store.lines(1, store.len() + 1, 1 << 16);
            while let Some((_, line)) = lines.next_line().unwrap() {
                if text_of(line).contains(needle) {
                    slow.extend_from_slice(line);
                }
            }
            protocol::push_end(&mut slow);
            // By the words' bytes, and (ignoring case, which these lines
            // do not have) line by line; looking at the whole file at once,
            // or a line, or a few kilobytes per piece as a stream does.
            for ignore_case in [false, true] {
                for scan in [u64::MAX, 1, 3000] {
                    let query = PastQuery {
                        grep: Some(needle),
                        ignore_case,
                        ..PastQuery::default()
                    };
                    let mut cursor = cursor(&store, &query).unwrap();
                    let mut fast = Vec::new();
                    let mut pieces = 0;
                    while !fill(&store, &mut cursor, &mut fast, 4096, scan).unwrap() {
                        pieces += 1;
                    }
                    assert_eq!(
                        fast, slow,
                        "{needle:?} ignore_case {ignore_case} scan {scan}"
                    );
                    if scan == 1 {
                        assert!(pieces >= 4999, "one line looked at per piece: {pieces}");
                    }
                }
            }
        }
    }
}
