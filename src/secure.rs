//! Encryption, for either role: keys (the server's and each device's, in
//! files of mode 0600) and the Noise IK messages both transports carry
//! (handshakes, sealed frames and datagrams, the UDP replay window).
//!
//! It may import `wire`; never `server`, `client`, `store` or a side.

pub mod keys;
pub mod noise;
