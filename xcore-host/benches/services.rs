//! Criterion benchmarks of the persistence services: the durable key-value store through
//! a trusted plugin's `Context`, on SQLite and on PostgreSQL, and the cache service,
//! in memory (moka) and in Redis.
//!
//! - `kv/<db>/set`, `kv/<db>/get`: one `Context::kv_set` / `Context::kv_get` of a small
//!   JSON value by the `bookmarks` plugin (actions `kv.set` / `kv.get`, which repeat the
//!   operation `n` times). Each call does up to 100 operations and the figure is per
//!   operation: the call path (~2 us) is amortised, what remains is the host service
//!   (permission check, JSON, a pooled connection) and the database statement. `set` is
//!   an upsert of one key, committed before it returns.
//! - `kv/<db>/set_n1`, `kv/<db>/get_n1`: the same with `n = 1`, per call: the whole
//!   supervised call plus one operation.
//! - `cache/<backend>/set`, `cache/<backend>/get`: one `Cache::set` / `Cache::get` of a
//!   small JSON value (a hit), called directly on a current-thread tokio runtime, per
//!   operation (a loop inside one `block_on`).
//! - `cache/<backend>/context_get`: one call of `bookmarks`' `get` action on a bookmark
//!   already cached: the supervised call plus one `cache.get` through `Context`
//!   (`cache_get_or_set`, a hit), which blocks on the host-work runtime. Per call.
//!
//! `<db>` is `sqlite` (a file in a temporary folder, WAL, `synchronous = NORMAL`, as the
//! host configures it) and `postgres` (`XCORE_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`: a fresh database `xcore_bench_<pid>` is
//! created through it and dropped at the end). `<backend>` is `memory` and `redis`
//! (`XCORE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`; keys under a namespace of
//! their own, cleared at the end). PostgreSQL and Redis are skipped, with a printed
//! line, when they cannot be reached.
//!
//! A registry takes one set of databases and one cache, so the bench builds one registry
//! per back-end, one after the other, in a single run: SQLite with the memory cache,
//! PostgreSQL with the memory cache, and SQLite with Redis (for `cache/redis/context_get`
//! only). Each is wired as `xcore serve` does (cache, host migrations, databases, store,
//! scheduler) and shut down before the next. The scheduler does not tick (jobs only run
//! by hand), so `bookmarks`' summary job cannot fire during a measurement.
//!
//! Needs the example plugins built in the same profile: `make bench` does it, or
//! `cargo build --release --workspace` first.

mod common;

use common::built_library;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use diesel::{Connection, RunQueryDsl};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use serde_json::{json, Value};
use xcore_db::store::Store;
use xcore_db::{migrate, DatabaseConfig, Databases};
use xcore_runtime::metrics::Metrics;
use xcore_runtime::registry::RegistryOptions;
use xcore_runtime::{CallInput, PluginRegistry};
use xcore_services::cache::{Backend as CacheBackend, Cache, CacheConfig, OnUnreachable};
use xcore_services::scheduler::{Scheduler, SchedulerConfig};
use xcore_services::ServiceParts;

/// Key-value operations per plugin call in `kv/<db>/set|get`.
const OPS_PER_CALL: u64 = 100;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A plugins folder holding `bookmarks` (the freshly built library, its migrations), no
/// rate limit, a generous timeout.
fn bookmarks_plugins_dir() -> tempfile::TempDir {
    let lib = built_library("xcore-plugin-bookmarks");
    let dir = tempfile::tempdir().expect("tempdir");
    let pdir = dir.path().join("plugins/bookmarks");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(
        pdir.join("plugin.yaml"),
        "name: bookmarks\nversion: 0.1.0\napi_version: \"^0.1\"\nentry_point: libbookmarks.so\n\
         resources:\n  timeout_ms: 60000\n  concurrency: 4\n  rate_limit: { calls: 0, period_seconds: 1 }\n\
         config:\n  summary_cron: \"0 0 0 1 1 *\"\n\
         permissions: [kv, cache, \"db:default\", scheduler]\n",
    )
    .unwrap();
    std::fs::copy(&lib, pdir.join("libbookmarks.so")).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/bookmarks/migrations");
    copy_dir(&source, &pdir.join("migrations"));
    dir
}

/// A registry wired like `xcore serve`, with `bookmarks` loaded.
struct Host {
    registry: Arc<PluginRegistry>,
    cache: Cache,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Host {
    fn start(db_url: &str, cache_cfg: &CacheConfig) -> Host {
        let dir = bookmarks_plugins_dir();
        let host_work = xcore_runtime::host_work::runtime().expect("host-work runtime");
        let cache = host_work.block_on(Cache::connect(cache_cfg)).expect("cache");
        // Migrations, pools and the store block: a plain thread, outside any runtime.
        let url = db_url.to_string();
        let (databases, store) = std::thread::spawn(move || {
            migrate::migrate("default", &url, migrate::Op::Run).expect("host migrations");
            let cfg = BTreeMap::from([("default".to_string(), DatabaseConfig { url, ..Default::default() })]);
            let databases = Databases::connect(&cfg).expect("databases");
            let store = Store::new(databases.get("default").unwrap().clone());
            (Arc::new(databases), store)
        })
        .join()
        .expect("database thread");
        // bookmarks schedules a job when it starts: it needs a scheduler. This one does not
        // tick, so the job never runs during a measurement.
        let plan = Scheduler::plan(&SchedulerConfig { enabled: false, ..SchedulerConfig::default() })
            .expect("scheduler");
        let parts = ServiceParts {
            cache: Some(cache.clone()),
            store: Some(store),
            databases: Some(databases),
            scheduler: Some(plan),
        };
        let (registry, _services) = PluginRegistry::new(
            RegistryOptions::new(dir.path().join("plugins"), dir.path().join("runtime")),
            Arc::new(Metrics::new()),
            host_work,
            parts.wire(),
        );
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let report = rt.block_on(registry.load_all());
        assert_eq!(report.loaded, vec!["bookmarks".to_string()], "{:?}", report.failed);
        Host { registry, cache, rt, _dir: dir }
    }

    fn call(&self, action: &str, payload: &Value) -> Value {
        let input = CallInput {
            action: action.into(),
            payload: serde_json::to_vec(payload).unwrap(),
            caller: "bench".into(),
            request_id: "r".into(),
            origin: None,
        };
        let out = self.rt.block_on(self.registry.call("bookmarks", input)).expect("call");
        serde_json::from_slice(&out).expect("JSON reply")
    }

    fn stop(self) {
        self.rt.block_on(self.registry.shutdown());
    }
}

fn value() -> Value {
    json!({ "id": 42, "url": "https://example.com/a/b", "title": "An example", "tags": ["x", "y"] })
}

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group.sample_size(20).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
}

/// `kv/<db>/set|get` (per operation, 100 per call) and `set_n1|get_n1` (per call).
fn bench_kv(c: &mut Criterion, db: &str, host: &Host) {
    let key = "bench:key";
    host.call("kv.set", &json!({ "key": key, "value": value(), "n": 1 }));
    assert_eq!(host.call("kv.get", &json!({ "key": key, "n": 1 }))["value"], value());

    let mut group = c.benchmark_group(format!("kv/{db}"));
    configure(&mut group);
    for op in ["set", "get"] {
        let action = format!("kv.{op}");
        group.bench_function(op, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut left = iters;
                while left > 0 {
                    let n = left.min(OPS_PER_CALL);
                    black_box(host.call(&action, &json!({ "key": key, "value": value(), "n": n })));
                    left -= n;
                }
                start.elapsed()
            })
        });
    }
    for op in ["set", "get"] {
        let action = format!("kv.{op}");
        let payload = json!({ "key": key, "value": value(), "n": 1 });
        group.bench_function(format!("{op}_n1"), |b| b.iter(|| black_box(host.call(&action, &payload))));
    }
    group.finish();
}

/// `cache/<backend>/set|get`: the service itself, per operation.
fn bench_cache_direct(c: &mut Criterion, backend: &str, rt: &tokio::runtime::Runtime, cache: &Cache) {
    let ns = format!("bench{}", std::process::id());
    let v = value();
    rt.block_on(cache.set(&ns, "k", &v, None)).expect("cache set");
    assert_eq!(rt.block_on(cache.get(&ns, "k")).expect("cache get"), Some(v.clone()));

    let mut group = c.benchmark_group(format!("cache/{backend}"));
    configure(&mut group);
    group.bench_function("set", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    cache.set(&ns, "k", black_box(&v), None).await.expect("cache set");
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("get", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(cache.get(&ns, "k").await.expect("cache get"));
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    rt.block_on(cache.clear(&ns)).expect("cache clear");
}

/// `cache/<backend>/context_get`: `bookmarks`' `get` on a cached bookmark, per call.
fn bench_cache_context(c: &mut Criterion, backend: &str, host: &Host) {
    let added = host.call("add", &json!({ "url": "https://example.com/bench", "title": "bench" }));
    let payload = json!({ "id": added["id"] });
    // The first get fills the cache from SQL; every later one is a hit.
    assert_eq!(host.call("get", &payload)["url"], "https://example.com/bench");
    let mut group = c.benchmark_group(format!("cache/{backend}"));
    configure(&mut group);
    group.bench_function("context_get", |b| b.iter(|| black_box(host.call("get", &payload))));
    group.finish();
    // Leaves nothing behind in a shared Redis.
    let ns = "bookmarks";
    let cache = host.cache.clone();
    host.registry.host_work().block_on(cache.clear(ns)).expect("cache clear");
}

/// A fresh PostgreSQL database, dropped (with its connections) when this goes.
struct PgDatabase {
    admin: AsyncConnectionWrapper<AsyncPgConnection>,
    name: String,
    url: String,
}

impl PgDatabase {
    fn create() -> Result<PgDatabase, String> {
        let base = std::env::var("XCORE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let mut admin = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&base)
            .map_err(|e| format!("{}: {e}", xcore_db::mask_url(&base)))?;
        let name = format!("xcore_bench_{}", std::process::id());
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .map_err(|e| e.to_string())?;
        let (prefix, _) = base.rsplit_once('/').ok_or("the URL names no database")?;
        let url = format!("{prefix}/{name}");
        Ok(PgDatabase { admin, name, url })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Err(e) =
            diesel::sql_query(format!("DROP DATABASE {} WITH (FORCE)", self.name)).execute(&mut self.admin)
        {
            eprintln!("could not drop the bench database {}: {e}", self.name);
        }
    }
}

fn redis_config() -> CacheConfig {
    let url = std::env::var("XCORE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    CacheConfig {
        backend: CacheBackend::Redis,
        url: Some(url),
        on_unreachable: OnUnreachable::Refuse,
        ..CacheConfig::default()
    }
}

fn benches(c: &mut Criterion) {
    let memory = CacheConfig::default();

    // SQLite, memory cache.
    let tmp = tempfile::tempdir().expect("tempdir");
    let sqlite_url = format!("sqlite://{}", tmp.path().join("x.db").display());
    let host = Host::start(&sqlite_url, &memory);
    bench_kv(c, "sqlite", &host);
    bench_cache_context(c, "memory", &host);
    host.stop();

    // PostgreSQL, memory cache. The admin connection is made on a plain thread.
    match std::thread::spawn(PgDatabase::create).join().expect("postgres thread") {
        Ok(pg) => {
            let host = Host::start(&pg.url, &memory);
            bench_kv(c, "postgres", &host);
            host.stop();
            std::thread::spawn(move || drop(pg)).join().expect("postgres thread");
        }
        Err(e) => println!("kv/postgres skipped: PostgreSQL unreachable ({e})"),
    }

    // The cache service itself.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    bench_cache_direct(c, "memory", &rt, &rt.block_on(Cache::connect(&memory)).expect("memory cache"));
    let redis = redis_config();
    match rt.block_on(Cache::connect(&redis)) {
        Ok(cache) => {
            bench_cache_direct(c, "redis", &rt, &cache);
            drop(cache);
            // Through Context: SQLite (a fresh file) with the Redis cache.
            let sqlite_url = format!("sqlite://{}", tmp.path().join("redis.db").display());
            let host = Host::start(&sqlite_url, &redis);
            bench_cache_context(c, "redis", &host);
            host.stop();
        }
        Err(e) => println!("cache/redis skipped: {e}"),
    }
}

criterion_group!(services, benches);
criterion_main!(services);
