//! Figures for `/stats`: counted by the loop's two sides and the handler,
//! owned by the server, and lent to the handler as a reference to report.

use crate::server::phases::Phases;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Stats {
    pub(crate) started: Instant,
    pub(crate) udp_writes: u64,
    pub(crate) tcp_writes: u64,
    pub(crate) udp_reads: u64,
    pub(crate) tcp_reads: u64,
    pub(crate) tcp_clients: u64,
    /// Open connections of the web side (`--web`).
    pub(crate) web_clients: u64,
    /// Open web pages: event streams of logged-in browsers.
    pub(crate) web_pages: u64,
    /// UDP source addresses heard from in the last minute.
    pub(crate) udp_sources: u64,
    pub(crate) followers: u64,
    pub(crate) dropped_followers: u64,
    /// Most reply bytes ever queued for one follower.
    pub(crate) follower_queue_peak: u64,
    pub(crate) failed_commits: u64,
    /// UDP replies dropped because the send queue was full or the send failed.
    pub(crate) dropped_replies: u64,
    /// Open encrypted sessions (UDP and TCP) per allowed device.
    pub(crate) device_sessions: BTreeMap<Arc<str>, u64>,
    /// Handshakes refused (unknown key, bad or replayed first message).
    pub(crate) auth_failures: u64,
    /// UDP first messages answered with a cookie only (the server was
    /// under a handshake load).
    pub(crate) cookie_replies: u64,
    /// Plaintext requests refused from where keys are required.
    pub(crate) plaintext_refused: u64,
    /// Serving plaintext to anyone (`--insecure-open`).
    pub(crate) insecure_open: bool,
    /// Where the loop's time goes.
    pub(crate) phases: Phases,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            started: Instant::now(),
            udp_writes: 0,
            tcp_writes: 0,
            udp_reads: 0,
            tcp_reads: 0,
            tcp_clients: 0,
            web_clients: 0,
            web_pages: 0,
            udp_sources: 0,
            followers: 0,
            dropped_followers: 0,
            follower_queue_peak: 0,
            failed_commits: 0,
            dropped_replies: 0,
            device_sessions: BTreeMap::new(),
            auth_failures: 0,
            cookie_replies: 0,
            plaintext_refused: 0,
            insecure_open: false,
            phases: Phases::default(),
        }
    }
}

impl Stats {
    /// The `/stats` figures by name, in the order they are sent, with the
    /// diary's `entries` and `bytes`; `insecure_open` only when it is.
    pub(crate) fn figures(&self, entries: u64, bytes: u64) -> Vec<(String, u64)> {
        let mut figures: Vec<(String, u64)> = [
            ("uptime_seconds", self.started.elapsed().as_secs()),
            ("entries", entries),
            ("bytes", bytes),
            ("tcp_clients", self.tcp_clients),
            ("web_clients", self.web_clients),
            ("web_pages", self.web_pages),
            ("udp_clients_last_minute", self.udp_sources),
            ("followers", self.followers),
            ("dropped_followers", self.dropped_followers),
            ("follower_queue_peak_bytes", self.follower_queue_peak),
            ("udp_writes", self.udp_writes),
            ("tcp_writes", self.tcp_writes),
            ("udp_reads", self.udp_reads),
            ("tcp_reads", self.tcp_reads),
            ("failed_commits", self.failed_commits),
            ("udp_dropped_replies", self.dropped_replies),
            ("auth_failures", self.auth_failures),
            ("handshake_cookie_replies", self.cookie_replies),
            ("plaintext_refused", self.plaintext_refused),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
        if self.insecure_open {
            figures.push(("insecure_open".into(), 1));
        }
        for (device, sessions) in &self.device_sessions {
            figures.push((format!("sessions {device}"), *sessions));
        }
        figures.extend(self.phases.figures());
        figures
    }
}
