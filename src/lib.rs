//! diary: a networked diary served by one single-threaded mio loop over UDP
//! and TCP, backed by one append-only, human-readable file.
//!
//! Data flows one way, and each concern has one home:
//!
//! | module | owns |
//! |---|---|
//! | [`event_loop`] | the `mio::Poll`, tokens, signals, and the order of each iteration |
//! | [`udp`] | the UDP side: socket, batches, reply size rule, cookies, retry memory, reply queue |
//! | [`datagrams`] | `recvmmsg`/`sendmmsg` batches |
//! | [`replay`] | the memory of recent tagged writes (retries answered, never stored twice) |
//! | [`cookie`] | address cookies (a keyed MAC) for the anti-amplification rule |
//! | [`tcp`] | the TCP side: listener, connection slab, accept, read, stream, flush, sweep |
//! | [`framing`] | TCP lines in, queued bytes out |
//! | [`follow`] | followers: what each has had, backlog limit, the `behind` cut |
//! | [`service`] | the narrow interface the sides use to reach the diary |
//! | [`shared`] | the store, the batch and its waiting acks, the stats: the sides' [`service::Service`] |
//! | [`protocol`] | request grammar and every byte of every reply (pure) |
//! | [`handler`] | commands → replies over the store, for both transports |
//! | [`history`] | reading history: `/past` selection, streaming cursors, follow reads |
//! | [`store`] | the file: identity, lock, index, group commit, reads; `store/watch.rs`: what a person did to it while it runs |
//! | [`scan`] | reading a diary file: line kinds, torn ends and holes, the time index |
//! | [`syncer`] | the thread that runs `fdatasync` off the loop |
//! | [`disk`] | the store's handle on its file (a seam for power-cut simulation) |
//! | [`entry`], [`ascii`] | the entry line format and its fast byte scans |
//! | [`stats`], [`limits`], [`logging`] | `/stats` figures, per-client limits, the daemon's log |
//! | [`gatekeeper`], [`allow`], [`keys`] | who may talk: the server key, the allow file and scopes, plaintext rules, handshake limits |
//! | [`noise_wire`] | the encrypted wire format (Noise IK via `snow`), the UDP replay window |
//! | [`udp_sessions`], [`secure_tcp`] | encrypted sessions on each side |
//! | [`editor`] | text written in `$EDITOR` |
//! | [`display`] | entries for people: times in the reader's zone, aligned ids |
//! | [`client`], [`interactive`] | the `diary` client: requests, retries, the chat-like session |
//! | [`outbox`], [`dates`] | lines kept while the server is unreachable; dates as people write them |

pub mod allow;
pub mod ascii;
pub mod client;
pub mod cookie;
pub mod datagrams;
pub mod dates;
pub mod disk;
pub mod display;
pub mod editor;
pub mod entry;
pub mod event_loop;
pub mod follow;
pub mod framing;
pub mod gatekeeper;
pub mod handler;
pub mod history;
pub mod interactive;
pub mod keys;
pub mod limits;
pub mod logging;
pub mod noise_wire;
pub mod open_files;
pub mod outbox;
pub mod protocol;
pub mod replay;
pub mod scan;
pub mod secure_client;
pub mod secure_tcp;
pub mod service;
pub mod shared;
pub mod stats;
pub mod store;
pub mod syncer;
pub mod tcp;
pub mod udp;
pub mod udp_sessions;
