//! Criterion benchmarks of the trusted call path, without HTTP.
//!
//! - `direct_vtable_call`: one call through the abi_stable vtable, on this thread; the
//!   floor that any supervision adds to.
//! - `registry_call`: the full path the HTTP handler uses (registry lookup, state check,
//!   rate limit, hand-off to the instance's worker thread, deadline, reply).
//! - `registry_call_sandboxed`: the same, to the same library in a worker process
//!   (socket round trip, postcard frames).
//! - `plugin_load`: copy + dlopen + abi_stable checks + the plugin's constructor +
//!   worker thread start. Each iteration maps one more library copy (never unmapped).
//!
//! Needs the example plugins built in the same profile: `make bench` does it.

mod common;

use common::{built_library, profile_dir};

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use xcore_manifest as manifest;
use xcore_plugin_abi::abi_stable::sabi_trait::TD_Opaque;
use xcore_plugin_abi::abi_stable::std_types::{RSlice, RStr, RString};
use xcore_plugin_abi::ffi::{CallMeta, CallRequest, HostBox, InitArgs};
use xcore_runtime::host_services::HostServices;
use xcore_runtime::metrics::Metrics;
use xcore_runtime::registry::RegistryOptions;
use xcore_runtime::trusted::instance::{InstanceGauges, TrustedInstance};
use xcore_runtime::trusted::loader;
use xcore_runtime::{CallInput, PluginRegistry};
use xcore_services::ServiceParts;

/// A plugins folder holding `echo` with the freshly built library.
fn echo_plugins_dir() -> tempfile::TempDir {
    let lib = built_library("xcore-plugin-echo");
    let dir = tempfile::tempdir().expect("tempdir");
    let pdir = dir.path().join("plugins/echo");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(
        pdir.join("plugin.yaml"),
        "name: echo\nversion: 0.1.0\napi_version: \"^0.1\"\nentry_point: libecho.so\nresources:\n  rate_limit: { calls: 0, period_seconds: 1 }\n",
    )
    .unwrap();
    std::fs::copy(&lib, pdir.join("libecho.so")).unwrap();
    // The same library in the sandboxed tier.
    let sdir = dir.path().join("plugins/echo-sandboxed");
    std::fs::create_dir_all(&sdir).unwrap();
    std::fs::write(
        sdir.join("plugin.yaml"),
        "name: echo-sandboxed\nversion: 0.1.0\napi_version: \"^0.1\"\nexecution_mode: sandboxed\nentry_point: libecho.so\nresources:\n  rate_limit: { calls: 0, period_seconds: 1 }\n",
    )
    .unwrap();
    std::fs::copy(&lib, sdir.join("libecho.so")).unwrap();
    dir
}

fn benches(c: &mut Criterion) {
    let dir = echo_plugins_dir();
    let plugins = dir.path().join("plugins");
    let runtime_dir = dir.path().join("runtime");
    let m = manifest::load(&plugins.join("echo")).expect("manifest").manifest;
    let payload = br#"{"hello":"world"}"#.to_vec();

    // Direct call through the vtable.
    let lib = loader::load(&m, &runtime_dir, None).expect("load");
    let host = HostBox::from_value(HostServices::detached("echo"), TD_Opaque);
    let args = InitArgs { plugin_name: RString::from("echo"), config_json: RString::from("{}"), host };
    let plugin = lib.module.instantiate()(args).unwrap();
    c.bench_function("direct_vtable_call", |b| {
        b.iter(|| {
            let req = CallRequest {
                action: RStr::from_str("echo"),
                payload: RSlice::from_slice(&payload),
                meta: CallMeta {
                    caller: RStr::from_str("bench"),
                    request_id: RStr::from_str("r"),
                    deadline_unix_ms: 0,
                },
            };
            plugin.call(req)
        })
    });

    // The full supervised path.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (registry, _services) = PluginRegistry::new(
        RegistryOptions {
            worker_exe: profile_dir().join("xcore"),
            ..RegistryOptions::new(plugins.clone(), runtime_dir.clone())
        },
        Arc::new(Metrics::new()),
        xcore_runtime::host_work::runtime().expect("host-work runtime"),
        ServiceParts::default().wire(),
    );
    let report = rt.block_on(registry.load_all());
    assert_eq!(report.loaded, vec!["echo".to_string(), "echo-sandboxed".to_string()], "{:?}", report.failed);
    let input = CallInput {
        action: "echo".into(),
        payload: payload.clone(),
        caller: "bench".into(),
        request_id: "r".into(),
        origin: None,
    };
    c.bench_function("registry_call", |b| {
        b.iter(|| rt.block_on(registry.call("echo", input.clone())).expect("call"))
    });
    c.bench_function("registry_call_sandboxed", |b| {
        b.iter(|| rt.block_on(registry.call("echo-sandboxed", input.clone())).expect("call"))
    });

    // Load: copy, map, check, construct, start the worker thread.
    let mut group = c.benchmark_group("plugin_load");
    group.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(300));
    group.bench_function("load_and_start", |b| {
        b.iter(|| {
            let lib = loader::load(&m, &runtime_dir, None).expect("load");
            TrustedInstance::start(
                "echo",
                HostServices::detached("echo"),
                &m.config,
                lib,
                1,
                1,
                Arc::new(InstanceGauges::default()),
            )
            .expect("start")
        })
    });
    group.finish();
}

criterion_group!(call_path, benches);
criterion_main!(call_path);
