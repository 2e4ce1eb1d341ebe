//! The host object every plugin instance receives: its way back into the host.
//!
//! Every method catches panics: a panic unwinding out of a host callback would cross the
//! `extern "C"` boundary and abi_stable would exit the whole process.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use abi_stable::std_types::{RResult, RSlice, RStr, RString};
use xcore_plugin_api::codes;
use xcore_plugin_api::ffi::{level, CallError, CallResult, HostObject};

/// The host services of one plugin.
#[derive(Clone)]
pub struct HostServices {
    plugin: Arc<str>,
}

impl HostServices {
    /// Services for the plugin `name`.
    pub fn new(name: &str) -> Self {
        HostServices { plugin: Arc::from(name) }
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
            // The target is the plugin's name, so filters and the JSON log can select it.
            if log::log_enabled!(target: &*self.plugin, level) {
                crate::logging::with_call_context(&self.plugin, request_id.as_str(), || {
                    log::log!(target: &*self.plugin, level, "{}", message.as_str());
                });
            }
        }));
    }

    fn call_host(&self, service: RStr<'_>, _payload: RSlice<'_, u8>) -> CallResult {
        let result = catch_unwind(AssertUnwindSafe(|| {
            // No service is routed through here yet: the services issue adds cache, kv,
            // SQL and events. Until then every name is refused with a clear error.
            Err::<Vec<u8>, _>(CallError {
                code: RString::from(codes::UNSUPPORTED),
                message: RString::from(format!(
                    "host service '{}' is not available in this version of XCore",
                    service.as_str()
                )),
                status: 501,
            })
        }));
        match result {
            Ok(Ok(v)) => RResult::ROk(v.into()),
            Ok(Err(e)) => RResult::RErr(e),
            Err(_) => RResult::RErr(CallError {
                code: RString::from(codes::INTERNAL),
                message: RString::from("the host panicked while serving the plugin"),
                status: 500,
            }),
        }
    }
}
