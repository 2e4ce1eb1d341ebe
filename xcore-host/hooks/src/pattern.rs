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

impl Segment {
    /// Whether every single segment `inner` matches, `self` matches too. Neither is `**`
    /// (the sequence walk in [`Pattern::contains`] handles those). Exact for these forms.
    fn contains(&self, inner: &Segment) -> bool {
        match (self, inner) {
            (Segment::DoubleStar, _) | (_, Segment::DoubleStar) => false,
            (Segment::Star, _) => true,
            (Segment::Literal(a), Segment::Literal(b)) => a == b,
            (Segment::Literal(_), _) => false,
            (Segment::Affix { .. }, Segment::Literal(b)) => self.matches(b),
            (Segment::Affix { .. }, Segment::Star) => false,
            // `pre2*suf2` names all start with `pre2` and end with `suf2`, and every
            // continuation of `pre2` occurs: so `pre` must be a prefix of `pre2` (and `suf` a
            // suffix of `suf2`). The length condition then follows.
            (Segment::Affix { prefix, suffix }, Segment::Affix { prefix: p2, suffix: s2 }) => {
                p2.starts_with(prefix.as_str()) && s2.ends_with(suffix.as_str())
            }
        }
    }
}

impl Pattern {
    /// Whether every event name `inner` matches is matched by `self` too: the check for
    /// a permission `events.subscribe:<self>` against a subscription to `inner`.
    ///
    /// Sound: it never answers yes when some name matches `inner` but not `self`. It is
    /// exact except where it would have to reason about a name's minimum length or split
    /// one inner `**` across several outer segments: there it says no although the
    /// answer is yes. The known case is an outer single-segment wildcard standing in for
    /// part of an inner `**`, such as `*.**` or `**.*` against `**` (every name has at
    /// least one segment, so these cover `**`, but `contains` says no). An outer `**`
    /// covers any run of inner segments, `**` included; outer `*` and `pre*suf` cover
    /// one inner segment that they contain as sets; a literal covers only itself.
    pub fn contains(&self, inner: &Pattern) -> bool {
        let (outer, inner) = (&self.segments, &inner.segments);
        // `ok[i][j]`: outer[i..] covers inner[j..]. Filled from the back.
        let (n, m) = (outer.len(), inner.len());
        let mut ok = vec![vec![false; m + 1]; n + 1];
        ok[n][m] = true;
        for i in (0..=n).rev() {
            for j in (0..=m).rev() {
                if i == n {
                    // Nothing left outside: only an empty inner rest is covered.
                    ok[i][j] = j == m;
                    continue;
                }
                ok[i][j] = if outer[i] == Segment::DoubleStar {
                    // Outer `**` covers nothing more (i + 1) or one more inner segment,
                    // whatever it is (j + 1, staying on the same `**`).
                    ok[i + 1][j] || (j < m && ok[i][j + 1])
                } else {
                    j < m && outer[i].contains(&inner[j]) && ok[i + 1][j + 1]
                };
            }
        }
        ok[0][0]
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

    fn c(outer: &str, inner: &str) -> bool {
        Pattern::new(outer).unwrap().contains(&Pattern::new(inner).unwrap())
    }

    #[test]
    fn containment_literal() {
        assert!(c("orders.created", "orders.created"));
        assert!(!c("orders.created", "orders.updated"));
        assert!(!c("orders.created", "orders.*"), "a literal does not cover a wildcard");
        assert!(!c("orders.created", "orders.created.eu"));
        assert!(!c("orders", "orders.**"));
    }

    #[test]
    fn containment_star() {
        assert!(c("orders.*", "orders.created"));
        assert!(c("orders.*", "orders.*"));
        assert!(c("orders.*", "orders.order*"));
        assert!(c("*", "anything"));
        assert!(!c("orders.*", "orders.**"), "`orders.*` must not allow `orders.**`");
        assert!(!c("*", "**"), "`*` must not allow `**`");
        assert!(!c("orders.*", "orders.a.b"));
        assert!(!c("orders.*", "*.created"));
        assert!(!c("*", "a.b"));
    }

    #[test]
    fn containment_double_star() {
        assert!(c("orders.**", "orders.*"));
        assert!(c("orders.**", "orders.a.b"));
        assert!(c("orders.**", "orders"));
        assert!(c("orders.**", "orders.**"));
        assert!(c("orders.**", "orders.*.**"));
        assert!(c("**", "**"));
        assert!(c("**", "a.*.b*"));
        assert!(c("**.eu", "orders.*.eu"));
        assert!(c("a.**.z", "a.b.**.z"));
        assert!(!c("orders.**", "**"));
        assert!(!c("orders.**", "users.*"));
        assert!(!c("**.eu", "orders.**"));
        assert!(!c("a.**.z", "a.**"));
        assert!(!c("orders.*", "orders.**"));
        assert!(!c("orders.*.**", "orders.**"), "`orders.**` matches `orders`, which `orders.*.**` does not");
    }

    #[test]
    fn containment_affix() {
        assert!(c("orders.order*", "orders.order_created"));
        assert!(c("orders.order*", "orders.orders*"));
        assert!(c("orders.order*", "orders.order*"));
        assert!(c("*ed", "pre*ated"));
        assert!(c("pre*ed", "prefix*ed"));
        assert!(!c("orders.order*", "orders.*"), "an affix does not cover `*`");
        assert!(!c("orders.order*", "orders.ord*"), "a shorter prefix is wider");
        assert!(!c("orders.order*", "orders.order*.x"));
        assert!(!c("orders.order*", "orders.**"));
        assert!(!c("*ed", "*e"));
        assert!(!c("pre*ed", "pre*"));
        assert!(!c("orders.x", "orders.x*"), "a literal does not cover an affix");
    }

    #[test]
    fn containment_is_conservative_where_documented() {
        // `*.**` and `**` match the same names (a name has at least one segment), but
        // the check does not reason about that and says no: safe for a permission.
        assert!(!c("*.**", "**"));
        assert!(!c("**.*", "**"));
    }

    mod prop {
        use super::super::Pattern;
        use proptest::prelude::*;

        fn segment() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec!["a", "b", "ab", "ba", "aab"]).prop_map(str::to_owned),
                Just("*".to_owned()),
                Just("**".to_owned()),
                prop::sample::select(vec!["a*", "*b", "a*b", "b*", "*a", "aa*"]).prop_map(str::to_owned),
            ]
        }

        fn pattern() -> impl Strategy<Value = String> {
            prop::collection::vec(segment(), 1..5).prop_map(|s| s.join("."))
        }

        fn name() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(vec!["a", "b", "ab", "ba", "aab", "abb", ""]), 1..7)
                .prop_map(|s| s.join("."))
        }

        /// A name matching `pattern`, each wildcard filled from `choices`.
        fn instance(pattern: &str, choices: &[u8]) -> String {
            const FILL: [&str; 5] = ["a", "b", "ab", "", "ba"];
            let mut pick = choices.iter().copied().cycle();
            let mut next = move || pick.next().unwrap_or(0) as usize;
            let mut parts: Vec<String> = Vec::new();
            for seg in pattern.split('.') {
                match seg {
                    "*" => parts.push(FILL[next() % FILL.len()].to_owned()),
                    "**" => {
                        for _ in 0..next() % 3 {
                            parts.push(FILL[next() % FILL.len()].to_owned());
                        }
                    }
                    s => parts.push(s.replacen('*', FILL[next() % FILL.len()], 1)),
                }
            }
            if parts.is_empty() {
                parts.push(FILL[next() % FILL.len()].to_owned());
            }
            parts.join(".")
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            /// Soundness: whenever `outer` is said to contain `inner`, no name matches
            /// `inner` without matching `outer`.
            #[test]
            fn contains_is_sound(
                outer in pattern(),
                inner in pattern(),
                names in prop::collection::vec(name(), 1..40),
                choices in prop::collection::vec(any::<u8>(), 64),
            ) {
                let (o, i) = (Pattern::new(&outer).unwrap(), Pattern::new(&inner).unwrap());
                if o.contains(&i) {
                    // Random names, and names built to match `inner` (random ones rarely do).
                    let built = (0..8).map(|k| instance(&inner, &choices[k * 8..k * 8 + 8]));
                    for n in names.iter().cloned().chain(built) {
                        prop_assert!(!i.matches(&n) || o.matches(&n), "{outer} contains {inner}, yet {n:?} matches only the inner");
                    }
                }
            }

            /// A pattern contains itself, and `**` contains everything.
            #[test]
            fn contains_is_reflexive(p in pattern()) {
                let p = Pattern::new(&p).unwrap();
                prop_assert!(p.contains(&p));
                prop_assert!(Pattern::new("**").unwrap().contains(&p));
            }
        }
    }
}
