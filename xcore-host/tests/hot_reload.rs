//! Hot reload through the real binary: the plugins folder is watched, a new version
//! replaces the old one under load without a failed call, a touch does nothing, a bad
//! change keeps the old version serving, folders come and go, and `--dev` rebuilds a
//! crate whose sources change.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{PluginSpec, Server};

const WATCH: &str = "plugins:\n  watch: true\n  debounce_ms: 100\n";

/// Writes a file the way installs do: a temporary file, then a rename.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn echo_manifest(version: &str, greeting: &str) -> String {
    format!(
        "name: echo\nversion: {version}\napi_version: \"^0.1\"\nentry_point: libecho.so\n\
         resources: {{ rate_limit: {{ calls: 0, period_seconds: 1 }} }}\nconfig: {{ greeting: {greeting} }}\n"
    )
}

fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

#[test]
fn a_new_version_replaces_the_old_under_load_without_a_failed_call() {
    let s = Server::start_with(
        &[PluginSpec::new("echo", "xcore-plugin-echo", &echo_manifest("0.1.0", "hello"))],
        WATCH,
    );
    let (stop, calls) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (base, stop, calls) = (s.base.clone(), stop.clone(), calls.clone());
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let mut r = agent
                    .post(format!("{base}/api/v1/plugins/echo/call/greet"))
                    .send(r#"{"name":"x"}"#)
                    .unwrap();
                if r.status() != 200 {
                    failures.push(r.body_mut().read_to_string().unwrap_or_default());
                }
                calls.fetch_add(1, Ordering::SeqCst);
            }
            failures
        })
    };
    wait_until("the load to start", Duration::from_secs(5), || calls.load(Ordering::SeqCst) > 50);
    let manifest = s.plugins_dir().join("echo/plugin.yaml");
    replace(&manifest, &echo_manifest("0.2.0", "hi"));
    let written = Instant::now();
    wait_until("the new version to answer", Duration::from_secs(1), || {
        s.call("echo", "greet", r#"{"name":"x"}"#).json()["message"] == "hi, x!"
    });
    let swap = written.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let failures = load.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed calls during the reload: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let info = s.info("echo");
    assert_eq!((info["version"].as_str(), info["generation"].as_u64()), (Some("0.2.0"), Some(2)), "{info}");
    eprintln!(
        "new version answered {swap:?} after the write, {} calls meanwhile",
        calls.load(Ordering::SeqCst)
    );
}

#[test]
fn a_touch_does_nothing_and_a_bad_change_keeps_the_old_version() {
    let s = Server::start_with(
        &[PluginSpec::new("echo", "xcore-plugin-echo", &echo_manifest("0.1.0", "hello"))],
        WATCH,
    );
    let manifest = s.plugins_dir().join("echo/plugin.yaml");
    // Same content, new mtime and inode: nothing to reload.
    replace(&manifest, &echo_manifest("0.1.0", "hello"));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(s.info("echo")["generation"], 1);
    // A broken manifest: reported, the old version serves on.
    replace(&manifest, "name: echo\nversion: [oops\n");
    wait_until("the failed reload to be reported", Duration::from_secs(5), || {
        !s.info("echo")["last_error"].is_null()
    });
    let info = s.info("echo");
    assert_eq!((info["state"].as_str(), info["generation"].as_u64()), (Some("ready"), Some(1)), "{info}");
    assert!(info["last_error"].as_str().unwrap().contains("plugin.yaml"), "{info}");
    assert_eq!(s.call("echo", "greet", r#"{"name":"x"}"#).json()["message"], "hello, x!");
    // Fixed again: reloads.
    replace(&manifest, &echo_manifest("0.1.1", "hello"));
    wait_until("the fixed version", Duration::from_secs(5), || s.info("echo")["version"] == "0.1.1");
}

#[test]
fn plugin_folders_that_appear_load_and_those_that_vanish_unload() {
    let s = Server::start_with(&[PluginSpec::echo()], WATCH);
    // A new folder is written the safe way: prepared aside, then renamed in.
    let staging = s.dir.path().join("staging");
    common::write_plugins(&staging, &[PluginSpec::with("late", "xcore-fixture-misbehave", "")]);
    std::fs::rename(staging.join("late"), s.plugins_dir().join("late")).unwrap();
    wait_until("the new plugin", Duration::from_secs(5), || {
        let r = s.get("/api/v1/plugins/late");
        r.status == 200 && r.json()["state"] == "ready"
    });
    assert_eq!(s.call("late", "ok", "{}").status, 200);
    std::fs::remove_dir_all(s.plugins_dir().join("late")).unwrap();
    wait_until("the plugin to go", Duration::from_secs(5), || s.get("/api/v1/plugins/late").status == 404);
    assert_eq!(s.call("echo", "echo", "1").status, 200);
}

#[test]
fn dev_mode_rebuilds_a_crate_whose_sources_change() {
    // A plugin crate of its own (its own workspace), built into the shared target dir.
    let api = Path::new(env!("CARGO_MANIFEST_DIR")).join("../xcore-plugin-api/sdk").canonicalize().unwrap();
    let target = common::target_dir().parent().unwrap().to_path_buf();
    let s_dir = tempfile::tempdir().unwrap();
    let crate_dir = s_dir.path().join("devplug");
    std::fs::create_dir_all(crate_dir.join("src")).unwrap();
    std::fs::write(
        crate_dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"devplug\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nxcore-plugin-sdk = {{ path = {api:?} }}\n\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"), crate_dir.join("Cargo.lock"))
        .unwrap();
    let source = |word: &str| {
        format!(
            "use xcore_plugin_sdk::{{export_plugin, Context, Plugin, PluginError, Reply, Request}};\n\
             struct Dev;\nimpl Plugin for Dev {{\n    fn new(_: &Context) -> Result<Self, PluginError> {{ Ok(Dev) }}\n    \
             fn call(&self, _: &Context, _: Request<'_>) -> Result<Reply, PluginError> {{ Reply::json(&\"{word}\") }}\n}}\n\
             export_plugin!(Dev);\n"
        )
    };
    std::fs::write(crate_dir.join("src/lib.rs"), source("first")).unwrap();
    std::fs::write(crate_dir.join("plugin.yaml"), "name: devplug\nversion: 0.1.0\napi_version: \"^0.1\"\n")
        .unwrap();
    let built = std::process::Command::new(env!("CARGO"))
        .args(["build", "-q", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap();
    assert!(built.success());
    std::fs::copy(target.join("debug/libdevplug.so"), crate_dir.join("libdevplug.so")).unwrap();

    // Serve in dev mode with the crate inside the plugins folder.
    let s = Server::start_custom(
        |plugins| copy_dir(&crate_dir, &plugins.join("devplug")),
        "plugins:\n  watch: true\n  debounce_ms: 100\n",
        &[("CARGO_TARGET_DIR", target.to_str().unwrap())],
        &["--dev"],
    );
    assert_eq!(s.call("devplug", "any", "null").json(), "first");
    // A broken edit: the build fails, the old version keeps serving.
    std::fs::write(s.plugins_dir().join("devplug/src/lib.rs"), "this is not rust").unwrap();
    wait_until("the build error in the log", Duration::from_secs(120), || {
        s.output().contains("build failed")
    });
    assert_eq!(s.call("devplug", "any", "null").json(), "first");
    // A good edit: rebuilt and reloaded.
    std::fs::write(s.plugins_dir().join("devplug/src/lib.rs"), source("second")).unwrap();
    wait_until("the rebuilt version", Duration::from_secs(120), || {
        s.call("devplug", "any", "null").json() == "second"
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}
