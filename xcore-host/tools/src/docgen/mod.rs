//! `docgen`: the static HTML documentation site.
//!
//! Pages: every `docs/*.md` (`docs/README.md` is `index.html`, else an index is
//! generated), one reference page per plugin (`plugins/<folder>.html`, from its
//! `plugin.yaml` and the `//!` docs of its `src/lib.rs`) and the HTTP API reference
//! (`api.html`, from the OpenAPI document). All pages share one layout: a `<nav>` of
//! every page, inline CSS, no JavaScript, no external assets.
//!
//! Output is incremental: `out_dir/.docgen-cache.json` maps each written file to the
//! SHA-256 of its content; unchanged pages are not rewritten, pages that disappeared
//! are removed. Internal links (pages, anchors, local files) are checked after writing.

mod markdown;
mod openapi;
mod plugins;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use markdown::{LinkMode, Slugger};

/// Name of the content-hash cache inside the output folder.
pub const CACHE_FILE: &str = ".docgen-cache.json";

/// What to build the site from, and where to write it.
#[derive(Debug, Clone)]
pub struct DocgenInput {
    /// Folder of `*.md` pages (top level only).
    pub docs_dir: PathBuf,
    /// Folder of plugin folders (those with a `plugin.yaml`); may be missing.
    pub plugins_dir: PathBuf,
    /// OpenAPI 3.x document; `Null` for a site without an `api.html`.
    pub openapi: serde_json::Value,
    /// What each plugin (by name) says about its actions, for those that could be asked:
    /// rendered on its page with the schemas of every input and reply.
    pub descriptions: std::collections::BTreeMap<String, xcore_plugin_abi::describe::PluginDescription>,
    /// Output folder (created if needed).
    pub out_dir: PathBuf,
}

/// What a build did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocgenReport {
    /// Pages in the site.
    pub pages: usize,
    /// Pages written (new or changed content).
    pub written: usize,
    /// Pages left alone because their content did not change.
    pub unchanged: usize,
    /// Files of the previous build that no longer exist in the site and were removed.
    pub removed: usize,
    /// Always empty in an `Ok` report (broken links make the build an error).
    pub broken_links: Vec<BrokenLink>,
}

/// An internal link whose target does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// Output page holding the link (`plugins.html`, `plugins/echo.html`).
    pub page: String,
    /// The link as written in the source.
    pub link: String,
    /// Why it is broken.
    pub reason: String,
}

impl fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.page, self.link, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DocgenError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },
    #[error("OpenAPI document: {0}")]
    OpenApi(String),
    #[error("two sources produce the page {0}")]
    DuplicatePage(String),
    /// The site was written; these links in it are broken.
    #[error("{} broken link(s): {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    BrokenLinks(Vec<BrokenLink>),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DocgenError + '_ {
    move |source| DocgenError::Io { path: path.to_path_buf(), source }
}

/// A link to check.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    /// As written.
    pub raw: String,
    pub target: LinkTarget,
}

#[derive(Debug, Clone)]
pub(crate) enum LinkTarget {
    /// A page of the site (output path relative to `out_dir`), maybe with an anchor;
    /// `source` is the docs-relative `.md` the link named, if it named one.
    Page { path: String, anchor: Option<String>, source: Option<String> },
    /// An anchor on the linking page.
    SamePage { anchor: Option<String> },
    /// A local file that must exist.
    File(PathBuf),
}

/// Where a page sits in the nav.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Section {
    Docs,
    Plugins,
    Api,
}

/// A page before layout.
#[derive(Debug)]
pub(crate) struct Page {
    /// Output path relative to `out_dir`, `/`-separated.
    pub path: String,
    pub title: String,
    pub section: Section,
    /// Inner HTML of `<main>`.
    pub body: String,
    pub links: Vec<Link>,
}

/// Builds the site. Broken internal links are an error, returned after the site has
/// been written so that authors can look at it.
pub fn build(input: &DocgenInput) -> Result<DocgenReport, DocgenError> {
    let mut pages = doc_pages(&input.docs_dir)?;
    pages.extend(plugins::pages(&input.plugins_dir, &input.descriptions)?);
    if let Some(page) = openapi::page(&input.openapi)? {
        pages.push(page);
    }
    if !pages.iter().any(|p| p.path == "index.html") {
        pages.push(generated_index(&pages));
    }
    let mut seen = HashSet::new();
    for p in &pages {
        if !seen.insert(p.path.as_str()) {
            return Err(DocgenError::DuplicatePage(p.path.clone()));
        }
    }
    // Nav order: index, other docs pages by file name, plugins, API.
    pages.sort_by(|a, b| {
        (a.section, a.path != "index.html", &a.path).cmp(&(b.section, b.path != "index.html", &b.path))
    });

    let rendered: Vec<(String, String)> = pages.iter().map(|p| (p.path.clone(), layout(p, &pages))).collect();
    let broken = check_links(&pages, &rendered);
    let mut report = write_site(&input.out_dir, &rendered)?;
    if !broken.is_empty() {
        return Err(DocgenError::BrokenLinks(broken));
    }
    report.pages = pages.len();
    Ok(report)
}

fn doc_pages(docs_dir: &Path) -> Result<Vec<Page>, DocgenError> {
    let mut files = BTreeSet::new();
    for entry in fs::read_dir(docs_dir).map_err(io_err(docs_dir))? {
        let entry = entry.map_err(io_err(docs_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().map_err(io_err(&entry.path()))?.is_file();
        if is_file && !name.starts_with('.') && name.to_ascii_lowercase().ends_with(".md") {
            files.insert(name);
        }
    }
    let mut pages = Vec::new();
    for name in &files {
        let path = docs_dir.join(name);
        let src = fs::read_to_string(&path).map_err(io_err(&path))?;
        let mode = LinkMode::Docs { docs_dir, pages: &files };
        let r = markdown::render(&src, &mode, &mut Slugger::default());
        let stem = name[..name.len() - 3].to_string();
        let title = r.h1.filter(|t| !t.trim().is_empty()).unwrap_or(stem);
        let body =
            if r.html.contains("<h1") { r.html } else { format!("<h1>{}</h1>\n{}", escape(&title), r.html) };
        pages.push(Page {
            path: markdown::page_name(name),
            title,
            section: Section::Docs,
            body,
            links: r.links,
        });
    }
    Ok(pages)
}

fn generated_index(pages: &[Page]) -> Page {
    let mut body = String::from("<h1 id=\"documentation\">Documentation</h1>\n");
    for (section, heading) in
        [(Section::Docs, "Pages"), (Section::Plugins, "Plugins"), (Section::Api, "HTTP API")]
    {
        let mut items: Vec<&Page> = pages.iter().filter(|p| p.section == section).collect();
        if items.is_empty() {
            continue;
        }
        items.sort_by(|a, b| a.path.cmp(&b.path));
        body.push_str(&format!("<h2 id=\"{}\">{heading}</h2>\n<ul>\n", markdown::slugify(heading)));
        for p in items {
            body.push_str(&format!("<li><a href=\"{}\">{}</a></li>\n", escape(&p.path), escape(&p.title)));
        }
        body.push_str("</ul>\n");
    }
    Page {
        path: "index.html".into(),
        title: "Documentation".into(),
        section: Section::Docs,
        body,
        links: vec![],
    }
}

const CSS: &str = "body{margin:0;font:16px/1.55 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1f2328;\
display:flex;min-height:100vh}\
nav{flex:0 0 15rem;background:#f6f8fa;border-right:1px solid #d0d7de;padding:1rem;font-size:.92rem}\
nav ul{list-style:none;margin:0;padding:0}nav ul ul{padding-left:1rem}nav li{margin:.2rem 0}\
nav .group{font-weight:600;margin-top:.6rem}nav a{color:#0969da;text-decoration:none}\
nav a[aria-current]{font-weight:700;color:#1f2328}\
main{flex:1;max-width:54rem;padding:1rem 2rem 3rem;min-width:0}\
a{color:#0969da}h1,h2,h3{line-height:1.25}h2{border-bottom:1px solid #d0d7de;padding-bottom:.3rem}\
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em}\
code{background:#eff1f3;padding:.1em .3em;border-radius:4px}\
pre{background:#f6f8fa;padding:.8rem;overflow:auto;border-radius:6px}pre code{background:none;padding:0}\
table{border-collapse:collapse;margin:.8rem 0}th,td{border:1px solid #d0d7de;padding:.3rem .6rem;\
text-align:left;vertical-align:top}th{background:#f6f8fa}\
blockquote{margin:0;padding:0 1rem;color:#59636e;border-left:.25rem solid #d0d7de}\
.op{margin-bottom:2rem}\
@media (max-width:48rem){body{display:block}nav{border-right:0;border-bottom:1px solid #d0d7de}}";

/// The full HTML of `page`, with the nav of all `pages`.
fn layout(page: &Page, pages: &[Page]) -> String {
    let prefix = "../".repeat(page.path.matches('/').count());
    let item = |p: &Page| {
        let current = if p.path == page.path { " aria-current=\"page\"" } else { "" };
        format!("<li><a href=\"{prefix}{}\"{current}>{}</a></li>\n", escape(&p.path), escape(&p.title))
    };
    let mut nav = String::from("<nav>\n<ul>\n");
    for p in pages.iter().filter(|p| p.section == Section::Docs) {
        nav.push_str(&item(p));
    }
    let plugin_pages: Vec<&Page> = pages.iter().filter(|p| p.section == Section::Plugins).collect();
    if !plugin_pages.is_empty() {
        nav.push_str("<li class=\"group\">Plugins\n<ul>\n");
        for p in plugin_pages {
            nav.push_str(&item(p));
        }
        nav.push_str("</ul>\n</li>\n");
    }
    for p in pages.iter().filter(|p| p.section == Section::Api) {
        nav.push_str(&item(p));
    }
    nav.push_str("</ul>\n</nav>\n");
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} · XCore</title>\n<style>{CSS}</style>\n</head>\n<body>\n{nav}<main>\n{}</main>\n</body>\n</html>\n",
        escape(&page.title),
        page.body
    )
}

/// Escapes text for HTML content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `id="..."` values of a rendered page (headings and generated sections).
fn anchors(html: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut rest = html;
    while let Some(i) = rest.find(" id=\"") {
        rest = &rest[i + 5..];
        if let Some(end) = rest.find('"') {
            out.insert(unescape(&rest[..end]));
            rest = &rest[end..];
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn check_links(pages: &[Page], rendered: &[(String, String)]) -> Vec<BrokenLink> {
    let anchors: BTreeMap<&str, HashSet<String>> =
        rendered.iter().map(|(path, html)| (path.as_str(), anchors(html))).collect();
    let mut broken = Vec::new();
    for page in pages {
        for link in &page.links {
            let reason = match &link.target {
                LinkTarget::File(path) => {
                    (!path.exists()).then(|| format!("file {} does not exist", path.display()))
                }
                LinkTarget::SamePage { anchor } => missing_anchor(&anchors, &page.path, anchor.as_deref()),
                LinkTarget::Page { path, anchor, source } => match anchors.contains_key(path.as_str()) {
                    false => Some(match source {
                        Some(md) => format!("no page {path}: {md} is not a page of the docs folder"),
                        None => format!("no page {path}"),
                    }),
                    true => missing_anchor(&anchors, path, anchor.as_deref()),
                },
            };
            if let Some(reason) = reason {
                broken.push(BrokenLink { page: page.path.clone(), link: link.raw.clone(), reason });
            }
        }
    }
    broken
}

fn missing_anchor(
    anchors: &BTreeMap<&str, HashSet<String>>,
    page: &str,
    anchor: Option<&str>,
) -> Option<String> {
    let anchor = anchor.filter(|a| !a.is_empty())?;
    let ids = anchors.get(page)?;
    (!ids.contains(anchor)).then(|| format!("page {page} has no anchor #{anchor}"))
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// `a/b.html` -> `out_dir/a/b.html`; `None` for paths that could leave `out_dir`
/// (a hand-edited cache must not make us delete files elsewhere).
fn out_path(out_dir: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    let safe = rel.components().all(|c| matches!(c, Component::Normal(_)));
    (safe && rel.components().next().is_some()).then(|| out_dir.join(rel))
}

fn write_site(out_dir: &Path, rendered: &[(String, String)]) -> Result<DocgenReport, DocgenError> {
    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let cache_path = out_dir.join(CACHE_FILE);
    let previous: BTreeMap<String, String> = match fs::read(&cache_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            log::warn!("{}: unreadable, rebuilding everything: {e}", cache_path.display());
            BTreeMap::new()
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(DocgenError::Io { path: cache_path, source: e }),
    };
    let mut report = DocgenReport::default();
    let mut cache = BTreeMap::new();
    for (rel, html) in rendered {
        let hash = sha256_hex(html.as_bytes());
        let path = out_path(out_dir, rel).ok_or_else(|| DocgenError::DuplicatePage(rel.clone()))?;
        // The cache is trusted only if the file is still there with the expected size.
        let intact = fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == html.len() as u64);
        if previous.get(rel) == Some(&hash) && intact {
            report.unchanged += 1;
        } else {
            write_atomic(&path, html.as_bytes())?;
            log::debug!("docgen: wrote {}", path.display());
            report.written += 1;
        }
        cache.insert(rel.clone(), hash);
    }
    for rel in previous.keys().filter(|k| !cache.contains_key(*k)) {
        let Some(path) = out_path(out_dir, rel) else {
            log::warn!("{}: ignoring suspicious entry {rel:?}", cache_path.display());
            continue;
        };
        match fs::remove_file(&path) {
            Ok(()) => report.removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(DocgenError::Io { path, source: e }),
        }
        // Drop emptied folders (`plugins/`); failure just means they are not empty.
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| *d != out_dir) {
            if fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
    if cache != previous || !cache_path.exists() {
        let json = serde_json::to_vec_pretty(&cache).expect("a map of strings serializes");
        write_atomic(&cache_path, &json)?;
    }
    Ok(report)
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), DocgenError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".docgen-tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, data).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        DocgenError::Io { path: path.to_path_buf(), source }
    })
}
