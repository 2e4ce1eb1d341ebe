//! Load is not failure, in both tiers, through real HTTP: a burst against a slow plugin
//! gets 200s and 503 `overloaded` (with `Retry-After`), never timeouts or restarts; a
//! call that got its 503 never runs; a call's deadline starts when it starts; per-client
//! rate limits; and the bound on abandoned threads of a trusted plugin.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{PluginSpec, Server, TOKEN};
use serde_json::Value;

const TIERS: [&str; 2] = ["trusted", "sandboxed"];

/// The burst tests each run 300 client threads: one at a time, so that they do not
/// measure each other.
static HEAVY: Mutex<()> = Mutex::new(());

fn slow(mode: &str, resources: &str) -> PluginSpec {
    PluginSpec::with(
        "slow",
        "xcore-fixture-misbehave",
        &format!(
            "execution_mode: {mode}\nresources: {{ concurrency: 1, rate_limit: {{ calls: 0, period_seconds: 1 }}{resources} }}"
        ),
    )
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into()
}

fn executions(s: &Server) -> u64 {
    let r = s.call("slow", "executions", "{}");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["executions"].as_u64().unwrap()
}

fn metric(s: &Server, series: &str) -> Option<f64> {
    s.get("/metrics")
        .body
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    overloaded: AtomicU64,
    /// Anything but 200 and a well-formed 503 `overloaded`: (status, body) samples.
    other: Mutex<Vec<String>>,
}

/// 300 concurrent clients, each calling `count_sleep` (100 ms) as fast as answers come,
/// for 20 s, on a plugin with `concurrency: 1` (10 calls/s at most).
fn burst(mode: &str) {
    let _one_at_a_time = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    // A deadline the old behaviour (queueing counted in it) would have hit within 20 s.
    let s = Server::start(&[slow(mode, ", timeout_ms: 5000")]);
    let url = format!("{}/api/v1/plugins/slow/call/count_sleep", s.base);
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..300)
        .map(|_| {
            let (url, tally, stop) = (url.clone(), tally.clone(), stop.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    // Keep-alive, one connection per client; a generous bound per request.
                    let agent = agent(Duration::from_secs(60));
                    while !stop.load(Ordering::SeqCst) {
                        let outcome = agent.post(&url).send(br#"{"ms":100}"#.as_slice());
                        let mut resp = match outcome {
                            Ok(r) => r,
                            Err(e) => {
                                tally.other.lock().unwrap().push(format!("transport error: {e}"));
                                continue;
                            }
                        };
                        let status = resp.status().as_u16();
                        let retry =
                            resp.headers().get("retry-after").map(|v| v.to_str().unwrap_or("").to_string());
                        let body = resp.body_mut().read_to_string().unwrap_or_default();
                        let code = serde_json::from_str::<Value>(&body)
                            .ok()
                            .and_then(|v| v["code"].as_str().map(str::to_string));
                        match (status, code.as_deref(), retry.as_deref()) {
                            (200, _, _) => {
                                tally.ok.fetch_add(1, Ordering::SeqCst);
                            }
                            (503, Some("overloaded"), Some(r)) if r.parse::<u64>().is_ok_and(|r| r >= 1) => {
                                tally.overloaded.fetch_add(1, Ordering::SeqCst);
                            }
                            _ => tally
                                .other
                                .lock()
                                .unwrap()
                                .push(format!("{status} retry-after {retry:?}: {body}")),
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_secs(20));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, overloaded) = (tally.ok.load(Ordering::SeqCst), tally.overloaded.load(Ordering::SeqCst));
    let other = tally.other.lock().unwrap();
    println!("{mode}: {ok} x 200, {overloaded} x 503 overloaded, {} other", other.len());
    assert!(
        other.is_empty(),
        "{mode}: {} answers that are neither 200 nor 503 overloaded, e.g. {:?}",
        other.len(),
        &other[..other.len().min(5)]
    );
    assert!(ok > 0, "{mode}: no call was served");
    assert!(
        overloaded > ok,
        "{mode}: 300 clients against 10 calls/s must overload it ({ok} x 200, {overloaded} x 503)"
    );

    // Load is not failure: same instance, still ready, nothing timed out or was abandoned.
    let info = s.info("slow");
    assert_eq!(info["state"], "ready", "{info}");
    assert_eq!(info["generation"], 1, "{info}");
    assert_eq!(info["restarts"], 0, "{info}");
    assert_eq!(info["abandoned_threads"], 0, "{info}");
    assert_eq!(info["counters"]["timeouts"], 0, "{info}");
    assert_eq!(info["counters"]["errors"], 0, "{info}");
    assert_eq!(info["counters"]["overloaded"], overloaded, "{info}");

    // It answers at once when the burst ends: nothing stale runs ahead of a new call.
    let r = agent(Duration::from_secs(60))
        .post(&url)
        .send(br#"{"ms":1}"#.as_slice())
        .map(|mut r| (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()));
    let (status, body) = r.unwrap_or_else(|e| panic!("{mode}: the call after the burst failed: {e}"));
    assert_eq!(status, 200, "{mode}: the call right after the burst: {body}");

    // Each call ran at most once: every execution was a 200 (plus the call just above),
    // and every 503 was dropped before it ran.
    assert_eq!(executions(&s), ok + 1, "{mode}: executions against 200s");
    let info = s.info("slow");
    assert_eq!(info["counters"]["shed"], overloaded, "{mode}: every 503 was shed: {info}");
    assert_eq!(metric(&s, r#"xcore_plugin_calls_shed_total{plugin="slow"}"#), Some(overloaded as f64));
    assert_eq!(metric(&s, r#"xcore_plugin_calls_overloaded_total{plugin="slow"}"#), Some(overloaded as f64));
    assert_eq!(info["generation"], 1, "{info}");
}

#[test]
fn a_burst_on_a_slow_trusted_plugin_is_shed_not_failed() {
    burst("trusted");
}

#[test]
fn a_burst_on_a_slow_sandboxed_plugin_is_shed_not_failed() {
    burst("sandboxed");
}

/// `timeout_ms` counts from when the call starts: two 300 ms calls on one worker with a
/// 400 ms deadline both succeed, although the second ends 600 ms after it was sent.
#[test]
fn the_deadline_starts_when_the_call_starts_not_when_it_is_queued() {
    for mode in TIERS {
        let s = Server::start(&[slow(mode, ", timeout_ms: 400, queue_timeout_ms: 5000")]);
        let url = format!("{}/api/v1/plugins/slow/call/count_sleep", s.base);
        let calls: Vec<_> = (0..2)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let mut r =
                        agent(Duration::from_secs(60)).post(&url).send(br#"{"ms":300}"#.as_slice()).unwrap();
                    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
                })
            })
            .collect();
        for c in calls {
            let (status, body) = c.join().unwrap();
            assert_eq!(status, 200, "{mode}: {body}");
        }
        let info = s.info("slow");
        assert_eq!(
            (info["generation"].as_u64(), info["counters"]["timeouts"].as_u64()),
            (Some(1), Some(0)),
            "{mode}: {info}"
        );
        assert_eq!(executions(&s), 2, "{mode}");
    }
}

/// A call that waits longer than `queue_timeout_ms` gets 503 `overloaded` with
/// `Retry-After`, and never runs, not even once the worker is free again.
#[test]
fn a_call_past_its_queue_timeout_is_refused_and_never_runs() {
    for mode in TIERS {
        let s = Server::start(&[slow(mode, ", queue_timeout_ms: 200")]);
        let base = s.base.clone();
        let long = std::thread::spawn(move || {
            let url = format!("{base}/api/v1/plugins/slow/call/count_sleep");
            agent(Duration::from_secs(60))
                .post(&url)
                .send(br#"{"ms":1500}"#.as_slice())
                .unwrap()
                .status()
                .as_u16()
        });
        // The long call has reached the plugin once the registry counted it (asking the
        // plugin itself would queue behind it); it starts microseconds later.
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.info("slow")["counters"]["calls"] == 0 {
            assert!(Instant::now() < deadline, "{mode}: the long call never arrived");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        let r = s.call("slow", "count_sleep", r#"{"ms":1}"#);
        assert_eq!((r.status, r.code().as_str()), (503, "overloaded"), "{mode}: {}", r.body);
        assert_eq!(r.header("retry-after"), Some("1"), "{mode}");
        let detail = r.json()["detail"].as_str().unwrap().to_string();
        assert!(
            detail.contains("within 200 ms") && detail.contains("resources.concurrency"),
            "{mode}: {detail}"
        );
        assert_eq!(long.join().unwrap(), 200, "{mode}");
        // The worker is free now; the refused call must not have run meanwhile.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(executions(&s), 1, "{mode}: the refused call ran anyway");
        let info = s.info("slow");
        assert_eq!(info["counters"]["overloaded"], 1, "{mode}: {info}");
        assert_eq!(info["counters"]["shed"], 1, "{mode}: {info}");
        assert_eq!(info["counters"]["errors"], 0, "{mode}: {info}");
        assert_eq!(info["limits"]["queue_timeout_ms"], 200, "{mode}: {info}");
        assert_eq!(info["generation"], 1, "{mode}: {info}");
    }
}

fn call_as(agent: &ureq::Agent, url: &str, client: Option<&str>) -> (u16, Option<String>, String) {
    let mut req = agent.post(url);
    if let Some(c) = client {
        req = req.header("x-client", c);
    }
    let mut r = req.send(b"{}".as_slice()).unwrap();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), retry, r.body_mut().read_to_string().unwrap())
}

/// The per-client limit, with clients told apart by the header the operator names: one
/// client over its limit does not stop another, and the 429 says which limit it hit.
#[test]
fn the_per_client_rate_limit_tells_clients_apart_by_the_configured_header() {
    let s = Server::start_full(
        &[
            PluginSpec::with(
                "misbehave",
                "xcore-fixture-misbehave",
                "resources: { rate_limit: { calls: 0, per_client: 3, period_seconds: 60 } }",
            ),
            PluginSpec::with(
                "shared",
                "xcore-fixture-misbehave",
                "resources: { rate_limit: { calls: 2, period_seconds: 60 } }",
            ),
        ],
        "",
        &[("XCORE__SERVER__CLIENT_IP_HEADER", "X-Client")],
    );
    let a = agent(Duration::from_secs(30));
    let url = format!("{}/api/v1/plugins/misbehave/call/ok", s.base);
    for i in 0..3 {
        assert_eq!(call_as(&a, &url, Some("10.0.0.1")).0, 200, "call {i} of client 1");
    }
    let (status, retry, body) = call_as(&a, &url, Some("10.0.0.1"));
    assert_eq!(status, 429, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "rate_limited");
    assert!(v["detail"].as_str().unwrap().contains("per client"), "{body}");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=120).contains(&retry), "{retry}");
    // Client 1 is over its limit; client 2 is not.
    for i in 0..3 {
        let (status, _, body) = call_as(&a, &url, Some("10.0.0.2"));
        assert_eq!(status, 200, "call {i} of client 2: {body}");
    }
    // Behind a chain of proxies the last entry (what the nearest proxy saw) counts.
    assert_eq!(call_as(&a, &url, Some("203.0.113.9, 10.0.0.1")).0, 429);
    // Without the header: the peer address is the client.
    for _ in 0..3 {
        assert_eq!(call_as(&a, &url, None).0, 200);
    }
    assert_eq!(call_as(&a, &url, None).0, 429);
    let info = s.info("misbehave");
    assert_eq!(info["counters"]["rate_limited"], 3, "{info}");
    assert_eq!(info["counters"]["rate_limited_per_client"], 3, "{info}");
    assert_eq!(info["limits"]["rate_limit"]["per_client"], 3, "{info}");
    assert_eq!(metric(&s, r#"xcore_plugin_client_rate_limited_total{plugin="misbehave"}"#), Some(3.0));
    assert_eq!(metric(&s, r#"xcore_plugin_rate_limit_clients{plugin="misbehave"}"#), Some(3.0));

    // The plugin-wide limit names itself.
    let url = format!("{}/api/v1/plugins/shared/call/ok", s.base);
    assert_eq!(call_as(&a, &url, Some("1")).0, 200);
    assert_eq!(call_as(&a, &url, Some("2")).0, 200);
    let (status, _, body) = call_as(&a, &url, Some("3"));
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("resources.rate_limit.calls"), "{body}");
}

/// A trusted plugin that keeps leaving threads stuck is not restarted in-process
/// forever: past `plugins.max_abandoned_threads` it is failed, and told to go sandboxed.
#[test]
fn past_the_abandoned_thread_bound_a_trusted_plugin_fails_and_points_to_the_sandbox() {
    let s = Server::start_with(
        &[PluginSpec::with(
            "misbehave",
            "xcore-fixture-misbehave",
            "resources: { timeout_ms: 200 }\nrestart: { max_restarts: 10, within_seconds: 60, backoff_initial_ms: 20 }",
        )],
        "plugins:\n  watch: false\n  max_abandoned_threads: 1\n",
    );
    let r = s.call("misbehave", "spin", "{}");
    assert_eq!((r.status, r.code().as_str()), (504, "timeout"), "{}", r.body);
    // One stuck thread is within the bound: restarted.
    let info = s.wait_state("misbehave", "ready", Duration::from_secs(10));
    assert_eq!(
        (info["generation"].as_u64(), info["abandoned_threads"].as_u64()),
        (Some(2), Some(1)),
        "{info}"
    );
    let r = s.call("misbehave", "spin", "{}");
    assert_eq!((r.status, r.code().as_str()), (504, "timeout"), "{}", r.body);
    let info = s.wait_state("misbehave", "failed", Duration::from_secs(10));
    assert_eq!(info["abandoned_threads"], 2, "{info}");
    assert_eq!(info["restarts"], 1, "not restarted again: {info}");
    let err = info["last_error"].as_str().unwrap();
    for needle in [
        "2 threads are stuck",
        "limit of 1",
        "plugins.max_abandoned_threads",
        "execution_mode: sandboxed",
        "/reset",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    // A client without a token learns where to look; a reader sees the reason itself.
    let r = s.call("misbehave", "ok", "{}");
    assert_eq!((r.status, r.code().as_str()), (503, "unavailable"));
    assert!(r.json()["detail"].as_str().unwrap().contains("GET /api/v1/plugins/misbehave"), "{}", r.body);
    let r = s.post_with("/api/v1/plugins/misbehave/call/ok", "{}", Some(TOKEN));
    assert_eq!((r.status, r.code().as_str()), (503, "unavailable"));
    assert!(r.json()["detail"].as_str().unwrap().contains("max_abandoned_threads"), "{}", r.body);
    assert_eq!(metric(&s, "xcore_abandoned_threads_limit"), Some(1.0));
    assert_eq!(metric(&s, r#"xcore_plugin_abandoned_threads{plugin="misbehave"}"#), Some(2.0));
}

/// A caller that goes away while its call is still queued (here an event handler past
/// its own timeout, whose future is dropped) has given up too: its call is dropped unrun
/// when a worker reaches it. (An HTTP/1 client that hangs up is not noticed by actix-web
/// while the handler waits, actix/actix-web#1313, so it is shed only by its queue
/// timeout.)
#[test]
fn a_call_whose_caller_went_away_while_queued_never_runs() {
    for mode in TIERS {
        let s = Server::start(&[PluginSpec::with(
            "slow",
            "xcore-fixture-misbehave",
            &format!(
                "execution_mode: {mode}\nresources: {{ concurrency: 1, queue_timeout_ms: 20000, rate_limit: {{ calls: 0, period_seconds: 1 }} }}\n\
                 hooks:\n  - {{ event: \"test.go\", action: count_sleep, timeout_ms: 300 }}"
            ),
        )]);
        let base = s.base.clone();
        let long = std::thread::spawn(move || {
            let url = format!("{base}/api/v1/plugins/slow/call/count_sleep");
            agent(Duration::from_secs(60))
                .post(&url)
                .send(br#"{"ms":1500}"#.as_slice())
                .unwrap()
                .status()
                .as_u16()
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.info("slow")["counters"]["calls"] == 0 {
            assert!(Instant::now() < deadline, "{mode}: the long call never arrived");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        // The handler's call queues behind the long one; the handler gives up at 300 ms.
        let r = s.admin("/api/v1/events/test.go");
        assert_eq!(r.status, 200, "{mode}: {}", r.body);
        assert!(r.body.contains("handler_timeout"), "{mode}: {}", r.body);
        assert_eq!(long.join().unwrap(), 200, "{mode}");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(executions(&s), 1, "{mode}: the call of the handler that gave up ran anyway");
        let info = s.info("slow");
        assert_eq!(info["counters"]["overloaded"], 0, "{mode}: {info}");
        if mode == "trusted" {
            assert_eq!(info["counters"]["shed"], 1, "{mode}: {info}");
        }
        assert_eq!(info["generation"], 1, "{mode}: {info}");
    }
}
