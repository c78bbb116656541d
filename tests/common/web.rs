//! The web side from a test: diaryd started with `--web`, its login URL,
//! and a small HTTP/1.1 client over a real socket (requests with the
//! headers a browser sends, responses by Content-Length or chunks, and
//! server-sent events).

use super::Daemon;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

/// diaryd with its web page on.
pub struct WebDaemon {
    pub daemon: Daemon,
    pub web: SocketAddr,
    /// The one-time login URL it printed.
    pub login_url: String,
}

impl std::ops::Deref for WebDaemon {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl std::ops::DerefMut for WebDaemon {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

/// A port free right now on 127.0.0.1 (for a server restarted on the same one).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl WebDaemon {
    /// Starts diaryd on `listen` with the page on `web` (ports may be 0).
    pub fn start_at(file: &Path, listen: &str, web: &str, extra: &[&str]) -> WebDaemon {
        let mut args = vec!["--web", web];
        args.extend_from_slice(extra);
        let mut daemon = match Daemon::try_start_at(file, listen, &args) {
            Ok(daemon) => daemon,
            Err(stderr) => panic!("diaryd did not start: {stderr}"),
        };
        let mut line = String::new();
        daemon.stdout.read_line(&mut line).unwrap();
        let addr = line
            .split("(listening on ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap_or_else(|| panic!("no web line: {line:?}"));
        let login_url = login_url_in(&line);
        WebDaemon {
            daemon,
            web: addr.parse().unwrap(),
            login_url,
        }
    }

    pub fn start(file: &Path) -> WebDaemon {
        Self::start_at(file, "127.0.0.1:0", "127.0.0.1:0", &[])
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.web)
    }

    /// Logs in with the URL it printed; the session cookie's value.
    pub fn log_in(&self) -> String {
        log_in(self.web, &self.login_url)
    }
}

/// The one-time login URL in diaryd's `web: …` line.
pub fn login_url_in(line: &str) -> String {
    line.split("opening ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no login URL in {line:?}"))
        .to_string()
}

/// Exchanges a login URL's token for a session cookie's value.
pub fn log_in(web: SocketAddr, url: &str) -> String {
    let token = url.split_once('#').expect("a token after #").1;
    let origin = format!("http://{web}");
    let mut http = Http::connect(web);
    let response = http.request(
        "POST",
        "/api/login",
        &[("Origin", &origin)],
        token.as_bytes(),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let cookie = response.header("set-cookie").expect("a cookie");
    cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("diary_session=")
        .unwrap()
        .to_string()
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A connection's byte stream: a socket, or TLS over one.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One keep-alive HTTP connection.
pub struct Http {
    pub reader: BufReader<Box<dyn Stream>>,
    host: String,
}

impl Http {
    pub fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Http {
            reader: BufReader::new(Box::new(stream)),
            host: addr.to_string(),
        }
    }

    /// HTTP over a socket the caller connected (and set up).
    pub fn over(stream: TcpStream, addr: SocketAddr) -> Http {
        Http {
            reader: BufReader::new(Box::new(stream)),
            host: addr.to_string(),
        }
    }

    /// HTTPS to `addr`, trusting only `cert` (DER) for `name`.
    pub fn connect_tls(addr: SocketAddr, name: &str, cert: &[u8]) -> Http {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Http {
            reader: BufReader::new(Box::new(tls_client(stream, name, cert))),
            host: addr.to_string(),
        }
    }

    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.send(method, path, headers, body);
        self.response()
    }

    /// Reads a response's head, and its body unless it is an event stream.
    pub fn head(&mut self) -> Response {
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no status line: {status_line:?}"))
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_string(), value.trim().to_string()));
        }
        Response {
            status,
            headers,
            body: Vec::new(),
        }
    }

    pub fn response(&mut self) -> Response {
        let mut response = self.head();
        if let Some(length) = response.header("content-length") {
            let mut body = vec![0u8; length.parse().unwrap()];
            self.reader.read_exact(&mut body).unwrap();
            response.body = body;
        } else if response.header("transfer-encoding") == Some("chunked") {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).unwrap();
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0u8; size + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                response.body.extend_from_slice(&chunk[..size]);
            }
        }
        response
    }

    /// Reads the next server-sent event: (id, event name, data).
    pub fn event(&mut self) -> Option<(Option<String>, String, String)> {
        let (mut id, mut name, mut data) = (None, "message".to_string(), String::new());
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                return Some((id, name, data));
            }
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("event: ") {
                name = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = v.to_string();
            }
        }
    }
}

/// A TLS client over `stream` that trusts only `cert` (DER), for `name`.
pub fn tls_client(
    stream: TcpStream,
    name: &str,
    cert: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(cert.to_vec())).unwrap();
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(name.to_string()).unwrap();
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    rustls::StreamOwned::new(connection, stream)
}

/// A self-signed certificate for `names`, written as PEM into `dir`:
/// (cert path, key path, cert DER).
pub fn self_signed(
    dir: &Path,
    names: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let made = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key, made.cert.der().to_vec())
}

/// Sends one protocol request to `/api` as the page does; the reply's text.
pub fn api(web: SocketAddr, cookie: &str, line: &str) -> (u16, String) {
    let origin = format!("http://{web}");
    let cookie = format!("diary_session={cookie}");
    let mut http = Http::connect(web);
    let response = http.request(
        "POST",
        "/api",
        &[("Origin", &origin), ("Cookie", &cookie)],
        line.as_bytes(),
    );
    (response.status, response.text())
}
