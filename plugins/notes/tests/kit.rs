//! notes' unit tests, through the test kit: its actions, its routes as the HTTP API
//! matches them, and the event it emits.

use serde_json::json;
use xcore_plugin_notes::Notes;
use xcore_plugin_testkit::TestHost;

fn kit() -> TestHost {
    TestHost::from_dir(env!("CARGO_MANIFEST_DIR")).expect("plugin.yaml")
}

#[test]
fn the_examples_it_declares_hold() {
    let p = kit().start::<Notes>().unwrap();
    assert_eq!(p.run_examples().unwrap(), 1);
}

#[test]
fn create_get_list_delete_through_actions_and_routes() {
    let p = kit().start::<Notes>().unwrap();
    let created = p.call("create", json!({ "title": "first", "body": "b" })).unwrap();
    assert_eq!(created, json!({ "id": 1, "title": "first", "body": "b", "notified": 0 }));
    let second = p.route("POST", "/notes", json!({ "title": "second" })).unwrap();
    assert_eq!(second["id"], 2);
    assert_eq!(p.route("GET", "/notes/2", json!(null)).unwrap()["title"], "second");
    assert_eq!(p.call("get", json!({ "id": 1 })).unwrap()["body"], "b");
    assert_eq!(p.route("GET", "/notes", json!(null)).unwrap()["count"], 2);
    assert_eq!(p.route("DELETE", "/notes/1", json!(null)).unwrap(), json!({ "deleted": 1 }));
    let e = p.route("GET", "/notes/1", json!(null)).unwrap_err();
    assert_eq!((e.code.as_str(), e.status), ("not_found", 404));
    let e = p.route("GET", "/notes/abc", json!(null)).unwrap_err();
    assert_eq!((e.code.as_str(), e.status), ("invalid_payload", 400), "{}", e.message);
    let e = p.call_err("create", json!({ "title": "  " }));
    assert_eq!((e.code.as_str(), e.status), ("invalid_payload", 400));
}

#[test]
fn creating_a_note_emits_notes_created_with_the_note() {
    let p = kit().start::<Notes>().unwrap();
    p.call("create", json!({ "title": "evented" })).unwrap();
    let emitted = p.emitted();
    assert_eq!(emitted.len(), 1, "{emitted:?}");
    assert_eq!(emitted[0].event, "notes.created");
    assert_eq!(emitted[0].payload["title"], "evented");
}

#[test]
fn the_limit_from_its_config_answers_409_full() {
    let p = kit().config(json!({ "max_notes": 1 })).start::<Notes>().unwrap();
    p.call("create", json!({ "title": "one" })).unwrap();
    let e = p.call_err("create", json!({ "title": "two" }));
    assert_eq!((e.code.as_str(), e.status), ("full", 409));
}

#[test]
fn without_the_emit_permission_the_note_is_kept_and_the_refusal_logged() {
    let p = kit().revoke("events.emit:notes.*").start::<Notes>().unwrap();
    let created = p.call("create", json!({ "title": "quiet" })).unwrap();
    assert_eq!(created["notified"], 0);
    assert_eq!(p.call("get", json!({ "id": 1 })).unwrap()["title"], "quiet");
    assert!(p.emitted().is_empty());
    assert!(p.logs().iter().any(|l| l.message.contains("notes.created was not emitted")), "{:?}", p.logs());
}
