//! What the open read routes show without a token, and that a reader token shows all,
//! through the real binary: a plugin that failed to load (its error names paths), a
//! sandboxed plugin (a worker pid), a job with a payload whose last run failed.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{write_plugins, PluginSpec, Server, TOKEN};
use serde_json::Value;

/// A request with an optional bearer token: (status, body). A POST sends `{}`.
fn send(s: &Server, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let url = format!("{}{path}", s.base);
    let auth = token.map(|t| format!("Bearer {t}"));
    let resp = if method == "POST" {
        let mut r = agent.post(&url).header("content-type", "application/json");
        if let Some(a) = &auth {
            r = r.header("authorization", a);
        }
        r.send(&b"{}"[..])
    } else {
        let mut r = agent.get(&url);
        if let Some(a) = &auth {
            r = r.header("authorization", a);
        }
        r.call()
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", s.output()));
    let mut body = String::new();
    resp.body_mut().as_reader().read_to_string(&mut body).ok();
    (resp.status().as_u16(), body)
}

fn get(s: &Server, path: &str, token: Option<&str>) -> (u16, String) {
    send(s, "GET", path, token)
}

fn post(s: &Server, path: &str, token: Option<&str>) -> (u16, String) {
    send(s, "POST", path, token)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn reader_token(root: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_xcore"))
        .args(["token", "create", "viewer", "--role", "reader", "--runtime-dir"])
        .arg(root.join("runtime"))
        .current_dir(root)
        .output()
        .expect("run xcore token create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const SECRET: &str = "s3cret-payload-value";

#[test]
fn without_a_token_the_read_routes_hide_paths_pids_errors_and_payloads() {
    let mut reader = String::new();
    let jobs = format!(
        "scheduler:\n  jobs:\n    - {{id: nightly, cron: '0 0 0 1 1 *', plugin: broken, action: run, \
         payload: {{api_key: {SECRET}}}}}\n"
    );
    let s = Server::start_custom(
        |plugins| {
            write_plugins(
                plugins,
                &[
                    PluginSpec::echo(),
                    PluginSpec::with("boxed", "xcore-plugin-echo", "execution_mode: sandboxed"),
                    // Built against a different layout of the ABI: refused at load, with an
                    // error that names the library's path.
                    PluginSpec::with("broken", "xcore-fixture-abi-layout-mismatch", ""),
                ],
            );
            reader = reader_token(plugins.parent().unwrap());
        },
        &jobs,
        &[],
        &[],
    );
    let root = s.dir.path().to_string_lossy().into_owned();
    s.wait_state("boxed", "ready", Duration::from_secs(60));
    let full = s.info("broken");
    let error = full["last_error"].as_str().unwrap_or_default().to_string();
    assert!(!error.is_empty(), "the fixture must fail to load: {full}");
    assert!(s.info("boxed")["sandbox"]["pid"].as_u64().is_some_and(|p| p > 0));

    // The job runs (and fails: its plugin is not loaded), so its last run has an error.
    let (status, body) = post(&s, "/api/v1/jobs/nightly/run", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    assert!(json(&body)["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");

    // The public view: nothing of the host's disk, no pid, no error text, no payload.
    for path in ["/api/v1/plugins", "/api/v1/plugins/broken", "/api/v1/plugins/boxed", "/api/v1/jobs"] {
        let (status, body) = get(&s, path, None);
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.contains(&root), "{path} shows the host's folder {root}: {body}");
        assert!(!body.contains(SECRET), "{path} shows a job payload: {body}");
        assert!(!body.contains(&error), "{path} shows the load error: {body}");
        assert!(!body.contains("\"pid\":"), "{path} shows a pid: {body}");
        assert!(!body.contains("\"dir\":") && !body.contains("libbroken.so"), "{path} shows a path: {body}");
    }
    let broken = json(&get(&s, "/api/v1/plugins/broken", None).1);
    assert_eq!(broken["state"], full["state"], "the state stays visible");
    assert_eq!(broken["last_error"], "hidden: a reader token shows it");
    assert_eq!(broken["redacted"], serde_json::json!(["dir", "last_error"]), "{broken}");
    let boxed = json(&get(&s, "/api/v1/plugins/boxed", None).1);
    assert_eq!(boxed["sandbox"]["alive"], true, "{boxed}");
    let job = json(&get(&s, "/api/v1/jobs", None).1)["jobs"][0].clone();
    assert_eq!(job["redacted"], serde_json::json!(["payload", "last_run.error"]), "{job}");
    assert_eq!(job["last_run"]["outcome"], "error", "the outcome stays visible: {job}");

    // A call to the failed plugin says it cannot take calls, not why.
    let (status, body) = post(&s, "/api/v1/plugins/broken/call/run", None);
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains(&root) && !body.contains(&error), "{body}");
    assert!(body.contains("GET /api/v1/plugins/broken"), "it says where to look: {body}");

    // A reader token shows everything.
    let (_, body) = get(&s, "/api/v1/plugins/broken", Some(&reader));
    let b = json(&body);
    assert_eq!(b["last_error"].as_str(), Some(error.as_str()), "{b}");
    assert!(b["dir"].as_str().is_some_and(|d| d.ends_with("plugins/broken")), "{b}");
    assert!(b.get("redacted").is_none(), "{b}");
    assert!(json(&get(&s, "/api/v1/plugins/boxed", Some(&reader)).1)["sandbox"]["pid"].is_u64());
    let (_, body) = get(&s, "/api/v1/jobs", Some(&reader));
    assert!(body.contains(SECRET), "the reader sees the payload: {body}");
    let (status, body) = post(&s, "/api/v1/plugins/broken/call/run", Some(&reader));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&error), "the reader sees why: {body}");

    // A token that is presented must be valid: no silent fall back to the public view.
    for path in ["/api/v1/plugins", "/api/v1/jobs", "/api/v1/state/plugins"] {
        let (status, body) = get(&s, path, Some("not-a-token"));
        assert_eq!(status, 401, "{path}: {body}");
    }
    // The server's own log keeps the detail for the operator.
    assert!(s.output().contains("broken"), "{}", s.output());
}
