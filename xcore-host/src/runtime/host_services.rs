//! The host object every plugin instance receives: its way back into the host.
//!
//! This is the FFI face of [`crate::services`]: it converts ABI types and catches
//! panics. Every method catches: a panic unwinding out of a host callback would cross
//! the `extern "C"` boundary and abi_stable would exit the whole process.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};

use abi_stable::std_types::{RResult, RSlice, RStr, RString};
use xcore_plugin_api::codes;
use xcore_plugin_api::ffi::{level, CallError, CallResult, HostObject};

use crate::runtime::PluginRegistry;
use crate::services::{self, Caller};

/// The host services of one plugin instance.
#[derive(Clone)]
pub struct HostServices {
    caller: Caller,
}

impl HostServices {
    /// Services for the plugin `name` with its manifest's `permissions`.
    pub fn new(name: &str, generation: u64, permissions: &[String], registry: Weak<PluginRegistry>) -> Self {
        HostServices {
            caller: Caller {
                plugin: Arc::from(name),
                generation,
                permissions: Arc::from(permissions),
                registry,
            },
        }
    }

    /// Services bound to no registry (benchmarks, tools): logging works, every other
    /// service answers that the host is unavailable.
    pub fn detached(name: &str) -> Self {
        Self::new(name, 0, &[], Weak::new())
    }

    /// The host's metrics, while the registry lives.
    pub fn metrics(&self) -> Option<Arc<crate::metrics::Metrics>> {
        self.caller.registry.upgrade().map(|r| r.metrics().clone())
    }

    /// The plugin these services belong to.
    pub fn plugin(&self) -> &str {
        &self.caller.plugin
    }

    /// Serves a host-service request; the same path for both tiers.
    pub fn serve(&self, service: &str, request_id: &str, payload: &[u8]) -> Result<Vec<u8>, CallError> {
        let result =
            catch_unwind(AssertUnwindSafe(|| services::dispatch(&self.caller, service, request_id, payload)));
        match result {
            Ok(Ok(v)) => Ok(serde_json::to_vec(&v).unwrap_or_default()),
            Ok(Err(e)) => Err(CallError { code: e.code.into(), message: e.message.into(), status: e.status }),
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
                crate::logging::with_call_context(plugin, request_id.as_str(), || {
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
