//! Load shedding under 3x overload, per tier, through the registry (no HTTP): an
//! open-loop generator offers three times what a plugin can serve, and the bench counts
//! 200s (served) and 503s (`overloaded`) per second and the latency percentiles of
//! each, then checks that every served call ran once and no refused call ran.
//!
//! The plugin is the `misbehave` fixture's `count_sleep` (10 ms) with `concurrency: 2`:
//! at most 200 calls/s. Offered: 600 calls/s for 10 s per run, with the default queue
//! timeout (1000 ms) and a short one (100 ms).
//!
//! `cargo bench -p xcore-host --bench overload` (after a release build of the host and
//! the fixture: `cargo build --release -p xcore-host -p xcore-fixture-misbehave`).

mod common;

use common::{built_library, profile_dir};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use xcore_runtime::metrics::Metrics;
use xcore_runtime::registry::RegistryOptions;
use xcore_runtime::{CallFailure, CallInput, PluginRegistry};
use xcore_services::ServiceParts;

const SLEEP_MS: u64 = 10;
const CONCURRENCY: u32 = 2;
const OVERLOAD: f64 = 3.0;
const SECONDS: u64 = 10;

fn write_plugin(root: &Path, name: &str, mode: &str, queue_timeout_ms: u64, lib: &Path) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = format!(
        "name: {name}\nversion: 0.1.0\napi_version: \"^0.1\"\nexecution_mode: {mode}\nentry_point: libm.so\n\
         resources:\n  concurrency: {CONCURRENCY}\n  queue_timeout_ms: {queue_timeout_ms}\n  max_disk_mb: 0\n  \
         rate_limit: {{ calls: 0, period_seconds: 1 }}\n"
    );
    std::fs::write(dir.join("plugin.yaml"), manifest).unwrap();
    std::fs::copy(lib, dir.join("libm.so")).unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

fn input(action: &str, payload: &str) -> CallInput {
    CallInput {
        action: action.into(),
        payload: payload.as_bytes().to_vec(),
        caller: "bench".into(),
        request_id: "r".into(),
        origin: None,
    }
}

fn main() {
    let lib = built_library("xcore-fixture-misbehave");
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let runs = [("trusted", 1000), ("sandboxed", 1000), ("trusted", 100), ("sandboxed", 100)];
    for (mode, q) in runs {
        write_plugin(&plugins, &format!("{mode}-{q}"), mode, q, &lib);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (registry, _services) = PluginRegistry::new(
        RegistryOptions {
            worker_exe: profile_dir().join("xcore"),
            ..RegistryOptions::new(plugins, dir.path().join("runtime"))
        },
        Arc::new(Metrics::new()),
        xcore_runtime::host_work::runtime().expect("host-work runtime"),
        ServiceParts::default().wire(),
    );
    let report = rt.block_on(registry.load_all());
    assert_eq!(report.loaded.len(), runs.len(), "{:?}", report.failed);

    let capacity = f64::from(CONCURRENCY) * 1000.0 / SLEEP_MS as f64;
    let rate = capacity * OVERLOAD;
    let total = (rate * SECONDS as f64) as u64;
    println!(
        "count_sleep {SLEEP_MS} ms, concurrency {CONCURRENCY}: capacity {capacity:.0}/s; offered {rate:.0}/s \
         ({OVERLOAD}x) for {SECONDS} s, open loop, release build"
    );
    println!(
        "{:>9} {:>8} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>6}",
        "tier", "queue", "200/s", "503/s", "200 p50", "200 p99", "503 p50", "503 p99", "other"
    );
    let payload = format!("{{\"ms\":{SLEEP_MS}}}");
    for (mode, q) in runs {
        let name = format!("{mode}-{q}");
        let (ok, refused, other) = rt.block_on(async {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let start = tokio::time::Instant::now();
            let mut tasks = Vec::with_capacity(total as usize);
            for i in 0..total {
                tokio::time::sleep_until(start + interval * i as u32).await;
                let (registry, name, payload) = (registry.clone(), name.clone(), payload.clone());
                tasks.push(tokio::spawn(async move {
                    let t = tokio::time::Instant::now();
                    let r = registry.call(&name, input("count_sleep", &payload)).await;
                    (r, t.elapsed())
                }));
            }
            let (mut ok, mut refused, mut other) = (Vec::new(), Vec::new(), 0u64);
            for t in tasks {
                match t.await.unwrap() {
                    (Ok(_), d) => ok.push(d),
                    (Err(CallFailure::Overloaded { .. }), d) => refused.push(d),
                    (Err(e), _) => {
                        other += 1;
                        eprintln!("{name}: {e}");
                    }
                }
            }
            (ok, refused, other)
        });
        let mut ok = ok;
        let mut refused = refused;
        ok.sort_unstable();
        refused.sort_unstable();
        let executions: u64 = {
            let out = rt.block_on(registry.call(&name, input("executions", "{}"))).unwrap();
            serde_json::from_slice::<serde_json::Value>(&out).unwrap()["executions"].as_u64().unwrap()
        };
        assert_eq!(executions, ok.len() as u64, "{name}: every served call ran once, no refused call ran");
        let per_s = |n: usize| n as f64 / SECONDS as f64;
        println!(
            "{mode:>9} {:>6}ms {:>9.1} {:>9.1} {:>8.1}ms {:>8.1}ms {:>8.1}ms {:>8.1}ms {other:>6}",
            q,
            per_s(ok.len()),
            per_s(refused.len()),
            percentile(&ok, 0.50),
            percentile(&ok, 0.99),
            percentile(&refused, 0.50),
            percentile(&refused, 0.99),
        );
        let info = registry.info(&name).unwrap();
        assert_eq!((info.generation, info.abandoned_threads), (1, 0), "{name}: load is not failure");
    }
    rt.block_on(registry.shutdown());
}
