//! How a request can fail, in words that say what to do.

use crate::client::config::Proto;
use crate::secure::keys::PublicKey;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug)]
pub enum ClientError {
    /// No reply within the timeout.
    NoAnswer {
        server: SocketAddr,
        proto: Proto,
        waited: Duration,
        attempts: u32,
        why: Silence,
    },
    /// The server's address does not resolve.
    BadAddress(String, io::Error),
    Io(SocketAddr, Proto, io::Error),
    BadReply(String),
    /// What answered is not diaryd (the seed's server, say): the request is
    /// not repeated.
    NotDiary {
        server: SocketAddr,
        got: String,
    },
    /// The server refused this device, or wants keys from it.
    Auth(String),
    /// The server's key is not the one pinned: refused, as ssh refuses.
    ServerKeyChanged(Box<KeyChange>),
    /// The device's key, or the pins, cannot be used.
    Key(String),
    /// Another process of this device handshook a moment later than this
    /// one's first message was made: made again, it goes through.
    StaleHandshake(SocketAddr),
    /// The lines of a reply could not be handed on (our own output failed:
    /// a full disk, or a reader that has all it wanted).
    Output(io::Error),
}

/// What was heard instead of a reply: the words a person needs differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Silence {
    /// Nothing at all came back.
    Quiet,
    /// Nothing listens there: the connection was refused (or, over UDP,
    /// an ICMP port unreachable came back).
    NothingListens,
    /// Something took the connection and then ended it, each time; the
    /// last error.
    Broken(String),
}

impl Silence {
    /// What a failed attempt's I/O error says about the server.
    pub(crate) fn of(e: &io::Error) -> Silence {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Silence::NothingListens,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Silence::Quiet,
            _ => Silence::Broken(e.to_string()),
        }
    }
}

/// A server key that differs from the pinned one.
#[derive(Debug)]
pub struct KeyChange {
    pub(crate) server: String,
    pub(crate) pinned: PublicKey,
    pub(crate) offered: PublicKey,
    pub(crate) pin: Pin,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NoAnswer {
                server,
                proto,
                waited,
                attempts,
                why,
            } => {
                let waited = waited.as_secs_f64();
                match why {
                    Silence::NothingListens => write!(
                        f,
                        "nothing listens at {server} over {proto} (refused, {attempts} attempts \
                         in {waited:.1} s); is diaryd running there? Start it with `diaryd`, \
                         or point --server (or DIARY_SERVER) at it"
                    ),
                    Silence::Quiet => write!(
                        f,
                        "no answer from {server} over {proto} after {waited:.1} s ({attempts} \
                         attempts); is diaryd running there, and does the network let {proto} \
                         through? Start it with `diaryd`, or point --server (or DIARY_SERVER) \
                         at it"
                    ),
                    Silence::Broken(e) => write!(
                        f,
                        "{server} took the connection over {proto} but ended it before \
                         answering, {attempts} times in {waited:.1} s (last: {e})"
                    ),
                }
            }
            ClientError::BadAddress(addr, e) => {
                write!(
                    f,
                    "cannot resolve server address {addr:?}: {e}; use HOST:PORT"
                )
            }
            ClientError::Io(server, proto, e) => write!(
                f,
                "cannot talk to {server} over {proto}: {e}; is diaryd running there?"
            ),
            ClientError::BadReply(why) => write!(f, "unexpected reply from the server: {why}"),
            ClientError::NotDiary { server, got } => write!(
                f,
                "{server} answered {got:?}, which is not the diary protocol: is it diaryd? \
                 Nothing was sent again"
            ),
            ClientError::Auth(why) => f.write_str(why),
            ClientError::ServerKeyChanged(change) => {
                let KeyChange {
                    server,
                    pinned,
                    offered,
                    pin,
                } = &**change;
                let source = match pin {
                    Pin::Given => "--server-key (or DIARY_SERVER_KEY)".to_string(),
                    Pin::File(file, line) => format!("{}:{line}", file.display()),
                };
                write!(
                    f,
                    "THE SERVER KEY OF {server} HAS CHANGED. It now offers {offered}, but \
                     {source} pins {pinned}. Someone may be intercepting your diary, or the \
                     server's key was replaced. Nothing was sent. If you replaced it yourself, \
                     edit {source}"
                )
            }
            ClientError::Key(why) => f.write_str(why),
            ClientError::StaleHandshake(addr) => write!(
                f,
                "{addr} had just seen a newer handshake from this device (another diary \
                 running with the same key); try again"
            ),
            ClientError::Output(e) => write!(f, "cannot write the reply out: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    /// Trying again cannot help: the server is not diaryd, or it refused
    /// this device, or the keys are wrong.
    pub(crate) fn is_final(&self) -> bool {
        matches!(
            self,
            ClientError::NotDiary { .. }
                | ClientError::BadReply(_)
                | ClientError::Auth(_)
                | ClientError::ServerKeyChanged(_)
                | ClientError::Key(_)
                | ClientError::Output(_)
        )
    }
}

/// Where the pinned server key came from, to say which file to edit.
#[derive(Debug, Clone)]
pub enum Pin {
    Given,
    File(PathBuf, usize),
}
