//! Installing plugins from git, through the real binary: a local repository made by
//! the test (file:// URL), a running server that loads and unloads it, a repository
//! that fails to build leaving nothing behind, and names that try to escape.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Server, TOKEN};

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A plugin crate in a git repository of its own: tag v1 answers "one", the default
/// branch answers `word`.
fn make_repo(root: &Path, name: &str, word: &str, broken: bool) -> PathBuf {
    let repo = root.join(format!("{name}-repo"));
    std::fs::create_dir_all(repo.join("src")).unwrap();
    let api = Path::new(env!("CARGO_MANIFEST_DIR")).join("../xcore-plugin-api").canonicalize().unwrap();
    std::fs::write(
        repo.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nxcore-plugin-api = {{ path = {api:?} }}\nabi_stable = \"0.11.3\"\n\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"), repo.join("Cargo.lock"))
        .unwrap();
    std::fs::write(
        repo.join("plugin.yaml"),
        format!(
            "name: {name}\nversion: 0.1.0\napi_version: \"^0.1\"\nentry_point: lib{}.so\n",
            name.replace('-', "_")
        ),
    )
    .unwrap();
    let source = |w: &str| {
        format!(
            "use xcore_plugin_api::{{export_plugin, Context, Plugin, PluginError, Reply, Request}};\n\
             struct P;\nimpl Plugin for P {{\n    fn new(_: &Context) -> Result<Self, PluginError> {{ Ok(P) }}\n    \
             fn call(&self, _: &Context, _: Request<'_>) -> Result<Reply, PluginError> {{ Reply::json(&\"{w}\") }}\n}}\n\
             export_plugin!(P);\n"
        )
    };
    let git = |args: &[&str]| {
        run(Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(&repo))
    };
    git(&["init", "-q"]);
    std::fs::write(repo.join("src/lib.rs"), source("one")).unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "one"]);
    git(&["tag", "v1"]);
    std::fs::write(
        repo.join("src/lib.rs"),
        if broken { "not rust at all".to_string() } else { source(word) },
    )
    .unwrap();
    git(&["commit", "-q", "-am", "two"]);
    repo
}

fn xcore(server: &Server, args: &[&str]) -> std::process::Output {
    let target = common::target_dir().parent().unwrap().to_path_buf();
    Command::new(env!("CARGO_BIN_EXE_xcore"))
        .args(args)
        .args([
            "--plugins-dir",
            server.plugins_dir().to_str().unwrap(),
            "--url",
            &server.base,
            "--token",
            TOKEN,
        ])
        .current_dir(server.dir.path())
        // Share the workspace's build cache: the test builds the same dependencies.
        .env("CARGO_TARGET_DIR", target)
        .env("XCORE__SECURITY__REQUIRE_SIGNATURES", "none")
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn add_builds_loads_and_rm_removes() {
    let s = Server::start(&[]);
    let repos = tempfile::tempdir().unwrap();
    let repo = make_repo(repos.path(), "gitplug", "two", false);
    let url = format!("file://{}", repo.display());

    let out = xcore(&s, &["plugin", "add", &url, "--ref", "v1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("installed gitplug 0.1.0"), "{}", text(&out));
    assert_eq!(s.info("gitplug")["state"], "ready", "the running server loaded it");
    assert_eq!(s.call("gitplug", "any", "null").json(), "one", "the tag was checked out");
    assert!(!s.plugins_dir().join("gitplug/.git").exists());
    assert!(!s.get("/api/v1/state/plugins").body.contains(&url), "the open view hides the source");
    let records = s.request_admin("GET", "/api/v1/state/plugins").json();
    let rec =
        records["plugins"].as_array().unwrap().iter().find(|r| r["name"] == "gitplug").cloned().unwrap();
    let source = rec["source"].as_str().unwrap_or_default();
    assert!(source.starts_with(&format!("{url} v1 (")) && source.len() > url.len() + 40, "{rec}");
    assert_eq!(
        (rec["enabled"].clone(), rec["version"].clone()),
        (serde_json::json!(true), serde_json::json!("0.1.0"))
    );

    // Installed already: refused without --force, replaced with it.
    let out = xcore(&s, &["plugin", "add", &url]);
    assert!(!out.status.success() && text(&out).contains("--force"), "{}", text(&out));
    let out = xcore(&s, &["plugin", "add", &url, "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.admin("/api/v1/plugins/gitplug/reload").status, 200);
    assert_eq!(s.call("gitplug", "any", "null").json(), "two");

    let out = xcore(&s, &["plugin", "rm", "gitplug"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!s.plugins_dir().join("gitplug").exists());
    assert_eq!(s.get("/api/v1/plugins/gitplug").status, 404);
    let leftovers: Vec<_> = std::fs::read_dir(s.plugins_dir()).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_repository_that_fails_to_build_leaves_nothing_installed() {
    let s = Server::start(&[]);
    let repos = tempfile::tempdir().unwrap();
    let repo = make_repo(repos.path(), "broken-plug", "", true);
    let out = xcore(&s, &["plugin", "add", &format!("file://{}", repo.display())]);
    assert!(!out.status.success());
    assert!(text(&out).contains("cargo build"), "{}", text(&out));
    let leftovers: Vec<_> =
        std::fs::read_dir(s.plugins_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(leftovers.is_empty(), "half-installed: {leftovers:?}");
    assert_eq!(s.get("/api/v1/plugins/broken-plug").status, 404);
}

#[test]
fn names_that_escape_the_plugins_folder_are_refused() {
    let s = Server::start(&[]);
    for name in ["../evil", "/etc", "a/../../b"] {
        let out = xcore(&s, &["plugin", "add", "file:///nonexistent", "--name", name]);
        assert!(!out.status.success());
        assert!(text(&out).contains("is not a plugin name"), "{}", text(&out));
        let out = xcore(&s, &["plugin", "rm", name]);
        assert!(text(&out).contains("is not a plugin name"), "{}", text(&out));
    }
}
