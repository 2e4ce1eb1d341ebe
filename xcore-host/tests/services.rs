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
