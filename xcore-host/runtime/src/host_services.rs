//! The host object every plugin instance receives: its way back into the host.
//!
//! This is the FFI face of the host services: it converts ABI types and catches panics.
//! Every method catches: a panic unwinding out of a host callback would cross the
//! `extern "C"` boundary and abi_stable would exit the whole process. What a host call
//! does is not the runtime's business: it hands each one to the [`HostCalls`] the
//! composition root gave the registry (the host's own is `xcore_services::Services`), so
//! the runtime names no service of the services crate.
//!
//! Two services are the runtime's own, because only the runtime knows their answer and
//! they need no permission: `host.info` (the plugin's name and the host's log level, which
//! the SDK's `log` bridge asks for once per instance) and `host.data_dir` (the plugin's
//! `data/` folder, created on demand: the same absolute path in both tiers). They travel
//! as host calls rather than as new fields of `InitArgs`, whose layout abi_stable checks:
//! a new field would make the host refuse every plugin built before it.
//!
//! A trusted instance's log lines pass a [`LogGate`] here (a line budget per second and a
//! longest line); a sandboxed worker's lines pass the sandbox's own gate in its reader,
//! shared with its stdout and stderr, before they reach [`HostObject::log`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use crate::line_budget::LineBudget;

use xcore_plugin_abi::abi_stable::std_types::{RResult, RSlice, RStr, RString};
use xcore_plugin_abi::codes;
use xcore_plugin_abi::ffi::{level, CallError, CallResult, HostObject};

use crate::metrics::Metrics;

/// Who makes a host call: one instance of a plugin and what its manifest asks for.
#[derive(Debug, Clone)]
pub struct HostCaller {
    /// Plugin name.
    pub plugin: Arc<str>,
    /// Which instance of it (its subscriptions belong to that instance).
    pub generation: u64,
    /// Its manifest's permissions.
    pub permissions: Arc<[String]>,
}

/// What serves plugins' host calls (`Context::call_host`), the same for both tiers: the
/// reply is JSON bytes, a refusal a plugin-visible [`CallError`]. Built by the
/// composition root; the runtime only carries it to every instance.
pub trait HostCalls: Send + Sync {
    /// Serves `service` for `caller`, inside the call `request_id`.
    fn serve(
        &self,
        caller: &HostCaller,
        service: &str,
        request_id: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, CallError>;
}

/// The log budget of one trusted instance (`plugins.log_lines_per_second`, burst as
/// many; `plugins.log_line_max_bytes`): a plugin in a logging loop cannot flood the
/// host's log. The excess is dropped, counted (`xcore_limit_refusals_total{limit=
/// "log_lines_per_second"}`) and reported with the next line let through.
pub struct LogGate(LineBudget);

impl LogGate {
    /// At most `lines_per_second` lines (at least 1), each cut to `max_line` bytes (at
    /// least 80).
    pub fn new(lines_per_second: u32, max_line: usize) -> Self {
        LogGate(LineBudget::new(lines_per_second, max_line))
    }

    /// `Some(lines dropped since the last admitted one)` when one more line may go.
    fn admit(&self) -> Option<u64> {
        self.0.admit()
    }

    /// `line` cut to the longest line (on a character boundary) and the bytes cut.
    fn cut<'a>(&self, line: &'a str) -> (&'a str, usize) {
        self.0.cut(line)
    }

    /// The lines per second it lets through.
    fn rate(&self) -> f64 {
        self.0.rate()
    }
}

/// The host services of one plugin instance.
#[derive(Clone)]
pub struct HostServices {
    caller: HostCaller,
    /// `None`: detached (no host behind it).
    calls: Option<Arc<dyn HostCalls>>,
    metrics: Option<Arc<Metrics>>,
    /// The plugin's `data/` folder (`host.data_dir`); `None` when detached.
    data_dir: Option<PathBuf>,
    /// The trusted tier's log budget; `None` for a sandboxed instance, whose lines were
    /// gated in the host's reader of its socket.
    log_gate: Option<Arc<LogGate>>,
}

impl HostServices {
    /// Services for the plugin `name` with its manifest's `permissions`, served by `calls`.
    pub fn new(
        name: &str,
        generation: u64,
        permissions: &[String],
        calls: Arc<dyn HostCalls>,
        metrics: Arc<Metrics>,
    ) -> Self {
        HostServices {
            caller: HostCaller { plugin: Arc::from(name), generation, permissions: Arc::from(permissions) },
            calls: Some(calls),
            metrics: Some(metrics),
            data_dir: None,
            log_gate: None,
        }
    }

    /// The plugin's `data/` folder, answered by `host.data_dir` (and created then).
    pub fn with_data_dir(mut self, dir: PathBuf) -> Self {
        self.data_dir = Some(dir);
        self
    }

    /// Gates this instance's log lines (the trusted tier).
    pub fn with_log_gate(mut self, gate: LogGate) -> Self {
        self.log_gate = Some(Arc::new(gate));
        self
    }

    /// Services bound to no host (benchmarks, tools): logging works, every other
    /// service answers that the host is unavailable.
    pub fn detached(name: &str) -> Self {
        HostServices {
            caller: HostCaller { plugin: Arc::from(name), generation: 0, permissions: Arc::from([]) },
            calls: None,
            metrics: None,
            data_dir: None,
            log_gate: None,
        }
    }

    /// The host's metrics (none when detached).
    pub fn metrics(&self) -> Option<Arc<Metrics>> {
        self.metrics.clone()
    }

    /// The plugin these services belong to.
    pub fn plugin(&self) -> &str {
        &self.caller.plugin
    }

    /// Serves a host-service request; the same path for both tiers.
    pub fn serve(&self, service: &str, request_id: &str, payload: &[u8]) -> Result<Vec<u8>, CallError> {
        match service {
            "host.info" => return Ok(self.info()),
            "host.data_dir" => return self.data_dir(),
            _ => {}
        }
        let Some(calls) = &self.calls else {
            return Err(CallError {
                code: RString::from("unavailable"),
                message: RString::from("the host is shutting down"),
                status: 503,
            });
        };
        match catch_unwind(AssertUnwindSafe(|| calls.serve(&self.caller, service, request_id, payload))) {
            Ok(result) => result,
            Err(_) => Err(CallError {
                code: RString::from(codes::INTERNAL),
                message: RString::from(format!("the host panicked while serving '{service}'")),
                status: 500,
            }),
        }
    }
}

impl HostServices {
    /// `host.info`: what the SDK needs to know of the host once per instance.
    fn info(&self) -> Vec<u8> {
        let level = log::max_level().to_string().to_ascii_lowercase();
        serde_json::json!({ "plugin": &*self.caller.plugin, "log_level": level }).to_string().into_bytes()
    }

    /// `host.data_dir`: the plugin's `data/`, created if missing, as an absolute path.
    fn data_dir(&self) -> Result<Vec<u8>, CallError> {
        let err = |status: u16, code: &str, message: String| CallError {
            code: RString::from(code),
            message: RString::from(message),
            status,
        };
        let Some(dir) = &self.data_dir else {
            return Err(err(503, "unavailable", "this instance has no data folder (detached)".into()));
        };
        let plugin = &*self.caller.plugin;
        std::fs::create_dir_all(dir).map_err(|e| {
            err(500, codes::IO_ERROR, format!("plugin '{plugin}': creating {}: {e}", dir.display()))
        })?;
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        let Some(path) = dir.to_str() else {
            return Err(err(
                500,
                codes::INTERNAL,
                format!("plugin '{plugin}': {} is not UTF-8", dir.display()),
            ));
        };
        Ok(serde_json::json!({ "path": path }).to_string().into_bytes())
    }

    /// Writes one line of the plugin's to the host's log, under its name.
    fn write_log(&self, level: log::Level, request_id: &str, message: &str) {
        let plugin = &*self.caller.plugin;
        // The target is the plugin's name, so filters and the JSON log can select it.
        if log::log_enabled!(target: plugin, level) {
            crate::log_context::with_call_context(plugin, request_id, || {
                log::log!(target: plugin, level, "{message}");
            });
        }
    }
}

fn to_level(l: u8) -> log::Level {
    match l {
        level::ERROR => log::Level::Error,
        level::WARN => log::Level::Warn,
        level::INFO => log::Level::Info,
        level::DEBUG => log::Level::Debug,
        _ => log::Level::Trace,
    }
}

impl HostObject for HostServices {
    fn log(&self, level: u8, request_id: RStr<'_>, message: RStr<'_>) {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let level = to_level(level);
            let (request_id, message) = (request_id.as_str(), message.as_str());
            let Some(gate) = &self.log_gate else {
                return self.write_log(level, request_id, message);
            };
            let Some(dropped) = gate.admit() else {
                if let Some(m) = &self.metrics {
                    m.limit_refused("log_lines_per_second");
                }
                return;
            };
            if dropped > 0 {
                log::warn!(
                    target: "xcore::plugins",
                    "plugin '{}': dropped {dropped} log lines over the limit of {} lines per second (plugins.log_lines_per_second)",
                    self.caller.plugin,
                    gate.rate()
                );
            }
            let (request_id, _) = gate.cut(request_id);
            match gate.cut(message) {
                (text, 0) => self.write_log(level, request_id, text),
                (text, cut) => {
                    if let Some(m) = &self.metrics {
                        m.limit_refused("log_line_max_bytes");
                    }
                    let text = format!(
                        "{text} [{cut} more bytes dropped: plugins.log_line_max_bytes is {}]",
                        gate.0.max_line()
                    );
                    self.write_log(level, request_id, &text)
                }
            }
        }));
    }

    fn call_host(&self, service: RStr<'_>, request_id: RStr<'_>, payload: RSlice<'_, u8>) -> CallResult {
        match self.serve(service.as_str(), request_id.as_str(), payload.as_slice()) {
            Ok(v) => RResult::ROk(v.into()),
            Err(e) => RResult::RErr(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_lets_a_burst_through_then_counts_what_it_drops() {
        let gate = LogGate::new(3, 100);
        assert_eq!(gate.admit(), Some(0));
        assert_eq!(gate.admit(), Some(0));
        assert_eq!(gate.admit(), Some(0));
        assert_eq!(gate.admit(), None);
        assert_eq!(gate.admit(), None);
        // Refilled at 3 per second: a third of a second brings one line back.
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert_eq!(gate.admit(), Some(2), "the next line let through reports the two dropped");
    }

    #[test]
    fn the_gate_cuts_long_lines_on_a_character_boundary() {
        let gate = LogGate::new(10, 80);
        let line = format!("{}é", "a".repeat(79));
        let (text, cut) = gate.cut(&line);
        assert_eq!(text, "a".repeat(79));
        assert_eq!(cut, 2);
        assert_eq!(gate.cut("short"), ("short", 0));
    }

    #[test]
    fn host_info_and_data_dir_are_answered_by_the_runtime() {
        let dir = std::env::temp_dir().join(format!("xcore-hs-{}", std::process::id()));
        let data = dir.join("data");
        let _ = std::fs::remove_dir_all(&dir);
        let hs = HostServices::detached("p").with_data_dir(data.clone());
        let info: serde_json::Value =
            serde_json::from_slice(&hs.serve("host.info", "", b"{}").unwrap()).unwrap();
        assert_eq!(info["plugin"], "p");
        assert!(info["log_level"].is_string(), "{info}");
        assert!(!data.exists(), "created on demand only");
        let reply: serde_json::Value =
            serde_json::from_slice(&hs.serve("host.data_dir", "", b"{}").unwrap()).unwrap();
        assert!(data.is_dir());
        assert_eq!(reply["path"], std::fs::canonicalize(&data).unwrap().to_str().unwrap());
        let _ = std::fs::remove_dir_all(&dir);
        let e = HostServices::detached("p").serve("host.data_dir", "", b"{}").unwrap_err();
        assert_eq!(e.status, 503);
    }
}
