//! The plugins' part of the OpenAPI document: every action and every declared route of
//! each serving plugin that describes itself (`#[plugin]`), with the JSON Schemas of its
//! input and reply. Added to the control API's document on each request, because
//! plugins come and go while the server runs.

use serde_json::{json, Map, Value};
use xcore_manifest::Manifest;
use xcore_plugin_abi::describe::{ActionDescription, PluginDescription};

/// An operationId valid for code generators: letters, digits and `_`, not starting
/// with a digit (`{` and `}` of a templated path dropped).
pub(crate) fn operation_id(parts: &[&str]) -> String {
    let mut id: String = parts
        .join("_")
        .chars()
        .filter(|c| !matches!(c, '{' | '}'))
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if id.starts_with(|c: char| c.is_ascii_digit()) {
        id.insert(0, '_');
    }
    id
}

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

fn reply(action: &ActionDescription) -> Value {
    let schema = action.output_schema.clone().unwrap_or_else(|| json!({}));
    json!({ "description": "The action's reply", "content": { "application/json": { "schema": schema } } })
}

fn summary(op: &mut Value, action: &ActionDescription) {
    if let Some(s) = &action.summary {
        op["summary"] = json!(s);
    }
    if let Some(d) = &action.description {
        op["description"] = json!(d);
    }
}

/// The schema of one `{name}` of a route: a property of the params schema, or the
/// schema itself when the handler reads a single parameter (`Path<u64>`).
fn param_schema(params: Option<&Value>, name: &str, count: usize) -> Value {
    let Some(schema) = params else { return json!({ "type": "string" }) };
    if let Some(p) = schema.get("properties").and_then(|p| p.get(name)) {
        return p.clone();
    }
    if count == 1 && schema.get("properties").is_none() {
        return schema.clone();
    }
    json!({ "type": "string" })
}

fn query_parameters(query: Option<&Value>) -> Vec<Value> {
    let Some(schema) = query else { return Vec::new() };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else { return Vec::new() };
    props
        .iter()
        .map(|(name, s)| {
            let mut p = json!({ "name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": s });
            if let Some(d) = s.get("description") {
                p["description"] = d.clone();
            }
            p
        })
        .collect()
}

/// Adds the plugins' operations to `doc` (the control API's document).
pub fn add(doc: &mut Value, plugins: &[(std::sync::Arc<Manifest>, std::sync::Arc<PluginDescription>)]) {
    let mut paths = Map::new();
    for (manifest, description) in plugins {
        let Some(actions) = description.actions.as_deref() else { continue };
        let plugin = manifest.name.as_str();
        let tag = json!([format!("plugin {plugin}")]);
        for action in actions {
            let mut op = json!({
                "operationId": operation_id(&["call", plugin, &action.name]),
                "tags": tag,
                "requestBody": {
                    "required": false,
                    "content": { "application/json": { "schema": action.input_schema.clone().unwrap_or_else(|| json!({})) } }
                },
                "responses": {
                    "200": reply(action),
                    "default": problem("An error, with a stable code"),
                },
            });
            summary(&mut op, action);
            paths.insert(format!("/api/v1/plugins/{plugin}/call/{}", action.name), json!({ "post": op }));
        }
        for route in &manifest.routes {
            let Some(action) = description.action(&route.action) else { continue };
            let names: Vec<&str> = route
                .path
                .split('/')
                .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            let mut parameters: Vec<Value> = names
                .iter()
                .map(|n| {
                    json!({ "name": n, "in": "path", "required": true,
                            "schema": param_schema(action.params_schema.as_ref(), n, names.len()) })
                })
                .collect();
            parameters.extend(query_parameters(action.query_schema.as_ref()));
            let method = route.method.to_ascii_lowercase();
            let mut op = json!({
                "operationId": operation_id(&[plugin, &method, &action.name]),
                "tags": tag,
                "parameters": parameters,
                "responses": {
                    "200": reply(action),
                    "default": problem("An error, with a stable code"),
                },
            });
            if let Some(body) = &action.input_schema {
                if method != "get" && method != "delete" {
                    op["requestBody"] =
                        json!({ "required": true, "content": { "application/json": { "schema": body } } });
                }
            }
            summary(&mut op, action);
            let path = format!("/plugins/{plugin}{}", route.path);
            let item = paths.entry(path).or_insert_with(|| json!({}));
            item[method] = op;
        }
    }
    if let Some(existing) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        existing.extend(paths);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_are_identifiers() {
        assert_eq!(operation_id(&["call", "my-plugin", "route.greet"]), "call_my_plugin_route_greet");
        assert_eq!(operation_id(&["9lives", "get", "x"]), "_9lives_get_x");
    }
}
