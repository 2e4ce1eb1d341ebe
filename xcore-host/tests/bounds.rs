//! Every bound on what a plugin can grow, through the real path: the `xcore` binary, the
//! `greedy` fixture (a real `.so`), real HTTP. For each bound: the plugin is refused with
//! an error that names the limit and where to raise it, the refusal shows at /metrics, and
//! the host keeps serving.

mod common;

use std::time::{Duration, Instant};

use common::{PluginSpec, Server, TOKEN};
use serde_json::{json, Value};

const MIB: u64 = 1024 * 1024;

/// The greedy fixture under `name`, with its manifest's extra lines.
fn greedy(name: &str, extra: &str) -> PluginSpec {
    greedy_with(name, extra, 8)
}

/// [`greedy`] with `concurrency` worker threads.
fn greedy_with(name: &str, extra: &str, concurrency: u32) -> PluginSpec {
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plugins/greedy/plugin.yaml"),
    )
    .expect("greedy manifest")
    .replace("name: greedy", &format!("name: {name}"))
    .replace("entry_point: libgreedy.so", &format!("entry_point: lib{name}.so"))
    .replace("concurrency: 8", &format!("concurrency: {concurrency}"));
    PluginSpec::new(name, "xcore-fixture-greedy", &format!("{manifest}{extra}"))
}

/// Calls `action` of `plugin` and returns its JSON reply (asserting 200).
fn act(s: &Server, plugin: &str, action: &str, body: Value) -> Value {
    let r = s.call(plugin, action, &body.to_string());
    assert_eq!(r.status, 200, "{plugin}/{action}: {}\n{}", r.body, s.output());
    r.json()
}

/// The value of one series of /metrics (`name{labels}` exactly as exposed), if present.
fn metric(s: &Server, series: &str) -> Option<f64> {
    let text = s.get("/metrics").body;
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The first refusal of a `repeat` reply: (ok count, code, status, message).
fn refusal(reply: &Value) -> (u64, String, u64, String) {
    let e = &reply["error"];
    assert!(e.is_object(), "expected a refusal: {reply}");
    (
        reply["ok"].as_u64().unwrap(),
        e["code"].as_str().unwrap().to_string(),
        e["status"].as_u64().unwrap(),
        e["message"].as_str().unwrap().to_string(),
    )
}

/// The host still answers: health, and a plain call of the plugin.
fn assert_unharmed(s: &Server, plugin: &str) {
    assert_eq!(s.get("/health").status, 200);
    assert_eq!(act(s, plugin, "noop", json!({}))["ok"], true);
    assert_eq!(s.info(plugin)["state"], "ready", "{}", s.info(plugin));
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn subscriptions_per_plugin_and_handlers_in_all_are_bounded() {
    let s = Server::start_with(
        &[greedy("greedy", ""), greedy("greedy2", "")],
        "events:\n  max_subscriptions_per_plugin: 10\n  max_handlers: 15\n",
    );
    // Its manifest hook counts: 9 more, then the 11th subscription is refused.
    let r = act(&s, "greedy", "subscribe_many", json!({ "n": 50 }));
    let (ok, code, status, message) = refusal(&r);
    assert_eq!((ok, code.as_str(), status), (9, "too_many_subscriptions", 429), "{message}");
    assert!(
        message.contains("events.max_subscriptions_per_plugin") && message.contains("xcore.yaml"),
        "{message}"
    );
    // greedy2 has a budget of its own, but the host's total runs out first.
    let r = act(&s, "greedy2", "subscribe_many", json!({ "n": 50 }));
    let (ok, code, status, message) = refusal(&r);
    assert_eq!((code.as_str(), status), ("too_many_handlers", 429), "{message}");
    assert!(ok < 9, "{r}");
    assert!(message.contains("events.max_handlers"), "{message}");
    assert_eq!(metric(&s, "xcore_hook_handlers"), Some(15.0));
    assert_eq!(metric(&s, "xcore_hook_refusals_total{limit=\"subscriptions_per_plugin\"}"), Some(1.0));
    assert_eq!(metric(&s, "xcore_hook_refusals_total{limit=\"handlers\"}"), Some(1.0));
    assert_unharmed(&s, "greedy");
    // Unloading a plugin frees its subscriptions.
    assert_eq!(s.admin("/api/v1/plugins/greedy/unload").status, 200);
    wait_for("the subscriptions to go", Duration::from_secs(10), || {
        metric(&s, "xcore_hook_handlers") == Some(5.0)
    });
    let r = act(&s, "greedy2", "subscribe_many", json!({ "n": 3 }));
    assert_eq!(r["ok"], 3, "{r}");
}

#[test]
fn manifest_hooks_count_against_the_subscription_bound() {
    // Two more hooks appended to the manifest's list: three in all, for a limit of two.
    let extra = "  - { event: greedy.a, action: noop }\n  - { event: greedy.b, action: noop }\n";
    let s = Server::start_with(&[greedy("greedy", extra)], "events:\n  max_subscriptions_per_plugin: 2\n");
    assert_eq!(metric(&s, "xcore_hook_handlers"), Some(2.0));
    assert_eq!(metric(&s, "xcore_hook_refusals_total{limit=\"subscriptions_per_plugin\"}"), Some(1.0));
    assert!(s.output().contains("hook on 'greedy.b'"), "{}", s.output());
    assert!(s.output().contains("events.max_subscriptions_per_plugin"), "{}", s.output());
    let r = act(&s, "greedy", "subscribe_many", json!({ "n": 1 }));
    assert_eq!(refusal(&r).1, "too_many_subscriptions");
    assert_unharmed(&s, "greedy");
}

#[test]
fn jobs_per_plugin_are_bounded() {
    let s = Server::start_with(&[greedy("greedy", "")], "scheduler:\n  max_jobs_per_plugin: 5\n");
    let r = act(&s, "greedy", "schedule_many", json!({ "n": 20 }));
    let (ok, code, status, message) = refusal(&r);
    assert_eq!((ok, code.as_str(), status), (5, "too_many_jobs", 429), "{message}");
    assert!(message.contains("scheduler.max_jobs_per_plugin") && message.contains("xcore.yaml"), "{message}");
    assert_eq!(metric(&s, "xcore_limit_refusals_total{limit=\"jobs_per_plugin\"}"), Some(1.0));
    assert_eq!(metric(&s, "xcore_scheduler_jobs"), Some(5.0));
    // Replacing a job is not one more; removing makes room.
    assert_eq!(act(&s, "greedy", "schedule_many", json!({ "n": 5 }))["ok"], 5);
    assert_eq!(act(&s, "greedy", "unschedule_many", json!({ "n": 2 }))["ok"], 2);
    assert_eq!(metric(&s, "xcore_scheduler_jobs"), Some(3.0));
    assert_eq!(act(&s, "greedy", "schedule_many", json!({ "n": 5 }))["ok"], 5);
    assert_unharmed(&s, "greedy");
}

#[test]
fn detached_emits_in_flight_are_bounded_per_plugin_and_in_all() {
    // Each greedy.slow emit runs both plugins' manifest hooks, which sleep 1.5 s each.
    let s = Server::start_with(
        &[greedy("greedy", ""), greedy("greedy2", "")],
        "events:\n  max_detached_emits_per_plugin: 5\n  max_detached_emits: 8\n",
    );
    let r = act(&s, "greedy", "emit_detached_many", json!({ "n": 50 }));
    let (ok, code, status, message) = refusal(&r);
    assert_eq!((ok, code.as_str(), status), (5, "too_many_emits", 429), "{message}");
    assert!(message.contains("events.max_detached_emits_per_plugin"), "{message}");
    let r = act(&s, "greedy2", "emit_detached_many", json!({ "n": 50 }));
    let (ok, code, _, message) = refusal(&r);
    assert_eq!(code, "too_many_emits", "{message}");
    assert!(ok <= 3, "{r}");
    assert!(message.contains("events.max_detached_emits "), "{message}");
    assert!(metric(&s, "xcore_hook_detached_emits_in_flight").unwrap() <= 8.0);
    assert_eq!(metric(&s, "xcore_hook_refusals_total{limit=\"detached_emits_per_plugin\"}"), Some(1.0));
    assert!(metric(&s, "xcore_hook_refusals_total{limit=\"detached_emits\"}").unwrap() >= 1.0);
    // They drain, and then there is room again.
    wait_for("the detached emits to end", Duration::from_secs(60), || {
        metric(&s, "xcore_hook_detached_emits_in_flight") == Some(0.0)
    });
    assert_eq!(act(&s, "greedy", "emit_detached_many", json!({ "n": 5 }))["ok"], 5);
    assert_unharmed(&s, "greedy");
}

#[test]
fn host_event_names_are_reserved_for_the_host() {
    let s = Server::start(&[greedy("greedy", "")]);
    for (action, event) in [
        ("emit", "xcore.startup"),
        ("emit", "plugin.crashed"),
        ("emit_detached", "plugin.loaded"),
        ("emit_detached", "xcore"),
    ] {
        let r = act(&s, "greedy", action, json!({ "event": event }));
        let e = &r["error"];
        assert_eq!(
            (e["code"].as_str(), e["status"].as_u64()),
            (Some("reserved_event"), Some(403)),
            "{event}: {r}"
        );
        assert!(e["message"].as_str().unwrap().contains("host's own"), "{r}");
    }
    // Names that merely start alike are the plugin's to use.
    for event in ["xcorefans.joined", "plugins.listed", "greedy.xcore"] {
        let r = act(&s, "greedy", "emit", json!({ "event": event }));
        assert!(r["error"].is_null(), "{event}: {r}");
    }
    assert_eq!(metric(&s, "xcore_limit_refusals_total{limit=\"reserved_event\"}"), Some(4.0));
    // The host still emits them, and an admin may (to test subscribers).
    assert_eq!(metric(&s, "xcore_hook_emissions_total{event=\"xcore.startup\"}"), Some(1.0));
    let r = s.post_with("/api/v1/events/plugin.crashed", "{\"plugin\":\"nobody\"}", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_unharmed(&s, "greedy");
}

#[test]
fn plugin_chosen_error_codes_are_folded_into_other() {
    let s = Server::start(&[greedy("greedy", "")]);
    for i in 0..45 {
        let r = s.call("greedy", "fail", &json!({ "code": format!("code_{i}") }).to_string());
        assert_eq!(r.status, 400);
        assert_eq!(r.code(), format!("code_{i}"), "the client still sees the plugin's code");
    }
    let text = s.get("/metrics").body;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("xcore_plugin_errors_total{") && l.contains("plugin=\"greedy\""))
        .collect();
    // 20 codes of its own, then everything else under `other`.
    assert_eq!(series.len(), 21, "{series:#?}");
    assert_eq!(metric(&s, "xcore_plugin_errors_total{code=\"other\",plugin=\"greedy\"}"), Some(25.0));
    assert_unharmed(&s, "greedy");
}

#[test]
fn kv_keys_per_plugin_have_a_quota() {
    let s = Server::start_with(
        &[greedy("greedy", ""), greedy("greedy2", "")],
        "kv:\n  max_keys_per_plugin: 20\n",
    );
    let r = act(&s, "greedy", "kv_fill", json!({ "n": 50 }));
    let (ok, code, status, message) = refusal(&r);
    assert_eq!((ok, code.as_str(), status), (20, "kv_quota", 507), "{message}");
    assert!(message.contains("kv.max_keys_per_plugin") && message.contains("xcore.yaml"), "{message}");
    assert_eq!(metric(&s, "xcore_limit_refusals_total{limit=\"kv_keys_per_plugin\"}"), Some(1.0));
    // Overwrites are fine, a delete makes room, and another plugin has its own quota.
    assert_eq!(act(&s, "greedy", "kv_fill", json!({ "n": 20 }))["ok"], 20);
    assert_eq!(act(&s, "greedy", "kv_delete", json!({ "key": "key3" }))["ok"], true);
    assert_eq!(act(&s, "greedy", "kv_fill", json!({ "n": 1, "start": 100 }))["ok"], 1);
    assert_eq!(refusal(&act(&s, "greedy", "kv_fill", json!({ "n": 1, "start": 101 }))).1, "kv_quota");
    assert_eq!(act(&s, "greedy2", "kv_fill", json!({ "n": 20 }))["ok"], 20);
    assert_unharmed(&s, "greedy");
}

/// Resident memory of `pid`, from /proc/<pid>/status.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// RSS of the host at each step of storing values of 6 MiB in a cache of 32 MiB: before,
/// after 40 values, after 80.
fn cache_fill_rss(extra_manifest: &str, env: &[(&str, &str)]) -> (u64, u64, u64) {
    let max = 32 * MIB;
    let s = Server::start_full(
        &[greedy_with("greedy", extra_manifest, 1)],
        &format!("cache:\n  max_bytes: {max}\n  max_value_bytes: {}\n", 8 * MIB),
        env,
    );
    // Warm up (first calls map code, grow pools), then measure.
    act(&s, "greedy", "cache_fill", json!({ "n": 2, "bytes": 6 * MIB, "prefix": "warm" }));
    let before = rss_bytes(s.pid());
    let mut after = Vec::new();
    // Ten values per call, so that no call nears its deadline on a loaded machine.
    for round in ["a", "b"] {
        for batch in 0..4 {
            let prefix = format!("{round}{batch}-");
            let r = act(&s, "greedy", "cache_fill", json!({ "n": 10, "bytes": 6 * MIB, "prefix": prefix }));
            assert_eq!(r["ok"], 10, "{r}");
        }
        after.push(rss_bytes(s.pid()));
    }
    println!(
        "{extra_manifest:?} {env:?}: RSS before {} MiB, after 40 values {} MiB, after 80 values {} MiB",
        before / MIB,
        after[0] / MIB,
        after[1] / MIB
    );
    let bytes = metric(&s, "xcore_cache_bytes").expect("xcore_cache_bytes");
    assert!(bytes > 0.0 && bytes <= max as f64, "xcore_cache_bytes {bytes}");
    assert_eq!(metric(&s, "xcore_cache_max_bytes"), Some(max as f64));
    let present =
        act(&s, "greedy", "cache_count", json!({ "n": 10, "prefix": "b3-" }))["present"].as_u64().unwrap();
    assert!(present <= 5, "{present} of the last 10 values of 6 MiB in a 32 MiB cache");
    // One value over cache.max_value_bytes is refused with a clear error.
    let r = act(&s, "greedy", "cache_fill", json!({ "n": 1, "bytes": 9 * MIB, "prefix": "huge" }));
    let (ok, code, status, message) = refusal(&r);
    assert_eq!((ok, code.as_str(), status), (0, "value_too_large", 413), "{message}");
    assert!(message.contains("cache.max_value_bytes"), "{message}");
    assert_eq!(metric(&s, "xcore_limit_refusals_total{limit=\"cache_value_bytes\"}"), Some(1.0));
    assert_unharmed(&s, "greedy");
    (before, after[0], after[1])
}

/// Growth past the first 40 values, then in all, must stay under these. glibc keeps the
/// freed 6 MiB buffers of each call (its dynamic mmap threshold rises to their size), so
/// the total includes that; what must not happen is growth with every value.
fn assert_bounded((before, after40, after80): (u64, u64, u64)) {
    let (max, mib) = (32 * MIB, |b: u64| b / MIB);
    assert!(
        after80.saturating_sub(after40) < 24 * MIB,
        "40 more values of 6 MiB grew the host from {} to {} MiB",
        mib(after40),
        mib(after80)
    );
    assert!(
        after80.saturating_sub(before) < max + 64 * MIB,
        "the host grew from {} to {} MiB with a cache of 32 MiB",
        mib(before),
        mib(after80)
    );
}

#[test]
fn cache_bytes_are_bounded_and_rss_stays_put_trusted() {
    assert_bounded(cache_fill_rss("", &[]));
}

#[test]
fn cache_bytes_are_bounded_and_rss_stays_put_sandboxed() {
    assert_bounded(cache_fill_rss("execution_mode: sandboxed\n", &[]));
}

#[test]
fn cache_bytes_are_bounded_and_rss_stays_put_with_a_fixed_mmap_threshold() {
    // With glibc's mmap threshold fixed at 1 MiB, large buffers go back to the system when
    // freed: what remains is the cache itself.
    let (before, _, after) = cache_fill_rss("", &[("MALLOC_MMAP_THRESHOLD_", "1048576")]);
    assert!(
        after.saturating_sub(before) < 32 * MIB + 16 * MIB,
        "the host grew from {} to {} MiB with a cache of 32 MiB",
        before / MIB,
        after / MIB
    );
}

#[test]
fn cache_values_over_the_default_limit_are_refused() {
    let s = Server::start(&[greedy_with("greedy", "", 1)]);
    let mut refused = 0;
    let mut rss = Vec::new();
    for batch in 0..3 {
        for i in 0..20 {
            let body = json!({ "n": 1, "bytes": 6 * MIB, "prefix": format!("v{batch}-{i}") });
            let (_, code, status, message) = refusal(&act(&s, "greedy", "cache_fill", body));
            assert_eq!((code.as_str(), status), ("value_too_large", 413), "{message}");
            assert!(message.contains("the limit is 1048576"), "{message}");
            refused += 1;
        }
        rss.push(rss_bytes(s.pid()));
    }
    println!(
        "refused values of 6 MiB: RSS after 20, 40, 60: {:?} MiB",
        rss.iter().map(|b| b / MIB).collect::<Vec<_>>()
    );
    assert!(rss[2].saturating_sub(rss[0]) < 24 * MIB, "refused values grew the host: {rss:?}");
    assert_eq!(metric(&s, "xcore_limit_refusals_total{limit=\"cache_value_bytes\"}"), Some(refused as f64));
    // A value under the limit is stored.
    assert_eq!(act(&s, "greedy", "cache_fill", json!({ "n": 3, "bytes": 1000 }))["ok"], 3);
    assert_unharmed(&s, "greedy");
}

#[test]
fn cache_ttls_are_milliseconds_and_zero_is_refused() {
    let s = Server::start(&[greedy("greedy", "")]);
    // 400 ms used to travel as 0 s, which meant "never expires".
    let set = Instant::now();
    let r = act(&s, "greedy", "cache_set", json!({ "key": "short", "value": 1, "ttl_ms": 400 }));
    assert!(r["error"].is_null(), "{r}");
    let got = act(&s, "greedy", "cache_get", json!({ "key": "short" }));
    if set.elapsed() < Duration::from_millis(300) {
        assert_eq!(got["ok"], 1, "present before its TTL: {got}");
    }
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(act(&s, "greedy", "cache_get", json!({ "key": "short" }))["ok"], Value::Null, "expired");

    let r = act(&s, "greedy", "cache_set", json!({ "key": "zero", "value": 1, "ttl_ms": 0 }));
    assert_eq!(
        (r["error"]["code"].as_str(), r["error"]["status"].as_u64()),
        (Some("invalid_payload"), Some(400)),
        "{r}"
    );
    assert!(r["error"]["message"].as_str().unwrap().contains("0 ms"), "{r}");

    // Plugins built before send whole seconds (0 = no expiry); still accepted.
    for (key, body) in [
        ("old1", json!({ "key": "old1", "value": "a", "ttl_seconds": 1 })),
        ("old0", json!({ "key": "old0", "value": "b", "ttl_seconds": 0 })),
    ] {
        let r = act(&s, "greedy", "cache_raw", json!({ "body": body }));
        assert_eq!(r["ok"]["stored"], true, "{key}: {r}");
    }
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(act(&s, "greedy", "cache_get", json!({ "key": "old1" }))["ok"], Value::Null);
    assert_eq!(act(&s, "greedy", "cache_get", json!({ "key": "old0" }))["ok"], "b");
    assert_unharmed(&s, "greedy");
}

#[test]
fn job_runs_and_audit_log_are_pruned() {
    let s = Server::start_with(
        &[greedy("greedy", "")],
        "retention:\n  job_runs_max_rows: 3\n  audit_log_max_rows: 5\n  interval_seconds: 1\n\
         scheduler:\n  jobs:\n    - { id: tick, cron: '* * * * * *', emit: greedy.tick }\n",
    );
    for i in 0..20 {
        let r = s.post_with(&format!("/api/v1/events/greedy.audited{i}"), "{}", Some(TOKEN));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let audit = || {
        let r = s.request_admin("GET", "/api/v1/audit?limit=1000");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["entries"].as_array().map(Vec::len).unwrap()
    };
    wait_for("the audit log to be pruned", Duration::from_secs(30), || audit() <= 5);
    assert!(metric(&s, "xcore_store_pruned_rows_total{table=\"audit_log\"}").unwrap() >= 15.0);
    // The job ran every second; its older runs went.
    wait_for("job runs to be pruned", Duration::from_secs(30), || {
        metric(&s, "xcore_store_pruned_rows_total{table=\"job_runs\"}").is_some_and(|n| n >= 2.0)
    });
    let db = s.dir.path().join("data/xcore.db");
    let cfg = xcore_db::DatabaseConfig { url: format!("sqlite://{}", db.display()), ..Default::default() };
    let store = xcore_db::store::Store::new(std::sync::Arc::new(
        xcore_db::Database::connect("default", &cfg).expect("open the host's database"),
    ));
    // 3 kept, plus those of the last second.
    let runs = store.job_history("tick", 1000).unwrap().len();
    assert!(runs <= 5, "{runs} job runs kept");
    assert_unharmed(&s, "greedy");
}

#[test]
fn a_sandboxed_plugin_meets_the_same_bounds() {
    let s = Server::start_with(
        &[greedy("greedy", "execution_mode: sandboxed\n")],
        "kv:\n  max_keys_per_plugin: 5\n",
    );
    let r = act(&s, "greedy", "emit", json!({ "event": "xcore.shutdown" }));
    assert_eq!(r["error"]["code"], "reserved_event", "{r}");
    let r = act(&s, "greedy", "kv_fill", json!({ "n": 10 }));
    assert_eq!(refusal(&r).1, "kv_quota");
    let r = act(&s, "greedy", "cache_fill", json!({ "n": 1, "bytes": 2 * MIB }));
    assert_eq!(refusal(&r).1, "value_too_large");
    assert_unharmed(&s, "greedy");
}

#[test]
fn redis_cache_bounds_value_size_and_ttls_in_milliseconds() {
    let Ok(url) = std::env::var("XCORE_TEST_REDIS_URL") else {
        eprintln!("skipped: XCORE_TEST_REDIS_URL not set");
        return;
    };
    // A plugin name of its own, so parallel runs do not share keys.
    let name = format!("greedy{}", std::process::id());
    let s = Server::start_with(
        &[greedy(&name, "")],
        &format!(
            "cache:\n  backend: redis\n  url: {url}\n  on_unreachable: refuse\n  max_value_bytes: 100000\n"
        ),
    );
    let r = act(&s, &name, "cache_fill", json!({ "n": 1, "bytes": 200_000 }));
    let (ok, code, status, message) = refusal(&r);
    assert_eq!((ok, code.as_str(), status), (0, "value_too_large", 413), "{message}");
    assert_eq!(metric(&s, "xcore_limit_refusals_total{limit=\"cache_value_bytes\"}"), Some(1.0));
    let r = act(&s, &name, "cache_set", json!({ "key": "short", "value": 1, "ttl_ms": 400 }));
    assert!(r["error"].is_null(), "{r}");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(act(&s, &name, "cache_get", json!({ "key": "short" }))["ok"], Value::Null, "expired (PX)");
    assert_unharmed(&s, &name);
}
