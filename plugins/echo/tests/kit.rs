//! echo's unit tests, through the test kit: the host's entry points and services, in the
//! test's process.

use serde_json::json;
use xcore_plugin_echo::Echo;
use xcore_plugin_testkit::{Level, TestHost};

fn kit() -> TestHost {
    TestHost::from_dir(env!("CARGO_MANIFEST_DIR")).expect("plugin.yaml")
}

#[test]
fn the_examples_it_declares_hold() {
    let p = kit().start::<Echo>().unwrap();
    assert_eq!(p.run_examples().unwrap(), 2, "echo declares two examples");
}

#[test]
fn greet_takes_the_greeting_from_the_config() {
    let p = kit().config(json!({ "greeting": "hi" })).start::<Echo>().unwrap();
    assert_eq!(p.call("greet", json!({ "name": "Ada" })).unwrap(), json!({ "message": "hi, Ada!" }));
    // The manifest's example now fails, and says where.
    let report = p.run_examples().unwrap_err();
    assert_eq!(report.failed.len(), 1, "{report}");
    assert_eq!(report.failed[0].action, "greet");
    assert!(report.to_string().contains(r#"$.message: expected "hello, Ada!", got "hi, Ada!""#), "{report}");
}

#[test]
fn a_payload_of_the_wrong_shape_is_invalid_payload() {
    let p = kit().start::<Echo>().unwrap();
    let e = p.call_err("greet", json!({ "who": "Ada" }));
    assert_eq!((e.code.as_str(), e.status), ("invalid_payload", 400));
    assert!(e.message.contains("name"), "{}", e.message);
    let e = p.call_err("nope", json!({}));
    assert_eq!((e.code.as_str(), e.status), ("unknown_action", 404));
}

#[test]
fn it_starts_with_a_log_line_and_asks_the_host_only_for_its_log_level() {
    let p = kit().start::<Echo>().unwrap();
    let logs = p.logs();
    assert!(logs.iter().any(|l| l.message == "echo 0.1.0 ready" && l.level == Level::Info), "{logs:?}");
    let services: Vec<String> = p.host_calls().into_iter().map(|c| c.service).collect();
    assert!(services.iter().all(|s| s == "host.info"), "{services:?}");
}

#[test]
fn its_manifest_hook_answers_notes_created() {
    let p = kit().start::<Echo>().unwrap();
    assert_eq!(p.subscriptions(), vec![("notes.created".to_string(), "echo".to_string())]);
    let report = p.emit("notes.created", json!({ "id": 1 })).unwrap();
    assert_eq!(report.handled(), 1, "{report:?}");
    let ok = serde_json::to_value(&report.results[0].outcome).unwrap();
    assert_eq!(ok["ok"]["echo"], json!({ "event": "notes.created", "payload": { "id": 1 } }));
    assert!(p.logs().iter().any(|l| l.message == "echoing event notes.created"), "{:?}", p.logs());
    // Nobody listens to other events.
    assert_eq!(p.emit("notes.deleted", json!({})).unwrap().results.len(), 0);
}
