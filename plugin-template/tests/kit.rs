//! `{{project-name}}` through the test kit: the plugin itself, in a fake host made of the
//! host's own services (recorded, with plugin.yaml's permissions), in this process.

use serde_json::json;
use xcore_plugin_testkit::TestHost;
use {{crate_name}}::TemplatePlugin;

fn kit() -> TestHost {
    TestHost::from_dir(env!("CARGO_MANIFEST_DIR")).expect("plugin.yaml")
}

#[test]
fn the_examples_it_declares_hold() {
    let p = kit().start::<TemplatePlugin>().unwrap();
    assert_eq!(p.run_examples().unwrap(), 1);
}

#[test]
fn greet_answers_on_its_route_too() {
    let p = kit().start::<TemplatePlugin>().unwrap();
    let out = p.route("POST", "/greet", json!({ "name": "Ada", "shout": true })).unwrap();
    assert_eq!(out, json!({ "message": "HELLO, ADA!" }));
}

#[test]
fn the_greeting_comes_from_the_config_and_an_empty_name_is_refused() {
    let p = kit().config(json!({ "greeting": "Hi" })).start::<TemplatePlugin>().unwrap();
    assert_eq!(p.call("greet", json!({ "name": "Ada" })).unwrap()["message"], "Hi, Ada!");
    let e = p.call_err("greet", json!({ "name": " " }));
    assert_eq!((e.code.as_str(), e.status), ("invalid_payload", 400));
}
