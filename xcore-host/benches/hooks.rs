//! Criterion benchmarks of the event system: one emit with 0, 1 and 10 in-host
//! handlers, and with one trusted plugin subscriber (the `echo` example's action,
//! through the registry's supervised call path). Throughput is 1 / time per emit.
//!
//! Needs the workspace built in release (`make bench`).

mod common;

use common::built_library;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use xcore_hooks::{handler, HandlerOptions, HandlerOutcome, HookManager};
use xcore_runtime::metrics::Metrics;
use xcore_runtime::registry::RegistryOptions;
use xcore_runtime::PluginRegistry;
use xcore_services::ServiceParts;

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let payload = json!({ "order": 42, "total": 99.5 });
    let mut group = c.benchmark_group("emit");
    for n in [0usize, 1, 10] {
        let hooks = HookManager::new();
        for i in 0..n {
            hooks
                .register(
                    "orders.*",
                    HandlerOptions::named(format!("h{i}")),
                    handler(|ctx| async move { HandlerOutcome::ok(ctx.payload().clone()) }),
                )
                .unwrap();
        }
        group.bench_function(format!("{n}_in_host_handlers"), |b| {
            b.iter(|| rt.block_on(hooks.emit("orders.created", payload.clone())))
        });
    }

    // One trusted plugin subscriber: echo's `echo` action.
    let lib = built_library("xcore-plugin-echo");
    assert!(lib.is_file(), "{} missing: build the workspace in release first (make bench)", lib.display());
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("plugins/echo");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::copy(&lib, pdir.join("libecho.so")).unwrap();
    std::fs::write(
        pdir.join("plugin.yaml"),
        "name: echo\nversion: 0.1.0\napi_version: \"^0.1\"\nentry_point: libecho.so\n\
         resources: { rate_limit: { calls: 0, period_seconds: 1 } }\n\
         hooks: [{ event: \"orders.*\", action: echo }]\n",
    )
    .unwrap();
    let (registry, _services) = PluginRegistry::new(
        RegistryOptions::new(dir.path().join("plugins"), dir.path().join("runtime")),
        Arc::new(Metrics::new()),
        xcore_runtime::host_work::runtime().expect("host-work runtime"),
        ServiceParts::default().wire(),
    );
    let report = rt.block_on(registry.load_all());
    assert_eq!(report.loaded, vec!["echo".to_string()], "{:?}", report.failed);
    let hooks = registry.hooks().clone();
    let check = rt.block_on(hooks.emit("orders.created", payload.clone()));
    assert!(check.failures().next().is_none(), "{check:?}");
    group.bench_function("1_trusted_plugin_subscriber", |b| {
        b.iter(|| rt.block_on(hooks.emit("orders.created", payload.clone())))
    });
    group.finish();
}

criterion_group!(hooks_benches, benches);
criterion_main!(hooks_benches);
