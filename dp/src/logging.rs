//! Log output: text or JSON lines on stderr (`--log-format json`, `[log] format = "json"`),
//! and [`warn_limited!`](crate::warn_limited), a warning that logs at most
//! [`RateLimit::new`]'s `per_interval` lines per interval per call site and counts the rest.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Warnings not logged by every [`RateLimit`] together (exposed as
/// `warden_log_warnings_suppressed_total`).
pub static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), stderr, `json` for one
/// JSON object per line (`timestamp`, `level`, `target`, `fields` with `message`), else text
/// (colours only on a terminal).
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        b.json().with_current_span(false).with_span_list(false).init();
    } else {
        b.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
}

fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// At most `per_interval` events per `interval_s` seconds (fixed windows since the first
/// use); events beyond are counted and the count is handed to the next allowed one. Lock-free
/// (three atomics); races between threads only shift an event to a neighbouring window.
#[derive(Debug)]
pub struct RateLimit {
    per_interval: u32,
    interval_ms: u64,
    window: AtomicU64,
    count: AtomicU32,
    suppressed: AtomicU64,
}

impl RateLimit {
    /// `per_interval` events every `interval_s` seconds (at least 1 s).
    pub const fn new(per_interval: u32, interval_s: u64) -> Self {
        let interval_s = if interval_s == 0 { 1 } else { interval_s };
        RateLimit {
            per_interval,
            interval_ms: interval_s * 1000,
            window: AtomicU64::new(0),
            count: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this event may be logged, `n` being the events suppressed since the last
    /// one logged; `None` (counted) when over the limit.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(epoch().elapsed().as_millis() as u64)
    }

    /// [`Self::allow`] at `now_ms` milliseconds since an epoch (for tests).
    pub fn allow_at(&self, now_ms: u64) -> Option<u64> {
        // Windows are numbered from 1 so that 0 means "never used".
        let w = now_ms / self.interval_ms + 1;
        let cur = self.window.load(Ordering::Relaxed);
        if cur != w && self.window.compare_exchange(cur, w, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) < self.per_interval {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            SUPPRESSED.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// `tracing::warn!` limited to 5 lines per minute at this call site; the next line logged
/// after some were suppressed carries `suppressed = n`.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::logging::RateLimit = $crate::logging::RateLimit::new(5, 60);
        if let Some(suppressed) = LIMIT.allow() {
            if suppressed > 0 {
                tracing::warn!(suppressed, $($arg)+);
            } else {
                tracing::warn!($($arg)+);
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_n_per_window_and_the_rest_counted() {
        let r = RateLimit::new(2, 10);
        let before = SUPPRESSED.load(Ordering::Relaxed);
        assert_eq!(r.allow_at(0), Some(0));
        assert_eq!(r.allow_at(1_000), Some(0));
        assert_eq!(r.allow_at(2_000), None);
        assert_eq!(r.allow_at(9_999), None);
        assert!(SUPPRESSED.load(Ordering::Relaxed) >= before + 2);
        // Next window: allowed again, carrying the two suppressed.
        assert_eq!(r.allow_at(10_000), Some(2));
        assert_eq!(r.allow_at(10_001), Some(0));
        assert_eq!(r.allow_at(10_002), None);
        assert_eq!(r.allow_at(25_000), Some(1));
    }

    #[test]
    fn macro_logs_five_and_counts_the_rest() {
        let before = SUPPRESSED.load(Ordering::Relaxed);
        for i in 0..10 {
            crate::warn_limited!(iteration = i, "repeated warning {i}");
        }
        // One call site, one minute: 5 logged, 5 suppressed (other tests only add).
        assert!(SUPPRESSED.load(Ordering::Relaxed) >= before + 5);
    }
}
