//! Host services offered to plugins through `Context::call_host`, with their
//! permission checks, and the cron [`scheduler`]. [`xcore_runtime::host_services::HostServices`]
//! is the FFI face (panic-safe, ABI types); this crate is the logic ([`Services`], the
//! registry's [`HostCalls`] and [`PluginResources`]), shared by both tiers: a sandboxed
//! plugin's requests arrive over its socket and are served by the same functions.
//! Services reach plugins only through [`PluginCalls`]; they never name the registry.
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
pub mod scheduler;
mod scheduler_service;
pub mod sql_service;

use std::sync::{Arc, Weak};

use serde_json::Value;

use xcore_plugin_abi::abi_stable::std_types::RString;
use xcore_plugin_abi::ffi::CallError;

use tokio::runtime::Handle;
use xcore_db::store::Store;
use xcore_db::Databases;
use xcore_hooks::HookManager;
use xcore_manifest::Manifest;
use xcore_runtime::host_services::{HostCaller, HostCalls};
use xcore_runtime::metrics::Metrics;
use xcore_runtime::registry::RuntimeParts;
use xcore_runtime::resources::{PluginResources, Recorded, ResourceError};
use xcore_runtime::PluginCalls;

/// A failed service request: a stable code, a message that says what to do, a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code}, {status})")]
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
            xcore_plugin_abi::codes::UNSUPPORTED,
            501,
            format!("host service '{service}' is not available in this version of XCore"),
        )
    }

    /// 400 for a request the service cannot read.
    pub fn bad_request(service: &str, e: impl std::fmt::Display) -> Self {
        Self::new("invalid_payload", 400, format!("{service}: {e}"))
    }
}

/// Who is asking: the plugin and its permissions.
#[derive(Clone)]
pub struct Caller {
    /// Plugin name.
    pub plugin: Arc<str>,
    /// Which instance of it (its subscriptions belong to that instance).
    pub generation: u64,
    /// Its manifest's permissions.
    pub permissions: Arc<[String]>,
}

/// The parts the services are built from; what is `None` answers 503 (`cache.*`
/// without a cache, `kv.*` and `db.*` without databases, `scheduler.*` without a
/// scheduler). The composition root fills them once.
#[derive(Default)]
pub struct ServiceParts {
    /// The cache (connected on the host-work runtime, where every cache call runs).
    pub cache: Option<cache::Cache>,
    /// The host's durable records (`kv.*`, plugin state, job runs).
    pub store: Option<Store>,
    /// Every configured database, for plugins' SQL and migrations.
    pub databases: Option<Arc<Databases>>,
    /// The scheduler's configuration, checked: it starts with the services.
    pub scheduler: Option<scheduler::SchedulerPlan>,
}

impl ServiceParts {
    /// What `PluginRegistry::new` takes to build the services: given the runtime's
    /// parts, it starts the scheduler (its jobs run on the host-work runtime) and
    /// returns the services.
    pub fn wire(self) -> impl FnOnce(RuntimeParts) -> Arc<Services> {
        move |RuntimeParts { plugins, hooks, metrics, work }| {
            let scheduler = self.scheduler.map(|plan| {
                let runner = scheduler::runner::PluginRunner::new(plugins.clone(), hooks.clone());
                let s = scheduler::Scheduler::start(plan, Arc::new(runner), self.store.clone(), work.clone());
                metrics.register_collectors(s.prometheus_collectors());
                Arc::new(s)
            });
            Arc::new(Services {
                plugins,
                hooks,
                metrics,
                work,
                cache: self.cache,
                store: self.store,
                databases: self.databases,
                scheduler,
            })
        }
    }
}

/// The host's services: the [`HostCalls`] every plugin instance's host calls reach, and
/// the [`PluginResources`] the registry's lifecycle uses. Built by
/// [`ServiceParts::wire`].
pub struct Services {
    /// The plugins (weak: instances hold the services, the registry holds instances).
    plugins: Weak<dyn PluginCalls>,
    hooks: HookManager,
    metrics: Arc<Metrics>,
    work: Handle,
    cache: Option<cache::Cache>,
    store: Option<Store>,
    databases: Option<Arc<Databases>>,
    scheduler: Option<Arc<scheduler::Scheduler>>,
}

impl Services {
    /// The plugins, unless the host is shutting down.
    pub fn plugins(&self) -> Result<Arc<dyn PluginCalls>, ServiceError> {
        self.plugins.upgrade().ok_or_else(|| ServiceError::unavailable("the host is shutting down"))
    }

    /// The event system.
    pub fn hooks(&self) -> &HookManager {
        &self.hooks
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The host-work runtime, where emits, plugin-to-plugin calls and cache I/O run.
    pub fn work(&self) -> Handle {
        self.work.clone()
    }

    /// The host's durable records, if a database is connected.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// The configured databases, if connected.
    pub fn databases(&self) -> Option<&Arc<Databases>> {
        self.databases.as_ref()
    }

    /// The scheduler, if started.
    pub fn scheduler(&self) -> Option<&Arc<scheduler::Scheduler>> {
        self.scheduler.as_ref()
    }

    /// The cache, if connected.
    pub fn cache(&self) -> Option<&cache::Cache> {
        self.cache.as_ref()
    }
}

impl HostCalls for Services {
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
        };
        match dispatch(self, &caller, service, request_id, payload) {
            Ok(v) => Ok(serde_json::to_vec(&v).unwrap_or_default()),
            Err(e) => Err(CallError {
                code: RString::from(e.code),
                message: RString::from(e.message),
                status: e.status,
            }),
        }
    }
}

impl PluginResources for Services {
    fn migrate(&self, m: &Manifest) -> Result<(), ResourceError> {
        let Some(databases) = &self.databases else { return Ok(()) };
        for name in databases.names() {
            if !xcore_manifest::permissions::db_access(&m.permissions, name).1 {
                continue;
            }
            // The plugin's own pool: on `default`, its namespace.
            let db = databases.for_plugin(&m.name, name)?;
            xcore_db::plugin_migrations::apply(&m.name, &m.dir, &db)
                .map_err(|e| format!("plugin '{}': its migrations failed: {e}", m.name))?;
        }
        Ok(())
    }

    fn record_loaded(&self, p: Recorded<'_>, signed_by: Option<&str>) -> Result<(), ResourceError> {
        match &self.store {
            Some(store) => Ok(store.record_loaded(p.name, p.version, p.mode, signed_by)?),
            None => Ok(()),
        }
    }

    fn record_enabled(&self, p: Recorded<'_>, enabled: bool) -> Result<(), ResourceError> {
        match &self.store {
            Some(store) => Ok(store.set_enabled(p.name, enabled, p.version, p.mode)?),
            // Without a store the change lives until the host stops.
            None => Ok(()),
        }
    }

    fn stored_bytes(&self, plugin: &str) -> Result<u64, ResourceError> {
        match &self.store {
            Some(store) => Ok(store.kv_bytes(plugin)?),
            None => Ok(0),
        }
    }

    fn release_instance(&self, plugin: &str, generation: u64) {
        if let Some(s) = &self.scheduler {
            s.remove_owned(plugin, generation);
        }
    }

    fn release_plugin(&self, plugin: &str) {
        if let Some(dbs) = &self.databases {
            dbs.release_plugin(plugin);
        }
    }

    fn refresh_gauges(&self, m: &Metrics) {
        let Some(dbs) = &self.databases else { return };
        m.db_plugin_pools.set(dbs.plugin_pool_count() as i64);
        for name in dbs.names() {
            if let Ok(db) = dbs.get(name) {
                let (open, idle) = db.pool_state();
                m.db_connections.with_label_values(&[name, "idle"]).set(i64::from(idle));
                m.db_connections.with_label_values(&[name, "in_use"]).set(i64::from(open - idle));
            }
        }
    }
}

/// Serves one request.
fn dispatch(
    host: &Services,
    caller: &Caller,
    service: &str,
    request_id: &str,
    payload: &[u8],
) -> Result<Value, ServiceError> {
    host.plugins()?;
    let result = match service {
        "events.emit" => events::emit(host, caller, request_id, payload),
        "events.subscribe" => events::subscribe(host, caller, payload),
        "events.unsubscribe" => events::unsubscribe(host, caller, payload),
        "plugins.call" => calls::call(host, caller, request_id, payload),
        s if s.starts_with("cache.") => cache_service::serve(host, caller, s, payload),
        s if s.starts_with("kv.") => kv_service::serve(host, caller, s, payload),
        "db.execute" | "db.query" => sql_service::serve(host, caller, service, payload),
        s if s.starts_with("scheduler.") => scheduler_service::serve(host, caller, s, payload),
        other => Err(ServiceError::unsupported(other)),
    };
    // Labels stay bounded: unknown service names are counted together, and so are error
    // codes the host does not define (a callee's own codes, passed back by plugins.call).
    let label = if result.as_ref().is_err_and(|e| e.code == xcore_plugin_abi::codes::UNSUPPORTED) {
        "unknown"
    } else {
        service
    };
    let outcome = result.as_ref().map_or_else(|e| outcome_label(&e.code), |_| "ok");
    host.metrics().host_services.with_label_values(&[label, outcome]).inc();
    result
}

/// The codes host services answer with, besides [`xcore_runtime::metrics::KNOWN_ERROR_CODES`].
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
    if xcore_runtime::metrics::KNOWN_ERROR_CODES.contains(&code) || SERVICE_ERROR_CODES.contains(&code) {
        code
    } else {
        xcore_runtime::metrics::OTHER_ERROR_CODE
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
