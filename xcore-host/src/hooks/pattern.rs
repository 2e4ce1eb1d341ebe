//! Glob patterns over dotted event names, compiled once at registration.
//!
//! Grammar: segments separated by `.`, none empty. A segment is
//! - a literal (`plugin`), matching exactly that segment;
//! - `*`, matching exactly one segment (never crosses a dot);
//! - `**`, matching zero or more segments (`a.**` matches `a`, `a.b`, `a.b.c`);
//! - a literal with one `*` inside (`order*`, `*ed`, `pre*ed`), matching one segment with that
//!   prefix and suffix.
//!
//! `?`, `[` and `]` are refused rather than taken literally, because Python `fnmatch` users would
//! expect them to be wildcards.

use std::fmt;

use super::HookError;

/// One compiled segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: any single segment.
    Star,
    /// `**`: any number of segments, including none.
    DoubleStar,
    /// `pre*suf`: one segment starting with `prefix` and ending with `suffix`.
    Affix {
        prefix: String,
        suffix: String,
    },
}

impl Segment {
    fn matches(&self, name: &str) -> bool {
        match self {
            Segment::Literal(lit) => lit == name,
            Segment::Star => true,
            // Only reached through `Pattern::matches`, which handles `**` itself.
            Segment::DoubleStar => true,
            Segment::Affix { prefix, suffix } => {
                name.len() >= prefix.len() + suffix.len()
                    && name.starts_with(prefix)
                    && name.ends_with(suffix)
            }
        }
    }
}

/// A compiled event-name pattern (see the module docs for the grammar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    segments: Vec<Segment>,
    /// Patterns without `**` match only names with the same number of segments: a cheap
    /// pre-check that also lets them skip the dynamic-programming matcher.
    has_double_star: bool,
}

impl Pattern {
    /// Compiles `source`, refusing empty segments, `***`-like runs, `**` glued to text and
    /// unsupported characters.
    pub fn new(source: &str) -> Result<Self, HookError> {
        let invalid = |reason: String| HookError::InvalidPattern { pattern: source.to_owned(), reason };
        if source.is_empty() {
            return Err(invalid("the pattern is empty".into()));
        }
        let mut segments = Vec::new();
        for (i, seg) in source.split('.').enumerate() {
            if seg.is_empty() {
                return Err(invalid(format!(
                    "segment {} is empty (leading, trailing or doubled dot)",
                    i + 1
                )));
            }
            if let Some(c) = seg.chars().find(|c| c.is_whitespace() || c.is_control() || "?[]".contains(*c)) {
                return Err(invalid(format!("unsupported character {c:?} in segment {seg:?}")));
            }
            let stars = seg.matches('*').count();
            let compiled = match (seg, stars) {
                (_, 0) => Segment::Literal(seg.to_owned()),
                ("*", _) => Segment::Star,
                ("**", _) => Segment::DoubleStar,
                (_, 1) => {
                    let (prefix, suffix) = seg.split_once('*').unwrap_or((seg, ""));
                    Segment::Affix { prefix: prefix.to_owned(), suffix: suffix.to_owned() }
                }
                _ => {
                    return Err(invalid(format!(
                        "segment {seg:?}: `**` must be a whole segment and a segment holds at most one `*`"
                    )))
                }
            };
            segments.push(compiled);
        }
        let has_double_star = segments.contains(&Segment::DoubleStar);
        Ok(Pattern { source: source.to_owned(), segments, has_double_star })
    }

    /// The text the pattern was compiled from.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the dotted `event` name matches.
    pub fn matches(&self, event: &str) -> bool {
        let parts: Vec<&str> = event.split('.').collect();
        self.matches_segments(&parts)
    }

    /// Whether an event name already split on `.` matches (the emit path splits once and tests
    /// every subscription).
    pub(crate) fn matches_segments(&self, parts: &[&str]) -> bool {
        if !self.has_double_star {
            return self.segments.len() == parts.len()
                && self.segments.iter().zip(parts).all(|(seg, part)| seg.matches(part));
        }
        // Row-by-row glob DP: `row[j]` says whether the pattern prefix seen so far matches
        // `parts[..j]`. Linear in pattern x name, so several `**` cannot blow up.
        let mut row = vec![false; parts.len() + 1];
        row[0] = true;
        for seg in &self.segments {
            if *seg == Segment::DoubleStar {
                for j in 1..=parts.len() {
                    row[j] = row[j] || row[j - 1];
                }
            } else {
                for j in (1..=parts.len()).rev() {
                    row[j] = row[j - 1] && seg.matches(parts[j - 1]);
                }
                row[0] = false;
            }
        }
        row[parts.len()]
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, event: &str) -> bool {
        Pattern::new(pattern).unwrap().matches(event)
    }

    #[test]
    fn literal_matches_exactly() {
        assert!(m("plugin.loaded", "plugin.loaded"));
        assert!(!m("plugin.loaded", "plugin.loaded.x"));
        assert!(!m("plugin.loaded", "plugin"));
        assert!(!m("plugin.loaded", "plugin.unloaded"));
    }

    #[test]
    fn single_star_is_one_segment() {
        assert!(m("a.*", "a.b"));
        assert!(!m("a.*", "a.b.c"));
        assert!(!m("a.*", "a"));
        assert!(m("*.created.*", "orders.created.eu"));
        assert!(!m("*.created.*", "orders.updated.eu"));
    }

    #[test]
    fn double_star_is_zero_or_more_segments() {
        assert!(m("a.**", "a"));
        assert!(m("a.**", "a.b"));
        assert!(m("a.**", "a.b.c"));
        assert!(!m("a.**", "b.a"));
        assert!(m("**", "anything.at.all"));
        assert!(m("**.eu", "eu"));
        assert!(m("**.eu", "orders.created.eu"));
        assert!(!m("**.eu", "orders.created.us"));
        assert!(m("a.**.z", "a.z"));
        assert!(m("a.**.z", "a.b.c.z"));
        assert!(!m("a.**.z", "a.b.c"));
        assert!(m("**.b.**", "a.b.c"));
        assert!(m("a.**.*", "a.b"));
        assert!(!m("a.**.*", "a"));
    }

    #[test]
    fn affix_wildcard_stays_in_its_segment() {
        assert!(m("orders.order*", "orders.order_created"));
        assert!(m("orders.order*", "orders.order"));
        assert!(!m("orders.order*", "orders.order.created"));
        assert!(m("*ed", "created"));
        assert!(m("pre*ed", "prefixed"));
        assert!(!m("pre*ed", "pred"), "prefix and suffix must not overlap");
    }

    #[test]
    fn invalid_patterns_are_refused_with_a_reason() {
        for bad in ["", ".", "a..b", ".a", "a.", "***", "a.***", "a**", "**b", "a*b*c", "a b", "a.?", "a.[x]"]
        {
            let err = Pattern::new(bad).unwrap_err();
            assert!(matches!(err, HookError::InvalidPattern { .. }), "{bad:?}");
            assert!(err.to_string().contains("invalid pattern"), "{err}");
        }
    }

    #[test]
    fn many_double_stars_stay_linear() {
        let p = Pattern::new("**.**.**.**.**.**.**.**.x").unwrap();
        let name = vec!["y"; 200].join(".");
        assert!(!p.matches(&name));
        assert!(p.matches(&format!("{name}.x")));
    }
}
