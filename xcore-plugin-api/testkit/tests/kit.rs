//! The test kit's own tests: a probe plugin that uses every host service, started in the
//! kit from manifests written for each test.

// `#[plugin]` converts a handler's error with `PluginError::from(e)` (xcore-plugin-macros),
// which clippy calls useless when the handler already returns `PluginError`; echo's
// `src/lib.rs` meets the same lint.
#![allow(clippy::useless_conversion)]

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use xcore_plugin_sdk::{
    plugin, Context, Event, Json, Path, Plugin, PluginError, Query, Request, Subscription,
};
use xcore_plugin_testkit::{Failure, KitError, Level, TestHost};

/// Uses every host service; `host` passes any service call through as it is.
pub struct Probe;

#[derive(Deserialize, JsonSchema)]
pub struct Raw {
    service: String,
    #[serde(default)]
    payload: Value,
}

#[derive(Deserialize, JsonSchema)]
pub struct Key {
    key: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct Listen {
    pattern: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct Ask {
    plugin: String,
    action: String,
    #[serde(default)]
    payload: Value,
}

#[derive(Deserialize, JsonSchema)]
pub struct ItemQuery {
    #[serde(default)]
    full: bool,
}

#[plugin]
impl Plugin for Probe {
    fn new(ctx: &Context) -> Result<Self, PluginError> {
        ctx.info("probe ready");
        Ok(Probe)
    }

    /// Any host call: its reply or its refusal, as data.
    #[action]
    fn host(&self, ctx: &Context, Json(raw): Json<Raw>) -> Value {
        match ctx.call_host(&raw.service, &raw.payload) {
            Ok(bytes) => json!({ "ok": serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null) }),
            Err(e) => json!({ "error": { "code": e.code, "status": e.status, "message": e.message } }),
        }
    }

    /// Counts visits of a key.
    #[action(example(input = r#"{"key": "home"}"#, output = r#"{"visits": 1}"#))]
    fn visit(&self, ctx: &Context, Json(k): Json<Key>) -> Result<Value, PluginError> {
        log::info!("visiting {}", k.key);
        Ok(json!({ "visits": ctx.kv_incr(&k.key, 1)? }))
    }

    /// Caches a value and reads it back.
    #[action]
    fn remember(&self, ctx: &Context, Json(v): Json<Value>) -> Result<Value, PluginError> {
        ctx.cache_set("last", &v, None)?;
        Ok(json!({ "cached": ctx.cache_get::<Value>("last")? }))
    }

    /// SQL in its namespace.
    #[action]
    fn sql(&self, ctx: &Context, Json(text): Json<String>) -> Result<Value, PluginError> {
        ctx.db_execute("default", "CREATE TABLE IF NOT EXISTS probe_items (text TEXT NOT NULL)", &[])?;
        ctx.db_execute("default", "INSERT INTO probe_items (text) VALUES (?)", &[json!(text)])?;
        Ok(json!({ "rows": ctx.db_query("default", "SELECT text FROM probe_items ORDER BY rowid", &[])? }))
    }

    /// Emits and says how many handled it.
    #[action]
    fn announce(&self, ctx: &Context, Json(payload): Json<Value>) -> Result<Value, PluginError> {
        let report = ctx.emit("probe.said", &payload)?;
        Ok(json!({ "handled": report.handled(), "failures": report.failures().count(),
                   "codes": report.failures().map(|f| serde_json::to_value(&f.outcome).unwrap_or_default()).collect::<Vec<_>>() }))
    }

    /// Subscribes `heard` to a pattern.
    #[action]
    fn listen(&self, ctx: &Context, Json(l): Json<Listen>) -> Result<Value, PluginError> {
        Ok(json!({ "id": ctx.subscribe(&l.pattern, "heard", Subscription::default())? }))
    }

    /// Counts the events it hears, and what it heard last.
    #[on("orders.*")]
    fn heard(&self, ctx: &Context, ev: Event<Value>) -> Result<Value, PluginError> {
        ctx.kv_set("last_event", &json!({ "event": ev.event, "payload": ev.payload }), None)?;
        Ok(json!({ "heard": ctx.kv_incr("heard", 1)? }))
    }

    /// Adds its cron job.
    #[action]
    fn plan(&self, ctx: &Context) -> Result<Value, PluginError> {
        Ok(json!({ "id": ctx.schedule("tick", "0 0 * * * *", "tick", &json!({ "n": 1 }))? }))
    }

    /// What the job runs.
    #[action]
    fn tick(&self, ctx: &Context, req: Request<'_>, Json(p): Json<Value>) -> Result<(), PluginError> {
        ctx.kv_set("tick", &json!({ "caller": req.meta().caller, "payload": p }), None)?;
        Ok(())
    }

    /// Calls another plugin.
    #[action]
    fn ask(&self, ctx: &Context, Json(a): Json<Ask>) -> Result<Value, PluginError> {
        ctx.call(&a.plugin, &a.action, &a.payload)
    }

    /// Writes a file in its data folder.
    #[action]
    fn file(&self, ctx: &Context) -> Result<Value, PluginError> {
        let path = ctx.data_dir()?.join("note.txt");
        std::fs::write(&path, "hello")?;
        Ok(json!({ "path": path }))
    }

    /// One item, by route.
    #[route(GET, "/items/{id}")]
    fn item(&self, req: Request<'_>, Path(id): Path<u64>, Query(q): Query<ItemQuery>) -> Value {
        json!({ "id": id, "full": q.full, "caller": req.meta().caller })
    }
}

/// Declares an example its code does not keep.
pub struct Liar;

#[plugin]
impl Plugin for Liar {
    fn new(_ctx: &Context) -> Result<Self, PluginError> {
        Ok(Liar)
    }

    /// Doubles a number (or says it does).
    #[action(
        example(name = "two", input = "2", output = "4"),
        example(name = "three", input = "3", output = r#"{"doubled": 6}"#)
    )]
    fn double(&self, Json(n): Json<i64>) -> Json<i64> {
        Json(n * 2)
    }
}

/// A plugin folder `name` in a temporary directory with this manifest body.
fn folder(name: &str, yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = format!("name: {name}\nversion: 0.1.0\napi_version: \"^0.1\"\n{yaml}\n");
    std::fs::write(dir.join("plugin.yaml"), manifest).unwrap();
    (tmp, dir)
}

const ALL: &str = "permissions: [kv, cache, \"db:default\", \"events.emit:probe.*\", \"events.subscribe:orders.*\", \"events.subscribe:probe.*\", scheduler, \"call:users\"]\nroutes:\n  - { method: GET, path: \"/items/{id}\", action: item }";

fn probe(yaml: &str) -> (tempfile::TempDir, TestHost) {
    let (tmp, dir) = folder("probe", yaml);
    (tmp, TestHost::from_dir(dir).unwrap())
}

fn host(p: &xcore_plugin_testkit::TestPlugin, service: &str, payload: Value) -> Value {
    p.call("host", json!({ "service": service, "payload": payload })).unwrap()
}

#[test]
fn refusals_are_the_hosts_own_word_for_word() {
    // Asked for nothing: every service that needs a permission refuses, naming it.
    let (_t, kit) = probe("");
    let p = kit.start::<Probe>().unwrap();
    let grant = |perm: &str| xcore_manifest::permissions::where_to_grant("probe", perm);
    let cases = [
        (
            "kv.get",
            json!({"key": "k"}),
            format!("plugin 'probe' may not use the key-value store: {}", grant("kv")),
        ),
        (
            "cache.get",
            json!({"key": "k"}),
            format!("plugin 'probe' may not use the cache: {}", grant("cache")),
        ),
        (
            "scheduler.remove",
            json!({"id": "x"}),
            format!("plugin 'probe' may not schedule jobs: {}", grant("scheduler")),
        ),
        (
            "db.query",
            json!({"database": "default", "sql": "SELECT 1"}),
            format!("plugin 'probe' may not query database 'default': {}", grant("db:default:read")),
        ),
        (
            "events.emit",
            json!({"event": "probe.x", "payload": 1}),
            format!(
                "plugin 'probe' may not use events.emit on 'probe.x': {} (or 'events.emit' for everything)",
                grant("events.emit:probe.x")
            ),
        ),
        (
            "plugins.call",
            json!({"plugin": "users", "action": "get"}),
            format!(
                "plugin 'probe' may not use call on 'users': {} (or 'call' for everything)",
                grant("call:users")
            ),
        ),
    ];
    for (service, payload, message) in cases {
        let reply = host(&p, service, payload);
        assert_eq!(
            reply["error"],
            json!({ "code": "permission_denied", "status": 403, "message": message }),
            "{service}"
        );
    }
    // The host's own names are refused whatever the permissions.
    let reply = host(&p, "events.emit", json!({"event": "plugin.loaded"}));
    assert_eq!(reply["error"]["code"], "reserved_event");
    let reply = host(&p, "telepathy", json!({}));
    assert_eq!(reply["error"]["code"], "unsupported");
    assert_eq!(reply["error"]["status"], 501);
    // Every refusal was recorded with the host's answer.
    let refused = p.recorded();
    let refused: Vec<&str> = refused.refused().into_iter().map(|(s, _)| s).collect();
    assert_eq!(refused.len(), 8, "{refused:?}");
}

#[test]
fn only_what_is_asked_for_and_granted_is_in_effect() {
    // Granted by the operator but not asked for: not in effect, as on a host.
    let (_t, kit) = probe("");
    let p = kit.grant("kv").start::<Probe>().unwrap();
    assert!(p.effective_permissions().is_empty());
    assert_eq!(p.call_err("visit", json!({"key": "a"})).code, "permission_denied");
    // Asked for, not granted.
    let (_t, kit) = probe("permissions: [kv]");
    let p = kit.revoke("kv").start::<Probe>().unwrap();
    assert_eq!(p.call_err("visit", json!({"key": "a"})).status, 403);
    // Asked for wider than granted: the narrower grant is in effect.
    let (_t, kit) = probe("permissions: [\"events.subscribe:**\"]");
    let kit = kit.grants(["events.subscribe:orders.*"]);
    assert_eq!(kit.effective_permissions(), vec!["events.subscribe:orders.*".to_string()]);
    let p = kit.start::<Probe>().unwrap();
    assert!(p.call("listen", json!({"pattern": "orders.eu"})).is_ok());
    assert_eq!(p.call_err("listen", json!({"pattern": "users.*"})).code, "permission_denied");
    // And by default what the manifest asks for is granted.
    let (_t, kit) = probe("permissions: [kv]");
    assert_eq!(
        kit.start::<Probe>().unwrap().call("visit", json!({"key": "a"})).unwrap(),
        json!({"visits": 1})
    );
}

#[test]
fn the_key_value_store_and_the_cache_are_the_hosts() {
    let (_t, kit) = probe(ALL);
    let p = kit.start::<Probe>().unwrap();
    p.clear_records();
    for n in 1..=3 {
        assert_eq!(p.call("visit", json!({"key": "home"})).unwrap(), json!({"visits": n}));
    }
    assert_eq!(p.kv("home"), Some(json!(3)));
    let incr = p.recorded();
    let incr = incr.calls_to("kv.incr");
    assert_eq!(incr.len(), 3);
    assert_eq!(incr[2].payload, json!({"key": "home", "by": 1}));
    assert_eq!(incr[2].result, Ok(json!({"value": 3})));
    // kv.cas with the host's shapes: a mismatch says what is there.
    let miss = host(&p, "kv.cas", json!({"key": "home", "expected": 1, "new": 9}));
    assert_eq!(miss["ok"], json!({"swapped": false, "found": true, "current": 3}));
    let hit = host(&p, "kv.cas", json!({"key": "home", "expected": 3, "new": 9}));
    assert_eq!(hit["ok"], json!({"swapped": true}));
    // A key that is not an integer: the host's code.
    host(&p, "kv.set", json!({"key": "word", "value": "x"}));
    let e = p.call_err("visit", json!({"key": "word"}));
    assert_eq!((e.code.as_str(), e.status), ("kv_not_integer", 409));
    // The cache.
    assert_eq!(p.call("remember", json!({"a": 1})).unwrap(), json!({"cached": {"a": 1}}));
    let zero = host(&p, "cache.set", json!({"key": "k", "value": 1, "ttl_ms": 0}));
    assert_eq!(zero["error"]["code"], "invalid_payload");
    // A `log::info!` of the plugin during a call is recorded, with its target.
    assert!(p.logs().iter().any(|l| l.message == "visiting home"
        && l.level == Level::Info
        && l.target.as_deref() == Some("kit")));
}

#[test]
fn the_kv_quota_is_the_hosts() {
    let (_t, kit) = probe("permissions: [kv]");
    let p = kit.kv_max_keys(2).start::<Probe>().unwrap();
    p.call("visit", json!({"key": "a"})).unwrap();
    p.call("visit", json!({"key": "b"})).unwrap();
    let e = p.call_err("visit", json!({"key": "c"}));
    assert_eq!((e.code.as_str(), e.status), ("kv_quota", 507), "{e}");
}

#[test]
fn sql_runs_in_the_plugins_namespace_on_sqlite() {
    let (_t, kit) = probe(ALL);
    let p = kit.start::<Probe>().unwrap();
    p.call("sql", json!("one")).unwrap();
    let rows = p.call("sql", json!("two")).unwrap();
    assert_eq!(rows, json!({"rows": [{"text": "one"}, {"text": "two"}]}));
    // The host's tables are out of reach, as on a host.
    let r = host(&p, "db.query", json!({"database": "default", "sql": "SELECT * FROM plugin_kv"}));
    assert_eq!(r["error"]["code"], "permission_denied", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("'plugin_kv'"), "{r}");
    // No such database.
    let r = host(&p, "db.query", json!({"database": "reports", "sql": "SELECT 1"}));
    assert_eq!(r["error"]["code"], "permission_denied");
    let (_t, kit) = probe("permissions: [\"db:reports:read\"]");
    let p = kit.database("reports").start::<Probe>().unwrap();
    let r = host(&p, "db.query", json!({"database": "reports", "sql": "SELECT 1 AS one"}));
    assert_eq!(r["ok"], json!({"rows": [{"one": 1}]}));
    let r = host(&p, "db.execute", json!({"database": "reports", "sql": "CREATE TABLE t (x)"}));
    assert_eq!(r["error"]["code"], "permission_denied");
}

#[test]
fn events_reach_on_handlers_and_subscriptions_and_emits_are_recorded() {
    let (_t, kit) = probe(&format!("{ALL}\nresources: {{ concurrency: 2 }}"));
    let p = kit.start::<Probe>().unwrap();
    // The #[on("orders.*")] handler, subscribed from the action table.
    assert_eq!(p.subscriptions(), vec![("orders.*".to_string(), "heard".to_string())]);
    let report = p.emit("orders.created", json!({"id": 7})).unwrap();
    assert_eq!(report.handled(), 1, "{report:?}");
    assert_eq!(p.kv("last_event"), Some(json!({"event": "orders.created", "payload": {"id": 7}})));
    // ctx.subscribe, then an emit of its own that its subscription handles.
    let id = p.call("listen", json!({"pattern": "probe.*"})).unwrap()["id"].clone();
    assert_eq!(p.call("announce", json!({"n": 1})).unwrap()["handled"], 1);
    assert_eq!(p.kv("heard"), Some(json!(2)));
    // A detached emit answers at once and is recorded as such.
    let queued = host(&p, "events.emit", json!({"event": "probe.later", "payload": 2, "wait": false}));
    assert_eq!(queued["ok"], json!({"queued": true}));
    let emitted = p.emitted();
    assert_eq!(emitted.len(), 2);
    assert_eq!(
        (emitted[0].event.as_str(), &emitted[0].payload, emitted[0].wait),
        ("probe.said", &json!({"n": 1}), true)
    );
    assert_eq!((emitted[1].event.as_str(), emitted[1].wait), ("probe.later", false));
    // Unsubscribed, only the #[on] handler is left.
    assert_eq!(host(&p, "events.unsubscribe", json!({"id": id}))["ok"], json!({"removed": true}));
    assert_eq!(p.subscriptions(), vec![("orders.*".to_string(), "heard".to_string())]);
    assert_eq!(host(&p, "events.unsubscribe", json!({"id": id}))["ok"], json!({"removed": false}));
}

#[test]
fn a_handler_call_that_would_wait_for_itself_is_reentrant_call() {
    // concurrency 1 (the default): its own emit's handler cannot get a call slot.
    let (_t, kit) = probe(ALL);
    let p = kit.start::<Probe>().unwrap();
    p.call("listen", json!({"pattern": "probe.*"})).unwrap();
    let r = p.call("announce", json!({})).unwrap();
    assert_eq!(r["handled"], 0, "{r}");
    assert_eq!(r["codes"][0]["error"]["code"], "reentrant_call", "{r}");
}

#[test]
fn jobs_run_when_the_test_says() {
    let (_t, kit) = probe(ALL);
    let p = kit.start::<Probe>().unwrap();
    assert_eq!(p.call("plan", json!(null)).unwrap(), json!({"id": "probe.tick"}));
    let jobs = p.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].id.as_str(), jobs[0].cron.as_str(), jobs[0].action.as_str()),
        ("tick", "0 0 * * * *", "tick")
    );
    assert_eq!(p.kv("tick"), None, "a job never fires on its own in the kit");
    p.run_job("tick").unwrap();
    assert_eq!(p.kv("tick"), Some(json!({"caller": "scheduler", "payload": {"n": 1}})));
    match p.run_job("nope") {
        Err(KitError::Job { id, .. }) => assert_eq!(id, "nope"),
        other => panic!("{other:?}"),
    }
    // Without the permission.
    let (_t, kit) = probe("");
    let e = kit.start::<Probe>().unwrap().call_err("plan", json!(null));
    assert_eq!((e.code.as_str(), e.status), ("permission_denied", 403));
}

#[test]
fn calls_to_other_plugins_reach_the_stubs() {
    let (_t, kit) = probe(ALL);
    let p = kit
        .reply("users", "get", json!({"name": "Ada"}))
        .stub("users", "fail", |payload| Err(Failure::new("gone", 410, format!("no user {payload}"))))
        .start::<Probe>()
        .unwrap();
    let ask =
        |action: &str| p.call("ask", json!({"plugin": "users", "action": action, "payload": {"id": 1}}));
    assert_eq!(ask("get").unwrap(), json!({"name": "Ada"}));
    // The callee's error travels back with its code and status.
    assert_eq!(ask("fail").unwrap_err(), Failure::new("gone", 410, r#"no user {"id":1}"#));
    assert_eq!(ask("other").unwrap_err().code, "unknown_action");
    let calls = p.plugin_calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(
        (calls[0].plugin.as_str(), calls[0].action.as_str(), &calls[0].payload),
        ("users", "get", &json!({"id": 1}))
    );
    // A plugin nobody stubbed is not there; one it may not call is refused first.
    let (_t, kit) = probe("permissions: [call]");
    let p = kit.start::<Probe>().unwrap();
    let e = p.call_err("ask", json!({"plugin": "nobody", "action": "x"}));
    assert_eq!(
        (e.code.as_str(), e.status, e.message.as_str()),
        ("unknown_plugin", 404, "no plugin named 'nobody'")
    );
}

#[test]
fn routes_are_matched_as_the_http_api_matches_them() {
    let (_t, kit) = probe(ALL);
    let p = kit.start::<Probe>().unwrap();
    assert_eq!(
        p.route("GET", "/items/42?full=true", json!(null)).unwrap(),
        json!({"id": 42, "full": true, "caller": "http"})
    );
    let e = p.route("GET", "/items/42/more", json!(null)).unwrap_err();
    assert_eq!((e.code.as_str(), e.status), ("not_found", 404));
    assert_eq!(e.message, "plugin 'probe' declares no route GET /items/42/more");
    let e = p.route("GET", "/items/%C3%28", json!(null)).unwrap_err();
    assert_eq!((e.code.as_str(), e.status), ("invalid_path", 400));
    // The parameter does not parse as the handler's type: the SDK's 400.
    assert_eq!(p.route("GET", "/items/x", json!(null)).unwrap_err().code, "invalid_payload");
    assert_eq!(p.route("POST", "/items/1", json!(null)).unwrap_err().status, 404);
}

#[test]
fn host_info_and_the_data_folder() {
    let (_t, kit) = probe("");
    let p = kit.start::<Probe>().unwrap();
    let info = host(&p, "host.info", json!({}));
    assert_eq!(info["ok"]["plugin"], "probe");
    let written = p.call("file", json!(null)).unwrap();
    let path = PathBuf::from(written["path"].as_str().unwrap());
    assert_eq!(path, std::fs::canonicalize(p.data_dir()).unwrap().join("note.txt"));
    assert_eq!(std::fs::read_to_string(path).unwrap(), "hello");
    assert!(p.logs().iter().any(|l| l.message == "probe ready" && l.target.is_none()));
}

#[test]
fn examples_pass_and_a_wrong_one_fails_with_a_diff() {
    let (_t, kit) = probe("permissions: [kv]");
    assert_eq!(kit.start::<Probe>().unwrap().run_examples().unwrap(), 1);
    let (_t, dir) = folder("liar", "");
    let p = TestHost::from_dir(dir).unwrap().start::<Liar>().unwrap();
    let failed = p.run_examples().unwrap_err();
    assert_eq!(failed.ran, 2);
    assert_eq!(failed.failed.len(), 1);
    let text = format!("{failed:?}");
    assert!(text.contains("1 of 2 example(s) failed"), "{text}");
    assert!(text.contains("action 'double', example \"three\""), "{text}");
    assert!(text.contains(r#"$: expected {"doubled":6}, got 6"#), "{text}");
}

#[test]
fn a_manifest_naming_an_action_the_plugin_lacks_is_refused_as_by_the_host() {
    let (_t, kit) = probe("hooks:\n  - { event: a.b, action: nowhere }");
    let e = kit.start::<Probe>().unwrap_err();
    assert!(matches!(e, KitError::Contract(_)), "{e}");
    let text = e.to_string();
    assert!(text.contains("nowhere") && text.contains("hooks[0]"), "{text}");
}

/// Fails in its constructor.
pub struct Refuses;

impl Plugin for Refuses {
    fn new(_ctx: &Context) -> Result<Self, PluginError> {
        Err(PluginError::new("no_config", "needs a config"))
    }
    fn call(&self, _: &Context, req: Request<'_>) -> Result<xcore_plugin_sdk::Reply, PluginError> {
        Err(PluginError::unknown_action(req.action()))
    }
}

#[test]
fn a_failing_constructor_is_an_error_naming_its_code() {
    let (_t, dir) = folder("refuses", "");
    let e = TestHost::from_dir(dir).unwrap().start::<Refuses>().unwrap_err();
    assert_eq!(e.to_string(), "plugin 'refuses' failed to start: no_config: needs a config");
}
