//! Typed handlers (`#[plugin]`) through the real host: the action table a plugin answers
//! at load, the manifest checked against it, `#[on]` handlers subscribed from it, typed
//! path parameters, queries and bodies, and the schemas in the OpenAPI document.

mod common;

use common::{PluginSpec, Server};
use serde_json::{json, Value};

fn typed(folder: &str, extra: &str) -> PluginSpec {
    let manifest = format!(
        "name: {folder}\nversion: 0.1.0\napi_version: \"^0.1\"\nentry_point: lib{folder}.so\n\
         permissions: [\"events.subscribe:typed.*\", \"events.emit:typed.*\"]\n{extra}\n"
    );
    PluginSpec::new(folder, "xcore-fixture-typed", &manifest)
}

const ROUTES: &str = "routes:\n  - { method: GET, path: \"/items/{id}\", action: item }\n  \
                      - { method: PUT, path: \"/items/{group}/{id}\", action: put }";

#[test]
fn typed_handlers_serve_in_both_tiers_and_on_handlers_are_subscribed_without_a_hook() {
    let s = Server::start(&[
        typed("typed", ROUTES),
        typed("boxed", &format!("execution_mode: sandboxed\n{ROUTES}")),
    ]);
    for name in ["typed", "boxed"] {
        let info = s.info(name);
        assert_eq!(info["state"], "ready", "{name}: {info}");

        let r = s.call(name, "add", r#"{"a": 1, "b": 2}"#);
        assert_eq!((r.status, r.json()), (200, json!({"sum": 3})), "{name}: {}", r.body);
        let r = s.call(name, "add", r#"{"a": "one", "b": 2}"#);
        assert_eq!((r.status, r.code().as_str()), (400, "invalid_payload"), "{name}: {}", r.body);
        assert!(r.body.contains("action 'add'"), "{name}: {}", r.body);

        let r = s.request("GET", &format!("/plugins/{name}/items/7?verbose=true"), None);
        assert_eq!((r.status, r.json()), (200, json!({"id": 7, "verbose": true})), "{name}: {}", r.body);
        let r = s.request("GET", &format!("/plugins/{name}/items/7"), None);
        assert_eq!(r.json(), json!({"id": 7, "verbose": false}), "{name}: {}", r.body);
        let r = s.request("GET", &format!("/plugins/{name}/items/seven"), None);
        assert_eq!((r.status, r.code().as_str()), (400, "invalid_payload"), "{name}: {}", r.body);
        assert!(r.body.contains("seven"), "{name}: {}", r.body);
        let r = s.request("GET", &format!("/plugins/{name}/items/7?verbose=maybe"), None);
        assert_eq!((r.status, r.code().as_str()), (400, "invalid_payload"), "{name}: {}", r.body);

        let r = s.request("PUT", &format!("/plugins/{name}/items/g1/5"), Some(r#"{"x": 1}"#));
        assert_eq!(r.json(), json!({"group": "g1", "id": 5, "body": {"x": 1}}), "{name}: {}", r.body);

        // The reserved describe action is the host's, not a client's.
        let r = s.call(name, "__xcore_describe", "{}");
        assert_eq!((r.status, r.code().as_str()), (404, "unknown_action"), "{name}: {}", r.body);
    }
    // `#[on("typed.*")]`, in no hook of plugin.yaml, was subscribed from the table (the
    // permission events.subscribe:typed.* allows it). A plugin's own handler is skipped
    // while it emits (a call back into the emitting plugin), so each handles the other's.
    let r = s.call("typed", "ping", r#"{"from": "typed"}"#);
    assert_eq!((r.status, r.json()), (200, json!(1)), "{}", r.body);
    let r = s.call("boxed", "ping", r#"{"from": "boxed"}"#);
    assert_eq!((r.status, r.json()), (200, json!(1)), "{}", r.body);
    assert_eq!(s.call("boxed", "seen", "null").json(), json!([{"from": "typed"}]));
    assert_eq!(s.call("typed", "seen", "null").json(), json!([{"from": "boxed"}]));
}

#[test]
fn a_manifest_naming_an_action_the_plugin_lacks_is_refused_naming_both() {
    let s = Server::start(&[
        typed("typo", "routes:\n  - { method: GET, path: \"/items/{id}\", action: itme }"),
        typed("hooked", "hooks:\n  - { event: typed.x, action: on_typd }\nexecution_mode: sandboxed"),
        // A plugin without a table (a hand-written `call`) is trusted with any name.
        PluginSpec::with("echo", "xcore-plugin-echo", ""),
    ]);
    let info = s.info("typo");
    assert_eq!(info["state"], "failed", "{info}");
    let err = info["last_error"].as_str().unwrap();
    assert!(err.contains("routes[0] (GET /items/{id}) names action 'itme'"), "{err}");
    assert!(err.contains("its actions: add, item, on_typed, ping, put, seen"), "{err}");
    assert!(err.contains("typo/plugin.yaml"), "{err}");
    let err = s.info("hooked")["last_error"].as_str().unwrap().to_string();
    assert!(err.contains("hooks[0] (typed.x) names action 'on_typd'"), "{err}");
    // The load answer carries the kind's own code.
    let r = s.admin("/api/v1/plugins/typo/load");
    assert_eq!((r.status, r.code().as_str()), (422, "action_missing"), "{}", r.body);
    assert_eq!(s.info("echo")["state"], "ready");
}

#[test]
fn the_openapi_document_carries_each_action_and_route_with_its_schemas() {
    let s = Server::start(&[typed("typed", ROUTES), PluginSpec::notes()]);
    let doc = s.get("/api/v1/openapi.json").json();
    let paths = doc["paths"].as_object().unwrap();

    let add = &paths["/api/v1/plugins/typed/call/add"]["post"];
    assert_eq!(add["summary"], "Adds two numbers.", "{add}");
    let input = &add["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(input["properties"]["a"]["type"], "integer", "{input}");
    assert_eq!(input["required"], json!(["a", "b"]), "{input}");
    let output = &add["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(output["properties"]["sum"]["type"], "integer", "{output}");

    let item = &paths["/plugins/typed/items/{id}"]["get"];
    let params = item["parameters"].as_array().unwrap();
    let by = |n: &str| params.iter().find(|p| p["name"] == n).cloned().unwrap_or(Value::Null);
    assert_eq!(
        (by("id")["in"].clone(), by("id")["schema"]["type"].clone()),
        (json!("path"), json!("integer")),
        "{item}"
    );
    assert_eq!(
        (by("verbose")["in"].clone(), by("verbose")["schema"]["type"].clone()),
        (json!("query"), json!("boolean")),
        "{item}"
    );
    let put = &paths["/plugins/typed/items/{group}/{id}"]["put"];
    let names: Vec<&str> =
        put["parameters"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["group", "id"], "{put}");

    // notes, converted to #[plugin], shows its typed reply on its route.
    let get = &paths["/plugins/notes/notes/{id}"]["get"];
    assert_eq!(
        get["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["title"]["type"],
        "string",
        "{get}"
    );

    // Every operationId is unique and an identifier a code generator accepts.
    let mut ids = std::collections::BTreeSet::new();
    for item in paths.values() {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap_or_default().to_string();
            let first = id.chars().next().unwrap_or('0');
            assert!(
                !first.is_ascii_digit() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "operationId {id:?}"
            );
            assert!(ids.insert(id.clone()), "operationId {id} twice");
        }
    }
    assert!(ids.contains("call_typed_add") && ids.contains("typed_get_item"), "{ids:?}");
    assert!(ids.contains("post_api_v1_plugins_name_call_action"), "{ids:?}");
}
