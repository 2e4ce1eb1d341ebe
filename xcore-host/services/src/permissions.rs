//! Permission checks of the host services: the rules are `xcore_manifest::permissions`
//! (deny by default, `kind` or `kind:<pattern>`, effective = requested and granted);
//! here a denial becomes a 403 that names the permission to add.

use xcore_manifest::permissions::{allowed, where_to_grant};

/// Checks a permission granted by its bare name (`kv`, `cache`, `scheduler`); the
/// denial says what the plugin tried (`what`) and the permission to add.
pub fn require(caller: &super::Caller, kind: &str, what: &str) -> Result<(), super::ServiceError> {
    if allowed(&caller.permissions, kind, "*") {
        return Ok(());
    }
    Err(super::ServiceError::new(
        "permission_denied",
        403,
        format!("plugin '{}' may not {what}: {}", caller.plugin, where_to_grant(&caller.plugin, kind)),
    ))
}

/// The error for a denial.
pub fn denied(plugin: &str, kind: &str, subject: &str) -> super::ServiceError {
    super::ServiceError::new(
        "permission_denied",
        403,
        format!(
            "plugin '{plugin}' may not use {kind} on '{subject}': {} (or '{kind}' for everything)",
            where_to_grant(plugin, &format!("{kind}:{subject}"))
        ),
    )
}
