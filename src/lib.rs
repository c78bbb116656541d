//! diary: a networked diary served by one single-threaded mio loop over UDP
//! and TCP, backed by one append-only, human-readable file.
//!
//! Data flows one way: transports ([`udp`], [`tcp`]) frame bytes,
//! [`protocol`] parses them, [`handler`] answers over the [`store`], and
//! [`event_loop`] ties them together with one group commit per iteration.

pub mod ascii;
pub mod client;
pub mod datagrams;
pub mod entry;
pub mod event_loop;
pub mod handler;
pub mod interactive;
pub mod open_files;
pub mod protocol;
pub mod store;
pub mod tcp;
pub mod udp;
