//! The event system through real plugins and HTTP: one example plugin's event reaching
//! another, failure isolation (panics, sandbox crashes), subscriptions across
//! unload/reload, runtime subscriptions and permissions, the re-entrancy bound, host
//! lifecycle events.

mod common;

use std::time::{Duration, Instant};

use common::{PluginSpec, Server, TOKEN};
use serde_json::{json, Value};

fn example(name: &'static str, lib: &'static str) -> PluginSpec {
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/{name}/plugin.yaml")),
    )
    .unwrap();
    PluginSpec::new(name, lib, &manifest)
}

fn misbehave(name: &str, extra: &str) -> PluginSpec {
    PluginSpec::with(name, "xcore-fixture-misbehave", extra)
}

fn emit(s: &Server, event: &str, payload: &str) -> Value {
    let r = s.post_with(&format!("/api/v1/events/{event}"), payload, Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn metric(s: &Server, event: &str, field: &str) -> u64 {
    let m = s.get("/api/v1/hooks/metrics").json();
    m["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == event)
        .map_or(0, |e| e[field].as_u64().unwrap())
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_event_flows_from_notes_to_echo() {
    let s = Server::start(&[example("echo", "xcore-plugin-echo"), example("notes", "xcore-plugin-notes")]);
    let r = s.request("POST", "/plugins/notes/notes", Some(r#"{"title":"evented"}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["notified"], 1, "echo handled notes.created: {}", r.body);
    wait_for("echo's log line", || s.output().contains("echoing event notes.created"));
    let hooks = s.get("/api/v1/hooks").json();
    let subs = hooks["subscriptions"].as_array().unwrap();
    assert!(
        subs.iter()
            .any(|h| h["pattern"] == "notes.created"
                && h["owner"].as_str().unwrap().starts_with("plugin:echo/")),
        "{hooks}"
    );
    assert_eq!(metric(&s, "notes.created", "handler_runs"), 1);
    assert_eq!(metric(&s, "notes.created", "errors"), 0);
    assert!(s.get("/metrics").body.contains(r#"xcore_hook_emissions_total{event="notes.created"} 1"#));
}

#[test]
fn a_failing_subscriber_never_stops_the_others() {
    let s = Server::start(&[
        misbehave(
            "crasher",
            "execution_mode: sandboxed\nhooks: [{ event: \"test.**\", action: segfault, priority: 5 }]",
        ),
        misbehave("panicker", "hooks: [{ event: \"test.*\", action: panic, priority: 10 }]"),
        misbehave("steady", "hooks: [{ event: \"test.*\", action: ok, priority: 20 }]"),
        misbehave("deep-only", "hooks: [{ event: \"test.*.*\", action: ok }]"),
    ]);
    let report = emit(&s, "test.x", r#"{"k":1}"#);
    let results = report["results"].as_array().unwrap();
    let handlers: Vec<_> = results.iter().map(|r| r["handler"].as_str().unwrap()).collect();
    assert_eq!(
        handlers,
        ["crasher/segfault", "panicker/panic", "steady/ok"],
        "priority order, one segment: {report}"
    );
    assert_eq!(results[0]["outcome"]["error"]["code"], "plugin_crashed", "{report}");
    assert_eq!(results[1]["outcome"]["error"]["code"], "plugin_panic", "{report}");
    assert_eq!(
        results[2]["outcome"]["ok"],
        json!({"ok": true, "payload": {"event": "test.x", "payload": {"k": 1}}}),
        "{report}"
    );
    // `**` crosses dots, `*` does not.
    let report = emit(&s, "test.a.b", "{}");
    let handlers: Vec<_> =
        report["results"].as_array().unwrap().iter().map(|r| r["handler"].clone()).collect();
    assert_eq!(handlers, [json!("crasher/segfault"), json!("deep-only/ok")], "{report}");
    // The emit route is an admin route.
    assert_eq!(s.post("/api/v1/events/test.x", "{}").status, 401);
    assert!(metric(&s, "test.x", "errors") >= 2);
}

#[test]
fn subscriptions_go_away_on_unload_and_come_back_on_load_and_reload() {
    let s = Server::start(&[misbehave("sub", "hooks: [{ event: orders.created, action: ok }]")]);
    let count = || {
        let h = s.get("/api/v1/hooks").json();
        h["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["owner"].as_str().unwrap().starts_with("plugin:sub/"))
            .count()
    };
    assert_eq!(count(), 1);
    assert_eq!(s.admin("/api/v1/plugins/sub/reload").status, 200);
    assert_eq!(count(), 1, "a reload keeps exactly one subscription");
    assert_eq!(emit(&s, "orders.created", "{}")["results"].as_array().unwrap().len(), 1);
    assert_eq!(s.admin("/api/v1/plugins/sub/unload").status, 200);
    assert_eq!(count(), 0);
    assert!(emit(&s, "orders.created", "{}")["results"].as_array().unwrap().is_empty());
    assert_eq!(s.admin("/api/v1/plugins/sub/load").status, 200);
    assert_eq!(count(), 1);
}

#[test]
fn runtime_subscriptions_and_emits_need_their_permissions() {
    let s = Server::start(&[
        // Two call slots: its own handler runs on the second while the first waits.
        misbehave(
            "allowed",
            "permissions: [\"events.subscribe:dyn.*\", \"events.emit:dyn.*\"]\nresources: { concurrency: 2 }",
        ),
        misbehave("denied", ""),
    ]);
    let r = s.call("allowed", "subscribe", r#"{"pattern":"dyn.x","action":"ok"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["id"].as_u64().unwrap();
    // A plugin's emit reaches the subscriber and returns its results.
    let r = s.call("allowed", "emit", r#"{"event":"dyn.x","payload":{"n":7}}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["results"][0]["outcome"]["ok"]["payload"]["payload"]["n"], 7, "{}", r.body);
    // Denials name the permission to add.
    let r = s.call("allowed", "emit", r#"{"event":"other.x"}"#);
    assert_eq!((r.status, r.code().as_str()), (403, "permission_denied"));
    assert!(r.json()["detail"].as_str().unwrap().contains("events.emit:other.x"), "{}", r.body);
    let r = s.call("denied", "subscribe", r#"{"pattern":"dyn.x","action":"ok"}"#);
    assert_eq!((r.status, r.code().as_str()), (403, "permission_denied"));
    assert!(r.json()["detail"].as_str().unwrap().contains("events.subscribe:dyn.x"), "{}", r.body);
    // Only the owner can unsubscribe.
    assert_eq!(s.call("denied", "unsubscribe", &format!("{{\"id\":{id}}}")).json()["removed"], false);
    assert_eq!(s.call("allowed", "unsubscribe", &format!("{{\"id\":{id}}}")).json()["removed"], true);
    assert!(emit(&s, "dyn.x", "{}")["results"].as_array().unwrap().is_empty());
}

#[test]
fn re_entrant_chains_end_with_a_clear_error_not_a_deadlock() {
    // A plugin whose handler re-emits the event it handles.
    let looper = |name: &str, concurrency: u32| {
        misbehave(
            name,
            &format!(
                "permissions: [events.emit]\nresources: {{ concurrency: {concurrency}, timeout_ms: 20000 }}\n\
                 hooks: [{{ event: \"{name}.go\", action: emit }}]"
            ),
        )
    };
    let s = Server::start(&[looper("single", 1), looper("wide", 16)]);
    // With one call slot, the handler's call would wait for the emitting call itself.
    let started = Instant::now();
    let r = s.call("single", "emit", r#"{"event":"single.go","payload":{}}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["results"][0]["outcome"]["error"]["code"], "reentrant_call", "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // With room to recurse, the depth bound stops it.
    let started = Instant::now();
    let r = s.call("wide", "emit", r#"{"event":"wide.go","payload":{}}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("depth_exceeded"), "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(s.call("wide", "ok", "{}").status, 200, "the plugin is still serving");
}

#[test]
fn host_lifecycle_events_reach_subscribers() {
    let mut s = Server::start(&[
        misbehave(
            "watcher",
            "hooks: [{ event: \"plugin.*\", action: ok }, { event: \"xcore.startup\", action: ok }, \
             { event: \"xcore.shutdown\", action: log }]",
        ),
        PluginSpec::echo(),
        misbehave("boxed", "execution_mode: sandboxed\nrestart: { backoff_initial_ms: 10 }"),
        misbehave("fragile", "execution_mode: sandboxed\nrestart: { max_restarts: 0 }"),
    ]);
    wait_for("xcore.startup", || metric(&s, "xcore.startup", "handler_runs") == 1);
    assert_eq!(s.admin("/api/v1/plugins/echo/reload").status, 200);
    wait_for("plugin.reloaded", || metric(&s, "plugin.reloaded", "handler_runs") == 1);
    assert_eq!(s.call("boxed", "segfault", "{}").status, 502);
    wait_for("plugin.crashed", || metric(&s, "plugin.crashed", "handler_runs") >= 1);
    wait_for("plugin.restarted", || metric(&s, "plugin.restarted", "handler_runs") >= 1);
    assert_eq!(s.admin("/api/v1/plugins/echo/unload").status, 200);
    wait_for("plugin.unloaded", || metric(&s, "plugin.unloaded", "handler_runs") == 1);
    // The watcher saw its own plugin.loaded at boot; the admin load is one more.
    let loaded = metric(&s, "plugin.loaded", "handler_runs");
    assert_eq!(s.admin("/api/v1/plugins/echo/load").status, 200);
    wait_for("plugin.loaded", || metric(&s, "plugin.loaded", "handler_runs") == loaded + 1);
    // No restart allowed: one crash and the plugin is failed.
    assert_eq!(s.call("fragile", "abort", "{}").status, 502);
    wait_for("plugin.failed", || metric(&s, "plugin.failed", "handler_runs") == 1);
    assert_eq!(s.info("fragile")["state"], "failed");
    assert_eq!(metric(&s, "plugin.unloaded", "errors"), 0);
    // xcore.shutdown runs while the plugins are still loaded: the watcher logs.
    assert!(s.terminate().success());
    assert!(s.output().contains("[watcher] a warning from the plugin"), "{}", s.output());
}

#[test]
fn a_bad_hook_pattern_fails_only_its_plugin() {
    let s = Server::start(&[
        misbehave("bad-hook", "hooks: [{ event: \"a..b\", action: ok }]"),
        PluginSpec::echo(),
    ]);
    let info = s.info("bad-hook");
    assert_eq!(info["state"], "failed");
    let err = info["last_error"].as_str().unwrap();
    assert!(err.contains("hooks[0].event") && err.contains("plugin.yaml"), "{err}");
    assert_eq!(s.info("echo")["state"], "ready");
}
