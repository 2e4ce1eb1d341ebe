//! The host object every plugin instance receives: its way back into the host.
//!
//! This is the FFI face of the host services: it converts ABI types and catches panics.
//! Every method catches: a panic unwinding out of a host callback would cross the
//! `extern "C"` boundary and abi_stable would exit the whole process. What a host call
//! does is not the runtime's business: it hands each one to the [`HostCalls`] the
//! composition root gave the registry (the host's own is `xcore_services::Services`), so
//! the runtime names no service.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use abi_stable::std_types::{RResult, RSlice, RStr, RString};
use xcore_plugin_api::codes;
use xcore_plugin_api::ffi::{level, CallError, CallResult, HostObject};

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

/// The host services of one plugin instance.
#[derive(Clone)]
pub struct HostServices {
    caller: HostCaller,
    /// `None`: detached (no host behind it).
    calls: Option<Arc<dyn HostCalls>>,
    metrics: Option<Arc<Metrics>>,
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
        }
    }

    /// Services bound to no host (benchmarks, tools): logging works, every other
    /// service answers that the host is unavailable.
    pub fn detached(name: &str) -> Self {
        HostServices {
            caller: HostCaller { plugin: Arc::from(name), generation: 0, permissions: Arc::from([]) },
            calls: None,
            metrics: None,
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
            let plugin = &*self.caller.plugin;
            // The target is the plugin's name, so filters and the JSON log can select it.
            if log::log_enabled!(target: plugin, level) {
                crate::log_context::with_call_context(plugin, request_id.as_str(), || {
                    log::log!(target: plugin, level, "{}", message.as_str());
                });
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
