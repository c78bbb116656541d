//! diary: a networked diary served by one single-threaded mio loop over UDP
//! and TCP, backed by one append-only, human-readable file.
//!
//! The folders show the architecture (docs: design brief §7a). The design
//! card's files sit at the top of `src/`, each the root of its part:
//!
//! | part | owns | may import |
//! |---|---|---|
//! | [`event_loop`] | the `mio::Poll`, tokens, signals, and the order of each iteration | everything below |
//! | [`udp`] (+ `udp/`) | the UDP side: socket, batches, reply size rule, reply queue; `datagrams`, encrypted `sessions` | `server`, `store`, `secure`, `wire`, `protocol` |
//! | [`tcp`] (+ `tcp/`) | the TCP side: listener, connections, streams; `framing`, `follow`, encrypted `secure` links | `server`, `store`, `secure`, `wire`, `protocol` |
//! | [`web`] (+ `web/`) | the web side (`--web`): HTTP connections, the page's API, event streams, the embedded page | `server`, `store`, `protocol`, `tcp::follow`, `tcp::framing` |
//! | [`handler`] | commands → replies over the store, for both transports | `server`, `store`, `wire`, `protocol` |
//! | [`server`] | the core both sides share: state, service, replay memory, history, stats, limits, log, cookies, `access` | `handler`, `store`, `secure`, `wire`, `protocol` |
//! | [`store`] (+ `store/`) | the file: recover, index, scan, group commit, syncer, disk seam, watch, saved index | `wire` |
//! | [`secure`] | keys and Noise IK messages, for either role | `wire` |
//! | [`protocol`] | request grammar and every byte of every reply (pure) | `wire` |
//! | [`wire`] | the entry line, byte classes, query matching (pure) | nothing above it |
//! | [`client`] (+ `client/`) | the `diary` client: requests, retries, fallback, follow, secure sessions, dates | `secure`, `wire`, `protocol` |
//!
//! The `diary` binary's REPL, display, editor and outbox are private to it
//! (`src/bin/diary/`); it links no `server`, `store` or side code.
//!
//! Items are `pub(crate)` unless a binary, a test, the bench or a fuzz
//! target uses them: what is `pub` here is what those need, no more.

pub mod client;
pub mod event_loop;
pub(crate) mod handler;
pub mod protocol;
pub mod secure;
pub mod server;
pub mod store;
pub mod tcp;
pub mod udp;
pub mod web;
pub mod wire;
