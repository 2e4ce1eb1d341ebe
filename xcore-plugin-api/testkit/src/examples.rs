//! Running the examples a plugin declares on its actions, and saying how a reply differs.

use std::fmt;

use serde_json::Value;

use crate::record::Failure;

/// The most differences listed per example (`differences` says so in its docs).
const MAX_DIFFERENCES: usize = 20;

/// One example that did not give its reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleMismatch {
    /// The action.
    pub action: String,
    /// The example's name (empty when it has none).
    pub name: String,
    /// The input sent.
    pub input: Value,
    /// The reply it declares.
    pub expected: Value,
    /// What the plugin answered.
    pub actual: Result<Value, Failure>,
    /// Where the two differ, one line each (`$.message: expected "a", got "b"`).
    pub differences: Vec<String>,
}

/// Examples that failed; its `Display` (and `Debug`, so that `.unwrap()` shows it) is a
/// readable report with a diff per example.
#[derive(Clone, PartialEq)]
pub struct ExamplesFailed {
    /// How many examples ran.
    pub ran: usize,
    /// The ones that failed.
    pub failed: Vec<ExampleMismatch>,
}

impl std::error::Error for ExamplesFailed {}

impl fmt::Display for ExamplesFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} of {} example(s) failed", self.failed.len(), self.ran)?;
        for m in &self.failed {
            let name = if m.name.is_empty() { String::new() } else { format!(" \"{}\"", m.name) };
            writeln!(f, "\naction '{}', example{name}", m.action)?;
            writeln!(f, "  input:    {}", m.input)?;
            writeln!(f, "  expected: {}", m.expected)?;
            match &m.actual {
                Ok(v) => writeln!(f, "  actual:   {v}")?,
                Err(e) => writeln!(f, "  actual:   error {e}")?,
            }
            for d in &m.differences {
                writeln!(f, "  - {d}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ExamplesFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The paths where `actual` differs from `expected`, at most 20 (then a line saying how
/// many more).
pub fn differences(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk("$", expected, actual, &mut out);
    if out.len() > MAX_DIFFERENCES {
        let more = out.len() - MAX_DIFFERENCES;
        out.truncate(MAX_DIFFERENCES);
        out.push(format!("... and {more} more"));
    }
    out
}

fn walk(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    // Enough to say that there is more; the report cuts the list.
    if out.len() > MAX_DIFFERENCES {
        return;
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = format!("{path}.{k}");
                match a.get(k) {
                    Some(av) => walk(&p, ev, av, out),
                    None => out.push(format!("{p}: expected {ev}, missing")),
                }
            }
            for (k, av) in a {
                if !e.contains_key(k) {
                    out.push(format!("{path}.{k}: not expected, got {av}"));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                walk(&format!("{path}[{i}]"), ev, av, out);
            }
            if e.len() != a.len() {
                out.push(format!("{path}: expected {} element(s), got {}", e.len(), a.len()));
            }
        }
        (e, a) if e == a => {}
        (e, a) => out.push(format!("{path}: expected {e}, got {a}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_name_each_path() {
        let d = differences(
            &json!({"message": "hello, Ada!", "n": [1, 2], "gone": true}),
            &json!({"message": "hi, Ada!", "n": [1, 3, 4], "extra": null}),
        );
        assert_eq!(
            d,
            vec![
                r#"$.gone: expected true, missing"#.to_string(),
                r#"$.message: expected "hello, Ada!", got "hi, Ada!""#.to_string(),
                "$.n[1]: expected 2, got 3".to_string(),
                "$.n: expected 2 element(s), got 3".to_string(),
                "$.extra: not expected, got null".to_string(),
            ]
        );
        assert!(differences(&json!({"a": [1, {"b": 2}]}), &json!({"a": [1, {"b": 2}]})).is_empty());
    }

    #[test]
    fn long_lists_of_differences_are_cut() {
        let e: Vec<u32> = (0..100).collect();
        let a: Vec<u32> = (1..101).collect();
        let d = differences(&json!(e), &json!(a));
        assert_eq!(d.len(), MAX_DIFFERENCES + 1);
        assert!(d.last().unwrap().starts_with("... and "), "{d:?}");
    }
}
