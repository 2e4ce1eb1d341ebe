//! A per-plugin sliding-window limiter: at most `calls` in any `period`.
//!
//! A log of timestamps (bounded by `calls`) gives an exact window, unlike a fixed window
//! that lets twice the limit through around a boundary.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The limiter of one plugin.
#[derive(Debug)]
pub struct RateLimiter {
    calls: u32,
    period: Duration,
    log: VecDeque<Instant>,
}

impl RateLimiter {
    /// `calls == 0` means unlimited.
    pub fn new(calls: u32, period: Duration) -> Self {
        RateLimiter { calls, period, log: VecDeque::new() }
    }

    /// Admits a call at `now`, or says how long until one would be admitted.
    pub fn check(&mut self, now: Instant) -> Result<(), Duration> {
        if self.calls == 0 {
            return Ok(());
        }
        while let Some(&oldest) = self.log.front() {
            if now.duration_since(oldest) >= self.period {
                self.log.pop_front();
            } else {
                break;
            }
        }
        if self.log.len() >= self.calls as usize {
            let oldest = self.log[0];
            return Err(self.period.saturating_sub(now.duration_since(oldest)));
        }
        self.log.push_back(now);
        Ok(())
    }

    /// Calls admitted in the current window.
    pub fn in_window(&self) -> usize {
        self.log.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_then_waits_for_the_oldest() {
        let mut rl = RateLimiter::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(rl.check(t0).is_ok());
        assert!(rl.check(t0 + Duration::from_secs(1)).is_ok());
        let wait = rl.check(t0 + Duration::from_secs(2)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(8));
        assert!(rl.check(t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn zero_means_unlimited() {
        let mut rl = RateLimiter::new(0, Duration::from_secs(1));
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert!(rl.check(t0).is_ok());
        }
        assert_eq!(rl.in_window(), 0);
    }
}
