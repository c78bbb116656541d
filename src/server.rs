//! The core both sides of the loop share: the server's state (the store,
//! the batch and its waiting acks), the command handler's helpers, the
//! retry memory, history reads, `/stats`, limits, the log, address cookies,
//! and who may talk (`access/`).
//!
//! It may import `store`, `secure`, `wire` and `protocol`, and `handler`
//! (the card's command handler, at the top of `src/`); never `udp`, `tcp`,
//! `event_loop` or `client`.

pub mod access;
pub mod cookie;
pub(crate) mod history;
pub mod limits;
pub mod logging;
pub mod open_files;
pub mod phases;
pub(crate) mod replay;
pub mod service;
pub mod service_manager;
pub mod state;
pub mod stats;
