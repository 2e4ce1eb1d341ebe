//! Prometheus metrics of the host, per plugin.
//!
//! Per-call series are resolved once per plugin ([`PluginMetrics`]) so the call path
//! does no label lookup; gauges that mirror state are refreshed at scrape time.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    calls: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    restarts: IntCounterVec,
    rate_limited: IntCounterVec,
    /// 1 for the plugin's current state, 0 for the others.
    pub state: IntGaugeVec,
    /// Worker threads stuck past a deadline.
    pub abandoned_threads: IntGaugeVec,
    /// Library copies mapped by this process (never unmapped).
    pub mapped_libraries: IntGauge,
    /// Host-service requests from plugins, by service and outcome (`ok` or the error code).
    pub host_services: IntCounterVec,
    /// Pooled database connections, by database and state (`idle`, `in_use`).
    pub db_connections: IntGaugeVec,
    /// What the sandboxed tier refused or dropped from a worker, by plugin and the limit
    /// that applied (see [`SANDBOX_LIMITS`]).
    pub sandbox_limited: IntCounterVec,
    /// Bytes of a sandboxed plugin's output (stdout, stderr, log frames) not forwarded
    /// to the log: over the line length or the line rate.
    pub sandbox_dropped_output_bytes: IntCounterVec,
    /// (plugin, code) pairs with an error series, so they can be dropped with the plugin.
    error_codes: Arc<Mutex<BTreeSet<(String, String)>>>,
}

/// The `limit` label values of `xcore_sandbox_limited_total`.
pub const SANDBOX_LIMITS: &[&str] = &[
    "max_host_calls_in_flight",
    "log_line_max_bytes",
    "log_lines_per_second",
    "unknown_reply",
    "protocol_violation",
    "write_timeout",
];

/// The per-call handles of one plugin.
#[derive(Clone)]
pub struct PluginMetrics {
    /// Calls that reached the plugin or were refused on its behalf.
    pub calls: IntCounter,
    /// Call latency in seconds.
    pub latency: prometheus::Histogram,
    /// Calls refused by the rate limit.
    pub rate_limited: IntCounter,
    /// Restarts of the plugin.
    pub restarts: IntCounter,
    errors: IntCounterVec,
    error_codes: Arc<Mutex<BTreeSet<(String, String)>>>,
    name: String,
}

impl PluginMetrics {
    /// Counts an error by code.
    pub fn error(&self, code: &str) {
        self.errors.with_label_values(&[self.name.as_str(), code]).inc();
        self.error_codes.lock().insert((self.name.clone(), code.to_string()));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let calls =
            IntCounterVec::new(Opts::new("xcore_plugin_calls_total", "Calls per plugin"), &["plugin"])
                .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new("xcore_plugin_errors_total", "Failed calls per plugin and error code"),
            &["plugin", "code"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("xcore_plugin_call_duration_seconds", "Call latency per plugin").buckets(
                vec![0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0],
            ),
            &["plugin"],
        )
        .expect("valid metric");
        let restarts =
            IntCounterVec::new(Opts::new("xcore_plugin_restarts_total", "Restarts per plugin"), &["plugin"])
                .expect("valid metric");
        let rate_limited = IntCounterVec::new(
            Opts::new("xcore_plugin_rate_limited_total", "Calls refused by the rate limit"),
            &["plugin"],
        )
        .expect("valid metric");
        let state = IntGaugeVec::new(
            Opts::new("xcore_plugin_state", "1 for the plugin's current state"),
            &["plugin", "state"],
        )
        .expect("valid metric");
        let abandoned_threads = IntGaugeVec::new(
            Opts::new("xcore_plugin_abandoned_threads", "Worker threads stuck past a deadline"),
            &["plugin"],
        )
        .expect("valid metric");
        let mapped_libraries =
            IntGauge::new("xcore_mapped_libraries", "Plugin library copies mapped (never unmapped)")
                .expect("valid metric");
        let host_services = IntCounterVec::new(
            Opts::new("xcore_host_service_requests_total", "Host-service requests from plugins"),
            &["service", "outcome"],
        )
        .expect("valid metric");
        let db_connections = IntGaugeVec::new(
            Opts::new("xcore_db_connections", "Pooled database connections"),
            &["database", "state"],
        )
        .expect("valid metric");
        let sandbox_limited = IntCounterVec::new(
            Opts::new(
                "xcore_sandbox_limited_total",
                "Requests, lines and frames of sandbox workers refused or dropped, by limit",
            ),
            &["plugin", "limit"],
        )
        .expect("valid metric");
        let sandbox_dropped_output_bytes = IntCounterVec::new(
            Opts::new(
                "xcore_sandbox_dropped_output_bytes_total",
                "Bytes of sandboxed plugins' output not forwarded to the log",
            ),
            &["plugin"],
        )
        .expect("valid metric");
        for c in [
            Box::new(sandbox_limited.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(sandbox_dropped_output_bytes.clone()),
            Box::new(calls.clone()),
            Box::new(host_services.clone()),
            Box::new(db_connections.clone()),
            Box::new(errors.clone()),
            Box::new(latency.clone()),
            Box::new(restarts.clone()),
            Box::new(rate_limited.clone()),
            Box::new(state.clone()),
            Box::new(abandoned_threads.clone()),
            Box::new(mapped_libraries.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            calls,
            errors,
            latency,
            restarts,
            rate_limited,
            state,
            abandoned_threads,
            mapped_libraries,
            host_services,
            db_connections,
            sandbox_limited,
            sandbox_dropped_output_bytes,
            error_codes: Arc::default(),
        }
    }

    /// The handles of one plugin.
    pub fn plugin(&self, name: &str) -> PluginMetrics {
        PluginMetrics {
            calls: self.calls.with_label_values(&[name]),
            latency: self.latency.with_label_values(&[name]),
            rate_limited: self.rate_limited.with_label_values(&[name]),
            restarts: self.restarts.with_label_values(&[name]),
            errors: self.errors.clone(),
            error_codes: self.error_codes.clone(),
            name: name.to_string(),
        }
    }

    /// Registers more collectors (the hook counters) in the same registry.
    pub fn register_collectors(&self, collectors: Vec<Box<dyn prometheus::core::Collector>>) {
        for c in collectors {
            if let Err(e) = self.registry.register(c) {
                log::error!(target: "xcore::metrics", "registering a collector: {e}");
            }
        }
    }

    /// Drops the series of a plugin that no longer exists.
    pub fn forget_plugin(&self, name: &str) {
        for vec in [&self.calls, &self.restarts, &self.rate_limited] {
            let _ = vec.remove_label_values(&[name]);
        }
        let _ = self.latency.remove_label_values(&[name]);
        let _ = self.abandoned_threads.remove_label_values(&[name]);
        let _ = self.sandbox_dropped_output_bytes.remove_label_values(&[name]);
        for limit in SANDBOX_LIMITS {
            let _ = self.sandbox_limited.remove_label_values(&[name, limit]);
        }
        for st in crate::runtime::PluginState::ALL {
            let _ = self.state.remove_label_values(&[name, st.as_str()]);
        }
        // Error series are keyed by code too: drop the ones this plugin produced.
        let mut seen = self.error_codes.lock();
        seen.retain(|(plugin, code)| {
            if plugin == name {
                let _ = self.errors.remove_label_values(&[name, code]);
                false
            } else {
                true
            }
        });
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
