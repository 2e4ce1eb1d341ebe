//! Hostile HTTP input and hostile replies, through the real binary and real sockets:
//! route parameters decoded once, plugin names that are paths, bodies that trickle or
//! nest without end, replies that are not JSON, panics whose payload panics again.
//!
//! Requests whose exact bytes matter go through a raw TCP client, so that no HTTP client
//! normalises the path on the way.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{PluginSpec, Server, TOKEN};
use serde_json::Value;

const PROBE: &str = "xcore-fixture-input-probe";

fn probe(folder: &str, extra: &str) -> PluginSpec {
    let routes = "routes:\n  - { method: GET, path: \"/p/{v}\", action: echo }\n  - { method: POST, path: \"/p/{v}/{w}\", action: echo }\n  - { method: GET, path: /bad, action: not_json }\nhooks:\n  - { event: \"input.*\", action: echo }\n";
    PluginSpec::with(folder, PROBE, &format!("{extra}\n{routes}"))
}

fn sandboxed(folder: &str) -> PluginSpec {
    probe(folder, "execution_mode: sandboxed")
}

/// A raw HTTP/1.1 answer.
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn code(&self) -> String {
        assert!(
            self.head.to_ascii_lowercase().contains("content-type: application/problem+json"),
            "{}\n{}",
            self.head,
            self.body
        );
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
}

fn port(server: &Server) -> u16 {
    server.base.rsplit(':').next().unwrap().parse().unwrap()
}

fn parse(raw: &[u8]) -> Raw {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    Raw { status, head: head.to_string(), body: body.to_string() }
}

/// Sends `request` as is (it should say `Connection: close`) and reads the answer to EOF.
fn raw(server: &Server, request: &[u8]) -> Raw {
    let mut s = TcpStream::connect(("127.0.0.1", port(server))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap_or_else(|e| panic!("reading the answer: {e}\n{}", server.output()));
    parse(&out)
}

fn raw_get(server: &Server, path: &[u8]) -> Raw {
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(path);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    raw(server, &req)
}

fn raw_post(server: &Server, path: &str, token: Option<&str>, body: &[u8]) -> Raw {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw(server, &req)
}

fn metric(server: &Server, line_start: &str) -> f64 {
    let text = server.get("/metrics").body;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_panic_whose_payload_panics_in_its_drop_is_a_500_in_both_tiers_and_the_host_lives() {
    let server = Server::start(&[probe("probe", ""), sandboxed("sprobe")]);
    for plugin in ["probe", "sprobe"] {
        let r = server.call(plugin, "panic_payload_drop", "{}");
        assert_eq!(r.status, 500, "{plugin}: {}\n{}", r.body, server.output());
        assert_eq!(r.code(), "plugin_panic", "{plugin}");
        let r = server.call(plugin, "ok", "{}");
        assert_eq!(r.status, 200, "{plugin} after the panic: {}", r.body);
        assert_eq!(r.json(), serde_json::json!({ "ok": true }));
    }
    assert_eq!(server.get("/health").status, 200);
    // The sandboxed worker caught it too: same instance, no crash.
    assert_eq!(server.info("sprobe")["generation"], 1, "{}", server.output());
}

#[test]
fn a_reply_that_is_not_json_is_a_502_naming_the_plugin_in_both_tiers() {
    let server = Server::start(&[probe("probe", ""), sandboxed("sprobe")]);
    for plugin in ["probe", "sprobe"] {
        for action in ["not_json", "empty"] {
            let r = server.call(plugin, action, "{}");
            assert_eq!(r.status, 502, "{plugin}/{action}: {}", r.body);
            assert_eq!(r.code(), "invalid_reply");
            let detail = r.json()["detail"].as_str().unwrap().to_string();
            assert!(detail.contains(&format!("plugin '{plugin}'")), "{detail}");
        }
        // Through a declared route as well.
        let r = server.get(&format!("/plugins/{plugin}/bad"));
        assert_eq!(r.status, 502, "{}", r.body);
        assert_eq!(r.code(), "invalid_reply");
        // A JSON reply is still served as before.
        let r = server.call(plugin, "ok", "");
        assert_eq!((r.status, r.header("content-type")), (200, Some("application/json")));
    }
    assert!(metric(&server, "xcore_plugin_errors_total{code=\"invalid_reply\",plugin=\"probe\"}") >= 3.0);
}

#[test]
fn route_params_are_decoded_once_on_bytes() {
    let server = Server::start(&[probe("probe", "")]);
    let params = |path: &[u8]| {
        let r = raw_get(&server, path);
        assert_eq!(r.status, 200, "{}: {}\n{}", String::from_utf8_lossy(path), r.body, server.output());
        r.json()["params"]["v"].as_str().unwrap().to_string()
    };
    // Decodes to `%a` + `é`: it used to panic the handler (a closed connection).
    assert_eq!(params(b"/plugins/probe/p/%25a%C3%A9"), "%a\u{e9}");
    // Decoded twice, this reached the plugin as `A`.
    assert_eq!(params(b"/plugins/probe/p/%2541"), "%41");
    assert_eq!(params(b"/plugins/probe/p/a%2Fb"), "a/b");
    assert_eq!(params(b"/plugins/probe/p/a%2Bb+c"), "a+b+c");
    assert_eq!(params(b"/plugins/probe/p/100%"), "100%");
    assert_eq!(params(b"/plugins/probe/p/%e4%b8%ad"), "\u{4e2d}");
    // Two params, the query and the body beside them.
    let r = raw_post(&server, "/plugins/probe/p/%2525/x%20y?q=%2541", None, br#"{"k": 1}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        serde_json::json!({ "params": { "v": "%25", "w": "x y" }, "query": { "q": "%41" }, "body": { "k": 1 } })
    );
    // Bytes that are not UTF-8 once decoded: a clear 400, and the host still answers.
    for bad in [&b"/plugins/probe/p/%C3%28"[..], b"/plugins/probe/p/%FF", b"/plugins/probe/p/%ED%A0%80"] {
        let r = raw_get(&server, bad);
        assert_eq!(r.status, 400, "{}: {}", String::from_utf8_lossy(bad), r.body);
        assert_eq!(r.code(), "invalid_path");
    }
    assert!(metric(&server, "xcore_http_rejected_total{code=\"invalid_path\"}") >= 3.0);
    assert_eq!(params(b"/plugins/probe/p/still-here"), "still-here");
}

/// A plugin folder outside `plugins/` that a traversal name would reach, and the names
/// that tried.
const TRAVERSALS: &[&str] = &[
    "..%2Foutside-root%2Foutside",
    "..%2Fplugins%2Fecho",
    "%2E%2E",
    "..",
    ".",
    "echo%2F..%2Fecho",
    "Echo",
    "ec%00ho",
    "echo.so",
    "%C3%A9cho",
];

#[test]
fn every_route_that_takes_a_plugin_name_refuses_one_that_is_not_a_name() {
    let server = Server::start_custom(
        |plugins| {
            common::write_plugins(plugins, &[PluginSpec::echo(), probe("probe", "")]);
            // A valid plugin one level up, where `..%2Foutside-root%2Foutside` points.
            let outside = plugins.parent().unwrap().join("outside-root");
            std::fs::create_dir_all(&outside).unwrap();
            common::write_plugins(&outside, &[PluginSpec::with("outside", "xcore-plugin-echo", "")]);
        },
        "",
        &[],
        &[],
    );
    let routes: Vec<_> =
        xcore_api::endpoints::ENDPOINTS.iter().filter(|e| e.path.contains("{name}")).collect();
    assert!(routes.len() >= 9, "the route table changed: {}", routes.len());
    let mut refused = 0;
    for e in &routes {
        for name in TRAVERSALS {
            let path = e.path.replace("{name}", name).replace("{action}", "echo").replace("{tail}", "p/x");
            let token = e.role.is_some().then_some(TOKEN);
            let r = match e.method {
                "GET" | "ANY" => {
                    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
                    raw(
                        &server,
                        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n")
                            .as_bytes(),
                    )
                }
                _ => raw_post(&server, &path, token, b"{}"),
            };
            // `..` and `.` as whole segments are resolved by nobody: they reach no route.
            if (*name == ".." || *name == ".") && r.status == 404 {
                assert_eq!(r.code(), "not_found", "{} {path}", e.method);
                continue;
            }
            assert_eq!(r.status, 400, "{} {path}: {}\n{}", e.method, r.body, server.output());
            assert_eq!(r.code(), "invalid_name", "{} {path}", e.method);
            refused += 1;
        }
    }
    assert!(refused >= routes.len() * (TRAVERSALS.len() - 2));
    // Nothing was loaded under another name, nothing outside plugins/.
    let list = server.get("/api/v1/plugins").json();
    let mut names: Vec<&str> =
        list["plugins"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["echo", "probe"]);
    assert!(!server.output().contains("outside-root/outside"), "{}", server.output());
    assert!(metric(&server, "xcore_http_rejected_total{code=\"invalid_name\"}") >= refused as f64);
    // The check refuses only what is not a name: a name that is merely unknown is 404,
    // and a valid one works.
    assert_eq!(server.admin("/api/v1/plugins/no-such_plugin9/load").code(), "unknown_plugin");
    assert_eq!(server.admin("/api/v1/plugins/echo/reload").status, 200);
}

#[test]
fn a_body_that_trickles_is_answered_408_when_its_deadline_passes() {
    let server = Server::start_full(&[probe("probe", "")], "", &[("XCORE__SERVER__BODY_TIMEOUT_MS", "1500")]);
    let mut s = TcpStream::connect(("127.0.0.1", port(&server))).unwrap();
    s.write_all(
        b"POST /api/v1/plugins/probe/call/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n",
    )
    .unwrap();
    // 2 bytes every 500 ms: 200 bytes would take 50 s. The writer stops at the first
    // failed write (the server closed the connection).
    let mut writer = s.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        let mut sent = 0;
        while sent < 200 {
            if writer.write_all(b"  ").is_err() {
                break;
            }
            sent += 2;
            std::thread::sleep(Duration::from_millis(500));
        }
        sent
    });
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the server closes the connection (it does, the body being unread).
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("no answer while the body trickles: {e}\n{}", server.output()),
        }
    }
    let r = parse(&out);
    assert_eq!(r.status, 408, "{}", r.body);
    assert_eq!(r.code(), "body_timeout");
    assert!(r.json()["detail"].as_str().unwrap().contains("server.body_timeout_ms"), "{}", r.body);
    let sent = trickle.join().unwrap();
    assert!(sent < 200, "the answer came only after the whole body ({sent} bytes)");
    assert!(metric(&server, "xcore_http_rejected_total{code=\"body_timeout\"}") >= 1.0);
    // An ordinary request is unaffected.
    assert_eq!(server.call("probe", "echo", r#"{"a": 1}"#).json(), serde_json::json!({ "a": 1 }));
}

#[test]
fn json_nested_beyond_the_bound_is_refused_by_every_route_that_takes_a_body() {
    let server = Server::start(&[probe("probe", "")]);
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
    let deep = nested(100_000);
    let admin = Some(TOKEN);
    let routes: [(&str, Option<&str>); 3] = [
        ("/api/v1/plugins/probe/call/echo", None),
        ("/api/v1/events/input.deep", admin),
        ("/plugins/probe/p/x/y", None),
    ];
    for (path, token) in routes {
        for body in [&deep, &nested(65)] {
            let r = raw_post(&server, path, token, body);
            assert_eq!(r.status, 400, "{path}: {}", r.body);
            assert_eq!(r.code(), "invalid_json", "{path}");
            assert!(r.json()["detail"].as_str().unwrap().contains("deeper than 64"), "{}", r.body);
        }
        // At the bound it passes, whole.
        let r = raw_post(&server, path, token, &nested(64));
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    // The call route hands the body over untouched, and the event route emitted it whole
    // (not as null).
    let r = raw_post(&server, "/api/v1/plugins/probe/call/echo", None, &nested(64));
    assert_eq!(r.body.as_bytes(), nested(64).as_slice());
    let r = raw_post(&server, "/plugins/probe/p/x/y", None, &nested(3));
    assert_eq!(r.json()["body"], serde_json::json!([[[]]]));
    let r = raw_post(&server, "/api/v1/events/input.deep", admin, &nested(3));
    let report = r.json();
    assert_eq!(
        report["results"][0]["outcome"]["ok"],
        serde_json::json!({ "event": "input.deep", "payload": [[[]]] }),
        "{report}"
    );
    assert!(metric(&server, "xcore_http_rejected_total{code=\"invalid_json\"}") >= 6.0);
}
