//! Discovery, manifests, dependency order, contract checks and admin operations,
//! through the real binary.

mod common;

use common::{PluginSpec, Server};

fn misbehave_lib(folder: &str, manifest: &str) -> PluginSpec {
    PluginSpec::new(folder, "xcore-fixture-misbehave", manifest)
}

fn manifest(name: &str, extra: &str) -> String {
    format!("name: {name}\nversion: 0.1.0\napi_version: \"^0.1\"\nentry_point: lib{name}.so\n{extra}\n")
}

#[test]
fn bad_manifests_fail_only_their_own_plugin_with_file_and_key() {
    let bad_types = [
        ("bad-timeout", "resources: { timeout_ms: fast }", "resources.timeout_ms"),
        ("bad-concurrency", "resources: { concurrency: many }", "resources.concurrency"),
        ("bad-memory", "resources: { max_memory_mb: [1] }", "resources.max_memory_mb"),
        ("bad-disk", "resources: { max_disk_mb: lots }", "resources.max_disk_mb"),
        ("bad-calls", "resources: { rate_limit: { calls: x } }", "resources.rate_limit.calls"),
        (
            "bad-period",
            "resources: { rate_limit: { period_seconds: soon } }",
            "resources.rate_limit.period_seconds",
        ),
        ("bad-restarts", "restart: { max_restarts: often }", "restart.max_restarts"),
        ("bad-within", "restart: { within_seconds: \"1m\" }", "restart.within_seconds"),
        ("bad-backoff", "restart: { backoff_initial_ms: -5 }", "restart.backoff_initial_ms"),
        ("bad-backoff-max", "restart: { backoff_max_ms: {} }", "restart.backoff_max_ms"),
        ("bad-mode", "execution_mode: turbo", "execution_mode"),
    ];
    let mut plugins: Vec<PluginSpec> =
        bad_types.iter().map(|(n, extra, _)| misbehave_lib(n, &manifest(n, extra))).collect();
    plugins.push(misbehave_lib("folder-name", &manifest("other-name", "")));
    plugins.push(misbehave_lib("cycle-a", &manifest("cycle-a", "requires: [cycle-b]")));
    plugins.push(misbehave_lib("cycle-b", &manifest("cycle-b", "requires: [cycle-a]")));
    plugins.push(misbehave_lib("needs-ghost", &manifest("needs-ghost", "requires: [ghost]")));
    plugins.push(misbehave_lib("broken-yaml", "name: [unclosed\n"));
    plugins.push(misbehave_lib("unknown-key", &manifest("unknown-key", "colour: blue")));
    plugins.push(PluginSpec::echo());
    plugins.push(misbehave_lib(
        "needs-echo",
        &manifest("needs-echo", "requires: [{ name: echo, version: \"^0.1\" }]"),
    ));
    let s = Server::start(&plugins);

    for (name, _, key) in bad_types {
        let info = s.info(name);
        assert_eq!(info["state"], "failed", "{name}: {info}");
        let err = info["last_error"].as_str().unwrap();
        assert!(err.contains(&format!("{name}/plugin.yaml")), "{name}: {err}");
        assert!(err.contains(key), "{name}: {err}");
    }
    let err = s.info("folder-name")["last_error"].as_str().unwrap().to_string();
    assert!(
        err.contains("other-name") && err.contains("folder-name") && err.contains("plugin.yaml"),
        "{err}"
    );
    for name in ["cycle-a", "cycle-b"] {
        let err = s.info(name)["last_error"].as_str().unwrap().to_string();
        assert!(err.contains("cycle"), "{err}");
    }
    assert!(s.info("needs-ghost")["last_error"].as_str().unwrap().contains("ghost"));
    assert!(s.info("broken-yaml")["last_error"].as_str().unwrap().contains("broken-yaml/plugin.yaml"));
    // An unknown key only warns.
    assert_eq!(s.info("unknown-key")["state"], "ready");
    assert!(s.output().contains("colour"), "the warning names the key");
    // Good plugins, including one that depends on another, load.
    assert_eq!(s.info("echo")["state"], "ready");
    assert_eq!(s.info("needs-echo")["state"], "ready");
    assert_eq!(s.call("echo", "echo", "1").status, 200);
    // A plugin others depend on cannot be unloaded from under them.
    let r = s.admin("/api/v1/plugins/echo/unload");
    assert_eq!((r.status, r.code().as_str()), (409, "required_by_others"));
    assert!(r.json()["detail"].as_str().unwrap().contains("needs-echo"), "{}", r.body);
    assert_eq!(s.admin("/api/v1/plugins/needs-echo/unload").status, 200);
    assert_eq!(s.admin("/api/v1/plugins/echo/unload").status, 200);
    let r = s.call("bad-mode", "ok", "{}");
    assert_eq!((r.status, r.code().as_str()), (503, "unavailable"));
}

#[test]
fn incompatible_contracts_are_refused_with_both_versions() {
    let s = Server::start(&[
        PluginSpec::new("layout", "xcore-fixture-abi-layout-mismatch", &manifest("layout", "")),
        PluginSpec::new("future", "xcore-fixture-api-version-mismatch", &manifest("future", "")),
        PluginSpec::new(
            "wants-nine",
            "xcore-plugin-echo",
            &manifest("wants-nine", "").replace("^0.1", "^9.0"),
        ),
        PluginSpec::echo(),
    ]);
    let err = |n: &str| {
        let info = s.info(n);
        assert_eq!(info["state"], "failed", "{info}");
        info["last_error"].as_str().unwrap().to_string()
    };
    let layout = err("layout");
    assert!(
        layout.contains("'layout'") && layout.contains(HOST_ABI) && layout.contains("rebuild"),
        "{layout}"
    );
    let future = err("future");
    assert!(future.contains("0.9.0") && future.contains(HOST_ABI) && future.contains("rebuild"), "{future}");
    let nine = err("wants-nine");
    assert!(nine.contains("^9.0") && nine.contains(HOST_ABI) && nine.contains("api_version"), "{nine}");
    assert_eq!(s.info("echo")["state"], "ready");
}

/// The ABI this host is built on (xcore-plugin-api/abi/Cargo.toml).
const HOST_ABI: &str = "0.1.1";

/// A library built on ABI 0.1.0 (a frozen copy of that ABI, before `describe` was
/// appended to the root module) loads in both tiers, answers calls and reaches a host
/// service through the old vtable.
#[test]
fn a_plugin_built_on_abi_0_1_0_loads_and_serves_in_both_tiers() {
    let s = Server::start(&[
        PluginSpec::new("legacy", "xcore-fixture-legacy-abi", &manifest("legacy", "")),
        PluginSpec::new(
            "legacy-sandboxed",
            "xcore-fixture-legacy-abi",
            &manifest("legacy-sandboxed", "execution_mode: sandboxed"),
        ),
    ]);
    for name in ["legacy", "legacy-sandboxed"] {
        let info = s.info(name);
        assert_eq!(info["state"], "ready", "{name}: {info}");
        assert_eq!(info["compiled_api_version"], "0.1.0", "{name}: {info}");
        let r = s.call(name, "echo", r#"{"n": 1}"#);
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        assert_eq!(r.json(), serde_json::json!({"echo": {"n": 1}, "abi": "0.1.0"}), "{name}");
        let r = s.call(name, "host_info", "{}");
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        assert_eq!(r.json()["plugin"], name, "{name}: {}", r.body);
    }
}

#[test]
fn admin_operations_unload_load_reload_and_rescan() {
    let s = Server::start(&[PluginSpec::echo()]);
    let r = s.admin("/api/v1/plugins/echo/unload");
    assert_eq!((r.status, r.json()["state"].as_str()), (200, Some("unloaded")));
    let r = s.call("echo", "echo", "1");
    assert_eq!((r.status, r.code().as_str()), (503, "unavailable"));
    let r = s.admin("/api/v1/plugins/echo/reload");
    assert_eq!((r.status, r.code().as_str()), (409, "conflict"));
    let r = s.admin("/api/v1/plugins/echo/load");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["generation"], 2);
    assert_eq!(s.call("echo", "echo", "1").status, 200);
    let r = s.admin("/api/v1/plugins/ghost/load");
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_plugin"));

    // A reload that fails (broken manifest) leaves the old version serving.
    let yaml = s.plugins_dir().join("echo/plugin.yaml");
    let good = std::fs::read_to_string(&yaml).unwrap();
    std::fs::write(&yaml, good.replace("version: 0.1.0", "version: not-semver")).unwrap();
    let r = s.admin("/api/v1/plugins/echo/reload");
    assert_eq!((r.status, r.code().as_str()), (422, "invalid_manifest"));
    assert_eq!(s.info("echo")["state"], "ready");
    assert!(s.info("echo")["last_error"].as_str().unwrap().contains("version"));
    assert_eq!(s.call("echo", "echo", "1").status, 200);
    std::fs::write(&yaml, good).unwrap();

    // Rescan picks up a new folder and drops a removed one.
    common::write_plugins(&s.plugins_dir(), &[PluginSpec::notes()]);
    let r = s.admin("/api/v1/plugins/rescan");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["loaded"], serde_json::json!(["notes"]));
    assert_eq!(s.call("notes", "list", "").json()["count"], 0);
    std::fs::remove_dir_all(s.plugins_dir().join("notes")).unwrap();
    let r = s.admin("/api/v1/plugins/rescan");
    assert_eq!(r.json()["removed"], serde_json::json!(["notes"]));
    assert_eq!(s.get("/api/v1/plugins/notes").status, 404);
    assert!(!s.get("/metrics").body.contains(r#"plugin="notes""#), "series of a removed plugin are dropped");
}

#[test]
fn each_kind_of_load_failure_has_its_own_code_on_both_tiers() {
    let sandboxed = "execution_mode: sandboxed";
    let mut no_library = PluginSpec::new("nolib", "xcore-plugin-echo", &manifest("nolib", ""));
    no_library.library = None;
    let s = Server::start(&[
        PluginSpec::new("layout", "xcore-fixture-abi-layout-mismatch", &manifest("layout", "")),
        PluginSpec::new(
            "layout-box",
            "xcore-fixture-abi-layout-mismatch",
            &manifest("layout-box", sandboxed),
        ),
        PluginSpec::new("init", "xcore-fixture-misbehave", &manifest("init", "config: {fail_init: true}")),
        PluginSpec::new(
            "init-box",
            "xcore-fixture-misbehave",
            &manifest("init-box", &format!("{sandboxed}\nconfig: {{fail_init: true}}")),
        ),
        no_library,
        PluginSpec::new(
            "needs-ghost",
            "xcore-plugin-echo",
            &manifest("needs-ghost", "requires: [{name: ghost, version: \"^1\"}]"),
        ),
    ]);
    // Reset loads a failed plugin again and answers why it failed, by kind.
    for (name, status, code, needle) in [
        ("layout", 422, "abi_mismatch", "rebuild"),
        ("layout-box", 422, "abi_mismatch", "rebuild"),
        ("init", 422, "init_failed", "init refused by config"),
        ("init-box", 422, "init_failed", "init refused by config"),
        ("nolib", 422, "library_unavailable", "libnolib.so"),
        ("needs-ghost", 409, "requirement_missing", "ghost"),
    ] {
        let r = s.admin(&format!("/api/v1/plugins/{name}/reset"));
        assert_eq!((r.status, r.code().as_str()), (status, code), "{name}: {}", r.body);
        assert!(r.json()["detail"].as_str().unwrap_or_default().contains(needle), "{name}: {}", r.body);
        assert_eq!(s.info(name)["state"], "failed", "{name}");
    }
}
