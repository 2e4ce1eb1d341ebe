//! Host services offered to plugins, through real plugins and HTTP: plugin-to-plugin
//! calls under the `call` permission.

mod common;

use std::time::{Duration, Instant};

use common::{PluginSpec, Server};

fn misbehave(name: &str, extra: &str) -> PluginSpec {
    PluginSpec::with(name, "xcore-fixture-misbehave", extra)
}

#[test]
fn a_plugin_calls_another_through_the_supervised_path_with_its_own_identity() {
    let s = Server::start(&[
        misbehave("caller", "permissions: [\"call:callee\", \"call:boxed\", \"call:caller\"]"),
        misbehave("callee", ""),
        misbehave("boxed", "execution_mode: sandboxed"),
        misbehave("stranger", ""),
    ]);
    let r = s.call("caller", "call", r#"{"plugin":"callee","action":"whoami"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["caller"], "plugin:caller");
    // Across tiers.
    let r = s.call("caller", "call", r#"{"plugin":"boxed","action":"ok","payload":{"n":1}}"#);
    assert_eq!(r.json()["payload"]["n"], 1, "{}", r.body);
    // The callee's own error comes back with its code and status.
    let r = s.call("caller", "call", r#"{"plugin":"callee","action":"teapot"}"#);
    assert_eq!((r.status, r.code().as_str()), (418, "teapot"), "{}", r.body);
    // Deny by default, naming the permission to add.
    let r = s.call("stranger", "call", r#"{"plugin":"callee","action":"whoami"}"#);
    assert_eq!((r.status, r.code().as_str()), (403, "permission_denied"));
    assert!(r.json()["detail"].as_str().unwrap().contains("call:callee"), "{}", r.body);
    // Calling itself with its only call slot busy would wait for itself: refused at once.
    let started = Instant::now();
    let r = s.call("caller", "call", r#"{"plugin":"caller","action":"ok"}"#);
    assert_eq!((r.status, r.code().as_str()), (409, "reentrant_call"), "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(s.info("callee")["counters"]["calls"], 2, "calls counted on the callee");
}

fn cache_round_trip(s: &Server) {
    let r = s.call("cacher", "cache_set", r#"{"key":"a","value":{"x":1}}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.call("cacher", "cache_get", r#"{"key":"a"}"#).json()["value"], serde_json::json!({"x": 1}));
    assert!(s.call("cacher", "cache_get", r#"{"key":"missing"}"#).json()["value"].is_null());
    // Namespaces: another plugin does not see it.
    assert!(s.call("other", "cache_get", r#"{"key":"a"}"#).json()["value"].is_null());
    s.call("other", "cache_set", r#"{"key":"a","value":"theirs"}"#);
    // A short TTL expires; get_or_set computes once.
    s.call("cacher", "cache_set", r#"{"key":"brief","value":1,"ttl_seconds":1}"#);
    std::thread::sleep(Duration::from_millis(1300));
    assert!(s.call("cacher", "cache_get", r#"{"key":"brief"}"#).json()["value"].is_null());
    assert_eq!(s.call("cacher", "cache_count", "{}").json()["n"], 42);
    assert_eq!(s.call("cacher", "cache_get", r#"{"key":"counter"}"#).json()["value"], 42);
    // clear removes only the plugin's own keys.
    assert!(s.call("cacher", "cache_clear", "{}").json()["removed"].as_u64().unwrap() >= 2);
    assert!(s.call("cacher", "cache_get", r#"{"key":"a"}"#).json()["value"].is_null());
    assert_eq!(s.call("other", "cache_get", r#"{"key":"a"}"#).json()["value"], "theirs");
}

#[test]
fn the_cache_is_per_plugin_and_needs_its_permission() {
    let s = Server::start(&[
        misbehave("cacher", "permissions: [cache]"),
        misbehave("other", "permissions: [cache]\nexecution_mode: sandboxed"),
        misbehave("nocache", ""),
    ]);
    cache_round_trip(&s);
    let r = s.call("nocache", "cache_get", r#"{"key":"a"}"#);
    assert_eq!((r.status, r.code().as_str()), (403, "permission_denied"), "{}", r.body);
    assert!(r.body.contains("permission 'cache'") && r.body.contains("plugins.grants.nocache"), "{}", r.body);
}

#[test]
fn the_cache_on_redis_never_touches_other_keys() {
    let Ok(url) = std::env::var("XCORE_TEST_REDIS_URL") else {
        eprintln!("skipped: XCORE_TEST_REDIS_URL not set");
        return;
    };
    // A key of somebody else's, in the same Redis database.
    let foreign = format!("not-xcore:{}", std::process::id());
    let redis = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli").arg("-u").arg(&url).args(args).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
    };
    redis(&["SET", &foreign, "keep"]);
    let s = Server::start_full(
        &[misbehave("cacher", "permissions: [cache]"), misbehave("other", "permissions: [cache]")],
        "cache:\n  backend: redis\n  on_unreachable: refuse\n",
        &[("REDIS_URL", url.as_str())],
    );
    assert!(s.output().contains("cache: redis"), "{}", s.output());
    cache_round_trip(&s);
    assert_eq!(redis(&["GET", &foreign]), "keep", "clear must never flush other keys");
    redis(&["DEL", &foreign]);
    s.call("other", "cache_clear", "{}");
}
