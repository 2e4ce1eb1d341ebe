//! The parsers of untrusted input under arbitrary bytes, in the normal test suite: the
//! same functions the fuzz targets of `xcore-host/fuzz/` drive (manifest, configuration,
//! sandbox frames, route matcher, signature files). Every file of the committed fuzz
//! corpora, crash inputs included, is replayed here too, so a fixed panic stays fixed
//! even where `make fuzz` does not run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use xcore_api::plugin_routes::match_route;
use xcore_manifest::Route;
use xcore_runtime::sandbox::protocol::{self, FromWorker, ToWorker, WireResult};
use xcore_runtime::LoadKind;

const FRAME_LIMIT: usize = 1 << 20;

fn manifest(text: &str) {
    let _ = xcore_manifest::parse_with_env(Path::new("/fuzz/plugin"), text, &|var| {
        (var == "FUZZ").then(|| "value".to_string())
    });
}

/// As the fuzz target: the YAML, then optionally a NUL and `NAME=value` lines.
fn config(text: &str) {
    let (yaml, env) = text.split_once('\0').unwrap_or((text, ""));
    let mut vars: BTreeMap<String, String> = [("FUZZ", "value"), ("NESTED", "${FUZZ}")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for line in env.lines() {
        if let Some((k, v)) = line.split_once('=') {
            vars.insert(k.to_string(), v.to_string());
        }
    }
    let _ = xcore_config::parse_with_vars("fuzz.yaml", yaml, &vars);
}

fn frames(data: &[u8]) {
    let mut r = data;
    while protocol::read::<FromWorker>(&mut r, FRAME_LIMIT).is_ok() {}
    let mut r = data;
    while protocol::read::<ToWorker>(&mut r, FRAME_LIMIT).is_ok() {}
}

fn routes() -> Vec<Route> {
    let route =
        |method: &str, path: &str| Route { method: method.into(), path: path.into(), action: "a".into() };
    vec![
        route("GET", "/notes"),
        route("GET", "/notes/{id}"),
        route("POST", "/{a}/{b}/{c}"),
        route("PUT", "/x/{v}/y"),
        route("DELETE", "/"),
    ]
}

fn route(data: &[u8]) {
    let Some((&first, path)) = data.split_first() else { return };
    let method = ["GET", "POST", "PUT", "DELETE"][usize::from(first % 4)];
    if let Ok(Some((r, params))) = match_route(&routes(), method, path) {
        assert_eq!(r.method, method);
        assert!(params.values().all(|v| !v.is_empty()));
    }
}

fn signature(text: &str) {
    let _ = xcore_security::signing::parse_signature(Path::new("plugin.sig"), text);
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
}

#[test]
fn every_corpus_file_goes_through_its_parser() {
    for (p, bytes) in corpus("manifest") {
        println!("{}", p.display());
        manifest(&String::from_utf8_lossy(&bytes));
    }
    for (_, bytes) in corpus("config") {
        config(&String::from_utf8_lossy(&bytes));
    }
    for (_, bytes) in corpus("frame") {
        frames(&bytes);
    }
    for (_, bytes) in corpus("route") {
        route(&bytes);
    }
    for (_, bytes) in corpus("signature") {
        signature(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn the_manifest_seeds_are_valid_manifests() {
    // Seeds that fail early explore little: the full ones must pass validation.
    for name in ["everything.yaml", "echo.yaml", "notes.yaml", "bookmarks.yaml"] {
        let (_, bytes) = corpus("manifest").into_iter().find(|(p, _)| p.ends_with(name)).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let loaded =
            xcore_manifest::parse_with_env(Path::new("/fuzz/plugin"), &text, &|_| Some("value".to_string()));
        assert!(loaded.is_ok(), "{name}: {:?}", loaded.err());
    }
}

fn any_wire_result() -> impl Strategy<Value = WireResult> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(WireResult::Ok),
        (".{0,16}", ".{0,32}", any::<u16>()).prop_map(|(code, message, status)| WireResult::Err {
            code,
            message,
            status
        }),
    ]
}

fn any_from_worker() -> impl Strategy<Value = FromWorker> {
    prop_oneof![
        (any::<u64>(), any_wire_result()).prop_map(|(id, result)| FromWorker::Reply { id, result }),
        any::<u64>().prop_map(|id| FromWorker::Pong { id }),
        (any::<u8>(), ".{0,8}", ".{0,64}").prop_map(|(level, request_id, message)| FromWorker::Log {
            level,
            request_id,
            message
        }),
        ".{0,64}".prop_map(|message| FromWorker::InitFailed { message, kind: LoadKind::Constructor }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn manifests_of_any_text_never_panic(text in "\\PC{0,200}") {
        manifest(&text);
    }

    /// YAML-shaped text around the manifest's own keys, so validation is reached.
    #[test]
    fn manifest_shaped_text_never_panics(
        version in "[0-9.a-z^<>=*, -]{0,12}",
        timeout in "-?[0-9]{0,22}(\\.[0-9]{0,3})?|[a-z~]{0,4}",
        path in "[/{}a-z%]{0,16}",
        event in "[a-z.*]{0,12}",
        env in "[$]?[{]?[A-Z_:-]{0,8}[}]?",
    ) {
        let text = format!(
            "name: plugin\nversion: {version}\napi_version: \"{version}\"\nentry_point: libplugin.so\nexecution_mode: sandboxed\nresources:\n  timeout_ms: {timeout}\n  concurrency: {timeout}\n  rate_limit: {{ calls: {timeout}, period_seconds: {timeout} }}\nenv:\n  X: \"{env}\"\nroutes:\n  - {{ method: GET, path: \"{path}\", action: a }}\nhooks:\n  - {{ event: \"{event}\", action: a, priority: {timeout} }}\n"
        );
        manifest(&text);
    }

    #[test]
    fn configurations_of_any_text_never_panic(text in "\\PC{0,200}") {
        config(&text);
    }

    #[test]
    fn configuration_shaped_text_never_panics(
        value in "-?[0-9]{0,22}|\\$\\{[A-Z_]{0,8}(:-[a-z0-9]{0,4})?\\}|[a-z\"']{0,6}",
        key in "[a-z_]{1,12}",
    ) {
        let text = format!(
            "server:\n  port: {value}\n  body_timeout_ms: {value}\n  {key}: {value}\nsandbox:\n  max_frame_bytes: {value}\ndatabases:\n  default:\n    url: \"{value}\"\n    pool_size: {value}\ncache:\n  ttl: {value}\n"
        );
        config(&text);
    }

    /// `XCORE__*` overrides of any shape over any sections.
    #[test]
    fn overrides_of_any_shape_never_panic(
        section in "[a-z_]{0,10}",
        keys in proptest::collection::vec("[A-Za-z_]{0,8}", 0..4),
        value in "\\PC{0,12}",
        yaml in "(server|logging|databases|plugins): ?(\\[\\]|x|\\{\\}|1|null)?",
    ) {
        config(&format!("{yaml}\n\0XCORE__{section}__{}={value}\n", keys.join("__")));
    }

    #[test]
    fn frames_of_any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        frames(&data);
    }

    /// Valid frames with one byte changed or cut short: decoded or refused, never a
    /// panic, never an allocation past the limit.
    #[test]
    fn damaged_frames_never_panic(msg in any_from_worker(), at in any::<usize>(), byte in any::<u8>(), cut in any::<bool>()) {
        let mut frame = protocol::encode(&msg, FRAME_LIMIT).unwrap();
        let decoded: FromWorker = protocol::read(&mut frame.as_slice(), FRAME_LIMIT).unwrap();
        prop_assert_eq!(&decoded, &msg);
        let i = at % frame.len();
        if cut {
            frame.truncate(i);
        } else {
            frame[i] = byte;
        }
        frames(&frame);
    }

    #[test]
    fn routes_of_any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..96)) {
        route(&data);
    }

    #[test]
    fn signature_files_of_any_text_never_panic(text in "\\PC{0,200}") {
        signature(&text);
    }

    #[test]
    fn signature_shaped_json_never_panics(
        format in "-?[0-9]{0,20}|null|\"1\"",
        path in "[./a-z%\\\\]{0,12}",
        hash in "[0-9a-fA-F]{0,66}",
        sig in "[A-Za-z0-9+/=!]{0,12}",
    ) {
        let text = format!(
            "{{\"format\":{format},\"plugin\":\"p\",\"version\":\"1\",\"files\":{{\"{path}\":\"{hash}\"}},\"key\":\"k\",\"algorithm\":\"rsa-pss-sha256\",\"signature\":\"{sig}\"}}"
        );
        signature(&text);
    }
}
