//! Plugin signatures through the real binary: keys, sign, verify, and a server that
//! refuses every kind of tampering, at boot and on hot reload.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{PluginSpec, Server};

fn xcore(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xcore")).args(args).current_dir(cwd).output().unwrap()
}

fn ok(out: std::process::Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    text
}

fn sign(root: &Path, folder: &str, key: &str) {
    ok(xcore(&["plugin", "sign", &format!("plugins/{folder}"), "--key", key], root));
}

const SECURITY: &str = "security:\n  require_signatures: trusted\n  trusted_keys_dir: keys\n";

#[test]
fn every_kind_of_tampering_is_refused_and_named() {
    let s = Server::start_custom(
        |plugins| {
            let root = plugins.parent().unwrap();
            // 2048 bits keeps the test quick; the CLI's default is 3072.
            ok(xcore(&["keys", "generate", "--dir", "keys", "--name", "ci", "--bits", "2048"], root));
            ok(xcore(
                &["keys", "generate", "--dir", "other-keys", "--name", "stranger", "--bits", "2048"],
                root,
            ));
            let names = [
                "good", "unsigned", "edited", "flipped", "added", "removed", "moved", "borrowed", "stranger",
            ];
            let specs: Vec<_> = names.iter().map(|n| PluginSpec::with(n, "xcore-plugin-echo", "")).collect();
            common::write_plugins(plugins, &specs);
            for extra in ["removed", "moved"] {
                std::fs::create_dir_all(plugins.join(extra).join("assets")).unwrap();
                std::fs::write(plugins.join(extra).join("assets/a.txt"), "asset").unwrap();
            }
            for n in names.iter().filter(|n| **n != "unsigned" && **n != "stranger") {
                sign(root, n, "keys/ci.key");
            }
            sign(root, "stranger", "other-keys/stranger.key");
            // The tampering, after signing.
            let p = |n: &str| plugins.join(n);
            std::fs::write(p("edited").join("plugin.yaml"), "name: edited\nversion: 0.1.0\napi_version: \"^0.1\"\nentry_point: libedited.so\nconfig: { greeting: pwned }\n").unwrap();
            let lib = p("flipped").join("libflipped.so");
            let mut bytes = std::fs::read(&lib).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&lib, bytes).unwrap();
            std::fs::write(p("added").join("extra.txt"), "not signed").unwrap();
            std::fs::remove_file(p("removed").join("assets/a.txt")).unwrap();
            std::fs::create_dir_all(p("moved").join("elsewhere")).unwrap();
            std::fs::rename(p("moved").join("assets/a.txt"), p("moved").join("elsewhere/a.txt")).unwrap();
            std::fs::copy(p("good").join("plugin.sig"), p("borrowed").join("plugin.sig")).unwrap();
        },
        SECURITY,
        &[],
        &[],
    );
    let info = s.info("good");
    assert_eq!(info["state"], "ready", "{info}");
    assert!(info["signed_by"].as_str().unwrap().starts_with("sha256:"), "{info}");
    assert_eq!(s.call("good", "echo", "1").status, 200);
    let refused = |name: &str, needle: &str| {
        let info = s.info(name);
        assert_eq!(info["state"], "failed", "{name}: {info}");
        let err = info["last_error"].as_str().unwrap();
        assert!(err.contains("signature") && err.contains(needle), "{name}: {err}");
    };
    refused("unsigned", "plugin.sig");
    refused("edited", "plugin.yaml");
    refused("flipped", "libflipped.so");
    refused("added", "extra.txt");
    refused("removed", "assets/a.txt");
    refused("moved", "assets/a.txt");
    refused("borrowed", "good");
    refused("stranger", "sha256:");
}

#[test]
fn sandboxed_plugins_need_no_signature_under_the_trusted_policy_and_verify_prints_per_file() {
    let s = Server::start_custom(
        |plugins| {
            let root = plugins.parent().unwrap();
            ok(xcore(&["keys", "generate", "--dir", "keys", "--name", "ci", "--bits", "2048"], root));
            common::write_plugins(
                plugins,
                &[PluginSpec::with("boxed", "xcore-fixture-misbehave", "execution_mode: sandboxed")],
            );
        },
        SECURITY,
        &[],
        &[],
    );
    assert_eq!(s.info("boxed")["state"], "ready");
    let root = s.dir.path();
    sign(root, "boxed", "keys/ci.key");
    let out = xcore(&["plugin", "verify", "plugins/boxed", "--key", "keys/ci.pub"], root);
    let text = ok(out);
    assert!(text.contains("ok        plugin.yaml") && text.contains("OK: boxed 0.1.0"), "{text}");
    std::fs::write(root.join("plugins/boxed/plugin.yaml"), "name: boxed\nversion: 0.1.0\napi_version: \"^0.1\"\nentry_point: libboxed.so\nexecution_mode: sandboxed\n# edited\n").unwrap();
    let out = xcore(&["plugin", "verify", "plugins/boxed", "--key", "keys/ci.pub"], root);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("changed   plugin.yaml") && text.contains("REFUSED"), "{text}");
    // A sandboxed plugin that ships a signature is held to it: a reload now fails.
    let r = s.admin("/api/v1/plugins/boxed/reload");
    assert_eq!((r.status, r.code().as_str()), (422, "signature_refused"), "{}", r.body);
    assert_eq!(s.info("boxed")["state"], "ready", "the old version keeps serving");
}

#[test]
fn a_hot_reload_of_a_tampered_plugin_keeps_the_old_version_serving() {
    let s = Server::start_custom(
        |plugins| {
            let root = plugins.parent().unwrap();
            ok(xcore(&["keys", "generate", "--dir", "keys", "--name", "ci", "--bits", "2048"], root));
            common::write_plugins(plugins, &[PluginSpec::echo()]);
            sign(root, "echo", "keys/ci.key");
        },
        &format!("{SECURITY}plugins:\n  watch: true\n  debounce_ms: 100\n"),
        &[],
        &[],
    );
    assert_eq!(s.info("echo")["state"], "ready");
    // A new library written the safe way, but not signed.
    let lib = s.plugins_dir().join("echo/libecho.so");
    let mut bytes = std::fs::read(&lib).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x01;
    let tmp = lib.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, &lib).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = s.info("echo");
        if let Some(err) = info["last_error"].as_str() {
            assert!(err.contains("signature") && err.contains("libecho.so"), "{err}");
            break;
        }
        assert!(Instant::now() < deadline, "no reload attempt: {info}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let info = s.info("echo");
    assert_eq!((info["state"].as_str(), info["generation"].as_u64()), (Some("ready"), Some(1)), "{info}");
    assert_eq!(s.call("echo", "echo", "1").status, 200);
}

/// The loader maps only a copy whose hash is the signed one: a library swapped after the
/// signature check (a race with whoever can write the plugin folder) is refused.
#[test]
fn the_mapped_copy_must_have_the_signed_hash() {
    use xcore_runtime::trusted::loader;
    let lib = common::lib("xcore-plugin-echo");
    let runtime = tempfile::tempdir().unwrap();
    let before = loader::mapped_libraries();
    let wrong = "0".repeat(64);
    let err = loader::load_path("echo", &lib, runtime.path(), Some(&wrong)).err().expect("refused");
    assert!(err.to_string().contains("changed after its signature was checked"), "{err}");
    assert_eq!(loader::mapped_libraries(), before, "nothing was mapped");
    let bytes = std::fs::read(&lib).unwrap();
    use sha2::Digest;
    let right: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    assert!(loader::load_path("echo", &lib, runtime.path(), Some(&right)).is_ok());
}

/// A crate's signature covers its sources and leaves the library out: the library loads only
/// with this host's build record for exactly those sources (the record is written here with
/// the function `xcore plugin build` and `xcore plugin add` use, in the server's runtime
/// folder), and only while it has the recorded hash.
#[test]
fn a_signature_of_sources_needs_this_hosts_build_record() {
    use xcore_security::{build_record, host_key};
    let other_host = tempfile::tempdir().unwrap();
    let other_host_dir = other_host.path().to_path_buf();
    let mut s = Server::start_custom(
        |plugins| {
            let root = plugins.parent().unwrap();
            ok(xcore(&["keys", "generate", "--dir", "keys", "--name", "ci", "--bits", "2048"], root));
            let names = ["norecord", "recorded", "foreign", "stale"];
            let specs: Vec<_> = names.iter().map(|n| PluginSpec::with(n, "xcore-plugin-echo", "")).collect();
            common::write_plugins(plugins, &specs);
            let host = host_key::load_or_create(&root.join("runtime")).unwrap();
            let stranger = host_key::load_or_create(&other_host_dir).unwrap();
            for n in names {
                let dir = plugins.join(n);
                std::fs::write(
                    dir.join("Cargo.toml"),
                    format!("[package]\nname = \"{n}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[workspace]\n"),
                )
                .unwrap();
                std::fs::write(dir.join("Cargo.lock"), "version = 4\n").unwrap();
                std::fs::create_dir_all(dir.join("src")).unwrap();
                std::fs::write(dir.join("src/lib.rs"), "// the sources\n").unwrap();
                let out =
                    ok(xcore(&["plugin", "sign", &format!("plugins/{n}"), "--key", "keys/ci.key"], root));
                assert!(
                    out.contains("signed the sources") && out.contains(&format!("lib{n}.so is left out")),
                    "{out}"
                );
                let lib = format!("lib{n}.so");
                match n {
                    "recorded" => drop(build_record::record_build(&dir, n, "0.1.0", &lib, &host).unwrap()),
                    "foreign" => drop(build_record::record_build(&dir, n, "0.1.0", &lib, &stranger).unwrap()),
                    "stale" => {
                        build_record::record_build(&dir, n, "0.1.0", &lib, &host).unwrap();
                        std::fs::write(dir.join("src/lib.rs"), "// other sources, signed again\n").unwrap();
                        ok(xcore(&["plugin", "sign", "plugins/stale", "--key", "keys/ci.key"], root));
                    }
                    _ => {}
                }
            }
        },
        SECURITY,
        &[],
        &[],
    );
    let info = s.info("recorded");
    assert_eq!(info["state"], "ready", "{info}\n{}", s.output());
    assert!(info["signed_by"].as_str().unwrap().starts_with("sha256:"), "{info}");
    assert_eq!(s.call("recorded", "echo", "1").status, 200);
    let refused = |s: &Server, name: &str, needles: &[&str]| {
        let info = s.info(name);
        let err = info["last_error"].as_str().unwrap_or_default();
        for n in needles {
            assert!(err.contains(n), "{name}: no {n:?} in {err}");
        }
        err.to_string()
    };
    for (name, needle) in [
        ("norecord", "no build record"),
        ("foreign", "not this host's key"),
        ("stale", "other sources than the ones signed"),
    ] {
        assert_eq!(s.info(name)["state"], "failed", "{name}");
        refused(&s, name, &["build.sig", needle]);
    }

    // The library swapped after the build: refused by name, the old instance keeps serving.
    let lib = s.plugins_dir().join("recorded/librecorded.so");
    let mut bytes = std::fs::read(&lib).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x01;
    let tmp = lib.with_extension("tmp");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &lib).unwrap();
    let r = s.admin("/api/v1/plugins/recorded/reload");
    assert_eq!((r.status, r.code().as_str()), (422, "signature_refused"), "{}", r.body);
    refused(&s, "recorded", &["librecorded.so", "not the library this host built"]);
    assert_eq!(s.call("recorded", "echo", "1").status, 200, "the old version keeps serving");
    // Recording the new hash by hand breaks the record's signature.
    let record_path = s.plugins_dir().join("recorded/build.sig");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap();
    use sha2::Digest;
    record["library_sha256"] =
        sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect::<String>().into();
    std::fs::write(&record_path, record.to_string()).unwrap();
    let r = s.admin("/api/v1/plugins/recorded/reload");
    assert_eq!(r.status, 422, "{}", r.body);
    refused(&s, "recorded", &["build.sig", "altered"]);
    // And a restarted host refuses it from the start.
    s.restart();
    assert_eq!(s.info("recorded")["state"], "failed");
}

/// `xcore keys trust`: only an RSA public key, into the trusted-keys folder of its own,
/// its fingerprint printed, the same key again is a no-op, a different key of the same name
/// is refused and the file left as it was.
#[test]
fn keys_trust_checks_the_key_and_never_overwrites_another() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    for (dir, name) in [("alice-keys", "alice"), ("other-keys", "alice")] {
        ok(xcore(&["keys", "generate", "--dir", dir, "--name", name, "--bits", "2048"], root));
    }
    let fp = |path: &str| {
        let key = xcore_security::keys::load_public(&root.join(path)).unwrap();
        xcore_security::keys::fingerprint(&key)
    };
    std::fs::write(root.join("garbage.pub"), "not a key\n").unwrap();
    for bad in ["garbage.pub", "alice-keys/alice.key", "missing.pub"] {
        let out = xcore(&["keys", "trust", bad], root);
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success() && text.contains(bad), "{bad}: {text}");
    }
    assert!(!root.join("keys/trusted").exists(), "nothing trusted");

    let out = ok(xcore(&["keys", "trust", "alice-keys/alice.pub"], root));
    assert!(out.contains("keys/trusted/alice.pub") && out.contains(&fp("alice-keys/alice.pub")), "{out}");
    let trusted = root.join("keys/trusted/alice.pub");
    let before = std::fs::read(&trusted).unwrap();
    let out = ok(xcore(&["keys", "trust", "alice-keys/alice.pub"], root));
    assert!(out.contains("already trusted"), "{out}");
    let out = xcore(&["keys", "trust", "other-keys/alice.pub"], root);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("refusing to overwrite") && text.contains("alice.pub"),
        "{text}"
    );
    assert_eq!(std::fs::read(&trusted).unwrap(), before, "left as it was");
    let out = ok(xcore(&["keys", "trust", "other-keys/alice.pub", "--name", "alice-2"], root));
    assert!(out.contains("keys/trusted/alice-2.pub") && out.contains(&fp("other-keys/alice.pub")), "{out}");
}
