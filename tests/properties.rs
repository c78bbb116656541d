//! Property tests (run in CI): the store's line encoding is lossless for any
//! text a diary can hold, timestamps survive formatting, and neither the
//! request parser nor the TCP line framer can be made to panic or to hand on
//! something other than the lines that were sent.

use diary::protocol::{self, Command};
use diary::tcp::framing::{LineFrame, LineFramer};
use diary::wire::entry::{
    self, decode_line, encode_line, encode_line_digits, format_timestamp, parse_timestamp,
};
use proptest::prelude::*;

/// Text biased towards what the encoding has to get right: escapes,
/// backslashes before escape letters, CJK and astral characters, and runs
/// long enough to cross the 64 KiB entry limit.
fn diary_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\\".to_string()),
        Just("\\n".to_string()),
        Just("\n".to_string()),
        Just("\t".to_string()),
        Just("\r".to_string()),
        Just("日记".to_string()),
        Just("🦀".to_string()),
        "[^\u{0}]{0,8}",
        "\\PC{0,8}",
    ];
    prop_oneof![
        4 => prop::collection::vec(piece, 0..64).prop_map(|v| v.concat()),
        1 => ("[^\u{0}]", 1usize..70_000).prop_map(|(c, n)| c.repeat(n)),
    ]
}

const EPOCH_2200: i64 = 7_258_118_400_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_decode_is_the_identity(
        id in 1u64..=u64::MAX,
        millis in 0i64..EPOCH_2200,
        text in diary_text(),
    ) {
        let timestamp = format_timestamp(millis);
        let mut line = Vec::new();
        encode_line(id, &timestamp, &text, &mut line);
        prop_assert_eq!(line.last(), Some(&b'\n'));
        let body = &line[..line.len() - 1];
        prop_assert!(!body.contains(&b'\n'), "one entry must be one line");
        let decoded = decode_line(body).unwrap();
        prop_assert_eq!(decoded.id, id);
        prop_assert_eq!(decoded.timestamp, timestamp.as_str());
        prop_assert_eq!(decoded.millis, millis);
        prop_assert_eq!(decoded.text(), text);
    }

    #[test]
    fn unescape_undoes_escape(text in diary_text()) {
        let mut escaped = Vec::new();
        entry::escape_into(&text, &mut escaped);
        let escaped = String::from_utf8(escaped).unwrap();
        prop_assert!(!escaped.contains(['\n', '\t', '\r']));
        prop_assert_eq!(entry::unescape(&escaped), Some(text));
    }

    #[test]
    fn any_rfc3339_offset_parses_to_the_same_instant(
        millis in -EPOCH_2200..EPOCH_2200,
        offset_minutes in -(23 * 60 + 59)..=(23 * 60 + 59),
    ) {
        use chrono::{FixedOffset, TimeZone};
        let zone = FixedOffset::east_opt(offset_minutes * 60).unwrap();
        let at = zone.timestamp_millis_opt(millis).unwrap();
        let text = at.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string();
        prop_assert_eq!(parse_timestamp(&text), Some(millis), "{}", text);
    }

    #[test]
    fn decode_line_never_panics_and_accepts_only_what_it_can_encode_back(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            "[1-9][0-9]{0,3}\t2026-11-25T06:00:0[0-9].000\\+08:00\t[ -~日\\\\]{0,20}(\t[a-z]{1,4}=[ -~]{0,8}){0,3}"
                .prop_map(String::into_bytes),
        ],
    ) {
        if let Ok(line) = decode_line(&bytes) {
            let mut again = Vec::new();
            let id = line.id.to_string();
        encode_line_digits(&id, line.timestamp, &line.text(), line.attrs, &mut again);
            prop_assert_eq!(&again[..again.len() - 1], &bytes[..]);
        }
    }

    #[test]
    fn parse_never_panics_and_accepted_writes_are_storable(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            "(/id [a-z0-9]{1,4} (max=[0-9]{1,6} )?(cookie=[0-9a-f]{1,4} )?)?(/[a-z]{1,6}|/past|/stats|/follow|p|h|e)?( [ -~日]{0,30})?"
                .prop_map(String::into_bytes),
        ],
    ) {
        let request = protocol::parse(&bytes, 200);
        if let Ok(Command::Write(text)) = request.command {
            prop_assert!(!text.is_empty() && text.len() <= 200);
            prop_assert!(protocol::check_text(text.as_bytes()).is_ok());
            let mut line = Vec::new();
            encode_line(7, "2026-11-25T06:00:00.000+00:00", text, &mut line);
            prop_assert_eq!(decode_line(&line[..line.len() - 1]).unwrap().text(), text);
        }
    }

    /// The word-at-a-time scans against the rule written out byte by byte,
    /// on bytes that are mostly text with a few of anything mixed in.
    #[test]
    fn check_text_and_escape_follow_the_plain_rule(
        bytes in prop::collection::vec(
            prop_oneof![8 => 0x20u8..0x7f, 1 => any::<u8>()], 0..100),
        utf8 in "[ -~\t\\\\日é\u{7f}\u{1}]{0,60}",
    ) {
        for raw in [&bytes[..], utf8.as_bytes()] {
            let allowed = std::str::from_utf8(raw).is_ok()
                && raw.iter().all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t' || b == b'\n');
            prop_assert_eq!(protocol::check_text(raw).is_ok(), allowed);
            if let Ok(text) = std::str::from_utf8(raw) {
                let mut escaped = Vec::new();
                entry::escape_into(text, &mut escaped);
                let plain = !raw.iter().any(|b| b"\\\n\t\r".contains(b));
                prop_assert_eq!(escaped == raw, plain);
                let back = entry::unescape(std::str::from_utf8(&escaped).unwrap());
                prop_assert_eq!(back.as_deref(), Some(text));
            }
        }
    }

    #[test]
    fn framer_hands_on_exactly_the_lines_sent_whatever_the_chunking(
        lines in prop::collection::vec("[a-z日\r]{0,40}", 0..20),
        chunk in 1usize..64,
        max_line in 8usize..48,
    ) {
        let mut stream = Vec::new();
        for line in &lines {
            stream.extend_from_slice(line.as_bytes());
            stream.push(b'\n');
        }
        let mut framer = LineFramer::new(max_line);
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            framer.read_from(&mut &piece[..]).unwrap();
            while let Some(frame) = framer.peek() {
                match &frame {
                    LineFrame::Line(range) => {
                        got.push(Some(framer.line(range.clone()).to_vec()));
                    }
                    LineFrame::TooLong => got.push(None),
                }
                framer.consume(&frame);
            }
            prop_assert!(framer.buffered() <= max_line + 1 + chunk);
        }
        let expected: Vec<Option<Vec<u8>>> = lines
            .iter()
            .map(|l| {
                let l = l.strip_suffix('\r').unwrap_or(l);
                (l.len() <= max_line).then(|| l.as_bytes().to_vec())
            })
            .collect();
        prop_assert_eq!(got, expected);
    }
}
