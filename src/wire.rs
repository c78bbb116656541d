//! The text both ends read and write: the entry line (the file's and the
//! protocol's), byte classes and their fast scans, and the query matching
//! that the server's `/past` and the client's follow filter share. The
//! request grammar and every reply's bytes are in `protocol`, the design
//! card's file, which builds on this.
//!
//! It imports nothing of the crate above it: no store, server or client.

pub mod ascii;
pub mod entry;
pub mod matching;
