//! Rate limits of a plugin: one sliding window for all its callers ([`RateLimiter`]),
//! and optionally one per client ([`ClientLimiter`]).
//!
//! The plugin-wide window keeps a log of timestamps (bounded by `calls`): exact, unlike
//! a fixed window that lets twice the limit through around a boundary. The per-client
//! windows are sliding-window counters (two numbers each), in a table of bounded size.

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

/// Longest client key kept: longer keys (a header value) are cut, so a client cannot
/// grow the table's memory through the key.
pub const MAX_CLIENT_KEY: usize = 64;

/// A sliding-window counter: the current fixed window's count plus the previous one's,
/// weighted by how much of it still overlaps the sliding window. O(1) memory per client
/// (a log of timestamps per client would cost `calls` entries each); the estimate assumes
/// the previous window's calls were spread evenly.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    current: u32,
    previous: u32,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window { start: now, current: 0, previous: 0 }
    }

    /// Moves the window forward to the one containing `now`.
    fn advance(&mut self, now: Instant, period: Duration) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed < period {
            return;
        }
        let windows = (elapsed.as_nanos() / period.as_nanos().max(1)) as u32;
        self.previous = if windows == 1 { self.current } else { 0 };
        self.current = 0;
        self.start += period * windows;
    }

    fn check(&mut self, now: Instant, calls: u32, period: Duration) -> Result<(), Duration> {
        self.advance(now, period);
        let p = period.as_secs_f64();
        let into = now.saturating_duration_since(self.start).as_secs_f64();
        let estimate = f64::from(self.previous) * (1.0 - into / p) + f64::from(self.current);
        if estimate + 1.0 <= f64::from(calls) {
            self.current += 1;
            return Ok(());
        }
        // When would one more call fit? Solve the estimate for the time it drops to
        // `calls - 1`, in this window or (when this window alone is full) the next.
        let room = f64::from(calls) - 1.0;
        let wait = if f64::from(self.current) > room {
            let next = p * (1.0 - room / f64::from(self.current));
            (p - into) + next
        } else {
            let need = p * (1.0 - (room - f64::from(self.current)) / f64::from(self.previous.max(1)));
            need - into
        };
        Err(Duration::from_secs_f64(wait.clamp(0.001, 2.0 * p)))
    }

    /// Nothing left in the sliding window.
    fn idle(&self, now: Instant, period: Duration) -> bool {
        now.saturating_duration_since(self.start) >= period * 2
            || (self.current == 0 && now.saturating_duration_since(self.start) >= period)
    }
}

/// Why a per-client check refused a call, or what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientVerdict {
    /// `Err(retry_after)` when the client is over its limit.
    pub admitted: Result<(), Duration>,
    /// The client had no room in the table and was counted in the shared overflow
    /// window.
    pub overflow: bool,
}

/// The per-client limiter of one plugin: at most `calls` per `period` for each client
/// key, in a table of at most `max_clients` keys. Clients past the table's bound (after
/// idle entries are swept) share one overflow window with the same limit, so memory
/// stays bounded and tracked clients keep their own windows.
#[derive(Debug)]
pub struct ClientLimiter {
    calls: u32,
    period: Duration,
    max_clients: usize,
    clients: std::collections::HashMap<String, Window>,
    overflow: Window,
    last_sweep: Option<Instant>,
}

impl ClientLimiter {
    /// `calls == 0` means no per-client limit.
    pub fn new(calls: u32, period: Duration, max_clients: usize) -> Self {
        let now = Instant::now();
        ClientLimiter {
            calls,
            period,
            max_clients: max_clients.max(1),
            clients: Default::default(),
            overflow: Window::new(now),
            last_sweep: None,
        }
    }

    /// Whether a limit is set.
    pub fn enabled(&self) -> bool {
        self.calls > 0
    }

    /// The limit per client and its window.
    pub fn limit(&self) -> (u32, Duration) {
        (self.calls, self.period)
    }

    /// Admits a call of `client` at `now`, or says how long until one would be.
    pub fn check(&mut self, client: &str, now: Instant) -> ClientVerdict {
        if self.calls == 0 {
            return ClientVerdict { admitted: Ok(()), overflow: false };
        }
        let key = truncate(client, MAX_CLIENT_KEY);
        let (calls, period) = (self.calls, self.period);
        if let Some(w) = self.clients.get_mut(key) {
            return ClientVerdict { admitted: w.check(now, calls, period), overflow: false };
        }
        if self.clients.len() >= self.max_clients {
            self.sweep(now);
        }
        if self.clients.len() >= self.max_clients {
            return ClientVerdict { admitted: self.overflow.check(now, calls, period), overflow: true };
        }
        let mut w = Window::new(now);
        let admitted = w.check(now, calls, period);
        self.clients.insert(key.to_string(), w);
        ClientVerdict { admitted, overflow: false }
    }

    /// Forgets idle clients, at most once a second (a table full of busy clients is not
    /// scanned on every call).
    fn sweep(&mut self, now: Instant) {
        if self.last_sweep.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        self.last_sweep = Some(now);
        let period = self.period;
        self.clients.retain(|_, w| !w.idle(now, period));
    }

    /// Clients in the table.
    pub fn tracked(&self) -> usize {
        self.clients.len()
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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

#[cfg(test)]
mod client_tests {
    use super::*;

    #[test]
    fn each_client_has_its_own_window() {
        let mut cl = ClientLimiter::new(2, Duration::from_secs(10), 100);
        let t0 = Instant::now();
        assert!(cl.check("a", t0).admitted.is_ok());
        assert!(cl.check("a", t0).admitted.is_ok());
        let wait = cl.check("a", t0).admitted.unwrap_err();
        assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(20), "{wait:?}");
        // Another client is not affected by a's exhaustion.
        assert!(cl.check("b", t0).admitted.is_ok());
        assert_eq!(cl.tracked(), 2);
    }

    #[test]
    fn the_window_slides() {
        let p = Duration::from_secs(10);
        let mut cl = ClientLimiter::new(10, p, 100);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(cl.check("a", t0).admitted.is_ok());
        }
        assert!(cl.check("a", t0 + Duration::from_secs(9)).admitted.is_err());
        // Half into the next window, half of the previous window's 10 still count.
        let t = t0 + Duration::from_secs(15);
        let admitted = (0..10).filter(|_| cl.check("a", t).admitted.is_ok()).count();
        assert_eq!(admitted, 5);
        // Two windows later, everything is forgotten.
        let t = t0 + Duration::from_secs(30);
        let admitted = (0..20).filter(|_| cl.check("a", t).admitted.is_ok()).count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn retry_after_is_when_a_call_would_be_admitted() {
        let p = Duration::from_secs(10);
        let mut cl = ClientLimiter::new(4, p, 10);
        let t0 = Instant::now();
        for _ in 0..4 {
            cl.check("a", t0).admitted.unwrap();
        }
        let wait = cl.check("a", t0 + Duration::from_secs(2)).admitted.unwrap_err();
        let at = t0 + Duration::from_secs(2) + wait;
        assert!(cl.check("a", at - Duration::from_millis(50)).admitted.is_err());
        assert!(cl.check("a", at + Duration::from_millis(1)).admitted.is_ok());
    }

    #[test]
    fn the_table_is_bounded_and_overflow_is_shared() {
        let p = Duration::from_secs(10);
        let mut cl = ClientLimiter::new(1, p, 3);
        let t0 = Instant::now();
        for c in ["a", "b", "c"] {
            assert_eq!(cl.check(c, t0), ClientVerdict { admitted: Ok(()), overflow: false });
        }
        // d and e do not fit: they share one window.
        let d = cl.check("d", t0);
        assert!(d.overflow && d.admitted.is_ok());
        let e = cl.check("e", t0);
        assert!(e.overflow && e.admitted.is_err());
        assert_eq!(cl.tracked(), 3);
        // Once the tracked clients are idle they are swept and new ones get a window.
        let later = t0 + p * 2;
        assert_eq!(cl.check("f", later), ClientVerdict { admitted: Ok(()), overflow: false });
        assert_eq!(cl.tracked(), 1);
    }

    #[test]
    fn long_keys_are_cut_on_a_character_boundary() {
        let mut cl = ClientLimiter::new(1, Duration::from_secs(10), 10);
        let t0 = Instant::now();
        let long = "é".repeat(100);
        assert!(cl.check(&long, t0).admitted.is_ok());
        // Same 64-byte prefix: the same client.
        assert!(cl.check(&format!("{long}x"), t0).admitted.is_err());
        assert_eq!(truncate(&long, MAX_CLIENT_KEY).len(), 64);
        assert!(!ClientLimiter::new(0, Duration::from_secs(1), 1).enabled());
    }
}
