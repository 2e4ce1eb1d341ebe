//! A fake XCore host for testing plugins: unit tests that call a plugin's actions, routes
//! and event handlers in-process, with every host service a plugin can call, recorded for
//! assertions, and the manifest's permissions enforced as the host enforces them.
//!
//! # Example
//!
//! In the plugin's `Cargo.toml`: `crate-type = ["cdylib", "rlib"]` (the `rlib` lets the
//! plugin's own tests link it) and, under `[dev-dependencies]`, `xcore-plugin-testkit`.
//! Then, in `tests/kit.rs`:
//!
//! ```no_run
//! use serde_json::json;
//! use xcore_plugin_testkit::TestHost;
//! # mod my_plugin {
//! #     use xcore_plugin_sdk::{Context, Plugin, PluginError, Reply, Request};
//! #     pub struct Notes;
//! #     impl Plugin for Notes {
//! #         fn new(_: &Context) -> Result<Self, PluginError> { Ok(Notes) }
//! #         fn call(&self, _: &Context, r: Request<'_>) -> Result<Reply, PluginError> {
//! #             Err(PluginError::unknown_action(r.action()))
//! #         }
//! #     }
//! # }
//! use my_plugin::Notes;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Reads plugin.yaml (config, permissions, routes, hooks) from the crate's folder.
//! let kit = TestHost::from_dir(env!("CARGO_MANIFEST_DIR"))?
//!     .config(json!({ "greeting": "hi" }))
//!     // Another plugin this one calls (`ctx.call("users", "get", ..)`), stubbed.
//!     .reply("users", "get", json!({ "name": "Ada" }));
//! let p = kit.start::<Notes>()?;
//!
//! // An action, as an admin call would reach it.
//! let note = p.call("create", json!({ "text": "hello" }))?;
//! // A route of plugin.yaml, matched as the HTTP API matches it.
//! let same = p.route("GET", &format!("/notes/{}?full=1", note["id"]), json!(null))?;
//! assert_eq!(same["text"], "hello");
//! // A refusal: its code, status and message.
//! let e = p.call_err("create", json!({}));
//! assert_eq!((e.code.as_str(), e.status), ("invalid_payload", 400));
//!
//! // What it asked of the host.
//! assert_eq!(p.emitted()[0].event, "notes.created");
//! assert!(p.host_calls().iter().any(|c| c.service == "kv.set" && c.result.is_ok()));
//! assert_eq!(p.kv("count"), Some(json!(1)));
//! // Events reach its hooks, #[on] handlers and ctx.subscribe subscriptions.
//! let report = p.emit("users.deleted", json!({ "id": 7 }))?;
//! assert_eq!(report.handled(), 1);
//! // Its cron jobs run when the test says so.
//! p.run_job("cleanup")?;
//! // Every `#[action(example(..))]` it declares: a failure is a readable diff.
//! p.run_examples()?;
//! # Ok(())
//! # }
//! ```
//!
//! # What is real and what is not
//!
//! The kit is the host's own code, not a model of it:
//! - the plugin's host object is the runtime's `HostServices` (`host.info`,
//!   `host.data_dir`, panics caught) over the services crate's `Services`, so every
//!   service answers with the host's JSON protocol, reply shapes, error codes and
//!   messages, and checks permissions with the host's code;
//! - the permissions in effect are computed as the host computes them
//!   (`xcore_manifest::permissions::effective`): what `plugin.yaml` asks for and the
//!   operator grants. By default the operator grants everything the manifest asks for
//!   (the plugin as it runs once approved); [`TestHost::grants`], [`TestHost::grant`]
//!   and [`TestHost::revoke`] change the operator's grants, [`TestHost::permissions`]
//!   the manifest's request. A grant the manifest does not ask for is not in effect,
//!   as on a real host;
//! - key-value entries, jobs' runs and plugins' SQL are `xcore-db` on SQLite, in a
//!   temporary folder (the host's layout: its `default` database with the host's
//!   migrations applied, the plugin's namespace file beside it; the plugin's own
//!   `migrations/` applied at start, as at a load); the cache is the host's memory
//!   cache with its default limits; events go through `xcore-hooks`' manager with the
//!   host's default limits; jobs are the host's scheduler, which here never fires on
//!   its clock: [`TestPlugin::run_job`] runs one now, as `xcore jobs run` does;
//! - at start the kit reads the plugin's action table (the reserved action
//!   `__xcore_describe`) and checks `plugin.yaml`'s routes and hooks against it with the
//!   runtime's `contract::check`, refusing what a host refuses (`action_missing`).
//!
//! What differs: the plugin runs in the test's process on the caller's thread (handlers
//! of events on a thread of the kit's runtime), as the trusted tier runs it, but with no
//! worker threads: no timeout can stop a call that hangs, no rate limit, queue or
//! sandbox applies, and the plugin sees `resources.timeout_ms` only as its deadline.
//! The registry's re-entrancy rule does apply: an event handler's call into the plugin
//! while it waits on that event with all its `resources.concurrency` slots busy is
//! `reentrant_call` (409), as on a host.
//! Other plugins are the stubs the test registers ([`TestHost::stub`],
//! [`TestHost::reply`]); a plugin with no stub is `unknown_plugin`, as on a host that
//! does not have it. The `data/` folder is in the temporary folder, not the plugin's.
//!
//! # Compile cost
//!
//! Reusing the host's services means linking them: a plugin's test build compiles
//! `xcore-services`, `xcore-runtime` and `xcore-db` (diesel with bundled SQLite, moka,
//! the scheduler, tokio), about what the host itself needs minus its HTTP server: 273
//! crates in its tree (normal and build dependencies, `cargo tree`), against 53 for the
//! SDK alone and 361 for the host's binary. Inside
//! this workspace that costs nothing, since the host builds them anyway; for a plugin
//! outside it, it is a one-time cost of its test build (a dev-dependency: the plugin's
//! library does not link any of it). The alternative, a lighter fake re-implementing
//! each service, would answer as the host does only as long as someone kept two copies
//! in step; a plugin test passing against a host that answers differently is the
//! failure this kit exists to prevent.
//!
//! # Logs
//!
//! Lines written with `ctx.info(..)` and the other `Context` log helpers are recorded
//! ([`TestPlugin::logs`]). A plugin's `log::info!` lines are recorded too when they are
//! written during a call the kit makes (on that thread): the kit installs its own `log`
//! logger unless the test installed one first. The host's own lines during such a call
//! (target `xcore::...`) are recorded the same way, with their target.
//!
//! # Threads
//!
//! Use the kit from plain `#[test]` functions, not from inside an async runtime: the
//! host's services block on a runtime of their own (an emit that waits, a call to
//! another plugin, the cache), as they block a trusted plugin's worker thread.

#![warn(missing_docs)]

mod calls;
pub mod examples;
mod log_sink;
mod record;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use xcore_db::store::Store;
use xcore_db::{DatabaseConfig, Databases};
use xcore_hooks::HookManager;
use xcore_manifest::Manifest;
use xcore_plugin_abi::abi_stable::sabi_trait::TD_Opaque;
use xcore_plugin_abi::abi_stable::std_types::{RResult, RString};
use xcore_plugin_abi::describe::PluginDescription;
use xcore_plugin_abi::ffi::{CallError, HostBox, InitArgs, PluginBox};
use xcore_plugin_sdk::{EmitReport, Plugin};
use xcore_runtime::host_services::HostServices;
use xcore_runtime::metrics::Metrics;
use xcore_runtime::plugin_calls::ActionSubscription;
use xcore_runtime::registry::{owner_of, RuntimeParts};
use xcore_runtime::resources::PluginResources;
use xcore_runtime::trusted::loader;
use xcore_runtime::{CallFailure, CallInput};
use xcore_services::cache::{Cache, CacheConfig};
use xcore_services::events::EventsConfig;
use xcore_services::scheduler::{Owner, Scheduler, SchedulerConfig, Target};
use xcore_services::{ServiceParts, Services};

pub use calls::StubFn;
pub use examples::{ExampleMismatch, ExamplesFailed};
/// The level of a [`LogLine`].
pub use log::Level;
pub use record::{Emitted, Failure, HostCall, LogLine, PluginCall, Recorded, MAX_RECORDS};

/// Why the kit could not start a plugin (or run a job).
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// `plugin.yaml` is missing or invalid (the message names file and key).
    #[error(transparent)]
    Manifest(#[from] xcore_manifest::ManifestError),
    /// The kit's own host could not be set up (its temporary folder, databases, runtime).
    #[error("the test host could not start: {0}")]
    Setup(String),
    /// The plugin's migrations failed, as they would fail its load.
    #[error("plugin '{plugin}': {reason}")]
    Migration {
        /// The plugin.
        plugin: String,
        /// What failed.
        reason: String,
    },
    /// The plugin's constructor answered an error.
    #[error("plugin '{plugin}' failed to start: {code}: {message}")]
    Constructor {
        /// The plugin.
        plugin: String,
        /// Its error code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The plugin's action table is malformed, or `plugin.yaml` names actions it does
    /// not have (the host refuses such a load with `action_missing`).
    #[error("{0}")]
    Contract(String),
    /// A job could not run, or its run failed.
    #[error("job '{id}': {reason}")]
    Job {
        /// The job's id.
        id: String,
        /// Why.
        reason: String,
    },
}

/// A test host for one plugin, configured before [`TestHost::start`].
#[derive(Clone)]
pub struct TestHost {
    manifest: Manifest,
    grants: Option<Vec<String>>,
    config: serde_json::Map<String, Value>,
    stubs: BTreeMap<(String, String), StubFn>,
    databases: Vec<String>,
    kv_max_keys: Option<u64>,
    echo_logs: bool,
}

impl std::fmt::Debug for TestHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHost")
            .field("plugin", &self.manifest.name)
            .field("grants", &self.grants)
            .field("stubs", &self.stubs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TestHost {
    /// A host for the plugin whose `plugin.yaml` is in `dir` (the folder's name must be
    /// the plugin's, as on a host). `${VAR}`s are resolved from the environment.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<TestHost, KitError> {
        let loaded = xcore_manifest::load(dir.as_ref())?;
        Ok(TestHost::from_manifest(loaded.manifest))
    }

    /// A host for an already parsed manifest.
    pub fn from_manifest(manifest: Manifest) -> TestHost {
        TestHost {
            manifest,
            grants: None,
            config: serde_json::Map::new(),
            stubs: BTreeMap::new(),
            databases: Vec::new(),
            kv_max_keys: None,
            echo_logs: false,
        }
    }

    /// The manifest the plugin runs with.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Replaces the permissions the manifest asks for (its `permissions` list).
    pub fn permissions<I, S>(mut self, permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.manifest.permissions = permissions.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the operator's grants (`plugins.grants.<name>` of xcore.yaml) to exactly
    /// these; `grants([] as [&str; 0])` grants nothing. By default the operator grants
    /// what the manifest asks for.
    pub fn grants<I, S>(mut self, grants: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.grants = Some(grants.into_iter().map(Into::into).collect());
        self
    }

    /// Adds one operator grant. In effect only if the manifest asks for it (or for
    /// something it covers).
    pub fn grant(mut self, permission: impl Into<String>) -> Self {
        let mut grants = self.operator_grants();
        grants.push(permission.into());
        self.grants = Some(grants);
        self
    }

    /// Withdraws one operator grant (as written): the plugin runs as on a host whose
    /// operator did not approve that permission.
    pub fn revoke(mut self, permission: &str) -> Self {
        let mut grants = self.operator_grants();
        grants.retain(|g| g != permission);
        self.grants = Some(grants);
        self
    }

    fn operator_grants(&self) -> Vec<String> {
        self.grants.clone().unwrap_or_else(|| self.manifest.permissions.clone())
    }

    /// The permissions in effect, as the host computes them: asked for and granted.
    pub fn effective_permissions(&self) -> Vec<String> {
        xcore_manifest::permissions::effective(&self.manifest.permissions, false, &self.operator_grants())
            .effective
    }

    /// Sets keys of the plugin's `config` map (over those of `plugin.yaml`); `config`
    /// must be a JSON object (anything else is ignored).
    pub fn config(mut self, config: Value) -> Self {
        if let Value::Object(map) = config {
            self.config.extend(map);
        }
        self
    }

    /// Stubs `action` of another plugin (`*`: every action of it) with a closure of the
    /// payload; its `Err` is the error the caller gets (code, status and message).
    pub fn stub<F>(mut self, plugin: &str, action: &str, f: F) -> Self
    where
        F: Fn(&Value) -> Result<Value, Failure> + Send + Sync + 'static,
    {
        self.stubs.insert((plugin.to_string(), action.to_string()), Arc::new(f));
        self
    }

    /// Stubs `action` of another plugin with a canned reply.
    pub fn reply(self, plugin: &str, action: &str, reply: Value) -> Self {
        self.stub(plugin, action, move |_| Ok(reply.clone()))
    }

    /// Adds a database of the operator's named `name` (an SQLite file of the kit), for a
    /// plugin granted `db:<name>`; `default` is always there.
    pub fn database(mut self, name: &str) -> Self {
        if name != "default" && !self.databases.iter().any(|d| d == name) {
            self.databases.push(name.to_string());
        }
        self
    }

    /// `kv.max_keys_per_plugin` of the host (its default otherwise).
    pub fn kv_max_keys(mut self, max: u64) -> Self {
        self.kv_max_keys = Some(max);
        self
    }

    /// Also prints the plugin's log lines on stderr as they come (the command line's
    /// `xcore plugin run` does).
    pub fn echo_logs(mut self, on: bool) -> Self {
        self.echo_logs = on;
        self
    }

    /// Starts plugin type `P` of the test's own crate, through the entry point a loaded
    /// library exports (`sdk::instantiate::<P>`, what `export_plugin!` calls).
    pub fn start<P: Plugin>(self) -> Result<TestPlugin, KitError> {
        self.start_with(xcore_plugin_sdk::sdk::instantiate::<P>)
    }

    /// Starts a plugin through `instantiate`, a library's constructor (the root module's
    /// `instantiate` of a library the host's loader mapped, or `sdk::instantiate::<P>`).
    pub fn start_with(
        self,
        instantiate: impl FnOnce(InitArgs) -> RResult<PluginBox, CallError>,
    ) -> Result<TestPlugin, KitError> {
        let setup = |what: &str, e: &dyn std::fmt::Display| KitError::Setup(format!("{what}: {e}"));
        let m = self.manifest.clone();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("xcore-testkit-{}-", m.name))
            .tempdir()
            .map_err(|e| setup("creating a temporary folder", &e))?;

        // The host's databases, as `xcore serve` builds them: the host's migrations on
        // `default`, then every database connected, the store over `default`.
        let mut configs = BTreeMap::new();
        for name in std::iter::once("default").chain(self.databases.iter().map(String::as_str)) {
            let url = format!("sqlite://{}", tmp.path().join(format!("{name}.db")).display());
            configs
                .insert(name.to_string(), DatabaseConfig { url, pool_size: 4, ..DatabaseConfig::default() });
        }
        let default_url = configs["default"].url.clone();
        xcore_db::migrate::migrate("default", &default_url, xcore_db::migrate::Op::Run)
            .map_err(|e| setup("the host's migrations", &e))?;
        let databases = Databases::connect(&configs).map_err(|e| setup("connecting the databases", &e))?;
        let default = databases.get("default").map_err(|e| setup("the default database", &e))?.clone();
        let mut store = Store::new(default);
        if let Some(max) = self.kv_max_keys {
            store = store.with_kv_max_keys(max);
        }

        let runtime =
            xcore_runtime::host_work::runtime().map_err(|e| setup("starting the host-work runtime", &e))?;
        let cache = runtime
            .block_on(Cache::connect(&CacheConfig::default()))
            .map_err(|e| setup("the memory cache", &e))?;
        // Jobs run only by hand: a test decides when.
        let plan = Scheduler::plan(&SchedulerConfig { enabled: false, ..SchedulerConfig::default() })
            .map_err(|e| setup("the scheduler", &e))?;
        let hooks = HookManager::builder().runtime(runtime.handle().clone()).build();
        hooks.set_limits(EventsConfig::default().hook_limits());
        let metrics = Arc::new(Metrics::new());
        let journal = Arc::new(record::Journal::new(self.echo_logs));
        let kit = calls::KitPlugins::new(
            &m.name,
            m.resources.timeout_ms,
            m.resources.concurrency,
            self.stubs.clone(),
            hooks.clone(),
            journal.clone(),
        );
        let weak: std::sync::Weak<dyn xcore_runtime::PluginCalls> =
            Arc::downgrade(&(kit.clone() as Arc<dyn xcore_runtime::PluginCalls>));
        let parts = ServiceParts {
            cache: Some(cache),
            store: Some(store.clone()),
            databases: Some(Arc::new(databases)),
            scheduler: Some(plan),
        };
        let services = parts.wire()(RuntimeParts {
            plugins: weak,
            hooks: hooks.clone(),
            metrics: metrics.clone(),
            work: runtime.handle().clone(),
        });
        // The plugin's own migrations, before its constructor runs, as at a load.
        services
            .migrate(&m)
            .map_err(|e| KitError::Migration { plugin: m.name.clone(), reason: e.to_string() })?;

        let effective = self.effective_permissions();
        let host = HostServices::new(&m.name, kit.generation, &effective, services.clone(), metrics)
            .with_data_dir(tmp.path().join("data"));
        let recorder = record::Recorder { services: host, journal: journal.clone() };
        let mut config = match &m.config {
            Value::Object(map) => map.clone(),
            _ => serde_json::Map::new(),
        };
        config.extend(self.config.clone());
        let args = InitArgs {
            plugin_name: RString::from(m.name.as_str()),
            config_json: RString::from(Value::Object(config).to_string()),
            host: HostBox::from_value(recorder, TD_Opaque),
        };
        log_sink::install();
        let plugin = match log_sink::with_journal(&journal, || instantiate(args)) {
            RResult::ROk(p) => p,
            RResult::RErr(e) => {
                services.release_instance(&m.name, kit.generation);
                hooks.unregister_owner(&owner_of(&m.name, kit.generation));
                return Err(KitError::Constructor {
                    plugin: m.name.clone(),
                    code: e.code.into_string(),
                    message: e.message.into_string(),
                });
            }
        };
        let plugin = Arc::new(plugin);
        *kit.plugin.write() = Some(plugin.clone());
        let mut running = TestPlugin {
            manifest: m.clone(),
            effective,
            description: None,
            kit,
            services,
            store,
            hooks,
            data_dir: tmp.path().join("data"),
            runtime: Some(runtime),
            _tmp: tmp,
        };
        // The action table and the manifest's agreement with it, as the loader reads them.
        let description = loader::parse_description(&m.name, loader::ask_description(&plugin).as_deref())
            .map_err(|e| KitError::Contract(e.to_string()))?;
        let subscriptions = match &description {
            Some(d) => xcore_runtime::contract::check(&m, d).map_err(KitError::Contract)?.subscriptions,
            None => Vec::new(),
        };
        running.description = description;
        running.subscribe_hooks(&subscriptions);
        Ok(running)
    }
}

/// One scheduled job of the plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The id the plugin gave it (without the `<plugin>.` prefix).
    pub id: String,
    /// Its cron string.
    pub cron: String,
    /// The action it calls.
    pub action: String,
    /// The payload it calls it with.
    pub payload: Value,
}

/// A running plugin in a [`TestHost`]. Dropping it shuts the plugin down (its
/// `shutdown`, then its jobs and subscriptions go, as when a host unloads it).
pub struct TestPlugin {
    manifest: Manifest,
    effective: Vec<String>,
    description: Option<PluginDescription>,
    kit: Arc<calls::KitPlugins>,
    services: Arc<Services>,
    store: Store,
    hooks: HookManager,
    data_dir: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
    _tmp: tempfile::TempDir,
}

impl std::fmt::Debug for TestPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPlugin")
            .field("plugin", &self.manifest.name)
            .field("permissions", &self.effective)
            .finish_non_exhaustive()
    }
}

impl TestPlugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The permissions in effect.
    pub fn effective_permissions(&self) -> &[String] {
        &self.effective
    }

    /// Its action table (`None` when it dispatches by hand).
    pub fn description(&self) -> Option<&PluginDescription> {
        self.description.as_ref()
    }

    /// Its `data/` folder (`ctx.data_dir()`; created when the plugin first asks).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The host's services behind the plugin, for what the kit does not wrap.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    fn subscribe_hooks(&self, described: &[(String, String)]) {
        let name = &self.manifest.name;
        // What the registry subscribes at a load: the manifest's hooks, then the `#[on]`
        // handlers no hook names.
        for sub in ActionSubscription::of_instance(&self.manifest, self.kit.generation, described) {
            if let Err(e) = self.kit.subscribe_action(&sub) {
                log::error!(target: "xcore::hooks", "plugin '{name}': subscribing '{}' to '{}': {e}", sub.action, sub.pattern);
            }
        }
    }

    fn input(&self, caller: &str, action: &str, payload: &Value) -> CallInput {
        CallInput {
            action: action.to_string(),
            payload: serde_json::to_vec(payload).unwrap_or_default(),
            caller: caller.to_string(),
            request_id: self.kit.request_id("test"),
            origin: None,
        }
    }

    /// Calls `action` with `payload` (caller `test`) and returns its JSON reply, or the
    /// error the host would answer with: the plugin's code and status (a status outside
    /// 400-599 becomes 500), or `invalid_reply` (502) when the reply is not JSON.
    pub fn call(&self, action: &str, payload: Value) -> Result<Value, Failure> {
        self.call_as("test", action, payload)
    }

    /// [`TestPlugin::call`] with another caller (`http`, `cli`, `plugin:<name>`,
    /// `scheduler`, `event:<name>`): what `req.meta().caller` says.
    pub fn call_as(&self, caller: &str, action: &str, payload: Value) -> Result<Value, Failure> {
        let input = self.input(caller, action, &payload);
        self.finish(self.kit.call_own(&input))
    }

    fn finish(&self, result: Result<Vec<u8>, CallFailure>) -> Result<Value, Failure> {
        match result {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Failure::new(
                    xcore_plugin_abi::codes::INVALID_REPLY,
                    502,
                    format!("plugin '{}' answered bytes that are not JSON: {e}", self.manifest.name),
                )
            }),
            Err(f) => Err(Failure::new(f.code(), f.status(), f.to_string())),
        }
    }

    /// The error `action` answers `payload` with.
    ///
    /// # Panics
    ///
    /// When the call succeeds (this is an assertion helper), naming the reply.
    pub fn call_err(&self, action: &str, payload: Value) -> Failure {
        match self.call(action, payload) {
            Err(f) => f,
            Ok(v) => panic!("plugin '{}': action '{action}' answered {v}, not an error", self.manifest.name),
        }
    }

    /// Calls the route of `plugin.yaml` that matches `method` and `path` (relative to
    /// the plugin's `/plugins/<name>/`, with an optional `?query`), as the HTTP API
    /// does: the same matcher (each segment percent-decoded once), the action called
    /// with `{"params", "query", "body"}`, caller `http`. No route: 404 `not_found`; a
    /// path that does not decode to UTF-8: 400 `invalid_path`; a bad query: 400
    /// `bad_request`.
    pub fn route(&self, method: &str, path: &str, body: Value) -> Result<Value, Failure> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let tail = path.trim_start_matches('/');
        let name = &self.manifest.name;
        let (route, params) =
            xcore_manifest::routes::match_route(&self.manifest.routes, method, tail.as_bytes())
                .map_err(|e| Failure::new("invalid_path", 400, e.to_string()))?
                .ok_or_else(|| {
                    Failure::new(
                        "not_found",
                        404,
                        format!("plugin '{name}' declares no route {method} /{tail}"),
                    )
                })?;
        let query: BTreeMap<String, String> = serde_urlencoded::from_str(query)
            .map_err(|e| Failure::new("bad_request", 400, format!("query string: {e}")))?;
        let payload = serde_json::json!({ "params": params, "query": query, "body": body });
        self.call_as("http", &route.action.clone(), payload)
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.runtime {
            Some(rt) => rt.block_on(f),
            None => unreachable!("the runtime lives as long as the plugin"),
        }
    }

    /// Emits `event` as the host does (an admin's `POST /api/v1/events/{event}`): every
    /// subscribed action of the plugin runs (`plugin.yaml`'s hooks, `#[on]` handlers,
    /// `ctx.subscribe`), each through the call path with `{"event", "payload"}` and
    /// caller `event:<name>`; the report says what each did.
    pub fn emit(&self, event: &str, payload: Value) -> Result<EmitReport, Failure> {
        let report = self.block_on(self.hooks.emit(event, payload));
        let json = serde_json::to_value(&report).map_err(|e| Failure::new("internal", 500, e.to_string()))?;
        serde_json::from_value(json).map_err(|e| {
            Failure::new(
                xcore_plugin_abi::codes::INVALID_HOST_REPLY,
                502,
                format!("the hook manager's report does not read as the SDK's EmitReport: {e}"),
            )
        })
    }

    /// The event patterns the plugin is subscribed to now, with their actions.
    pub fn subscriptions(&self) -> Vec<(String, String)> {
        let owner = owner_of(&self.manifest.name, self.kit.generation);
        let prefix = format!("{}/", self.manifest.name);
        self.hooks
            .list()
            .into_iter()
            .filter(|s| s.owner == owner)
            .map(|s| (s.pattern, s.name.strip_prefix(&prefix).unwrap_or(&s.name).to_string()))
            .collect()
    }

    /// The plugin's cron jobs.
    pub fn jobs(&self) -> Vec<Job> {
        let Some(scheduler) = self.services.scheduler() else { return Vec::new() };
        let prefix = format!("{}.", self.manifest.name);
        scheduler
            .list()
            .into_iter()
            .filter(|j| matches!(&j.owner, Owner::Plugin { name, .. } if *name == self.manifest.name))
            .map(|j| Job {
                id: j.id.strip_prefix(&prefix).unwrap_or(&j.id).to_string(),
                cron: j.cron,
                action: match j.target {
                    Target::Action { action, .. } => action,
                    Target::Emit { event } => format!("emit:{event}"),
                },
                payload: j.payload,
            })
            .collect()
    }

    /// Runs one of the plugin's jobs now (`id` as the plugin gave it), as the scheduler
    /// runs it: its action with its payload, caller `scheduler`. Fails when the job does
    /// not exist or its run failed (with the plugin's error).
    pub fn run_job(&self, id: &str) -> Result<(), KitError> {
        let scheduler = self
            .services
            .scheduler()
            .ok_or_else(|| KitError::Job { id: id.into(), reason: "no scheduler".into() })?;
        let full = format!("{}.{id}", self.manifest.name);
        let outcome = self
            .block_on(scheduler.run_now(&full))
            .map_err(|e| KitError::Job { id: id.into(), reason: e.to_string() })?;
        match outcome.error {
            None => Ok(()),
            Some(reason) => Err(KitError::Job { id: id.into(), reason }),
        }
    }

    /// The plugin's value under `key` in the key-value store, read as the host stores it.
    pub fn kv(&self, key: &str) -> Option<Value> {
        self.store.kv_get(&self.manifest.name, key).ok().flatten()
    }

    /// Everything recorded so far.
    pub fn recorded(&self) -> Recorded {
        self.kit.journal.snapshot()
    }

    /// The host calls the plugin made, in order.
    pub fn host_calls(&self) -> Vec<HostCall> {
        self.recorded().host_calls
    }

    /// Its log lines, in order.
    pub fn logs(&self) -> Vec<LogLine> {
        self.recorded().logs
    }

    /// The events it emitted (and the host accepted), in order.
    pub fn emitted(&self) -> Vec<Emitted> {
        self.recorded().emitted()
    }

    /// Its calls to other plugins, in order.
    pub fn plugin_calls(&self) -> Vec<PluginCall> {
        self.recorded().plugin_calls
    }

    /// Forgets what was recorded (after the setup of a test, say).
    pub fn clear_records(&self) {
        self.kit.journal.clear()
    }

    /// Runs every example the plugin declares on its actions
    /// (`#[action(example(input = .., output = ..))]`, read from its action table) and
    /// compares each reply with the declared one as JSON values. `Ok(n)`: the `n`
    /// examples passed; otherwise every mismatch, each with the paths that differ.
    pub fn run_examples(&self) -> Result<usize, ExamplesFailed> {
        let actions = self.description.as_ref().and_then(|d| d.actions.as_deref()).unwrap_or_default();
        let mut ran = 0;
        let mut failed = Vec::new();
        for action in actions {
            for example in &action.examples {
                ran += 1;
                let actual = self.call_as("test:example", &action.name, example.input.clone());
                let differences = match &actual {
                    Ok(v) => examples::differences(&example.output, v),
                    Err(e) => vec![format!("expected a reply, got error {e}")],
                };
                if !differences.is_empty() {
                    failed.push(ExampleMismatch {
                        action: action.name.clone(),
                        name: example.name.clone(),
                        input: example.input.clone(),
                        expected: example.output.clone(),
                        actual,
                        differences,
                    });
                }
            }
        }
        if failed.is_empty() {
            Ok(ran)
        } else {
            Err(ExamplesFailed { ran, failed })
        }
    }

    /// Shuts the plugin down now (what dropping it does).
    pub fn stop(self) {}
}

impl Drop for TestPlugin {
    fn drop(&mut self) {
        let name = self.manifest.name.clone();
        if let Some(plugin) = self.kit.plugin.write().take() {
            log_sink::with_journal(&self.kit.journal, || plugin.shutdown());
            drop(plugin);
        }
        self.services.release_instance(&name, self.kit.generation);
        self.hooks.unregister_owner(&owner_of(&name, self.kit.generation));
        self.services.release_plugin(&name);
    }
}
