//! Routes that plugins declare in their manifest, served under `/plugins/{name}/...`.
//!
//! A route maps a method and a path pattern (`/notes/{id}`) to an action. The action
//! receives `{"params": {...}, "query": {...}, "body": <JSON or null>}`.

use std::collections::BTreeMap;

use crate::manifest::Route;

/// The route that matches, with the path parameters it captured.
pub fn match_route<'r>(
    routes: &'r [Route],
    method: &str,
    path: &str,
) -> Option<(&'r Route, BTreeMap<String, String>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    routes.iter().filter(|r| r.method.eq_ignore_ascii_case(method)).find_map(|r| {
        let pat: Vec<&str> = r.path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        if pat.len() != segs.len() {
            return None;
        }
        let mut params = BTreeMap::new();
        for (p, s) in pat.iter().zip(&segs) {
            if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                params.insert(name.to_string(), percent_decode(s));
            } else if p != s {
                return None;
            }
        }
        Some((r, params))
    })
}

/// Decodes `%XX` escapes; invalid escapes are kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str, action: &str) -> Route {
        Route { method: method.into(), path: path.into(), action: action.into() }
    }

    #[test]
    fn matches_literals_and_params() {
        let routes = vec![route("GET", "/notes", "list"), route("GET", "/notes/{id}", "get")];
        let (r, p) = match_route(&routes, "GET", "/notes/42").unwrap();
        assert_eq!(r.action, "get");
        assert_eq!(p["id"], "42");
        assert_eq!(match_route(&routes, "GET", "notes/").unwrap().0.action, "list");
        assert!(match_route(&routes, "POST", "/notes").is_none());
        assert!(match_route(&routes, "GET", "/notes/1/x").is_none());
    }

    #[test]
    fn decodes_params() {
        let routes = vec![route("GET", "/t/{tag}", "t")];
        assert_eq!(match_route(&routes, "GET", "/t/a%20b").unwrap().1["tag"], "a b");
        assert_eq!(match_route(&routes, "GET", "/t/100%").unwrap().1["tag"], "100%");
    }
}
