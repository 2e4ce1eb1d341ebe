//! The plugin template, two ways in: `xcore plugin new` renders it, cargo tests and
//! builds the result, a real server loads it and answers over HTTP. Where
//! cargo-generate is installed, its rendering must equal ours.

mod common;

use std::path::Path;
use std::process::Command;

use common::Server;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?}: {text}");
    text
}

#[test]
fn a_new_plugin_renders_tests_builds_loads_and_answers() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let api = repo.join("xcore-plugin-api");
    let target = common::target_dir().parent().unwrap().to_path_buf();
    let s = Server::start_custom(
        |plugins| {
            let xcore = |args: &[&str]| {
                run(Command::new(env!("CARGO_BIN_EXE_xcore"))
                    .args(args)
                    .env("CARGO_TARGET_DIR", &target)
                    .current_dir(plugins.parent().unwrap()))
            };
            let dir = plugins.to_str().unwrap();
            let out = xcore(&[
                "plugin",
                "new",
                "hello",
                "--plugins-dir",
                dir,
                "--api-path",
                api.to_str().unwrap(),
                "--description",
                "Says hello",
                "--author",
                "CI",
            ]);
            assert!(out.contains("created"), "{out}");
            // Its unit tests pass, the test kit's included. The workspace's lockfile keeps
            // the rendered crate on the versions already built in the shared target dir.
            std::fs::copy(repo.join("Cargo.lock"), plugins.join("hello/Cargo.lock")).unwrap();
            let manifest = plugins.join("hello/Cargo.toml");
            run(Command::new(env!("CARGO"))
                .args(["test", "-q", "--manifest-path"])
                .arg(&manifest)
                .env("CARGO_TARGET_DIR", &target));
            // Built and installed where its manifest points.
            let out = xcore(&["plugin", "build", "--plugins-dir", dir, "hello"]);
            assert!(out.contains("built hello"), "{out}");
        },
        "",
        &[],
        &[],
    );
    let info = s.info("hello");
    assert_eq!(
        (info["state"].as_str(), info["description"].as_str()),
        (Some("ready"), Some("Says hello")),
        "{info}"
    );
    assert_eq!(s.call("hello", "greet", r#"{"name":"Ada"}"#).json()["message"], "Hello, Ada!");
    let r = s.request("POST", "/plugins/hello/greet", Some(r#"{"name":"Ada","shout":true}"#));
    assert_eq!(r.json()["message"], "HELLO, ADA!", "{}", r.body);
    let r = s.call("hello", "greet", r#"{"name":" "}"#);
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_payload"));
}

#[test]
fn cargo_generate_renders_the_same_files() {
    if Command::new("cargo")
        .args(["generate", "--version"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        eprintln!("skipped: cargo-generate is not installed (cargo install cargo-generate@0.23.14 --locked)");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(out.path().join("cg")).unwrap();
    run(Command::new("cargo")
        .args(["generate", "--path"])
        .arg(repo.join("plugin-template"))
        .args(["--name", "twin", "--vcs", "none", "--silent", "--destination"])
        .arg(out.path().join("cg"))
        .args([
            "--define",
            "description=Twins",
            "--define",
            "author=CI",
            "--define",
            "execution_mode=trusted",
        ])
        .args(["--define", r#"sdk_source=path = "../../xcore-plugin-api/sdk""#]));
    run(Command::new(env!("CARGO_BIN_EXE_xcore"))
        .args(["plugin", "new", "twin", "--description", "Twins", "--author", "CI", "--plugins-dir"])
        .arg(out.path().join("ours")));
    for file in ["Cargo.toml", "plugin.yaml", "README.md", "src/lib.rs", "tests/kit.rs"] {
        let a = std::fs::read_to_string(out.path().join("cg/twin").join(file)).unwrap();
        let b = std::fs::read_to_string(out.path().join("ours/twin").join(file)).unwrap();
        assert_eq!(a, b, "{file} differs between cargo-generate and xcore plugin new");
    }
}

/// Outside this repository: `xcore plugin new --api-git URL --api-tag TAG` renders a crate
/// whose SDK comes from that repository at that tag, and cargo builds it from there. The
/// repository is a clone of this checkout's HEAD (committed work only), tagged here.
#[test]
fn a_plugin_outside_the_repository_builds_against_the_sdk_from_git_and_a_tag() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let xcore_repo = tmp.path().join("xcore");
    run(Command::new("git").args(["clone", "-q", "--no-hardlinks"]).arg(&repo).arg(&xcore_repo));
    run(Command::new("git").arg("-C").arg(&xcore_repo).args(["tag", "sdk-test"]));
    let url = format!("file://{}", xcore_repo.display());
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_xcore"))
        .args(["plugin", "new", "outside", "--plugins-dir"])
        .arg(&work)
        .args(["--api-git", &url, "--api-tag", "sdk-test"])
        .current_dir(&work));
    let crate_dir = work.join("outside");
    let toml = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(toml.contains(&format!(r#"xcore-plugin-sdk = {{ git = "{url}", tag = "sdk-test" }}"#)), "{toml}");
    assert!(
        toml.contains(&format!(r#"xcore-plugin-testkit = {{ git = "{url}", tag = "sdk-test" }}"#)),
        "{toml}"
    );
    // The workspace's lockfile keeps the registry crates on the versions built already.
    std::fs::copy(repo.join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
    let target = common::target_dir().parent().unwrap().to_path_buf();
    let out = run(Command::new(env!("CARGO"))
        .args(["build", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target));
    assert!(out.contains(&format!("xcore-plugin-sdk v0.2.0 ({url}?tag=sdk-test")), "{out}");
    assert!(target.join("debug/liboutside.so").is_file(), "{out}");
}
