//! Plugin reference pages, from `plugin.yaml` (read generically) and the `//!` docs of
//! the plugin crate's `src/lib.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

use serde_yaml_ng::Value;
use xcore_plugin_abi::describe::{ActionDescription, ActionKind, PluginDescription};

use super::markdown::{self, LinkMode, Slugger};
use super::{escape, io_err, DocgenError, Page, Section};

struct Plugin {
    folder: String,
    name: String,
    manifest: serde_yaml_ng::Mapping,
    crate_docs: Option<String>,
}

/// One page per plugin folder (with a `plugin.yaml`, name not starting with `_` or `.`).
/// A missing `plugins_dir` means no plugins.
pub(crate) fn pages(
    plugins_dir: &Path,
    descriptions: &BTreeMap<String, PluginDescription>,
) -> Result<Vec<Page>, DocgenError> {
    let entries = match fs::read_dir(plugins_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log::info!("docgen: no plugins folder at {}", plugins_dir.display());
            return Ok(vec![]);
        }
        Err(e) => return Err(DocgenError::Io { path: plugins_dir.to_path_buf(), source: e }),
    };
    let mut plugins = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(plugins_dir))?;
        let folder = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        let manifest_path = dir.join("plugin.yaml");
        if folder.starts_with('_') || folder.starts_with('.') || !dir.is_dir() || !manifest_path.is_file() {
            continue;
        }
        let text = fs::read_to_string(&manifest_path).map_err(io_err(&manifest_path))?;
        let bad = |reason: String| DocgenError::Manifest { path: manifest_path.clone(), reason };
        let manifest = match serde_yaml_ng::from_str::<Value>(&text).map_err(|e| bad(e.to_string()))? {
            Value::Mapping(m) => m,
            Value::Null => Default::default(),
            _ => return Err(bad("the manifest is not a mapping".into())),
        };
        let name = get(&manifest, "name").and_then(scalar).unwrap_or_else(|| folder.clone());
        let lib = dir.join("src").join("lib.rs");
        let crate_docs = match fs::read_to_string(&lib) {
            Ok(src) => module_docs(&src),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(DocgenError::Io { path: lib, source: e }),
        };
        plugins.push(Plugin { folder, name, manifest, crate_docs });
    }
    plugins.sort_by(|a, b| a.folder.cmp(&b.folder));
    let by_name: BTreeMap<&str, &str> =
        plugins.iter().map(|p| (p.name.as_str(), p.folder.as_str())).collect();
    Ok(plugins.iter().map(|p| page(p, &by_name, descriptions.get(&p.name))).collect())
}

/// The `//!` block at the top of a Rust file (blank lines, `#![...]` attributes and
/// ordinary comments before it are skipped), without the markers.
pub(crate) fn module_docs(src: &str) -> Option<String> {
    let mut lines = Vec::new();
    for line in src.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("//!") {
            lines.push(rest.strip_prefix(' ').unwrap_or(rest));
        } else {
            let preamble =
                t.is_empty() || t.starts_with("#![") || (t.starts_with("//") && !t.starts_with("///"));
            if !lines.is_empty() || !preamble {
                break;
            }
        }
    }
    let docs = lines.join("\n");
    (!docs.trim().is_empty()).then_some(docs)
}

fn get<'a>(m: &'a serde_yaml_ng::Mapping, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Tagged(t) => scalar(&t.value),
        _ => None,
    }
}

/// A value on one line: scalars as text, anything else as flow-style JSON.
fn inline(v: &Value) -> String {
    scalar(v).unwrap_or_else(|| {
        serde_json::to_string(v)
            .unwrap_or_else(|_| serde_yaml_ng::to_string(v).unwrap_or_default().trim().to_string())
    })
}

fn field(item: &Value, key: &str) -> Option<String> {
    item.as_mapping().and_then(|m| get(m, key)).map(inline)
}

fn seq<'a>(m: &'a serde_yaml_ng::Mapping, key: &str) -> &'a [Value] {
    get(m, key).and_then(Value::as_sequence).map(Vec::as_slice).unwrap_or(&[])
}

fn code(s: &str) -> String {
    format!("<code>{}</code>", escape(s))
}

/// `<h2>` with a unique anchor.
fn h2(out: &mut String, slugger: &mut Slugger, title: &str) {
    let _ = writeln!(out, "<h2 id=\"{}\">{}</h2>", escape(&slugger.slug(title)), escape(title));
}

fn page(p: &Plugin, by_name: &BTreeMap<&str, &str>, description: Option<&PluginDescription>) -> Page {
    let m = &p.manifest;
    let mut slugger = Slugger::default();
    let mut out = String::new();
    let _ = writeln!(out, "<h1 id=\"{}\">{}</h1>", escape(&slugger.slug(&p.name)), escape(&p.name));
    if let Some(d) = get(m, "description").and_then(scalar).filter(|d| !d.trim().is_empty()) {
        let _ = writeln!(out, "<p>{}</p>", escape(&d));
    }

    out.push_str("<table>\n<tbody>\n");
    let mode = get(m, "execution_mode").and_then(scalar).unwrap_or_else(|| "trusted (default)".into());
    let rows = [
        ("Version", get(m, "version").map(inline)),
        ("API version", get(m, "api_version").map(inline)),
        ("Author", get(m, "author").map(inline)),
        ("Execution mode", Some(mode)),
        ("Entry point", get(m, "entry_point").map(inline)),
        ("Folder", Some(p.folder.clone())),
    ];
    for (k, v) in rows {
        if let Some(v) = v {
            let _ = writeln!(out, "<tr><th>{k}</th><td>{}</td></tr>", escape(&v));
        }
    }
    out.push_str("</tbody>\n</table>\n");

    // Actions: those the manifest wires to routes and hooks, then the crate's own docs.
    let mut actions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in seq(m, "routes") {
        if let Some(a) = field(r, "action") {
            let how = format!(
                "route {} {}",
                field(r, "method").unwrap_or_default().to_uppercase(),
                field(r, "path").unwrap_or_default()
            );
            actions.entry(a).or_default().push(how);
        }
    }
    for h in seq(m, "hooks") {
        if let Some(a) = field(h, "action") {
            actions.entry(a).or_default().push(format!("hook on {}", field(h, "event").unwrap_or_default()));
        }
    }
    h2(&mut out, &mut slugger, "Actions");
    if !actions.is_empty() {
        out.push_str("<ul>\n");
        for (action, uses) in &actions {
            let uses: Vec<String> = uses.iter().map(|u| escape(u)).collect();
            let _ = writeln!(out, "<li>{}: {}</li>", code(action), uses.join(", "));
        }
        out.push_str("</ul>\n");
    }
    match &p.crate_docs {
        Some(docs) => {
            out.push_str("<div class=\"crate-docs\">\n");
            out.push_str(&markdown::render(docs, &LinkMode::Foreign, &mut slugger).html);
            out.push_str("</div>\n");
        }
        None if actions.is_empty() => out.push_str("<p>No actions documented.</p>\n"),
        None => {}
    }

    let routes = seq(m, "routes");
    if !routes.is_empty() {
        h2(&mut out, &mut slugger, "Routes");
        out.push_str(
            "<table>\n<thead><tr><th>Method</th><th>Path</th><th>Action</th></tr></thead>\n<tbody>\n",
        );
        for r in routes {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&field(r, "method").unwrap_or_default().to_uppercase()),
                code(&field(r, "path").unwrap_or_default()),
                code(&field(r, "action").unwrap_or_default())
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }

    let hooks = seq(m, "hooks");
    if !hooks.is_empty() {
        h2(&mut out, &mut slugger, "Hooks");
        out.push_str(
            "<table>\n<thead><tr><th>Event</th><th>Action</th><th>Priority</th></tr></thead>\n<tbody>\n",
        );
        for h in hooks {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                code(&field(h, "event").unwrap_or_default()),
                code(&field(h, "action").unwrap_or_default()),
                escape(&field(h, "priority").unwrap_or_else(|| "default".into()))
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }

    let permissions = seq(m, "permissions");
    if !permissions.is_empty() {
        h2(&mut out, &mut slugger, "Permissions");
        out.push_str("<ul>\n");
        for perm in permissions {
            let _ = writeln!(out, "<li>{}</li>", code(&inline(perm)));
        }
        out.push_str("</ul>\n");
    }

    let mut limits = Vec::new();
    for key in ["resources", "restart", "health_check"] {
        if let Some(v) = get(m, key) {
            flatten(key, v, &mut limits);
        }
    }
    if !limits.is_empty() {
        h2(&mut out, &mut slugger, "Resources and limits");
        out.push_str("<table>\n<thead><tr><th>Setting</th><th>Value</th></tr></thead>\n<tbody>\n");
        for (k, v) in limits {
            let _ = writeln!(out, "<tr><td>{}</td><td>{}</td></tr>", code(&k), escape(&v));
        }
        out.push_str("</tbody>\n</table>\n");
    }

    if let Some(config) = get(m, "config").filter(|c| c.as_mapping().is_none_or(|m| !m.is_empty())) {
        h2(&mut out, &mut slugger, "Configuration");
        let yaml = serde_yaml_ng::to_string(config).unwrap_or_default();
        let _ = writeln!(out, "<pre><code class=\"language-yaml\">{}</code></pre>", escape(&yaml));
    }

    let requires = seq(m, "requires");
    if !requires.is_empty() {
        h2(&mut out, &mut slugger, "Requires");
        out.push_str("<ul>\n");
        for r in requires {
            let (name, version) = match r {
                Value::Mapping(_) => (field(r, "name").unwrap_or_default(), field(r, "version")),
                other => (inline(other), None),
            };
            let shown = match by_name.get(name.as_str()) {
                Some(folder) => format!("<a href=\"{}.html\">{}</a>", escape(folder), code(&name)),
                None => code(&name),
            };
            let version = version.map(|v| format!(" {}", escape(&v))).unwrap_or_default();
            let _ = writeln!(out, "<li>{shown}{version}</li>");
        }
        out.push_str("</ul>\n");
    }

    if let Some(actions) = description.and_then(|d| d.actions.as_deref()) {
        actions_section(&mut out, &mut slugger, actions);
    }

    Page {
        path: format!("plugins/{}.html", p.folder),
        title: p.name.clone(),
        section: Section::Plugins,
        body: out,
        links: vec![],
    }
}

/// Nested mappings as `a.b.c = value` rows.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                flatten(&format!("{prefix}.{}", inline(k)), v, out);
            }
        }
        other => out.push((prefix.to_string(), inline(other))),
    }
}

/// The plugin's action table (`#[plugin]`): each action with its routes, events,
/// schemas and examples.
fn actions_section(out: &mut String, slugger: &mut Slugger, actions: &[ActionDescription]) {
    h2(out, slugger, "Action table");
    out.push_str(
        "<p>From the plugin's own action table (its typed handlers), as the host reads it at load.</p>\n",
    );
    let pretty = |v: &serde_json::Value| escape(&serde_json::to_string_pretty(v).unwrap_or_default());
    for a in actions {
        let kind = match a.kind {
            ActionKind::Action => "action",
            ActionKind::Route => "route handler",
            ActionKind::Event => "event handler",
        };
        let _ = writeln!(
            out,
            "<h3 id=\"{}\">{} <small>({kind})</small></h3>",
            escape(&slugger.slug(&format!("action {}", a.name))),
            code(&a.name)
        );
        for text in a.summary.iter().chain(a.description.iter()) {
            let _ = writeln!(out, "<p>{}</p>", escape(text));
        }
        for r in &a.routes {
            let _ = writeln!(out, "<p>Route: {}</p>", code(&format!("{} {}", r.method, r.path)));
        }
        for e in &a.events {
            let _ = writeln!(out, "<p>Handles events {}</p>", code(e));
        }
        let schemas = [
            ("Input", &a.input_schema),
            ("Path parameters", &a.params_schema),
            ("Query", &a.query_schema),
            ("Reply", &a.output_schema),
        ];
        for (title, schema) in schemas {
            if let Some(s) = schema {
                let _ = writeln!(out, "<p>{title} (JSON Schema):</p>\n<pre><code>{}</code></pre>", pretty(s));
            }
        }
        for ex in &a.examples {
            let name = if ex.name.is_empty() { String::new() } else { format!(" ({})", escape(&ex.name)) };
            let _ = writeln!(
                out,
                "<p>Example{name}:</p>\n<pre><code>{} -> {}</code></pre>",
                escape(&ex.input.to_string()),
                escape(&ex.output.to_string())
            );
        }
    }
}
