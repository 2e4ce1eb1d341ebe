//! Permission checks: deny by default; a denial names the permission to add.
//!
//! A manifest grants `kind` (everything of that kind) or `kind:<pattern>` (subjects
//! matching the event pattern, with the hooks' `*` / `**` rules). For a subscription
//! the subject is the requested pattern, read as a name: `events.subscribe:orders.**`
//! allows subscribing to `orders.created` and to `orders.*`.

use crate::hooks::Pattern;

/// Whether `permissions` grant `kind` on `subject`.
pub fn allowed(permissions: &[String], kind: &str, subject: &str) -> bool {
    permissions.iter().any(|p| {
        if p == kind {
            return true;
        }
        p.strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix(':'))
            .and_then(|pattern| Pattern::new(pattern).ok())
            .is_some_and(|pattern| pattern.matches(subject))
    })
}

/// Checks a permission granted by its bare name (`kv`, `cache`, `scheduler`); the
/// denial says what the plugin tried (`what`) and the permission to add.
pub fn require(caller: &super::Caller, kind: &str, what: &str) -> Result<(), super::ServiceError> {
    if allowed(&caller.permissions, kind, "*") {
        return Ok(());
    }
    Err(super::ServiceError::new(
        "permission_denied",
        403,
        format!("plugin '{}' may not {what}: add '{kind}' to permissions in its plugin.yaml", caller.plugin),
    ))
}

/// The error for a denial.
pub fn denied(plugin: &str, kind: &str, subject: &str) -> super::ServiceError {
    super::ServiceError::new(
        "permission_denied",
        403,
        format!(
            "plugin '{plugin}' may not use {kind} on '{subject}': add '{kind}:{subject}' (or '{kind}' for \
             everything) to permissions in its plugin.yaml"
        ),
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
}
