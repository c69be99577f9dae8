//! Rate-limited logging: at most N events per interval, the rest counted, so a condition
//! that repeats per packet logs a few lines and a count instead of a line per packet.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bypass::telemetry::RateLimited;
//!
//! let mut bad_frames = RateLimited::new(5, Duration::from_secs(1));
//! let now = Instant::now();
//! for _ in 0..100 {
//!     bypass::warn_rate_limited!(bad_frames, now, port = "memif0", "dropped a malformed frame");
//! }
//! assert_eq!(bad_frames.suppressed_total(), 95);
//! ```

use std::time::{Duration, Instant};

/// Allows `burst` events per `interval` and counts the rest; owned by one thread.
///
/// [`RateLimited::allow`] takes `now` from the caller (the poll loop's clock), makes no
/// syscall and never allocates.
#[derive(Debug, Clone)]
pub struct RateLimited {
    burst: u32,
    interval: Duration,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed_since_emit: u64,
    suppressed_total: u64,
}

impl RateLimited {
    /// At most `burst` events in any window of `interval` starting at the first event.
    pub const fn new(burst: u32, interval: Duration) -> RateLimited {
        RateLimited {
            burst,
            interval,
            window_start: None,
            in_window: 0,
            suppressed_since_emit: 0,
            suppressed_total: 0,
        }
    }

    /// Whether to emit this event. `Some(n)`: emit it, `n` events were suppressed since the
    /// last one emitted (report `n` with it). `None`: suppressed and counted.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let fresh = match self.window_start {
            None => true,
            Some(start) => now.saturating_duration_since(start) >= self.interval,
        };
        if fresh {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed_since_emit))
        } else {
            self.suppressed_since_emit += 1;
            self.suppressed_total += 1;
            None
        }
    }

    /// Events suppressed since the limiter was made.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total
    }

    /// Events suppressed since the last one allowed (not yet reported).
    pub fn suppressed_pending(&self) -> u64 {
        self.suppressed_since_emit
    }
}

/// `tracing::warn!` through a [`RateLimited`]: `warn_rate_limited!(limiter, now, fields..,
/// "message", args..)`. An emitted event carries `suppressed = n`, the events dropped since
/// the previous one.
#[macro_export]
macro_rules! warn_rate_limited {
    ($limiter:expr, $now:expr, $($arg:tt)+) => {
        if let ::std::option::Option::Some(suppressed) = $limiter.allow($now) {
            ::tracing::warn!(suppressed, $($arg)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_burst_per_interval_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut r = RateLimited::new(3, Duration::from_millis(100));
        let got: Vec<_> = (0..10).map(|_| r.allow(t0)).collect();
        assert_eq!(&got[..3], &[Some(0), Some(0), Some(0)]);
        assert!(got[3..].iter().all(Option::is_none));
        assert_eq!(r.suppressed_total(), 7);
        assert_eq!(r.suppressed_pending(), 7);
        // Still inside the window.
        assert_eq!(r.allow(t0 + Duration::from_millis(99)), None);
        // Next window: the first event reports the 8 suppressed.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(r.allow(t1), Some(8));
        assert_eq!(r.allow(t1), Some(0));
        assert_eq!(r.suppressed_pending(), 0);
        assert_eq!(r.suppressed_total(), 8);
    }

    #[test]
    fn zero_burst_suppresses_everything() {
        let mut r = RateLimited::new(0, Duration::from_secs(1));
        assert_eq!(r.allow(Instant::now()), None);
        assert_eq!(r.suppressed_total(), 1);
    }
}
