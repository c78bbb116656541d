//! Who may talk to the diary: the allow file of device keys and their
//! scopes, and the gatekeeper that applies it (plaintext rules, the
//! responder's half of each handshake, the failed-handshake limit).
//!
//! It may import `secure`, `wire` and `protocol`.

pub mod allow;
pub mod gatekeeper;
pub(crate) mod web_sessions;
