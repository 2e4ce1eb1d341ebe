//! Named tokens with roles, through the real binary: `xcore token create` against a
//! runtime folder, then `xcore serve`, and each role on each class of route.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{write_plugins, PluginSpec, Server, TOKEN};
use serde_json::Value;

/// `xcore token create NAME --role ROLE [extra...]` in `cwd`: (exit ok, stdout, stderr).
fn create(cwd: &Path, name: &str, role: &str, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xcore"))
        .args(["token", "create", name, "--role", role])
        .args(extra)
        .current_dir(cwd)
        .output()
        .expect("run xcore token create");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn create_ok(cwd: &Path, name: &str, role: &str, extra: &[&str]) -> String {
    let (ok, stdout, stderr) = create(cwd, name, role, extra);
    assert!(ok, "token create {name} failed: {stderr}");
    let token = stdout.trim().to_string();
    assert!(token.len() >= 32 && !token.contains(char::is_whitespace), "{stdout:?}");
    token
}

/// A request with an optional bearer token: (status, problem code or "", body).
fn send(s: &Server, method: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let url = format!("{}{path}", s.base);
    let auth = token.map(|t| format!("Bearer {t}"));
    let resp = match method {
        "GET" => {
            let mut r = agent.get(&url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        }
        "POST" => {
            let mut r = agent.post(&url).header("content-type", "application/json");
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.send(&b"{}"[..])
        }
        m => panic!("method {m}"),
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", s.output()));
    let status = resp.status().as_u16();
    let mut body = String::new();
    resp.body_mut().as_reader().read_to_string(&mut body).ok();
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status, code, body)
}

/// Asserts 403 `forbidden` naming the role needed.
fn forbidden(s: &Server, method: &str, path: &str, token: &str, needed: &str) {
    let (status, code, body) = send(s, method, path, Some(token));
    assert_eq!((status, code.as_str()), (403, "forbidden"), "{method} {path}: {body}");
    assert!(body.contains(&format!("needs the {needed} role")), "{method} {path}: {body}");
}

/// Asserts the role was enough (2xx).
fn allowed(s: &Server, method: &str, path: &str, token: &str) -> Value {
    let (status, _, body) = send(s, method, path, Some(token));
    assert!((200..300).contains(&status), "{method} {path}: {status} {body}\n{}", s.output());
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn sha256_hex(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

const JOBS: &str =
    "scheduler:\n  jobs:\n    - {id: announce, cron: '0 0 0 1 1 *', emit: tokens.test, payload: {n: 1}}\n";

#[test]
fn each_role_reaches_its_routes_and_no_further() {
    let mut tokens = Vec::new();
    let s = Server::start_custom(
        |plugins| {
            write_plugins(plugins, &[PluginSpec::echo()]);
            let root = plugins.parent().unwrap();
            let runtime = root.join("runtime");
            let rt = runtime.to_str().unwrap();
            for (name, role) in [("ro", "reader"), ("ops", "operator"), ("boss", "admin")] {
                tokens.push(create_ok(root, name, role, &["--runtime-dir", rt]));
            }
        },
        JOBS,
        &[],
        &[],
    );
    let (reader, operator, admin) = (tokens[0].clone(), tokens[1].clone(), tokens[2].clone());

    // No token, or one the host does not know: 401 on every protected class, as before.
    for (method, path) in [
        ("GET", "/api/v1/audit"),
        ("POST", "/api/v1/plugins/echo/reload"),
        ("POST", "/api/v1/plugins/echo/unload"),
        ("POST", "/api/v1/jobs/announce/run"),
    ] {
        for token in [None, Some("wrong-token"), Some(&reader[..reader.len() - 1])] {
            let (status, code, body) = send(&s, method, path, token);
            assert_eq!((status, code.as_str()), (401, "unauthorized"), "{method} {path} {token:?}: {body}");
        }
    }

    // Reader: the read routes in full, nothing that changes state.
    allowed(&s, "GET", "/api/v1/audit", &reader);
    for op in ["reload", "reset", "disable", "enable"] {
        forbidden(&s, "POST", &format!("/api/v1/plugins/echo/{op}"), &reader, "operator");
    }
    forbidden(&s, "POST", "/api/v1/jobs/announce/run", &reader, "operator");
    for (path, needed) in [
        ("/api/v1/plugins/echo/unload", "admin"),
        ("/api/v1/plugins/echo/load", "admin"),
        ("/api/v1/plugins/rescan", "admin"),
        ("/api/v1/events/tokens.test", "admin"),
    ] {
        forbidden(&s, "POST", path, &reader, needed);
    }
    assert_eq!(s.info("echo")["state"], "ready", "a refused request changes nothing");

    // Operator: reload, reset, disable, enable, run a job; the reads too; not the rest.
    allowed(&s, "GET", "/api/v1/audit", &operator);
    allowed(&s, "POST", "/api/v1/plugins/echo/reload", &operator);
    let (status, code, body) = send(&s, "POST", "/api/v1/plugins/echo/reset", Some(&operator));
    assert!(status == 200 || (status == 409 && code == "conflict"), "reset: {status} {body}");
    let info = allowed(&s, "POST", "/api/v1/plugins/echo/disable", &operator);
    assert_eq!(info["state"], "disabled", "{info}");
    allowed(&s, "POST", "/api/v1/plugins/echo/enable", &operator);
    s.wait_state("echo", "ready", Duration::from_secs(60));
    let run = allowed(&s, "POST", "/api/v1/jobs/announce/run", &operator);
    assert_eq!(run["outcome"], "ok", "{run}");
    for path in [
        "/api/v1/plugins/echo/unload",
        "/api/v1/plugins/echo/load",
        "/api/v1/plugins/rescan",
        "/api/v1/events/tokens.test",
    ] {
        forbidden(&s, "POST", path, &operator, "admin");
    }
    assert_eq!(s.info("echo")["state"], "ready", "a refused unload changes nothing");

    // A named admin token: everything.
    allowed(&s, "POST", "/api/v1/plugins/echo/unload", &admin);
    allowed(&s, "POST", "/api/v1/plugins/echo/load", &admin);
    allowed(&s, "POST", "/api/v1/plugins/rescan", &admin);
    allowed(&s, "POST", "/api/v1/events/tokens.test", &admin);
    allowed(&s, "POST", "/api/v1/jobs/announce/run", &admin);
    // server.admin_token keeps working as an admin token.
    allowed(&s, "POST", "/api/v1/plugins/echo/reload", TOKEN);
    allowed(&s, "POST", "/api/v1/plugins/echo/unload", TOKEN);
    allowed(&s, "POST", "/api/v1/plugins/echo/load", TOKEN);

    // The audit log names the token that acted; refused requests did nothing to audit.
    let audit = allowed(&s, "GET", "/api/v1/audit?limit=100", &reader);
    let entries = audit["entries"].as_array().unwrap();
    let seen: Vec<(String, String, String)> = entries
        .iter()
        .rev()
        .map(|e| {
            let f = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (f("actor"), f("action"), f("target"))
        })
        .collect();
    let expected = [
        ("token:ops@127.0.0.1", "reload", "echo"),
        ("token:ops@127.0.0.1", "reset", "echo"),
        ("token:ops@127.0.0.1", "disable", "echo"),
        ("token:ops@127.0.0.1", "enable", "echo"),
        ("token:ops@127.0.0.1", "job.run", "announce"),
        ("token:boss@127.0.0.1", "unload", "echo"),
        ("token:boss@127.0.0.1", "load", "echo"),
        ("token:boss@127.0.0.1", "rescan", "plugins"),
        ("token:boss@127.0.0.1", "emit", "tokens.test"),
        ("token:boss@127.0.0.1", "job.run", "announce"),
        ("admin@127.0.0.1", "reload", "echo"),
        ("admin@127.0.0.1", "unload", "echo"),
        ("admin@127.0.0.1", "load", "echo"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
    assert_eq!(seen, expected, "oldest first: {audit}");

    // The file holds hashes, never a token, and only its owner may read it.
    let file = s.dir.path().join("runtime/tokens.json");
    let text = std::fs::read_to_string(&file).unwrap();
    for t in [&reader, &operator, &admin] {
        assert!(!text.contains(t.as_str()), "plaintext token in {text}");
        assert!(!text.contains(t.trim_start_matches("xct_")), "plaintext token in {text}");
        assert!(text.contains(&sha256_hex(t)), "its hash is stored: {text}");
    }
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "tokens.json mode {mode:o}");
    }
    assert!(!s.output().contains(&operator), "a token reached the server's log");

    // Refusals are counted by code: 12 unauthorized, 4 + 1 + 4 + 4 = 13 forbidden above.
    let metrics = s.get("/metrics").body;
    let value = |code: &str| -> f64 {
        let key = format!("xcore_http_rejected_total{{code=\"{code}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
    };
    assert_eq!((value("unauthorized"), value("forbidden")), (12.0, 13.0), "{metrics}");
}

#[test]
fn a_token_created_while_the_server_runs_works_at_once_and_the_cli_refuses_bad_input() {
    let s = Server::start_with(&[PluginSpec::echo()], JOBS);
    let root = s.dir.path();
    // Through the configuration (plugins.runtime_dir), not --runtime-dir.
    let late = create_ok(root, "late", "reader", &["--config", "xcore.yaml"]);
    assert!(root.join("runtime/tokens.json").is_file());
    allowed(&s, "GET", "/api/v1/audit", &late);
    forbidden(&s, "POST", "/api/v1/plugins/echo/reload", &late, "operator");

    // Each token is new: a second one with another name differs and works too.
    let other = create_ok(root, "later", "operator", &["--config", "xcore.yaml"]);
    assert_ne!(late, other);
    allowed(&s, "POST", "/api/v1/plugins/echo/reload", &other);
    allowed(&s, "GET", "/api/v1/audit", &late);

    // A name taken, a role that does not exist, a name that is not one: refused, and the
    // file is unchanged.
    let before = std::fs::read_to_string(root.join("runtime/tokens.json")).unwrap();
    let (ok, stdout, stderr) = create(root, "late", "admin", &["--config", "xcore.yaml"]);
    assert!(!ok && stdout.trim().is_empty() && stderr.contains("exists already"), "{stderr}");
    let (ok, _, stderr) = create(root, "root", "superuser", &["--config", "xcore.yaml"]);
    assert!(!ok && stderr.contains("not a role"), "{stderr}");
    let (ok, _, stderr) = create(root, "../x", "reader", &["--config", "xcore.yaml"]);
    assert!(!ok && stderr.contains("not a token name"), "{stderr}");
    assert_eq!(std::fs::read_to_string(root.join("runtime/tokens.json")).unwrap(), before);
    let (status, _, body) = send(&s, "POST", "/api/v1/plugins/echo/reload", Some(&late));
    assert_eq!(status, 403, "the refused create did not raise 'late' to admin: {body}");

    // `token list` names each token and its role, never a token or a hash.
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_xcore"))
            .args(["token"])
            .args(args)
            .args(["--config", "xcore.yaml"])
            .current_dir(root)
            .output()
            .expect("run xcore token");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let (ok, list, _) = run(&["list"]);
    assert!(ok, "{list}");
    let rows: Vec<Vec<&str>> = list.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        rows.iter().map(|r| (r[0], r[1])).collect::<Vec<_>>(),
        [("late", "reader"), ("later", "operator")]
    );
    for t in [&late, &other] {
        assert!(!list.contains(t.as_str()) && !list.contains(&sha256_hex(t)), "{list}");
    }

    // `token revoke`: the running server refuses the token at its next request; the
    // other token keeps working; revoking it again names the problem.
    let (ok, _, stderr) = run(&["revoke", "later"]);
    assert!(ok && stderr.contains("revoked"), "{stderr}");
    let (status, code, body) = send(&s, "POST", "/api/v1/plugins/echo/reload", Some(&other));
    assert_eq!((status, code.as_str()), (401, "unauthorized"), "a revoked token is refused: {body}");
    allowed(&s, "GET", "/api/v1/audit", &late);
    let (ok, _, stderr) = run(&["revoke", "later"]);
    assert!(!ok && stderr.contains("no token named"), "{stderr}");
}
