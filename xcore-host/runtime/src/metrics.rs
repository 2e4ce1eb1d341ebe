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
    /// Open connection pools of plugins' SQL (one per plugin and database it uses).
    pub db_plugin_pools: IntGauge,
    /// HTTP requests refused before they reached a plugin or the registry, by code
    /// (`payload_too_large`, `body_timeout`, `invalid_json`, `invalid_name`,
    /// `invalid_path`, `unauthorized`, `forbidden`): a fixed set of label values.
    pub http_rejected: IntCounterVec,
    /// What the sandboxed tier refused or dropped from a worker, by plugin and the limit
    /// that applied (see [`SANDBOX_LIMITS`]).
    pub sandbox_limited: IntCounterVec,
    /// Bytes of a sandboxed plugin's output (stdout, stderr, log frames) not forwarded
    /// to the log: over the line length or the line rate.
    pub sandbox_dropped_output_bytes: IntCounterVec,
    /// (plugin, code) pairs with an error series, so they can be dropped with the plugin.
    error_codes: Arc<Mutex<BTreeSet<(String, String)>>>,
    /// Requests refused by a bound, by the bound's name (a fixed set: `jobs_per_plugin`,
    /// `cache_value_bytes`, `kv_keys_per_plugin`, `reserved_event`).
    pub limit_refusals: IntCounterVec,
    /// Rows removed by the retention of `job_runs` and `audit_log`, by table.
    pub pruned_rows: IntCounterVec,
    overloaded: IntCounterVec,
    shed: IntCounterVec,
    client_rate_limited: IntCounterVec,
    client_overflow: IntCounterVec,
    /// Clients the per-client rate limit of a plugin tracks now.
    pub rate_limit_clients: IntGaugeVec,
    /// `plugins.max_abandoned_threads`: past it a trusted plugin is failed.
    pub abandoned_threads_limit: IntGauge,
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
    /// Calls answered 503 `overloaded`: no worker or call slot took them in time.
    pub overloaded: IntCounter,
    /// Calls dropped before they started because their caller had given up.
    pub shed: IntCounter,
    /// Calls refused by the per-client rate limit.
    pub client_rate_limited: IntCounter,
    /// Calls whose client found no room in the per-client table and shared its
    /// overflow window.
    pub client_overflow: IntCounter,
    errors: IntCounterVec,
    error_codes: Arc<Mutex<BTreeSet<(String, String)>>>,
    name: String,
}

impl PluginMetrics {
    /// Counts an error by code. Codes are chosen by the plugin, so the label is bounded:
    /// see [`error_code_label`].
    pub fn error(&self, code: &str) {
        let label = {
            let mut seen = self.error_codes.lock();
            let label = error_code_label(&seen, &self.name, code);
            seen.insert((self.name.clone(), label.to_string()));
            label.to_string()
        };
        self.errors.with_label_values(&[self.name.as_str(), label.as_str()]).inc();
    }
}

/// The error codes of the host and of `xcore_plugin_abi::codes`: always their own label.
pub const KNOWN_ERROR_CODES: &[&str] = &[
    xcore_plugin_abi::codes::UNKNOWN_ACTION,
    xcore_plugin_abi::codes::INVALID_PAYLOAD,
    xcore_plugin_abi::codes::PLUGIN_PANIC,
    xcore_plugin_abi::codes::INTERNAL,
    xcore_plugin_abi::codes::NOT_FOUND,
    xcore_plugin_abi::codes::UNSUPPORTED,
    "unknown_plugin",
    "unavailable",
    "overloaded",
    "rate_limited",
    "timeout",
    "plugin_crashed",
    "payload_too_large",
    "disk_quota",
    "reentrant_call",
    "permission_denied",
    "depth_exceeded",
];

/// Codes of its own a plugin gets a series for, beyond [`KNOWN_ERROR_CODES`]; the
/// plugin's later codes are counted under [`OTHER_ERROR_CODE`].
pub const MAX_PLUGIN_ERROR_CODES: usize = 20;

/// The label of error codes folded together.
pub const OTHER_ERROR_CODE: &str = "other";

/// The `code` label for `code` of `plugin`: the code itself when it is a known one or one
/// of the plugin's first [`MAX_PLUGIN_ERROR_CODES`] codes of its own (`seen` holds the
/// (plugin, label) pairs counted so far), else [`OTHER_ERROR_CODE`].
fn error_code_label<'a>(seen: &BTreeSet<(String, String)>, plugin: &str, code: &'a str) -> &'a str {
    if KNOWN_ERROR_CODES.contains(&code) || code == OTHER_ERROR_CODE {
        return code;
    }
    let mut own = seen
        .range((plugin.to_string(), String::new())..)
        .take_while(|(p, _)| p == plugin)
        .filter(|(_, c)| !KNOWN_ERROR_CODES.contains(&c.as_str()) && c != OTHER_ERROR_CODE);
    if own.clone().any(|(_, c)| c == code) {
        return code;
    }
    if own.nth(MAX_PLUGIN_ERROR_CODES - 1).is_some() {
        OTHER_ERROR_CODE
    } else {
        code
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
        let db_plugin_pools = IntGauge::new(
            "xcore_db_plugin_pools",
            "Open connection pools of plugins' SQL (one per plugin and database it uses)",
        )
        .expect("valid metric");
        let limit_refusals = IntCounterVec::new(
            Opts::new("xcore_limit_refusals_total", "Requests refused by a bound, by the bound's name"),
            &["limit"],
        )
        .expect("valid metric");
        let pruned_rows = IntCounterVec::new(
            Opts::new("xcore_store_pruned_rows_total", "Rows removed by retention, by table"),
            &["table"],
        )
        .expect("valid metric");
        let counter = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["plugin"]).expect("valid metric")
        };
        let overloaded = counter(
            "xcore_plugin_calls_overloaded_total",
            "Calls answered 503 overloaded: no worker or call slot took them within the queue timeout",
        );
        let shed = counter(
            "xcore_plugin_calls_shed_total",
            "Calls dropped before they started because their caller had given up",
        );
        let client_rate_limited =
            counter("xcore_plugin_client_rate_limited_total", "Calls refused by the per-client rate limit");
        let client_overflow = counter(
            "xcore_plugin_rate_limit_client_overflow_total",
            "Calls whose client did not fit the per-client table and shared its overflow window",
        );
        let rate_limit_clients = IntGaugeVec::new(
            Opts::new("xcore_plugin_rate_limit_clients", "Clients tracked by the per-client rate limit"),
            &["plugin"],
        )
        .expect("valid metric");
        let abandoned_threads_limit = IntGauge::new(
            "xcore_abandoned_threads_limit",
            "Abandoned threads a trusted plugin may have and still be restarted (plugins.max_abandoned_threads)",
        )
        .expect("valid metric");
        for c in [
            Box::new(overloaded.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(shed.clone()),
            Box::new(client_rate_limited.clone()),
            Box::new(client_overflow.clone()),
            Box::new(rate_limit_clients.clone()),
            Box::new(abandoned_threads_limit.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        let http_rejected = IntCounterVec::new(
            Opts::new("xcore_http_rejected_total", "HTTP requests refused by the input checks, by code"),
            &["code"],
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
            Box::new(calls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_rejected.clone()),
            Box::new(sandbox_limited.clone()),
            Box::new(sandbox_dropped_output_bytes.clone()),
            Box::new(limit_refusals.clone()),
            Box::new(pruned_rows.clone()),
            Box::new(host_services.clone()),
            Box::new(db_connections.clone()),
            Box::new(db_plugin_pools.clone()),
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
            db_plugin_pools,
            http_rejected,
            sandbox_limited,
            sandbox_dropped_output_bytes,
            error_codes: Arc::default(),
            limit_refusals,
            pruned_rows,
            overloaded,
            shed,
            client_rate_limited,
            client_overflow,
            rate_limit_clients,
            abandoned_threads_limit,
        }
    }

    /// Counts a request refused by the bound `limit`.
    pub fn limit_refused(&self, limit: &'static str) {
        self.limit_refusals.with_label_values(&[limit]).inc();
    }

    /// The handles of one plugin.
    pub fn plugin(&self, name: &str) -> PluginMetrics {
        PluginMetrics {
            calls: self.calls.with_label_values(&[name]),
            latency: self.latency.with_label_values(&[name]),
            rate_limited: self.rate_limited.with_label_values(&[name]),
            restarts: self.restarts.with_label_values(&[name]),
            overloaded: self.overloaded.with_label_values(&[name]),
            shed: self.shed.with_label_values(&[name]),
            client_rate_limited: self.client_rate_limited.with_label_values(&[name]),
            client_overflow: self.client_overflow.with_label_values(&[name]),
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
        for vec in [&self.overloaded, &self.shed, &self.client_rate_limited, &self.client_overflow] {
            let _ = vec.remove_label_values(&[name]);
        }
        let _ = self.rate_limit_clients.remove_label_values(&[name]);
        let _ = self.latency.remove_label_values(&[name]);
        let _ = self.abandoned_threads.remove_label_values(&[name]);
        let _ = self.sandbox_dropped_output_bytes.remove_label_values(&[name]);
        for limit in SANDBOX_LIMITS {
            let _ = self.sandbox_limited.remove_label_values(&[name, limit]);
        }
        for st in crate::PluginState::ALL {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_error_codes_are_folded_past_the_cap() {
        let m = Metrics::new();
        let p = m.plugin("greedy");
        for i in 0..(MAX_PLUGIN_ERROR_CODES + 30) {
            p.error(&format!("code_{i}"));
        }
        p.error("timeout");
        p.error("code_0");
        let q = m.plugin("other_plugin");
        q.error("code_999");
        let text = m.encode();
        let series: Vec<&str> =
            text.lines().filter(|l| l.starts_with("xcore_plugin_errors_total{")).collect();
        let greedy: Vec<&&str> = series.iter().filter(|l| l.contains("plugin=\"greedy\"")).collect();
        // Its first codes, the known one and `other`.
        assert_eq!(greedy.len(), MAX_PLUGIN_ERROR_CODES + 2, "{greedy:#?}");
        assert!(text.contains("xcore_plugin_errors_total{code=\"other\",plugin=\"greedy\"} 30"), "{text}");
        assert!(text.contains("xcore_plugin_errors_total{code=\"code_0\",plugin=\"greedy\"} 2"), "{text}");
        assert!(text.contains("xcore_plugin_errors_total{code=\"timeout\",plugin=\"greedy\"} 1"), "{text}");
        // Another plugin has a budget of its own.
        assert!(text.contains("code=\"code_999\",plugin=\"other_plugin\""), "{text}");
        m.forget_plugin("greedy");
        assert!(!m.encode().contains("plugin=\"greedy\""));
    }
}
