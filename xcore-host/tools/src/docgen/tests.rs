use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;

struct Site {
    _tmp: tempfile::TempDir,
    input: DocgenInput,
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn site() -> Site {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let docs = root.join("docs");
    write(
        &docs.join("README.md"),
        "# XCore\n\nSee [plugins](plugins.md) and [routes](plugins.md#routes), the \
         [notes plugin](plugins/notes.html#routes), the [API](api.html#get-notes) and \
         [the readme](../README.md).\n",
    );
    write(
        &docs.join("plugins.md"),
        "# Plugins\n\n## Routes\n\nBack to [the index](README.md). [Same page](#routes).\n\n\
         | a | b |\n|---|---|\n| 1 | 2 |\n",
    );
    write(&docs.join("hooks.md"), "# Hooks\n\n## Metrics\n\nText.\n");
    write(&root.join("README.md"), "outside\n");
    let plugins = root.join("plugins");
    write(
        &plugins.join("notes/plugin.yaml"),
        "name: notes\nversion: 0.1.0\napi_version: \"^0.1\"\n\
         description: Notes <b>kept</b> & \"listed\"\nauthor: XCore team\n\
         resources:\n  timeout_ms: 2000\n  rate_limit: { calls: 5, period_seconds: 1 }\n\
         config:\n  max_notes: 1000\npermissions:\n  - \"events.emit:notes.*\"\n\
         requires:\n  - { name: echo, version: \"^0.1\" }\n\
         routes:\n  - { method: GET, path: /notes, action: route.list }\n\
         \x20 - { method: delete, path: \"/notes/{id}\", action: route.delete }\n",
    );
    write(
        &plugins.join("notes/src/lib.rs"),
        "//! `notes`: a small plugin.\n//!\n//! Actions:\n//! - `create` makes a note;\n\
         //! - `list` lists them.\n//!\n//! <script>alert(1)</script>\n\nuse std::fmt;\n/// not this\nfn f() {}\n",
    );
    write(
        &plugins.join("echo/plugin.yaml"),
        "name: echo\nversion: 0.1.0\nexecution_mode: trusted\n\
         hooks:\n  - { event: notes.created, action: echo, priority: 10 }\n",
    );
    write(&plugins.join("_template/plugin.yaml"), "name: template\n");
    write(&plugins.join(".hidden/plugin.yaml"), "name: hidden\n");
    fs::create_dir_all(plugins.join("no-manifest")).unwrap();
    let openapi = json!({
        "openapi": "3.0.3",
        "info": {"title": "XCore <API>", "version": "1.0"},
        "paths": {
            "/notes": {
                "get": {
                    "summary": "List notes",
                    "tags": ["notes"],
                    "parameters": [{"$ref": "#/components/parameters/Limit"}],
                    "responses": {"200": {"description": "The notes",
                        "content": {"application/json": {}}}}
                },
                "post": {
                    "summary": "Create",
                    "requestBody": {"required": true, "content": {"application/json": {}}},
                    "responses": {"201": {"description": "Created"}, "400": {"description": "Bad <input>"}}
                }
            }
        },
        "components": {"parameters": {"Limit": {"name": "limit", "in": "query",
            "schema": {"type": "integer"}, "description": "At most"}}}
    });
    let input = DocgenInput {
        docs_dir: docs,
        plugins_dir: plugins,
        openapi,
        descriptions: Default::default(),
        out_dir: root.join("site"),
    };
    Site { _tmp: tmp, input }
}

fn read(site: &Site, rel: &str) -> String {
    fs::read_to_string(site.input.out_dir.join(rel)).unwrap()
}

fn mtime(site: &Site, rel: &str) -> SystemTime {
    fs::metadata(site.input.out_dir.join(rel)).unwrap().modified().unwrap()
}

/// Backdates every output file so that a rewrite is visible in its mtime.
fn backdate(site: &Site, rels: &[&str]) {
    let old = SystemTime::now() - Duration::from_secs(3600);
    for rel in rels {
        let f = fs::File::options().write(true).open(site.input.out_dir.join(rel)).unwrap();
        f.set_modified(old).unwrap();
    }
}

const ALL: [&str; 6] =
    ["index.html", "hooks.html", "plugins.html", "plugins/echo.html", "plugins/notes.html", "api.html"];

#[test]
fn builds_the_site() {
    let s = site();
    let report = build(&s.input).unwrap();
    assert_eq!((report.pages, report.written, report.unchanged), (6, 6, 0));
    for rel in ALL {
        let html = read(&s, rel);
        assert!(html.contains("<nav>"), "{rel}");
        assert!(!html.contains("<script"), "{rel}");
    }
    assert!(!s.input.out_dir.join("plugins/template.html").exists());
    assert!(!s.input.out_dir.join("plugins/_template.html").exists());

    let index = read(&s, "index.html");
    assert!(index.contains("href=\"plugins.html\""), "{index}");
    assert!(index.contains("href=\"plugins.html#routes\""));
    assert!(index.contains("href=\"../README.md\""), "outside links stay as written");
    // Nav order: docs (index first), plugins, API.
    let pos = |s: &str| index.find(s).unwrap();
    assert!(pos("href=\"index.html\" aria-current") < pos("href=\"hooks.html\""));
    assert!(pos("href=\"plugins.html\"") < pos("href=\"plugins/echo.html\""));
    assert!(pos("href=\"plugins/notes.html\"") < pos("href=\"api.html\""));

    let plugins = read(&s, "plugins.html");
    assert!(plugins.contains("<h2 id=\"routes\">Routes</h2>"));
    assert!(plugins.contains("href=\"index.html\""));
    assert!(plugins.contains("<table>"), "tables are enabled");

    let notes = read(&s, "plugins/notes.html");
    assert!(notes.contains("href=\"../index.html\""), "nav is relative to the page");
    assert!(notes.contains("<code>/notes/{id}</code>") && notes.contains("DELETE"));
    assert!(notes.contains("<code>route.list</code>: route GET /notes"));
    assert!(notes.contains("<code>create</code> makes a note"), "crate docs rendered: {notes}");
    assert!(!notes.contains("not this"));
    assert!(notes.contains("&lt;script&gt;"), "raw HTML of crate docs is escaped");
    assert!(notes.contains("Notes &lt;b&gt;kept&lt;/b&gt; &amp; &quot;listed&quot;"));
    assert!(notes.contains("<title>notes · XCore</title>"));
    assert!(notes.contains("max_notes: 1000"));
    assert!(notes.contains("resources.rate_limit.calls"));
    assert!(notes.contains("events.emit:notes.*"));
    assert!(notes.contains("<a href=\"echo.html\"><code>echo</code></a> ^0.1"));
    assert!(notes.contains("trusted (default)"));

    let echo = read(&s, "plugins/echo.html");
    assert!(echo.contains("<code>notes.created</code>") && echo.contains("<td>10</td>"));
    assert!(echo.contains("<code>echo</code>: hook on notes.created"));

    let api = read(&s, "api.html");
    assert!(api.contains("<h2 id=\"get-notes\"><code>GET</code> <code>/notes</code></h2>"));
    assert!(api.contains("id=\"post-notes\""));
    assert!(api.contains("List notes") && api.contains("Tags: notes"));
    assert!(api.contains("<code>limit</code></td><td>query</td><td>integer</td>"), "$ref resolved");
    assert!(api.contains("<td>400</td><td>Bad &lt;input&gt;</td>"));
    assert!(api.contains("XCore &lt;API&gt;"));
    assert!(api.contains("(required)"));

    let cache: BTreeMap<String, String> = serde_json::from_str(&read(&s, CACHE_FILE)).unwrap();
    assert_eq!(cache.len(), 6);
    assert!(cache.values().all(|h| h.len() == 64));
}

#[test]
fn rebuilds_only_what_changed() {
    let s = site();
    build(&s.input).unwrap();
    backdate(&s, &ALL);
    let before: Vec<SystemTime> = ALL.iter().map(|r| mtime(&s, r)).collect();

    let report = build(&s.input).unwrap();
    assert_eq!((report.written, report.unchanged), (0, 6));
    assert_eq!(before, ALL.iter().map(|r| mtime(&s, r)).collect::<Vec<_>>());

    // Body edit: the title (and so every nav) stays, only this page changes.
    let hooks = s.input.docs_dir.join("hooks.md");
    write(&hooks, "# Hooks\n\n## Metrics\n\nOther text.\n");
    let report = build(&s.input).unwrap();
    assert_eq!((report.written, report.unchanged), (1, 5));
    assert!(read(&s, "hooks.html").contains("Other text."));
    for (rel, t) in ALL.iter().zip(&before) {
        assert_eq!(mtime(&s, rel) != *t, *rel == "hooks.html", "{rel}");
    }

    // A deleted output file is written again even though the cache knows its hash.
    fs::remove_file(s.input.out_dir.join("api.html")).unwrap();
    let report = build(&s.input).unwrap();
    assert_eq!((report.written, report.unchanged), (1, 5));

    // A page that disappears is removed; the cache forgets it; an unrelated file stays.
    write(&s.input.out_dir.join("keep.txt"), "mine");
    fs::remove_dir_all(s.input.plugins_dir.join("echo")).unwrap();
    let err = build(&s.input);
    // The nav changed everywhere; nothing links to echo.html from docs.
    let report = err.unwrap();
    assert_eq!(report.removed, 1);
    assert!(!s.input.out_dir.join("plugins/echo.html").exists());
    assert!(s.input.out_dir.join("keep.txt").exists());
    assert!(!read(&s, CACHE_FILE).contains("echo.html"));
    assert!(!read(&s, "index.html").contains("echo.html"));
}

#[test]
fn reports_broken_links_after_writing() {
    let s = site();
    write(
        &s.input.docs_dir.join("hooks.md"),
        "# Hooks\n\n## Metrics\n\n[gone](benchmarks.md), [bad anchor](plugins.md#nope), \
         [self](#metrics), [self bad](#nope), [file](../missing.txt), [url](https://example.com/x.md), \
         [ok](hooks.md#metrics)\n",
    );
    let err = build(&s.input).unwrap_err();
    let DocgenError::BrokenLinks(list) = &err else { panic!("{err}") };
    let got: Vec<(&str, &str)> = list.iter().map(|b| (b.page.as_str(), b.link.as_str())).collect();
    assert_eq!(
        got,
        [
            ("hooks.html", "benchmarks.md"),
            ("hooks.html", "plugins.md#nope"),
            ("hooks.html", "#nope"),
            ("hooks.html", "../missing.txt"),
        ]
    );
    assert!(list[0].reason.contains("benchmarks.html"), "{}", list[0].reason);
    assert!(list[1].reason.contains("#nope"), "{}", list[1].reason);
    assert!(err.to_string().contains("hooks.html: benchmarks.md"));
    // The site was written anyway, with the link rewritten.
    assert!(read(&s, "hooks.html").contains("href=\"benchmarks.html\""));
    assert!(read(&s, "hooks.html").contains("href=\"https://example.com/x.md\""));
}

#[test]
fn generates_an_index_without_readme() {
    let s = site();
    fs::remove_file(s.input.docs_dir.join("README.md")).unwrap();
    let mut input = s.input.clone();
    input.openapi = serde_json::Value::Null;
    // plugins.md still links to README.md, which is no page any more.
    let DocgenError::BrokenLinks(list) = build(&input).unwrap_err() else { panic!() };
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].page.as_str(), list[0].link.as_str()), ("plugins.html", "README.md"));
    write(&s.input.docs_dir.join("plugins.md"), "# Plugins\n\n## Routes\n");
    let report = build(&input).unwrap();
    assert_eq!(report.pages, 5);
    let index = read(&s, "index.html");
    assert!(index.contains("<h1 id=\"documentation\">Documentation</h1>"));
    assert!(index.contains("href=\"plugins/notes.html\""));
    assert!(!s.input.out_dir.join("api.html").exists());
}

#[test]
fn bad_inputs_are_errors() {
    let s = site();
    let mut input = s.input.clone();
    input.openapi = json!([1]);
    assert!(matches!(build(&input), Err(DocgenError::OpenApi(_))));

    write(&s.input.plugins_dir.join("broken/plugin.yaml"), "name: [unclosed\n");
    let err = build(&s.input).unwrap_err();
    assert!(
        matches!(&err, DocgenError::Manifest { path, .. } if path.ends_with("broken/plugin.yaml")),
        "{err}"
    );

    let mut input = s.input.clone();
    input.docs_dir = s.input.docs_dir.join("nope");
    assert!(matches!(build(&input), Err(DocgenError::Io { .. })));
}

#[test]
fn module_docs_are_the_leading_block() {
    let src = "#![allow(x)]\n// licence\n\n//! One\n//!\n//!   indented\nuse a;\n//! not this\n";
    assert_eq!(plugins::module_docs(src).as_deref(), Some("One\n\n  indented"));
    assert_eq!(plugins::module_docs("/// item doc\nfn f() {}\n//! late\n"), None);
}

#[test]
fn a_plugin_page_shows_its_actions_with_their_schemas_and_examples() {
    use xcore_plugin_abi::describe::{
        ActionDescription, ActionKind, Example, PluginDescription, RouteDescription,
    };
    let mut site = site();
    let get = ActionDescription {
        name: "route.get".into(),
        summary: Some("One note by id.".into()),
        kind: ActionKind::Route,
        routes: vec![RouteDescription { method: "GET".into(), path: "/notes/{id}".into() }],
        params_schema: Some(serde_json::json!({"type": "integer"})),
        output_schema: Some(
            serde_json::json!({"type": "object", "properties": {"title": {"type": "string"}}}),
        ),
        examples: vec![Example {
            name: "<first>".into(),
            input: serde_json::json!({"id": 1}),
            output: serde_json::json!({"title": "a"}),
        }],
        ..Default::default()
    };
    site.input
        .descriptions
        .insert("notes".into(), PluginDescription { sdk_version: "0.2.0".into(), actions: Some(vec![get]) });
    build(&site.input).unwrap();
    let page = read(&site, "plugins/notes.html");
    assert!(page.contains("<h2 id=\"action-table\">Action table</h2>"), "{page}");
    assert!(page.contains("<code>route.get</code> <small>(route handler)</small>"), "{page}");
    assert!(page.contains("One note by id.") && page.contains("<code>GET /notes/{id}</code>"), "{page}");
    assert!(page.contains("Reply (JSON Schema)") && page.contains("&quot;title&quot;"), "{page}");
    // What a plugin wrote is escaped like everything else on the page.
    assert!(page.contains("Example (&lt;first&gt;)"), "{page}");
}
