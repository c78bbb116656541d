//! Per-client limits, and what happens at each: see README "Limits and
//! safety". The server, its UDP side and its TCP side all read them.

use std::time::Duration;

/// A reply to a UDP source that has not proven its address is at most
/// this many times its request (QUIC's anti-amplification rule): plain
/// replies, handshakes and sealed replies alike.
pub(crate) const AMPLIFICATION: usize = 3;

/// Per-client limits; see README "Limits and safety".
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest entry text, in bytes.
    pub max_entry: usize,
    /// TCP connections served at once; more are refused with an error line.
    pub max_connections: usize,
    /// TCP connections from one address outside this machine at once, so
    /// that one address cannot take every slot.
    pub max_per_source: usize,
    /// Connections of the web side (`--web`) at once; more get 503.
    pub max_web_connections: usize,
    /// Slots of `max_connections` that only this machine's clients may
    /// take (at most half): a flood from outside leaves room to reach the
    /// server locally.
    pub local_reserve: usize,
    /// Reply bytes queued per connection before it stops being read.
    pub max_output: usize,
    /// A connection with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// A connection from where keys are required that has made no
    /// encrypted session within this long is closed (sshd's LoginGraceTime),
    /// so idle connections from outside hold no slot for long.
    pub login_grace: Duration,
    /// Tagged UDP writes remembered to answer retries.
    pub replay_memory: usize,
    /// Reply size for tagged UDP requests that do not say `max=`.
    pub udp_reply: usize,
    /// UDP replies waiting for the socket; beyond it replies are dropped.
    pub udp_queue: usize,
    /// Bytes a follower may lag behind (queued plus not yet queued) before
    /// it is sent a notice with the id to resume from and closed.
    pub follow_backlog: usize,
    /// A connection whose queued output makes no progress for this long
    /// (a client that never reads) is closed.
    pub send_timeout: Duration,
    /// Loopback UDP sources are trusted with replies over 3x their request
    /// (the seed's client works locally); off only to test the rule.
    pub loopback_exempt: bool,
    /// An encrypted session is ended after this long; the client makes a
    /// new one (shorter only to test renewal).
    pub session_lifetime: Duration,
    /// UDP handshakes a second past which a first message must bring back
    /// a cookie before the server does any Diffie-Hellman work for it (0:
    /// always). Below it, a failure from a source without one is not
    /// counted against that source: its address may be forged.
    pub handshakes_before_cookies: u32,
    /// Time a second the loop may spend on that work before it asks for
    /// cookies whatever the count: on a slow machine (or a debug build)
    /// the count alone would not be reached before the socket overflows.
    pub handshake_work: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_entry: 64 * 1024,
            max_connections: 10_000,
            max_per_source: 256,
            max_web_connections: 1024,
            local_reserve: 64,
            max_output: 1024 * 1024,
            idle_timeout: Duration::from_secs(300),
            login_grace: Duration::from_secs(10),
            replay_memory: 100_000,
            udp_reply: crate::protocol::DEFAULT_UDP_REPLY,
            udp_queue: 4096,
            follow_backlog: 1024 * 1024,
            send_timeout: Duration::from_secs(30),
            loopback_exempt: true,
            session_lifetime: crate::secure::noise::REJECT_AFTER,
            handshakes_before_cookies: 200,
            handshake_work: Duration::from_millis(100),
        }
    }
}
