//! Installing plugins from git, through the real binary: a local repository made by
//! the test (file:// URL), a running server that loads and unloads it, a repository
//! that fails to build leaving nothing behind, and names that try to escape (these with
//! signatures off); then, under the default signature policy, signed sources installed
//! with `make add-plugin`, and unsigned, tampered or foreign-signed sources refused before
//! anything of them runs.

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
    let api = Path::new(env!("CARGO_MANIFEST_DIR")).join("../xcore-plugin-api/sdk").canonicalize().unwrap();
    std::fs::write(
        repo.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nxcore-plugin-sdk = {{ path = {api:?} }}\n\n[workspace]\n"
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
            "use xcore_plugin_sdk::{{export_plugin, Context, Plugin, PluginError, Reply, Request}};\n\
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

// ---------------------------------------------------------------------------------------
// Signed sources under the default policy: the author's path (keys, `xcore plugin new`,
// `xcore plugin sign`, git) and the operator's (`make add-plugin`), then the refusals.

/// `xcore` run in `cwd` (an author's folder or the host's), sharing the workspace's build cache.
fn xcore_in(cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xcore"))
        .args(args)
        .current_dir(cwd)
        .env("CARGO_TARGET_DIR", common::target_dir().parent().unwrap())
        .output()
        .unwrap()
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

/// A host on the default signature policy (`security: {}`) that trusts `trusted_pub`, added
/// with `xcore keys trust` before it starts, as an operator does.
fn host_trusting(trusted_pub: &Path) -> Server {
    let trusted_pub = trusted_pub.to_path_buf();
    Server::start_custom(
        move |plugins| {
            let root = plugins.parent().unwrap();
            let out = ok(xcore_in(root, &["keys", "trust", trusted_pub.to_str().unwrap()]));
            assert!(out.contains("fingerprint: sha256:"), "{out}");
            // The default folder of its own, not beside any private key.
            assert!(root.join("keys/trusted").join(trusted_pub.file_name().unwrap()).is_file(), "{out}");
        },
        "security: {}\n",
        &[],
        &[],
    )
}

/// An author's folder with key pairs `alice` and `mallory` (2048 bits keeps it quick).
fn author() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["alice", "mallory"] {
        ok(xcore_in(dir.path(), &["keys", "generate", "--dir", "keys", "--name", name, "--bits", "2048"]));
    }
    dir
}

/// `xcore plugin new NAME` in the author's folder, with a build script that writes `marker`
/// when it runs (so a test sees whether anything of the plugin ran) and a Cargo.lock; the
/// crate is a git repository with everything committed but nothing signed yet.
fn new_crate(author: &Path, name: &str, marker: &Path) -> PathBuf {
    let api = Path::new(env!("CARGO_MANIFEST_DIR")).join("../xcore-plugin-api").canonicalize().unwrap();
    let out = ok(xcore_in(
        author,
        &[
            "plugin",
            "new",
            name,
            "--plugins-dir",
            author.to_str().unwrap(),
            "--api-path",
            api.to_str().unwrap(),
        ],
    ));
    assert!(out.contains("xcore plugin sign"), "plugin new says how to sign: {out}");
    let dir = author.join(name);
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(readme.contains("xcore plugin sign") && readme.contains("xcore keys trust"), "{readme}");
    std::fs::write(
        dir.join("build.rs"),
        format!("fn main() {{ std::fs::write({:?}, \"the build script ran\").unwrap(); }}\n", marker),
    )
    .unwrap();
    run(Command::new(env!("CARGO"))
        .args(["generate-lockfile", "--offline", "--manifest-path"])
        .arg(dir.join("Cargo.toml")));
    git_in(&dir, &["init", "-q"]);
    commit_all(&dir, "new plugin");
    dir
}

fn git_in(dir: &Path, args: &[&str]) {
    run(Command::new("git").args(["-c", "user.name=t", "-c", "user.email=t@t"]).args(args).current_dir(dir));
}

fn commit_all(dir: &Path, message: &str) {
    git_in(dir, &["add", "-A"]);
    git_in(dir, &["commit", "-q", "--allow-empty", "-m", message]);
}

fn sign_with(author: &Path, krate: &Path, key: &str) -> String {
    ok(xcore_in(author, &["plugin", "sign", krate.to_str().unwrap(), "--key", &format!("keys/{key}.key")]))
}

/// `make add-plugin PLUGIN_REPO=file://...` from the host's folder: the Makefile of this
/// repository, its xcore.yaml, plugins/ and runtime/, the running server told to rescan.
fn make_add_plugin(s: &Server, repo: &Path, extra: &[&str]) -> std::process::Output {
    let makefile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Makefile").canonicalize().unwrap();
    Command::new("make")
        .args(["-s", "-f", makefile.to_str().unwrap(), "add-plugin"])
        .arg(format!("PLUGIN_REPO=file://{}", repo.display()))
        .args(extra)
        .current_dir(s.dir.path())
        .env("CARGO_TARGET_DIR", common::target_dir().parent().unwrap())
        .env("XCORE_URL", &s.base)
        .env("XCORE_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap()
}

fn fingerprint_of(author: &Path, key: &str) -> String {
    let public = xcore_security::keys::load_public(&author.join(format!("keys/{key}.pub"))).unwrap();
    xcore_security::keys::fingerprint(&public)
}

fn sha256_hex(path: &Path) -> String {
    xcore_security::digest::sha256_file(path).unwrap()
}

/// The whole path with signatures on: the author signs the sources and pushes, the host
/// verifies them before building, builds, records the build, and the plugin answers over
/// HTTP; it loads again after a restart; a library swapped afterwards is refused by name.
#[test]
fn signed_sources_install_with_make_add_plugin_under_the_default_policy() {
    let author = author();
    let a = author.path();
    let s = host_trusting(&a.join("keys/alice.pub"));
    let marker = a.join("hello-built");
    let krate = new_crate(a, "hello", &marker);
    let out = sign_with(a, &krate, "alice");
    assert!(
        out.contains("signed the sources of hello 0.1.0") && out.contains("libhello.so is left out"),
        "{out}"
    );
    let sig: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(krate.join("plugin.sig")).unwrap()).unwrap();
    let files: Vec<&str> = sig["files"].as_object().unwrap().keys().map(String::as_str).collect();
    for f in ["Cargo.lock", "Cargo.toml", "build.rs", "plugin.yaml", "src/lib.rs", ".gitignore", "README.md"]
    {
        assert!(files.contains(&f), "{f} is signed: {files:?}");
    }
    assert_eq!(sig["library"], "libhello.so");
    commit_all(&krate, "sign");

    let out = make_add_plugin(&s, &krate, &[]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    let fp = fingerprint_of(a, "alice");
    assert!(
        shown.contains("installed hello 0.1.0") && shown.contains(&format!("sources signed by {fp}")),
        "{shown}"
    );
    assert!(marker.is_file(), "the build ran (and with it the build script): {shown}");

    // Loaded by the running server, signed by alice, the library the one this host built.
    let info = s.wait_state("hello", "ready", std::time::Duration::from_secs(10));
    assert_eq!(info["signed_by"], fp.as_str(), "{info}");
    let r = s.call("hello", "greet", r#"{"name":"Ada"}"#);
    assert_eq!((r.status, r.json()["message"].as_str()), (200, Some("Hello, Ada!")), "{}", r.body);
    let r = s.request("POST", "/plugins/hello/greet", Some(r#"{"name":"Ada","shout":true}"#));
    assert_eq!(r.json()["message"], "HELLO, ADA!", "{}", r.body);
    let installed = s.plugins_dir().join("hello");
    assert!(installed.join("build.sig").is_file() && installed.join("plugin.sig").is_file());
    assert!(!installed.join("target").exists() && !installed.join(".git").exists());
    let lib_hash = sha256_hex(&installed.join("libhello.so"));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(installed.join("build.sig")).unwrap()).unwrap();
    assert_eq!(record["library_sha256"], lib_hash.as_str());
    let states = s.request_admin("GET", "/api/v1/state/plugins").json();
    let state = states["plugins"].as_array().unwrap().iter().find(|r| r["name"] == "hello").cloned().unwrap();
    assert_eq!(state["library_sha256"], lib_hash.as_str(), "{state}");
    // The host key lives in runtime/, private, never among the trusted keys.
    let host_key = s.dir.path().join("runtime/keys/host.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&host_key).unwrap().permissions().mode() & 0o777, 0o600);
    let trusted: Vec<_> = std::fs::read_dir(s.dir.path().join("keys/trusted"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(trusted, ["alice.pub"]);

    // A new server process checks the record again and loads it.
    let mut s = s;
    s.restart();
    assert_eq!(s.info("hello")["state"], "ready", "{}", s.output());
    assert_eq!(s.call("hello", "greet", r#"{"name":"Bo"}"#).json()["message"], "Hello, Bo!");

    // A library swapped after the install (written the safe way) is refused by name.
    let lib = installed.join("libhello.so");
    let tmp = installed.join("swap.tmp");
    std::fs::copy(common::lib("xcore-plugin-echo"), &tmp).unwrap();
    std::fs::rename(&tmp, &lib).unwrap();
    let r = s.admin("/api/v1/plugins/hello/reload");
    assert_eq!((r.status, r.code().as_str()), (422, "signature_refused"), "{}", r.body);
    let err = s.info("hello")["last_error"].as_str().unwrap_or_default().to_string();
    assert!(err.contains("libhello.so") && err.contains("not the library this host built"), "{err}");
    assert_eq!(
        s.call("hello", "greet", r#"{"name":"Cy"}"#).json()["message"],
        "Hello, Cy!",
        "the old one serves"
    );
    let verify = xcore_in(s.dir.path(), &["plugin", "verify", "plugins/hello"]);
    assert!(!verify.status.success() && text(&verify).contains("REFUSED"), "{}", text(&verify));
}

/// Unsigned sources, a source file changed or added after signing, a key the host does not
/// trust: each refused before anything is built (the build script's marker never appears),
/// naming the file, with nothing left in the plugins folder; `--stage` keeps a checkout.
#[test]
fn unsigned_tampered_and_untrusted_sources_are_refused_before_any_build() {
    let author = author();
    let a = author.path();
    let s = host_trusting(&a.join("keys/alice.pub"));
    let nothing_installed = |case: &str, name: &str| {
        let left: Vec<_> =
            std::fs::read_dir(s.plugins_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "{case}: left in plugins/: {left:?}");
        assert_eq!(s.get(&format!("/api/v1/plugins/{name}")).status, 404, "{case}");
    };
    let refused = |case: &str, name: &str, krate: &Path, marker: &Path, needles: &[&str]| {
        let out = make_add_plugin(&s, krate, &[]);
        let shown = text(&out);
        assert!(!out.status.success(), "{case}: installed: {shown}");
        for n in needles {
            assert!(shown.contains(n), "{case}: no {n:?} in: {shown}");
        }
        assert!(shown.contains("nothing was built or installed"), "{case}: {shown}");
        assert!(!marker.exists(), "{case}: the build script ran");
        nothing_installed(case, name);
    };

    // 1. Never signed.
    let marker = a.join("unsigned-built");
    let krate = new_crate(a, "unsigned", &marker);
    refused("unsigned", "unsigned", &krate, &marker, &["plugin.sig", "not signed", "xcore plugin sign"]);

    // 2. A source file changed after signing, and committed.
    let marker = a.join("changed-built");
    let krate = new_crate(a, "changed", &marker);
    sign_with(a, &krate, "alice");
    commit_all(&krate, "sign");
    let lib_rs = krate.join("src/lib.rs");
    let code = std::fs::read_to_string(&lib_rs).unwrap();
    std::fs::write(&lib_rs, code.replace("Hello", "Pwned")).unwrap();
    commit_all(&krate, "change after signing");
    refused("changed", "changed", &krate, &marker, &["src/lib.rs changed since the plugin was signed"]);

    // 3. A build script added after signing (the one that would run first).
    let marker = a.join("added-built");
    let krate = new_crate(a, "added", &marker);
    std::fs::rename(krate.join("build.rs"), a.join("added-build.rs")).unwrap();
    commit_all(&krate, "no build script");
    sign_with(a, &krate, "alice");
    std::fs::rename(a.join("added-build.rs"), krate.join("build.rs")).unwrap();
    commit_all(&krate, "sign, then a build script");
    refused("added", "added", &krate, &marker, &["build.rs is not covered by the signature"]);

    // 4. Signed by a key this host does not trust.
    let marker = a.join("stranger-built");
    let krate = new_crate(a, "stranger", &marker);
    sign_with(a, &krate, "mallory");
    commit_all(&krate, "sign");
    let fp = fingerprint_of(a, "mallory");
    refused("untrusted", "stranger", &krate, &marker, &[&fp, "not trusted", "xcore keys trust"]);

    // --stage keeps the refused checkout for review, outside the plugins folder.
    let out = make_add_plugin(&s, &krate, &["STAGE=1"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    let kept = shown
        .lines()
        .find_map(|l| l.split_once("kept for review in ").map(|(_, p)| PathBuf::from(p.trim())))
        .unwrap_or_else(|| panic!("no path said: {shown}"));
    let kept = if kept.is_absolute() { kept } else { s.dir.path().join(kept) };
    assert!(kept.starts_with(s.dir.path().join("runtime/staged")), "{}", kept.display());
    assert!(kept.join("build.rs").is_file() && kept.join("plugin.sig").is_file(), "{}", kept.display());
    assert!(!marker.exists(), "staged, not built");
    nothing_installed("staged", "stranger");
}
