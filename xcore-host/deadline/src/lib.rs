//! The deadline of the plugin call a thread is serving, so host services that wait
//! (a database connection from the pool) give up with a clean error before the call's
//! own deadline, instead of making the call time out.
//!
//! Set around a trusted plugin's `call` on its worker thread (the plugin's host calls
//! come back on that thread), and around a sandboxed plugin's host call on the host
//! thread that serves it (the worker sends the call's deadline with the request).

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

thread_local! {
    /// Unix milliseconds; 0 = no deadline.
    static DEADLINE_UNIX_MS: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` with `deadline_unix_ms` (0 = none) as this thread's call deadline.
pub fn with<R>(deadline_unix_ms: u64, f: impl FnOnce() -> R) -> R {
    let previous = DEADLINE_UNIX_MS.with(|d| d.replace(deadline_unix_ms));
    // Restored on unwind too: a caught panic must not leave a stale deadline behind.
    struct Restore(u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEADLINE_UNIX_MS.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(previous);
    f()
}

/// The current call's deadline, as Unix milliseconds (0 = none).
pub fn current_unix_ms() -> u64 {
    DEADLINE_UNIX_MS.with(Cell::get)
}

/// Time left before the current call's deadline; `None` outside a call.
pub fn remaining() -> Option<Duration> {
    let deadline = current_unix_ms();
    if deadline == 0 {
        return None;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Some(Duration::from_millis(deadline.saturating_sub(now)))
}

/// `limit`, shortened to what is left of the current call.
pub fn bound(limit: Duration) -> Duration {
    remaining().map_or(limit, |r| r.min(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_for_the_closure_only_and_restored() {
        assert_eq!(remaining(), None);
        let in_a_second = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 + 1000;
        with(in_a_second, || {
            let r = remaining().unwrap();
            assert!(r <= Duration::from_secs(1) && r > Duration::from_millis(500), "{r:?}");
            assert_eq!(bound(Duration::from_secs(5)), remaining().unwrap().min(Duration::from_secs(5)));
            assert_eq!(bound(Duration::from_millis(10)), Duration::from_millis(10));
        });
        assert_eq!(remaining(), None);
        let _ = std::panic::catch_unwind(|| with(1, || panic!("boom")));
        assert_eq!(current_unix_ms(), 0, "restored after a panic");
        with(1, || assert_eq!(remaining(), Some(Duration::ZERO), "passed"));
    }
}
