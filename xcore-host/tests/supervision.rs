//! The trusted tier under its supervisor, through real HTTP: panics, timeouts,
//! rate limits, restart intensity and reset, and why the SDK's panic guard exists.

mod common;

use std::time::{Duration, Instant};

use common::{PluginSpec, Server};

fn misbehave(extra: &str) -> PluginSpec {
    PluginSpec::with("misbehave", "xcore-fixture-misbehave", extra)
}

#[test]
fn a_panicking_action_gives_500_and_the_next_call_works() {
    let s = Server::start(&[misbehave("")]);
    let r = s.call("misbehave", "panic", "{}");
    assert_eq!((r.status, r.code().as_str()), (500, "plugin_panic"));
    assert!(r.json()["detail"].as_str().unwrap().contains("boom requested"), "{}", r.body);
    let r = s.call("misbehave", "ok", r#"{"n":1}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let info = s.info("misbehave");
    assert_eq!(info["counters"]["panics"], 1);
    assert_eq!(info["generation"], 1, "one caught panic does not restart the instance");
}

#[test]
fn panics_in_a_row_count_as_a_crash_and_restart_the_instance() {
    let s = Server::start(&[misbehave("restart: { backoff_initial_ms: 10 }")]);
    for _ in 0..3 {
        assert_eq!(s.call("misbehave", "panic", "{}").status, 500);
    }
    let info = s.wait_state("misbehave", "ready", Duration::from_secs(10));
    assert_eq!(info["generation"], 2, "{info}");
    assert_eq!(info["restarts"], 1);
}

#[test]
fn an_endless_loop_times_out_while_others_answer_then_a_fresh_instance_serves() {
    let s = Server::start(&[
        misbehave("resources: { timeout_ms: 500 }\nrestart: { backoff_initial_ms: 50 }"),
        PluginSpec::echo(),
    ]);
    let base = s.base.clone();
    let spinner = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let started = Instant::now();
        let mut resp = agent.post(format!("{base}/api/v1/plugins/misbehave/call/spin")).send("{}").unwrap();
        let elapsed = started.elapsed();
        (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap(), elapsed)
    });
    // Meanwhile other plugins keep answering.
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..5 {
        let r = s.call("echo", "echo", "1");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let (status, body, elapsed) = spinner.join().unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("\"code\":\"timeout\""), "{body}");
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(
        elapsed <= Duration::from_millis(550),
        "timeout answered after {elapsed:?}, deadline 500 ms + 10%"
    );

    let info = s.wait_state("misbehave", "ready", Duration::from_secs(10));
    assert_eq!(info["generation"], 2, "{info}");
    assert_eq!(info["abandoned_threads"], 1, "{info}");
    assert_eq!(info["counters"]["timeouts"], 1);
    let r = s.call("misbehave", "ok", "{}");
    assert_eq!(r.status, 200, "{}", r.body);
    let metrics = s.get("/metrics").body;
    assert!(metrics.contains(r#"xcore_plugin_abandoned_threads{plugin="misbehave"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"xcore_plugin_restarts_total{plugin="misbehave"} 1"#), "{metrics}");
}

#[test]
fn the_rate_limit_answers_429_with_retry_after() {
    let s = Server::start(&[misbehave("resources: { rate_limit: { calls: 2, period_seconds: 30 } }")]);
    assert_eq!(s.call("misbehave", "ok", "{}").status, 200);
    assert_eq!(s.call("misbehave", "ok", "{}").status, 200);
    let r = s.call("misbehave", "ok", "{}");
    assert_eq!((r.status, r.code().as_str()), (429, "rate_limited"));
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(s.info("misbehave")["counters"]["rate_limited"], 1);
    assert!(s.get("/metrics").body.contains(r#"xcore_plugin_rate_limited_total{plugin="misbehave"} 1"#));
}

#[test]
fn exceeding_the_restart_intensity_fails_the_plugin_until_reset() {
    let s = Server::start(&[misbehave(
        "resources: { timeout_ms: 200 }\nrestart: { max_restarts: 1, within_seconds: 60, backoff_initial_ms: 20 }",
    )]);
    assert_eq!(s.call("misbehave", "spin", "{}").status, 504);
    s.wait_state("misbehave", "ready", Duration::from_secs(10));
    assert_eq!(s.call("misbehave", "spin", "{}").status, 504);
    let info = s.wait_state("misbehave", "failed", Duration::from_secs(10));
    assert!(info["last_error"].as_str().unwrap().contains("restart intensity exceeded"), "{info}");

    let r = s.call("misbehave", "ok", "{}");
    assert_eq!((r.status, r.code().as_str()), (503, "unavailable"));
    // Failed after running: load refuses, reset brings it back.
    let r = s.admin("/api/v1/plugins/misbehave/load");
    assert_eq!((r.status, r.code().as_str()), (409, "conflict"));
    let r = s.admin("/api/v1/plugins/misbehave/reset");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "ready");
    assert_eq!(s.call("misbehave", "ok", "{}").status, 200);
}

/// Why the SDK wraps every entry point in `catch_unwind`: a plugin that implements the
/// raw contract without it and panics takes the whole host down (abi_stable's guard
/// turns a panic at the `extern "C"` boundary into an exit of the process).
#[test]
fn panic_guard_without_it_a_plugin_panic_ends_the_host() {
    let mut s = Server::start(&[PluginSpec::with("unguarded", "xcore-fixture-unguarded-panic", "")]);
    assert_eq!(s.info("unguarded")["state"], "ready");
    // The call never gets an HTTP answer: the process is gone.
    let r = s.try_post("/api/v1/plugins/unguarded/call/anything", b"{}", None);
    assert!(r.is_err() || r.as_ref().is_ok_and(|r| r.status >= 500));
    let status = s.wait_exit(Duration::from_secs(10)).expect("the host should have died");
    assert!(!status.success(), "{status}");
    assert!(s.output().contains("unguarded panic crossing the boundary"), "{}", s.output());
}
