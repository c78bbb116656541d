//! HTTPS for the web side (`--web-tls CERT KEY`), through rustls: the
//! certificate chain and key read from PEM files, and a connection's
//! socket wrapped so the rest of the web side reads and writes plaintext
//! as it would on a plain one. No cipher or handshake of our own.
//!
//! It may import nothing else of the crate.

use mio::net::TcpStream;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

/// The server's TLS settings from a PEM certificate chain and private key.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    // ring, which the Noise side already builds on, rather than aws-lc-rs
    // and its C build: its key exchange (X25519, P-256) is not
    // post-quantum, which rustls marks by deprecating it (docs/SECURITY.md).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A connection's socket, plain or inside TLS.
pub(crate) enum WebStream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

pub(crate) struct TlsStream {
    tls: rustls::ServerConnection,
    socket: TcpStream,
}

impl WebStream {
    pub(crate) fn new(socket: TcpStream, tls: Option<&Arc<ServerConfig>>) -> io::Result<WebStream> {
        Ok(match tls {
            None => WebStream::Plain(socket),
            Some(config) => WebStream::Tls(Box::new(TlsStream {
                tls: rustls::ServerConnection::new(config.clone()).map_err(io::Error::other)?,
                socket,
            })),
        })
    }

    pub(crate) fn socket(&mut self) -> &mut TcpStream {
        match self {
            WebStream::Plain(socket) => socket,
            WebStream::Tls(stream) => &mut stream.socket,
        }
    }

    /// Encrypted bytes waiting for the socket to take them.
    pub(crate) fn pending(&self) -> bool {
        match self {
            WebStream::Plain(_) => false,
            WebStream::Tls(stream) => stream.tls.wants_write(),
        }
    }

    /// Sends what TLS has waiting, until done or the socket would block.
    pub(crate) fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            WebStream::Plain(_) => Ok(()),
            WebStream::Tls(stream) => stream.send_records(),
        }
    }
}

impl TlsStream {
    fn send_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for WebStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let stream = match self {
            WebStream::Plain(socket) => return socket.read(buf),
            WebStream::Tls(stream) => stream,
        };
        loop {
            match stream.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext yet: take in more records (handshake ones too).
            if stream.tls.read_tls(&mut stream.socket)? == 0 {
                return Ok(0);
            }
            let processed = stream.tls.process_new_packets();
            // An alert for the peer, if any, goes out before giving up.
            stream.send_records()?;
            processed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }
}

impl Write for WebStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let stream = match self {
            WebStream::Plain(socket) => return socket.write(data),
            WebStream::Tls(stream) => stream,
        };
        // Records queued before come first: the socket may be full.
        stream.send_records()?;
        if stream.tls.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = stream.tls.writer().write(data)?;
        stream.send_records()?;
        if taken == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_pending()
    }
}
