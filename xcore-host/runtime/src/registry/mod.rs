//! The plugin registry: name -> slot, and every operation on plugins.
//!
//! A [`PluginSlot`] outlives its instances: it keeps the plugin's state, counters, rate
//! limiter and restart history while instances come and go (restart, reload). The hot
//! path ([`PluginRegistry::call`]) takes a read lock on the map, an atomic state load
//! and an `ArcSwap` load; admin operations are serialised by one async mutex so two
//! reloads of the same plugin cannot interleave.
//!
//! One job per file: this one holds the type, its options, errors and wiring;
//! [`slot`] what outlives instances; [`lifecycle`] load, reload, reset, unload,
//! disable, rescan, folder syncs and shutdown; [`call_path`] the call; [`restart`]
//! failure handling and restart decisions; [`signatures`] the signature policy;
//! [`events`] chain positions, host events and plugin subscriptions; [`view`] the
//! snapshots and gauges.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use thiserror::Error;
use xcore_plugin_abi::codes;

use super::call::{CallFailure, CallInput, CallOrigin};
use super::contract;
use super::host_services::{HostCalls, HostServices, LogGate};
use super::instance::{Instance, InstanceError};
use super::load_failure::{LoadFailure, LoadKind};
use super::plugin_calls::{event_handler, ActionSubscription, PluginCalls};
use super::rate_limit::{ClientLimiter, RateLimiter};
use super::resources::{PluginResources, Recorded, ResourceError};
use super::sandbox::{self, SandboxInstance, SandboxOptions};
use super::supervisor::{PluginState, RestartDecision, RestartTracker, PANICS_IN_A_ROW_IS_A_CRASH};
use super::trusted::instance::{InstanceGauges, InstantiateError, TrustedInstance};
use super::trusted::loader;
use crate::metrics::{Metrics, PluginMetrics};
use xcore_hooks::{HandlerId, HookError, HookManager};
use xcore_manifest::plugin_order;
use xcore_manifest::{self as manifest, ExecutionMode, Manifest};
use xcore_security::signing;
use xcore_security::RequireSignatures;

pub use super::plugin_calls::{owner_of, EMIT_CHAIN};

/// Where the registry finds plugins and keeps its runtime files.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// The plugins folder.
    pub plugins_dir: PathBuf,
    /// Where library copies go.
    pub runtime_dir: PathBuf,
    /// How long unload waits for in-flight calls.
    pub drain_timeout: Duration,
    /// The sandbox worker's program: [`WORKER_EXE`] beside the current executable, or,
    /// where that is not installed, the `xcore` binary itself (its hidden
    /// `__sandbox-worker` command runs the same worker).
    pub worker_exe: PathBuf,
    /// Largest host <-> worker frame in bytes.
    pub max_frame: usize,
    /// How long a worker may take to start.
    pub startup_timeout: Duration,
    /// SIGTERM to SIGKILL when a worker is stopped.
    pub kill_grace: Duration,
    /// What one sandbox worker may make the host do (`sandbox.*` limits).
    pub sandbox_limits: sandbox::instance::SandboxLimits,
    /// Which plugins must be signed, and by whom.
    pub signatures: SignaturePolicy,
    /// The user and group sandboxed workers run as (`sandbox.user`); `None`: the host's.
    pub sandbox_user: Option<(u32, u32)>,
    /// How long a call may wait for a worker or call slot, unless its manifest says
    /// (`resources.queue_timeout_ms`); past it: 503 `overloaded`.
    pub queue_timeout: Duration,
    /// Abandoned threads a trusted plugin may have and still be restarted in-process;
    /// a timeout that leaves it with more fails it.
    pub max_abandoned_threads: u64,
    /// Clients tracked per plugin by the per-client rate limit.
    pub rate_limit_max_clients: usize,
    /// Log lines per second one trusted instance may write (`plugins.log_lines_per_second`).
    pub log_lines_per_second: u32,
    /// Longest log line of a trusted instance (`plugins.log_line_max_bytes`).
    pub log_line_max_bytes: usize,
    /// What the operator allows each plugin (`plugins.grants`); see
    /// [`xcore_manifest::permissions::effective`].
    pub grants: Arc<BTreeMap<String, Vec<String>>>,
    /// Plugins an operator disabled, as recorded (`plugin_state`): they stay unloaded
    /// until enabled.
    pub disabled: Vec<String>,
}

mod call_path;
mod events;
mod lifecycle;
mod restart;
mod signatures;
mod slot;
mod view;

pub use lifecycle::LoadReport;
pub use signatures::{SignaturePolicy, Signed};
pub use slot::PluginSlot;
pub use view::PluginInfo;

/// The file name of the sandbox worker's own small binary.
pub const WORKER_EXE: &str = "xcore-sandbox-worker";

/// [`WORKER_EXE`] beside the current executable when it is there, else the current
/// executable (the `xcore` binary answers `__sandbox-worker` too).
pub fn default_worker_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("xcore"));
    let worker = exe.with_file_name(WORKER_EXE);
    if worker.is_file() {
        worker
    } else {
        exe
    }
}

impl RegistryOptions {
    /// Defaults for `plugins_dir` and `runtime_dir`; the sandbox worker is
    /// [`default_worker_exe`].
    pub fn new(plugins_dir: PathBuf, runtime_dir: PathBuf) -> Self {
        RegistryOptions {
            plugins_dir,
            runtime_dir,
            drain_timeout: Duration::from_secs(10),
            worker_exe: default_worker_exe(),
            max_frame: 16 << 20,
            startup_timeout: Duration::from_secs(10),
            kill_grace: Duration::from_millis(200),
            sandbox_limits: Default::default(),
            // The library's own default is to check nothing; `xcore serve` applies the
            // configuration (trusted by default).
            signatures: SignaturePolicy::default(),
            sandbox_user: None,
            queue_timeout: Duration::from_millis(1000),
            max_abandoned_threads: 3,
            rate_limit_max_clients: 10_000,
            log_lines_per_second: 200,
            log_line_max_bytes: 16 << 10,
            grants: Arc::default(),
            disabled: Vec::new(),
        }
    }

    pub(super) fn sandbox(&self) -> SandboxOptions {
        SandboxOptions {
            worker_exe: self.worker_exe.clone(),
            runtime_dir: self.runtime_dir.clone(),
            max_frame: self.max_frame,
            startup_timeout: self.startup_timeout,
            kill_grace: self.kill_grace,
            drain_timeout: self.drain_timeout,
            user: self.sandbox_user,
            limits: self.sandbox_limits.clone(),
        }
    }
}

/// Why an operation on a plugin failed.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// No plugin folder or slot of that name.
    #[error("no plugin named '{0}'")]
    UnknownPlugin(String),
    /// The operation does not apply in the plugin's current state.
    #[error("plugin '{name}' is {state}: {hint}")]
    Conflict {
        /// Plugin name.
        name: String,
        /// Its state.
        state: PluginState,
        /// What to do instead.
        hint: &'static str,
    },
    /// Loading failed: which step (its own problem code), and a message saying why and
    /// where.
    #[error("{0}")]
    LoadFailed(LoadFailure),
    /// The host's database could not record the change; nothing was changed.
    #[error("{0}")]
    Store(String),
    /// Other loaded plugins require this one.
    #[error("plugin '{name}' is required by {}; unload them first", by.join(", "))]
    Required {
        /// Plugin name.
        name: String,
        /// The loaded plugins that require it.
        by: Vec<String>,
    },
}

/// What the registry gives the services it is built with ([`PluginRegistry::new`]).
pub struct RuntimeParts {
    /// The plugins, as services reach them (weak: instances hold the services).
    pub plugins: Weak<dyn PluginCalls>,
    /// The one event system of the host and its plugins.
    pub hooks: HookManager,
    /// The host's metrics.
    pub metrics: Arc<Metrics>,
    /// The host-work runtime, where the host's own async work runs.
    pub work: tokio::runtime::Handle,
}

/// The registry of every plugin the host knows.
pub struct PluginRegistry {
    opts: RegistryOptions,
    slots: RwLock<BTreeMap<String, Arc<PluginSlot>>>,
    metrics: Arc<Metrics>,
    /// What serves the host calls of every instance (built by the composition root).
    host_calls: Arc<dyn HostCalls>,
    ops: tokio::sync::Mutex<()>,
    /// Runs restarts. A runtime of its own, because deaths are reported from plain
    /// threads (a sandbox worker's watcher) and restarts must not depend on which HTTP
    /// worker happened to notice a failure.
    host_work: Mutex<Option<tokio::runtime::Runtime>>,
    /// The one event system of the host and its plugins.
    hooks: HookManager,
    /// Event-chain position of calls made by event handlers, by request id.
    origins: Mutex<std::collections::HashMap<String, CallOrigin>>,
    /// Numbers the request ids of handler calls.
    event_calls: AtomicU64,
    /// A random tag in those request ids.
    event_tag: u64,
    /// What the host keeps for plugins outside their instances (records, databases,
    /// jobs), built by the composition root.
    resources: Arc<dyn PluginResources>,
    /// Plugins an operator disabled (persisted in `plugin_state`).
    disabled: RwLock<std::collections::HashSet<String>>,
}

impl Drop for PluginRegistry {
    fn drop(&mut self) {
        // May run inside an async context, where a blocking runtime drop would panic.
        if let Some(rt) = self.host_work.lock().take() {
            rt.shutdown_background();
        }
    }
}

/// The tier's name as the plugin's recorded state stores it.
fn mode_name(m: &Manifest) -> &'static str {
    match m.execution_mode {
        ExecutionMode::Trusted => "trusted",
        ExecutionMode::Sandboxed => "sandboxed",
    }
}

/// Where the plugin's `data/` quota applies: (folder, bytes).
fn disk_quota(m: &Manifest) -> Option<(PathBuf, u64)> {
    (m.execution_mode == ExecutionMode::Sandboxed && m.resources.max_disk_mb > 0)
        .then(|| (m.dir.join("data"), m.resources.max_disk_mb * 1024 * 1024))
}

/// SHA-256 over a plugin's manifest and library, streamed.
fn content_hash(dir: &Path, m: &Manifest) -> Option<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for path in [dir.join(manifest::MANIFEST_FILE), m.library_path()] {
        xcore_security::digest::update_from_file(&mut hasher, &path).ok()?;
    }
    Some(xcore_security::keys::hex(&hasher.finalize()))
}

/// Plugin folders under `dir`: directories whose names do not start with `_` or `.`.
pub fn discover(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        log::warn!(target: "xcore::runtime", "plugins folder {} cannot be read", dir.display());
        return Vec::new();
    };
    let mut found: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (!name.starts_with('_') && !name.starts_with('.')).then(|| (name, e.path()))
        })
        .collect();
    found.sort();
    found
}

impl PluginRegistry {
    /// An empty registry, running its async work on `host_work` ([`super::host_work::runtime`]),
    /// which it owns from now on. `services` builds what serves its plugins' host calls
    /// and holds their resources (the host's is `xcore-services`' `Services`) from the
    /// [`RuntimeParts`] it is given (the registry as [`PluginCalls`], weakly; the event
    /// system; the metrics; the runtime); they are returned beside the registry.
    pub fn new<S: HostCalls + PluginResources>(
        opts: RegistryOptions,
        metrics: Arc<Metrics>,
        host_work: tokio::runtime::Runtime,
        services: impl FnOnce(RuntimeParts) -> Arc<S>,
    ) -> (Arc<Self>, Arc<S>) {
        let hooks = HookManager::builder().runtime(host_work.handle().clone()).build();
        metrics.register_collectors(hooks.prometheus_collectors());
        let disabled: std::collections::HashSet<String> = opts.disabled.iter().cloned().collect();
        if !disabled.is_empty() {
            log::info!(target: "xcore::runtime", "disabled by an operator, not loaded: {}", opts.disabled.join(", "));
        }
        let mut built = None;
        let registry = Arc::new_cyclic(|me: &Weak<PluginRegistry>| {
            let s = services(RuntimeParts {
                plugins: me.clone(),
                hooks: hooks.clone(),
                metrics: metrics.clone(),
                work: host_work.handle().clone(),
            });
            built = Some(s.clone());
            PluginRegistry {
                host_calls: s.clone(),
                resources: s,
                opts,
                slots: RwLock::new(BTreeMap::new()),
                metrics,
                ops: Default::default(),
                host_work: Mutex::new(Some(host_work)),
                hooks,
                origins: Mutex::new(Default::default()),
                event_calls: AtomicU64::new(0),
                event_tag: rand::random(),
                disabled: RwLock::new(disabled),
            }
        });
        let services = built.expect("Arc::new_cyclic runs its closure before it returns");
        (registry, services)
    }

    /// Where plugins and runtime files live, and the policies in force.
    pub fn options(&self) -> &RegistryOptions {
        &self.opts
    }

    /// Ends what an instance owned in the host: its subscriptions and its jobs.
    pub(super) fn release_instance(&self, name: &str, generation: u64) {
        self.hooks.unregister_owner(&owner_of(name, generation));
        self.resources.release_instance(name, generation);
    }

    /// Whether an operator disabled `name`.
    pub fn is_disabled(&self, name: &str) -> bool {
        self.disabled.read().contains(name)
    }

    /// Runs blocking work on the plugins' resources on the blocking pool.
    pub(super) async fn with_resources<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn PluginResources) -> Result<T, ResourceError> + Send + 'static,
    ) -> Result<T, ResourceError> {
        let resources = self.resources.clone();
        tokio::task::spawn_blocking(move || f(&*resources))
            .await
            .unwrap_or_else(|e| Err(format!("the task failed: {e}").into()))
    }

    /// The event system.
    pub fn hooks(&self) -> &HookManager {
        &self.hooks
    }

    pub(super) fn work(&self) -> tokio::runtime::Handle {
        match self.host_work.lock().as_ref() {
            Some(rt) => rt.handle().clone(),
            // Only while the registry is being dropped.
            None => tokio::runtime::Handle::current(),
        }
    }

    /// The metrics the registry feeds.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub(super) fn slot(&self, name: &str) -> Option<Arc<PluginSlot>> {
        self.slots.read().get(name).cloned()
    }

    pub(super) fn slot_or_create(&self, name: &str, dir: PathBuf) -> Arc<PluginSlot> {
        let mut slots = self.slots.write();
        slots
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(PluginSlot::new(
                    name,
                    dir,
                    self.metrics.plugin(name),
                    self.opts.rate_limit_max_clients,
                ))
            })
            .clone()
    }
}

impl PluginCalls for PluginRegistry {
    fn call_plugin(
        self: Arc<Self>,
        plugin: String,
        input: CallInput,
    ) -> futures_util::future::BoxFuture<'static, Result<Vec<u8>, CallFailure>> {
        Box::pin(async move { PluginRegistry::call(&self, &plugin, input).await })
    }

    fn call_origin(&self, request_id: &str) -> Option<CallOrigin> {
        PluginRegistry::call_origin(self, request_id)
    }

    fn next_internal_request_id(&self, kind: &str) -> String {
        PluginRegistry::next_internal_request_id(self, kind)
    }

    fn subscribe(self: Arc<Self>, sub: ActionSubscription) -> Result<HandlerId, HookError> {
        PluginRegistry::subscribe_action(&self, &sub)
    }
}
