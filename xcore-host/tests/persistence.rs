//! Services and persistence through the real binary and real HTTP: the `bookmarks`
//! example (its own SQL table and migrations, the key-value store, the cache, a cron
//! job) end to end on SQLite, PostgreSQL and MySQL; data and plugin state surviving a
//! restart; no acknowledged key-value write lost to `kill -9`; the audit log; the
//! permission denials; and Redis restarting under a running host.
//!
//! PostgreSQL and MySQL runs use a fresh database on the servers of
//! `XCORE_TEST_POSTGRES_URL` / `XCORE_TEST_MYSQL_URL` and are skipped (with a printed
//! line) when those are not set.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xcore_db::Backend;

use common::{PluginSpec, Server, TempDatabase, TOKEN};

fn env_for(db: &Option<TempDatabase>) -> Vec<(&str, &str)> {
    db.as_ref().map(|d| vec![("DATABASE_URL", d.url.as_str())]).unwrap_or_default()
}

fn call(s: &Server, action: &str, body: Value) -> common::Reply {
    s.call("bookmarks", action, &body.to_string())
}

/// The whole example over HTTP, a restart in the middle.
fn bookmarks_end_to_end(db: Option<TempDatabase>) {
    let env = env_for(&db);
    let mut s = Server::start_full(&[PluginSpec::bookmarks(None)], "", &env);
    assert_eq!(s.info("bookmarks")["state"], "ready", "{}", s.output());
    let r = s.request(
        "POST",
        "/plugins/bookmarks/bookmarks",
        Some(r#"{"url": "https://example.org/a", "title": "A"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["id"].as_i64().expect("an id");
    let dup = call(&s, "add", json!({"url": "https://example.org/a"}));
    assert_eq!((dup.status, dup.code()), (409, "conflict".to_string()), "{}", dup.body);
    let bad = call(&s, "add", json!({"url": "ftp://x"}));
    assert_eq!(bad.status, 400, "{}", bad.body);
    for n in 1..=2 {
        let r = s.request("GET", &format!("/plugins/bookmarks/bookmarks/{id}"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["visits"], n);
        assert_eq!(r.json()["bookmark"]["title"], "A");
    }
    let list = s.request("GET", "/plugins/bookmarks/bookmarks", None).json();
    assert_eq!(
        (list["count"].clone(), list["bookmarks"][0]["visits"].clone()),
        (json!(1), json!(2)),
        "{list}"
    );

    // The plugin's cron job, run by hand, stores a summary in the key-value store.
    let run = s.post_with("/api/v1/jobs/bookmarks.summary/run", "", Some(TOKEN));
    assert_eq!((run.status, run.json()["outcome"].clone()), (200, json!("ok")), "{}", run.body);
    let summary = call(&s, "last_summary", json!({})).json();
    assert_eq!((summary["bookmarks"].clone(), summary["visits"].clone()), (json!(1), json!(2)), "{summary}");
    let jobs = s.get("/api/v1/jobs").json();
    let job = jobs["jobs"].as_array().unwrap().iter().find(|j| j["id"] == "bookmarks.summary").cloned();
    let job = job.unwrap_or_else(|| panic!("no bookmarks.summary in {jobs}"));
    assert!(job["next_run"].is_string() && job["last_run"]["outcome"] == "ok", "{job}");
    let metrics = s.get("/metrics").body;
    for series in [
        r#"xcore_host_service_requests_total{outcome="ok",service="kv.set"}"#,
        r#"xcore_host_service_requests_total{outcome="ok",service="db.query"}"#,
        r#"xcore_host_service_requests_total{outcome="ok",service="cache.get"}"#,
        r#"xcore_job_runs_total{job="bookmarks.summary",outcome="ok"} 1"#,
        r#"xcore_db_connections{database="default",state="idle"}"#,
    ] {
        assert!(metrics.contains(series), "{series} missing from /metrics:\n{metrics}");
    }

    s.restart();
    assert_eq!(s.info("bookmarks")["state"], "ready", "{}", s.output());
    let list = s.request("GET", "/plugins/bookmarks/bookmarks", None).json();
    assert_eq!(
        (list["count"].clone(), list["bookmarks"][0]["visits"].clone()),
        (json!(1), json!(2)),
        "{list}"
    );
    let jobs = s.get("/api/v1/jobs").json();
    let job =
        jobs["jobs"].as_array().unwrap().iter().find(|j| j["id"] == "bookmarks.summary").cloned().unwrap();
    assert_eq!(job["last_run"]["outcome"], "ok", "the last run is read from job_runs: {job}");
    assert!(s.output().contains("applied migration 0001_create_items"), "{}", s.output());

    let del = call(&s, "delete", json!({"id": id}));
    assert_eq!(del.status, 200, "{}", del.body);
    assert_eq!(call(&s, "get", json!({"id": id})).status, 404, "the cached copy went with it");
    assert_eq!(call(&s, "delete", json!({"id": id})).status, 404);
}

#[test]
fn bookmarks_end_to_end_on_sqlite() {
    bookmarks_end_to_end(None);
}

#[test]
fn bookmarks_end_to_end_on_postgres() {
    if let Some(db) = TempDatabase::from_env("XCORE_TEST_POSTGRES_URL", Backend::Postgres) {
        bookmarks_end_to_end(Some(db));
    }
}

#[test]
fn bookmarks_end_to_end_on_mysql() {
    if let Some(db) = TempDatabase::from_env("XCORE_TEST_MYSQL_URL", Backend::Mysql) {
        bookmarks_end_to_end(Some(db));
    }
}

#[test]
fn a_disabled_plugin_stays_disabled_across_restarts_and_admin_actions_are_audited() {
    let mut s = Server::start(&[PluginSpec::echo(), PluginSpec::bookmarks(None)]);
    assert_eq!(s.post_with("/api/v1/plugins/echo/disable", "", None).status, 401);
    let r = s.post_with("/api/v1/plugins/echo/disable", "", Some(TOKEN));
    assert_eq!((r.status, r.json()["state"].clone()), (200, json!("disabled")), "{}", r.body);
    assert_eq!(s.call("echo", "echo", "{}").status, 503);
    let again = s.post_with("/api/v1/plugins/echo/load", "", Some(TOKEN));
    assert_eq!(again.status, 409, "load refuses a disabled plugin: {}", again.body);
    assert!(again.body.contains("use enable"), "{}", again.body);

    s.restart();
    assert_eq!(s.info("echo")["state"], "disabled", "{}", s.output());
    assert_eq!(s.info("bookmarks")["state"], "ready");
    assert_eq!(s.call("echo", "echo", "{}").status, 503);
    let r = s.post_with("/api/v1/plugins/echo/enable", "", Some(TOKEN));
    assert_eq!((r.status, r.json()["state"].clone()), (200, json!("ready")), "{}", r.body);
    assert_eq!(s.call("echo", "echo", r#"{"x":1}"#).status, 200);
    assert_eq!(s.post_with("/api/v1/plugins/echo/enable", "", Some(TOKEN)).status, 409, "not disabled");
    assert_eq!(s.post_with("/api/v1/plugins/nope/unload", "", Some(TOKEN)).status, 404);

    s.restart();
    assert_eq!(s.info("echo")["state"], "ready", "enabled survives a restart too");

    assert_eq!(s.get("/api/v1/audit").status, 401, "the audit log is admin-only");
    let audit = s.request_admin("GET", "/api/v1/audit?limit=10").json();
    let entries = audit["entries"].as_array().unwrap();
    let seen: Vec<(String, String, String)> = entries
        .iter()
        .map(|e| {
            let f = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (f("action"), f("target"), f("outcome"))
        })
        .collect();
    let expected = [
        ("unload", "nope", "error"),
        ("enable", "echo", "error"),
        ("enable", "echo", "ok"),
        ("load", "echo", "error"),
        ("disable", "echo", "ok"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.iter().map(|(a, t, o)| (a.to_string(), t.to_string(), o.to_string())).collect();
    assert_eq!(seen, expected, "newest first: {audit}");
    assert!(entries[0]["actor"].as_str().unwrap().starts_with("admin@127.0.0.1"), "{audit}");
    assert!(entries[0]["detail"].as_str().unwrap().contains("nope"), "{audit}");
    let only = s.request_admin("GET", "/api/v1/audit?action=disable").json();
    assert_eq!(only["entries"].as_array().unwrap().len(), 1, "{only}");
    let bad = s.request_admin("GET", "/api/v1/audit?limit=lots");
    assert_eq!(bad.status, 400, "{}", bad.body);
}

/// Writers hammer the key-value store through the plugin; the host is killed with
/// SIGKILL mid-burst; every write the plugin acknowledged is there after a restart.
fn kill_9_loses_no_acknowledged_write(db: Option<TempDatabase>) {
    let env = env_for(&db);
    let mut s = Server::start_full(&[PluginSpec::bookmarks(None)], "", &env);
    let base = s.base.clone();
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (acked, stop, base) = (acked.clone(), stop.clone(), base.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build()
                    .into();
                for i in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("burst:{t}:{i}");
                    let body = json!({"key": key, "value": i}).to_string();
                    match agent.post(&format!("{base}/api/v1/plugins/bookmarks/call/kv.set")).send(&body) {
                        Ok(r) if r.status() == 200 => acked.lock().unwrap().push((key, i)),
                        // The host died under this request: not acknowledged.
                        _ => break,
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.lock().unwrap().len() < 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    s.kill_hard();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 50, "only {} writes were acknowledged before the kill", acked.len());
    s.start_again();
    let mut missing = Vec::new();
    for (key, value) in &acked {
        let r = call(&s, "kv.get", json!({"key": key}));
        assert_eq!(r.status, 200, "{}", r.body);
        if r.json()["value"] != json!(value) {
            missing.push(key.clone());
        }
    }
    assert!(missing.is_empty(), "{} of {} acknowledged writes lost: {missing:?}", missing.len(), acked.len());
    println!("kill -9: {} acknowledged writes, none lost", acked.len());
}

#[test]
fn kill_9_during_a_kv_burst_loses_no_acknowledged_write_on_sqlite() {
    kill_9_loses_no_acknowledged_write(None);
}

#[test]
fn kill_9_during_a_kv_burst_loses_no_acknowledged_write_on_postgres() {
    if let Some(db) = TempDatabase::from_env("XCORE_TEST_POSTGRES_URL", Backend::Postgres) {
        kill_9_loses_no_acknowledged_write(Some(db));
    }
}

#[test]
fn every_service_is_denied_without_its_permission() {
    // The operator grants everything this test's manifests ever ask for: what is
    // denied here is what the manifest does not ask for.
    const GRANTS: &str =
        "plugins:\n  watch: false\n  grants:\n    bookmarks: [scheduler, kv, cache, \"db:default\"]\n";
    // No permissions: the constructor's schedule() is refused, so the load fails.
    let s = Server::start_with(&[PluginSpec::bookmarks(Some("[]"))], GRANTS);
    let info = s.wait_state("bookmarks", "failed", Duration::from_secs(10));
    let why = info["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("permission_denied") || why.contains("permission 'scheduler'"), "{info}");
    drop(s);

    // With only the scheduler: SQL, the key-value store and the cache are refused,
    // each naming what to add.
    let mut s = Server::start_with(&[PluginSpec::bookmarks(Some("[scheduler]"))], GRANTS);
    let r = call(&s, "kv.get", json!({"key": "k"}));
    assert_eq!((r.status, r.code()), (403, "permission_denied".into()), "{}", r.body);
    assert!(r.body.contains("permission 'kv'") && r.body.contains("plugins.grants.bookmarks"), "{}", r.body);
    let r = call(&s, "list", json!({}));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("'db:default:read'"), "{}", r.body);
    let r = call(&s, "add", json!({"url": "https://example.org"}));
    assert!(r.body.contains("'db:default:read'"), "{}", r.body);

    // Full permissions create the table; read-only access then reads but cannot write.
    let manifest = s.plugins_dir().join("bookmarks/plugin.yaml");
    std::fs::write(&manifest, PluginSpec::bookmarks(None).manifest).unwrap();
    s.restart();
    assert_eq!(call(&s, "add", json!({"url": "https://example.org/r"})).status, 200);
    std::fs::write(
        &manifest,
        PluginSpec::bookmarks(Some("[scheduler, kv, cache, 'db:default:read']")).manifest,
    )
    .unwrap();
    s.restart();
    assert_eq!(call(&s, "list", json!({})).json()["count"], 1);
    let r = call(&s, "delete", json!({"id": 1}));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("permission 'db:default'"), "{}", r.body);
}

/// A private redis-server on a free port, killed on drop.
struct Redis(std::process::Child);

impl Redis {
    fn start(port: u16) -> Option<Redis> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Redis(child))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn redis_restarting_under_a_running_host() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Some(redis) = Redis::start(port) else {
        println!("skipped: redis-server is not on PATH");
        return;
    };
    let cfg = format!("cache:\n  backend: redis\n  url: redis://127.0.0.1:{port}\n");
    let s = Server::start_with(&[PluginSpec::bookmarks(None)], &cfg);
    assert!(s.output().contains("cache: redis"), "{}", s.output());
    let id = call(&s, "add", json!({"url": "https://example.org/redis"})).json()["id"].clone();
    assert_eq!(call(&s, "get", json!({"id": id})).status, 200);

    drop(redis);
    let r = call(&s, "get", json!({"id": id}));
    assert_eq!((r.status, r.code()), (503, "cache_error".to_string()), "{}", r.body);
    assert_eq!(s.get("/health").status, 200, "the host is fine");
    assert_eq!(call(&s, "kv.get", json!({"key": "k"})).status, 200, "other services are unaffected");

    let _redis = Redis::start(port).expect("restart redis-server");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = call(&s, "get", json!({"id": id}));
        if r.status == 200 {
            assert_eq!(r.json()["url"], "https://example.org/redis");
            break;
        }
        assert!(Instant::now() < deadline, "the cache did not come back: {}", r.body);
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_sandboxed_plugin_uses_the_same_services_over_its_socket() {
    let mut spec = PluginSpec::bookmarks(None);
    spec.manifest = spec.manifest.replace("resources:", "execution_mode: sandboxed\nresources:");
    let s = Server::start(&[spec]);
    let info = s.info("bookmarks");
    assert_eq!(
        (info["state"].clone(), info["execution_mode"].clone()),
        (json!("ready"), json!("sandboxed")),
        "{info}"
    );
    let added = call(&s, "add", json!({"url": "https://example.org/boxed", "title": "boxed"}));
    assert_eq!(added.status, 200, "{}", added.body);
    let id = added.json()["id"].clone();
    let visit = call(&s, "visit", json!({"id": id}));
    assert_eq!((visit.status, visit.json()["visits"].clone()), (200, json!(1)), "{}", visit.body);
    let run = s.post_with("/api/v1/jobs/bookmarks.summary/run", "", Some(TOKEN));
    assert_eq!(run.json()["outcome"], "ok", "{}", run.body);
    assert_eq!(call(&s, "last_summary", json!({})).json()["visits"], 1);
}

#[test]
fn configured_jobs_call_actions_and_emit_events_on_their_schedule() {
    let echo = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/echo/plugin.yaml"),
    )
    .unwrap();
    let cfg = "scheduler:\n  jobs:\n    \
        - {id: tick, cron: '* * * * * *', plugin: echo, action: echo, payload: {n: 1}}\n    \
        - {id: announce, cron: '0 0 0 1 1 *', emit: notes.created, payload: {id: 7}}\n    \
        - {id: lost, cron: '0 0 0 1 1 *', plugin: nobody, action: x, enabled: false}\n";
    let s = Server::start_with(&[PluginSpec::new("echo", "xcore-plugin-echo", &echo)], cfg);
    // `tick` fires every second by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    let tick = loop {
        let jobs = s.get("/api/v1/jobs").json();
        let tick = jobs["jobs"].as_array().unwrap().iter().find(|j| j["id"] == "tick").cloned().unwrap();
        if tick["last_run"]["outcome"] == "ok" {
            break tick;
        }
        assert!(Instant::now() < deadline, "tick never ran: {jobs}\n{}", s.output());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(tick["runs"].as_u64().unwrap() >= 1 && tick["next_run"].is_string(), "{tick}");
    assert!(s.info("echo")["counters"]["calls"].as_u64().unwrap() >= 1, "the job called echo");

    // An emit job reaches echo's manifest subscription.
    let run = s.post_with("/api/v1/jobs/announce/run", "", Some(TOKEN));
    assert_eq!((run.status, run.json()["outcome"].clone()), (200, json!("ok")), "{}", run.body);
    let hooks = s.get("/api/v1/hooks/metrics").json();
    assert!(hooks.to_string().contains("notes.created"), "{hooks}");

    // A job whose plugin does not exist fails, with the reason, and is recorded.
    let run = s.post_with("/api/v1/jobs/lost/run", "", Some(TOKEN));
    assert_eq!(run.json()["outcome"], "error", "{}", run.body);
    assert!(run.json()["error"].as_str().unwrap().contains("nobody"), "{}", run.body);
    let jobs = s.get("/api/v1/jobs").json();
    let lost = jobs["jobs"].as_array().unwrap().iter().find(|j| j["id"] == "lost").cloned().unwrap();
    assert_eq!(
        (lost["next_run"].clone(), lost["last_run"]["outcome"].clone()),
        (Value::Null, json!("error"))
    );
    assert_eq!(s.post_with("/api/v1/jobs/nope/run", "", Some(TOKEN)).status, 404);
    assert_eq!(s.post_with("/api/v1/jobs/tick/run", "", None).status, 401);
}

#[test]
fn a_bad_job_stops_the_server_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::write(
        dir.path().join("xcore.yaml"),
        "server: {port: 0}\nscheduler:\n  jobs:\n    - {id: nightly, cron: '0 3 * * *', emit: x}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xcore"))
        .args(["serve", "--config", "xcore.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("job 'nightly'") && text.contains("seconds first"), "{text}");
}
