//! The host side of the sandboxed tier against a hostile worker, through real HTTP.
//!
//! The `hostile_io` fixture controls its whole worker process: it writes raw frames to
//! the protocol socket, prints without end, stops the process, forks and dies. For each
//! attack: the host survives with its thread count and memory bounded (read from
//! /proc/<server pid>/status while the attack runs), a steady stream of calls to
//! another plugin, each with a unique marker, is answered correctly throughout, the
//! attacker gets a clear error or is killed and replaced, and nothing it started is
//! left running.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{PluginSpec, Server};
use serde_json::json;

const MB: u64 = 1 << 20;

fn hostile(extra: &str) -> PluginSpec {
    PluginSpec::with(
        "hostile",
        "xcore-fixture-hostile-io",
        &format!(
            "execution_mode: sandboxed\nrestart: {{ backoff_initial_ms: 20, max_restarts: 100 }}\n{extra}"
        ),
    )
}

/// (threads, resident bytes) of a process.
/// The plugin the steady stream goes to: `echo`, without a rate limit in the way.
fn echo() -> PluginSpec {
    PluginSpec::with("echo", "xcore-plugin-echo", "resources: { rate_limit: { calls: 1000000 } }")
}

/// Sets the flag when dropped, so the background threads end even if the attack panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn threads_and_rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmRSS:") * 1024)
}

fn pid_alive(pid: u64) -> bool {
    // A zombie still has a /proc entry; only count processes that are not dead.
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()).is_some_and(|st| st != "Z")
}

/// Live processes whose process group is `pgid`.
fn group_members(pgid: u64) -> Vec<u64> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u64>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'.
        let rest: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        if rest.first() != Some(&"Z") && rest.get(2).and_then(|g| g.parse::<u64>().ok()) == Some(pgid) {
            found.push(pid);
        }
    }
    found
}

/// Live processes whose working directory is `dir` and whose pid in their innermost
/// pid namespace is `ns_pid`.
fn processes_in(dir: &std::path::Path, ns_pid: u64) -> Vec<u64> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u64>() else { continue };
        let innermost = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|l| l.split_whitespace().last()?.parse().ok())
        });
        if innermost == Some(ns_pid)
            && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir)
            && pid_alive(pid)
        {
            found.push(pid);
        }
    }
    found
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of a metric series in the /metrics text, 0 when absent.
fn metric(s: &Server, series: &str) -> f64 {
    let text = s.get("/metrics").body;
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse::<f64>().ok()))
        .unwrap_or(0.0)
}

fn limited(s: &Server, limit: &str) -> f64 {
    metric(s, &format!("xcore_sandbox_limited_total{{limit=\"{limit}\",plugin=\"hostile\"}}"))
}

fn worker_pid(s: &Server) -> u64 {
    s.info("hostile")["sandbox"]["pid"].as_u64().expect("a running worker")
}

/// Waits for the attacker to be ready on a worker other than `old_pid` (killed and
/// replaced), checks that nothing of the old worker's process group is left, and that
/// the new one answers.
fn replaced(s: &Server, old_pid: u64) {
    wait_until("the attacker was not replaced", Duration::from_secs(20), || {
        let info = s.info("hostile");
        info["state"] == "ready" && info["sandbox"]["pid"].as_u64().is_some_and(|p| p != old_pid)
    });
    wait_until(&format!("processes of the old worker {old_pid} are left"), Duration::from_secs(10), || {
        group_members(old_pid).is_empty()
    });
    let r = s.call("hostile", "ok", r#"{"after":"attack"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Runs `attack` while a background stream of marked calls goes to `echo` and a
/// sampler watches the host's threads and memory; asserts every marked call was
/// answered with its own marker and that the host stayed bounded. Prints the figures.
fn under_attack<R>(s: &Server, case: &str, attack: impl FnOnce() -> R) -> R {
    let pid = s.pid();
    // Warm up the path, so the baseline includes the HTTP workers and the echo plugin.
    for i in 0..5 {
        assert_eq!(s.call("echo", "echo", &json!({ "warm": i }).to_string()).status, 200);
    }
    let (base_threads, base_rss) = threads_and_rss(pid);
    let stop = AtomicBool::new(false);
    let (result, answered, failures, max_threads, max_rss) = std::thread::scope(|scope| {
        let stream = scope.spawn(|| {
            let (mut answered, mut failures) = (0u64, Vec::new());
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let marker = format!("{case}-{i}-{}", std::process::id());
                let r = s.call("echo", "echo", &json!({ "marker": marker }).to_string());
                if r.status == 200 && r.json()["echo"]["marker"] == marker.as_str() {
                    answered += 1;
                } else {
                    failures.push(format!("{marker}: {} {}", r.status, &r.body[..r.body.len().min(200)]));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (answered, failures)
        });
        let sampler = scope.spawn(|| {
            let (mut t, mut r) = (0, 0);
            while !stop.load(Ordering::SeqCst) {
                let (threads, rss) = threads_and_rss(pid);
                (t, r) = (t.max(threads), r.max(rss));
                std::thread::sleep(Duration::from_millis(10));
            }
            (t, r)
        });
        let stopper = StopOnDrop(&stop);
        let result = attack();
        // The stream goes on a little after the attack, while its effects settle.
        std::thread::sleep(Duration::from_millis(500));
        drop(stopper);
        let (answered, failures) = stream.join().unwrap();
        let (t, r) = sampler.join().unwrap();
        (result, answered, failures, t, r)
    });
    eprintln!(
        "FIGURES {case}: host threads {base_threads} -> max {max_threads}, host RSS {} MB -> max {} MB, {answered} marked calls to echo answered",
        base_rss / MB,
        max_rss / MB
    );
    assert!(failures.is_empty(), "{case}: calls to another plugin failed: {failures:?}");
    assert!(answered > 0, "{case}: the stream to another plugin made no call");
    assert!(max_threads < base_threads + 64, "{case}: host threads {base_threads} -> {max_threads}");
    assert!(max_rss < base_rss + 64 * MB, "{case}: host RSS {} -> {} MB", base_rss / MB, max_rss / MB);
    assert_eq!(s.get("/health").status, 200, "{case}: the host is unharmed");
    result
}

#[test]
fn forged_host_calls_are_served_by_a_bounded_pool() {
    let s = Server::start(&[
        hostile("permissions: [\"call:sink\"]\nhealth_check: { interval_ms: 0 }"),
        // Every forged request that gets through calls this, and waits.
        PluginSpec::with(
            "sink",
            "xcore-fixture-misbehave",
            "resources: { concurrency: 4, timeout_ms: 20000 }",
        ),
        echo(),
    ]);
    let pid = worker_pid(&s);
    let payload = json!({ "plugin": "sink", "action": "sleep", "payload": { "ms": 300 } });
    let r = under_attack(&s, "1500 forged plugins.call frames", || {
        let r = s.call("hostile", "host_call_flood", &json!({ "n": 1500, "payload": payload }).to_string());
        // The refused ones are answered at once; let the accepted ones drain.
        std::thread::sleep(Duration::from_secs(2));
        r
    });
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["sent"], 1500);
    let refused = limited(&s, "max_host_calls_in_flight");
    assert!(refused >= 1000.0, "most of the flood is refused past the cap, counted: {refused}");
    // The worker that made them is not harmed: refusals are answers, not kills.
    assert_eq!(worker_pid(&s), pid);
    assert_eq!(s.call("hostile", "ok", "{}").status, 200);
}

#[test]
fn a_host_call_over_the_cap_gets_an_error_naming_the_limit() {
    let s = Server::start_with(
        &[
            hostile("permissions: [\"call:sink\"]\nhealth_check: { interval_ms: 0 }"),
            PluginSpec::with(
                "sink",
                "xcore-fixture-misbehave",
                "resources: { concurrency: 4, timeout_ms: 20000 }",
            ),
            echo(),
        ],
        "sandbox:\n  max_host_calls_in_flight: 4\n",
    );
    // Four forged requests hold every slot (the sink sleeps); the plugin's own request
    // that follows is refused at once with an error that names the limit.
    let payload = json!({ "plugin": "sink", "action": "sleep", "payload": { "ms": 3000 } });
    let r = s.call("hostile", "flood_then_call", &json!({ "n": 4, "payload": payload }).to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["code"], "overloaded", "{v}");
    assert_eq!(v["status"], 503, "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains("the limit is 4 (sandbox.max_host_calls_in_flight)"), "{message}");
    assert_eq!(limited(&s, "max_host_calls_in_flight"), 1.0);
}

#[test]
fn a_10_gb_line_on_stdout_does_not_grow_the_host() {
    let s = Server::start(&[hostile("health_check: { interval_ms: 0 }"), echo()]);
    let total: u64 = 10 << 30;
    let done = s.plugins_dir().join("hostile/data/line_done");
    under_attack(&s, "one 10 GB line on stdout", || {
        let r = s.call("hostile", "big_line", &json!({ "bytes": total }).to_string());
        assert_eq!(r.status, 200, "{}", r.body);
        wait_until("the 10 GB line was not written", Duration::from_secs(600), || done.exists());
    });
    wait_until("the dropped bytes were not counted", Duration::from_secs(30), || {
        metric(&s, "xcore_sandbox_dropped_output_bytes_total{plugin=\"hostile\"}")
            >= (total - (16 << 10)) as f64
    });
    let out = s.output();
    assert!(
        out.contains("more bytes dropped: sandbox.log_line_max_bytes is 16384"),
        "the cut line is logged"
    );
    assert!(limited(&s, "log_line_max_bytes") >= 1.0);
    assert_eq!(s.call("hostile", "ok", "{}").status, 200, "the plugin itself is not punished for printing");
}

#[test]
fn a_flood_of_log_frames_is_rate_limited_and_counted() {
    let s = Server::start(&[hostile("health_check: { interval_ms: 0 }"), echo()]);
    let r = under_attack(&s, "100,000 forged Log frames of 1 KiB, then 4 of 8 MiB", || {
        let r = s.call("hostile", "log_flood", &json!({ "n": 100_000, "bytes": 1024 }).to_string());
        let big = s.call("hostile", "log_flood", &json!({ "n": 4, "bytes": 8 << 20 }).to_string());
        assert_eq!(big.status, 200, "{}", big.body);
        r
    });
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(limited(&s, "log_lines_per_second") >= 50_000.0, "the excess lines are dropped and counted");
    let forwarded = s.output().matches(&"L".repeat(1024)).count();
    assert!(forwarded < 5_000, "at most the rate's worth of lines reach the log: {forwarded}");
    assert!(s.output().contains("sandbox.log_lines_per_second"), "the drop is reported, naming the limit");
}

#[test]
fn forged_replies_with_unknown_ids_are_dropped() {
    let s = Server::start(&[hostile("health_check: { interval_ms: 0 }"), echo()]);
    let pid = worker_pid(&s);
    let r = under_attack(&s, "10,000 Reply frames with unknown ids", || {
        s.call("hostile", "unknown_replies", &json!({ "n": 10_000 }).to_string())
    });
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["sent"], 10_000, "the call got its own reply, not a forged one");
    assert!(limited(&s, "unknown_reply") >= 10_000.0);
    assert_eq!(worker_pid(&s), pid);
}

#[test]
fn garbage_and_oversized_frames_kill_the_worker_and_it_is_replaced() {
    let s = Server::start(&[hostile("health_check: { interval_ms: 0 }"), echo()]);
    for (action, why) in [("garbage", "protocol error: malformed frame"), ("oversized", "over the limit")] {
        let pid = worker_pid(&s);
        let r = under_attack(&s, &format!("{action} frame"), || s.call("hostile", action, "{}"));
        assert_eq!((r.status, r.code().as_str()), (502, "plugin_crashed"), "{action}: {}", r.body);
        assert!(r.body.contains(why), "{action}: {}", r.body);
        replaced(&s, pid);
    }
    assert!(limited(&s, "protocol_violation") >= 2.0);
}

#[test]
fn a_worker_that_stops_reading_is_killed_within_its_health_interval_despite_a_large_pending_request() {
    let s = Server::start_full(
        &[
            hostile(
                "resources: { concurrency: 2, timeout_ms: 60000 }\nhealth_check: { interval_ms: 2000, timeout_ms: 500 }",
            ),
            echo(),
        ],
        "",
        &[("XCORE__SERVER__BODY_LIMIT_BYTES", "20000000")],
    );
    let pid = worker_pid(&s);
    let big = json!({ "blob": "y".repeat(12 << 20) }).to_string();
    let (frozen, pending) = under_attack(&s, "worker stopped (SIGSTOP) with a 12 MB request pending", || {
        std::thread::scope(|scope| {
            let started = Instant::now();
            let frozen = scope.spawn(|| s.call("hostile", "freeze", "{}"));
            std::thread::sleep(Duration::from_millis(100));
            // More than the socket buffer holds: the host's write to a stopped worker
            // cannot finish.
            let pending = s.post("/api/v1/plugins/hostile/call/ok", &big);
            let frozen = frozen.join().unwrap();
            eprintln!(
                "FIGURES freeze: both answered within {} ms: {} {} / {} {}",
                started.elapsed().as_millis(),
                frozen.status,
                frozen.body,
                pending.status,
                pending.body
            );
            (frozen, pending)
        })
    });
    for r in [&frozen, &pending] {
        assert_eq!(r.status, 502, "{}\n{}", r.body, s.output());
        assert_eq!(r.code(), "plugin_crashed", "{}", r.body);
        // Killed by the health check, long before the 60 s deadline.
        assert!(r.body.contains("health check got no answer"), "{}", r.body);
    }
    replaced(&s, pid);
}

#[test]
fn a_worker_that_dies_while_a_forked_child_holds_its_sockets_is_seen_dead_at_once() {
    // The manifest grants `process` (the permission the confinement uses to allow fork).
    let s = Server::start(&[
        hostile("permissions: [process]\nresources: { timeout_ms: 20000 }\nhealth_check: { interval_ms: 0 }"),
        echo(),
    ]);
    let pid = worker_pid(&s);
    let r = under_attack(&s, "fork a child keeping the sockets, then SIGKILL itself", || {
        let started = Instant::now();
        let r = s.call("hostile", "fork_and_die", "{}");
        eprintln!(
            "FIGURES fork_and_die answered {} after {} ms: {}",
            r.status,
            started.elapsed().as_millis(),
            r.body
        );
        r
    });
    assert_eq!((r.status, r.code().as_str()), (502, "plugin_crashed"), "{}", r.body);
    assert!(r.body.contains("killed by SIGKILL"), "the exit names the signal, not a timeout: {}", r.body);
    // The child's recorded pid is the one in the worker's pid namespace (the `process`
    // permission runs workers in one), so it is found by its working directory instead:
    // the plugin's data/, inherited from the worker.
    let child: u64 = std::fs::read_to_string(s.plugins_dir().join("hostile/data/child.pid"))
        .expect("the fixture recorded its child")
        .trim()
        .parse()
        .unwrap();
    let data = std::fs::canonicalize(s.plugins_dir().join("hostile/data")).unwrap();
    wait_until(
        &format!("the forked child ({child} in its namespace) outlived its worker"),
        Duration::from_secs(10),
        || processes_in(&data, child).is_empty(),
    );
    replaced(&s, pid);
    assert_eq!(s.info("hostile")["sandbox"]["last_exit"], "killed by SIGKILL");
}

#[test]
fn a_reply_over_the_frame_limit_is_always_a_clean_413() {
    let s = Server::start(&[
        hostile("resources: { max_memory_mb: 64 }\nhealth_check: { interval_ms: 0 }"),
        echo(),
    ]);
    let pid = worker_pid(&s);
    under_attack(&s, "5 replies of 32 MB (frame limit 16 MiB, max_memory_mb 64)", || {
        for i in 0..5 {
            let r = s.call("hostile", "big_reply", &json!({ "bytes": 32 << 20 }).to_string());
            assert_eq!(
                (r.status, r.code().as_str()),
                (413, "payload_too_large"),
                "run {i}: {}",
                &r.body[..r.body.len().min(300)]
            );
            assert!(r.body.contains("sandbox.max_frame_bytes"), "{}", r.body);
        }
    });
    // A reply of the maximum size still fits in the memory limit.
    let r = s.call("hostile", "big_reply", &json!({ "bytes": (16 << 20) - 64 }).to_string());
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(300)]);
    assert_eq!(worker_pid(&s), pid, "the worker survived every refused reply");
}

#[test]
fn a_sandboxed_plugin_with_concurrency_4_shuts_down_at_every_stop() {
    let s = Server::start(&[hostile("resources: { concurrency: 4 }"), echo()]);
    let marker = s.plugins_dir().join("hostile/data/shutdowns");
    let count = || std::fs::read_to_string(&marker).map(|t| t.lines().count()).unwrap_or(0);
    let stops = 20;
    let mut slowest = Duration::ZERO;
    for i in 0..stops {
        // A few calls first, so that the worker's threads are in every state.
        for _ in 0..3 {
            assert_eq!(s.call("hostile", "ok", "{}").status, 200);
        }
        let started = Instant::now();
        let r = if i % 2 == 0 {
            s.admin("/api/v1/plugins/hostile/reload")
        } else {
            let r = s.admin("/api/v1/plugins/hostile/unload");
            assert_eq!(r.status, 200, "{}", r.body);
            s.admin("/api/v1/plugins/hostile/load")
        };
        assert_eq!(r.status, 200, "stop {i}: {}", r.body);
        // The retired worker runs the plugin's `shutdown` (which leaves a line) and exits.
        wait_until(&format!("stop {i}: shutdown did not run"), Duration::from_secs(30), || count() > i);
        slowest = slowest.max(started.elapsed());
    }
    assert_eq!(count(), stops, "shutdown ran once per stop");
    eprintln!("FIGURES shutdown with concurrency 4: {stops} stops, slowest {} ms", slowest.as_millis());
    // The drain timeout is 5 s here (server.shutdown_timeout_seconds): a stop stranded
    // on the reader lock takes all of it, and its shutdown never runs.
    assert!(slowest < Duration::from_secs(4), "a stop took {} ms", slowest.as_millis());
}
