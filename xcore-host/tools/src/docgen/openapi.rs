//! `api.html`: the HTTP API reference, from an OpenAPI 3.x JSON document.

use std::fmt::Write as _;

use serde_json::Value;

use super::markdown::{self, LinkMode, Slugger};
use super::{escape, DocgenError, Page, Section};

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// `None` for a `Null` document (no API page).
pub(crate) fn page(doc: &Value) -> Result<Option<Page>, DocgenError> {
    let root = match doc {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => return Err(DocgenError::OpenApi("the document is not a JSON object".into())),
    };
    if let Some(paths) = root.get("paths") {
        if !paths.is_object() {
            return Err(DocgenError::OpenApi("`paths` is not an object".into()));
        }
    }
    let mut slugger = Slugger::default();
    let mut out = String::new();
    let _ = writeln!(out, "<h1 id=\"{}\">HTTP API</h1>", slugger.slug("HTTP API"));
    let info = root.get("info");
    let text =
        |v: Option<&Value>, key: &str| v.and_then(|v| v.get(key)).and_then(Value::as_str).map(str::to_string);
    if let Some(title) = text(info, "title") {
        let version =
            text(info, "version").map(|v| format!(" <small>{}</small>", escape(&v))).unwrap_or_default();
        let _ = writeln!(out, "<p><strong>{}</strong>{version}</p>", escape(&title));
    }
    if let Some(d) = text(info, "description") {
        out.push_str(&md(&d, &mut slugger));
    }

    let empty = serde_json::Map::new();
    let paths = root.get("paths").and_then(Value::as_object).unwrap_or(&empty);
    if paths.is_empty() {
        out.push_str("<p>The document lists no paths.</p>\n");
    }
    for (path, item) in paths {
        let item = resolve(doc, item);
        let shared_params: Vec<&Value> = list(item.get("parameters")).collect();
        for method in METHODS {
            let Some(op) = item.get(method).filter(|o| o.is_object()) else { continue };
            operation(&mut out, &mut slugger, doc, path, method, op, &shared_params);
        }
    }
    Ok(Some(Page {
        path: "api.html".into(),
        title: "HTTP API".into(),
        section: Section::Api,
        body: out,
        links: vec![],
    }))
}

/// OpenAPI descriptions are CommonMark; raw HTML in them is escaped.
fn md(src: &str, slugger: &mut Slugger) -> String {
    markdown::render(src, &LinkMode::Foreign, slugger).html
}

/// Follows a local `{"$ref": "#/..."}` (a few levels, to survive reference chains).
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..8 {
        match v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => match doc.pointer(pointer) {
                Some(target) => v = target,
                None => break,
            },
            None => break,
        }
    }
    v
}

fn list(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn operation(
    out: &mut String,
    slugger: &mut Slugger,
    doc: &Value,
    path: &str,
    method: &str,
    op: &Value,
    shared_params: &[&Value],
) {
    let upper = method.to_uppercase();
    let id = slugger.slug(&format!("{upper} {path}"));
    let _ = writeln!(
        out,
        "<section class=\"op\">\n<h2 id=\"{}\"><code>{upper}</code> <code>{}</code></h2>",
        escape(&id),
        escape(path)
    );
    if let Some(s) = str_of(op, "summary") {
        let _ = writeln!(out, "<p><strong>{}</strong></p>", escape(s));
    }
    if let Some(d) = str_of(op, "description") {
        out.push_str(&md(d, slugger));
    }
    let tags: Vec<String> = list(op.get("tags")).filter_map(Value::as_str).map(escape).collect();
    if !tags.is_empty() {
        let _ = writeln!(out, "<p>Tags: {}</p>", tags.join(", "));
    }
    if let Some(id) = str_of(op, "operationId") {
        let _ = writeln!(out, "<p>Operation id: <code>{}</code></p>", escape(id));
    }
    if op.get("deprecated").and_then(Value::as_bool) == Some(true) {
        out.push_str("<p><strong>Deprecated.</strong></p>\n");
    }

    // Operation parameters override path-level ones with the same name and location.
    let own: Vec<&Value> = list(op.get("parameters")).map(|p| resolve(doc, p)).collect();
    let key = |p: &Value| (str_of(p, "name").map(str::to_string), str_of(p, "in").map(str::to_string));
    let mut params: Vec<&Value> = shared_params
        .iter()
        .map(|p| resolve(doc, p))
        .filter(|p| !own.iter().any(|o| key(o) == key(p)))
        .collect();
    params.extend(own);
    if !params.is_empty() {
        out.push_str(
            "<h3>Parameters</h3>\n<table>\n<thead><tr><th>Name</th><th>In</th><th>Type</th>\
             <th>Required</th><th>Description</th></tr></thead>\n<tbody>\n",
        );
        for p in params {
            let ty = p.get("schema").map(|s| resolve(doc, s)).and_then(|s| str_of(s, "type")).unwrap_or("");
            let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
            let _ = writeln!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(str_of(p, "name").unwrap_or("")),
                escape(str_of(p, "in").unwrap_or("")),
                escape(ty),
                if required { "yes" } else { "no" },
                escape(str_of(p, "description").unwrap_or(""))
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }

    if let Some(body) = op.get("requestBody").map(|b| resolve(doc, b)) {
        out.push_str("<h3>Request body</h3>\n");
        let types = content_types(body);
        let required =
            if body.get("required").and_then(Value::as_bool) == Some(true) { " (required)" } else { "" };
        let _ = writeln!(out, "<p>{}{required}</p>", if types.is_empty() { "any".into() } else { types });
        if let Some(d) = str_of(body, "description") {
            out.push_str(&md(d, slugger));
        }
    }

    if let Some(responses) = op.get("responses").and_then(Value::as_object).filter(|r| !r.is_empty()) {
        out.push_str(
            "<h3>Responses</h3>\n<table>\n<thead><tr><th>Status</th><th>Description</th>\
             <th>Content</th></tr></thead>\n<tbody>\n",
        );
        for (status, r) in responses {
            let r = resolve(doc, r);
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(status),
                escape(str_of(r, "description").unwrap_or("")),
                content_types(r)
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
    out.push_str("</section>\n");
}

/// `<code>application/json</code>, ...` of a body or response (already escaped).
fn content_types(v: &Value) -> String {
    v.get("content")
        .and_then(Value::as_object)
        .map(|c| c.keys().map(|k| format!("<code>{}</code>", escape(k))).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}
