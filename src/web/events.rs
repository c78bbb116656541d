//! Server-sent events (`text/event-stream`): the lines a follower is fed
//! (see `tcp/follow.rs`), each made one event. An entry's id is the event
//! id, so a browser that reconnects sends `Last-Event-ID` and the follow
//! resumes after it with no gap and no double.
//!
//! It may import nothing else of the crate.

/// Milliseconds a browser waits before reconnecting a dropped stream.
pub(crate) const RETRY_MS: u32 = 1000;

/// The start of a stream: the reconnect delay.
pub(crate) fn push_start(out: &mut Vec<u8>) {
    out.extend_from_slice(format!("retry: {RETRY_MS}\n\n").as_bytes());
}

/// A comment that keeps proxies and idle timers from closing the stream.
pub(crate) fn push_keepalive(out: &mut Vec<u8>) {
    out.extend_from_slice(b": still here\n\n");
}

/// Appends `lines` (text-protocol lines, each ending in `\n`) as events:
/// an entry line as a message with the entry's id, a `# ` note as a
/// `note` event, an `err` line as a `refused` event. Entry text is
/// escaped in the protocol (no raw newline), so each line is one `data:`.
pub(crate) fn push_lines(out: &mut Vec<u8>, lines: &[u8]) {
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let id_len = line.iter().take_while(|b| b.is_ascii_digit()).count();
        if id_len > 0 && line.get(id_len) == Some(&b'\t') {
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(&line[..id_len]);
            out.push(b'\n');
        } else if line.starts_with(b"err ") {
            out.extend_from_slice(b"event: refused\n");
        } else {
            out.extend_from_slice(b"event: note\n");
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\n\n");
    }
}

/// Where a stream starts: after the `Last-Event-ID` a reconnecting browser
/// sends, else after the `since` the page asked for, else after the newest.
pub(crate) fn resume_after(last_event_id: Option<&str>, since: Option<&str>) -> Option<u64> {
    last_event_id
        .and_then(|id| id.trim().parse().ok())
        .or_else(|| since.and_then(|s| s.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_events_with_their_ids() {
        let mut out = Vec::new();
        push_lines(
            &mut out,
            b"# following entries after 4 in diary d1\n5\t2026-12-06T10:00:00.000+00:00\t\xe4\xbd\xa0\\n2\tby=x\nerr behind resume with \"/follow since 5\"\n",
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "event: note\ndata: # following entries after 4 in diary d1\n\n\
             id: 5\ndata: 5\t2026-12-06T10:00:00.000+00:00\t你\\n2\tby=x\n\n\
             event: refused\ndata: err behind resume with \"/follow since 5\"\n\n"
        );
    }

    #[test]
    fn the_browsers_last_event_id_wins_over_the_pages_start() {
        assert_eq!(resume_after(Some("17"), Some("3")), Some(17));
        assert_eq!(resume_after(None, Some("3")), Some(3));
        assert_eq!(resume_after(Some("junk"), None), None);
        assert_eq!(resume_after(None, None), None);
    }
}
