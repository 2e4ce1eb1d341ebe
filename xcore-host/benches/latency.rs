//! Call latency percentiles (p50, p99) of the trusted and the sandboxed tier through the
//! registry (no HTTP), plus the sandbox worker's start time and RSS. Criterion reports
//! means; the design's targets are medians, so this bench counts them directly.
//!
//! `cargo bench -p xcore-host --bench latency` (after a release build of the workspace;
//! `make bench` does both).

mod common;

use common::{built_library, profile_dir};

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use xcore_runtime::metrics::Metrics;
use xcore_runtime::registry::RegistryOptions;
use xcore_runtime::{CallInput, PluginRegistry};
use xcore_services::ServiceParts;

const CALLS: usize = 50_000;

fn write_plugin(root: &Path, name: &str, mode: &str, lib: &Path) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = format!(
        "name: {name}\nversion: 0.1.0\napi_version: \"^0.1\"\nexecution_mode: {mode}\nentry_point: libecho.so\n\
         resources:\n  rate_limit: {{ calls: 0, period_seconds: 1 }}\n"
    );
    std::fs::write(dir.join("plugin.yaml"), manifest).unwrap();
    std::fs::copy(lib, dir.join("libecho.so")).unwrap();
}

fn percentile(sorted: &[u128], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let lib = built_library("xcore-plugin-echo");
    assert!(lib.is_file(), "{} missing: build the workspace in release first (make bench)", lib.display());
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    write_plugin(&plugins, "trusted", "trusted", &lib);
    write_plugin(&plugins, "sandboxed", "sandboxed", &lib);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
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
    assert_eq!(report.loaded.len(), 2, "{:?}", report.failed);

    let payload = br#"{"hello":"world"}"#.to_vec();
    println!("{CALLS} calls of echo per tier, payload {} bytes, release build", payload.len());
    for name in ["trusted", "sandboxed"] {
        let input = CallInput {
            action: "echo".into(),
            payload: payload.clone(),
            caller: "bench".into(),
            request_id: "r".into(),
            origin: None,
        };
        for _ in 0..2_000 {
            rt.block_on(registry.call(name, input.clone())).unwrap();
        }
        let mut samples = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let t = Instant::now();
            rt.block_on(registry.call(name, input.clone())).unwrap();
            samples.push(t.elapsed().as_nanos());
        }
        samples.sort_unstable();
        println!(
            "{name:>9}: p50 {:.1} us, p90 {:.1} us, p99 {:.1} us",
            percentile(&samples, 0.50),
            percentile(&samples, 0.90),
            percentile(&samples, 0.99)
        );
    }
    let info = registry.info("sandboxed").unwrap();
    let sb = info.sandbox.unwrap();
    println!(
        "sandbox worker: start (spawn + load + handshake) {:.2} ms, RSS {:.1} MiB",
        sb["start_time_ms"].as_f64().unwrap(),
        sb["rss_bytes"].as_u64().unwrap() as f64 / 1048576.0
    );
    println!(
        "host RSS with both plugins loaded: {:.1} MiB",
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.to_string()))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
            .unwrap_or(0.0)
            / 1024.0
    );
    rt.block_on(registry.shutdown());
}
