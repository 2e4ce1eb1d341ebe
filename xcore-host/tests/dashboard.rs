//! The dashboard (`/ui/`) in a real headless browser, against the real `xcore` binary
//! with real plugins, and the event stream (`GET /api/v1/stream`) it lives on.
//!
//! The browser test needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them); without them it fails, naming what to install. It writes a screenshot of each
//! page to `target/screenshots/dashboard-*.png`; with `XCORE_UPDATE_SCREENSHOTS=1` to
//! `docs/images/`, which docs/dashboard.md shows.

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{PluginSpec, Server, TOKEN};
use serde_json::{json, Value};
use webdriver::{Driver, Session, SseReader};

const ENTER: &str = "\u{E007}";
const ESCAPE: &str = "\u{E00C}";

const JOBS: &str =
    "scheduler:\n  jobs:\n    - {id: ping, cron: '0 0 0 1 1 *', emit: dashboard.ping, payload: {n: 1}}\n";

/// `xcore token create NAME --role ROLE` against the server's runtime folder.
fn create_token(root: &Path, name: &str, role: &str) -> String {
    let runtime = root.join("runtime");
    let out = Command::new(env!("CARGO_BIN_EXE_xcore"))
        .args(["token", "create", name, "--role", role, "--runtime-dir"])
        .arg(&runtime)
        .current_dir(root)
        .output()
        .expect("run xcore token create");
    assert!(out.status.success(), "token create {name}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A server with echo, notes and `more`, a job, and a reader and an operator token.
fn start(env: &[(&str, &str)], more: Vec<PluginSpec>) -> (Server, String, String) {
    let mut tokens = Vec::new();
    let mut specs = vec![PluginSpec::echo(), PluginSpec::notes()];
    specs.extend(more);
    let s = Server::start_custom(
        |plugins| {
            common::write_plugins(plugins, &specs);
            let root = plugins.parent().unwrap();
            tokens.push(create_token(root, "viewer", "reader"));
            tokens.push(create_token(root, "ops", "operator"));
        },
        JOBS,
        env,
        &[],
    );
    let (reader, operator) = (tokens[0].clone(), tokens[1].clone());
    (s, reader, operator)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Where the screenshots go: `target/screenshots/` on every run (so a test run leaves the
/// tree clean); `docs/images/`, which docs/dashboard.md shows, with
/// `XCORE_UPDATE_SCREENSHOTS=1`.
fn screenshots_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = if std::env::var_os("XCORE_UPDATE_SCREENSHOTS").is_some() {
        root.join("docs/images")
    } else {
        root.join("target/screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn shoot(b: &Session, name: &str) {
    // Let the layout settle (fonts, the stream's first events) before the picture.
    std::thread::sleep(Duration::from_millis(300));
    let png = b.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(screenshots_dir().join(format!("dashboard-{name}.png")), png).unwrap();
}

fn sign_in(b: &Session, base: &str, token: &str) {
    b.goto(&format!("{base}/ui/"));
    b.type_into("#token", token);
    b.click("#signin-submit");
    b.wait_text("#page-title", "Overview");
}

/// Clicks the action button `css`, then Confirm in the dialog.
fn act(b: &Session, css: &str) {
    b.click(css);
    b.wait("the confirmation dialog", Duration::from_secs(10), || {
        b.script("return document.getElementById('confirm').open", json!([])).as_bool().filter(|o| *o)
    });
    b.click("#confirm-ok");
}

/// Some calls, so that the counters, p50, p99 and the sparkline have something to show.
fn traffic(s: &Server, n: usize) {
    for i in 0..n {
        let r = s.call("echo", "echo", &format!(r#"{{"n": {i}}}"#));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(s.call("echo", "no_such_action", "{}").status / 100, 4, "one error for the error count");
}

fn rows(b: &Session) -> Vec<String> {
    let v = b.script(
        "return [...document.querySelectorAll('#plugins-body tr')].map(r => r.dataset.plugin)",
        json!([]),
    );
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
}

#[test]
fn the_dashboard_signs_in_shows_and_acts_in_a_real_browser() {
    let (chromium, chromedriver) = webdriver::browser_paths().unwrap_or_else(|why| panic!("{why}"));
    let (s, reader, operator) = start(&[], Vec::new());

    // The page's own answer carries the policy: no inline script or style, no framing.
    let resp = agent().get(format!("{}/ui/", s.base)).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let csp = resp.headers().get("content-security-policy").expect("a CSP header").to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("style-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(resp.headers().get("x-frame-options").unwrap(), "DENY");

    let driver = Driver::start(chromium, chromedriver);
    let b = driver.session(1280, 800);
    b.goto(&format!("{}/ui/", s.base));
    b.element("#token");
    shoot(&b, "signin");

    // Sign in as the operator: the overview counts the plugins.
    traffic(&s, 20);
    sign_in(&b, &s.base, &operator);
    b.wait_text("#who", "token:ops (operator)");
    b.wait_text("#c-total", "2");
    b.wait_text("#c-state-ready", "2");
    b.wait_text("#live", "Live");
    let url = b.script("return location.href", json!([]));
    assert!(!url.as_str().unwrap().contains(&operator), "the token is never in a URL: {url}");
    assert_eq!(b.script("return document.cookie", json!([])), "", "no cookie holds the token");
    assert_eq!(b.script("return sessionStorage.getItem('xcore.token')", json!([])), operator.as_str());
    shoot(&b, "overview");

    // The plugins table: both plugins, filterable and sortable.
    traffic(&s, 30);
    b.click("a[data-page=plugins]");
    b.wait_text("tr[data-plugin=echo] td[data-col=state]", "ready");
    b.wait_text("tr[data-plugin=notes] td[data-col=state]", "ready");
    assert_eq!(rows(&b), ["echo", "notes"]);
    b.wait_text("tr[data-plugin=echo] td[data-col=restarts]", "0 (0 of 3 in 60 s)");
    b.click("th[data-col=name] button");
    assert_eq!(rows(&b), ["notes", "echo"], "the second click sorts descending");
    b.type_into("#filter", "not");
    assert_eq!(rows(&b), ["notes"]);
    b.type_into("#filter", "");
    b.click("th[data-col=name] button");
    assert_eq!(rows(&b), ["echo", "notes"]);
    shoot(&b, "plugins");

    // Reload echo: its generation goes from 1 to 2.
    traffic(&s, 40);
    b.click("tr[data-plugin=echo] a");
    b.wait_text("#page-title", "echo");
    assert_eq!(b.wait_text("#p-generation", "1"), "1");
    traffic(&s, 25);
    act(&b, "#act-reload");
    b.wait_text("#action-notice", "Reload: done");
    b.wait_text("#p-generation", "2");
    assert_eq!(s.info("echo")["generation"], 2);
    let calls = s.info("echo")["counters"]["calls"].as_u64().unwrap();
    assert!(calls >= 115, "{calls}");
    b.wait("the call count", Duration::from_secs(20), || {
        b.text("#p-calls").filter(|t| *t == calls.to_string())
    });
    shoot(&b, "plugin");

    // Disable notes, see it disabled, enable it again.
    b.goto(&format!("{}/ui/#/plugin/notes", s.base));
    b.wait_text("#p-state", "ready");
    act(&b, "#act-disable");
    b.wait_text("#p-state", "disabled");
    assert_eq!(s.info("notes")["state"], "disabled");
    act(&b, "#act-enable");
    b.wait_text("#p-state", "ready");

    // Jobs: run one now and see its outcome.
    b.click("a[data-page=jobs]");
    b.element("button[data-run=ping]");
    act(&b, "button[data-run=ping]");
    b.wait_text("#job-notice", "Job ping: ok");
    b.wait_text("tr[data-job=ping] td[data-col=outcome]", "ok");
    shoot(&b, "jobs");

    // Events: the reload, the disable and the job's emit arrived over the stream.
    b.click("a[data-page=events]");
    b.wait_text("#emits-table", "plugin.reloaded");
    b.wait_text("#emits-table", "plugin.disabled");
    b.wait_text("#emits-table", "dashboard.ping");
    b.wait_text("#interceptors-table", "api.stream");
    shoot(&b, "events");

    // Audit: each action, by the operator's token.
    b.click("a[data-page=audit]");
    b.wait_text("#audit-table", "reload");
    let audit = b.wait_text("#audit-table", "job.run");
    assert!(audit.contains("token:ops") && audit.contains("disable") && audit.contains("enable"), "{audit}");
    shoot(&b, "audit");

    // The keyboard: Enter on a link of the navigation opens its page, whose title takes
    // the focus; Escape in a confirmation dialog cancels the action.
    b.keys("a[data-page=plugins]", ENTER);
    b.wait_text("#page-title", "Plugins");
    b.wait("the focus on the page title", Duration::from_secs(10), || {
        (b.script("return document.activeElement.id", json!([])) == "page-title").then_some(())
    });
    b.goto(&format!("{}/ui/#/plugin/echo", s.base));
    b.wait_text("#p-generation", "2");
    b.keys("#act-reload", ENTER);
    b.wait("the confirmation dialog", Duration::from_secs(10), || {
        b.script("return document.getElementById('confirm').open", json!([])).as_bool().filter(|o| *o)
    });
    b.keys("#confirm-cancel", ESCAPE);
    b.wait("the dialog to close", Duration::from_secs(10), || {
        b.script("return document.getElementById('confirm').open", json!([])).as_bool().filter(|o| !*o)
    });
    assert_eq!(b.script("return document.activeElement.id", json!([])), "act-reload", "the focus goes back");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.info("echo")["generation"], 2, "a cancelled reload does nothing");

    // A reader sees, but a reload is refused and the API's problem is shown.
    b.click("#signout");
    b.wait_text("#page-title", "Sign in");
    assert_eq!(b.script("return sessionStorage.getItem('xcore.token')", json!([])), Value::Null);
    sign_in(&b, &s.base, &reader);
    b.goto(&format!("{}/ui/#/plugin/echo", s.base));
    b.wait_text("#p-generation", "2");
    b.wait_text("#reader-note", "reader");
    act(&b, "#act-reload");
    let refused = b.wait_text("#action-error", "403 forbidden");
    assert!(refused.contains("needs the operator role") && refused.contains("'viewer'"), "{refused}");
    assert_eq!(s.info("echo")["generation"], 2, "the refused reload changed nothing");
    shoot(&b, "refused");

    // A phone's width: the page does not scroll sideways (tables scroll inside).
    b.resize(390, 844);
    b.goto(&format!("{}/ui/#/plugins", s.base));
    b.wait_text("tr[data-plugin=echo] td[data-col=state]", "ready");
    let overflow = b.script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
        json!([]),
    );
    assert!(overflow.as_i64().unwrap() <= 0, "the page is wider than the phone by {overflow} px");
    shoot(&b, "phone");

    // No console error: no script error, no CSP violation. The one failed request the
    // browser reports is the refused reload (403), which the page showed.
    no_console_errors(&b, "/api/v1/plugins/echo/reload", "403");
}

/// Fails on any warning or error in the browser's log except the one failed request
/// expected (`path` answered `status`), which must be there: it proves the log is read.
fn no_console_errors(b: &Session, path: &str, status: &str) {
    let log = b.browser_log();
    let expected = |e: &Value| {
        let m = e["message"].as_str().unwrap_or_default();
        e["source"] == "network" && m.contains(path) && m.contains(status)
    };
    let unexpected: Vec<&Value> = log
        .iter()
        .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
        .filter(|e| !expected(e))
        .collect();
    assert!(unexpected.is_empty(), "browser console errors: {unexpected:#?}");
    assert!(log.iter().any(expected), "{path} {status} is not in the browser log: {log:#?}");
}

#[test]
fn without_the_stream_the_dashboard_polls() {
    let (chromium, chromedriver) = webdriver::browser_paths().unwrap_or_else(|why| panic!("{why}"));
    // server.max_streams: 0 refuses every stream: the page must fall back to polling.
    let (s, _, operator) = start(&[("XCORE__SERVER__MAX_STREAMS", "0")], Vec::new());
    let driver = Driver::start(chromium, chromedriver);
    let b = driver.session(1280, 800);
    sign_in(&b, &s.base, &operator);
    let live = b.wait_text("#live", "Polling");
    let title = b.script("return document.getElementById('live').title", json!([]));
    assert!(title.as_str().unwrap().contains("too_many_streams"), "the badge says why: {live} {title}");
    b.goto(&format!("{}/ui/#/plugins", s.base));
    b.wait_text("tr[data-plugin=echo] td[data-col=generation]", "1");
    // A change the page did not make shows up by polling alone.
    assert_eq!(s.admin("/api/v1/plugins/echo/reload").status, 200);
    b.wait_text("tr[data-plugin=echo] td[data-col=generation]", "2");
    no_console_errors(&b, "/api/v1/stream", "503");
}

/// How often a stream checks its token again (`api::stream::RECHECK`).
fn stream_recheck() -> Duration {
    xcore_api::stream::RECHECK
}

/// An open stream: the response body as events.
fn open_stream(s: &Server, token: &str) -> Result<SseReader<impl Read>, (u16, Option<String>, String)> {
    let resp = agent()
        .get(format!("{}/api/v1/stream", s.base))
        .header("authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let body = resp.into_body().read_to_string().unwrap_or_default();
        return Err((status, retry, body));
    }
    assert_eq!(resp.headers().get("content-type").unwrap(), "text/event-stream");
    Ok(SseReader::new(resp.into_body().into_reader()))
}

/// Reads events until one of type `kind` matches `pred`.
fn until(events: &mut SseReader<impl Read>, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let (event, data) = events.next_event().expect("the stream stays open");
        if event == kind && pred(&data) {
            return data;
        }
    }
    panic!("no {kind} event came");
}

#[test]
fn the_event_stream_is_authenticated_bounded_and_carries_state_emits_and_logs() {
    let misbehave = PluginSpec::with("misbehave", "xcore-fixture-misbehave", "");
    let (mut s, reader, _) = start(&[("XCORE__SERVER__MAX_STREAMS", "1")], vec![misbehave]);

    // No token, or a wrong one: 401 before anything streams.
    let r = agent().get(format!("{}/api/v1/stream", s.base)).call().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(matches!(open_stream(&s, "wrong"), Err((401, _, _))));

    // A reader may watch; the first event says hello with the bounds.
    let mut events = open_stream(&s, &reader).unwrap_or_else(|e| panic!("{e:?}"));
    let (kind, hello) = events.next_event().unwrap();
    assert_eq!((kind.as_str(), hello["max_streams"].as_u64()), ("hello", Some(1)), "{hello}");

    // One stream more than server.max_streams: 503 naming the setting, counted.
    let (status, retry, body) = match open_stream(&s, TOKEN) {
        Err(e) => e,
        Ok(_) => panic!("a second stream was admitted beyond server.max_streams: 1"),
    };
    assert_eq!((status, retry.as_deref()), (503, Some("5")), "{body}");
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["code"], "too_many_streams");
    assert!(problem["detail"].as_str().unwrap().contains("server.max_streams"), "{problem}");
    let metrics = s.get("/metrics").body;
    assert!(metrics.contains(r#"xcore_limit_refusals_total{limit="server.max_streams"} 1"#), "{metrics}");
    assert!(metrics.contains("xcore_stream_subscribers 1"), "{metrics}");
    assert!(metrics.contains("xcore_stream_max_subscribers 1"), "{metrics}");

    // A reload is a state event; an emit is an emit event.
    assert_eq!(s.admin("/api/v1/plugins/echo/reload").status, 200);
    let state = until(&mut events, "state", |d| d["event"] == "plugin.reloaded");
    assert_eq!(
        (state["payload"]["plugin"].as_str(), state["payload"]["generation"].as_u64()),
        (Some("echo"), Some(2))
    );
    assert!(state["seq"].as_u64().is_some() && state["at"].as_str().is_some(), "{state}");
    assert_eq!(s.post_with("/api/v1/events/dashboard.hello", r#"{"n": 7}"#, Some(TOKEN)).status, 200);
    let emit = until(&mut events, "emit", |d| d["event"] == "dashboard.hello");
    assert_eq!(emit["payload"], json!({ "n": 7 }));

    // A log line at warn or above, with the plugin whose thread wrote it.
    assert_eq!(s.call("misbehave", "log", "{}").status, 200);
    let log =
        until(&mut events, "log", |d| d["message"].as_str().unwrap_or_default().contains("a warning from"));
    assert_eq!((log["level"].as_str(), log["plugin"].as_str()), (Some("warn"), Some("misbehave")), "{log}");

    // The reader's token stops being valid: its tokens file cannot be read any more.
    std::fs::write(s.dir.path().join("runtime/tokens.json"), "not json").unwrap();
    let r = agent()
        .get(format!("{}/api/v1/audit", s.base))
        .header("authorization", format!("Bearer {reader}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // So the reader's stream ends at its next check of the token, and gives its place back.
    let deadline = Instant::now() + stream_recheck() * 2 + Duration::from_secs(10);
    while events.next_event().is_some() {
        assert!(Instant::now() < deadline, "the stream of a token the host refuses goes on");
    }
    let metrics = s.get("/metrics").body;
    assert!(metrics.contains("xcore_stream_subscribers 0"), "{metrics}");
    let mut last = open_stream(&s, TOKEN).expect("a new stream fits again");
    assert_eq!(last.next_event().unwrap().0, "hello");

    // SIGTERM ends the open stream at once: it does not hold the graceful stop for
    // server.shutdown_timeout_seconds (5 s here).
    let stopping = Instant::now();
    let status = s.terminate();
    assert!(status.success(), "{status}:\n{}", s.output());
    assert!(last.next_event().is_none(), "the stream ended");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "the open stream held the stop: {:?}",
        stopping.elapsed()
    );
}
