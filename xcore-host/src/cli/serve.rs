//! `xcore serve`: boot the registry and the HTTP API, shut both down on a signal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use xcore_api::{self as api, AdminToken, AppState, ServeOptions, Tokens};
use xcore_config::{self as config, logging};
use xcore_db::store::Store;
use xcore_db::{migrate, Databases};
use xcore_reload::watcher::{self, WatchOptions};
use xcore_runtime::metrics::Metrics;
use xcore_runtime::registry::{RegistryOptions, SignaturePolicy};
use xcore_runtime::PluginRegistry;
use xcore_security::keys;
use xcore_security::RequireSignatures;
use xcore_services::cache::Cache;
use xcore_services::scheduler::Scheduler;
use xcore_services::ServiceParts;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to bind (overrides server.host).
    #[arg(long)]
    host: Option<String>,
    /// Port (overrides server.port).
    #[arg(long, short)]
    port: Option<u16>,
    /// Plugins folder (overrides plugins.directory).
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
    /// Development mode: watch the plugins and their sources, rebuild a crate with
    /// cargo when its sources change, and hot-reload it.
    #[arg(long)]
    dev: bool,
}

pub fn run(config_path: Option<&Path>, args: ServeArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    xcore_runtime::sandbox::os::return_large_allocations_to_the_system();
    let loaded = config::load(config_path).context("invalid configuration")?;
    let mut cfg = loaded.config;
    if let Some(h) = args.host {
        cfg.server.host = h;
    }
    if let Some(p) = args.port {
        cfg.server.port = p;
    }
    if let Some(d) = args.plugins_dir {
        cfg.plugins.directory = d;
    }
    // The event stream (GET /api/v1/stream) exists before the logger, which feeds it.
    let stream = api::stream::StreamHub::new(cfg.server.max_streams, api::stream::BUFFER);
    logging::init_with_tap(&cfg.logging, Path::new("."), Some(Box::new(StreamAppender(stream.log_tap()))))
        .context("setting up logging")?;
    // A TLS file that cannot be used stops the start before any plugin loads.
    let tls = match cfg.server.tls.files() {
        Some((cert, key)) => Some(api::tls::server_config(&cert, &key)?),
        None => None,
    };
    for w in &loaded.warnings {
        log::warn!(target: "xcore::config", "{w}");
    }
    match &loaded.source {
        Some(p) => log::info!(target: "xcore", "configuration: {}", p.display()),
        None => log::info!(target: "xcore", "no xcore.yaml: running on built-in defaults"),
    }

    // The host's tables (in `default`) are brought up to date before anything uses
    // them; then every database is connected. Both block: a plain thread, outside any
    // runtime (diesel-async's wrapper starts a small one per connection).
    let dbs = cfg.effective_databases();
    let kv_max_keys = cfg.kv.max_keys_per_plugin;
    let (databases, store, disabled) = std::thread::spawn(move || -> Result<_> {
        let default = dbs.get("default").context("databases: no 'default' database is configured")?;
        let report = migrate::migrate("default", &default.url, migrate::Op::Run)
            .context("applying the host's migrations")?;
        for v in &report.changed {
            log::info!(target: "xcore::db", "database 'default': applied migration {v}");
        }
        let databases = Databases::connect(&dbs).context("connecting the databases")?;
        for name in databases.names() {
            let db = databases.get(name)?;
            log::info!(target: "xcore::db", "database '{name}': {:?} at {}", db.backend(), db.masked_url());
        }
        let store = Store::new(databases.get("default")?.clone()).with_kv_max_keys(kv_max_keys);
        // Plugins an operator disabled stay unloaded.
        let disabled = store.disabled_plugins().context("reading plugin state")?;
        Ok((Arc::new(databases), store, disabled))
    })
    .join()
    .expect("database thread")?;

    let runtime_dir = cfg.plugins.runtime_dir.clone();
    let plugins_dir = cfg.plugins.directory.clone();
    let watch = (cfg.plugins.watch || args.dev, Duration::from_millis(cfg.plugins.debounce_ms));
    // Library copies of a previous run are never mapped again.
    let _ = std::fs::remove_dir_all(runtime_dir.join("libs"));
    std::fs::create_dir_all(&runtime_dir)
        .with_context(|| format!("creating runtime folder {}", runtime_dir.display()))?;

    let admin = match cfg.server.admin_token.as_deref() {
        Some(t) => AdminToken::new(t.to_string()),
        None => {
            let (token, path) = AdminToken::generate(&runtime_dir)
                .with_context(|| format!("writing the admin token under {}", runtime_dir.display()))?;
            log::info!(target: "xcore", "no admin token configured: generated one in {} (owner-only)", path.display());
            token
        }
    };
    // Named tokens (`xcore token create`) live beside it, hashed, in runtime/tokens.json.
    let tokens = Arc::new(Tokens::new(admin, Some(&runtime_dir)));

    let mut reg_opts = RegistryOptions::new(cfg.plugins.directory.clone(), runtime_dir);
    reg_opts.drain_timeout = Duration::from_secs(cfg.server.shutdown_timeout_seconds);
    reg_opts.max_frame = cfg.sandbox.max_frame_bytes;
    reg_opts.startup_timeout = Duration::from_millis(cfg.sandbox.startup_timeout_ms);
    reg_opts.kill_grace = Duration::from_millis(cfg.sandbox.kill_grace_ms);
    reg_opts.sandbox_user = cfg.sandbox.resolve_user()?;
    reg_opts.sandbox_limits = (&cfg.sandbox).into();
    reg_opts.signatures = signature_policy(&cfg.security, &cfg.plugins.runtime_dir)?;
    reg_opts.queue_timeout = Duration::from_millis(cfg.plugins.queue_timeout_ms);
    reg_opts.max_abandoned_threads = cfg.plugins.max_abandoned_threads;
    reg_opts.log_lines_per_second = cfg.plugins.log_lines_per_second;
    reg_opts.log_line_max_bytes = cfg.plugins.log_line_max_bytes;
    reg_opts.rate_limit_max_clients = cfg.plugins.rate_limit_max_clients;
    reg_opts.grants = Arc::new(cfg.plugins.grants.clone());
    reg_opts.disabled = disabled;
    log::info!(target: "xcore", "sandbox worker: {}", reg_opts.worker_exe.display());
    // The host's own async work (the cache's I/O, emits, restarts, jobs) runs on the
    // host-work runtime; the registry owns it from then on.
    let host_work = xcore_runtime::host_work::runtime().context("starting the host-work runtime")?;
    let cache_cfg = cfg.cache.clone().from_env();
    let cache = host_work.block_on(Cache::connect(&cache_cfg)).context("connecting the cache")?;
    log::info!(target: "xcore", "cache: {}", cache.backend());
    let metrics = Arc::new(Metrics::new());
    metrics.register_collectors(vec![cache.collector()]);
    let parts = ServiceParts {
        cache: Some(cache),
        store: Some(store.clone()),
        databases: Some(databases),
        scheduler: Some(Scheduler::plan(&cfg.scheduler).context("scheduler")?),
    };
    // Built together: the services reach plugins through the registry (as PluginCalls),
    // the registry's lifecycle uses the services' records, databases and jobs.
    let (registry, services) = PluginRegistry::new(reg_opts, metrics.clone(), host_work, parts.wire());
    // Before any plugin loads: its manifest hooks count against these.
    registry.hooks().set_limits(cfg.events.hook_limits());
    stream.observe(registry.hooks()).context("observing events for the event stream")?;
    registry.metrics().register_collectors(stream.collectors());
    let scheduler = services.scheduler().cloned().context("the scheduler did not start")?;
    log::info!(target: "xcore", "scheduler: {} job(s){}", scheduler.list().len(),
        if cfg.scheduler.enabled { "" } else { " (scheduler.enabled is false: jobs run only by hand)" });
    // Expired key-value entries are invisible at once; their rows go once a minute.
    {
        let store = store.clone();
        std::thread::Builder::new().name("xcore-kv-sweeper".into()).spawn(move || loop {
            std::thread::sleep(Duration::from_secs(60));
            match store.kv_purge_expired() {
                Ok(0) => {}
                Ok(n) => log::debug!(target: "xcore::kv", "{n} expired entries removed"),
                Err(e) => log::warn!(target: "xcore::kv", "removing expired entries: {e}"),
            }
        })?;
    }
    // job_runs and audit_log are pruned at start, then every retention.interval_seconds.
    {
        let store = store.clone();
        let retention = cfg.retention;
        let metrics = metrics.clone();
        std::thread::Builder::new().name("xcore-retention".into()).spawn(move || loop {
            match store.prune_now(&retention) {
                Ok(p) => {
                    metrics.pruned_rows.with_label_values(&["job_runs"]).inc_by(p.job_runs);
                    metrics.pruned_rows.with_label_values(&["audit_log"]).inc_by(p.audit_log);
                    if p.job_runs + p.audit_log > 0 {
                        log::info!(target: "xcore::store", "retention: {} job runs and {} audit entries removed",
                            p.job_runs, p.audit_log);
                    }
                }
                Err(e) => log::warn!(target: "xcore::store", "retention: {e}"),
            }
            std::thread::sleep(Duration::from_secs(retention.interval_seconds.max(1)));
        })?;
    }
    let opts = ServeOptions {
        host: cfg.server.host.clone(),
        port: cfg.server.port,
        workers: cfg.server.workers,
        shutdown_timeout_seconds: cfg.server.shutdown_timeout_seconds,
        tls,
    };
    let state = AppState {
        registry: registry.clone(),
        services: services.clone(),
        tokens,
        body_limit: cfg.server.body_limit_bytes,
        client_ip_header: cfg.server.client_ip_header.clone(),
        body_timeout: Duration::from_millis(cfg.server.body_timeout_ms),
        stream,
        started,
    };

    actix_web::rt::System::new().block_on(async move {
        let report = registry.load_all().await;
        log::info!(target: "xcore", "plugins: {} loaded, {} failed", report.loaded.len(), report.failed.len());
        for (name, why) in &report.failed {
            log::error!(target: "xcore", "plugin '{name}' not loaded: {why}");
        }
        registry.emit_host_event(
            "xcore.startup",
            serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "plugins": report.loaded }),
        );
        // Kept alive while serving; dropping it stops the watch.
        let _watcher = if watch.0 {
            let opts = WatchOptions { debounce: watch.1, dev: args.dev, audit: Some(store.clone()) };
            match watcher::start(registry.clone(), &plugins_dir, opts) {
                Ok(w) => Some(w),
                Err(e) => {
                    log::error!(target: "xcore", "cannot watch {}: {e}; hot reload is off", plugins_dir.display());
                    None
                }
            }
        } else {
            None
        };
        let served = api::serve(state, opts).await;
        scheduler.stop();
        log::info!(target: "xcore", "shutting down: unloading plugins");
        // Subscribers hear of the shutdown while every plugin is still loaded.
        registry.hooks().emit("xcore.shutdown", serde_json::json!({ "version": env!("CARGO_PKG_VERSION") })).await;
        registry.shutdown().await;
        served.context("HTTP server")
    })?;
    log::info!(target: "xcore", "stopped");
    Ok(ExitCode::SUCCESS)
}

/// Hands log lines at `warn` and above to the event stream. Here, not in the API crate:
/// log4rs's `Append` returns `anyhow::Result`, and `anyhow` is the binary's alone.
#[derive(Debug)]
struct StreamAppender(api::stream::LogTap);

impl log4rs::append::Append for StreamAppender {
    fn append(&self, record: &log::Record) -> anyhow::Result<()> {
        if self.0.wanted(record.level()) {
            let plugin = log_mdc::get("plugin", |v| v.map(str::to_string));
            self.0.line(record.level(), record.target(), &record.args().to_string(), plugin.as_deref());
        }
        Ok(())
    }

    fn flush(&self) {}
}

/// Loads the trusted keys and the host key; a key file that cannot be read stops the start.
fn signature_policy(sec: &config::SecurityConfig, runtime_dir: &std::path::Path) -> Result<SignaturePolicy> {
    let mut trusted = Vec::new();
    for file in sec.trusted_key_files() {
        let key = keys::load_public(&file).with_context(|| format!("trusted key {}", file.display()))?;
        log::info!(target: "xcore", "trusted signing key {} ({})", keys::fingerprint(&key), file.display());
        trusted.push(key);
    }
    match sec.require_signatures {
        RequireSignatures::None => {
            log::warn!(target: "xcore", "plugin signatures are not checked (security.require_signatures: none)")
        }
        level if trusted.is_empty() => log::warn!(target: "xcore",
            "no trusted signing key: every plugin that must be signed ({level:?}) will be refused; \
             create one with `xcore keys generate` and sign with `xcore plugin sign`"),
        _ => {}
    }
    let host_key = xcore_security::host_key::HostPublicKey::at(runtime_dir);
    match host_key.get() {
        Ok(Some(k)) => {
            log::info!(target: "xcore", "host key {} ({}): vouches for this host's build records only",
            keys::fingerprint(k), host_key.path().display())
        }
        Ok(None) => {}
        Err(e) => anyhow::bail!("the host key: {e}"),
    }
    Ok(SignaturePolicy { require: sec.require_signatures, trusted: Arc::new(trusted), host_key })
}
