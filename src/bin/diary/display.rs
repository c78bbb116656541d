//! How entries look to people: `ID  DATE TIME  TEXT`, times in the
//! reader's zone (`TZ` honoured) or in UTC, ids right-aligned to the widest
//! id shown, and the lines of a multi-line entry indented under its first.
//!
//! The file and the wire keep RFC 3339 with the writer's offset; only what
//! is printed for people changes zone. `diary past` prints hundreds of
//! thousands of lines, so a time is converted once per minute of the
//! diary, not once per entry.

use chrono::{DateTime, Local, Utc};
use diary::client::Entry;
use diary::wire::entry;
use std::io::{self, Write};

/// `text` as it may reach a terminal: every character that would act
/// instead of show (C0 controls but newline and tab, DEL, C1 controls,
/// bidi overrides and isolates) is written visibly as `\u{1b}`, so that an
/// entry, an author or a server's message can neither set the title, clear
/// the screen, move the cursor nor dress itself up as another line. Plain
/// text comes back borrowed. (`--json` keeps the exact text.)
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    fn acts(c: char) -> bool {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    }
    // Every such character starts with one of these bytes: most text, CJK
    // included, is passed over at byte speed (`past` prints whole diaries).
    let maybe = |b: &u8| *b < 0x20 || matches!(*b, 0x7f | 0xc2 | 0xd8 | 0xe2);
    if !text.as_bytes().iter().any(maybe) || !text.chars().any(acts) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if acts(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The zone times are shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The reader's (`TZ`, else the system's).
    Local,
    Utc,
}

/// Prints entries for people; keeps the id width and a cache of the last
/// minute converted.
#[derive(Debug, Clone)]
pub struct Display {
    zone: Zone,
    id_width: usize,
    /// The `YYYY-MM-DDTHH:MM` and offset of the last time converted, and
    /// what that minute is in the zone shown.
    minute_key: String,
    minute_shown: String,
}

/// Ids are at least this wide, so that short diaries line up too.
const MIN_ID_WIDTH: usize = 4;

impl Display {
    pub fn new(zone: Zone) -> Display {
        Display {
            zone,
            id_width: MIN_ID_WIDTH,
            minute_key: String::new(),
            minute_shown: String::new(),
        }
    }

    /// Makes room for ids up to `id`: the column stays aligned.
    pub fn fit_ids(&mut self, id: u64) {
        let digits = id.checked_ilog10().unwrap_or(0) as usize + 1;
        self.id_width = self.id_width.max(digits);
    }

    /// `2026-11-25T06:06:20.608+00:00` as `2026-11-25 14:06:20` (in a +08:00
    /// zone). A time it cannot read is shown as it is.
    pub fn time(&mut self, stamp: &str) -> String {
        let mut out = String::with_capacity(19);
        self.push_time(stamp, &mut out);
        out
    }

    fn push_time(&mut self, stamp: &str, out: &mut String) {
        // The key: the minute as written, and the offset after the seconds.
        let offset_at = stamp
            .get(19..)
            .and_then(|rest| rest.find(['+', '-', 'Z', 'z']))
            .map(|i| 19 + i);
        let (Some(minute), Some(seconds), Some(at)) =
            (stamp.get(..16), stamp.get(17..19), offset_at)
        else {
            out.push_str(stamp);
            return;
        };
        let offset = &stamp[at..];
        let hit = self.minute_key.len() == 16 + offset.len()
            && self.minute_key.starts_with(minute)
            && self.minute_key.ends_with(offset);
        if !hit {
            let Ok(time) = DateTime::parse_from_rfc3339(&stamp.to_ascii_uppercase()) else {
                out.push_str(stamp);
                return;
            };
            let shown = match self.zone {
                Zone::Local => time.with_timezone(&Local).naive_local(),
                Zone::Utc => time.with_timezone(&Utc).naive_local(),
            };
            // Zones are whole minutes apart: the seconds stay as written.
            self.minute_shown = shown.format("%Y-%m-%d %H:%M").to_string();
            self.minute_key.clear();
            self.minute_key.push_str(minute);
            self.minute_key.push_str(offset);
        }
        out.push_str(&self.minute_shown);
        out.push(':');
        out.push_str(seconds);
    }

    /// One entry: `ID  TIME  [AUTHOR] TEXT`, continuation lines indented.
    pub fn entry(&mut self, e: &Entry) -> String {
        self.fit_ids(e.id);
        let time = self.time(&e.time);
        let prefix = format!("{:>width$}  {time}  ", e.id, width = self.id_width);
        let prefix = match byline(e) {
            Some(by) => format!("{prefix}[{by}] "),
            None => prefix,
        };
        let prefix = match (e.amends, e.deletes) {
            (Some(n), _) => format!("{prefix}(#{n} now reads) "),
            (_, Some(n)) => return format!("{prefix}(#{n} deleted)"),
            _ => prefix,
        };
        let indent = " ".repeat(prefix.chars().count());
        let edited = if e.edited.is_some() { " (edited)" } else { "" };
        format!(
            "{prefix}{}{edited}",
            printable(&e.text).replace('\n', &format!("\n{indent}"))
        )
    }

    /// Writes an entry line of a reply as [`Display::entry`] shows it,
    /// straight from the line's bytes: no copies for the common entry
    /// without escapes. `false` when the line is not an entry.
    pub fn write_entry_line(&mut self, out: &mut impl Write, line: &str) -> io::Result<bool> {
        let Ok(e) = entry::decode_str(line) else {
            return Ok(false);
        };
        if !e.attrs.is_empty()
            && (e
                .attr("edited")
                .or(e.attr(entry::IMPORTED))
                .or(e.attr(entry::AMENDS))
                .or(e.attr(entry::DELETES)))
            .is_some()
        {
            // Rare: the general path says how it was changed.
            let parsed = diary::client::parse_entry(line).expect("decoded above");
            writeln!(out, "{}", self.entry(&parsed))?;
            return Ok(true);
        }
        self.fit_ids(e.id);
        let mut digits = itoa::Buffer::new();
        let id = digits.format(e.id);
        for _ in id.len()..self.id_width {
            out.write_all(b" ")?;
        }
        out.write_all(id.as_bytes())?;
        out.write_all(b"  ")?;
        let mut time = String::with_capacity(19);
        self.push_time(e.timestamp, &mut time);
        out.write_all(time.as_bytes())?;
        out.write_all(b"  ")?;
        let mut author_width = 0;
        if let Some(author) = e.author() {
            // Names are stored as they are: no escapes to undo.
            let author = printable(author);
            write!(out, "[{author}] ")?;
            author_width = author.chars().count() + 3;
        }
        if memchr::memchr(b'\\', e.escaped_text.as_bytes()).is_some() {
            let width = self.id_width + 2 + time.chars().count() + 2 + author_width;
            let indent = format!("\n{}", " ".repeat(width));
            out.write_all(printable(&e.text()).replace('\n', &indent).as_bytes())?;
        } else {
            out.write_all(printable(e.escaped_text).as_bytes())?;
        }
        out.write_all(b"\n")?;
        Ok(true)
    }
}

/// Who an entry is by, as people read it, escaped: its author, and for an
/// imported entry who imported it, always (the author is only what the
/// import said). `None` when neither is known.
pub fn byline(e: &Entry) -> Option<String> {
    let importer = match e.imported_by.as_deref() {
        Some("-") => Some("imported".to_string()),
        Some(by) => Some(format!("imported by {}", printable(by))),
        None => None,
    };
    match (&e.author, importer) {
        (Some(author), Some(importer)) => Some(format!("{}, {importer}", printable(author))),
        (Some(author), None) => Some(printable(author).into_owned()),
        (None, importer) => importer,
    }
}

/// The widest id among reply lines (ids ascend: the last entry's).
pub fn newest_id<'a>(lines: impl DoubleEndedIterator<Item = &'a String>) -> Option<u64> {
    lines
        .rev()
        .find_map(|l| entry::decode_line(l.as_bytes()).ok())
        .map(|e| e.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_would_act_on_a_terminal_is_shown_not_done() {
        for (text, shown) in [
            ("\u{1b}]0;pwned\u{7}title", "\\u{1b}]0;pwned\\u{7}title"),
            ("\u{1b}[2J", "\\u{1b}[2J"),
            (
                "fine\r  12  [laptop] forged",
                "fine\\u{d}  12  [laptop] forged",
            ),
            ("c1 \u{9b}31m and \u{85}", "c1 \\u{9b}31m and \\u{85}"),
            ("\u{202e}txt.exe", "\\u{202e}txt.exe"),
        ] {
            assert_eq!(printable(text), shown);
        }
        for plain in ["今天下雨了 🌧", "tab\there", "two\nlines", ""] {
            assert!(matches!(printable(plain), std::borrow::Cow::Borrowed(_)));
        }
        let mut display = Display::new(Zone::Utc);
        let e = Entry {
            id: 3,
            time: "2026-11-25T06:06:20.608+00:00".into(),
            author: Some("ev\u{1b}[1mil".into()),
            imported_by: None,
            text: "a\u{1b}[2Jb".into(),
            edited: None,
            amends: None,
            deletes: None,
        };
        let shown = display.entry(&e);
        assert!(!shown.contains('\u{1b}'), "{shown:?}");
        assert!(
            shown.ends_with("[ev\\u{1b}[1mil] a\\u{1b}[2Jb"),
            "{shown:?}"
        );
    }
    use diary::client::parse_entry;

    #[test]
    fn times_show_in_the_zone_asked_for() {
        let mut utc = Display::new(Zone::Utc);
        assert_eq!(
            utc.time("2026-11-25T14:06:20.608+08:00"),
            "2026-11-25 06:06:20"
        );
        assert_eq!(utc.time("2026-11-25T06:06:20Z"), "2026-11-25 06:06:20");
        assert_eq!(utc.time("2026-11-25t06:07:59z"), "2026-11-25 06:07:59");
        // The same minute in another offset is another minute.
        assert_eq!(
            utc.time("2026-11-25T06:07:01.000-05:00"),
            "2026-11-25 11:07:01"
        );
        assert_eq!(utc.time("not a time"), "not a time");
        assert_eq!(
            utc.time("2026-11-25T06:06:20.608"),
            "2026-11-25T06:06:20.608"
        );
    }

    #[test]
    fn entry_lines_print_as_entries_do_with_ids_aligned() {
        for line in [
            "7\t2026-11-25T06:06:20.608+00:00\tplain 中文",
            "12345\t2026-11-25T06:06:20.608+08:00\ttwo\\nlines and a \\\\ and \\t\treq=x-1",
            "8\t2026-11-25T06:06:20Z\ttwo\\nlines\treq=x-2\tby=me@laptop",
            "3\t2026-11-25T06:06:20Z\tan hand-written time",
            "4\t2026-11-25t06:06:20z\ta lowercase one",
        ] {
            let (mut a, mut b) = (Display::new(Zone::Utc), Display::new(Zone::Utc));
            let mut out = Vec::new();
            assert!(a.write_entry_line(&mut out, line).unwrap());
            let expected = format!("{}\n", b.entry(&parse_entry(line).unwrap()));
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{line}");
        }
        let mut d = Display::new(Zone::Utc);
        d.fit_ids(10_000);
        let mut out = Vec::new();
        d.write_entry_line(&mut out, "7\t2026-11-25T06:06:20Z\tx")
            .unwrap();
        d.write_entry_line(&mut out, "10000\t2026-11-25T06:06:20Z\ty")
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let starts: Vec<usize> = text.lines().map(|l| l.find("2026").unwrap()).collect();
        assert_eq!(starts, [7, 7], "{text}");
        assert!(!d.write_entry_line(&mut Vec::new(), "# a note").unwrap());
    }
}
