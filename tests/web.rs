//! The web side over real HTTP on 127.0.0.1: logging in with the one-time
//! URL, what an unauthenticated or cross-site request gets, writes stored
//! once however often they are sent, the event stream and its resume
//! after `Last-Event-ID`, bad requests, logging out, and sessions that
//! outlive a restart. (The page itself, in a browser: tests/browser.rs.)

mod common;

use common::web::{Http, WebDaemon, api, free_port, log_in};
use common::{Daemon, file_entries, run_diary};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn without_a_session_the_api_says_401_and_shows_no_entry() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.log");
    let web = WebDaemon::start(&file);
    run_diary(web.addr, &["write", "a secret entry"], b"");
    let origin = web.origin();
    let mut http = Http::connect(web.web);
    let page = http.request("GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<script src=\"/app.js\""));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    for (method, path, body) in [
        ("POST", "/api", "p"),
        ("POST", "/api", "/past 10"),
        ("GET", "/api/events?since=0", ""),
    ] {
        let r = http.request(method, path, &[("Origin", &origin)], body.as_bytes());
        assert_eq!(r.status, 401, "{method} {path}");
        assert!(!r.text().contains("secret"), "{}", r.text());
        assert!(r.text().contains("diary web-login"));
    }
    let forged = http.request(
        "POST",
        "/api",
        &[("Origin", &origin), ("Cookie", "diary_session=00ff")],
        b"p",
    );
    assert_eq!(forged.status, 401);
    assert_eq!(http.request("GET", "/nothing", &[], b"").status, 404);
    assert_eq!(http.request("GET", "/api", &[], b"").status, 405);
}

#[test]
fn a_login_url_works_once_and_gives_an_httponly_strict_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let web = WebDaemon::start(&dir.path().join("d.log"));
    let token = web.login_url.split_once('#').unwrap().1;
    assert_eq!(token.len(), 32, "128 bits");
    assert!(
        web.login_url
            .starts_with(&format!("http://{}/login#", web.web))
    );
    let origin = web.origin();
    let mut http = Http::connect(web.web);
    // From another site, the token is not even looked at.
    let evil = http.request(
        "POST",
        "/api/login",
        &[("Origin", "http://evil.example")],
        token.as_bytes(),
    );
    assert_eq!(evil.status, 403);
    let ok = http.request(
        "POST",
        "/api/login",
        &[("Origin", &origin)],
        token.as_bytes(),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let cookie = ok.header("set-cookie").unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let again = http.request(
        "POST",
        "/api/login",
        &[("Origin", &origin)],
        token.as_bytes(),
    );
    assert_eq!(again.status, 403, "a login URL works once");
    assert!(again.text().contains("diary web-login"));
    // `diary web-login` on this machine makes another, with a name.
    let out = run_diary(web.addr, &["web-login", "phone"], b"");
    assert!(out.status.success(), "{out:?}");
    let url = String::from_utf8(out.stdout).unwrap();
    let cookie = log_in(web.web, url.trim());
    let (_, reply) = api(web.web, &cookie, "/id t1 /write from the phone");
    assert!(reply.starts_with("id t1\nok 1 "), "{reply}");
    let entries = std::fs::read_to_string(dir.path().join("d.log")).unwrap();
    assert!(
        entries.contains("from the phone\treq=t1\tby=phone"),
        "{entries}"
    );
    let sessions = run_diary(web.addr, &["web-sessions"], b"");
    let listed = String::from_utf8(sessions.stdout).unwrap();
    assert!(listed.contains("phone "), "{listed}");
}

#[test]
fn state_changing_requests_from_elsewhere_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let web = WebDaemon::start(&dir.path().join("d.log"));
    let cookie = format!("diary_session={}", web.log_in());
    let origin = web.origin();
    let mut http = Http::connect(web.web);
    for headers in [
        vec![("Cookie", cookie.as_str())],
        vec![
            ("Cookie", cookie.as_str()),
            ("Origin", "http://evil.example"),
        ],
        vec![
            ("Cookie", cookie.as_str()),
            ("Origin", origin.as_str()),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    ] {
        let r = http.request("POST", "/api", &headers, b"/write forged");
        assert_eq!(r.status, 403, "{headers:?}");
    }
    let events = http.request(
        "GET",
        "/api/events",
        &[("Cookie", &cookie), ("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(events.status, 403);
    assert!(file_entries(&dir.path().join("d.log")).is_empty());
}

#[test]
fn a_tagged_write_sent_again_is_stored_once_and_text_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.log");
    let web = WebDaemon::start(&file);
    let cookie = web.log_in();
    let text = "今天下雨了 🌧️ <b>bold?</b>";
    let first = api(web.web, &cookie, &format!("/id w1-1 /write {text}"));
    let second = api(web.web, &cookie, &format!("/id w1-1 /write {text}"));
    assert_eq!(first, second, "a retry gets the same ok");
    assert!(first.1.starts_with("id w1-1\nok 1 "), "{first:?}");
    // A paragraph from the multi-line box is one entry.
    let (_, para) = api(web.web, &cookie, "/id w1-2 /write line one\nline two");
    assert!(para.contains("ok 2 "), "{para}");
    let entries = file_entries(&file);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0].1, text);
    let out = run_diary(web.addr, &["past", "--json"], b"");
    let json = String::from_utf8(out.stdout).unwrap();
    assert!(json.contains("line one\\nline two"), "{json}");
    let (_, past) = api(web.web, &cookie, "/past 5");
    assert!(past.contains(text) && past.ends_with("end\n"), "{past}");
    // Bad input gets the protocol's error, and nothing is stored.
    let (status, bad) = api(web.web, &cookie, "/write ");
    assert_eq!(status, 200);
    assert!(bad.starts_with("err empty"), "{bad}");
    let mut http = Http::connect(web.web);
    let origin = web.origin();
    let cookie_header = format!("diary_session={cookie}");
    let headers = [
        ("Origin", origin.as_str()),
        ("Cookie", cookie_header.as_str()),
    ];
    let invalid = http.request("POST", "/api", &headers, b"/write \xff\xfe");
    assert!(
        invalid.text().starts_with("err bad-utf8"),
        "{}",
        invalid.text()
    );
    let follow = http.request("POST", "/api", &headers, b"/follow");
    assert!(follow.text().contains("/api/events"), "{}", follow.text());
    assert_eq!(file_entries(&file).len(), 2);
}

#[test]
fn the_event_stream_resumes_after_the_last_event_id_with_no_gap_or_double() {
    let dir = tempfile::tempdir().unwrap();
    let web = WebDaemon::start(&dir.path().join("d.log"));
    let cookie = format!("diary_session={}", web.log_in());
    for n in 1..=3 {
        run_diary(web.addr, &["write", &format!("entry {n}")], b"");
    }
    let mut events = Http::connect(web.web);
    events.send("GET", "/api/events?since=1", &[("Cookie", &cookie)], b"");
    let head = events.head();
    assert_eq!(head.status, 200);
    assert!(
        head.header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (_, name, note) = events.event().unwrap();
    assert_eq!(name, "note");
    assert!(note.contains("after 1 in diary"), "{note}");
    let (id, _, data) = events.event().unwrap();
    assert_eq!(id.as_deref(), Some("2"));
    assert!(
        data.starts_with("2\t") && data.contains("\tentry 2"),
        "{data}"
    );
    assert_eq!(events.event().unwrap().0.as_deref(), Some("3"));
    // Live: a write from a terminal arrives as the next event.
    run_diary(web.addr, &["--proto", "udp", "write", "live 4"], b"");
    let (id, _, data) = events.event().unwrap();
    assert_eq!(id.as_deref(), Some("4"));
    assert!(data.contains("live 4"));
    drop(events);
    // The browser's reconnect: Last-Event-ID wins over the page's since.
    run_diary(web.addr, &["write", "while away 5"], b"");
    let mut again = Http::connect(web.web);
    again.send(
        "GET",
        "/api/events?since=1",
        &[("Cookie", &cookie), ("Last-Event-ID", "4")],
        b"",
    );
    assert_eq!(again.head().status, 200);
    assert_eq!(again.event().unwrap().1, "note");
    let (id, _, data) = again.event().unwrap();
    assert_eq!(id.as_deref(), Some("5"));
    assert!(data.contains("while away 5"));
    // The page names its diary; another diary's server says so.
    let mut other = Http::connect(web.web);
    other.send(
        "GET",
        "/api/events?since=1&diary=0123456789abcdef0123456789abcdef",
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!(other.head().status, 200);
    let (_, name, data) = other.event().unwrap();
    assert_eq!(name, "refused");
    assert!(data.starts_with("err other-diary"), "{data}");
    assert!(other.event().is_none(), "and the stream ends");
}

#[test]
fn bad_requests_get_an_answer_and_the_server_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.log");
    let web = WebDaemon::start_at(&file, "127.0.0.1:0", "127.0.0.1:0", &["--max-entry", "100"]);
    let cookie = web.log_in();
    let status_of = |raw: &[u8]| {
        let mut stream = TcpStream::connect(web.web).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(raw).unwrap();
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        String::from_utf8_lossy(&reply).into_owned()
    };
    assert!(status_of(b"\x16\x03\x01 binary junk\r\n\r\n").starts_with("HTTP/1.1 400"));
    let huge_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert!(status_of(huge_head.as_bytes()).starts_with("HTTP/1.1 431"));
    let big_body = "POST /api HTTP/1.1\r\nContent-Length: 100000\r\n\r\n";
    assert!(status_of(big_body.as_bytes()).starts_with("HTTP/1.1 413"));
    // A client that vanishes mid-body: nothing of it is stored.
    let origin = web.origin();
    let mut half = TcpStream::connect(web.web).unwrap();
    write!(
        half,
        "POST /api HTTP/1.1\r\nOrigin: {origin}\r\nCookie: diary_session={cookie}\r\n\
         Content-Length: 50\r\n\r\n/write half"
    )
    .unwrap();
    drop(half);
    // Keep-alive: two requests on one connection, pipelined.
    let mut http = Http::connect(web.web);
    let cookie_header = format!("diary_session={cookie}");
    let headers = [
        ("Origin", origin.as_str()),
        ("Cookie", cookie_header.as_str()),
    ];
    http.send("POST", "/api", &headers, b"/id k1 /write one");
    http.send("POST", "/api", &headers, b"/id k2 /write two");
    assert!(http.response().text().contains("ok 1 "));
    assert!(http.response().text().contains("ok 2 "));
    let long = http.request("POST", "/api", &headers, "x".repeat(150).as_bytes());
    assert!(long.text().starts_with("err too-long"), "{}", long.text());
    let texts: Vec<String> = file_entries(&file).into_iter().map(|e| e.1).collect();
    assert_eq!(texts, ["one", "two"]);
}

#[test]
fn logging_out_ends_the_session_and_its_open_page() {
    let dir = tempfile::tempdir().unwrap();
    let web = WebDaemon::start(&dir.path().join("d.log"));
    let out = run_diary(web.addr, &["web-login", "tablet"], b"");
    let cookie = log_in(web.web, String::from_utf8(out.stdout).unwrap().trim());
    let mut events = Http::connect(web.web);
    events.send(
        "GET",
        "/api/events",
        &[("Cookie", &format!("diary_session={cookie}"))],
        b"",
    );
    assert_eq!(events.head().status, 200);
    assert_eq!(events.event().unwrap().1, "note");
    let figures = common::stats(web.addr);
    assert_eq!(common::figure(&figures, "sessions tablet"), 1);
    assert_eq!(common::figure(&figures, "web_pages"), 1);
    let out = run_diary(web.addr, &["web-logout", "tablet"], b"");
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("1 logged out")
    );
    assert!(events.event().is_none(), "the open page's stream ends");
    assert_eq!(api(web.web, &cookie, "p").0, 401);
}

#[test]
fn a_session_outlives_a_restart_and_the_sessions_file_holds_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.log");
    let (port, web_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let web_addr = format!("127.0.0.1:{web_port}");
    let web = WebDaemon::start_at(&file, &listen, &web_addr, &[]);
    let cookie = web.log_in();
    api(web.web, &cookie, "/id r1 /write before");
    let saved = std::fs::read_to_string(dir.path().join("d.log.web-sessions")).unwrap();
    assert!(!saved.contains(&cookie));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("d.log.web-sessions"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut daemon = web.daemon;
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    let web = WebDaemon::start_at(&file, &listen, &web_addr, &[]);
    // The retry after the crash is answered, not stored again.
    let (_, reply) = api(web.web, &cookie, "/id r1 /write before");
    assert!(reply.contains("ok 1 "), "{reply}");
    assert_eq!(file_entries(&file).len(), 1);
}

#[test]
fn the_page_off_loopback_without_tls_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let result = Daemon::try_start(&dir.path().join("d.log"), &["--web", "0.0.0.0:0"]);
    let Err(stderr) = result else {
        panic!("diaryd served the page in plaintext off loopback");
    };
    assert!(
        stderr.contains("refusing to serve the web page"),
        "{stderr}"
    );
    assert!(stderr.contains("reverse"), "{stderr}");
}

#[test]
fn a_certificate_that_cannot_be_read_stops_the_start_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let key = dir.path().join("missing-key.pem");
    let args = [
        "--web",
        "127.0.0.1:0",
        "--web-tls",
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    ];
    let Err(stderr) = Daemon::try_start(&dir.path().join("d.log"), &args) else {
        panic!("diaryd started without a certificate");
    };
    assert!(stderr.contains("cert.pem: no certificate"), "{stderr}");
    // A good pair serves HTTPS: the login URL says so.
    let (cert, key, der) = common::web::self_signed(dir.path(), &["localhost"]);
    let extra = [
        "--web-tls",
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        "--web-host",
        "localhost",
    ];
    let web = WebDaemon::start_at(
        &dir.path().join("d.log"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &extra,
    );
    assert!(
        web.login_url.starts_with("https://localhost:"),
        "{}",
        web.login_url
    );
    let mut http = Http::connect_tls(web.web, "localhost", &der);
    let page = http.request("GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("/app.js"));
}

#[test]
fn deleting_a_sessions_line_and_sighup_logs_that_browser_out() {
    let dir = tempfile::tempdir().unwrap();
    let web = WebDaemon::start(&dir.path().join("d.log"));
    let out = run_diary(web.addr, &["web-login", "kitchen"], b"");
    let kitchen = log_in(web.web, String::from_utf8(out.stdout).unwrap().trim());
    let out = run_diary(web.addr, &["web-login", "desk"], b"");
    let desk = log_in(web.web, String::from_utf8(out.stdout).unwrap().trim());
    let mut page = Http::connect(web.web);
    page.send(
        "GET",
        "/api/events",
        &[("Cookie", &format!("diary_session={kitchen}"))],
        b"",
    );
    assert_eq!(page.head().status, 200);
    assert_eq!(page.event().unwrap().1, "note");
    let file = dir.path().join("d.log.web-sessions");
    let kept: String = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter(|l| !l.contains(" kitchen "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&file, kept).unwrap();
    // SAFETY: a signal to our own child.
    assert_eq!(
        unsafe { libc::kill(web.child.id() as i32, libc::SIGHUP) },
        0
    );
    assert!(page.event().is_none(), "the open page's stream ends");
    assert_eq!(api(web.web, &kitchen, "p").0, 401);
    assert_eq!(
        api(web.web, &desk, "p").0,
        200,
        "the other browser stays in"
    );
}
