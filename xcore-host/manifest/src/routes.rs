//! Matching the routes a manifest declares (served by the HTTP API under
//! `/plugins/{name}/...`, and by the test kit's `route`): the same matcher for both.
//!
//! A route maps a method and a path pattern (`/notes/{id}`) to an action. The action
//! receives `{"params": {...}, "query": {...}, "body": <JSON or null>}`.
//!
//! The matcher works on the path exactly as the client sent it (the raw bytes of the
//! request target, not a form the HTTP layer already decoded): it splits on `/`, then
//! percent-decodes each segment once, on bytes. So `%2F` is a slash inside a parameter,
//! `%2541` reaches the plugin as `%41`, and a segment that decodes to bytes that are not
//! UTF-8 is refused (400 `invalid_path`) rather than guessed at.

use std::collections::BTreeMap;

use crate::Route;

/// A path the matcher refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A segment that percent-decodes to bytes that are not UTF-8.
    #[error("path segment {segment:?} does not decode to UTF-8 text")]
    NotUtf8 {
        /// The segment as sent (lossily shown when it is not text itself).
        segment: String,
    },
}

/// A route that matched, with the path parameters it captured (decoded once).
pub type RouteMatch<'r> = (&'r Route, BTreeMap<String, String>);

/// The route that matches `method` and the raw `path`, with its parameters; `Ok(None)`
/// when none does. Never panics, whatever the bytes.
pub fn match_route<'r>(
    routes: &'r [Route],
    method: &str,
    path: &[u8],
) -> Result<Option<RouteMatch<'r>>, RouteError> {
    let segs: Vec<String> =
        path.split(|b| *b == b'/').filter(|s| !s.is_empty()).map(decode_segment).collect::<Result<_, _>>()?;
    Ok(routes.iter().filter(|r| r.method.eq_ignore_ascii_case(method)).find_map(|r| {
        let pat: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
        if pat.len() != segs.len() {
            return None;
        }
        let mut params = BTreeMap::new();
        for (p, s) in pat.iter().zip(&segs) {
            if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                params.insert(name.to_string(), s.clone());
            } else if p != s {
                return None;
            }
        }
        Some((r, params))
    }))
}

/// Decodes the `%XX` escapes of one raw segment, once; an escape that is not two hex
/// digits is kept as written. The result must be UTF-8.
fn decode_segment(raw: &[u8]) -> Result<String, RouteError> {
    let decoded = percent_encoding::percent_decode(raw).collect::<Vec<u8>>();
    String::from_utf8(decoded)
        .map_err(|_| RouteError::NotUtf8 { segment: String::from_utf8_lossy(raw).into_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route(method: &str, path: &str, action: &str) -> Route {
        Route { method: method.into(), path: path.into(), action: action.into() }
    }

    fn one(routes: &[Route], method: &str, path: &str) -> Option<(String, BTreeMap<String, String>)> {
        match_route(routes, method, path.as_bytes()).unwrap().map(|(r, p)| (r.action.clone(), p))
    }

    #[test]
    fn matches_literals_and_params() {
        let routes = vec![route("GET", "/notes", "list"), route("GET", "/notes/{id}", "get")];
        let (a, p) = one(&routes, "GET", "/notes/42").unwrap();
        assert_eq!(a, "get");
        assert_eq!(p["id"], "42");
        assert_eq!(one(&routes, "GET", "notes/").unwrap().0, "list");
        assert!(one(&routes, "POST", "/notes").is_none());
        assert!(one(&routes, "GET", "/notes/1/x").is_none());
    }

    #[test]
    fn decodes_params_once() {
        let routes = vec![route("GET", "/t/{tag}", "t")];
        assert_eq!(one(&routes, "GET", "/t/a%20b").unwrap().1["tag"], "a b");
        assert_eq!(one(&routes, "GET", "/t/100%").unwrap().1["tag"], "100%");
        assert_eq!(one(&routes, "GET", "/t/%2541").unwrap().1["tag"], "%41");
        assert_eq!(one(&routes, "GET", "/t/%25a%C3%A9").unwrap().1["tag"], "%a\u{e9}");
        assert_eq!(one(&routes, "GET", "/t/a%2Fb").unwrap().1["tag"], "a/b");
        // An escape cut short at the end of the segment, or by a multi-byte character.
        assert_eq!(one(&routes, "GET", "/t/%a\u{e9}").unwrap().1["tag"], "%a\u{e9}");
        assert_eq!(one(&routes, "GET", "/t/%4").unwrap().1["tag"], "%4");
    }

    #[test]
    fn bytes_that_are_not_utf8_after_decoding_are_refused() {
        let routes = vec![route("GET", "/t/{tag}", "t")];
        let e = match_route(&routes, "GET", b"/t/%C3%28").unwrap_err();
        assert_eq!(e, RouteError::NotUtf8 { segment: "%C3%28".into() });
        assert!(match_route(&routes, "GET", b"/t/\xff").is_err());
    }

    /// Percent-encodes every byte: the most an honest client could escape.
    fn encode_all(s: &str) -> String {
        s.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    /// An independent decoder, for comparison: `%` + two hex digits is one byte.
    fn reference_decode(raw: &[u8]) -> Vec<u8> {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        let mut out = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            let h = raw.get(i + 1).and_then(|b| hex(*b));
            let l = raw.get(i + 2).and_then(|b| hex(*b));
            if let (b'%', Some(h), Some(l)) = (raw[i], h, l) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
            out.push(raw[i]);
            i += 1;
        }
        out
    }

    fn probe_routes() -> Vec<Route> {
        vec![
            route("GET", "/a/{x}", "one"),
            route("GET", "/a/{x}/b/{y}", "two"),
            route("POST", "/{x}", "root"),
            route("GET", "/lit/eral", "literal"),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes, any method: an answer, never a panic; every parameter is the
        /// decode-once of the segment it came from.
        #[test]
        fn arbitrary_bytes_never_panic(path in proptest::collection::vec(any::<u8>(), 0..64), post in any::<bool>()) {
            let routes = probe_routes();
            let method = if post { "POST" } else { "GET" };
            let segs: Vec<&[u8]> = path.split(|b| *b == b'/').filter(|s| !s.is_empty()).collect();
            match match_route(&routes, method, &path) {
                Err(RouteError::NotUtf8 { .. }) => {
                    prop_assert!(segs.iter().any(|s| String::from_utf8(reference_decode(s)).is_err()));
                }
                Ok(found) => {
                    for s in &segs {
                        prop_assert!(String::from_utf8(reference_decode(s)).is_ok());
                    }
                    if let Some((r, params)) = found {
                        let pat: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
                        for (p, s) in pat.iter().zip(&segs) {
                            if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                                prop_assert_eq!(params[name].as_bytes().to_vec(), reference_decode(s));
                            }
                        }
                    }
                }
            }
        }

        /// Raw segments built from escapes, `%` signs and text (including `%25XX`, which
        /// must come out as `%XX`, not as the byte XX).
        #[test]
        fn escaped_segments_decode_exactly_once(parts in proptest::collection::vec(
            prop_oneof![
                "%[0-9A-Fa-f]{2}",
                "%25[0-9A-Fa-f]{2}",
                "%[g-z]?",
                "[a-z\u{e9}\u{4e2d}]{1,3}",
            ], 1..8)) {
            let raw = parts.concat();
            let routes = probe_routes();
            let path = format!("/a/{raw}");
            match match_route(&routes, "GET", path.as_bytes()) {
                Ok(Some((r, params))) => {
                    prop_assert_eq!(&r.action, "one");
                    prop_assert_eq!(params["x"].as_bytes().to_vec(), reference_decode(raw.as_bytes()));
                }
                Ok(None) => prop_assert!(false, "no match for {}", path),
                Err(_) => prop_assert!(String::from_utf8(reference_decode(raw.as_bytes())).is_err()),
            }
        }

        /// Whatever a parameter is, a client that escapes every byte gets it back as is.
        #[test]
        fn a_fully_escaped_value_comes_back_unchanged(x in any::<String>(), y in any::<String>()) {
            prop_assume!(!x.is_empty() && !y.is_empty());
            let routes = probe_routes();
            let path = format!("/a/{}/b/{}", encode_all(&x), encode_all(&y));
            let (r, params) = match_route(&routes, "GET", path.as_bytes()).unwrap().unwrap();
            prop_assert_eq!(&r.action, "two");
            prop_assert_eq!(&params["x"], &x);
            prop_assert_eq!(&params["y"], &y);
        }
    }
}
