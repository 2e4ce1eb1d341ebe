//! Who grants what, through the real server: a plugin's effective permissions are what
//! its manifest asks for and the operator allows (`plugins.grants.<name>` in
//! xcore.yaml, or a trusted signature over the manifest); subscriptions are checked by
//! pattern containment; the watcher's loads, reloads and unloads are audited.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{PluginSpec, Server};
use serde_json::{json, Value};

fn misbehave(name: &str, extra: &str) -> PluginSpec {
    PluginSpec::with(name, "xcore-fixture-misbehave", extra)
}

fn xcore(args: &[&str], cwd: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_xcore")).args(args).current_dir(cwd).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn detail(r: &common::Reply) -> String {
    r.json()["detail"].as_str().unwrap_or_default().to_string()
}

/// Handlers that an emit of `event` by `emitter` reached.
fn reached(s: &Server, emitter: &str, event: &str) -> usize {
    let r = s.call(emitter, "emit", &json!({ "event": event }).to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["results"].as_array().map(Vec::len).unwrap_or_else(|| panic!("no results: {}", r.body))
}

#[test]
fn only_what_the_operator_grants_is_in_effect() {
    let s = Server::start_with(
        &[
            misbehave("granted", "permissions: [cache, \"events.emit:orders.**\"]"),
            misbehave("ungranted", "permissions: [cache, \"events.subscribe:orders.*\"]"),
            misbehave("partial", "permissions: [cache, \"events.subscribe:**\"]"),
        ],
        "plugins:\n  watch: false\n  grants:\n    granted: [cache, \"events.emit:orders.**\"]\n    partial: \
         [kv, \"events.subscribe:orders.*\"]\n",
    );
    // Granted in xcore.yaml: works.
    let r = s.call("granted", "cache_set", r#"{"key":"a","value":1}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.call("granted", "cache_get", r#"{"key":"a"}"#).json()["value"], 1);
    // Asked for in the manifest, not granted: 403 naming the permission and where to grant it.
    let r = s.call("ungranted", "cache_set", r#"{"key":"a","value":2}"#);
    assert_eq!((r.status, r.code().as_str()), (403, "permission_denied"), "{}", r.body);
    let d = detail(&r);
    assert!(d.contains("'cache'") && d.contains("plugins.grants.ungranted") && d.contains("sign"), "{d}");
    let r = s.call("ungranted", "subscribe", r#"{"pattern":"orders.created","action":"ok"}"#);
    assert_eq!((r.status, r.code().as_str()), (403, "permission_denied"), "{}", r.body);
    assert!(detail(&r).contains("events.subscribe:orders.created"), "{}", r.body);
    // Nothing changed: no subscription was made, the other plugin's key is untouched.
    assert_eq!(reached(&s, "granted", "orders.created"), 0);
    assert_eq!(s.call("granted", "cache_get", r#"{"key":"a"}"#).json()["value"], 1);
    // A grant narrower than the request: the grant is in effect, and only it.
    let r = s.call("partial", "subscribe", r#"{"pattern":"orders.*","action":"ok"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call("partial", "subscribe", r#"{"pattern":"**","action":"ok"}"#);
    assert_eq!((r.status, r.code().as_str()), (403, "permission_denied"), "{}", r.body);
    assert_eq!(reached(&s, "granted", "orders.created"), 1, "only the granted subscription exists");
    assert_eq!(reached(&s, "granted", "orders.a.b"), 0);
    // `kv` granted but not asked for is not in effect either; the JSON view says why.
    let p = &s.info("partial")["permissions"];
    assert_eq!(p["requested"], json!(["cache", "events.subscribe:**"]), "{p}");
    assert_eq!(p["effective"], json!(["events.subscribe:orders.*"]), "{p}");
    assert_eq!(p["denied"], json!(["cache", "events.subscribe:**"]), "{p}");
    assert!(p["granted"].as_array().unwrap().iter().all(|g| g["source"] == "config"), "{p}");
    let p = &s.info("granted")["permissions"];
    assert_eq!(p["effective"], json!(["cache", "events.emit:orders.**"]), "{p}");
    assert_eq!(p["granted"][0], json!({"permission": "cache", "source": "config"}), "{p}");
    assert_eq!(s.info("ungranted")["permissions"]["effective"], json!([]));
}

#[test]
fn a_widened_subscription_is_refused() {
    let s = Server::start_with(
        &[
            misbehave("narrow", "permissions: [\"events.subscribe:orders.*\", \"events.emit:**\"]"),
            misbehave("single", "permissions: [\"events.subscribe:*\"]"),
            misbehave("affix", "permissions: [\"events.subscribe:orders.order*\"]"),
        ],
        "",
    );
    for (plugin, pattern) in [
        ("narrow", "orders.**"),
        ("narrow", "**"),
        ("narrow", "*.created"),
        ("single", "**"),
        ("affix", "orders.*"),
    ] {
        let r = s.call(plugin, "subscribe", &json!({ "pattern": pattern, "action": "ok" }).to_string());
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "permission_denied"),
            "{plugin} {pattern}: {}",
            r.body
        );
        assert!(detail(&r).contains(&format!("events.subscribe:{pattern}")), "{}", r.body);
    }
    // Nothing was subscribed by the refusals.
    assert_eq!(reached(&s, "narrow", "orders.a.b"), 0);
    assert_eq!(reached(&s, "narrow", "users.created"), 0);
    // What the permission contains is allowed.
    for (plugin, pattern) in [("narrow", "orders.*"), ("single", "x"), ("affix", "orders.order_*")] {
        let r = s.call(plugin, "subscribe", &json!({ "pattern": pattern, "action": "ok" }).to_string());
        assert_eq!(r.status, 200, "{plugin} {pattern}: {}", r.body);
    }
    assert_eq!(reached(&s, "narrow", "orders.order_created"), 2, "narrow's and affix's");
    assert_eq!(reached(&s, "narrow", "orders.a.b"), 0);
}

const SIGNED: &str = "security:\n  require_signatures: trusted\n  trusted_keys_dir: keys\n";

#[test]
fn a_trusted_signature_grants_the_signed_manifest() {
    let s = Server::start_custom(
        |plugins| {
            let root = plugins.parent().unwrap();
            xcore(&["keys", "generate", "--dir", "keys", "--name", "ci", "--bits", "2048"], root);
            common::write_plugins(
                plugins,
                &[
                    misbehave("signed", "permissions: [cache]"),
                    misbehave("unsigned", "permissions: [cache]\nexecution_mode: sandboxed"),
                ],
            );
            xcore(&["plugin", "sign", "plugins/signed", "--key", "keys/ci.key"], root);
        },
        // No grants at all: only the signature grants.
        &format!("{SIGNED}plugins:\n  watch: false\n  grants: {{}}\n"),
        &[],
        &[],
    );
    let r = s.call("signed", "cache_set", r#"{"key":"a","value":1}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let p = &s.info("signed")["permissions"];
    assert_eq!(p["granted"], json!([{"permission": "cache", "source": "signature"}]), "{p}");
    assert_eq!(p["effective"], json!(["cache"]), "{p}");
    // The policy lets an unsigned sandboxed plugin load, with nothing granted.
    assert_eq!(s.info("unsigned")["state"], "ready");
    let r = s.call("unsigned", "cache_get", r#"{"key":"a"}"#);
    assert_eq!((r.status, r.code().as_str()), (403, "permission_denied"), "{}", r.body);
    assert!(detail(&r).contains("plugins.grants.unsigned"), "{}", r.body);
}

fn audit(s: &Server) -> Vec<Value> {
    let r = s.request_admin("GET", "/api/v1/audit?limit=1000");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["entries"].as_array().cloned().unwrap_or_default()
}

fn wait_audit(s: &Server, action: &str, target: &str, outcome: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = audit(s).into_iter().find(|e| {
            e["actor"] == "watcher"
                && e["action"] == action
                && e["target"] == target
                && e["outcome"] == outcome
        });
        if let Some(e) = found {
            return e;
        }
        assert!(Instant::now() < deadline, "no watcher entry {action} {target} {outcome}: {:?}", audit(s));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a plugin under `_staging` (the watcher ignores `_` folders) and renames it in,
/// so that the watcher sees it whole.
fn drop_in(plugins: &Path, spec: PluginSpec) {
    let staging = plugins.join("_staging");
    let name = spec.folder.clone();
    common::write_plugins(&staging, &[spec]);
    std::fs::rename(staging.join(&name), plugins.join(&name)).unwrap();
}

#[test]
fn the_watcher_obeys_the_signature_policy_and_is_audited() {
    // The default policy, said explicitly: trusted-tier plugins must be signed.
    let s = Server::start_with(
        &[],
        "security:\n  require_signatures: trusted\nplugins:\n  watch: true\n  debounce_ms: 100\n",
    );
    let plugins = s.plugins_dir();
    drop_in(&plugins, PluginSpec::with("dropped", "xcore-plugin-echo", ""));
    let e = wait_audit(&s, "load", "dropped", "error");
    assert!(e["detail"].as_str().unwrap_or_default().contains("signature"), "{e}");
    assert_ne!(s.info("dropped")["state"], "ready");
    assert_ne!(s.call("dropped", "echo", "1").status, 200, "an unsigned trusted plugin does not serve");
    // A sandboxed one may load unsigned: load, reload and unload are each audited.
    drop_in(&plugins, misbehave("boxed", "execution_mode: sandboxed"));
    wait_audit(&s, "load", "boxed", "ok");
    assert_eq!(s.info("boxed")["state"], "ready");
    let yaml = plugins.join("boxed/plugin.yaml");
    let manifest = std::fs::read_to_string(&yaml).unwrap().replace("version: 0.1.0", "version: 0.1.1");
    let tmp = plugins.join("boxed/plugin.yaml.tmp");
    std::fs::write(&tmp, manifest).unwrap();
    std::fs::rename(&tmp, &yaml).unwrap();
    wait_audit(&s, "reload", "boxed", "ok");
    std::fs::remove_dir_all(plugins.join("boxed")).unwrap();
    wait_audit(&s, "unload", "boxed", "ok");
}
