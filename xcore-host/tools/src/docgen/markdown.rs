//! Markdown rendering (pulldown-cmark, tables enabled) with heading anchors, `.md` link
//! rewriting and collection of the internal links to check.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use pulldown_cmark::{html, CowStr, Event, LinkType, Options, Parser, Tag, TagEnd};

use super::{Link, LinkTarget};

/// Anchor ids of one page: GitHub-style slugs, made unique with `-1`, `-2`, ...
#[derive(Debug, Default)]
pub(crate) struct Slugger {
    seen: HashSet<String>,
}

impl Slugger {
    /// A unique id for a heading whose text is `text`.
    pub(crate) fn slug(&mut self, text: &str) -> String {
        let mut base = slugify(text);
        if base.is_empty() {
            base = "section".to_string();
        }
        let mut candidate = base.clone();
        let mut n = 0;
        while self.seen.contains(&candidate) {
            n += 1;
            candidate = format!("{base}-{n}");
        }
        self.seen.insert(candidate.clone());
        candidate
    }
}

/// Lowercase; spaces become `-`; punctuation other than `-` and `_` is dropped
/// (the GitHub convention, so anchors written against GitHub's rendering keep working).
pub(crate) fn slugify(text: &str) -> String {
    text.trim()
        .chars()
        .flat_map(char::to_lowercase)
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// How links in a markdown source are treated.
pub(crate) enum LinkMode<'a> {
    /// A page of the docs folder (rendered at the site root): `.md` links are rewritten
    /// and internal links recorded for checking. `pages` are the docs file names.
    Docs { docs_dir: &'a Path, pages: &'a BTreeSet<String> },
    /// Text from elsewhere (crate docs, OpenAPI descriptions): links are left alone and
    /// not checked; raw HTML is escaped rather than passed through.
    Foreign,
}

pub(crate) struct Rendered {
    pub html: String,
    pub links: Vec<Link>,
    /// Text of the first level-1 heading, if any.
    pub h1: Option<String>,
}

pub(crate) fn render(src: &str, mode: &LinkMode<'_>, slugger: &mut Slugger) -> Rendered {
    let mut events: Vec<Event<'_>> = Parser::new_ext(src, Options::ENABLE_TABLES).collect();
    let mut links = Vec::new();
    let mut h1 = None;
    for i in 0..events.len() {
        match &events[i] {
            Event::Start(Tag::Heading { level, id: None, .. }) => {
                let level = *level;
                let mut text = String::new();
                for e in &events[i + 1..] {
                    match e {
                        Event::End(TagEnd::Heading(_)) => break,
                        Event::Text(t) | Event::Code(t) => text.push_str(t),
                        _ => {}
                    }
                }
                if level == pulldown_cmark::HeadingLevel::H1 && h1.is_none() {
                    h1 = Some(text.clone());
                }
                let slug = slugger.slug(&text);
                if let Event::Start(Tag::Heading { id, .. }) = &mut events[i] {
                    *id = Some(CowStr::from(slug));
                }
            }
            Event::Start(Tag::Link { link_type, dest_url, .. }) => {
                if let LinkMode::Docs { docs_dir, pages } = mode {
                    if *link_type == LinkType::Email {
                        continue;
                    }
                    let raw = dest_url.to_string();
                    if let Some((rewritten, target)) = classify(&raw, docs_dir, pages) {
                        links.push(Link { raw: raw.clone(), target });
                        if rewritten != raw {
                            if let Event::Start(Tag::Link { dest_url, .. }) = &mut events[i] {
                                *dest_url = CowStr::from(rewritten);
                            }
                        }
                    }
                }
            }
            Event::Start(Tag::Image { dest_url, .. }) => {
                if let LinkMode::Docs { docs_dir, pages } = mode {
                    let raw = dest_url.to_string();
                    if let Some((_, target)) = classify(&raw, docs_dir, pages) {
                        links.push(Link { raw, target });
                    }
                }
            }
            Event::Html(t) | Event::InlineHtml(t) if matches!(mode, LinkMode::Foreign) => {
                events[i] = Event::Text(t.clone());
            }
            _ => {}
        }
    }
    let mut out = String::with_capacity(src.len() * 3 / 2);
    html::push_html(&mut out, events.into_iter());
    Rendered { html: out, links, h1 }
}

/// Classifies a link of a docs page. `None` for links that are not checked (URLs with a
/// scheme, absolute paths, empty links). Otherwise the destination to write (`.md`
/// rewritten to `.html` inside the docs folder) and what must exist.
fn classify(raw: &str, docs_dir: &Path, pages: &BTreeSet<String>) -> Option<(String, LinkTarget)> {
    if raw.is_empty() || raw.starts_with('/') || has_scheme(raw) {
        return None;
    }
    let (before_frag, fragment) = match raw.split_once('#') {
        Some((p, f)) => (p, Some(percent_decode(f))),
        None => (raw, None),
    };
    let (path, query) = match before_frag.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (before_frag, None),
    };
    if path.is_empty() {
        // `#anchor` (or `?query#anchor`) on the page itself.
        return Some((raw.to_string(), LinkTarget::SamePage { anchor: fragment }));
    }
    let decoded = percent_decode(path);
    let mut stack: Vec<&str> = Vec::new();
    let mut outside = false;
    for part in decoded.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    outside = true;
                    break;
                }
            }
            p => stack.push(p),
        }
    }
    if outside {
        // Outside the docs folder (`../README.md`): left as written; only a missing local
        // file is an error.
        return Some((raw.to_string(), LinkTarget::File(docs_dir.join(&decoded))));
    }
    let normalized = stack.join("/");
    let last = stack.last().copied().unwrap_or("");
    if let Some(stem) = strip_suffix_ci(last, ".md") {
        let page = if stack.len() == 1 && pages.contains(last) {
            page_name(last)
        } else {
            let mut s = stack.clone();
            s.pop();
            let html = format!("{stem}.html");
            s.push(&html);
            s.join("/")
        };
        // Rewrite the written path: same directory part, new file name.
        let dir_part = match path.rfind('/') {
            Some(i) => &path[..=i],
            None => "",
        };
        let new_name = page.rsplit('/').next().unwrap_or(&page);
        let mut rewritten = format!("{dir_part}{new_name}");
        if let Some(q) = query {
            rewritten.push('?');
            rewritten.push_str(q);
        }
        if let Some((_, f)) = raw.split_once('#') {
            rewritten.push('#');
            rewritten.push_str(f);
        }
        let target = LinkTarget::Page { path: page, anchor: fragment, source: Some(normalized) };
        return Some((rewritten, target));
    }
    if strip_suffix_ci(last, ".html").is_some() {
        return Some((
            raw.to_string(),
            LinkTarget::Page { path: normalized, anchor: fragment, source: None },
        ));
    }
    Some((raw.to_string(), LinkTarget::File(docs_dir.join(PathBuf::from(&normalized)))))
}

/// Output file of a docs page: `README.md` is the index, `x.md` is `x.html`.
pub(crate) fn page_name(md_file: &str) -> String {
    if md_file.eq_ignore_ascii_case("README.md") {
        return "index.html".to_string();
    }
    let stem = strip_suffix_ci(md_file, ".md").unwrap_or(md_file);
    format!("{stem}.html")
}

fn strip_suffix_ci<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let n = s.len().checked_sub(suffix.len())?;
    if s.is_char_boundary(n) && s[n..].eq_ignore_ascii_case(suffix) {
        Some(&s[..n])
    } else {
        None
    }
}

/// `http:`, `mailto:`, `data:` ...: a scheme before the first `/`, `?` or `#`.
fn has_scheme(s: &str) -> bool {
    let Some(colon) = s.find(':') else { return false };
    let scheme = &s[..colon];
    !scheme.contains(['/', '?', '#'])
        && scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `%20` -> ` `; malformed escapes and invalid UTF-8 leave the text as written.
pub(crate) fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_github() {
        assert_eq!(
            slugify("`GET /api/v1/plugins` and `GET /api/v1/plugins/{name}`"),
            "get-apiv1plugins-and-get-apiv1pluginsname"
        );
        assert_eq!(slugify("Errors: problem+json"), "errors-problemjson");
        assert_eq!(slugify("Re-entrancy"), "re-entrancy");
        let mut s = Slugger::default();
        assert_eq!(s.slug("Metrics"), "metrics");
        assert_eq!(s.slug("Metrics"), "metrics-1");
        assert_eq!(s.slug("Metrics 1"), "metrics-1-1");
        assert_eq!(s.slug("!!"), "section");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
    }

    #[test]
    fn schemes() {
        assert!(has_scheme("https://x"));
        assert!(has_scheme("mailto:a@b"));
        assert!(!has_scheme("plugins.md#a:b"));
        assert!(!has_scheme("dir/a:b.md"));
    }
}
