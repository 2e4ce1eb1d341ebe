//! The control API through real HTTP: example plugins, declared routes, bad input,
//! authentication, metrics, graceful shutdown.

mod common;

use common::{PluginSpec, Server, TOKEN};
use serde_json::json;

#[test]
fn echo_and_notes_answer_over_http_including_declared_routes() {
    let mut s = Server::start(&[PluginSpec::echo(), PluginSpec::notes()]);

    let r = s.call("echo", "echo", r#"{"hello":"world"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"echo": {"hello": "world"}, "plugin": "echo", "version": "0.1.0"}));
    assert!(r.header("x-request-id").is_some());

    // The plugin's config from its manifest reaches it (echo's default greeting here).
    let r = s.call("echo", "greet", r#"{"name":"Ada"}"#);
    assert_eq!(r.json()["message"], "hello, Ada!");

    // Stateful plugin through actions...
    let created = s.call("notes", "create", r#"{"title":"first","body":"b1"}"#).json();
    assert_eq!(created["id"], 1);
    assert_eq!(s.call("notes", "get", r#"{"id":1}"#).json()["title"], "first");
    // ...and through the routes it declares.
    let r = s.request("POST", "/plugins/notes/notes", Some(r#"{"title":"second"}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["id"], 2);
    let r = s.request("GET", "/plugins/notes/notes/2", None);
    assert_eq!(r.json()["title"], "second");
    assert_eq!(s.request("GET", "/plugins/notes/notes", None).json()["count"], 2);
    assert_eq!(s.request("DELETE", "/plugins/notes/notes/1", None).json()["deleted"], 1);
    let r = s.request("GET", "/plugins/notes/notes/1", None);
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = s.request("GET", "/plugins/notes/notes/abc", None);
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_payload"));
    let r = s.request("PUT", "/plugins/notes/notes/2", Some("{}"));
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));

    // Listing, health, metrics.
    let list = s.get("/api/v1/plugins").json();
    let names: Vec<_> = list["plugins"].as_array().unwrap().iter().map(|p| p["name"].clone()).collect();
    assert_eq!(names, vec![json!("echo"), json!("notes")]);
    let info = s.info("notes");
    assert_eq!(info["state"], "ready");
    assert_eq!(info["limits"]["concurrency"], 2);
    assert_eq!(info["routes"].as_array().unwrap().len(), 4);
    let health = s.get("/health").json();
    assert_eq!(health["plugins"]["by_state"]["ready"], 2);
    let metrics = s.get("/metrics").body;
    assert!(metrics.contains(r#"xcore_plugin_calls_total{plugin="echo"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"xcore_plugin_state{plugin="notes",state="ready"} 1"#), "{metrics}");
    assert!(metrics.contains("xcore_plugin_call_duration_seconds_bucket"), "{metrics}");
    assert!(metrics.contains(r#"xcore_plugin_abandoned_threads{plugin="echo"} 0"#), "{metrics}");

    // SIGTERM: graceful stop that shuts the plugins down.
    let status = s.terminate();
    assert!(status.success(), "exit {status}:\n{}", s.output());
    let out = s.output();
    assert!(out.contains("shutting down with 1 notes in memory"), "{out}");
    // The JSON log file carries the plugin's name as target.
    let log = std::fs::read_to_string(s.dir.path().join("logs/xcore.log")).unwrap();
    let line = log.lines().find(|l| l.contains("created note 1")).expect("plugin log line");
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["target"], "notes");
    assert_eq!(line["mdc"]["plugin"], "notes");
    assert!(line["mdc"]["request_id"].as_str().is_some_and(|r| !r.is_empty()), "{line}");
}

#[test]
fn bad_input_gets_clear_problem_errors() {
    let s = Server::start(&[PluginSpec::echo()]);

    // 2 MB body over the 1 MiB default.
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let r = s.try_post("/api/v1/plugins/echo/call/echo", big.as_bytes(), None).expect("413 reply");
    assert_eq!((r.status, r.code().as_str()), (413, "payload_too_large"));

    let r = s.call("echo", "echo", r#"{"unterminated": "#);
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_json"));
    assert!(r.json()["detail"].as_str().unwrap().contains("line 1"), "{}", r.body);

    // Errors carry the request id too, the caller's when it sent a sane one.
    let r = s.request_with_id("/api/v1/plugins/echo/call/nope", "{}", "trace-42");
    assert_eq!(r.header("x-request-id"), Some("trace-42"));
    let r = s.call("nope", "echo", "{}");
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_plugin"));
    let r = s.call("echo", "nope", "{}");
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_action"));
    // A typed payload that does not fit.
    let r = s.call("echo", "greet", r#"{"name": 3}"#);
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_payload"));

    // Admin routes: no token, wrong token, right token.
    for path in ["/api/v1/plugins/echo/reload", "/api/v1/plugins/echo/unload", "/api/v1/plugins/rescan"] {
        let r = s.post(path, "");
        assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"), "{path}");
        let r = s.post_with(path, "", Some("wrong-token"));
        assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"), "{path}");
    }
    assert_eq!(s.info("echo")["generation"], 1, "a refused admin call must not reach the registry");
    let r = s.post_with("/api/v1/plugins/echo/reload", "", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["generation"], 2);

    let r = s.get("/no/such/route");
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    // No stack trace or Rust type names ever reach a client.
    for body in [&r.body, &s.call("echo", "echo", "{").body] {
        assert!(!body.contains("panicked") && !body.contains("src/"), "{body}");
    }
}

#[test]
fn an_action_named_reload_is_just_an_action() {
    let s = Server::start(&[PluginSpec::with("misbehave", "xcore-fixture-misbehave", "")]);
    let r = s.call("misbehave", "reload", "{}");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["handled_by"], "plugin");
    assert_eq!(s.info("misbehave")["generation"], 1);
    // A plugin may choose its own error status.
    let r = s.call("misbehave", "teapot", "{}");
    assert_eq!((r.status, r.code().as_str()), (418, "teapot"));
}

#[test]
fn without_a_configured_token_one_is_generated_owner_only() {
    // An empty token means "none configured".
    let s = Server::start_full(&[PluginSpec::echo()], "", &[("XCORE__SERVER__ADMIN_TOKEN", "")]);
    let path = s.dir.path().join("runtime/admin.token");
    let token = std::fs::read_to_string(&path).expect("generated token file");
    assert_eq!(token.len(), 64, "256 random bits, hex");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(s.output().contains("admin.token"), "the log says where it is");
    assert_eq!(s.post_with("/api/v1/plugins/echo/reload", "", Some(TOKEN)).status, 401);
    assert_eq!(s.post_with("/api/v1/plugins/echo/reload", "", Some(&token)).status, 200);
}

#[test]
fn the_openapi_document_covers_every_route_and_every_route_answers() {
    let s = Server::start(&[PluginSpec::echo()]);
    let doc = s.get("/api/v1/openapi.json").json();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{name}", "echo")
                .replace("{action}", "echo")
                .replace("{event}", "x.y")
                .replace("{tail}", "t");
            let r = match method.as_str() {
                "get" => s.request("GET", &concrete, None),
                "post" => s.post_with(&concrete, "{}", Some(TOKEN)),
                _ => continue,
            };
            // Served by its own handler: the fallback's "no route" answer never appears.
            assert!(!r.body.contains("\"detail\":\"no route "), "{method} {path}: {} {}", r.status, r.body);
        }
    }
    for must in [
        "/api/v1/plugins/{name}/call/{action}",
        "/api/v1/events/{event}",
        "/api/v1/hooks",
        "/health",
        "/metrics",
    ] {
        assert!(paths.contains_key(must), "{must}");
    }
}
