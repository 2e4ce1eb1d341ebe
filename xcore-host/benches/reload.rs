//! Hot reload latency: the time from writing a new version of a plugin (manifest
//! renamed into place, as installs do) to its first answer, with the file watcher at
//! its default debounce of 200 ms. Prints the median and the worst of 15 reloads.
//!
//! `cargo bench -p xcore-host --bench reload` after a release build (`make bench`).

mod common;

use common::built_library;

use std::sync::Arc;
use std::time::{Duration, Instant};

use xcore_reload::watcher::{self, WatchOptions};
use xcore_runtime::metrics::Metrics;
use xcore_runtime::registry::RegistryOptions;
use xcore_runtime::{CallInput, PluginRegistry};
use xcore_services::ServiceParts;

fn manifest(greeting: &str) -> String {
    format!("name: echo\nversion: 0.1.0\napi_version: \"^0.1\"\nentry_point: libecho.so\nconfig: {{ greeting: {greeting} }}\n")
}

fn main() {
    let lib = built_library("xcore-plugin-echo");
    assert!(lib.is_file(), "{} missing: build the workspace in release first (make bench)", lib.display());
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(plugins.join("echo")).unwrap();
    std::fs::copy(&lib, plugins.join("echo/libecho.so")).unwrap();
    std::fs::write(plugins.join("echo/plugin.yaml"), manifest("g0")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (registry, _services) = PluginRegistry::new(
        RegistryOptions::new(plugins.clone(), dir.path().join("runtime")),
        Arc::new(Metrics::new()),
        xcore_runtime::host_work::runtime().expect("host-work runtime"),
        ServiceParts::default().wire(),
    );
    rt.block_on(registry.load_all());
    let debounce = Duration::from_millis(200);
    let _watch =
        watcher::start(registry.clone(), &plugins, WatchOptions { debounce, dev: false, audit: None })
            .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let greet = |registry: &Arc<PluginRegistry>| -> String {
        let input = CallInput {
            action: "greet".into(),
            payload: br#"{"name":"x"}"#.to_vec(),
            caller: "bench".into(),
            request_id: "r".into(),
            origin: None,
        };
        rt.block_on(registry.call("echo", input))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let mut samples = Vec::new();
    for i in 1..=15 {
        let word = format!("g{i}");
        let path = plugins.join("echo/plugin.yaml");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, manifest(&word)).unwrap();
        let written = Instant::now();
        std::fs::rename(&tmp, &path).unwrap();
        while !greet(&registry).contains(&word) {
            assert!(written.elapsed() < Duration::from_secs(5), "reload {i} never happened");
            std::thread::sleep(Duration::from_millis(1));
        }
        samples.push(written.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    samples.sort();
    println!(
        "write -> first answer of the new version, debounce {debounce:?}, {} reloads: median {:.0} ms, worst {:.0} ms",
        samples.len(),
        samples[samples.len() / 2].as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3
    );
}
