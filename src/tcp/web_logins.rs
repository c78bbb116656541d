//! `/web-login`, `/web-logout` and `/web-sessions` (what `diary web-login`
//! and friends send): the web page's logins, given out by the TCP side to
//! a client on the server's machine only.
//!
//! It may import `server::access` and `protocol`.

use crate::protocol::{self, Command, ErrorCode, WebCommand};
use crate::server::access::allow::Scopes;
use crate::server::access::gatekeeper::{Peer, SharedGate};

/// Answers `/web-login`, `/web-logout` and `/web-sessions` for a TCP
/// client, if `line` is one of them: only on the server's machine (both
/// ends of the connection on loopback), in plaintext or as a device with
/// every scope. Whether it was one.
pub(crate) fn answer(
    line: &[u8],
    local: bool,
    peer: Option<&Peer>,
    gate: &SharedGate,
    out: &mut Vec<u8>,
) -> bool {
    // Cheap first: most lines are entries.
    if line.first() != Some(&b'/') || memchr::memmem::find(line, b"/web-").is_none() {
        return false;
    }
    let request = protocol::parse(line, 0);
    let Ok(Command::Web(command)) = &request.command else {
        return false;
    };
    if let Some(envelope) = &request.envelope {
        protocol::push_tag(out, envelope.tag);
    }
    if !local || peer.is_some_and(|p| !p.scopes.contains(Scopes::ALL)) {
        let why = "web logins are given only to a client on the server's machine                    (plaintext, or a device with every scope)";
        protocol::push_error(out, ErrorCode::Forbidden, &why);
        return true;
    }
    let mut gate = gate.lock();
    let Some(sessions) = gate.web_sessions_mut() else {
        let why = "diaryd serves no web page; start it with --web ADDR";
        protocol::push_error(out, ErrorCode::BadArgument, &why);
        return true;
    };
    let mut lines = Vec::new();
    match command {
        WebCommand::Login(name) => {
            lines.push(sessions.login_url(*name));
            log::info!("a one-time web login URL was given out");
        }
        WebCommand::Logout(name) => match sessions.revoke(name) {
            Ok(0) => lines.push(format!("# no browser session is called {name}")),
            Ok(n) => {
                log::info!("web logout of {name}: {n} sessions");
                lines.push(format!("# {n} logged out"));
            }
            Err(e) => {
                let why = format!("{}: {e}", sessions.file().display());
                protocol::push_error(out, ErrorCode::Io, &why);
                return true;
            }
        },
        WebCommand::Sessions => {
            for session in sessions.list() {
                let since = chrono::DateTime::from_timestamp(session.created as i64, 0)
                    .map_or_else(String::new, |t| t.to_rfc3339());
                lines.push(format!("{} {since}", session.name));
            }
        }
    }
    for line in lines {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"end\n");
    true
}
