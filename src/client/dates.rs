//! What a person may write for "since" on the command line, read in the
//! reader's own time zone, and turned into a canonical value that the
//! server's grammar cannot take for anything else: an id, or an RFC 3339
//! time with milliseconds and an offset.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};

/// A point in the diary: after an entry, or from a moment on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Entries after this id.
    AfterId(u64),
    /// Entries written at or after this time (Unix milliseconds).
    From(i64),
}

impl Point {
    /// The value as the server's `/past … since VALUE` takes it.
    pub fn canonical(&self) -> String {
        match self {
            Point::AfterId(id) => id.to_string(),
            Point::From(ms) => crate::wire::entry::format_timestamp_utc(*ms),
        }
    }
}

/// The forms [`parse_point`] accepts, for error messages and help.
pub(crate) const FORMS: &str = "an entry id (120, or #2026: four digits alone are a year), today, yesterday, \"3 days ago\", \"5 hours ago\", \
     2026, 2026-11, 2026-11-25, 2026/11/25, \"2026-11-25 08:30\", \"2026-11-25 08:30:15\", \
     or RFC 3339 (2026-11-25T08:30:00+08:00)";

/// How much time a form names: its start is what `since` takes, its end
/// what `until` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Span {
    /// An entry id: `until` it means up to it, included.
    Id,
    /// An instant (to the millisecond).
    Instant,
    Second,
    Minute,
    Day(NaiveDate),
    Month(NaiveDate),
    Year(i32),
}

/// Parses `text` with `now` as the reader's present, in `now`'s zone (the
/// client passes `Local::now()`): where the span it names starts.
pub fn parse_point<Tz: TimeZone>(text: &str, now: DateTime<Tz>) -> Result<Point, String> {
    parse(text, &now).map(|(start, _)| start)
}

/// As [`parse_point`], for `until`: where the span `text` names ends
/// (excluded). `--until 2026-11-25` takes in the whole day, `--until 120`
/// entry 120, `--until "2026-11-25 08:30"` that whole minute.
pub fn parse_until<Tz: TimeZone>(text: &str, now: DateTime<Tz>) -> Result<Point, String> {
    let (start, span) = parse(text, &now)?;
    let Point::From(ms) = start else {
        return Ok(start);
    };
    let zone = now.timezone();
    let midnight = |date: NaiveDate| local_millis(&zone, date.and_time(NaiveTime::MIN), text);
    match span {
        Span::Id => Ok(start),
        Span::Instant => Ok(Point::From(ms + 1)),
        Span::Second => Ok(Point::From(ms + 1000)),
        Span::Minute => Ok(Point::From(ms + 60_000)),
        Span::Day(date) => midnight(date + Duration::days(1)),
        Span::Month(first) => midnight(
            first
                .checked_add_months(chrono::Months::new(1))
                .ok_or_else(|| format!("{text:?} is too far ahead"))?,
        ),
        Span::Year(year) => midnight(
            NaiveDate::from_ymd_opt(year + 1, 1, 1)
                .ok_or_else(|| format!("{text:?} is too far ahead"))?,
        ),
    }
}

fn parse<Tz: TimeZone>(text: &str, now: &DateTime<Tz>) -> Result<(Point, Span), String> {
    let text = text.trim();
    let refuse = || format!("{text:?} is not a date or an id; use {FORMS}");
    if text.is_empty() {
        return Err(refuse());
    }
    let id = text.strip_prefix('#').unwrap_or(text);
    let is_year = text.len() == 4 && (b"12".contains(&text.as_bytes()[0]));
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !is_year {
        return id
            .parse()
            .map(|id| (Point::AfterId(id), Span::Id))
            .map_err(|_| format!("{text:?} is too large for an entry id"));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok((Point::From(t.timestamp_millis()), Span::Instant));
    }
    for format in ["%Y-%m-%dT%H:%M%:z", "%Y-%m-%dT%H:%MZ"] {
        if let Ok(t) = DateTime::parse_from_str(&text.replace('Z', "+00:00"), format) {
            return Ok((Point::From(t.timestamp_millis()), Span::Minute));
        }
    }
    let zone = now.timezone();
    let day = |date: NaiveDate| {
        local_millis(&zone, date.and_time(NaiveTime::MIN), text).map(|p| (p, Span::Day(date)))
    };
    match text {
        "today" => return day(now.date_naive()),
        "yesterday" => return day(now.date_naive() - Duration::days(1)),
        _ => {}
    }
    if let Some(ago) = text.strip_suffix(" ago") {
        let (n, unit) = ago.split_once(' ').ok_or_else(refuse)?;
        let n: i64 = n.parse().map_err(|_| refuse())?;
        let step = match unit.trim_end_matches('s') {
            "minute" => Duration::minutes(n),
            "hour" => Duration::hours(n),
            "day" => return day(now.date_naive() - Duration::days(n)),
            "week" => return day(now.date_naive() - Duration::weeks(n)),
            _ => return Err(refuse()),
        };
        let at = (now.clone() - step).timestamp_millis();
        return Ok((Point::From(at), Span::Instant));
    }
    let text_dash = text.replace('/', "-");
    if let Ok(year) = text_dash.parse::<i32>() {
        let date = NaiveDate::from_ymd_opt(year, 1, 1).ok_or_else(refuse)?;
        return day(date).map(|(p, _)| (p, Span::Year(year)));
    }
    if let Ok(date) = NaiveDate::parse_from_str(&format!("{text_dash}-01"), "%Y-%m-%d")
        && text_dash.len() <= 7
    {
        return day(date).map(|(p, _)| (p, Span::Month(date)));
    }
    if let Ok(date) = NaiveDate::parse_from_str(&text_dash, "%Y-%m-%d") {
        return day(date);
    }
    for (format, span) in [
        ("%Y-%m-%d %H:%M:%S", Span::Second),
        ("%Y-%m-%d %H:%M", Span::Minute),
        ("%Y-%m-%dT%H:%M:%S", Span::Second),
        ("%Y-%m-%dT%H:%M", Span::Minute),
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&text_dash, format) {
            return local_millis(&zone, t, text).map(|p| (p, span));
        }
    }
    Err(refuse())
}

/// A wall-clock time in the reader's zone; in a gap of a DST change, the
/// moment just after it.
fn local_millis<Tz: TimeZone>(zone: &Tz, t: NaiveDateTime, text: &str) -> Result<Point, String> {
    zone.from_local_datetime(&t)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(t + Duration::hours(1)))
                .earliest()
        })
        .map(|t| Point::From(t.timestamp_millis()))
        .ok_or_else(|| format!("{text:?} does not exist in the local time zone"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn every_form_reads_in_the_local_zone() {
        let zone = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
        let now = zone
            .with_ymd_and_hms(2026, 11, 26, 15, 30, 0)
            .single()
            .unwrap();
        let p = |t| parse_point(t, now).unwrap();
        assert_eq!(p("120"), Point::AfterId(120));
        assert_eq!(p("#2026"), Point::AfterId(2026));
        assert_eq!(p("3000"), Point::AfterId(3000));
        assert_eq!(p("today"), Point::From(at("2026-11-26T00:00:00+08:00")));
        assert_eq!(p("yesterday"), Point::From(at("2026-11-25T00:00:00+08:00")));
        assert_eq!(
            p("3 days ago"),
            Point::From(at("2026-11-23T00:00:00+08:00"))
        );
        assert_eq!(
            p("5 hours ago"),
            Point::From(at("2026-11-26T10:30:00+08:00"))
        );
        assert_eq!(
            p("1 hour ago"),
            Point::From(at("2026-11-26T14:30:00+08:00"))
        );
        assert_eq!(p("2026"), Point::From(at("2026-01-01T00:00:00+08:00")));
        assert_eq!(p("2026-11"), Point::From(at("2026-11-01T00:00:00+08:00")));
        assert_eq!(
            p("2026-11-25"),
            Point::From(at("2026-11-25T00:00:00+08:00"))
        );
        assert_eq!(
            p("2026/11/25"),
            Point::From(at("2026-11-25T00:00:00+08:00"))
        );
        assert_eq!(
            p("2026-11-25 10:00"),
            Point::From(at("2026-11-25T10:00:00+08:00"))
        );
        assert_eq!(
            p("2026-11-25 10:00:05"),
            Point::From(at("2026-11-25T10:00:05+08:00"))
        );
        assert_eq!(
            p("2026-11-25T10:00"),
            Point::From(at("2026-11-25T10:00:00+08:00"))
        );
        assert_eq!(
            p("2026-11-25T10:00:00Z"),
            Point::From(at("2026-11-25T10:00:00+00:00"))
        );
        assert_eq!(
            p("2026-11-25T10:00+02:00"),
            Point::From(at("2026-11-25T08:00:00+00:00"))
        );
        for bad in [
            "",
            "3 grep dup",
            "tomorrow-ish",
            "2026-13",
            "2026-02-30",
            "5 fortnights ago",
        ] {
            let e = parse_point(bad, now).unwrap_err();
            assert!(
                e.contains("not a date") || e.contains("not exist"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            Point::From(at("2026-11-25T10:00:00+08:00")).canonical(),
            "2026-11-25T02:00:00.000+00:00"
        );
    }

    #[test]
    fn until_takes_in_the_whole_span_a_form_names() {
        let zone = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
        let now = zone
            .with_ymd_and_hms(2026, 11, 26, 15, 30, 0)
            .single()
            .unwrap();
        let u = |t| parse_until(t, now).unwrap();
        assert_eq!(u("120"), Point::AfterId(120));
        assert_eq!(u("today"), Point::From(at("2026-11-27T00:00:00+08:00")));
        assert_eq!(u("yesterday"), Point::From(at("2026-11-26T00:00:00+08:00")));
        assert_eq!(
            u("2 days ago"),
            Point::From(at("2026-11-25T00:00:00+08:00"))
        );
        assert_eq!(u("2026"), Point::From(at("2027-01-01T00:00:00+08:00")));
        assert_eq!(u("2026-12"), Point::From(at("2027-01-01T00:00:00+08:00")));
        assert_eq!(
            u("2026-11-25"),
            Point::From(at("2026-11-26T00:00:00+08:00"))
        );
        assert_eq!(
            u("2026-11-25 10:00"),
            Point::From(at("2026-11-25T10:01:00+08:00"))
        );
        assert_eq!(
            u("2026-11-25 10:00:05"),
            Point::From(at("2026-11-25T10:00:06+08:00"))
        );
        assert_eq!(
            u("2026-11-25T10:00:00.000Z"),
            Point::From(at("2026-11-25T10:00:00.001Z"))
        );
        assert!(parse_until("next tuesday", now).is_err());
    }
}
