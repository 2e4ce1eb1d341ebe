//! Host services offered to plugins through `Context::call_host`, with their
//! permission checks. [`crate::runtime::host_services::HostServices`] is the FFI face
//! (panic-safe, ABI types); this module is the logic ([`Dispatcher`], the registry's
//! [`HostCalls`]), shared by both tiers: a sandboxed
//! plugin's requests arrive over its socket and are served by the same functions.
//!
//! | service | permission | what |
//! |---|---|---|
//! | `events.emit` | `events.emit` or `events.emit:<pattern>` | emit an event, waiting for the results or not |
//! | `events.subscribe` | `events.subscribe` or `events.subscribe:<pattern>` | subscribe one of the plugin's actions |
//! | `events.unsubscribe` | (own subscriptions only) | end a subscription |
//! | `plugins.call` | `call` or `call:<plugin>` | call another plugin's action through the supervised path |
//! | `cache.get`, `cache.set`, `cache.delete`, `cache.clear` | `cache` | the plugin's own cache namespace (memory or Redis) |
//! | `kv.get`, `kv.set`, `kv.delete`, `kv.list` | `kv` | the plugin's own namespace of the durable key-value store |
//! | `db.execute`, `db.query` | `db:<database>` (or `db:<database>:read` for queries only) | SQL with bound parameters on a configured database |
//! | `scheduler.add`, `scheduler.remove` | `scheduler` | cron jobs calling the plugin's own actions |

pub mod cache;
mod cache_service;
pub mod calls;
pub mod events;
mod kv_service;
pub mod permissions;
mod scheduler_service;
pub mod sql_service;

use std::sync::{Arc, Weak};

use serde_json::Value;

use abi_stable::std_types::RString;
use xcore_plugin_api::ffi::CallError;

use crate::runtime::host_services::{HostCaller, HostCalls};
use crate::runtime::PluginRegistry;

/// A failed service request: a stable code, a message that says what to do, a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// Stable code.
    pub code: String,
    /// Message.
    pub message: String,
    /// HTTP status.
    pub status: u16,
}

impl ServiceError {
    /// An error.
    pub fn new(code: &str, status: u16, message: impl Into<String>) -> Self {
        ServiceError { code: code.to_string(), message: message.into(), status }
    }

    /// The same error with another message.
    pub fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }

    /// 503 for a service this host cannot serve now (not configured, shutting down, its
    /// back-end unreachable).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new("unavailable", 503, message)
    }

    /// 501 for a service this host does not have.
    pub fn unsupported(service: &str) -> Self {
        Self::new(
            xcore_plugin_api::codes::UNSUPPORTED,
            501,
            format!("host service '{service}' is not available in this version of XCore"),
        )
    }

    /// 400 for a request the service cannot read.
    pub fn bad_request(service: &str, e: impl std::fmt::Display) -> Self {
        Self::new("invalid_payload", 400, format!("{service}: {e}"))
    }
}

/// Who is asking: the plugin, its permissions, and the registry it lives in.
#[derive(Clone)]
pub struct Caller {
    /// Plugin name.
    pub plugin: Arc<str>,
    /// Which instance of it (its subscriptions belong to that instance).
    pub generation: u64,
    /// Its manifest's permissions.
    pub permissions: Arc<[String]>,
    /// The registry (weak: instances must not keep the registry alive).
    pub registry: Weak<PluginRegistry>,
}

/// The host's [`HostCalls`]: every service below, for the registry it is built for,
/// with the parts the composition root built for them (the cache). It is handed to
/// `PluginRegistry::new` as [`Dispatcher::for_registry`] or [`Dispatcher::with_cache`].
pub struct Dispatcher {
    registry: Weak<PluginRegistry>,
    cache: Option<cache::Cache>,
}

impl Dispatcher {
    /// The dispatcher of `registry` (weak: instances must not keep the registry alive),
    /// with no cache: the `cache.*` services answer 503.
    pub fn for_registry(registry: Weak<PluginRegistry>) -> Arc<dyn HostCalls> {
        Arc::new(Dispatcher { registry, cache: None })
    }

    /// What `PluginRegistry::new` takes to build the dispatcher with `cache` (connected
    /// on the registry's host-work runtime, where every cache call runs).
    pub fn with_cache(cache: cache::Cache) -> impl FnOnce(Weak<PluginRegistry>) -> Arc<dyn HostCalls> {
        move |registry| Arc::new(Dispatcher { registry, cache: Some(cache) })
    }
}

impl HostCalls for Dispatcher {
    fn serve(
        &self,
        caller: &HostCaller,
        service: &str,
        request_id: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        let caller = Caller {
            plugin: caller.plugin.clone(),
            generation: caller.generation,
            permissions: caller.permissions.clone(),
            registry: self.registry.clone(),
        };
        match dispatch(&caller, self.cache.as_ref(), service, request_id, payload) {
            Ok(v) => Ok(serde_json::to_vec(&v).unwrap_or_default()),
            Err(e) => Err(CallError {
                code: RString::from(e.code),
                message: RString::from(e.message),
                status: e.status,
            }),
        }
    }
}

/// Serves one request.
fn dispatch(
    caller: &Caller,
    cache: Option<&cache::Cache>,
    service: &str,
    request_id: &str,
    payload: &[u8],
) -> Result<Value, ServiceError> {
    let registry =
        caller.registry.upgrade().ok_or_else(|| ServiceError::unavailable("the host is shutting down"))?;
    let result = match service {
        "events.emit" => events::emit(&registry, caller, request_id, payload),
        "events.subscribe" => events::subscribe(&registry, caller, payload),
        "events.unsubscribe" => events::unsubscribe(&registry, caller, payload),
        "plugins.call" => calls::call(&registry, caller, request_id, payload),
        s if s.starts_with("cache.") => cache_service::serve(&registry, cache, caller, s, payload),
        s if s.starts_with("kv.") => kv_service::serve(&registry, caller, s, payload),
        "db.execute" | "db.query" => sql_service::serve(&registry, caller, service, payload),
        s if s.starts_with("scheduler.") => scheduler_service::serve(&registry, caller, s, payload),
        other => Err(ServiceError::unsupported(other)),
    };
    // Labels stay bounded: unknown service names are counted together, and so are error
    // codes the host does not define (a callee's own codes, passed back by plugins.call).
    let label = if result.as_ref().is_err_and(|e| e.code == xcore_plugin_api::codes::UNSUPPORTED) {
        "unknown"
    } else {
        service
    };
    let outcome = result.as_ref().map_or_else(|e| outcome_label(&e.code), |_| "ok");
    registry.metrics().host_services.with_label_values(&[label, outcome]).inc();
    result
}

/// The codes host services answer with, besides [`crate::metrics::KNOWN_ERROR_CODES`].
pub const SERVICE_ERROR_CODES: &[&str] = &[
    "cache_error",
    "value_too_large",
    "kv_error",
    "kv_quota",
    "conflict",
    "too_many_jobs",
    "reserved_event",
    "too_many_subscriptions",
    "too_many_handlers",
    "too_many_emits",
    "invalid_pattern",
    "no_runtime",
    "sql_error",
    "too_many_rows",
    "unknown_database",
];

/// The `outcome` label of an error code: the code if the host defines it, else `other`.
fn outcome_label(code: &str) -> &str {
    if crate::metrics::KNOWN_ERROR_CODES.contains(&code) || SERVICE_ERROR_CODES.contains(&code) {
        code
    } else {
        crate::metrics::OTHER_ERROR_CODE
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn outcome_labels_are_bounded() {
        assert_eq!(super::outcome_label("kv_quota"), "kv_quota");
        assert_eq!(super::outcome_label("timeout"), "timeout");
        assert_eq!(super::outcome_label("teapot"), "other");
        assert_eq!(super::outcome_label(&"x".repeat(10_000)), "other");
    }
}
