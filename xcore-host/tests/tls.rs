//! The control API over TLS (`server.tls.cert`, `server.tls.key`), through the real
//! binary: a self-signed certificate made here, HTTPS requests that trust it, a plain
//! HTTP request and an untrusting client refused, the CLI's client following the
//! configuration, and the start refused with a message naming the file for each bad
//! setting.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, write_plugins, PluginSpec, TOKEN};

/// A self-signed certificate for 127.0.0.1 and localhost: (cert PEM, key PEM).
fn self_signed() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn config(port: u16, tls: &str) -> String {
    format!(
        "server:\n  port: {port}\n  admin_token: {TOKEN}\n  workers: 1\n  shutdown_timeout_seconds: 2\n{tls}\
         plugins:\n  watch: false\nsecurity:\n  require_signatures: none\nlogging:\n  console: true\n"
    )
}

/// An HTTPS client that trusts `cert_pem` only.
fn trusting(cert_pem: &str) -> ureq::Agent {
    use ureq::tls::{PemItem, RootCerts, TlsConfig};
    let anchors: Vec<_> = ureq::tls::parse_pem(cert_pem.as_bytes())
        .filter_map(|i| match i.unwrap() {
            PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .tls_config(TlsConfig::builder().root_certs(RootCerts::Specific(anchors.into())).build())
        .build()
        .into()
}

fn body(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, String) {
    let mut resp = resp.expect("request");
    let mut text = String::new();
    resp.body_mut().as_reader().read_to_string(&mut text).ok();
    (resp.status().as_u16(), text)
}

struct Running(Child, std::path::PathBuf);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    fn output(&self) -> String {
        std::fs::read_to_string(self.1.join("server.out")).unwrap_or_default()
    }
}

fn spawn(dir: &Path) -> Running {
    let log = std::fs::File::create(dir.join("server.out")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_xcore"))
        .args(["serve", "--config", "xcore.yaml"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn xcore");
    Running(child, dir.to_path_buf())
}

#[test]
fn the_api_answers_over_tls_and_only_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_plugins(&root.join("plugins"), &[PluginSpec::echo()]);
    let (cert, key) = self_signed();
    std::fs::write(root.join("cert.pem"), &cert).unwrap();
    std::fs::write(root.join("key.pem"), &key).unwrap();
    let port = free_port();
    std::fs::write(root.join("xcore.yaml"), config(port, "  tls:\n    cert: cert.pem\n    key: key.pem\n"))
        .unwrap();
    let mut server = spawn(root);
    let https = format!("https://127.0.0.1:{port}");
    let agent = trusting(&cert);
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.get(format!("{https}/health")).call().is_err() {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("xcore exited ({status}):\n{}", server.output());
        }
        assert!(Instant::now() < deadline, "no HTTPS answer:\n{}", server.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        server.output().contains(&format!("listening on https://127.0.0.1:{port}")),
        "{}",
        server.output()
    );

    // A call and an admin route, over TLS.
    let (status, text) = body(
        agent
            .post(format!("{https}/api/v1/plugins/echo/call/echo"))
            .header("content-type", "application/json")
            .send(&br#"{"over":"tls"}"#[..]),
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"over\":\"tls\""), "{text}");
    let (status, text) = body(
        agent
            .post(format!("{https}/api/v1/plugins/echo/reload"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .send(&b""[..]),
    );
    assert_eq!(status, 200, "{text}");

    // Plain HTTP on the same port gets no HTTP answer; a client that does not trust the
    // certificate refuses the connection.
    let plain: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
    assert!(plain.get(format!("http://127.0.0.1:{port}/health")).call().is_err(), "plain HTTP answered");
    let untrusting: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
    let refused = untrusting.get(format!("{https}/health")).call();
    assert!(refused.is_err(), "a client without the certificate connected");

    // The CLI's client reads server.tls from the same configuration and trusts the file.
    let out = Command::new(env!("CARGO_BIN_EXE_xcore"))
        .args(["plugin", "list", "--config", "xcore.yaml"])
        .current_dir(root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\"echo\""), "{stdout}");

    // Still serving after the refused handshakes; the key never reaches the log.
    assert_eq!(body(agent.get(format!("{https}/health")).call()).0, 200);
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!server.output().contains(&key_body[..40]), "the key reached the log");
    let _ = server.0.kill();
}

#[test]
fn a_bad_tls_setting_stops_the_start_naming_what_is_wrong() {
    let (cert, key) = self_signed();
    let (_, other_key) = self_signed();
    // (the server.tls lines, the files written, what the error must name)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 5] = [
        ("  tls:\n    cert: cert.pem\n", &[("cert.pem", &cert)], "server.tls.key"),
        ("  tls:\n    key: key.pem\n", &[("key.pem", &key)], "server.tls.cert"),
        ("  tls:\n    cert: missing.pem\n    key: key.pem\n", &[("key.pem", &key)], "missing.pem"),
        (
            "  tls:\n    cert: cert.pem\n    key: key.pem\n",
            &[("cert.pem", &cert), ("key.pem", "not a key\n")],
            "key.pem",
        ),
        // A key that is not the certificate's.
        (
            "  tls:\n    cert: cert.pem\n    key: key.pem\n",
            &[("cert.pem", &cert), ("key.pem", &other_key)],
            "cannot be used together",
        ),
    ];
    for (tls, files, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::write(dir.path().join("xcore.yaml"), config(free_port(), tls)).unwrap();
        let mut server = spawn(dir.path());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = server.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "{tls}: xcore kept running:\n{}", server.output());
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!status.success(), "{tls}: exit {status}");
        let out = server.output();
        assert!(out.contains(expected), "{tls}: expected {expected:?} in:\n{out}");
        assert!(!out.contains("listening on"), "{tls}: it listened:\n{out}");
    }
}
