//! The plugin state machine and the restart policy, in the spirit of Erlang/OTP's
//! supervisors: restart with exponential backoff, but at most `max_restarts` within
//! `within_seconds` (the restart intensity); past that the plugin is `failed` until an
//! operator resets it, so a crash loop cannot spin forever (the Python original reset its
//! counter on every successful start and restarted forever).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use xcore_manifest::RestartPolicy;

/// Where a plugin is in its life.
///
/// ```text
/// discovered -> loading -> ready <-> degraded -> restarting -> ready
///                  |                                 |
///                  +-----------> failed <------------+   (reset -> loading)
/// any -> unloaded (unload), unloaded -> loading (load)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Hash)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum PluginState {
    /// Found on disk, not loaded yet.
    Discovered = 0,
    /// Being loaded.
    Loading = 1,
    /// Serving calls.
    Ready = 2,
    /// Its instance misbehaved (timeout, crash); no calls are routed to it.
    Degraded = 3,
    /// Waiting for its backoff, then loading a fresh instance.
    Restarting = 4,
    /// Could not be loaded, or restarted too often; needs an operator's reset.
    Failed = 5,
    /// Unloaded by an operator.
    Unloaded = 6,
    /// Disabled by an operator: stays unloaded, across restarts too, until enabled.
    Disabled = 7,
}

impl PluginState {
    /// Every state, for metrics.
    pub const ALL: [PluginState; 8] = [
        PluginState::Discovered,
        PluginState::Loading,
        PluginState::Ready,
        PluginState::Degraded,
        PluginState::Restarting,
        PluginState::Failed,
        PluginState::Unloaded,
        PluginState::Disabled,
    ];

    /// From the `repr(u8)` value.
    pub fn from_u8(v: u8) -> PluginState {
        Self::ALL.get(v as usize).copied().unwrap_or(PluginState::Failed)
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginState::Discovered => "discovered",
            PluginState::Loading => "loading",
            PluginState::Ready => "ready",
            PluginState::Degraded => "degraded",
            PluginState::Restarting => "restarting",
            PluginState::Failed => "failed",
            PluginState::Unloaded => "unloaded",
            PluginState::Disabled => "disabled",
        }
    }
}

impl fmt::Display for PluginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many caught panics in a row count as a crash (and restart the instance).
pub const PANICS_IN_A_ROW_IS_A_CRASH: u32 = 3;

/// The decision for one restart request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart after this delay.
    After(Duration),
    /// Too many restarts within the window: give up until reset.
    GiveUp {
        /// Restarts counted in the window, this one included.
        restarts: usize,
    },
}

/// Remembers recent restarts of one plugin and applies its [`RestartPolicy`].
#[derive(Debug, Default)]
pub struct RestartTracker {
    recent: VecDeque<Instant>,
    total: u64,
}

impl RestartTracker {
    /// Records a restart request at `now` and decides.
    pub fn on_failure(&mut self, policy: &RestartPolicy, now: Instant) -> RestartDecision {
        let window = Duration::from_secs(policy.within_seconds);
        while let Some(&t) = self.recent.front() {
            if now.duration_since(t) > window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now);
        if self.recent.len() > policy.max_restarts as usize {
            return RestartDecision::GiveUp { restarts: self.recent.len() };
        }
        self.total += 1;
        // The n-th restart in the window waits initial * 2^(n-1), capped.
        let exp = (self.recent.len() as u32).saturating_sub(1).min(20);
        let delay = policy.backoff_initial_ms.saturating_mul(1u64 << exp).min(policy.backoff_max_ms);
        RestartDecision::After(Duration::from_millis(delay))
    }

    /// Restarts performed since the plugin was first loaded.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Failures recorded within the last `window` before `now`: what the intensity counts
    /// against `max_restarts` (one more than it: the plugin was given up).
    pub fn in_window(&self, window: Duration, now: Instant) -> usize {
        self.recent.iter().filter(|&&t| now.duration_since(t) <= window).count()
    }

    /// Forgets the window (an operator's reset).
    pub fn reset_window(&mut self) {
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: u32) -> RestartPolicy {
        RestartPolicy { max_restarts: max, within_seconds: 60, backoff_initial_ms: 100, backoff_max_ms: 350 }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut t = RestartTracker::default();
        let p = policy(10);
        let now = Instant::now();
        let delays: Vec<_> = (0..4)
            .map(|_| match t.on_failure(&p, now) {
                RestartDecision::After(d) => d.as_millis(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(delays, vec![100, 200, 350, 350]);
        assert_eq!(t.total(), 4);
    }

    #[test]
    fn intensity_exceeded_gives_up_until_reset() {
        let mut t = RestartTracker::default();
        let p = policy(2);
        let now = Instant::now();
        assert!(matches!(t.on_failure(&p, now), RestartDecision::After(_)));
        assert!(matches!(t.on_failure(&p, now), RestartDecision::After(_)));
        assert_eq!(t.on_failure(&p, now), RestartDecision::GiveUp { restarts: 3 });
        t.reset_window();
        assert!(matches!(t.on_failure(&p, now), RestartDecision::After(_)));
    }

    #[test]
    fn the_window_count_is_what_the_intensity_counts() {
        let mut t = RestartTracker::default();
        let p = policy(5);
        let start = Instant::now();
        t.on_failure(&p, start);
        t.on_failure(&p, start + Duration::from_secs(30));
        assert_eq!(t.in_window(Duration::from_secs(60), start + Duration::from_secs(40)), 2);
        assert_eq!(
            t.in_window(Duration::from_secs(60), start + Duration::from_secs(80)),
            1,
            "the first left"
        );
        t.reset_window();
        assert_eq!(t.in_window(Duration::from_secs(60), start + Duration::from_secs(80)), 0);
        assert_eq!(t.total(), 2, "the total stays");
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let mut t = RestartTracker::default();
        let p = policy(1);
        let now = Instant::now();
        assert!(matches!(t.on_failure(&p, now), RestartDecision::After(_)));
        assert!(matches!(t.on_failure(&p, now + Duration::from_secs(61)), RestartDecision::After(_)));
    }
}
