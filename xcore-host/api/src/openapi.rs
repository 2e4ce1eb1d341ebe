//! The OpenAPI 3.0 document of the control API, built from the route table
//! ([`super::endpoints::ENDPOINTS`]), served at `GET /api/v1/openapi.json`.

use serde_json::{json, Map, Value};

use super::endpoints::{ENDPOINTS, EVENT_STREAM};
use super::plugin_docs::operation_id;

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for e in ENDPOINTS {
        let params: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut op = json!({
            "summary": e.summary,
            "operationId": operation_id(&[&e.method.to_lowercase(), e.path.trim_start_matches('/')]),
            "parameters": params,
            "responses": {
                "200": { "description": "Success", "content": { "application/json": {} } },
                "default": problem_response("An error, with a stable code"),
            },
        });
        if let Some(role) = e.role {
            op["security"] = json!([{ "bearer": [] }]);
            op["x-xcore-role"] = json!(role.as_str());
            op["responses"]["401"] = problem_response("Missing or wrong token");
            op["responses"]["403"] =
                problem_response("forbidden: the token's role is lower than this route needs");
        }
        if e.path == EVENT_STREAM {
            op["responses"]["200"] = json!({
                "description": "Server-sent events (`event:` state, restart, emit, log, lagged, hello; `data:` one JSON object)",
                "content": { "text/event-stream": { "schema": { "type": "string" } } }
            });
            op["responses"]["503"] =
                problem_response("too_many_streams: server.max_streams streams are open");
        }
        if e.json_body {
            op["requestBody"] =
                json!({ "required": false, "content": { "application/json": { "schema": {} } } });
            op["responses"]["400"] = problem_response("invalid_json");
            op["responses"]["408"] = problem_response("body_timeout");
            op["responses"]["413"] = problem_response("payload_too_large");
        }
        if e.path.contains("{name}") {
            let codes = if e.json_body { "invalid_json, invalid_name" } else { "invalid_name" };
            op["responses"]["400"] = problem_response(codes);
        }
        let item = paths.entry(e.path.to_string()).or_insert_with(|| json!({}));
        let methods: &[&str] =
            if e.method == "ANY" { &["get", "post", "put", "patch", "delete"] } else { &[] };
        if methods.is_empty() {
            item[e.method.to_lowercase()] = op;
        } else {
            for m in methods {
                let mut op = op.clone();
                op["operationId"] = json!(operation_id(&[m, e.path.trim_start_matches('/')]));
                item[*m] = op;
            }
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "XCore control API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Call plugin actions and declared routes; operate plugins (admin routes need a bearer token). Every error is application/problem+json with a stable code."
        },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "code", "detail"],
                    "properties": {
                        "type": { "type": "string" },
                        "title": { "type": "string" },
                        "status": { "type": "integer" },
                        "code": { "type": "string" },
                        "detail": { "type": "string" }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_parameters() {
        let doc = document();
        for e in ENDPOINTS {
            let item = &doc["paths"][e.path];
            let method = if e.method == "ANY" { "post".to_string() } else { e.method.to_lowercase() };
            assert!(item[&method].is_object(), "{} {} missing", e.method, e.path);
            let n = e.path.matches('{').count();
            assert_eq!(item[&method]["parameters"].as_array().unwrap().len(), n, "{}", e.path);
            assert_eq!(item[&method]["security"].is_array(), e.role.is_some(), "{}", e.path);
            assert_eq!(item[&method]["x-xcore-role"].as_str(), e.role.map(|r| r.as_str()), "{}", e.path);
        }
        let stream = &doc["paths"][EVENT_STREAM]["get"];
        assert!(stream["responses"]["200"]["content"]["text/event-stream"].is_object(), "{stream}");
        assert_eq!(stream["x-xcore-role"], "reader");
    }
}
