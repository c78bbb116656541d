//! diaryd under systemd: the UDP socket and TCP listener it may be handed
//! (socket activation, `LISTEN_FDS`, read with `listenfd`), and what it
//! tells the manager (`NOTIFY_SOCKET`, with `sd-notify`): ready once the
//! diary is recovered and the sockets listen, stopping when it shuts down,
//! and a watchdog ping while the loop turns. Outside systemd every call
//! here does nothing.
//!
//! It may import nothing else of the crate.

use sd_notify::NotifyState;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

/// The sockets systemd handed over (a `diaryd.socket` with one
/// `ListenStream=` and one `ListenDatagram=` on the same port), if any.
pub fn take_activated_sockets() -> Result<Option<(TcpListener, UdpSocket)>, String> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let (mut listener, mut socket) = (None, None);
    for i in 0..fds.len() {
        // Each is tried as what it may be; a wrong type stays for the next try.
        if listener.is_none()
            && let Ok(Some(taken)) = fds.take_tcp_listener(i)
        {
            listener = Some(taken);
            continue;
        }
        if socket.is_none()
            && let Ok(Some(taken)) = fds.take_udp_socket(i)
        {
            socket = Some(taken);
            continue;
        }
        return Err(format!(
            "systemd handed over {} sockets; diaryd takes one TCP listener \
             (ListenStream=) and one UDP socket (ListenDatagram=) on the same port",
            fds.len()
        ));
    }
    let (Some(listener), Some(socket)) = (listener, socket) else {
        return Err(
            "systemd handed over sockets, but not both a TCP listener (ListenStream=) \
                    and a UDP socket (ListenDatagram=): diaryd serves both on one port"
                .into(),
        );
    };
    let ports = (
        listener.local_addr().map_err(|e| e.to_string())?,
        socket.local_addr().map_err(|e| e.to_string())?,
    );
    if ports.0.port() != ports.1.port() {
        return Err(format!(
            "the sockets systemd handed over are on different ports ({} for TCP, {} for UDP); \
             diaryd serves both on one",
            ports.0, ports.1
        ));
    }
    Ok(Some((listener, socket)))
}

/// The status line `systemctl status` shows while diaryd serves.
pub(crate) fn serving_status(entries: u64, addr: SocketAddr) -> String {
    let noun = if entries == 1 { "entry" } else { "entries" };
    format!("serving {entries} {noun} on {addr}")
}

/// Tells the manager the server is serving (with a status line).
pub(crate) fn ready(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A new status line, once the one shown is out of date.
pub(crate) fn status(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(status)]);
}

/// Tells the manager the server is shutting down.
pub(crate) fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// How often to ping the watchdog (half of `WatchdogSec=`), if it is on.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// The loop still turns.
pub(crate) fn watchdog_ping() {
    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
}
