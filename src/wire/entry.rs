//! One diary entry as one line of text:
//! `ID<TAB>TIMESTAMP<TAB>TEXT[<TAB>KEY=VALUE]...\n`.
//!
//! The same bytes are the file's line and the wire's history line, so a
//! history reply is a slice of the file and needs no re-encoding. Inside TEXT,
//! backslash, newline, tab and carriage return are escaped so that one entry
//! is always one line and tabs are always field separators. Attributes after
//! the text (format 2 on) say more about the entry: `req=TAG` is the tag of
//! the request that wrote it, so that a retry is answered, not stored again,
//! even after a restart. Readers skip attributes they do not know.

use std::fmt;

/// A decoded line, borrowing from the bytes it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryLine<'a> {
    pub id: u64,
    /// The RFC 3339 timestamp exactly as stored.
    pub timestamp: &'a str,
    /// The timestamp as milliseconds since the Unix epoch.
    pub millis: i64,
    /// The text still escaped, as stored.
    pub escaped_text: &'a str,
    /// The attributes after the text, each with its leading tab; "" if none.
    pub attrs: &'a str,
}

impl<'a> EntryLine<'a> {
    /// The entry's text with escapes undone.
    pub fn text(&self) -> String {
        unescape(self.escaped_text).expect("decode_line checked the escapes")
    }

    /// The value of attribute `key`, still escaped.
    pub fn attr(&self, key: &str) -> Option<&'a str> {
        attr_in(self.attrs, key)
    }

    /// The tag of the request that wrote the entry.
    pub fn req(&self) -> Option<&'a str> {
        self.attr("req")
    }

    /// Who wrote the entry: a device's name, or the name a client gave.
    pub fn author(&self) -> Option<&'a str> {
        author_in(self.attrs)
    }
}

/// Whether `name` can be an author: 1 to 64 bytes, no space, control
/// character or backslash (so it is stored and sent as it is).
pub fn is_author_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
}

/// Why a stored line is not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    NotUtf8,
    /// An empty line.
    Blank,
    /// NUL bytes: a hole left by a torn write, never a person's edit.
    Hole,
    /// Ends in `\r`: saved with Windows line endings.
    CarriageReturn,
    /// No tab, but an id and spaces: fields separated by spaces.
    SpacesNotTabs,
    MissingField(&'static str),
    BadId,
    BadTimestamp,
    BadEscape,
    RawControl,
    BadAttribute,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::NotUtf8 => write!(f, "the line is not valid UTF-8"),
            LineError::Blank => write!(f, "the line is blank; remove it"),
            LineError::Hole => write!(
                f,
                "the line holds NUL bytes, the mark of a write torn by a crash or power cut"
            ),
            LineError::CarriageReturn => write!(
                f,
                "the line ends in a carriage return (Windows line endings); \
                 convert the file with dos2unix"
            ),
            LineError::SpacesNotTabs => write!(
                f,
                "the fields are separated by spaces; they must be separated by one tab each"
            ),
            LineError::BadAttribute => write!(
                f,
                "after the text, a tab must be followed by an attribute KEY=VALUE"
            ),
            LineError::MissingField(name) => write!(f, "the {name} field is missing"),
            LineError::BadId => write!(f, "the id is not a positive decimal number"),
            LineError::BadTimestamp => write!(f, "the timestamp is not RFC 3339"),
            LineError::BadEscape => write!(f, "the text has an unknown backslash escape"),
            LineError::RawControl => write!(f, "the text has a raw tab or control byte"),
        }
    }
}

/// Appends `text` with backslash, newline, tab and carriage return escaped.
pub fn escape_into(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    if !crate::wire::ascii::needs_escape(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\t' => b"\\t",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Undoes [`escape_into`]; `None` when an escape is unknown or unfinished.
pub fn unescape(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(out)
}

/// Appends a whole entry line without attributes, newline included.
pub fn encode_line(id: u64, timestamp: &str, text: &str, out: &mut Vec<u8>) {
    encode_line_digits(itoa::Buffer::new().format(id), timestamp, text, "", out);
}

/// Appends a whole entry line; `attrs` is "" or attributes as
/// [`EntryLine::attrs`] holds them (each with its leading tab), already
/// valid. The id comes in decimal: the store formats each id once, for the
/// line and for its acknowledgement.
pub fn encode_line_digits(id: &str, timestamp: &str, text: &str, attrs: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(id.as_bytes());
    out.push(b'\t');
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b'\t');
    escape_into(text, out);
    if !attrs.is_empty() {
        out.extend_from_slice(attrs.as_bytes());
    }
    out.push(b'\n');
}

/// Appends the `req=TAG` attribute (a protocol tag: letters, digits, `-`, `_`).
pub fn push_req_attr(tag: &str, attrs: &mut String) {
    attrs.push_str("\treq=");
    attrs.push_str(tag);
}

/// Appends the `by=NAME` attribute (a name [`is_author_name`] accepts).
pub fn push_by_attr(name: &str, attrs: &mut String) {
    debug_assert!(is_author_name(name));
    attrs.push_str("\tby=");
    attrs.push_str(name);
}

/// The attribute of an amendment (`amends=N`: its text replaces entry
/// N's) and of a deletion (`deletes=N`: entry N is hidden).
pub const AMENDS: &str = "amends";
/// The attribute naming who imported an entry (`-`: not known); its `by=`
/// is the author it was imported under, which nobody checked.
pub const IMPORTED: &str = "imported";
pub const DELETES: &str = "deletes";

/// Whether attribute key `key` makes its line an amendment or a deletion:
/// the one rule both scans and the store follow.
pub(crate) fn is_record_key(key: &[u8]) -> bool {
    key == AMENDS.as_bytes() || key == DELETES.as_bytes()
}

/// Whether `attrs` (each with its leading tab) make their line an
/// amendment or a deletion.
pub(crate) fn has_record_attr(attrs: &str) -> bool {
    attr_in(attrs, AMENDS).is_some() || attr_in(attrs, DELETES).is_some()
}

/// The value of attribute `key` among `attrs` (each with its leading
/// tab, as in [`EntryLine::attrs`]), still escaped.
pub(crate) fn attr_in<'a>(attrs: &'a str, key: &str) -> Option<&'a str> {
    attrs
        .split('\t')
        .skip(1)
        .find_map(|a| a.strip_prefix(key)?.strip_prefix('='))
}

/// The author among `attrs` (`by=NAME`), as [`EntryLine::author`] reads it.
pub(crate) fn author_in(attrs: &str) -> Option<&str> {
    attr_in(attrs, "by")
}

/// The escaped text and the attributes of an entry line the store holds,
/// without checking the line again: it was checked when it was scanned or
/// written, and a read that filters every line of a large diary needs
/// only these. `None` for a line not in that shape.
pub(crate) fn stored_text_and_attrs(line: &[u8]) -> Option<(&str, &str)> {
    let rest = std::str::from_utf8(after_time(line)?).ok()?;
    Some(match memchr::memchr(b'\t', rest.as_bytes()) {
        Some(t3) => rest.split_at(t3),
        None => (rest, ""),
    })
}

/// The escaped text of an entry line the store holds, as bytes, found as
/// [`stored_text_and_attrs`] finds it.
pub(crate) fn stored_text(line: &[u8]) -> Option<&[u8]> {
    let rest = after_time(line)?;
    Some(&rest[..memchr::memchr(b'\t', rest).unwrap_or(rest.len())])
}

/// What follows an entry line's id and time.
fn after_time(line: &[u8]) -> Option<&[u8]> {
    let t1 = memchr::memchr(b'\t', line)?;
    let t2 = t1 + 1 + memchr::memchr(b'\t', &line[t1 + 1..])?;
    Some(&line[t2 + 1..])
}

/// Decodes one line, without its trailing newline.
pub fn decode_line(line: &[u8]) -> Result<EntryLine<'_>, LineError> {
    std::str::from_utf8(line)
        .map_err(|_| LineError::NotUtf8)
        .and_then(decode_fields)
        .map_err(|e| diagnose(line).unwrap_or(e))
}

/// As [`decode_line`], for a line already known to be UTF-8 (a reply line
/// the client has read as text).
pub fn decode_str(line: &str) -> Result<EntryLine<'_>, LineError> {
    decode_fields(line).map_err(|e| diagnose(line.as_bytes()).unwrap_or(e))
}

fn decode_fields(line: &str) -> Result<EntryLine<'_>, LineError> {
    // Tabs found with SIMD: startup decodes every line of the diary.
    let bytes = line.as_bytes();
    let t1 = memchr::memchr(b'\t', bytes).ok_or(LineError::MissingField("timestamp"))?;
    let t2 =
        t1 + 1 + memchr::memchr(b'\t', &bytes[t1 + 1..]).ok_or(LineError::MissingField("text"))?;
    let (escaped_text, attrs) = match memchr::memchr(b'\t', &bytes[t2 + 1..]) {
        // With its tab: the attributes are the rest of the line as stored.
        Some(t3) => (&line[t2 + 1..t2 + 1 + t3], &line[t2 + 1 + t3..]),
        None => (&line[t2 + 1..], ""),
    };
    let timestamp = &line[t1 + 1..t2];
    let id = parse_id(&line[..t1]).ok_or(LineError::BadId)?;
    let millis = parse_timestamp(timestamp).ok_or(LineError::BadTimestamp)?;
    check_escaped(escaped_text)?;
    check_attrs(attrs)?;
    Ok(EntryLine {
        id,
        timestamp,
        millis,
        escaped_text,
        attrs,
    })
}

/// The likely cause of a line that does not decode, for the causes a
/// person's edit or a crash leave.
fn diagnose(line: &[u8]) -> Option<LineError> {
    if line.is_empty() {
        Some(LineError::Blank)
    } else if line.contains(&0) {
        Some(LineError::Hole)
    } else if line.ends_with(b"\r") {
        Some(LineError::CarriageReturn)
    } else if !line.contains(&b'\t')
        && line.contains(&b' ')
        && line.first().is_some_and(u8::is_ascii_digit)
    {
        Some(LineError::SpacesNotTabs)
    } else {
        None
    }
}

/// Each attribute is `KEY=VALUE`: a key of lowercase letters, a value
/// escaped like text (so without raw control bytes).
fn check_attrs(attrs: &str) -> Result<(), LineError> {
    for attr in attrs.split('\t').skip(1) {
        let (key, value) = attr.split_once('=').ok_or(LineError::BadAttribute)?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(LineError::BadAttribute);
        }
        check_escaped(value).map_err(|_| LineError::BadAttribute)?;
    }
    Ok(())
}

fn parse_id(field: &str) -> Option<u64> {
    if field.is_empty() || field.starts_with('0') || !field.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    field.parse().ok()
}

fn check_escaped(text: &str) -> Result<(), LineError> {
    let bytes = text.as_bytes();
    // Tabs cannot be here: fields are split at them. The rest is searched
    // with SIMD, as startup checks every entry's text.
    if memchr::memchr2(0, b'\t', bytes).is_some() {
        return Err(LineError::RawControl);
    }
    let mut from = 0;
    while let Some(i) = memchr::memchr3(b'\\', b'\n', b'\r', &bytes[from..]) {
        let at = from + i;
        if bytes[at] != b'\\' {
            return Err(LineError::RawControl);
        }
        match bytes.get(at + 1) {
            Some(b'\\' | b'n' | b't' | b'r') => from = at + 2,
            _ => return Err(LineError::BadEscape),
        }
    }
    Ok(())
}

/// Parses an RFC 3339 timestamp with an offset into Unix milliseconds.
///
/// The store's own format (`2026-11-25T06:00:28.123+00:00`) takes a fast path
/// because startup parses one per entry; anything else RFC 3339 falls back to
/// chrono.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    fast_timestamp(s.as_bytes()).or_else(|| {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis())
    })
}

pub(crate) fn fast_timestamp(b: &[u8]) -> Option<i64> {
    // YYYY-MM-DDTHH:MM:SS.mmm+HH:MM
    if b.len() != 29
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[26] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in &b[range] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second, milli) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    let sign = match b[23] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (off_h, off_m) = (num(24..26)?, num(27..29)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if off_h > 23 || off_m > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs =
        days * 86_400 + hour * 3600 + minute * 60 + second - sign * (off_h * 3600 + off_m * 60);
    Some(secs * 1000 + milli)
}

/// Times of stored lines read one after another (a startup scan): most
/// share their minute and offset with the line before, so only the
/// seconds and milliseconds are new. Parsing every time whole was a
/// quarter of the scan's time.
#[derive(Debug, Default)]
pub(crate) struct TimeCache {
    /// `YYYY-MM-DDTHH:MM` and `+HH:MM` of the last time parsed whole, and
    /// that minute's start in milliseconds.
    minute: Option<([u8; 16], [u8; 6], i64)>,
}

impl TimeCache {
    /// What [`fast_timestamp`] says of `b`.
    pub(crate) fn millis(&mut self, b: &[u8]) -> Option<i64> {
        if let Some((minute, offset, start)) = &self.minute
            && b.len() == 29
            && b[..16] == minute[..]
            && b[23..] == offset[..]
            && b[16] == b':'
            && b[19] == b'.'
            && let Some(within) = within_minute(b)
        {
            return Some(start + within);
        }
        let millis = fast_timestamp(b)?;
        let start = millis - within_minute(b).expect("checked whole");
        let minute = b[..16].try_into().expect("16 bytes");
        let offset = b[23..].try_into().expect("6 bytes");
        self.minute = Some((minute, offset, start));
        Some(millis)
    }
}

/// The milliseconds since its minute of a 29-byte time (`SS.mmm`, at most
/// a leap second's 60), when they are digits in range.
fn within_minute(b: &[u8]) -> Option<i64> {
    let digit = |i: usize| Some(i64::from(b[i].wrapping_sub(b'0'))).filter(|&d| d <= 9);
    let second = digit(17)? * 10 + digit(18)?;
    let milli = digit(20)? * 100 + digit(21)? * 10 + digit(22)?;
    (second <= 60).then_some(second * 1000 + milli)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The store's timestamp format for `millis` in UTC: a canonical time for
/// a request.
pub fn format_timestamp_utc(millis: i64) -> String {
    use chrono::TimeZone;
    chrono::Utc
        .timestamp_millis_opt(millis)
        .single()
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3f+00:00")
        .to_string()
}

/// The store's timestamp format for `millis` in the server's local offset.
pub fn format_timestamp(millis: i64) -> String {
    use chrono::TimeZone;
    let utc = chrono::Utc
        .timestamp_millis_opt(millis)
        .single()
        .unwrap_or_default();
    utc.with_timezone(&chrono::Local)
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_round_trip() {
        for text in [
            "plain",
            "tab\there",
            "a\\b",
            "line\nbreak",
            "\r\n\\n",
            "中文日记",
            "",
        ] {
            let mut out = Vec::new();
            escape_into(text, &mut out);
            let escaped = String::from_utf8(out).unwrap();
            assert!(!escaped.contains(['\n', '\t', '\r']));
            assert_eq!(unescape(&escaped).as_deref(), Some(text));
        }
    }

    #[test]
    fn line_round_trips() {
        let ts = "2026-11-25T06:00:28.123+08:00";
        let mut out = Vec::new();
        encode_line(42, ts, "今天\t很好\\n", &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let line = decode_line(&out[..out.len() - 1]).unwrap();
        assert_eq!(line.id, 42);
        assert_eq!(line.timestamp, ts);
        assert_eq!(line.text(), "今天\t很好\\n");
    }

    #[test]
    fn stored_fields_are_the_decoded_ones() {
        for line in [
            "1\t2026-11-26T14:00:03.118+00:00\t今天下雨了",
            "2\t2026-11-26T14:00:03.118+00:00\ta \\t tab\treq=t-1\tby=me@laptop",
            "3\t2026-11-26T14:00:03Z\t\tby=x",
            "4\t2026-11-26T14:00:03.118+00:00\t",
        ] {
            let e = decode_line(line.as_bytes()).unwrap();
            let (text, attrs) = stored_text_and_attrs(line.as_bytes()).unwrap();
            assert_eq!((text, attrs), (e.escaped_text, e.attrs), "{line}");
            assert_eq!(author_in(attrs), e.author());
            assert_eq!(stored_text(line.as_bytes()), Some(text.as_bytes()));
        }
        assert_eq!(stored_text_and_attrs(b"no tabs"), None);
        assert_eq!(stored_text_and_attrs(b"1\tone tab"), None);
    }

    #[test]
    fn fast_timestamp_agrees_with_chrono() {
        for ts in [
            "2026-11-25T06:00:28.123+00:00",
            "2024-02-29T23:59:59.999-05:30",
            "1999-12-31T00:00:00.000+14:00",
        ] {
            let chrono_ms = chrono::DateTime::parse_from_rfc3339(ts)
                .unwrap()
                .timestamp_millis();
            assert_eq!(fast_timestamp(ts.as_bytes()), Some(chrono_ms), "{ts}");
        }
        assert_eq!(fast_timestamp(b"2023-02-29T00:00:00.000+00:00"), None);
    }

    proptest::proptest! {
        /// The cache gives what parsing each time whole gives, for times
        /// that share a minute or not, and for damaged ones.
        #[test]
        fn cached_times_agree_with_parsing_each_whole(
            times in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["2026-11-26T14:00", "2026-11-26T14:01", "2024-02-29T23:59", "2023-02-29T00:00"]),
                    0u32..62,
                    0u32..1000,
                    proptest::sample::select(vec!["+00:00", "-05:30", "+14:00"]),
                    proptest::option::of((0usize..29, proptest::num::u8::ANY)),
                ),
                0..40,
            ),
        ) {
            let mut cache = TimeCache::default();
            for (minute, second, milli, offset, damage) in times {
                let mut b = format!("{minute}:{second:02}.{milli:03}{offset}").into_bytes();
                if let Some((at, byte)) = damage {
                    b[at] = byte;
                }
                proptest::prop_assert_eq!(cache.millis(&b), fast_timestamp(&b), "{:?}", b);
            }
        }
    }

    #[test]
    fn formatted_timestamps_parse_back() {
        let ms = 1_795_000_000_123;
        assert_eq!(parse_timestamp(&format_timestamp(ms)), Some(ms));
    }

    #[test]
    fn bad_lines_are_rejected() {
        assert_eq!(
            decode_line(b"x\t2026-11-25T06:00:28.123+00:00\thi"),
            Err(LineError::BadId)
        );
        assert_eq!(
            decode_line(b"01\t2026-11-25T06:00:28.123+00:00\thi"),
            Err(LineError::BadId)
        );
        assert_eq!(
            decode_line(b"1\tyesterday\thi"),
            Err(LineError::BadTimestamp)
        );
        assert_eq!(
            decode_line(b"1\t2026-11-25T06:00:28.123+00:00\tbad\\q"),
            Err(LineError::BadEscape)
        );
        // A tab after the text starts an attribute (format 2), which `b` is not.
        assert_eq!(
            decode_line(b"1\t2026-11-25T06:00:28.123+00:00\ta\tb"),
            Err(LineError::BadAttribute)
        );
        assert_eq!(
            decode_line(b"1\t2026-11-25T06:00:28.123+00:00\ta\rb"),
            Err(LineError::RawControl)
        );
        assert_eq!(decode_line(b"1"), Err(LineError::MissingField("timestamp")));
        assert_eq!(decode_line(b"\xff"), Err(LineError::NotUtf8));
    }

    #[test]
    fn hand_edits_and_holes_are_named_for_what_they_are() {
        assert_eq!(decode_line(b""), Err(LineError::Blank));
        assert_eq!(
            decode_line(b"3 2026-11-25T06:00:28.123+00:00 hi"),
            Err(LineError::SpacesNotTabs)
        );
        assert_eq!(
            decode_line(b"3\t2026-11-25T06:00:28.123+00:00\thi\r"),
            Err(LineError::CarriageReturn)
        );
        assert_eq!(decode_line(b"\0\0\0\0"), Err(LineError::Hole));
        assert_eq!(
            decode_line(b"3\t2026-11-25T06:00:28.123+00:00\th\0i"),
            Err(LineError::Hole)
        );
        assert_eq!(
            decode_line(b"3\t2026-11-25T06:00:28.123+00:00\thi\tnot an attribute"),
            Err(LineError::BadAttribute)
        );
    }

    #[test]
    fn attributes_follow_the_text_and_round_trip() {
        let ts = "2026-11-25T06:00:28.123+08:00";
        let mut attrs = String::new();
        push_req_attr("a1-b2", &mut attrs);
        let mut out = Vec::new();
        encode_line_digits("9", ts, "tab\there", &attrs, &mut out);
        assert_eq!(
            out,
            b"9\t2026-11-25T06:00:28.123+08:00\ttab\\there\treq=a1-b2\n"
        );
        let line = decode_line(&out[..out.len() - 1]).unwrap();
        assert_eq!(line.text(), "tab\there");
        assert_eq!(line.req(), Some("a1-b2"));
        assert_eq!(line.attr("other"), None);
        let plain = decode_line(b"9\t2026-11-25T06:00:28.123+08:00\tx").unwrap();
        assert_eq!((plain.req(), plain.attrs), (None, ""));
    }
}
