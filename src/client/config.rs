//! What a client is told: which server, which transport, its timeouts
//! and retries, its name, and where its keys come from. Flags fill it in;
//! nothing here does I/O but finding the default key files.

use crate::secure::keys::{self, PublicKey};
use crate::wire::entry;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where a client looks for the server when it is not told.
pub const DEFAULT_SERVER: &str = crate::protocol::DEFAULT_ADDR;

/// Which transport requests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Datagrams, retried on loss, with TCP for replies too big for one.
    Udp,
    /// One TCP connection.
    Tcp,
}

impl Proto {
    /// The names the command line takes.
    pub const NAMES: [&'static str; 2] = ["udp", "tcp"];
}

impl std::str::FromStr for Proto {
    type Err = String;

    fn from_str(s: &str) -> Result<Proto, String> {
        match s {
            "udp" => Ok(Proto::Udp),
            "tcp" => Ok(Proto::Tcp),
            _ => Err(format!("{s:?} is not a transport; use udp or tcp")),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// `HOST:PORT` of the server.
    pub server: String,
    pub proto: Proto,
    /// How long one request may take, retries included.
    pub timeout: Duration,
    /// UDP retries after the first attempt.
    pub retries: u32,
    /// Largest UDP reply this client accepts (`max=` in the envelope).
    pub max_reply: usize,
    /// Keys, and whether to use them.
    pub security: Security,
    /// Who writes (`by=` in the envelope), for servers that cannot tell
    /// from a device key; `None`: not said.
    pub name: Option<String>,
}

impl Options {
    /// ` by=NAME`, or nothing.
    pub(crate) fn by(&self) -> String {
        self.name
            .as_deref()
            .filter(|n| entry::is_author_name(n))
            .map(|n| format!(" by={n}"))
            .unwrap_or_default()
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            server: DEFAULT_SERVER.into(),
            proto: Proto::Udp,
            timeout: Duration::from_secs(5),
            retries: 8,
            max_reply: crate::protocol::DEFAULT_UDP_REPLY,
            security: Security::default(),
            name: None,
        }
    }
}

/// Whether requests are encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureMode {
    /// Encrypted unless the server is on loopback (and no server key was given).
    Auto,
    /// Always plaintext: for a server started with `--insecure-open`.
    Plain,
}

/// Where the client's keys come from.
#[derive(Debug, Clone)]
pub struct Security {
    pub mode: SecureMode,
    /// The device's key file (`diary keygen` makes it).
    pub key: PathBuf,
    /// The server's key, if given (otherwise pinned in `known_servers`).
    pub server_key: Option<PublicKey>,
    pub known_servers: PathBuf,
}

impl Default for Security {
    fn default() -> Security {
        Security {
            mode: SecureMode::Auto,
            key: keys::default_device_key(),
            server_key: None,
            known_servers: keys::default_known_servers(),
        }
    }
}
