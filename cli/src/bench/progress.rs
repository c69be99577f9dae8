//! Progress of a run on stderr: `bench: [i/N] mode transport variant size ..., ETA 1m20s`,
//! one line as each cell starts (N = measured cells x rounds).
//!
//! The ETA scales what is left by how long the cells so far took against what they were
//! expected to take: each cell is expected to take its warm-up plus its measured time plus
//! a fixed cost (connection set-up, the rpc drain), so a slow set-up on this machine
//! lengthens the estimate for every later cell alike.
use std::time::{Duration, Instant};

/// Counts cells and prints their lines.
pub struct Progress {
    quiet: bool,
    total: usize,
    done: usize,
    /// Expected seconds of all cells, and of those started so far.
    expected_total: f64,
    expected_done: f64,
    started: Instant,
}

impl Progress {
    /// `expected`: every cell's expected time, in order of running.
    pub fn new(expected: &[Duration], quiet: bool) -> Progress {
        Progress {
            quiet,
            total: expected.len(),
            done: 0,
            expected_total: expected.iter().map(Duration::as_secs_f64).sum(),
            expected_done: 0.0,
            started: Instant::now(),
        }
    }

    /// A cell expected to take `expected` starts; prints its line unless quiet.
    pub fn start(&mut self, what: std::fmt::Arguments, expected: Duration) {
        let eta = eta(
            self.started.elapsed().as_secs_f64(),
            self.expected_done,
            self.expected_total,
        );
        self.done += 1;
        self.expected_done += expected.as_secs_f64();
        if !self.quiet {
            eprintln!(
                "bench: [{}/{}] {what}, ETA {}",
                self.done,
                self.total,
                fmt_eta(eta)
            );
        }
    }
}

/// Seconds left: the expected seconds left, scaled by elapsed / expected so far (not scaled
/// before anything has run).
fn eta(elapsed: f64, expected_done: f64, expected_total: f64) -> f64 {
    let left = (expected_total - expected_done).max(0.0);
    if expected_done > 0.0 && elapsed > 0.0 {
        left * elapsed / expected_done
    } else {
        left
    }
}

/// `45s`, `1m20s`, `1h02m`.
fn fmt_eta(secs: f64) -> String {
    let s = secs.round().max(0.0) as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_scales_the_rest_by_the_pace_so_far() {
        // Nothing run yet: the plan itself.
        assert_eq!(eta(0.0, 0.0, 100.0), 100.0);
        // Half the plan took twice as long as expected: the other half will too.
        assert_eq!(eta(100.0, 50.0, 100.0), 100.0);
        assert_eq!(eta(10.0, 100.0, 100.0), 0.0);
        assert_eq!(fmt_eta(45.4), "45s");
        assert_eq!(fmt_eta(80.0), "1m20s");
        assert_eq!(fmt_eta(3720.0), "1h02m");
    }
}
