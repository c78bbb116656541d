//! HTTP/1.1 as the web side speaks it: a request's head parsed with
//! `httparse` and its body by `Content-Length`, within size limits; and
//! response heads with the security headers every response carries.
//!
//! It owns no sockets, and imports only the session cookie's name.

use std::fmt::Write as _;

/// Largest request head; a bigger one gets 431.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Headers read from a request; more get 431.
const MAX_HEADERS: usize = 48;

/// What the page may load and run: only its own files, no inline script
/// or style, no frames, nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; manifest-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One parsed request; every slice borrows the connection's input.
#[derive(Debug)]
pub(crate) struct HttpRequest<'a> {
    pub(crate) method: &'a str,
    /// The path without its query.
    pub(crate) path: &'a str,
    pub(crate) query: &'a str,
    pub(crate) host: Option<&'a str>,
    pub(crate) origin: Option<&'a str>,
    /// `Sec-Fetch-Site`, which browsers send with every request.
    pub(crate) fetch_site: Option<&'a str>,
    pub(crate) cookie: Option<&'a str>,
    pub(crate) last_event_id: Option<&'a str>,
    /// The client asked to close after this request (or spoke HTTP/1.0).
    pub(crate) close: bool,
    pub(crate) body: &'a [u8],
}

/// What the input holds.
#[derive(Debug)]
pub(crate) enum Parsed<'a> {
    /// Not a whole request yet.
    Partial,
    /// A request, and how many input bytes it took.
    Request(HttpRequest<'a>, usize),
    /// A request that will not be served: status and why. The
    /// connection closes after the answer (its framing is lost).
    Bad(u16, &'static str),
}

/// Parses the request at the start of `input`; bodies over `max_body` are refused.
pub(crate) fn parse(input: &[u8], max_body: usize) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
            return Parsed::Bad(431, "request head too large");
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Bad(431, "too many headers"),
        Err(_) => return Parsed::Bad(400, "not an HTTP/1.1 request"),
    };
    if head_len > MAX_HEAD {
        return Parsed::Bad(431, "request head too large");
    }
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Parsed::Bad(400, "not an HTTP/1.1 request");
    };
    let version_1_0 = request.version == Some(0);
    let mut length = 0usize;
    let mut parsed = HttpRequest {
        method,
        path: target,
        query: "",
        host: None,
        origin: None,
        fetch_site: None,
        cookie: None,
        last_event_id: None,
        close: version_1_0,
        body: &[],
    };
    if let Some((path, query)) = target.split_once('?') {
        parsed.path = path;
        parsed.query = query;
    }
    for header in request.headers.iter() {
        let Ok(value) = std::str::from_utf8(header.value) else {
            continue;
        };
        let value = value.trim();
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) => length = n,
                Err(_) => return Parsed::Bad(400, "bad Content-Length"),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad(411, "send the body with a Content-Length");
        } else if name.eq_ignore_ascii_case("host") {
            parsed.host = Some(value);
        } else if name.eq_ignore_ascii_case("origin") {
            parsed.origin = Some(value);
        } else if name.eq_ignore_ascii_case("sec-fetch-site") {
            parsed.fetch_site = Some(value);
        } else if name.eq_ignore_ascii_case("cookie") {
            parsed.cookie = parsed.cookie.or_else(|| cookie_value(value));
        } else if name.eq_ignore_ascii_case("last-event-id") {
            parsed.last_event_id = Some(value);
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                parsed.close = true;
            } else if value.contains("keep-alive") {
                parsed.close = false;
            }
        }
    }
    if length > max_body {
        return Parsed::Bad(413, "request body too large");
    }
    let Some(body) = input.get(head_len..head_len + length) else {
        return Parsed::Partial;
    };
    parsed.body = body;
    Parsed::Request(parsed, head_len + length)
}

/// The session cookie's value in a `Cookie` header.
fn cookie_value(header: &str) -> Option<&str> {
    let name = crate::server::access::web_sessions::COOKIE_NAME;
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A query parameter's value (not percent-decoded: the page sends digits).
pub(crate) fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then_some(v)
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// This many bytes follow.
    Length(usize),
    /// Chunks follow, ended by an empty one ([`push_chunk`]).
    Chunked,
    /// The body runs until the connection closes (an event stream).
    UntilClose,
}

/// Queues a response head. `extra` holds further header lines, each
/// ending in `\r\n`.
pub(crate) fn push_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: Body,
    extra: &str,
    close: bool,
) {
    let mut head = String::with_capacity(512);
    let _ = write!(
        head,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\n",
        reason(status)
    );
    match body {
        Body::Length(n) => {
            let _ = write!(head, "Content-Length: {n}\r\n");
        }
        Body::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
        Body::UntilClose => {}
    }
    let _ = write!(
        head,
        "Content-Security-Policy: {CSP}\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\n\
         X-Frame-Options: DENY\r\n\
         Cross-Origin-Opener-Policy: same-origin\r\n\
         Cross-Origin-Resource-Policy: same-origin\r\n"
    );
    head.push_str(extra);
    if close || body == Body::UntilClose {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
}

/// Queues a whole response.
pub(crate) fn push_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra: &str,
    body: &[u8],
    close: bool,
) {
    push_head(
        out,
        status,
        content_type,
        Body::Length(body.len()),
        extra,
        close,
    );
    out.extend_from_slice(body);
}

/// Queues a plain-text response: errors, and replies of the text protocol.
pub(crate) fn push_text(out: &mut Vec<u8>, status: u16, text: &[u8], close: bool) {
    push_response(
        out,
        status,
        "text/plain; charset=utf-8",
        "Cache-Control: no-store\r\n",
        text,
        close,
    );
}

/// Queues one chunk of a chunked body; an empty one ends it.
pub(crate) fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_a_body_and_the_headers_that_matter() {
        let raw = b"POST /api?x=1 HTTP/1.1\r\nHost: h:1\r\nOrigin: http://h:1\r\n\
                    Cookie: a=b; diary_session=abc; c=d\r\nContent-Length: 5\r\n\r\nhello+next";
        let Parsed::Request(r, used) = parse(raw, 100) else {
            panic!("not parsed");
        };
        assert_eq!((r.method, r.path, r.query), ("POST", "/api", "x=1"));
        assert_eq!(r.host, Some("h:1"));
        assert_eq!(r.origin, Some("http://h:1"));
        assert_eq!(r.cookie, Some("abc"));
        assert_eq!(r.body, b"hello");
        assert!(!r.close);
        assert_eq!(&raw[used..], b"+next");
    }

    #[test]
    fn partial_oversized_and_broken_requests() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost:", 10),
            Parsed::Partial
        ));
        let half = b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc";
        assert!(matches!(parse(half, 10), Parsed::Partial));
        assert!(matches!(parse(half, 8), Parsed::Bad(413, _)));
        assert!(matches!(
            parse(b"\x00\x01garbage\r\n\r\n", 10),
            Parsed::Bad(400, _)
        ));
        let huge = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert!(matches!(parse(&huge, 10), Parsed::Bad(431, _)));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse(chunked, 10), Parsed::Bad(411, _)));
        let old = b"GET / HTTP/1.0\r\n\r\n";
        assert!(matches!(parse(old, 10), Parsed::Request(r, _) if r.close));
    }

    #[test]
    fn every_response_carries_the_security_headers() {
        let mut out = Vec::new();
        push_text(&mut out, 401, b"log in", false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        for header in [
            "Content-Security-Policy: default-src 'none'",
            "X-Content-Type-Options: nosniff",
            "Referrer-Policy: no-referrer",
            "Content-Length: 6\r\n",
        ] {
            assert!(text.contains(header), "{header} missing from {text}");
        }
        assert!(text.ends_with("\r\n\r\nlog in"));
        let mut chunk = Vec::new();
        push_chunk(&mut chunk, b"0123456789abcdef0");
        assert_eq!(chunk, b"11\r\n0123456789abcdef0\r\n");
    }
}
