//! Brief busy-polling of a reply before parking.
//!
//! A call hand-off costs two thread wake-ups (to the plugin's worker and back). Waking a
//! parked tokio runtime goes through its I/O driver (an eventfd write and an epoll
//! return), which on a small VM costs tens of microseconds, far more than a trivial
//! call. Polling for a short, bounded time first turns the common case into a
//! cache-line hand-off; a call that takes longer than the budget pays only the budget.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Polls `rx` for up to `budget`; `Some` if the value arrived meanwhile.
pub fn poll_briefly<T>(rx: &mut oneshot::Receiver<T>, budget: Duration) -> Option<T> {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(oneshot::error::TryRecvError::Closed) => return None,
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        spins += 1;
        // Reading the clock costs ~20 ns; check it every 64 spins.
        if spins.is_multiple_of(64) && start.elapsed() >= budget {
            return None;
        }
        std::hint::spin_loop();
    }
}
