//! Characterisation of the plugin registry's lifecycle and call path, through its own API
//! (no HTTP, no `xcore serve`), with the real fixture libraries: load, call, reload (a
//! new generation), unload, a failed load, reset after failure, the restart decisions on
//! a panic streak and on a worker crash, the restart intensity, and the overload answer.
//! They pin the behaviour the registry's split into slots, lifecycle, call path and
//! restart decisions must keep.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{write_plugins, PluginSpec};
use xcore_db::store::Store;
use xcore_db::{migrate, DatabaseConfig, Databases};
use xcore_runtime::metrics::Metrics;
use xcore_runtime::registry::{PluginInfo, RegistryOptions, SignaturePolicy};
use xcore_runtime::{CallFailure, CallInput, PluginRegistry, PluginState, RegistryError};
use xcore_security::RequireSignatures;
use xcore_services::ServiceParts;

struct Fixture {
    rt: tokio::runtime::Runtime,
    registry: Arc<PluginRegistry>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A registry over a fresh plugins folder holding `plugins`, every one loaded.
    fn new(plugins: &[PluginSpec]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let plugins_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins_dir).unwrap();
        write_plugins(&plugins_dir, plugins);
        Fixture::over(dir, plugins_dir, ServiceParts::default(), Vec::new())
    }

    /// A registry over `plugins_dir` with its runtime files in `dir`, `parts` as its
    /// services and `disabled` as the plugins an operator disabled.
    fn over(
        dir: tempfile::TempDir,
        plugins_dir: std::path::PathBuf,
        parts: ServiceParts,
        disabled: Vec<String>,
    ) -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (registry, _services) = PluginRegistry::new(
            RegistryOptions {
                worker_exe: env!("CARGO_BIN_EXE_xcore-sandbox-worker").into(),
                // Signatures have tests of their own (signatures.rs); here every plugin loads.
                signatures: SignaturePolicy { require: RequireSignatures::None, ..Default::default() },
                disabled,
                ..RegistryOptions::new(plugins_dir, dir.path().join("runtime"))
            },
            Arc::new(Metrics::new()),
            xcore_runtime::host_work::runtime().expect("host-work runtime"),
            parts.wire(),
        );
        Fixture { rt, registry, _dir: dir }
    }

    fn call(&self, plugin: &str, action: &str, payload: &str) -> Result<serde_json::Value, CallFailure> {
        let input = CallInput {
            action: action.into(),
            payload: payload.as_bytes().to_vec(),
            caller: "test".into(),
            request_id: format!("test-{action}"),
            origin: None,
        };
        self.rt
            .block_on(self.registry.call(plugin, input))
            .map(|reply| serde_json::from_slice(&reply).expect("a JSON reply"))
    }

    fn info(&self, plugin: &str) -> PluginInfo {
        self.registry.info(plugin).expect("a slot")
    }

    /// Waits until `plugin` is in `state` (restarts happen in the background).
    fn wait_state(&self, plugin: &str, state: PluginState) -> PluginInfo {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = self.info(plugin);
            if info.state == state {
                return info;
            }
            assert!(Instant::now() < deadline, "{plugin} is {} after 10 s, not {state}", info.state);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.rt.block_on(self.registry.shutdown());
    }
}

fn misbehave(extra: &str) -> PluginSpec {
    PluginSpec::with("misbehave", "xcore-fixture-misbehave", extra)
}

#[test]
fn load_call_reload_unload_keep_the_slot_and_bump_the_generation() {
    let f = Fixture::new(&[PluginSpec::echo()]);
    let report = f.rt.block_on(f.registry.load_all());
    assert_eq!(report.loaded, vec!["echo".to_string()], "{:?}", report.failed);
    assert!(report.failed.is_empty());
    assert_eq!(f.registry.names(), vec!["echo".to_string()]);

    let info = f.info("echo");
    assert_eq!((info.state, info.generation), (PluginState::Ready, 1));
    assert_eq!(f.call("echo", "echo", r#"{"n":1}"#).unwrap()["echo"], serde_json::json!({"n": 1}));
    assert_eq!(f.info("echo").counters["calls"], 1);

    // A reload is a fresh instance in the same slot: the generation moves, counters stay.
    f.rt.block_on(f.registry.reload("echo")).unwrap();
    let info = f.info("echo");
    assert_eq!((info.state, info.generation), (PluginState::Ready, 2));
    assert_eq!(info.counters["calls"], 1, "the slot's counters outlive the instance");
    assert_eq!(info.restarts, 0, "a reload is not a restart");
    assert_eq!(f.call("echo", "echo", "2").unwrap()["echo"], serde_json::json!(2));

    // Unloaded: the slot stays, calls are refused with the state, a reload is a conflict.
    f.rt.block_on(f.registry.unload("echo")).unwrap();
    assert_eq!(f.info("echo").state, PluginState::Unloaded);
    match f.call("echo", "echo", "3") {
        Err(CallFailure::Unavailable { name, state, .. }) => {
            assert_eq!((name.as_str(), state.as_str()), ("echo", "unloaded"))
        }
        other => panic!("a call to an unloaded plugin: {other:?}"),
    }
    match f.rt.block_on(f.registry.reload("echo")) {
        Err(RegistryError::Conflict { state: PluginState::Unloaded, .. }) => {}
        other => panic!("reload of an unloaded plugin: {other:?}"),
    }
    // Loading it again serves again, in a new generation.
    f.rt.block_on(f.registry.load("echo")).unwrap();
    let info = f.info("echo");
    assert_eq!((info.state, info.generation), (PluginState::Ready, 3));
    assert_eq!(f.call("echo", "echo", "4").unwrap()["echo"], serde_json::json!(4));
}

#[test]
fn unknown_plugins_are_named_in_the_error() {
    let f = Fixture::new(&[PluginSpec::echo()]);
    f.rt.block_on(f.registry.load_all());
    assert_eq!(f.call("nope", "echo", "{}"), Err(CallFailure::UnknownPlugin("nope".into())));
    match f.rt.block_on(f.registry.reload("nope")) {
        Err(RegistryError::UnknownPlugin(n)) => assert_eq!(n, "nope"),
        other => panic!("{other:?}"),
    }
    assert!(f.registry.info("nope").is_none());
}

#[test]
fn a_failed_load_is_failed_until_a_reset_and_a_reset_loads_the_fixed_plugin() {
    let f = Fixture::new(&[PluginSpec::with("mismatch", "xcore-fixture-api-version-mismatch", "")]);
    let report = f.rt.block_on(f.registry.load_all());
    assert!(report.loaded.is_empty(), "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, "mismatch");
    let info = f.info("mismatch");
    assert_eq!(info.state, PluginState::Failed);
    assert!(info.last_error.as_deref().is_some_and(|e| !e.is_empty()), "{info:?}");
    assert!(matches!(f.call("mismatch", "x", "{}"), Err(CallFailure::Unavailable { .. })));

    // The operator puts a working library in place; reset loads it.
    let dir = info.dir.clone();
    std::fs::copy(common::lib("xcore-plugin-echo"), dir.join("libmismatch.so")).unwrap();
    f.rt.block_on(f.registry.reset("mismatch")).unwrap();
    assert_eq!(f.info("mismatch").state, PluginState::Ready);
    assert_eq!(f.call("mismatch", "echo", "5").unwrap()["echo"], serde_json::json!(5));
    // Reset applies only to a failed plugin.
    match f.rt.block_on(f.registry.reset("mismatch")) {
        Err(RegistryError::Conflict { state: PluginState::Ready, .. }) => {}
        other => panic!("reset of a ready plugin: {other:?}"),
    }
}

#[test]
fn one_panic_is_an_error_a_streak_is_a_crash_that_restarts_the_instance() {
    let f = Fixture::new(&[misbehave("restart: { backoff_initial_ms: 10 }")]);
    f.rt.block_on(f.registry.load_all());
    match f.call("misbehave", "panic", "{}") {
        Err(e @ CallFailure::Plugin { .. }) => {
            assert_eq!(e.code(), "plugin_panic");
            assert!(e.to_string().contains("boom requested"), "{e}");
        }
        other => panic!("a panic: {other:?}"),
    }
    assert_eq!(f.call("misbehave", "ok", "{}").unwrap()["ok"], true);
    let info = f.info("misbehave");
    assert_eq!((info.generation, info.restarts), (1, 0), "one caught panic restarts nothing");

    // PANICS_IN_A_ROW_IS_A_CRASH panics in a row: the instance is replaced after the backoff.
    for _ in 0..3 {
        assert_eq!(f.call("misbehave", "panic", "{}").unwrap_err().code(), "plugin_panic");
    }
    let info = f.wait_state("misbehave", PluginState::Ready);
    assert_eq!((info.generation, info.restarts), (2, 1), "{info:?}");
    assert_eq!(info.counters["panics"], 4);
    assert_eq!(f.call("misbehave", "ok", "{}").unwrap()["ok"], true);
}

#[test]
fn past_the_restart_intensity_the_plugin_fails_and_reset_brings_it_back() {
    let f = Fixture::new(&[misbehave(
        "restart: { max_restarts: 1, within_seconds: 60, backoff_initial_ms: 10 }",
    )]);
    f.rt.block_on(f.registry.load_all());
    for _ in 0..3 {
        f.call("misbehave", "panic", "{}").unwrap_err();
    }
    assert_eq!(f.wait_state("misbehave", PluginState::Ready).generation, 2);
    for _ in 0..3 {
        f.call("misbehave", "panic", "{}").unwrap_err();
    }
    let info = f.wait_state("misbehave", PluginState::Failed);
    assert!(
        info.last_error.as_deref().unwrap_or_default().contains("restart intensity exceeded"),
        "{info:?}"
    );
    assert_eq!(f.call("misbehave", "ok", "{}").unwrap_err().code(), "unavailable");
    // Failed after running: load refuses, reset forgets the history and loads.
    match f.rt.block_on(f.registry.load("misbehave")) {
        Err(RegistryError::Conflict { state: PluginState::Failed, .. }) => {}
        other => panic!("load of a failed plugin: {other:?}"),
    }
    f.rt.block_on(f.registry.reset("misbehave")).unwrap();
    assert_eq!(f.info("misbehave").state, PluginState::Ready);
    assert_eq!(f.call("misbehave", "ok", "{}").unwrap()["ok"], true);
}

#[test]
fn a_worker_crash_answers_crashed_and_a_fresh_worker_serves() {
    let f = Fixture::new(&[misbehave("execution_mode: sandboxed\nrestart: { backoff_initial_ms: 10 }")]);
    let report = f.rt.block_on(f.registry.load_all());
    assert_eq!(report.loaded, vec!["misbehave".to_string()], "{:?}", report.failed);
    match f.call("misbehave", "segfault", "{}") {
        Err(e @ CallFailure::Crashed { .. }) => assert_eq!(e.code(), "plugin_crashed"),
        other => panic!("a segfault in the worker: {other:?}"),
    }
    let info = f.wait_state("misbehave", PluginState::Ready);
    assert_eq!((info.generation, info.restarts), (2, 1), "{info:?}");
    let last_exit = &info.sandbox.as_ref().expect("a sandboxed view")["last_exit"];
    assert!(last_exit.as_str().is_some_and(|s| s.contains("SIGSEGV")), "{last_exit}");
    assert_eq!(f.call("misbehave", "ok", "{}").unwrap()["ok"], true);
}

#[test]
fn a_busy_plugin_answers_overloaded_and_is_not_restarted() {
    let f = Fixture::new(&[misbehave(
        "resources: { concurrency: 1, queue_timeout_ms: 50, rate_limit: { calls: 0, period_seconds: 1 } }",
    )]);
    f.rt.block_on(f.registry.load_all());
    let registry = f.registry.clone();
    let busy = f.rt.spawn(async move {
        let input = CallInput {
            action: "sleep".into(),
            payload: br#"{"ms":400}"#.to_vec(),
            caller: "test".into(),
            request_id: "busy".into(),
            origin: None,
        };
        registry.call("misbehave", input).await
    });
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    match f.call("misbehave", "ok", "{}") {
        Err(e @ CallFailure::Overloaded { .. }) => {
            assert_eq!(e.code(), "overloaded");
            let CallFailure::Overloaded { retry_after, .. } = e else { unreachable!() };
            assert!(retry_after >= Duration::from_secs(1), "{retry_after:?}");
        }
        other => panic!("a call to a busy plugin: {other:?}"),
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(50) && waited < Duration::from_millis(350), "{waited:?}");
    assert!(f.rt.block_on(busy).unwrap().is_ok(), "the running call finishes");
    let info = f.info("misbehave");
    assert_eq!(info.counters["overloaded"], 1);
    assert_eq!((info.state, info.generation, info.restarts), (PluginState::Ready, 1, 0));
}

#[test]
fn the_rate_limit_refuses_with_a_retry_hint() {
    let f = Fixture::new(&[misbehave("resources: { rate_limit: { calls: 2, period_seconds: 30 } }")]);
    f.rt.block_on(f.registry.load_all());
    f.call("misbehave", "ok", "{}").unwrap();
    f.call("misbehave", "ok", "{}").unwrap();
    match f.call("misbehave", "ok", "{}") {
        Err(CallFailure::RateLimited { per_client: false, calls: 2, retry_after, .. }) => {
            assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(30), "{retry_after:?}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.info("misbehave").counters["rate_limited"], 1);
}

/// The host's records on an SQLite file in `dir`, as `xcore serve` makes them (on a
/// plain thread: the pools block).
fn host_records(dir: &std::path::Path) -> (Arc<Databases>, Store) {
    let url = format!("sqlite://{}", dir.join("xcore.db").display());
    std::thread::spawn(move || {
        migrate::migrate("default", &url, migrate::Op::Run).expect("host migrations");
        let cfg = BTreeMap::from([("default".to_string(), DatabaseConfig { url, ..Default::default() })]);
        let databases = Databases::connect(&cfg).expect("databases");
        let store = Store::new(databases.get("default").unwrap().clone());
        (Arc::new(databases), store)
    })
    .join()
    .unwrap()
}

#[test]
fn a_disable_goes_through_the_services_records_and_keeps_the_plugin_unloaded_at_the_next_start() {
    let root = tempfile::tempdir().unwrap();
    let plugins_dir = root.path().join("plugins");
    write_plugins(&plugins_dir, &[PluginSpec::echo()]);
    let (databases, store) = host_records(root.path());
    let parts = || ServiceParts {
        store: Some(store.clone()),
        databases: Some(databases.clone()),
        ..Default::default()
    };
    let f = Fixture::over(tempfile::tempdir().unwrap(), plugins_dir.clone(), parts(), Vec::new());
    let report = f.rt.block_on(f.registry.load_all());
    assert_eq!(report.loaded, vec!["echo".to_string()], "{:?}", report.failed);
    f.rt.block_on(f.registry.disable("echo")).expect("disable");
    let s = store.clone();
    let recorded = std::thread::spawn(move || s.disabled_plugins()).join().unwrap().expect("plugin state");
    assert_eq!(recorded, vec!["echo".to_string()]);

    // The next start reads the record: the plugin is known, disabled, not loaded.
    drop(f);
    let f = Fixture::over(tempfile::tempdir().unwrap(), plugins_dir, parts(), recorded);
    let report = f.rt.block_on(f.registry.load_all());
    assert!(report.loaded.is_empty(), "{report:?}");
    assert_eq!(f.info("echo").state, PluginState::Disabled);
    assert!(matches!(f.call("echo", "echo", "{}"), Err(CallFailure::Unavailable { .. })));
    // Enabling records it and loads the plugin.
    f.rt.block_on(f.registry.enable("echo")).expect("enable");
    assert_eq!(f.call("echo", "echo", "5").unwrap()["echo"], serde_json::json!(5));
    let recorded =
        std::thread::spawn(move || store.disabled_plugins()).join().unwrap().expect("plugin state");
    assert!(recorded.is_empty(), "{recorded:?}");
}
