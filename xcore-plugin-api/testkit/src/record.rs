//! What the kit records of a plugin, and the host object that records it.
//!
//! [`Recorder`] is the [`HostObject`] the plugin gets: each `call_host` goes to the
//! host's own [`HostServices`] (which answers `host.info` and `host.data_dir` itself and
//! hands everything else to the host's `Services`), and is recorded with its result;
//! each log line is recorded (never written to the `log` crate: in a test binary the
//! SDK's log bridge and the host share one `log` logger, and a line written back to it
//! would come straight back here).

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use xcore_plugin_abi::abi_stable::std_types::{RResult, RSlice, RStr};
use xcore_plugin_abi::ffi::{level, CallError, CallResult, HostObject};
use xcore_runtime::host_services::HostServices;

/// The most entries each record keeps; past it the oldest go (and are counted), so a
/// plugin in a loop cannot grow a test's memory without bound.
pub const MAX_RECORDS: usize = 10_000;

/// An error as the host or a plugin answers it: a stable code, an HTTP status, a message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// Stable code (`permission_denied`, `unknown_action`, the plugin's own...).
    pub code: String,
    /// The HTTP status the host would answer with.
    pub status: u16,
    /// The message.
    pub message: String,
}

impl Failure {
    /// A failure.
    pub fn new(code: impl Into<String>, status: u16, message: impl Into<String>) -> Self {
        Failure { code: code.into(), status, message: message.into() }
    }

    pub(crate) fn from_ffi(e: &CallError) -> Self {
        Failure::new(e.code.as_str(), e.status, e.message.as_str())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for Failure {}

/// One host call the plugin made.
#[derive(Debug, Clone, PartialEq)]
pub struct HostCall {
    /// The service (`kv.get`, `events.emit`, `host.info`...).
    pub service: String,
    /// The request id of the call the plugin was serving (empty outside a call).
    pub request_id: String,
    /// What the plugin sent (`Value::Null` when it was not JSON).
    pub payload: Value,
    /// What the host answered: the reply's JSON, or its refusal.
    pub result: Result<Value, Failure>,
}

/// One log line of the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: log::Level,
    /// The request id it was written under (empty outside a call).
    pub request_id: String,
    /// The `log` target for a line of the `log` crate's macros written during a call
    /// through the kit; `None` for a line through the host object (`ctx.info(..)`, or
    /// the SDK's bridge in a loaded library).
    pub target: Option<String>,
    /// The text.
    pub message: String,
}

/// An event the plugin emitted and the host accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    /// The event name.
    pub event: String,
    /// Its payload.
    pub payload: Value,
    /// Whether the plugin waited for the handlers (`ctx.emit`) or not (`emit_detached`).
    pub wait: bool,
}

/// One call the plugin made to another plugin (`ctx.call`), as the stub answered it.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginCall {
    /// The plugin called.
    pub plugin: String,
    /// Its action.
    pub action: String,
    /// The payload.
    pub payload: Value,
    /// The reply, or the error the caller got.
    pub result: Result<Value, Failure>,
}

/// Everything recorded so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recorded {
    /// Host calls, in order.
    pub host_calls: Vec<HostCall>,
    /// Log lines, in order.
    pub logs: Vec<LogLine>,
    /// Calls to other plugins, in order.
    pub plugin_calls: Vec<PluginCall>,
    /// Entries dropped from the front of the lists above (over [`MAX_RECORDS`]).
    pub dropped: u64,
}

impl Recorded {
    /// The events the plugin emitted (accepted `events.emit` calls), in order.
    pub fn emitted(&self) -> Vec<Emitted> {
        self.host_calls
            .iter()
            .filter(|c| c.service == "events.emit" && c.result.is_ok())
            .map(|c| Emitted {
                event: c.payload.get("event").and_then(Value::as_str).unwrap_or_default().to_string(),
                payload: c.payload.get("payload").cloned().unwrap_or(Value::Null),
                wait: c.payload.get("wait").and_then(Value::as_bool).unwrap_or(true),
            })
            .collect()
    }

    /// The host calls of one service.
    pub fn calls_to(&self, service: &str) -> Vec<&HostCall> {
        self.host_calls.iter().filter(|c| c.service == service).collect()
    }

    /// The host calls the host refused, with their refusal.
    pub fn refused(&self) -> Vec<(&str, &Failure)> {
        self.host_calls
            .iter()
            .filter_map(|c| c.result.as_ref().err().map(|f| (c.service.as_str(), f)))
            .collect()
    }
}

fn push_bounded<T>(list: &mut Vec<T>, item: T, dropped: &mut u64) {
    if list.len() >= MAX_RECORDS {
        list.remove(0);
        *dropped += 1;
    }
    list.push(item);
}

/// The shared record of one kit.
#[derive(Default)]
pub(crate) struct Journal {
    inner: Mutex<Recorded>,
    /// Print log lines to stderr as they come (the command line's `plugin run`).
    pub(crate) echo_logs: bool,
}

impl Journal {
    pub(crate) fn new(echo_logs: bool) -> Self {
        Journal { inner: Mutex::new(Recorded::default()), echo_logs }
    }

    pub(crate) fn snapshot(&self) -> Recorded {
        self.inner.lock().clone()
    }

    pub(crate) fn clear(&self) {
        *self.inner.lock() = Recorded::default();
    }

    pub(crate) fn host_call(&self, call: HostCall) {
        let mut r = self.inner.lock();
        let Recorded { host_calls, dropped, .. } = &mut *r;
        push_bounded(host_calls, call, dropped);
    }

    pub(crate) fn plugin_call(&self, call: PluginCall) {
        let mut r = self.inner.lock();
        let Recorded { plugin_calls, dropped, .. } = &mut *r;
        push_bounded(plugin_calls, call, dropped);
    }

    pub(crate) fn log(&self, line: LogLine) {
        if self.echo_logs {
            let rid =
                if line.request_id.is_empty() { String::new() } else { format!(" [{}]", line.request_id) };
            eprintln!("{}{rid}: {}", line.level.as_str().to_ascii_lowercase(), line.message);
        }
        let mut r = self.inner.lock();
        let Recorded { logs, dropped, .. } = &mut *r;
        push_bounded(logs, line, dropped);
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

/// The host object the plugin under test holds.
pub(crate) struct Recorder {
    pub(crate) services: HostServices,
    pub(crate) journal: Arc<Journal>,
}

impl HostObject for Recorder {
    fn log(&self, level: u8, request_id: RStr<'_>, message: RStr<'_>) {
        // Nothing here can panic but an allocation failure, which aborts anyway.
        self.journal.log(LogLine {
            level: to_level(level),
            request_id: request_id.as_str().to_string(),
            target: None,
            message: message.as_str().to_string(),
        });
    }

    fn call_host(&self, service: RStr<'_>, request_id: RStr<'_>, payload: RSlice<'_, u8>) -> CallResult {
        // HostServices::serve catches a panic of the services itself.
        let result = self.services.serve(service.as_str(), request_id.as_str(), payload.as_slice());
        let recorded = match &result {
            Ok(bytes) => Ok(serde_json::from_slice(bytes).unwrap_or(Value::Null)),
            Err(e) => Err(Failure::from_ffi(e)),
        };
        self.journal.host_call(HostCall {
            service: service.as_str().to_string(),
            request_id: request_id.as_str().to_string(),
            payload: serde_json::from_slice(payload.as_slice()).unwrap_or(Value::Null),
            result: recorded,
        });
        match result {
            Ok(v) => RResult::ROk(v.into()),
            Err(e) => RResult::RErr(e),
        }
    }
}
