//! What every side with a slab of TCP connections does alike (the TCP
//! side, and the web side over it): accepting until the listener is
//! empty, the sorted once-each lists of connections to visit, when output
//! counts as progress, and asking for writability only while output waits.
//!
//! It may import `server::logging`.

use crate::server::logging::{self, Throttle};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

/// The next waiting connection, if any. A failure (out of descriptors and
/// the like) sheds it, is logged (throttled) as `what`, and ends this round
/// of accepting; the server keeps serving.
pub(crate) fn accept_next(
    listener: &TcpListener,
    log: &mut Throttle,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        match listener.accept() {
            Ok(accepted) => return Some(accepted),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                logging::warn_throttled(log, format_args!("{what} failed: {e}"));
                return None;
            }
        }
    }
}

/// The keys in `list`, each once, in order; `list` is left empty.
pub(crate) fn take_sorted(list: &mut Vec<usize>) -> Vec<usize> {
    let mut keys = std::mem::take(list);
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// After a flush that left `queued` of `before` bytes: the output made
/// progress (or had none to make), and sending counts as activity.
pub(crate) fn note_sent(
    before: usize,
    queued: usize,
    last_sent: &mut Instant,
    last_active: &mut Instant,
) {
    if queued < before || queued == 0 {
        *last_sent = Instant::now();
    }
    if queued < before {
        *last_active = *last_sent;
    }
}

/// Asks for writability only while output waits for the socket (`want`);
/// `current` is what is registered now.
pub(crate) fn set_writable(
    registry: &Registry,
    stream: &mut TcpStream,
    token: Token,
    want: bool,
    current: &mut bool,
) -> io::Result<()> {
    if want == *current {
        return Ok(());
    }
    let interest = if want {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    registry.reregister(stream, token, interest)?;
    *current = want;
    Ok(())
}
