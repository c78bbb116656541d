//! The daemon's log: `log` records to stderr as `TIME LEVEL message`, and a
//! [`Throttle`] for messages that could repeat every loop iteration.
//!
//! Logging never fails the server: a write to stderr that fails (full disk,
//! closed pipe) is dropped, where `eprintln!` would panic.

use std::io::Write;
use std::time::{Duration, Instant};

struct StderrLogger {
    level: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let time = chrono::Local::now().format("%Y-%m-%dT%H:%M:%S%.3f%:z");
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        // One write per record, so lines from a dying process are whole.
        let line = format!("{time} diaryd: {level}: {}\n", record.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Sends `log` records at `level` and above to stderr. Only the first call
/// installs the logger.
pub fn init(level: log::LevelFilter) {
    if log::set_boxed_logger(Box::new(StderrLogger { level })).is_ok() {
        log::set_max_level(level);
    }
}

/// Lets a repeating message through at most `burst` times a `period`, and
/// says how many were held back when the next one goes through (Redis
/// rate-limits its repeating warnings the same way).
#[derive(Debug)]
pub(crate) struct Throttle {
    period: Duration,
    burst: u32,
    window_start: Option<Instant>,
    sent: u32,
    held: u64,
}

impl Throttle {
    pub(crate) const fn new(burst: u32, period: Duration) -> Throttle {
        Throttle {
            period,
            burst,
            window_start: None,
            sent: 0,
            held: 0,
        }
    }

    /// `Some(held back since the last one)` when this message may be
    /// logged now, `None` when it is to be held back.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        let start = *self.window_start.get_or_insert(now);
        if now.duration_since(start) >= self.period {
            self.window_start = Some(now);
            self.sent = 0;
        }
        if self.sent >= self.burst {
            self.held += 1;
            return None;
        }
        self.sent += 1;
        Some(std::mem::take(&mut self.held))
    }
}

impl Default for Throttle {
    /// Five a minute.
    fn default() -> Throttle {
        Throttle::new(5, Duration::from_secs(60))
    }
}

/// Logs a warning through `throttle`, noting what it held back.
pub(crate) fn warn_throttled(throttle: &mut Throttle, message: std::fmt::Arguments) {
    log_throttled(log::Level::Warn, throttle, message);
}

/// Logs `message` at `level` through `throttle`, noting what it held back.
pub(crate) fn log_throttled(
    level: log::Level,
    throttle: &mut Throttle,
    message: std::fmt::Arguments,
) {
    if let Some(held) = throttle.allow(Instant::now()) {
        if held > 0 {
            log::log!(level, "{message} ({held} more like it held back)");
        } else {
            log::log!(level, "{message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_holds_back_a_flood_and_counts_it() {
        let mut t = Throttle::new(3, Duration::from_secs(60));
        let now = Instant::now();
        let passed: Vec<_> = (0..1000).filter_map(|_| t.allow(now)).collect();
        assert_eq!(passed, vec![0, 0, 0]);
        assert_eq!(t.allow(now + Duration::from_secs(61)), Some(997));
        assert_eq!(t.allow(now + Duration::from_secs(62)), Some(0));
    }
}
