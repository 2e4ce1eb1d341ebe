//! The plugin registry: name -> slot, and every operation on plugins.
//!
//! A [`PluginSlot`] outlives its instances: it keeps the plugin's state, counters, rate
//! limiter and restart history while instances come and go (restart, reload). The hot
//! path ([`PluginRegistry::call`]) takes a read lock on the map, an atomic state load
//! and an `ArcSwap` load; admin operations are serialised by one async mutex so two
//! reloads of the same plugin cannot interleave.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use thiserror::Error;
use xcore_plugin_api::codes;

use super::call::{CallFailure, CallInput, CallOrigin};
use super::host_services::{HostCalls, HostServices};
use super::instance::{Instance, InstanceError};
use super::rate_limit::{ClientLimiter, RateLimiter};
use super::sandbox::{self, SandboxInstance, SandboxOptions};
use super::supervisor::{PluginState, RestartDecision, RestartTracker, PANICS_IN_A_ROW_IS_A_CRASH};
use super::trusted::instance::{InstanceGauges, TrustedInstance};
use super::trusted::loader;
use crate::metrics::{Metrics, PluginMetrics};
use xcore_hooks::{
    self as hooks, EventCtx, Failure, HandlerId, HandlerOptions, HandlerOutcome, HookError, HookManager,
};
use xcore_manifest::plugin_order;
use xcore_manifest::{self as manifest, ExecutionMode, Manifest};
use xcore_security::signing;
use xcore_security::RequireSignatures;

tokio::task_local! {
    /// The plugins waiting on the emit that runs in this task (each blocked in a call
    /// until the emit returns). Handlers read it to refuse a call that would wait for
    /// itself.
    pub static EMIT_CHAIN: Vec<String>;
}

/// The hook owner of the subscriptions of one instance of a plugin: manifest hooks and
/// those its code made. They go together when the instance is replaced or unloaded,
/// and a new instance's own subscriptions (made in its constructor) survive the swap.
pub fn owner_of(plugin: &str, generation: u64) -> String {
    format!("plugin:{plugin}/{generation}")
}

/// Where the registry finds plugins and keeps its runtime files.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// The plugins folder.
    pub plugins_dir: PathBuf,
    /// Where library copies go.
    pub runtime_dir: PathBuf,
    /// How long unload waits for in-flight calls.
    pub drain_timeout: Duration,
    /// The `xcore` binary, re-executed as the sandbox worker.
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
    /// What the operator allows each plugin (`plugins.grants`); see
    /// [`xcore_manifest::permissions::effective`].
    pub grants: Arc<BTreeMap<String, Vec<String>>>,
}

/// The signature rule the registry applies at every load and reload.
#[derive(Clone, Default)]
pub struct SignaturePolicy {
    /// Which plugins must be signed.
    pub require: RequireSignatures,
    /// The keys whose signatures of a plugin count.
    pub trusted: Arc<Vec<rsa::PublicKey>>,
    /// The host's own key ([`xcore_security::host_key`]): it vouches for build records
    /// only, never for a plugin's sources.
    pub host_key: xcore_security::host_key::HostPublicKey,
}

impl std::fmt::Debug for SignaturePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self.trusted.iter().map(xcore_security::keys::fingerprint).collect();
        f.debug_struct("SignaturePolicy")
            .field("require", &self.require)
            .field("trusted", &keys)
            .field("host_key", &self.host_key)
            .finish()
    }
}

/// What a valid signature vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The signing key's fingerprint.
    pub fingerprint: String,
    /// The SHA-256 the library must have (the copy that is mapped is checked): the author's
    /// signed hash, or the one of the host's build record.
    pub library_sha256: String,
    /// The library is the one this host built from the signed sources (a build record), not
    /// one the author's signature covers.
    pub built_by_host: bool,
    /// Whether the signature covers `plugin.yaml` (it covers every file of the folder,
    /// so it does unless the signature predates it): then it approves the manifest's
    /// permissions.
    pub covers_manifest: bool,
}

impl SignaturePolicy {
    /// Whether `m` must carry a valid signature (or, having one, is held to it).
    pub fn applies_to(&self, m: &Manifest) -> bool {
        let has_sig = m.dir.join(signing::SIGNATURE_FILE).is_file();
        let required = match self.require {
            RequireSignatures::None => return false,
            RequireSignatures::Trusted => m.execution_mode == ExecutionMode::Trusted,
            RequireSignatures::All => true,
        };
        required || has_sig
    }

    /// Checks the sources of `m`'s folder against its `plugin.sig` and the trusted keys, and
    /// that `m` was parsed from the very `plugin.yaml` that was verified. Nothing about the
    /// library: what `xcore plugin add` checks before it builds anything.
    pub fn check_sources(&self, m: &Manifest) -> Result<signing::Verified, String> {
        let entry = m.entry_point.to_string_lossy().replace('\\', "/");
        if !signing::is_covered(&entry) {
            return Err(format!(
                "plugin '{}': entry_point '{entry}' is in a folder signatures do not cover (target/, data/); \
                 put the library elsewhere in the plugin folder",
                m.name
            ));
        }
        let v = signing::verify(&m.dir, &m.name, &m.version.to_string(), &self.trusted)
            .map_err(|e| format!("plugin '{}': signature check failed: {e}", m.name))?;
        if v.hashes.get(manifest::MANIFEST_FILE) != Some(&m.source_sha256) {
            return Err(format!(
                "plugin '{}': signature check failed: {} changed while it was read (the manifest parsed \
                 is not the one signed); try again",
                m.name,
                m.manifest_path().display()
            ));
        }
        if let Some(lib) = &v.library {
            if *lib != entry {
                return Err(format!(
                    "plugin '{}': signature check failed: {} leaves out the library '{lib}', but entry_point is '{entry}'",
                    m.name,
                    m.dir.join(signing::SIGNATURE_FILE).display()
                ));
            }
        }
        Ok(v)
    }

    /// Checks `m`'s folder; `Ok(Some(..))` when a valid signature was found.
    ///
    /// The sources must be signed by a trusted key ([`Self::check_sources`]); the library
    /// must then be the one the author's signature covers or, for a signature of sources,
    /// the one this host built from them (its build record, signed with the host key).
    pub fn check(&self, m: &Manifest) -> Result<Option<Signed>, String> {
        if !self.applies_to(m) {
            return Ok(None);
        }
        let v = self.check_sources(m)?;
        let entry = m.entry_point.to_string_lossy().replace('\\', "/");
        let covers_manifest = v.hashes.contains_key(manifest::MANIFEST_FILE);
        let (library_sha256, built_by_host) = match &v.library {
            None => {
                let hash = v.hashes.get(&entry).cloned().ok_or_else(|| {
                    format!("plugin '{}': its signature does not cover its library '{entry}'", m.name)
                })?;
                (hash, false)
            }
            Some(_) => {
                let host_key =
                    self.host_key.get().map_err(|e| format!("plugin '{}': the host key: {e}", m.name))?;
                let record = xcore_security::build_record::check(
                    &m.dir,
                    &m.name,
                    &m.version.to_string(),
                    &entry,
                    &v.sources_sha256,
                    host_key,
                    &self.host_key.path(),
                )
                .map_err(|e| format!("plugin '{}': build record check failed: {e}", m.name))?;
                let lib = m.library_path();
                let actual = xcore_security::digest::sha256_file(&lib)
                    .map_err(|e| format!("plugin '{}': {}: {e}", m.name, lib.display()))?;
                if actual != record.library_sha256 {
                    return Err(format!(
                        "plugin '{}': {} is not the library this host built from its signed sources \
                         (sha256 {actual}, {} records {}); install or build it again",
                        m.name,
                        lib.display(),
                        signing::BUILD_RECORD_FILE,
                        record.library_sha256
                    ));
                }
                (record.library_sha256, true)
            }
        };
        Ok(Some(Signed { fingerprint: v.key_fingerprint, library_sha256, built_by_host, covers_manifest }))
    }
}

impl RegistryOptions {
    /// Defaults for `plugins_dir` and `runtime_dir`, with the sandbox worker being the
    /// current executable.
    pub fn new(plugins_dir: PathBuf, runtime_dir: PathBuf) -> Self {
        RegistryOptions {
            plugins_dir,
            runtime_dir,
            drain_timeout: Duration::from_secs(10),
            worker_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("xcore")),
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
            grants: Arc::default(),
        }
    }

    fn sandbox(&self) -> SandboxOptions {
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
    /// Loading failed; the message says why and where.
    #[error("{0}")]
    LoadFailed(String),
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

/// Why wiring a part into the registry failed.
#[derive(Debug, Error)]
pub enum WiringError {
    /// The part was set before; parts are wired once, by the composition root.
    #[error("the registry's {0} is already set: it is wired once, at start")]
    AlreadySet(&'static str),
    /// Reading the plugin state (which plugins are disabled) failed.
    #[error(transparent)]
    Store(#[from] xcore_db::DbError),
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    timeouts: AtomicU64,
    rate_limited: AtomicU64,
    /// Of `rate_limited`, those refused by the per-client limit.
    rate_limited_per_client: AtomicU64,
    /// Calls answered 503 `overloaded` (no worker or call slot in time).
    overloaded: AtomicU64,
    panics_in_a_row: AtomicU32,
    /// Calls inside the instance now (for the re-entrancy check).
    in_flight: AtomicU32,
}

#[derive(Default)]
struct SlotInner {
    last_error: Option<String>,
    tracker: RestartTracker,
    generation: u64,
    ready_since: Option<Instant>,
    load_time: Option<Duration>,
    /// How the last sandbox worker ended (signal name or exit code).
    last_exit: Option<String>,
    /// SHA-256 of the manifest and library last loaded: a touch that changes neither
    /// reloads nothing.
    content_hash: Option<String>,
    /// Fingerprint of the key that signed the loaded version.
    signed_by: Option<String>,
    /// The loaded version's permissions: requested, granted, effective.
    grants: Option<xcore_manifest::permissions::Grants>,
}

/// Everything the host keeps about one plugin across its instances.
pub struct PluginSlot {
    name: String,
    dir: PathBuf,
    state: AtomicU8,
    manifest: ArcSwapOption<Manifest>,
    instance: ArcSwapOption<Instance>,
    inner: Mutex<SlotInner>,
    limiter: Mutex<RateLimiter>,
    client_limiter: Mutex<ClientLimiter>,
    /// The size bound of `client_limiter`'s table.
    max_clients: usize,
    gauges: Arc<InstanceGauges>,
    counters: Counters,
    metrics: PluginMetrics,
}

impl PluginSlot {
    fn new(name: &str, dir: PathBuf, metrics: PluginMetrics, max_clients: usize) -> Self {
        PluginSlot {
            name: name.to_string(),
            dir,
            state: AtomicU8::new(PluginState::Discovered as u8),
            manifest: ArcSwapOption::empty(),
            instance: ArcSwapOption::empty(),
            inner: Mutex::new(SlotInner::default()),
            limiter: Mutex::new(RateLimiter::new(0, Duration::from_secs(1))),
            client_limiter: Mutex::new(ClientLimiter::new(0, Duration::from_secs(1), max_clients)),
            max_clients,
            gauges: Arc::new(InstanceGauges {
                shed_metric: Some(metrics.shed.clone()),
                ..InstanceGauges::default()
            }),
            counters: Counters::default(),
            metrics,
        }
    }

    /// The plugin's current state.
    pub fn state(&self) -> PluginState {
        PluginState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, s: PluginState) {
        self.state.store(s as u8, Ordering::Release);
    }

    fn fail(&self, reason: String) {
        log::error!(target: "xcore::runtime", "plugin '{}' failed: {reason}", self.name);
        self.inner.lock().last_error = Some(reason);
        self.set_state(PluginState::Failed);
    }

    fn set_manifest(&self, m: Arc<Manifest>) {
        let rl = &m.resources.rate_limit;
        let period = Duration::from_secs_f64(rl.period_seconds.max(0.001));
        *self.limiter.lock() = RateLimiter::new(rl.calls, period);
        *self.client_limiter.lock() = ClientLimiter::new(rl.per_client, period, self.max_clients);
        self.manifest.store(Some(m));
    }
}

/// A snapshot of one plugin for the API.
#[derive(Debug, Serialize)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// State.
    pub state: PluginState,
    /// Version from the manifest (absent when the manifest is unreadable).
    pub version: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Author.
    pub author: Option<String>,
    /// `trusted` or `sandboxed`.
    pub execution_mode: Option<String>,
    /// The manifest's api_version range.
    pub api_version: Option<String>,
    /// The contract version the loaded library was compiled against.
    pub compiled_api_version: Option<String>,
    /// The folder.
    pub dir: PathBuf,
    /// Limits from the manifest.
    pub limits: Option<serde_json::Value>,
    /// Restart policy.
    pub restart_policy: Option<serde_json::Value>,
    /// Declared routes.
    pub routes: Vec<serde_json::Value>,
    /// Requirements.
    pub requires: Vec<String>,
    /// Counters.
    pub counters: serde_json::Value,
    /// Restarts performed.
    pub restarts: u64,
    /// Worker threads stuck inside a call they started, past its deadline.
    pub abandoned_threads: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Seconds since the current instance became ready.
    pub uptime_seconds: Option<f64>,
    /// How long the last load took, in milliseconds.
    pub load_time_ms: Option<f64>,
    /// Which instance serves (1 = first load).
    pub generation: u64,
    /// Worker process details (sandboxed plugins): pid, RSS, last exit, disk use,
    /// filesystem isolation.
    pub sandbox: Option<serde_json::Value>,
    /// Fingerprint of the key that signed the loaded version, if it was checked.
    pub signed_by: Option<String>,
    /// Permissions of the loaded version: `requested` (manifest), `granted` (each with
    /// its `source`: `signature` or `config`), `effective` and `denied`.
    pub permissions: Option<serde_json::Value>,
}

/// What a boot or rescan did.
#[derive(Debug, Default, Serialize)]
pub struct LoadReport {
    /// Plugins now ready.
    pub loaded: Vec<String>,
    /// Plugins that failed, with the reason.
    pub failed: Vec<(String, String)>,
    /// Plugins unloaded because their folder is gone.
    pub removed: Vec<String>,
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
    supervisor: Mutex<Option<tokio::runtime::Runtime>>,
    /// The one event system of the host and its plugins.
    hooks: HookManager,
    /// Event-chain position of calls made by event handlers, by request id.
    origins: Mutex<std::collections::HashMap<String, CallOrigin>>,
    /// Numbers the request ids of handler calls.
    event_calls: AtomicU64,
    /// A random tag in those request ids.
    event_tag: u64,
    /// The host's durable data (`xcore serve` connects it at start).
    store: std::sync::OnceLock<xcore_db::store::Store>,
    /// Every configured database, for plugins' SQL.
    databases: std::sync::OnceLock<Arc<xcore_db::Databases>>,
    /// The cron scheduler (`xcore serve` starts it).
    scheduler: std::sync::OnceLock<Arc<crate::scheduler::Scheduler>>,
    /// Plugins an operator disabled (persisted in `plugin_state`).
    disabled: RwLock<std::collections::HashSet<String>>,
}

impl Drop for PluginRegistry {
    fn drop(&mut self) {
        // May run inside an async context, where a blocking runtime drop would panic.
        if let Some(rt) = self.supervisor.lock().take() {
            rt.shutdown_background();
        }
    }
}

/// The tier's name as `plugin_state.mode` stores it.
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

impl PluginRegistry {
    /// The plugin's quota check: the blocks of `data/` and of its private temporary
    /// folders, plus its key-value entries when it may write some (`kv`), measured on
    /// the blocking pool. What cannot be measured counts as over the quota.
    async fn check_quota(&self, m: &Manifest, dir: &Path, limit: u64, when: &str) -> Option<CallFailure> {
        let (dir, runtime, plugin) = (dir.to_path_buf(), self.opts.runtime_dir.clone(), m.name.clone());
        let store = m.permissions.iter().any(|p| p == "kv").then(|| self.store.get().cloned()).flatten();
        let needs_db = store.is_some();
        let measure = move || -> Result<u64, String> {
            let disk = sandbox::disk::plugin_usage(&dir, &runtime, &plugin).map_err(|e| e.to_string())?;
            let kv = match &store {
                Some(s) => {
                    s.kv_bytes(&plugin).map_err(|e| format!("cannot measure its key-value entries: {e}"))?
                }
                None => 0,
            };
            Ok(disk.saturating_add(kv))
        };
        // Database work never runs on an async worker; a walk of the plugin's own small
        // folders does, as before, rather than pay a thread hop twice per call.
        let measured = if needs_db {
            tokio::task::spawn_blocking(measure).await.unwrap_or_else(|e| Err(e.to_string()))
        } else {
            measure()
        };
        let detail = match measured {
            Ok(used) if used <= limit => return None,
            Ok(used) => format!(
                "data/, its temporary folder and its key-value entries use {used} bytes {when} the call; \
                 the quota is {limit} bytes"
            ),
            Err(e) => format!("{e} {when} the call: counted as over the quota of {limit} bytes"),
        };
        Some(CallFailure::DiskQuota { name: m.name.clone(), detail })
    }
}

/// Counts a call inside an instance, and keeps its event-chain position registered,
/// for as long as it lives.
struct InFlight<'a> {
    count: &'a AtomicU32,
    origin: Option<(&'a Mutex<std::collections::HashMap<String, CallOrigin>>, String)>,
}

impl<'a> InFlight<'a> {
    fn enter(
        count: &'a AtomicU32,
        origin: Option<(&'a Mutex<std::collections::HashMap<String, CallOrigin>>, String)>,
    ) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight { count, origin }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        if let Some((origins, key)) = &self.origin {
            origins.lock().remove(key);
        }
    }
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
    /// An empty registry, running its async work on `supervisor` ([`super::supervisor::runtime`]),
    /// which it owns from now on. `host_calls` builds what serves its plugins' host calls
    /// (the host's is `services::Dispatcher`); it gets the registry, weakly.
    pub fn new(
        opts: RegistryOptions,
        metrics: Arc<Metrics>,
        supervisor: tokio::runtime::Runtime,
        host_calls: impl FnOnce(Weak<PluginRegistry>) -> Arc<dyn HostCalls>,
    ) -> Arc<Self> {
        let hooks = HookManager::builder().runtime(supervisor.handle().clone()).build();
        metrics.register_collectors(hooks.prometheus_collectors());
        Arc::new_cyclic(|me| PluginRegistry {
            host_calls: host_calls(me.clone()),
            opts,
            slots: RwLock::new(BTreeMap::new()),
            metrics,
            ops: Default::default(),
            supervisor: Mutex::new(Some(supervisor)),
            hooks,
            origins: Mutex::new(Default::default()),
            event_calls: AtomicU64::new(0),
            event_tag: rand::random(),
            store: std::sync::OnceLock::new(),
            databases: std::sync::OnceLock::new(),
            disabled: RwLock::new(Default::default()),
            scheduler: std::sync::OnceLock::new(),
        })
    }

    /// Where plugins and runtime files live, and the policies in force.
    pub fn options(&self) -> &RegistryOptions {
        &self.opts
    }

    /// Hands the registry its databases and the host's store, once (a second call is
    /// refused and changes nothing). Plugins disabled by an operator stay unloaded from
    /// then on. Blocking (it reads `plugin_state`): call it before serving, from a plain
    /// thread.
    pub fn set_databases(
        &self,
        databases: Arc<xcore_db::Databases>,
        store: xcore_db::store::Store,
    ) -> Result<(), WiringError> {
        if self.store.get().is_some() {
            return Err(WiringError::AlreadySet("databases"));
        }
        let disabled = store.disabled_plugins()?;
        // Claimed before the disabled set is touched: of two racing calls one fails whole.
        self.store.set(store).map_err(|_| WiringError::AlreadySet("databases"))?;
        if !disabled.is_empty() {
            log::info!(target: "xcore::runtime", "disabled by an operator, not loaded: {}", disabled.join(", "));
        }
        self.disabled.write().extend(disabled);
        self.databases.set(databases).map_err(|_| WiringError::AlreadySet("databases"))
    }

    /// Hands the registry its scheduler, once (a second call is refused and changes
    /// nothing). A setter, not a constructor argument: the scheduler's runner calls
    /// into this registry.
    pub fn set_scheduler(&self, scheduler: Arc<crate::scheduler::Scheduler>) -> Result<(), WiringError> {
        self.scheduler.set(scheduler).map_err(|_| WiringError::AlreadySet("scheduler"))
    }

    /// The scheduler, if started.
    pub fn scheduler(&self) -> Option<&Arc<crate::scheduler::Scheduler>> {
        self.scheduler.get()
    }

    /// Ends what an instance owned in the host: its subscriptions and its jobs.
    fn release_instance(&self, name: &str, generation: u64) {
        self.hooks.unregister_owner(&owner_of(name, generation));
        if let Some(s) = self.scheduler.get() {
            s.remove_owned(name, generation);
        }
    }

    /// Whether an operator disabled `name`.
    pub fn is_disabled(&self, name: &str) -> bool {
        self.disabled.read().contains(name)
    }

    /// Runs blocking store work off the async workers; `None` when no store is set.
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&xcore_db::store::Store) -> Result<T, xcore_db::DbError> + Send + 'static,
    ) -> Option<Result<T, xcore_db::DbError>> {
        let store = self.store.get()?.clone();
        let name = store.database().name().to_string();
        Some(tokio::task::spawn_blocking(move || f(&store)).await.unwrap_or_else(|e| {
            Err(xcore_db::DbError::Query { name, reason: format!("the store task failed: {e}") })
        }))
    }

    /// The host's durable data, if a database was connected.
    pub fn store(&self) -> Option<&xcore_db::store::Store> {
        self.store.get()
    }

    /// The configured databases, if connected.
    pub fn databases(&self) -> Option<&Arc<xcore_db::Databases>> {
        self.databases.get()
    }

    /// The event system.
    pub fn hooks(&self) -> &HookManager {
        &self.hooks
    }

    /// The event-chain position of the call `request_id`, if an event handler made it.
    pub fn call_origin(&self, request_id: &str) -> Option<CallOrigin> {
        if request_id.is_empty() {
            return None;
        }
        self.origins.lock().get(request_id).cloned()
    }

    /// A request id for a call the host makes on a plugin's behalf (event handlers,
    /// plugin-to-plugin calls). Unguessable, so that no client-chosen request id can
    /// claim a position in an event chain.
    pub fn next_internal_request_id(&self, kind: &str) -> String {
        let n = self.event_calls.fetch_add(1, Ordering::Relaxed);
        format!("{kind}-{:016x}-{n}", self.event_tag)
    }

    /// The runtime that runs restarts and detached emits; plugin threads block on it to
    /// wait for an emit.
    pub fn supervisor_handle(&self) -> tokio::runtime::Handle {
        self.supervisor()
    }

    /// Emits a host lifecycle event without waiting.
    pub fn emit_host_event(&self, event: &str, payload: serde_json::Value) {
        let hooks = self.hooks.clone();
        let event = event.to_string();
        self.supervisor().spawn(async move {
            hooks.emit(&event, payload).await;
        });
    }

    /// A handler that calls `action` of `plugin` through the supervised call path with
    /// `{"event": name, "payload": ...}`.
    fn action_handler(self: &Arc<Self>, plugin: &str, action: &str) -> hooks::HandlerFn {
        let registry = Arc::downgrade(self);
        let (plugin, action) = (plugin.to_string(), action.to_string());
        hooks::handler(move |ctx: EventCtx| {
            let (registry, plugin, action) = (registry.clone(), plugin.clone(), action.clone());
            async move {
                let Some(registry) = registry.upgrade() else {
                    return HandlerOutcome::error("the host is shutting down");
                };
                let chain = EMIT_CHAIN.try_with(|c| c.clone()).unwrap_or_default();

                let payload = serde_json::json!({ "event": ctx.event(), "payload": ctx.payload() });
                let input = CallInput {
                    action,
                    payload: serde_json::to_vec(&payload).unwrap_or_default(),
                    caller: format!("event:{}", ctx.event()),
                    request_id: registry.next_internal_request_id("event"),
                    origin: Some(CallOrigin { depth: ctx.depth(), chain }),
                };
                match registry.call(&plugin, input).await {
                    Ok(bytes) => HandlerOutcome::Value(
                        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
                    ),
                    Err(f) => {
                        HandlerOutcome::Error(Failure { code: f.code().to_string(), message: f.to_string() })
                    }
                }
            }
        })
    }

    /// Subscribes `action` of `plugin` to `pattern` (owner `plugin:<name>`).
    #[allow(clippy::too_many_arguments)]
    pub fn subscribe_action(
        self: &Arc<Self>,
        plugin: &str,
        generation: u64,
        pattern: &str,
        action: &str,
        priority: i32,
        once: bool,
        timeout: Option<Duration>,
    ) -> Result<HandlerId, HookError> {
        let mut options = HandlerOptions::named(format!("{plugin}/{action}"))
            .priority(priority)
            .owner(owner_of(plugin, generation));
        if once {
            options = options.once();
        }
        if let Some(t) = timeout {
            options = options.timeout(t);
        }
        self.hooks.register(pattern, options, self.action_handler(plugin, action))
    }

    /// Subscribes the actions a manifest lists, for instance `generation`.
    fn register_manifest_hooks(self: &Arc<Self>, m: &Manifest, generation: u64) {
        for h in &m.hooks {
            let timeout = h.timeout_ms.map(Duration::from_millis);
            if let Err(e) =
                self.subscribe_action(&m.name, generation, &h.event, &h.action, h.priority, h.once, timeout)
            {
                // Patterns were validated with the manifest; what remains is a bound
                // (events.max_subscriptions_per_plugin, events.max_handlers), named in `e`.
                log::error!(target: "xcore::hooks", "plugin '{}': hook on '{}': {e}", m.name, h.event);
            }
        }
    }

    fn supervisor(&self) -> tokio::runtime::Handle {
        match self.supervisor.lock().as_ref() {
            Some(rt) => rt.handle().clone(),
            // Only while the registry is being dropped.
            None => tokio::runtime::Handle::current(),
        }
    }

    /// What a sandbox worker's watcher calls when the worker dies on its own.
    fn death_hook(self: &Arc<Self>, slot: &Arc<PluginSlot>, generation: u64) -> sandbox::instance::DeathHook {
        let registry = Arc::downgrade(self);
        let slot = slot.clone();
        Box::new(move |reason: String, unexpected: bool| {
            slot.inner.lock().last_exit = Some(reason.clone());
            if unexpected {
                if let Some(registry) = registry.upgrade() {
                    registry.on_instance_failure(&slot, generation, format!("worker {reason}"));
                }
            }
        })
    }

    /// The metrics the registry feeds.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn slot(&self, name: &str) -> Option<Arc<PluginSlot>> {
        self.slots.read().get(name).cloned()
    }

    fn slot_or_create(&self, name: &str, dir: PathBuf) -> Arc<PluginSlot> {
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

    /// The manifest of a plugin, if it has a valid one.
    pub fn manifest(&self, name: &str) -> Option<Arc<Manifest>> {
        self.slot(name).and_then(|s| s.manifest.load_full())
    }

    /// Discovers the plugins folder and loads everything in dependency order. A bad
    /// manifest, a missing dependency or a cycle fails only the plugins concerned.
    pub async fn load_all(self: &Arc<Self>) -> LoadReport {
        let _guard = self.ops.lock().await;
        self.load_new(&mut LoadReport::default()).await
    }

    /// Loads every discovered plugin that has no slot yet, or whose slot is only
    /// discovered; used by boot and rescan.
    async fn load_new(self: &Arc<Self>, report: &mut LoadReport) -> LoadReport {
        let mut manifests = Vec::new();
        for (name, dir) in discover(&self.opts.plugins_dir) {
            if let Some(s) = self.slot(&name) {
                if s.state() != PluginState::Discovered {
                    continue;
                }
            }
            let slot = self.slot_or_create(&name, dir.clone());
            match manifest::load(&dir) {
                Ok(loaded) => {
                    for w in &loaded.warnings {
                        log::warn!(target: "xcore::manifest", "{w}");
                    }
                    let m = Arc::new(loaded.manifest);
                    slot.set_manifest(m.clone());
                    if self.is_disabled(&name) {
                        slot.set_state(PluginState::Disabled);
                        continue;
                    }
                    manifests.push(m);
                }
                Err(e) => {
                    slot.fail(e.to_string());
                    report.failed.push((name, e.to_string()));
                }
            }
        }
        let ready: Vec<(String, semver::Version)> = self
            .slots
            .read()
            .values()
            .filter(|s| s.state() == PluginState::Ready)
            .filter_map(|s| s.manifest.load_full().map(|m| (s.name.clone(), m.version.clone())))
            .collect();
        let refs: Vec<&Manifest> = manifests.iter().map(|m| m.as_ref()).collect();
        let plan = plugin_order::plan(&refs, &ready);
        for (name, reason) in plan.failed {
            if let Some(slot) = self.slot(&name) {
                slot.fail(reason.clone());
            }
            report.failed.push((name, reason));
        }
        for name in plan.order {
            let parsed = manifests.iter().find(|m| m.name == name).cloned();
            match self.load_slot(&name, parsed).await {
                Ok(()) => report.loaded.push(name),
                Err(e) => report.failed.push((name, e.to_string())),
            }
        }
        std::mem::take(report)
    }

    /// Loads (or, with `replace`, reloads) one plugin from its folder: reads the manifest
    /// again, checks its requirements, maps a fresh library copy and starts an instance.
    /// On a reload the old instance keeps serving until the new one is ready.
    async fn load_slot(
        self: &Arc<Self>,
        name: &str,
        parsed: Option<Arc<Manifest>>,
    ) -> Result<(), RegistryError> {
        let dir = self.opts.plugins_dir.join(name);
        if !dir.is_dir() {
            return Err(RegistryError::UnknownPlugin(name.to_string()));
        }
        let slot = self.slot_or_create(name, dir.clone());
        if self.is_disabled(name) {
            slot.set_state(PluginState::Disabled);
            return Err(RegistryError::Conflict {
                name: name.into(),
                state: PluginState::Disabled,
                hint: "an operator disabled it; use enable",
            });
        }
        let replacing = slot.state() == PluginState::Ready;
        // The supervisor's restart task marks the slot before it loads.
        let restarting = slot.state() == PluginState::Restarting;
        if !replacing {
            slot.set_state(PluginState::Loading);
        }
        let fail = |slot: &PluginSlot, msg: String| {
            if replacing {
                // The old instance keeps serving; the error is reported, not applied.
                log::error!(target: "xcore::runtime", "reload of '{}' failed, old version keeps serving: {msg}", slot.name);
                slot.inner.lock().last_error = Some(msg.clone());
                self.emit_host_event(
                    "plugin.reload_failed",
                    serde_json::json!({ "plugin": slot.name, "reason": msg }),
                );
            } else {
                slot.fail(msg.clone());
                // A failed restart attempt is not final: the supervisor decides next.
                if !restarting {
                    self.emit_host_event(
                        "plugin.failed",
                        serde_json::json!({ "plugin": slot.name, "reason": msg }),
                    );
                }
            }
            RegistryError::LoadFailed(msg)
        };
        let m = match parsed {
            Some(m) => m,
            None => match manifest::load(&dir) {
                Ok(loaded) => {
                    for w in &loaded.warnings {
                        log::warn!(target: "xcore::manifest", "{w}");
                    }
                    Arc::new(loaded.manifest)
                }
                Err(e) => return Err(fail(&slot, e.to_string())),
            },
        };
        // Every load verifies again: reloads (hot ones included) and restarts.
        let signed_by = match self.opts.signatures.check(&m) {
            Ok(s) => s,
            Err(e) => return Err(fail(&slot, e)),
        };
        // What the manifest asks for and the operator allows: a trusted signature over the
        // manifest approves it whole; otherwise `plugins.grants.<name>` decides.
        let grants = xcore_manifest::permissions::effective(
            &m.permissions,
            signed_by.as_ref().is_some_and(|s| s.covers_manifest),
            self.opts.grants.get(name).map(Vec::as_slice).unwrap_or_default(),
        );
        let denied: Vec<&String> =
            grants.requested.iter().filter(|p| !grants.effective.contains(p)).collect();
        if !denied.is_empty() {
            log::warn!(target: "xcore::runtime",
                "plugin '{name}': permissions not granted: {denied:?}; grant them in xcore.yaml (plugins.grants.{name}) or sign the plugin with a trusted key");
        }
        let m = if grants.effective == m.permissions {
            m
        } else {
            Arc::new(Manifest { permissions: grants.effective.clone(), ..(*m).clone() })
        };
        for req in &m.requires {
            let ok = self.slot(&req.name).is_some_and(|s| {
                s.state() == PluginState::Ready
                    && s.manifest.load_full().is_some_and(|dm| req.version.matches(&dm.version))
            });
            if !ok {
                return Err(fail(
                    &slot,
                    format!("plugin '{name}' requires '{}' {}, which is not loaded", req.name, req.version),
                ));
            }
        }
        if let Err(e) = self.apply_plugin_migrations(&m).await {
            return Err(fail(&slot, e));
        }
        let generation = slot.inner.lock().generation + 1;
        let started = Instant::now();
        let instance = {
            let m = m.clone();
            let runtime_dir = self.opts.runtime_dir.clone();
            let gauges = slot.gauges.clone();
            let sandbox = self.opts.sandbox();
            let on_death = self.death_hook(&slot, generation);
            let services = HostServices::new(
                &m.name,
                generation,
                &m.permissions,
                self.host_calls.clone(),
                self.metrics.clone(),
            );
            // The signed hash travels to the loader, which checks the very copy it maps.
            let expected = signed_by.as_ref().map(|s| s.library_sha256.clone());
            tokio::task::spawn_blocking(move || -> Result<Instance, String> {
                match m.execution_mode {
                    ExecutionMode::Trusted => {
                        let lib =
                            loader::load(&m, &runtime_dir, expected.as_deref()).map_err(|e| e.to_string())?;
                        TrustedInstance::start(
                            &m.name,
                            services,
                            &m.config,
                            lib,
                            m.resources.concurrency,
                            generation,
                            gauges,
                        )
                        .map(Instance::Trusted)
                        .map_err(|e| e.to_string())
                    }
                    ExecutionMode::Sandboxed => {
                        loader::check_manifest_api(&m).map_err(|e| e.to_string())?;
                        SandboxInstance::start(&m, services, &sandbox, generation, expected, on_death)
                            .map(Instance::Sandboxed)
                    }
                }
            })
            .await
            .unwrap_or_else(|e| Err(format!("plugin '{name}': loader task failed: {e}")))
        };
        if let Ok(Instance::Sandboxed(i)) = &instance {
            if i.fs_isolation == "none" {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    log::warn!(target: "xcore::sandbox", "this kernel has no landlock: sandboxed plugins run without filesystem isolation (fs_isolation: none)");
                });
            }
        }
        let instance = match instance {
            Ok(i) => Arc::new(i),
            Err(e) => {
                // Its constructor may have subscribed or scheduled before failing.
                self.release_instance(name, generation);
                return Err(fail(&slot, e));
            }
        };
        let load_time = started.elapsed();
        let hash = content_hash(&dir, &m);
        let previous = {
            let mut inner = slot.inner.lock();
            let previous = inner.generation;
            inner.content_hash = hash;
            inner.signed_by = signed_by.map(|s| s.fingerprint);
            inner.grants = Some(grants);
            inner.generation = generation;
            inner.last_error = None;
            inner.ready_since = Some(Instant::now());
            inner.load_time = Some(load_time);
            previous
        };
        slot.set_manifest(m.clone());
        slot.counters.panics_in_a_row.store(0, Ordering::Relaxed);
        // The old instance (if any) is dropped here; its workers drain queued calls and
        // exit, and in-flight callers still hold it until they get their reply.
        slot.instance.store(Some(instance));
        slot.set_state(PluginState::Ready);
        self.register_manifest_hooks(&m, generation);
        self.release_instance(name, previous);
        let record =
            (m.name.clone(), m.version.to_string(), mode_name(&m), slot.inner.lock().signed_by.clone());
        if let Some(Err(e)) = self
            .with_store(move |s| s.record_loaded(&record.0, &record.1, record.2, record.3.as_deref()))
            .await
        {
            log::warn!(target: "xcore::runtime", "plugin '{name}': its state was not recorded: {e}");
        }
        let (verb, event) = match (replacing, restarting) {
            (true, _) => ("reloaded", "plugin.reloaded"),
            (false, true) => ("restarted", "plugin.restarted"),
            (false, false) => ("loaded", "plugin.loaded"),
        };
        log::info!(target: "xcore::runtime", "plugin '{name}' {} {verb} (generation {generation}) in {:.2} ms",
            m.version, load_time.as_secs_f64() * 1e3);
        self.emit_host_event(
            event,
            serde_json::json!({ "plugin": name, "version": m.version.to_string(), "generation": generation }),
        );
        Ok(())
    }

    /// Loads a plugin that is not loaded.
    pub async fn load(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        let _guard = self.ops.lock().await;
        if let Some(slot) = self.slot(name) {
            let state = slot.state();
            if matches!(state, PluginState::Ready | PluginState::Restarting | PluginState::Loading) {
                return Err(RegistryError::Conflict {
                    name: name.into(),
                    state,
                    hint: "already loaded; use reload",
                });
            }
            if state == PluginState::Failed && slot.inner.lock().generation > 0 {
                return Err(RegistryError::Conflict {
                    name: name.into(),
                    state,
                    hint: "it failed after running; use reset",
                });
            }
        }
        self.load_slot(name, None).await
    }

    /// Loads a new instance beside the current one and switches to it; on failure the
    /// current one keeps serving.
    pub async fn reload(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        let _guard = self.ops.lock().await;
        let slot = self.slot(name).ok_or_else(|| RegistryError::UnknownPlugin(name.into()))?;
        match slot.state() {
            PluginState::Ready => self.load_slot(name, None).await,
            state => Err(RegistryError::Conflict {
                name: name.into(),
                state,
                hint: "not running; use load or reset",
            }),
        }
    }

    /// Brings a failed plugin back: forgets its restart history and loads it.
    pub async fn reset(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        let _guard = self.ops.lock().await;
        let slot = self.slot(name).ok_or_else(|| RegistryError::UnknownPlugin(name.into()))?;
        match slot.state() {
            PluginState::Failed => {
                slot.inner.lock().tracker.reset_window();
                self.load_slot(name, None).await
            }
            state => Err(RegistryError::Conflict {
                name: name.into(),
                state,
                hint: "only a failed plugin can be reset",
            }),
        }
    }

    /// Stops routing calls to a plugin, lets in-flight calls finish (up to the drain
    /// timeout) and shuts its instance down. The library stays mapped.
    pub async fn unload(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        let _guard = self.ops.lock().await;
        let slot = self.slot(name).ok_or_else(|| RegistryError::UnknownPlugin(name.into()))?;
        let dependents = self.loaded_dependents(name);
        if !dependents.is_empty() {
            return Err(RegistryError::Required { name: name.into(), by: dependents });
        }
        self.unload_slot(&slot).await;
        Ok(())
    }

    /// Disables a plugin: records it (so it stays disabled after a restart), then
    /// unloads it. Nothing changes if the record cannot be written.
    pub async fn disable(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        let _guard = self.ops.lock().await;
        let slot = self.slot(name).ok_or_else(|| RegistryError::UnknownPlugin(name.into()))?;
        let dependents = self.loaded_dependents(name);
        if !dependents.is_empty() {
            return Err(RegistryError::Required { name: name.into(), by: dependents });
        }
        self.persist_enabled(name, false).await?;
        self.disabled.write().insert(name.to_string());
        if slot.instance.load().is_some() {
            self.unload_slot(&slot).await;
        }
        slot.set_state(PluginState::Disabled);
        log::info!(target: "xcore::runtime", "plugin '{name}' disabled");
        self.emit_host_event("plugin.disabled", serde_json::json!({ "plugin": name }));
        Ok(())
    }

    /// Enables a disabled plugin (recorded first) and loads it.
    pub async fn enable(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        let _guard = self.ops.lock().await;
        let slot = self.slot(name).ok_or_else(|| RegistryError::UnknownPlugin(name.into()))?;
        if !self.is_disabled(name) {
            return Err(RegistryError::Conflict {
                name: name.into(),
                state: slot.state(),
                hint: "it is not disabled",
            });
        }
        self.persist_enabled(name, true).await?;
        self.disabled.write().remove(name);
        slot.set_state(PluginState::Unloaded);
        log::info!(target: "xcore::runtime", "plugin '{name}' enabled");
        self.emit_host_event("plugin.enabled", serde_json::json!({ "plugin": name }));
        self.load_slot(name, None).await
    }

    /// Applies the plugin's own migrations on every database it may write, before its
    /// instance starts.
    async fn apply_plugin_migrations(&self, m: &Arc<Manifest>) -> Result<(), String> {
        let Some(databases) = self.databases.get().cloned() else { return Ok(()) };
        if !m.dir.join("migrations").is_dir() {
            return Ok(());
        }
        let m = m.clone();
        tokio::task::spawn_blocking(move || {
            for name in databases.names() {
                if !xcore_manifest::permissions::db_access(&m.permissions, name).1 {
                    continue;
                }
                // The plugin's own pool: on `default`, its namespace.
                let db = databases.for_plugin(&m.name, name).map_err(|e| e.to_string())?;
                xcore_db::plugin_migrations::apply(&m.name, &m.dir, &db)
                    .map_err(|e| format!("plugin '{}': its migrations failed: {e}", m.name))?;
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(format!("migration task failed: {e}")))
    }

    async fn persist_enabled(&self, name: &str, enabled: bool) -> Result<(), RegistryError> {
        let m = self.manifest(name);
        let version = m.as_ref().map(|m| m.version.to_string()).unwrap_or_default();
        let mode = m.as_deref().map(mode_name).unwrap_or("");
        let n = name.to_string();
        match self.with_store(move |s| s.set_enabled(&n, enabled, &version, mode)).await {
            Some(Err(e)) => Err(RegistryError::Store(format!(
                "plugin '{name}' was not {}: the host's database could not record it: {e}",
                if enabled { "enabled" } else { "disabled" }
            ))),
            // Without a store the change lives until the host stops.
            _ => Ok(()),
        }
    }

    /// Loaded plugins whose manifest requires `name`.
    fn loaded_dependents(&self, name: &str) -> Vec<String> {
        self.slots
            .read()
            .values()
            .filter(|s| s.instance.load().is_some())
            .filter(|s| s.manifest.load().as_ref().is_some_and(|m| m.requires.iter().any(|r| r.name == name)))
            .map(|s| s.name.clone())
            .collect()
    }

    async fn unload_slot(&self, slot: &PluginSlot) {
        slot.set_state(PluginState::Unloaded);
        slot.inner.lock().ready_since = None;
        let generation = slot.inner.lock().generation;
        let Some(instance) = slot.instance.swap(None) else {
            self.release_instance(&slot.name, generation);
            self.emit_host_event("plugin.unloaded", serde_json::json!({ "plugin": slot.name }));
            return;
        };
        let deadline = Instant::now() + self.opts.drain_timeout;
        // Callers still waiting on a reply hold the instance; let them finish first.
        while Arc::strong_count(&instance) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Dropping the last handle retires the instance: trusted workers drain their
        // queue and the last one out calls shutdown(); a sandbox worker is told to shut
        // down and is killed past the drain timeout.
        let finished = instance.finished_probe();
        drop(instance);
        while !finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !finished() {
            log::warn!(target: "xcore::runtime", "plugin '{}': calls still running after the drain timeout of {:?}", slot.name, self.opts.drain_timeout);
        }
        self.release_instance(&slot.name, generation);
        if let Some(dbs) = self.databases.get() {
            dbs.release_plugin(&slot.name);
        }
        log::info!(target: "xcore::runtime", "plugin '{}' unloaded", slot.name);
        self.emit_host_event("plugin.unloaded", serde_json::json!({ "plugin": slot.name }));
    }

    /// Brings one plugin folder in line with the disk, for the file watcher: a removed
    /// folder unloads the plugin, a new one loads it, a changed manifest or library
    /// reloads it (the old version keeps serving if the new one fails). Content that
    /// did not change does nothing; a plugin an operator unloaded stays unloaded.
    /// Loads and reloads go through the same [`Self::load_slot`] checks as every
    /// other load (the signature policy included). Returns what was done (`load`,
    /// `reload` or `unload`) and the error when it failed.
    pub async fn sync_folder(self: &Arc<Self>, name: &str) -> Option<(&'static str, Result<(), String>)> {
        let _guard = self.ops.lock().await;
        let dir = self.opts.plugins_dir.join(name);
        let slot = self.slot(name);
        if !dir.join(manifest::MANIFEST_FILE).is_file() {
            let slot = slot?;
            if dir.exists() {
                // A folder being written or emptied: wait for its manifest.
                return None;
            }
            self.unload_slot(&slot).await;
            self.slots.write().remove(name);
            self.metrics.forget_plugin(name);
            return Some(("unload", Ok(())));
        }
        if let Some(slot) = &slot {
            if matches!(slot.state(), PluginState::Unloaded | PluginState::Disabled) {
                return None;
            }
            let new_hash = manifest::load(&dir).ok().and_then(|l| content_hash(&dir, &l.manifest));
            if new_hash.is_some() && new_hash == slot.inner.lock().content_hash {
                return None;
            }
        }
        let verb =
            if slot.as_ref().is_some_and(|s| s.state() == PluginState::Ready) { "reload" } else { "load" };
        Some((verb, self.load_slot(name, None).await.map_err(|e| e.to_string())))
    }

    /// Loads plugin folders that appeared and unloads those whose folder is gone.
    pub async fn rescan(self: &Arc<Self>) -> LoadReport {
        let _guard = self.ops.lock().await;
        let present: Vec<String> = discover(&self.opts.plugins_dir).into_iter().map(|(n, _)| n).collect();
        let gone: Vec<Arc<PluginSlot>> =
            self.slots.read().values().filter(|s| !present.contains(&s.name)).cloned().collect();
        let mut report = LoadReport::default();
        for slot in gone {
            self.unload_slot(&slot).await;
            self.slots.write().remove(&slot.name);
            self.metrics.forget_plugin(&slot.name);
            report.removed.push(slot.name.clone());
        }
        self.load_new(&mut report).await
    }

    /// Unloads every plugin, dependents before what they require.
    pub async fn shutdown(self: &Arc<Self>) {
        let _guard = self.ops.lock().await;
        loop {
            let running: Vec<Arc<PluginSlot>> =
                self.slots.read().values().filter(|s| s.instance.load().is_some()).cloned().collect();
            if running.is_empty() {
                break;
            }
            // Plugins nothing running depends on go first; a cycle cannot be loaded, so
            // there is always one, but fall back to all of them rather than spin.
            let leaves: Vec<_> =
                running.iter().filter(|s| self.loaded_dependents(&s.name).is_empty()).cloned().collect();
            for slot in if leaves.is_empty() { running } else { leaves } {
                self.unload_slot(&slot).await;
            }
        }
    }

    /// Calls `input.action` on plugin `name`: state check, rate limit, then the
    /// instance's worker under the manifest's deadline. No per-client limit applies (the
    /// host's own calls: events, jobs, plugin-to-plugin); see [`PluginRegistry::call_from`].
    pub async fn call(self: &Arc<Self>, name: &str, input: CallInput) -> Result<Vec<u8>, CallFailure> {
        self.call_from(name, input, || None).await
    }

    /// [`PluginRegistry::call`] on behalf of `client` (an HTTP client's address or the
    /// value of `server.client_ip_header`), which the plugin's per-client rate limit
    /// (`resources.rate_limit.per_client`) counts. `client` is asked only when that limit
    /// is on, so a plugin without it pays nothing for the client's identity.
    pub async fn call_from(
        self: &Arc<Self>,
        name: &str,
        input: CallInput,
        client: impl FnOnce() -> Option<String>,
    ) -> Result<Vec<u8>, CallFailure> {
        let slot = self.slot(name).ok_or_else(|| CallFailure::UnknownPlugin(name.to_string()))?;
        let instance = match (slot.state(), slot.instance.load_full()) {
            (PluginState::Ready, Some(i)) => i,
            (state, _) => {
                return Err(CallFailure::Unavailable {
                    name: name.to_string(),
                    state: state.to_string(),
                    detail: slot.inner.lock().last_error.clone(),
                })
            }
        };
        let manifest = slot.manifest.load();
        let Some(manifest) = manifest.as_ref() else {
            return Err(CallFailure::Unavailable {
                name: name.into(),
                state: "loading".into(),
                detail: None,
            });
        };
        slot.counters.calls.fetch_add(1, Ordering::Relaxed);
        slot.metrics.calls.inc();
        let rl = &manifest.resources.rate_limit;
        let now = Instant::now();
        // The client's own window first: a client over its limit must not use up the
        // plugin-wide window for everybody else.
        if let Some(client) = (rl.per_client > 0).then(client).flatten() {
            let verdict = slot.client_limiter.lock().check(&client, now);
            if verdict.overflow {
                slot.metrics.client_overflow.inc();
            }
            if let Err(retry_after) = verdict.admitted {
                slot.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                slot.counters.rate_limited_per_client.fetch_add(1, Ordering::Relaxed);
                slot.metrics.rate_limited.inc();
                slot.metrics.client_rate_limited.inc();
                return Err(CallFailure::RateLimited {
                    name: name.to_string(),
                    per_client: true,
                    calls: rl.per_client,
                    period_seconds: rl.period_seconds,
                    retry_after,
                });
            }
        }
        if let Err(retry_after) = slot.limiter.lock().check(now) {
            slot.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            slot.metrics.rate_limited.inc();
            return Err(CallFailure::RateLimited {
                name: name.to_string(),
                per_client: false,
                calls: rl.calls,
                period_seconds: rl.period_seconds,
                retry_after,
            });
        }
        let timeout_ms = manifest.resources.timeout_ms;
        // 0 means no deadline.
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
        let queue_timeout =
            manifest.resources.queue_timeout_ms.map(Duration::from_millis).unwrap_or(self.opts.queue_timeout);
        let quota = disk_quota(manifest);
        if let Some((dir, limit)) = &quota {
            if let Some(f) = self.check_quota(manifest, dir, *limit, "before").await {
                slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                slot.metrics.error("disk_quota");
                return Err(f);
            }
        }
        let action = input.action.clone();
        // A handler's call into a plugin that waits on the same event chain, with every
        // call slot taken, would wait for itself until its deadline.
        let origin_key = match &input.origin {
            Some(origin) => {
                let concurrency = manifest.resources.concurrency;
                if origin.chain.iter().any(|p| p == name)
                    && slot.counters.in_flight.load(Ordering::SeqCst) >= concurrency
                {
                    slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                    slot.metrics.error("reentrant_call");
                    return Err(CallFailure::Reentrant { name: name.to_string(), concurrency });
                }
                let mut chain = origin.chain.clone();
                chain.push(name.to_string());
                let key = input.request_id.clone();
                self.origins.lock().insert(key.clone(), CallOrigin { depth: origin.depth, chain });
                Some(key)
            }
            None => None,
        };
        let started = Instant::now();
        let outcome = {
            // Undone on every path, the future being dropped (a handler timeout, a
            // client gone) included.
            let _in_flight =
                InFlight::enter(&slot.counters.in_flight, origin_key.map(|k| (&self.origins, k)));
            instance.call(input, timeout, queue_timeout).await
        };
        // A call that never started says nothing about the plugin's latency.
        if !matches!(outcome, Err(InstanceError::Overloaded(_))) {
            slot.metrics.latency.observe(started.elapsed().as_secs_f64());
        }
        match outcome {
            Ok(Ok(bytes)) => {
                slot.counters.panics_in_a_row.store(0, Ordering::Relaxed);
                if let Some((dir, limit)) = &quota {
                    if let Some(f) = self.check_quota(manifest, dir, *limit, "after").await {
                        slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                        slot.metrics.error("disk_quota");
                        return Err(f);
                    }
                }
                Ok(bytes)
            }
            Ok(Err(e)) => {
                slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                slot.metrics.error(&e.code);
                if e.code == codes::PLUGIN_PANIC {
                    slot.counters.panics.fetch_add(1, Ordering::Relaxed);
                    let streak = slot.counters.panics_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                    if streak >= PANICS_IN_A_ROW_IS_A_CRASH {
                        self.on_instance_failure(
                            &slot,
                            instance.generation(),
                            format!("{streak} panics in a row; last: {}", e.message),
                        );
                    }
                } else {
                    slot.counters.panics_in_a_row.store(0, Ordering::Relaxed);
                }
                Err(CallFailure::Plugin { code: e.code, message: e.message, status: e.status })
            }
            Err(InstanceError::Crashed(reason)) => {
                // The death itself is reported by the worker's watcher, at once.
                slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                slot.metrics.error("plugin_crashed");
                Err(CallFailure::Crashed { name: name.to_string(), reason })
            }
            Err(InstanceError::TooLarge(detail)) => {
                slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                slot.metrics.error("payload_too_large");
                Err(CallFailure::TooLarge(detail))
            }
            Err(InstanceError::Overloaded(detail)) => {
                // Load, not failure: no error, no timeout, no restart.
                slot.counters.overloaded.fetch_add(1, Ordering::Relaxed);
                slot.metrics.overloaded.inc();
                if !instance.is_trusted() {
                    // The sandboxed tier's queue is its slot wait: giving it up drops the
                    // call before the worker ever sees it. (Trusted workers count the
                    // jobs they drop themselves.)
                    slot.gauges.count_shed();
                }
                Err(CallFailure::Overloaded {
                    name: name.to_string(),
                    detail,
                    retry_after: Duration::from_secs(1),
                })
            }
            Err(InstanceError::DeadlinePassed) => {
                slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                slot.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                slot.metrics.error("timeout");
                let reason = format!("action '{action}' ran past its deadline of {timeout_ms} ms");
                let abandoned = slot.gauges.abandoned_threads.load(Ordering::SeqCst);
                let limit = self.opts.max_abandoned_threads;
                if instance.is_trusted() && abandoned > limit {
                    // Each restart in-process may leave another thread stuck for good.
                    let why = format!(
                        "{abandoned} threads are stuck in calls past their deadline, over the limit of {limit} \
                         (plugins.max_abandoned_threads), so it is not restarted in-process again; last: {reason}. \
                         A trusted plugin's stuck thread cannot be stopped: run it in the sandboxed tier \
                         (execution_mode: sandboxed), where a call past its deadline kills the worker. \
                         Reset it with POST /api/v1/plugins/{name}/reset"
                    );
                    self.fail_instance(&slot, instance.generation(), reason, Some(why));
                } else {
                    self.on_instance_failure(&slot, instance.generation(), reason);
                }
                Err(CallFailure::Timeout { name: name.to_string(), action, timeout_ms })
            }
        }
    }

    /// An instance misbehaved: stop routing to it and restart the plugin under its
    /// policy. Only the first report about a given instance acts.
    fn on_instance_failure(self: &Arc<Self>, slot: &Arc<PluginSlot>, generation: u64, reason: String) {
        self.fail_instance(slot, generation, reason, None)
    }

    /// [`Self::on_instance_failure`]; with `final_reason`, the plugin goes to `failed`
    /// with that message instead of asking the restart policy.
    fn fail_instance(
        self: &Arc<Self>,
        slot: &Arc<PluginSlot>,
        generation: u64,
        reason: String,
        final_reason: Option<String>,
    ) {
        let decision = {
            let mut inner = slot.inner.lock();
            let current = slot.instance.load();
            if inner.generation != generation || current.is_none() || slot.state() != PluginState::Ready {
                return;
            }
            slot.set_state(PluginState::Degraded);
            slot.instance.store(None);
            inner.ready_since = None;
            inner.last_error = Some(reason.clone());
            if final_reason.is_some() {
                None
            } else {
                let Some(m) = slot.manifest.load_full() else { return };
                Some(inner.tracker.on_failure(&m.restart, Instant::now()))
            }
        };
        log::warn!(target: "xcore::runtime", "plugin '{}' instance {generation} degraded: {reason}", slot.name);
        let version = slot.manifest.load().as_ref().map(|m| m.version.to_string());
        self.emit_host_event(
            "plugin.crashed",
            serde_json::json!({ "plugin": slot.name, "version": version, "generation": generation, "reason": reason }),
        );
        match (decision, final_reason) {
            (Some(decision), _) => self.apply_decision(slot.clone(), decision, reason),
            (None, Some(why)) => {
                slot.fail(why.clone());
                self.emit_host_event(
                    "plugin.failed",
                    serde_json::json!({ "plugin": slot.name, "reason": why }),
                );
            }
            (None, None) => {}
        }
    }

    fn apply_decision(self: &Arc<Self>, slot: Arc<PluginSlot>, decision: RestartDecision, reason: String) {
        match decision {
            RestartDecision::GiveUp { restarts } => {
                let within = slot.manifest.load().as_ref().map(|m| m.restart.within_seconds).unwrap_or(0);
                let why = format!(
                    "restart intensity exceeded ({restarts} failures within {within} s); last: {reason}; \
                     reset it with POST /api/v1/plugins/{}/reset",
                    slot.name
                );
                slot.fail(why.clone());
                self.emit_host_event(
                    "plugin.failed",
                    serde_json::json!({ "plugin": slot.name, "reason": why }),
                );
            }
            RestartDecision::After(delay) => {
                slot.set_state(PluginState::Restarting);
                slot.metrics.restarts.inc();
                let registry = self.clone();
                self.supervisor().spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _guard = registry.ops.lock().await;
                    // An operator may have unloaded it meanwhile.
                    if slot.state() != PluginState::Restarting {
                        return;
                    }
                    if let Err(e) = registry.load_slot(&slot.name, None).await {
                        // load_slot marked it failed; count this as another failure.
                        let decision = {
                            let mut inner = slot.inner.lock();
                            let m = slot.manifest.load_full();
                            m.map(|m| inner.tracker.on_failure(&m.restart, Instant::now()))
                        };
                        // Still under the ops lock, so an operator's reset cannot slip
                        // between the failure and the next decision.
                        if let Some(d) = decision {
                            registry.apply_decision(slot.clone(), d, e.to_string());
                        }
                    }
                });
            }
        }
    }

    /// Names of every known plugin.
    pub fn names(&self) -> Vec<String> {
        self.slots.read().keys().cloned().collect()
    }

    /// Counts of plugins by state.
    pub fn counts_by_state(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for s in self.slots.read().values() {
            *counts.entry(s.state().as_str()).or_insert(0) += 1;
        }
        counts
    }

    /// A snapshot of one plugin.
    pub fn info(&self, name: &str) -> Option<PluginInfo> {
        let slot = self.slot(name)?;
        let m = slot.manifest.load_full();
        let inner = slot.inner.lock();
        let c = &slot.counters;
        let instance = slot.instance.load_full();
        Some(PluginInfo {
            name: slot.name.clone(),
            state: slot.state(),
            version: m.as_ref().map(|m| m.version.to_string()),
            description: m.as_ref().map(|m| m.description.clone()),
            author: m.as_ref().map(|m| m.author.clone()),
            execution_mode: m.as_ref().map(|m| m.execution_mode.to_string()),
            api_version: m.as_ref().map(|m| m.api_version.to_string()),
            compiled_api_version: instance.as_ref().map(|i| i.api_version().to_string()),
            dir: slot.dir.clone(),
            limits: m.as_ref().map(|m| {
                let r = &m.resources;
                serde_json::json!({
                    "timeout_ms": r.timeout_ms,
                    "concurrency": r.concurrency,
                    "max_memory_mb": r.max_memory_mb,
                    "max_disk_mb": r.max_disk_mb,
                    "cpu_time_ms": r.cpu_time_ms,
                    "max_open_files": r.max_open_files,
                    "rate_limit": {
                        "calls": r.rate_limit.calls,
                        "period_seconds": r.rate_limit.period_seconds,
                        "per_client": r.rate_limit.per_client,
                    },
                    "queue_timeout_ms": r.queue_timeout_ms.unwrap_or(self.opts.queue_timeout.as_millis() as u64),
                })
            }),
            restart_policy: m.as_ref().map(|m| {
                let p = &m.restart;
                serde_json::json!({
                    "max_restarts": p.max_restarts,
                    "within_seconds": p.within_seconds,
                    "backoff_initial_ms": p.backoff_initial_ms,
                    "backoff_max_ms": p.backoff_max_ms,
                })
            }),
            routes: m
                .as_ref()
                .map(|m| {
                    m.routes
                        .iter()
                        .map(|r| serde_json::json!({"method": r.method, "path": r.path, "action": r.action}))
                        .collect()
                })
                .unwrap_or_default(),
            requires: m
                .as_ref()
                .map(|m| m.requires.iter().map(|r| format!("{} {}", r.name, r.version)).collect())
                .unwrap_or_default(),
            counters: serde_json::json!({
                "calls": c.calls.load(Ordering::Relaxed),
                "errors": c.errors.load(Ordering::Relaxed),
                "panics": c.panics.load(Ordering::Relaxed),
                "timeouts": c.timeouts.load(Ordering::Relaxed),
                "rate_limited": c.rate_limited.load(Ordering::Relaxed),
                "rate_limited_per_client": c.rate_limited_per_client.load(Ordering::Relaxed),
                "overloaded": c.overloaded.load(Ordering::Relaxed),
                "shed": slot.gauges.shed_calls.load(Ordering::Relaxed),
            }),
            restarts: inner.tracker.total(),
            abandoned_threads: slot.gauges.abandoned_threads.load(Ordering::Relaxed),
            last_error: inner.last_error.clone(),
            uptime_seconds: inner.ready_since.map(|t| t.elapsed().as_secs_f64()),
            load_time_ms: inner.load_time.map(|d| d.as_secs_f64() * 1e3),
            generation: inner.generation,
            signed_by: inner.signed_by.clone(),
            permissions: inner.grants.as_ref().map(|g| g.to_json()),
            sandbox: m.as_ref().filter(|m| m.execution_mode == ExecutionMode::Sandboxed).map(|m| {
                let mut v = instance.as_ref().and_then(|i| i.sandbox_status()).unwrap_or_else(|| serde_json::json!({}));
                v["last_exit"] = serde_json::json!(inner.last_exit);
                v["disk_bytes"] = serde_json::json!(
                    sandbox::disk::plugin_usage(&m.dir.join("data"), &self.opts.runtime_dir, &m.name).ok()
                );
                v["disk_quota_bytes"] = serde_json::json!(m.resources.max_disk_mb * 1024 * 1024);
                v["network"] = serde_json::json!(m.permissions.iter().any(|p| p == "network"));
                if v.get("fs_isolation").is_none() {
                    v["fs_isolation"] = serde_json::json!(null);
                }
                v
            }),
        })
    }

    /// Refreshes the gauges that mirror state, just before a scrape.
    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        for s in self.slots.read().values() {
            let current = s.state();
            for st in PluginState::ALL {
                m.state.with_label_values(&[s.name.as_str(), st.as_str()]).set(i64::from(st == current));
            }
            m.abandoned_threads
                .with_label_values(&[s.name.as_str()])
                .set(s.gauges.abandoned_threads.load(Ordering::Relaxed) as i64);
            m.rate_limit_clients
                .with_label_values(&[s.name.as_str()])
                .set(s.client_limiter.lock().tracked() as i64);
        }
        m.abandoned_threads_limit.set(self.opts.max_abandoned_threads as i64);
        m.mapped_libraries.set(loader::mapped_libraries() as i64);
        if let Some(dbs) = self.databases.get() {
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
}
