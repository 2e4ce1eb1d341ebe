//! The `xcore` command line: config check, plugin list/call against a running server,
//! plugin build, help.

mod common;

use std::process::{Command, Output};

use common::{PluginSpec, Server};

fn xcore(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xcore"))
        .args(args)
        .current_dir(dir)
        .env_remove("XCORE_CONFIG")
        .env_remove("XCORE_URL")
        .output()
        .expect("run xcore")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn config_check_masks_secrets_and_names_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("xcore.yaml"), "server:\n  port: 9000\n  admin_token: s3cret-value\n")
        .unwrap();
    let out = xcore(dir.path(), &["config", "check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("port: 9000") && stdout.contains("***"), "{stdout}");
    assert!(!stdout.contains("s3cret-value"), "{stdout}");

    std::fs::write(dir.path().join("xcore.yaml"), "server:\n  port: lots\nsurprise: 1\n").unwrap();
    let out = xcore(dir.path(), &["config", "check"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("xcore.yaml") && stderr.contains("server.port"), "{stderr}");

    // Environment overrides win over the file and are validated the same way.
    std::fs::write(dir.path().join("xcore.yaml"), "server:\n  port: 9000\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xcore"))
        .args(["config", "check"])
        .current_dir(dir.path())
        .env("XCORE__SERVER__PORT", "9100")
        .output()
        .unwrap();
    assert!(text(&out.stdout).contains("port: 9100"), "{}", text(&out.stdout));
}

#[test]
fn plugin_list_and_call_talk_to_a_running_server() {
    let s = Server::start(&[PluginSpec::echo()]);
    let dir = s.dir.path();
    let out = xcore(dir, &["plugin", "call", "echo", "echo", r#"{"via":"cli"}"#, "--url", &s.base]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["echo"]["via"], "cli");

    let out = xcore(dir, &["plugin", "call", "ghost", "echo", "--url", &s.base]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown_plugin"), "{}", text(&out.stderr));

    let out = xcore(dir, &["plugin", "call", "echo", "echo", "{not json", "--url", &s.base]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not valid JSON"), "{}", text(&out.stderr));

    let out = xcore(dir, &["plugin", "list", "--url", &s.base]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("\"echo\""));
}

#[test]
fn help_is_available_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["plugin", "--help"],
        vec!["plugin", "call", "--help"],
        vec!["plugin", "build", "--help"],
        vec!["config", "check", "--help"],
        vec!["plugin", "add", "--help"],
        vec!["plugin", "rm", "--help"],
        vec!["plugin", "sign", "--help"],
        vec!["plugin", "verify", "--help"],
        vec!["keys", "generate", "--help"],
    ] {
        let out = xcore(dir.path(), &args);
        assert!(out.status.success(), "{args:?}");
        assert!(text(&out.stdout).contains("Usage"), "{args:?}");
    }
}

#[test]
fn plugin_build_puts_the_library_where_the_manifest_points() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let plugins = repo.join("plugins");
    let out = xcore(repo, &["plugin", "build", "--plugins-dir", plugins.to_str().unwrap(), "echo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lib = plugins.join("echo/libecho.so");
    assert!(lib.is_file());
    assert!(text(&out.stderr).contains("built echo"), "{}", text(&out.stderr));
    // No temporary file is left behind by the write-then-rename.
    assert!(!plugins.join("echo/libecho.tmp-build").exists());
}

#[test]
fn docgen_builds_the_site_from_the_real_docs_and_plugins_and_catches_broken_links() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = tempfile::tempdir().unwrap();
    let args = |docs: &std::path::Path| {
        vec![
            "docgen".to_string(),
            "--docs".into(),
            docs.to_string_lossy().into_owned(),
            "--plugins-dir".into(),
            repo.join("plugins").to_string_lossy().into_owned(),
            "--out".into(),
            out.path().to_string_lossy().into_owned(),
        ]
    };
    let a = args(&repo.join("docs"));
    let run = |a: &[String]| xcore(repo, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let first = run(&a);
    assert!(first.status.success(), "the repository's docs have broken links:\n{}", text(&first.stderr));
    for page in ["index.html", "api.html", "plugins.html", "plugins/echo.html", "plugins/notes.html"] {
        assert!(out.path().join(page).is_file(), "{page}");
    }
    let api = std::fs::read_to_string(out.path().join("api.html")).unwrap();
    assert!(
        api.contains("/api/v1/plugins/{name}/call/{action}"),
        "the API page comes from the OpenAPI document"
    );
    let notes = std::fs::read_to_string(out.path().join("plugins/notes.html")).unwrap();
    assert!(notes.contains("route.create") && notes.contains("/notes/{id}"), "routes from the manifest");
    let second = run(&a);
    assert!(text(&second.stdout).contains("0 written"), "{}", text(&second.stdout));

    let docs = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("README.md"),
        "# Index\n\nSee [missing](nowhere.md) and [bad](#no-such-anchor).\n",
    )
    .unwrap();
    let broken = run(&args(docs.path()));
    assert!(!broken.status.success());
    let err = text(&broken.stderr);
    assert!(err.contains("nowhere.md") && err.contains("no-such-anchor"), "{err}");
}

#[test]
fn docgen_renders_the_action_table_of_a_built_trusted_plugin_and_never_runs_a_sandboxed_one() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    for (folder, mode) in [("notes", "trusted"), ("boxed", "sandboxed")] {
        let dir = plugins.join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = std::fs::read_to_string(repo.join("plugins/notes/plugin.yaml"))
            .unwrap()
            .replace("name: notes", &format!("name: {folder}"))
            .replace(
                "entry_point: libnotes.so",
                &format!("entry_point: libnotes.so\nexecution_mode: {mode}"),
            );
        std::fs::write(dir.join("plugin.yaml"), yaml).unwrap();
        std::fs::copy(common::lib("xcore-plugin-notes"), dir.join("libnotes.so")).unwrap();
    }
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("README.md"), "# Index\n").unwrap();
    let out = tmp.path().join("site");
    let args = [
        "docgen",
        "--docs",
        docs.to_str().unwrap(),
        "--plugins-dir",
        plugins.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let r = xcore(tmp.path(), &args);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let page = std::fs::read_to_string(out.join("plugins/notes.html")).unwrap();
    assert!(page.contains("<h2 id=\"action-table\">Action table</h2>"), "{page}");
    assert!(page.contains("<code>route.get</code> <small>(route handler)</small>"), "{page}");
    assert!(
        page.contains("Path parameters (JSON Schema)") && page.contains("Creates a note and announces it"),
        "{page}"
    );
    assert!(page.contains("Example (no notes yet)"), "{page}");
    let boxed = std::fs::read_to_string(out.join("plugins/boxed.html")).unwrap();
    assert!(!boxed.contains("id=\"action-table\""), "a sandboxed plugin's code is not run: {boxed}");
}

#[test]
fn log_tools_read_a_real_servers_log() {
    let s = Server::start(&[PluginSpec::with("misbehave", "xcore-fixture-misbehave", "")]);
    for _ in 0..3 {
        assert_eq!(s.call("misbehave", "log", "{}").status, 200);
    }
    let dir = s.dir.path().join("logs");
    let dir = dir.to_str().unwrap();
    let out =
        xcore(s.dir.path(), &["logs", "tail", "--dir", dir, "--plugin", "misbehave", "--level", "warn"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tail = text(&out.stdout);
    assert_eq!(tail.matches("a warning from the plugin").count(), 3, "{tail}");
    let out = xcore(s.dir.path(), &["logs", "stats", "--dir", dir, "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(stats["by_plugin"]["misbehave"].as_u64().unwrap() >= 3, "{stats}");
    assert!(stats["entries"].as_u64().unwrap() > 3, "{stats}");
    // Three warnings: healthy at the default thresholds, degraded at 2, critical at 3.
    let health = |extra: &[&str]| {
        let mut args = vec!["logs", "health", "--dir", dir];
        args.extend_from_slice(extra);
        xcore(s.dir.path(), &args).status.code()
    };
    assert_eq!(health(&[]), Some(0));
    assert_eq!(health(&["--warn-warnings", "2"]), Some(1));
    assert_eq!(health(&["--critical-warnings", "3"]), Some(2));
    assert_eq!(xcore(s.dir.path(), &["logs", "health", "--dir", "/nonexistent"]).status.code(), Some(3));
}

#[test]
fn disable_enable_jobs_and_audit_from_the_command_line() {
    let s = Server::start(&[PluginSpec::echo(), PluginSpec::bookmarks(None)]);
    // Run in the server's folder: the URL and the admin token come from its xcore.yaml.
    let dir = s.dir.path();
    let out = xcore(dir, &["plugin", "disable", "echo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("\"state\": \"disabled\""), "{}", text(&out.stdout));
    let out = xcore(dir, &["plugin", "enable", "echo", "--token", "wrong"]);
    assert!(!out.status.success() && text(&out.stderr).starts_with("401"), "{}", text(&out.stderr));
    let out = xcore(dir, &["plugin", "enable", "echo"]);
    assert!(
        out.status.success() && text(&out.stdout).contains("\"state\": \"ready\""),
        "{}",
        text(&out.stderr)
    );

    let out = xcore(dir, &["jobs"]);
    assert!(out.status.success() && text(&out.stdout).contains("bookmarks.summary"), "{}", text(&out.stdout));
    let out = xcore(dir, &["jobs", "run", "bookmarks.summary"]);
    assert!(
        out.status.success() && text(&out.stdout).contains("\"outcome\": \"ok\""),
        "{}",
        text(&out.stdout)
    );
    let out = xcore(dir, &["jobs", "run", "nope"]);
    assert!(!out.status.success() && text(&out.stderr).contains("unknown_job"), "{}", text(&out.stderr));

    let out = xcore(dir, &["audit", "--target", "echo"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let audit: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["enable", "disable"], "the failed 401 attempt is not an admin action: {stdout}");
}

/// A plugin folder `name` in `root` with `plugin.yaml` and the built library of
/// `crate_name` where its entry point says.
fn plugin_folder(root: &std::path::Path, name: &str, crate_name: &str, manifest: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plugin.yaml"), manifest).unwrap();
    std::fs::copy(common::lib(crate_name), dir.join(format!("lib{name}.so"))).unwrap();
    dir
}

#[test]
fn plugin_run_calls_a_built_plugin_without_a_server() {
    let root = tempfile::tempdir().unwrap();
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/echo/plugin.yaml")).unwrap();
    let dir = plugin_folder(root.path(), "echo", "xcore-plugin-echo", &manifest);
    let dir_arg = dir.to_str().unwrap();
    let out = xcore(root.path(), &["plugin", "run", dir_arg, "greet", r#"{"name": "Ada"}"#]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "{\n  \"message\": \"hello, Ada!\"\n}\n", "pretty JSON on stdout");
    // The plugin's own log line goes to stderr, not into the reply.
    assert!(text(&out.stderr).contains("echo 0.1.0 ready"), "{}", text(&out.stderr));
    // No payload: {}; the caller the plugin sees is `cli`.
    let out = xcore(root.path(), &["plugin", "run", dir_arg, "echo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["echo"], serde_json::json!({}));
    // --plugin-config over plugin.yaml's.
    let out = xcore(
        root.path(),
        &["plugin", "run", dir_arg, "greet", r#"{"name":"Bo"}"#, "--plugin-config", r#"{"greeting":"hi"}"#],
    );
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["message"], "hi, Bo!");

    // A plugin error: non-zero, nothing on stdout, code, status and message on stderr.
    let out = xcore(root.path(), &["plugin", "run", dir_arg, "greet", r#"{"who": 1}"#]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("plugin 'echo' action 'greet' failed: invalid_payload (status 400): ")
            && stderr.contains("missing field `name`"),
        "{stderr}"
    );
    let out = xcore(root.path(), &["plugin", "run", dir_arg, "nope"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown_action (status 404): unknown action 'nope'"),
        "{}",
        text(&out.stderr)
    );
    // A payload that is not JSON.
    let out = xcore(root.path(), &["plugin", "run", dir_arg, "echo", "{oops"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("the payload is not JSON"), "{}", text(&out.stderr));

    // No library: says what to run.
    std::fs::remove_file(dir.join("libecho.so")).unwrap();
    let out = xcore(root.path(), &["plugin", "run", dir_arg, "version"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("libecho.so")
            && stderr.contains("is missing")
            && stderr.contains(&format!("xcore plugin build --plugins-dir {} echo", root.path().display())),
        "{stderr}"
    );
}

#[test]
fn plugin_run_refuses_what_a_running_host_refuses_word_for_word() {
    // misbehave's `host` action makes a host call with `{}` and answers the result as data.
    let s = Server::start(&[PluginSpec::with("misbehave", "xcore-fixture-misbehave", "")]);
    let dir = s.plugins_dir().join("misbehave");
    let services = [
        "kv.get",
        "kv.incr",
        "cache.get",
        "scheduler.add",
        "db.query",
        "events.emit",
        "events.subscribe",
        "plugins.call",
        "telepathy",
    ];
    for service in services {
        let payload = format!(r#"{{"service": "{service}"}}"#);
        let from_host = s.call("misbehave", "host", &payload);
        assert_eq!(from_host.status, 200, "{service}: {}", from_host.body);
        let out = xcore(s.dir.path(), &["plugin", "run", dir.to_str().unwrap(), "host", &payload]);
        assert!(out.status.success(), "{service}: {}", text(&out.stderr));
        let from_kit: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(from_kit, from_host.json(), "{service}: the kit and the host answer differently");
    }
    // An operator grant the manifest does not ask for is not in effect, as on the host.
    let out = xcore(
        s.dir.path(),
        &["plugin", "run", dir.to_str().unwrap(), "host", r#"{"service": "kv.list"}"#, "--grant", "kv"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], "permission_denied", "{v}");
}
