//! The web side under many open pages (issue 24): diaryd with `--web`,
//! one browser session, N event streams held open as N pages would; then
//! tagged writes over TCP one at a time. Reported: diaryd's resident
//! memory per open page, and how long after its ack each entry reached
//! each page (p50, p99, max), on loopback.

use crate::target::Target;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Serialize)]
pub struct WebReport {
    pub pages: usize,
    pub writes: u64,
    pub fsync: String,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// Resident memory diaryd added per open page.
    pub bytes_per_page: f64,
    /// Events that reached the pages (pages × writes when none were lost).
    pub events: u64,
    /// From an entry's ack at the writer to its event at a page.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
}

impl WebReport {
    pub fn describe(&self) -> String {
        format!(
            "{} open pages (event streams), diaryd --fsync {}: RSS {} KiB -> {} KiB, {:.0} bytes per page\n\
             {} writes, {} of {} events arrived; ack -> event at a page: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
            self.pages,
            self.fsync,
            self.rss_before_kib,
            self.rss_after_kib,
            self.bytes_per_page,
            self.writes,
            self.events,
            self.pages as u64 * self.writes,
            self.latency_p50_ms,
            self.latency_p99_ms,
            self.latency_max_ms,
        )
    }
}

/// Logs in with the one-time URL: the session cookie's `name=value`.
fn log_in(web: SocketAddr, url: &str) -> io::Result<String> {
    let token = url
        .split_once('#')
        .ok_or_else(|| io::Error::other("no token in the login URL"))?
        .1;
    let mut stream = TcpStream::connect(web)?;
    write!(
        stream,
        "POST /api/login HTTP/1.1\r\nHost: {web}\r\nOrigin: http://{web}\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{token}",
        token.len()
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    reply
        .lines()
        .find_map(|l| l.strip_prefix("Set-Cookie: "))
        .and_then(|c| c.split(';').next())
        .map(str::to_string)
        .ok_or_else(|| io::Error::other(format!("login refused: {reply}")))
}

/// Opens an event stream and reads up to its first event (the note).
fn open_page(web: SocketAddr, cookie: &str) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(web)?;
    write!(
        stream,
        "GET /api/events HTTP/1.1\r\nHost: {web}\r\nCookie: {cookie}\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::other("the event stream closed at once"));
        }
    }
    // The note's blank line may still be unread; the reader below skips it.
    Ok(stream)
}

pub fn run(pages: usize, writes: u64, fsync: &str) -> io::Result<WebReport> {
    let _ = diary::server::open_files::raise_to_hard_limit();
    let max = (pages + 64).to_string();
    // A line per page opened: logged to a file, not over the report.
    let log = tempfile::NamedTempFile::new()?;
    let mut target = Target::diaryd_logging_to(
        fsync,
        &["--web", "127.0.0.1:0", "--web-max-connections", &max],
        log.path(),
    )?;
    let (web, url) = target.web_login()?;
    let cookie = log_in(web, &url)?;
    // One page first, so that what the first costs once is in the baseline.
    let _warm = open_page(web, &cookie)?;
    std::thread::sleep(Duration::from_millis(200));
    let rss_before = target.rss_kib().unwrap_or(0);
    let mut streams = Vec::with_capacity(pages);
    for _ in 0..pages {
        streams.push(open_page(web, &cookie)?);
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_after = target.rss_kib().unwrap_or(0);

    let reader = std::thread::spawn(move || read_events(streams, writes));
    let acks = write_paced(target.addr, writes)?;
    let arrivals = reader
        .join()
        .map_err(|_| io::Error::other("the reader panicked"))??;
    let mut histogram = Histogram::<u64>::new(3).expect("a histogram");
    for (id, at) in &arrivals {
        if let Some(acked) = acks.get(id) {
            let micros = at.saturating_duration_since(*acked).as_micros() as u64;
            histogram.record(micros.max(1)).expect("in range");
        }
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(WebReport {
        pages,
        writes,
        fsync: fsync.to_string(),
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        bytes_per_page: (rss_after.saturating_sub(rss_before) * 1024) as f64 / pages as f64,
        events: arrivals.len() as u64,
        latency_p50_ms: ms(0.5),
        latency_p99_ms: ms(0.99),
        latency_max_ms: histogram.max() as f64 / 1000.0,
    })
}

/// Tagged writes over one TCP connection, one at a time, 5 ms apart (each
/// its own batch, as people write); when each ack arrived, by entry id.
fn write_paced(server: SocketAddr, writes: u64) -> io::Result<HashMap<u64, Instant>> {
    let stream = TcpStream::connect(server)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut acks = HashMap::new();
    for n in 0..writes {
        writeln!(
            writer,
            "/id web-bench-{n} /write a line for every open page {n}"
        )?;
        let mut line = String::new();
        reader.read_line(&mut line)?; // id TAG
        line.clear();
        reader.read_line(&mut line)?;
        let at = Instant::now();
        let id = line
            .strip_prefix("ok ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no ack: {line:?}")))?;
        acks.insert(id, at);
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(acks)
}

/// Reads every stream with one `mio::Poll` until each has had `writes`
/// events (or 30 s pass); when each event arrived, by entry id.
fn read_events(streams: Vec<TcpStream>, writes: u64) -> io::Result<Vec<(u64, Instant)>> {
    use mio::{Events, Interest, Poll, Token};
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(streams.len());
    for (i, stream) in streams.into_iter().enumerate() {
        stream.set_nonblocking(true)?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        conns.push((stream, Vec::<u8>::new(), 0u64));
    }
    let wanted = writes * conns.len() as u64;
    let mut arrivals = Vec::with_capacity(wanted as usize);
    let mut events = Events::with_capacity(1024);
    let deadline = Instant::now() + Duration::from_secs(30) + Duration::from_millis(10 * writes);
    let mut chunk = [0u8; 16 * 1024];
    while (arrivals.len() as u64) < wanted && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for event in events.iter() {
            let (stream, pending, _) = &mut conns[event.token().0];
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => pending.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            let now = Instant::now();
            let mut start = 0;
            while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
                let line = &pending[start..start + end];
                if let Some(id) = line.strip_prefix(b"id: ")
                    && let Some(id) = std::str::from_utf8(id).ok().and_then(|s| s.parse().ok())
                {
                    arrivals.push((id, now));
                }
                start += end + 1;
            }
            pending.drain(..start);
        }
    }
    Ok(arrivals)
}
