//! Per-event-name metrics of the hooks, kept in-process and exported to Prometheus.
//!
//! Prometheus series (all counters, label `event`):
//! - `xcore_hook_emissions_total`: emits that passed the depth check (cancelled and skipped
//!   ones included);
//! - `xcore_hook_handler_runs_total`: handler runs;
//! - `xcore_hook_handler_errors_total`: failed runs (errors, panics, timeouts, depth failures);
//! - `xcore_hook_emit_duration_seconds_total`: summed emit wall time (a nested emit counts in
//!   its own event and again inside the emit that contains it).
//!
//! Gauges and the counter of the manager's bounds ([`super::HookLimits`]):
//! - `xcore_hook_handlers`: subscriptions registered;
//! - `xcore_hook_detached_emits_in_flight`: detached emits queued or running;
//! - `xcore_hook_refusals_total` (label `limit`: `handlers`, `subscriptions_per_plugin`,
//!   `detached_emits`, `detached_emits_per_plugin`): registrations and detached emits refused.
//!
//! Event names come from plugins, so at most `max_tracked_events` distinct names get their own
//! series; the others are summed under [`OTHER_EVENT`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use prometheus::core::Collector;
use prometheus::{Counter, CounterVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::Serialize;

/// Distinct event names tracked by default before aggregating under [`OTHER_EVENT`].
pub const DEFAULT_MAX_TRACKED_EVENTS: usize = 1000;

/// The label value that aggregates event names beyond the cap.
pub const OTHER_EVENT: &str = "_other";

/// Metrics of one event name, as returned by [`super::HookManager::metrics_snapshot`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventMetrics {
    /// The event name, or [`OTHER_EVENT`].
    pub event: String,
    /// Emits.
    pub emissions: u64,
    /// Handler runs.
    pub handler_runs: u64,
    /// Failed handler runs.
    pub errors: u64,
    /// Summed emit wall time, in microseconds.
    pub total_duration_us: u64,
    /// Mean emit wall time, in microseconds (0 without emissions).
    pub mean_duration_us: f64,
}

/// The series of one event name, resolved once so the emit path does no label lookup.
pub(crate) struct EventStats {
    event: String,
    emissions: IntCounter,
    runs: IntCounter,
    errors: IntCounter,
    seconds: Counter,
    /// Exact microseconds for the snapshot (the float counter is for Prometheus).
    total_us: AtomicU64,
}

/// All hook metrics of one manager.
pub(crate) struct HookMetrics {
    emissions: IntCounterVec,
    runs: IntCounterVec,
    errors: IntCounterVec,
    seconds: CounterVec,
    events: RwLock<HashMap<String, Arc<EventStats>>>,
    max_events: usize,
    /// Subscriptions registered.
    pub(crate) handlers: IntGauge,
    /// Detached emits queued or running.
    pub(crate) detached_in_flight: IntGauge,
    /// Refusals by limit.
    refusals: IntCounterVec,
}

impl HookMetrics {
    /// Fresh metrics tracking at most `max_events` names (plus [`OTHER_EVENT`]).
    pub(crate) fn new(max_events: usize) -> Self {
        let int_vec = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["event"]).expect("valid metric")
        };
        HookMetrics {
            emissions: int_vec("xcore_hook_emissions_total", "Hook emits per event name"),
            runs: int_vec("xcore_hook_handler_runs_total", "Hook handler runs per event name"),
            errors: int_vec("xcore_hook_handler_errors_total", "Failed hook handler runs per event name"),
            seconds: CounterVec::new(
                Opts::new(
                    "xcore_hook_emit_duration_seconds_total",
                    "Summed hook emit wall time per event name",
                ),
                &["event"],
            )
            .expect("valid metric"),
            events: RwLock::new(HashMap::new()),
            max_events,
            handlers: IntGauge::new("xcore_hook_handlers", "Hook subscriptions registered")
                .expect("valid metric"),
            detached_in_flight: IntGauge::new(
                "xcore_hook_detached_emits_in_flight",
                "Detached emits queued or running",
            )
            .expect("valid metric"),
            refusals: IntCounterVec::new(
                Opts::new("xcore_hook_refusals_total", "Subscriptions and detached emits refused, by limit"),
                &["limit"],
            )
            .expect("valid metric"),
        }
    }

    /// Counts a refusal by the limit that caused it (a fixed set of names).
    pub(crate) fn refused(&self, limit: &'static str) {
        self.refusals.with_label_values(&[limit]).inc();
    }

    /// The series of `event`, created on first use.
    pub(crate) fn stats_for(&self, event: &str) -> Arc<EventStats> {
        if let Some(stats) = self.events.read().get(event) {
            return stats.clone();
        }
        let mut events = self.events.write();
        if let Some(stats) = events.get(event) {
            return stats.clone();
        }
        let tracked = events.len() - usize::from(events.contains_key(OTHER_EVENT));
        let key = if tracked < self.max_events { event } else { OTHER_EVENT };
        events.entry(key.to_owned()).or_insert_with(|| Arc::new(self.new_stats(key))).clone()
    }

    fn new_stats(&self, event: &str) -> EventStats {
        EventStats {
            event: event.to_owned(),
            emissions: self.emissions.with_label_values(&[event]),
            runs: self.runs.with_label_values(&[event]),
            errors: self.errors.with_label_values(&[event]),
            seconds: self.seconds.with_label_values(&[event]),
            total_us: AtomicU64::new(0),
        }
    }

    /// Records one finished emit.
    pub(crate) fn record(&self, stats: &EventStats, elapsed: Duration, runs: u64, errors: u64) {
        stats.emissions.inc();
        stats.runs.inc_by(runs);
        stats.errors.inc_by(errors);
        stats.seconds.inc_by(elapsed.as_secs_f64());
        stats.total_us.fetch_add(duration_us(elapsed), Ordering::Relaxed);
    }

    /// Every tracked event, sorted by name.
    pub(crate) fn snapshot(&self) -> Vec<EventMetrics> {
        let mut out: Vec<EventMetrics> = self
            .events
            .read()
            .values()
            .map(|s| {
                let emissions = s.emissions.get();
                let total_us = s.total_us.load(Ordering::Relaxed);
                EventMetrics {
                    event: s.event.clone(),
                    emissions,
                    handler_runs: s.runs.get(),
                    errors: s.errors.get(),
                    total_duration_us: total_us,
                    mean_duration_us: if emissions == 0 { 0.0 } else { total_us as f64 / emissions as f64 },
                }
            })
            .collect();
        out.sort_by(|a, b| a.event.cmp(&b.event));
        out
    }

    /// The Prometheus collectors (clones sharing the same values).
    pub(crate) fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.emissions.clone()),
            Box::new(self.runs.clone()),
            Box::new(self.errors.clone()),
            Box::new(self.seconds.clone()),
            Box::new(self.handlers.clone()),
            Box::new(self.detached_in_flight.clone()),
            Box::new(self.refusals.clone()),
        ]
    }

    /// Registers the collectors in `registry`.
    pub(crate) fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        self.collectors().into_iter().try_for_each(|c| registry.register(c))
    }
}

/// Microseconds, saturating (an emit does not last 584 000 years).
pub(crate) fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_beyond_the_cap_go_to_other() {
        let m = HookMetrics::new(2);
        for name in ["a", "b", "c", "d", "a"] {
            let s = m.stats_for(name);
            m.record(&s, Duration::from_micros(10), 1, 0);
        }
        let snap = m.snapshot();
        let names: Vec<_> = snap.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(names, ["_other", "a", "b"]);
        assert_eq!(snap[0].emissions, 2);
        assert_eq!(snap[1].emissions, 2);
    }

    #[test]
    fn exports_to_prometheus() {
        let m = HookMetrics::new(10);
        let s = m.stats_for("plugin.loaded");
        m.record(&s, Duration::from_millis(2), 3, 1);
        let registry = Registry::new();
        m.register(&registry).unwrap();
        let families = registry.gather();
        let find = |name: &str| families.iter().find(|f| f.name() == name).expect(name);
        let runs = find("xcore_hook_handler_runs_total");
        assert_eq!(runs.get_metric()[0].get_counter().get_value(), 3.0);
        assert_eq!(runs.get_metric()[0].get_label()[0].value(), "plugin.loaded");
        assert_eq!(find("xcore_hook_handler_errors_total").get_metric()[0].get_counter().get_value(), 1.0);
        let secs = find("xcore_hook_emit_duration_seconds_total").get_metric()[0].get_counter().get_value();
        assert!((secs - 0.002).abs() < 1e-9);
        assert!(m.register(&registry).is_err(), "double registration is reported, not ignored");
    }
}
