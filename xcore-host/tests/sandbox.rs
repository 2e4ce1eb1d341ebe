//! The sandboxed tier through real HTTP: crashes end only the worker, limits hold,
//! the confinement denies what it should, and no worker outlives the host.

mod common;

use std::time::{Duration, Instant};

use common::{PluginSpec, Server};
use serde_json::{json, Value};

fn boxed(name: &str, extra: &str) -> PluginSpec {
    let restart = if extra.contains("restart:") {
        ""
    } else {
        "restart: { backoff_initial_ms: 20, max_restarts: 50 }\n"
    };
    PluginSpec::with(name, "xcore-fixture-misbehave", &format!("execution_mode: sandboxed\n{restart}{extra}"))
}

fn pid_alive(pid: u64) -> bool {
    // A zombie still has a /proc entry; only count processes that are not dead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.split_whitespace().nth(2).is_some_and(|state| state == "Z" || state == "X"))
        .unwrap_or(false)
}

#[test]
fn segfault_abort_and_exit_give_502_then_the_plugin_answers_again() {
    let s = Server::start(&[boxed("box", "")]);
    let info = s.info("box");
    assert_eq!(info["state"], "ready", "{info}");
    assert_eq!(info["sandbox"]["fs_isolation"], "landlock", "this machine's kernel has landlock: {info}");
    for (action, exit) in
        [("segfault", "killed by SIGSEGV"), ("abort", "killed by SIGABRT"), ("exit3", "exited with code 3")]
    {
        let generation = s.info("box")["generation"].as_u64().unwrap();
        let r = s.call("box", action, "{}");
        assert_eq!((r.status, r.code().as_str()), (502, "plugin_crashed"), "{action}: {}", r.body);
        assert!(r.json()["detail"].as_str().unwrap().contains(exit), "{}", r.body);
        // The death was noticed at once and the plugin restarted on a new worker.
        let deadline = Instant::now() + Duration::from_secs(10);
        let info = loop {
            let info = s.info("box");
            if info["state"] == "ready" && info["generation"].as_u64() > Some(generation) {
                break info;
            }
            assert!(Instant::now() < deadline, "no restart after {action}: {info}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(info["sandbox"]["last_exit"], exit, "{info}");
        let r = s.call("box", "ok", r#"{"after":"crash"}"#);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(s.info("box")["restarts"], 3);
    assert_eq!(s.get("/health").status, 200, "the host is unharmed");
}

#[test]
fn an_allocation_bomb_dies_alone() {
    let s = Server::start(&[boxed("bomb", "resources: { max_memory_mb: 64 }"), PluginSpec::echo()]);
    let r = s.call("bomb", "alloc_bomb", "{}");
    assert_eq!((r.status, r.code().as_str()), (502, "plugin_crashed"), "{}", r.body);
    assert!(
        r.body.contains("SIGABRT") || r.body.contains("SIGSEGV") || r.body.contains("SIGKILL"),
        "{}",
        r.body
    );
    assert_eq!(s.call("echo", "echo", "1").status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(s.info("bomb")["state"] == "ready" && s.info("bomb")["generation"] == 2) {
        assert!(Instant::now() < deadline, "{}", s.info("bomb"));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.call("bomb", "ok", "{}").status, 200);
}

#[test]
fn a_busy_loop_times_out_and_the_next_call_gets_its_own_reply() {
    let s = Server::start(&[boxed("spinner", "resources: { timeout_ms: 300 }")]);
    let started = Instant::now();
    let r = s.call("spinner", "busy", "{}");
    assert_eq!((r.status, r.code().as_str()), (504, "timeout"), "{}", r.body);
    assert!(started.elapsed() < Duration::from_millis(2000));
    s.wait_state("spinner", "ready", Duration::from_secs(10));
    let r = s.call("spinner", "ok", r#"{"n":2}"#);
    assert_eq!(r.json(), json!({"ok": true, "payload": {"n": 2}}));
    let r = s.call("spinner", "ok", r#"{"n":3}"#);
    assert_eq!(r.json()["payload"]["n"], 3);
    // The old worker's exit is recorded once it has been reaped.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = s.info("spinner");
        if info["sandbox"]["last_exit"].as_str().is_some_and(|e| e.contains("deadline")) {
            break;
        }
        assert!(Instant::now() < deadline, "{info}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_10_mb_payload_travels_both_ways_intact() {
    let s = Server::start_with(&[boxed("big", "")], "");
    let r = s.post("/api/v1/plugins/big/call/ok", &"x".repeat(2 << 20));
    assert_eq!(r.status, 413, "the HTTP body limit applies first");
    drop(s);
    let s = Server::start_full(&[boxed("big", "")], "", &[("XCORE__SERVER__BODY_LIMIT_BYTES", "20000000")]);
    let blob: String = (0..10 * 1024 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let body = json!({ "blob": blob }).to_string();
    let r = s.post("/api/v1/plugins/big/call/ok", &body);
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(300)]);
    let v = r.json();
    assert_eq!(v["payload"]["blob"].as_str().map(str::len), Some(blob.len()));
    assert!(v["payload"]["blob"] == blob, "the payload came back altered");
    // A reply over the frame limit is refused cleanly.
    let r = s.call("big", "blob", r#"{"size": 17000000}"#);
    assert_eq!(
        (r.status, r.code().as_str()),
        (413, "payload_too_large"),
        "{}",
        &r.body[..r.body.len().min(300)]
    );
    assert_eq!(s.call("big", "ok", "{}").status, 200, "the worker survived the refused reply");
}

#[test]
fn the_filesystem_and_the_network_are_confined() {
    let s = Server::start(&[
        boxed("jail", "resources: { max_disk_mb: 1 }\nenv: { FROM_MANIFEST: \"yes\" }"),
        boxed("netter", "permissions: [network]"),
    ]);
    let call = |p: &str, a: &str, body: Value| s.call(p, a, &body.to_string()).json();
    let escape = format!("/tmp/xcore-escape-{}", std::process::id());
    let denied = |v: Value| v["kind"] == "PermissionDenied";
    assert!(denied(call("jail", "write", json!({ "path": escape }))), "write outside data/");
    assert!(!std::path::Path::new(&escape).exists());
    let plugin_dir = s.plugins_dir().join("jail");
    let v = call("jail", "write", json!({ "path": plugin_dir.join("evil.so") }));
    assert!(denied(v.clone()), "the plugin folder is read-only: {v}");
    assert!(denied(call("jail", "read", json!({ "path": "/etc/hostname" }))), "reading /etc/hostname");
    assert!(denied(call("jail", "socket", json!({}))), "a socket without the network permission");
    // What is allowed.
    assert!(call("jail", "write", json!({ "path": "inside.bin", "bytes": 10 }))["ok"].is_string());
    assert!(plugin_dir.join("data/inside.bin").is_file());
    assert!(call("jail", "read", json!({ "path": plugin_dir.join("plugin.yaml") }))["ok"].is_number());
    let v = call("netter", "socket", json!({}));
    assert!(v["kind"] != "PermissionDenied", "network granted: {v}");
    // A minimal environment: HOME is data/, nothing of the host leaks in.
    let env = call("jail", "env", json!({}));
    assert!(env["home"].as_str().unwrap().ends_with("jail/data"), "{env}");
    assert_eq!(env["from_manifest"], "yes");
    assert!(env["secret"].is_null());

    // The disk quota: over it, the call that wrote fails, and so does the next one.
    let r = s.call("jail", "write", r#"{"path": "big.bin", "bytes": 2000000}"#);
    assert_eq!((r.status, r.code().as_str()), (507, "disk_quota"), "{}", r.body);
    let r = s.call("jail", "ok", "{}");
    assert_eq!((r.status, r.code().as_str()), (507, "disk_quota"));
    std::fs::remove_file(plugin_dir.join("data/big.bin")).unwrap();
    assert_eq!(s.call("jail", "ok", "{}").status, 200);
    let info = s.info("jail");
    assert!(info["sandbox"]["disk_bytes"].as_u64().unwrap() < 1024 * 1024, "{info}");
    assert!(info["sandbox"]["rss_bytes"].as_u64().unwrap() > 0, "{info}");
}

#[test]
fn printing_on_stdout_does_not_corrupt_calls() {
    // The output budget (sandbox.log_lines_per_second) is shared by stdout, stderr and
    // log frames, and whichever pipe is read first takes it; raised here so that every
    // line of the first round is logged (the budget has a test of its own).
    let s = Server::start_with(&[boxed("chatty", "")], "sandbox:\n  log_lines_per_second: 100000\n");
    for i in 0..5 {
        let r = s.call("chatty", "print", "{}");
        assert_eq!(r.json(), json!({"printed": 200}), "round {i}");
        assert_eq!(s.call("chatty", "ok", &format!("{{\"i\":{i}}}")).json()["payload"]["i"], i);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.output().contains("plugin stdout line 99") {
        assert!(Instant::now() < deadline, "stdout not logged:\n{}", s.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s.output().contains("[stderr] plugin stderr line 0"));
}

#[test]
fn a_hundred_concurrent_calls_succeed_while_another_plugin_crash_loops() {
    let s = Server::start(&[
        boxed("steady", "resources: { concurrency: 4, rate_limit: { calls: 0, period_seconds: 1 } }"),
        boxed("crashy", "restart: { backoff_initial_ms: 5, max_restarts: 1000, within_seconds: 60 }"),
    ]);
    let base = s.base.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let crashes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let crasher = {
        let (base, stop, crashes) = (base.clone(), stop.clone(), crashes.clone());
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = agent.post(format!("{base}/api/v1/plugins/crashy/call/segfault")).send("{}").unwrap();
                if r.status() == 502 {
                    crashes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // The crash loop is under way before the load starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while crashes.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the crash loop never started: {}", s.info("crashy"));
        std::thread::sleep(Duration::from_millis(10));
    }
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent =
                    ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let mut r = agent
                    .post(format!("{base}/api/v1/plugins/steady/call/ok"))
                    .send(format!("{{\"i\":{i}}}").as_bytes())
                    .unwrap();
                (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let (status, body) = t.join().unwrap();
        assert_eq!(status, 200, "call {i}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["payload"]["i"], i, "call {i} got another call's reply");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    crasher.join().unwrap();
    assert!(s.info("crashy")["restarts"].as_u64().unwrap() >= 2);
    assert_eq!(s.info("steady")["generation"], 1);
}

#[test]
fn a_hung_worker_fails_its_health_check_and_is_replaced() {
    let s = Server::start(&[boxed("sleepy", "health_check: { interval_ms: 100, timeout_ms: 200 }")]);
    let pid = s.info("sleepy")["sandbox"]["pid"].as_u64().unwrap();
    // A stopped process cannot answer pings.
    std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = s.info("sleepy");
        if info["state"] == "ready" && info["generation"] == 2 {
            assert!(info["sandbox"]["last_exit"].as_str().unwrap_or("").contains("health check"), "{info}");
            break;
        }
        assert!(Instant::now() < deadline, "no restart: {info}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.call("sleepy", "ok", "{}").status, 200);
}

#[test]
fn killing_the_host_with_sigkill_leaves_no_worker_behind() {
    let mut s = Server::start(&[boxed("orphan-a", ""), boxed("orphan-b", "resources: { concurrency: 3 }")]);
    let pids: Vec<u64> =
        ["orphan-a", "orphan-b"].iter().map(|n| s.info(n)["sandbox"]["pid"].as_u64().unwrap()).collect();
    assert!(pids.iter().all(|p| pid_alive(*p)));
    s.kill_hard();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| pid_alive(*p)) {
        assert!(Instant::now() < deadline, "workers {pids:?} outlived the host");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cpu_time_per_call_and_open_files_are_limited() {
    let s = Server::start(&[boxed(
        "cpu",
        "resources: { timeout_ms: 20000, cpu_time_ms: 500, max_open_files: 32 }",
    )]);
    // The CPU budget (rounded up to whole seconds by RLIMIT_CPU) ends a busy call long
    // before its 20 s deadline.
    let started = Instant::now();
    let r = s.call("cpu", "busy", "{}");
    assert_eq!((r.status, r.code().as_str()), (502, "plugin_crashed"), "{}", r.body);
    assert!(r.body.contains("SIGXCPU"), "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(s.info("cpu")["state"] == "ready" && s.info("cpu")["generation"] == 2) {
        assert!(Instant::now() < deadline, "{}", s.info("cpu"));
        std::thread::sleep(Duration::from_millis(20));
    }
    // The budget is per call: a fresh call on the same worker gets a fresh budget.
    assert_eq!(s.call("cpu", "ok", "{}").status, 200);
    let v = s.call("cpu", "open_many", "{}").json();
    assert!(v["opened"].as_u64().unwrap() < 32, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("Too many open files"), "{v}");
}

#[test]
fn host_services_reach_the_host_from_the_worker() {
    let s = Server::start(&[boxed("caller", "")]);
    // A log call travels over the socket and lands in the host's log under the plugin.
    assert_eq!(s.call("caller", "log", "{}").json()["logged"], true);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.output().contains("[caller] a warning from the plugin") {
        assert!(Instant::now() < deadline, "{}", s.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    // A host service is answered by the host's own code (no such service yet: 501).
    let v = s.call("caller", "host", r#"{"service":"nothing"}"#).json();
    assert_eq!(v["code"], "unsupported", "{v}");
    assert_eq!(v["status"], 501);
    assert!(v["message"].as_str().unwrap().contains("'nothing'"), "{v}");
}

#[test]
fn the_example_plugins_run_unchanged_in_the_sandbox() {
    // Both log from their constructor, before the handshake completes.
    let notes = PluginSpec::notes();
    let notes = PluginSpec::new(
        "notes",
        "xcore-plugin-notes",
        &format!("{}\nexecution_mode: sandboxed\n", notes.manifest),
    );
    let s =
        Server::start(&[PluginSpec::with("echo", "xcore-plugin-echo", "execution_mode: sandboxed"), notes]);
    assert_eq!(s.info("echo")["execution_mode"], "sandboxed");
    let r = s.call("echo", "echo", r#"{"tier":"sandboxed"}"#);
    assert_eq!(r.json()["echo"]["tier"], "sandboxed", "{}", r.body);
    let r = s.request("POST", "/plugins/notes/notes", Some(r#"{"title":"boxed"}"#));
    assert_eq!(r.json()["id"], 1, "{}", r.body);
    assert_eq!(s.request("GET", "/plugins/notes/notes/1", None).json()["title"], "boxed");
    assert!(s.output().contains("[echo] echo 0.1.0 ready"), "{}", s.output());
}
