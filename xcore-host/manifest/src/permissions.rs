//! Permissions: what a plugin's manifest asks for, what the operator grants, and the
//! checks of the effective ones: deny by default. (The host's services turn a denial
//! into an error that names the permission to add.)
//!
//! A permission is `kind` (everything of that kind) or `kind:<pattern>` (subjects
//! matching the event pattern, with the hooks' `*` / `**` rules). For a subscription
//! the subject is itself a pattern and the check is containment, not a match
//! ([`Pattern::contains`]): `events.subscribe:orders.**` allows subscribing to
//! `orders.created` and to `orders.*`; `events.subscribe:orders.*` does not allow
//! `orders.**`, and `events.subscribe:*` does not allow `**`.
//!
//! The permissions checked here are a plugin's *effective* ones: what its manifest asks
//! for and the operator granted ([`effective`]): `plugins.grants.<name>` in xcore.yaml,
//! or a valid signature by a trusted key, which approves the signed manifest whole.

use xcore_hooks::Pattern;

/// Whether `permissions` grant `kind` on `subject`.
pub fn allowed(permissions: &[String], kind: &str, subject: &str) -> bool {
    permissions.iter().any(|p| {
        if p == kind {
            return true;
        }
        p.strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix(':'))
            .and_then(|pattern| Pattern::new(pattern).ok())
            .is_some_and(|pattern| {
                if kind == SUBSCRIBE {
                    Pattern::new(subject).is_ok_and(|wanted| pattern.contains(&wanted))
                } else {
                    pattern.matches(subject)
                }
            })
    })
}

/// The permission kind whose subject is a pattern, checked by containment.
const SUBSCRIBE: &str = "events.subscribe";

/// The kinds whose subject is an event or plugin name pattern.
const PATTERN_KINDS: [&str; 3] = ["events.emit", SUBSCRIBE, "call"];

/// Where a granted permission came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantSource {
    /// A valid signature by a trusted key over the manifest.
    Signature,
    /// `plugins.grants.<name>` in xcore.yaml.
    Config,
}

/// A plugin's permissions: asked for, granted (and by whom), and in effect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// The manifest's `permissions`.
    pub requested: Vec<String>,
    /// What the operator allows, each with its source.
    pub granted: Vec<(String, GrantSource)>,
    /// Requested and granted: what the host checks.
    pub effective: Vec<String>,
}

impl Grants {
    /// The JSON view (`GET /api/v1/plugins/{name}`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "requested": self.requested,
            "granted": self.granted.iter()
                .map(|(p, src)| serde_json::json!({ "permission": p, "source": src }))
                .collect::<Vec<_>>(),
            "effective": self.effective,
            "denied": self.requested.iter().filter(|p| !self.effective.contains(p)).collect::<Vec<_>>(),
        })
    }
}

/// Whether the permission `outer` allows everything `inner` allows.
pub fn covers(outer: &str, inner: &str) -> bool {
    if outer == inner {
        return true;
    }
    // A bare kind (`db`, `events.emit`) or a `db:<name>` covers its refinements.
    if inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with(':')) {
        return true;
    }
    let (Some((ok, os)), Some((ik, is))) = (outer.split_once(':'), inner.split_once(':')) else {
        return false;
    };
    if ok != ik {
        return false;
    }
    if PATTERN_KINDS.contains(&ok) {
        return match (Pattern::new(os), Pattern::new(is)) {
            (Ok(o), Ok(i)) => o.contains(&i),
            _ => false,
        };
    }
    if ok == "db" {
        // `db:<database>[:read|:write]`; `*` is every database, no mode is read and write.
        let (odb, omode) = os.split_once(':').unwrap_or((os, ""));
        let (idb, imode) = is.split_once(':').unwrap_or((is, ""));
        let db_ok = odb == "*" || odb == idb;
        let mode_ok = matches!(omode, "" | "write") || omode == imode;
        return db_ok && mode_ok;
    }
    false
}

/// The effective permissions of a plugin whose manifest asks for `requested`: all of
/// them when `signed` (a trusted signature approved the manifest), otherwise each
/// requested permission that a `configured` grant covers, or the narrower grant where
/// the request is wider (`events.subscribe:**` asked, `events.subscribe:orders.*`
/// granted: the latter is in effect).
pub fn effective(requested: &[String], signed: bool, configured: &[String]) -> Grants {
    let mut granted: Vec<(String, GrantSource)> = Vec::new();
    if signed {
        granted.extend(requested.iter().map(|p| (p.clone(), GrantSource::Signature)));
    }
    for g in configured {
        if !granted.iter().any(|(p, _)| p == g) {
            granted.push((g.clone(), GrantSource::Config));
        }
    }
    let mut effective: Vec<String> = Vec::new();
    let mut add = |p: &str| {
        if !effective.iter().any(|e| e == p) {
            effective.push(p.to_owned());
        }
    };
    for r in requested {
        if granted.iter().any(|(g, _)| covers(g, r)) {
            add(r);
            continue;
        }
        for (g, _) in &granted {
            if covers(r, g) {
                add(g);
            }
        }
    }
    Grants { requested: requested.to_vec(), granted, effective }
}

/// What `permissions` grant on `database`: (read, write).
pub fn db_access(permissions: &[String], database: &str) -> (bool, bool) {
    let mut read = false;
    let mut write = false;
    for p in permissions {
        let Some(rest) = p.strip_prefix("db") else { continue };
        match rest {
            "" => (read, write) = (true, true),
            r => match r.strip_prefix(':').map(|r| r.split_once(':').unwrap_or((r, ""))) {
                Some((db, "" | "write")) if db == database || db == "*" => (read, write) = (true, true),
                Some((db, "read")) if db == database || db == "*" => read = true,
                _ => {}
            },
        }
    }
    (read, write)
}

/// Where a missing permission is granted: the manifest asks, the operator allows.
pub fn where_to_grant(plugin: &str, permission: &str) -> String {
    format!(
        "permission '{permission}' is not in effect; it must be in 'permissions' of its plugin.yaml and \
         granted by the operator: add it to plugins.grants.{plugin} in xcore.yaml, or sign the plugin with \
         a trusted key"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn deny_by_default_and_patterns_narrow() {
        assert!(!allowed(&[], "events.emit", "a.b"));
        assert!(allowed(&perms(&["events.emit"]), "events.emit", "anything.at.all"));
        let p = perms(&["events.emit:orders.*"]);
        assert!(allowed(&p, "events.emit", "orders.created"));
        assert!(!allowed(&p, "events.emit", "orders.created.eu"));
        assert!(!allowed(&p, "events.emit", "users.created"));
        assert!(!allowed(&p, "events.subscribe", "orders.created"), "kinds do not leak");
        assert!(!allowed(&perms(&["events.emitter"]), "events.emit", "x"));
        assert!(allowed(&perms(&["events.subscribe:orders.**"]), "events.subscribe", "orders.*"));
    }

    #[test]
    fn subscribe_is_containment_emit_is_a_match() {
        let sub = |p: &str, wanted: &str| allowed(&perms(&[p]), "events.subscribe", wanted);
        assert!(!sub("events.subscribe:orders.*", "orders.**"));
        assert!(!sub("events.subscribe:*", "**"));
        assert!(sub("events.subscribe:orders.**", "orders.a.b"));
        assert!(sub("events.subscribe:order*", "orders"));
        assert!(!sub("events.subscribe:order*", "*"));
        assert!(!sub("events.subscribe:orders.*", "orders.[x]"), "an invalid pattern is refused");
        assert!(sub("events.subscribe", "**"), "the bare kind allows every pattern");
        // An emitted name is a literal: `*` in it is just text matched by the pattern.
        assert!(allowed(&perms(&["events.emit:orders.*"]), "events.emit", "orders.x"));
    }

    #[test]
    fn covers_refinements() {
        assert!(covers("kv", "kv"));
        assert!(!covers("kv", "cache"));
        assert!(covers("db", "db:bookmarks"));
        assert!(covers("db:bookmarks", "db:bookmarks:read"));
        assert!(covers("db:*", "db:bookmarks:write"));
        assert!(covers("db:bookmarks:write", "db:bookmarks"));
        assert!(!covers("db:bookmarks:read", "db:bookmarks"));
        assert!(!covers("db:bookmarks", "db:default"));
        assert!(covers("events.subscribe:orders.**", "events.subscribe:orders.*"));
        assert!(!covers("events.subscribe:orders.*", "events.subscribe:orders.**"));
        assert!(covers("events.emit", "events.emit:orders.created"));
        assert!(!covers("events.emit:orders.*", "events.subscribe:orders.*"));
        assert!(!covers("kvx", "kv"));
    }

    #[test]
    fn effective_is_the_intersection() {
        let asked = perms(&["kv", "cache", "db:bookmarks", "events.subscribe:**", "network"]);
        let unsigned =
            effective(&asked, false, &perms(&["kv", "db", "events.subscribe:orders.*", "scheduler"]));
        assert_eq!(unsigned.effective, perms(&["kv", "db:bookmarks", "events.subscribe:orders.*"]));
        assert!(unsigned.granted.iter().all(|(_, s)| *s == GrantSource::Config));
        let none = effective(&asked, false, &[]);
        assert!(none.effective.is_empty());
        let signed = effective(&asked, true, &[]);
        assert_eq!(signed.effective, asked);
        assert!(signed.granted.iter().all(|(_, s)| *s == GrantSource::Signature));
        let json = unsigned.to_json();
        assert_eq!(json["denied"], serde_json::json!(["cache", "events.subscribe:**", "network"]));
        assert_eq!(json["granted"][0], serde_json::json!({"permission": "kv", "source": "config"}));
    }

    #[test]
    fn database_permissions() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(db_access(&[], "default"), (false, false));
        assert_eq!(db_access(&p(&["db"]), "anything"), (true, true));
        assert_eq!(db_access(&p(&["db:default"]), "default"), (true, true));
        assert_eq!(db_access(&p(&["db:default"]), "reports"), (false, false));
        assert_eq!(db_access(&p(&["db:reports:read"]), "reports"), (true, false));
        assert_eq!(db_access(&p(&["dbx", "db:reports:admin"]), "reports"), (false, false));
        assert_eq!(db_access(&p(&["db:reports:write"]), "reports"), (true, true));
        assert_eq!(db_access(&p(&["db:*:read", "db:app"]), "app"), (true, true));
    }
}
