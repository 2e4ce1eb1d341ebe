//! What the open routes show to whom.
//!
//! The read routes (`/api/v1/plugins`, `/api/v1/state/plugins`, `/api/v1/jobs`, ...) are
//! open so that a load balancer or a status page needs no secret. Without a token they
//! show the *public view*: state, versions, limits, counters, but none of the host's
//! internals or secrets: no folder paths, no pids, no error texts (which carry paths and
//! driver messages), no job payloads, no install sources. A `reader` token (or higher)
//! sees everything. Each JSON object that lost fields says which in `"redacted"`, so a
//! client can tell a hidden value from an absent one.
//!
//! A request that presents a token on a read route must present a valid one: a wrong
//! token is 401, never a silent fall back to the public view.

use actix_web::http::header;
use actix_web::HttpRequest;
use serde_json::Value;

use super::problem::ApiError;
use super::{AppState, Role};
use xcore_runtime::CallFailure;

/// What a hidden error text is replaced with.
pub const HIDDEN: &str = "hidden: a reader token shows it";

/// Who is looking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// No token: secrets and host internals hidden.
    Public,
    /// A reader token or higher: everything.
    Full,
}

impl View {
    /// The view of a read route: no `Authorization` header is the public view; a header
    /// must carry a valid token of the reader role or higher (401 / 403 otherwise).
    pub fn of_read(state: &AppState, req: &HttpRequest) -> Result<View, ApiError> {
        if req.headers().get(header::AUTHORIZATION).is_none() {
            return Ok(View::Public);
        }
        state.tokens.authorize(req, Role::Reader).map(|_| View::Full)
    }

    /// The view of a call's error: a client calling a plugin usually has no host token,
    /// and a header meant for something else must not turn a plugin error into a 401, so
    /// anything but a valid reader token is the public view.
    pub fn of_call(state: &AppState, req: &HttpRequest) -> View {
        if req.headers().get(header::AUTHORIZATION).is_some()
            && state.tokens.authorize(req, Role::Reader).is_ok()
        {
            View::Full
        } else {
            View::Public
        }
    }

    /// Whether this view hides internals.
    pub fn is_public(self) -> bool {
        self == View::Public
    }
}

/// Notes `field` as hidden in `obj["redacted"]`.
fn note(obj: &mut serde_json::Map<String, Value>, field: &str) {
    let list = obj.entry("redacted").or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(a) = list {
        a.push(Value::String(field.to_string()));
    }
}

/// Removes `key` from `obj` if present, noting it.
fn remove(obj: &mut serde_json::Map<String, Value>, key: &str, shown_as: &str) {
    if obj.remove(key).is_some() {
        note(obj, shown_as);
    }
}

/// Replaces a non-null text `key` of `obj` with [`HIDDEN`], noting it.
fn hide_text(obj: &mut serde_json::Map<String, Value>, key: &str, shown_as: &str) {
    if obj.get(key).is_some_and(|v| !v.is_null()) {
        obj.insert(key.to_string(), Value::String(HIDDEN.into()));
        note(obj, shown_as);
    }
}

/// The public view of one plugin of `GET /api/v1/plugins[/{name}]`: no folder, no error
/// text, no worker pid.
pub fn plugin_info(v: &mut Value) {
    let Some(obj) = v.as_object_mut() else { return };
    remove(obj, "dir", "dir");
    hide_text(obj, "last_error", "last_error");
    let had_pid =
        obj.get_mut("sandbox").and_then(Value::as_object_mut).is_some_and(|s| s.remove("pid").is_some());
    if had_pid {
        note(obj, "sandbox.pid");
    }
}

/// The public view of one record of `GET /api/v1/state/plugins`: no install source (a
/// URL or a path of the host's disk).
pub fn plugin_record(v: &mut Value) {
    let Some(obj) = v.as_object_mut() else { return };
    if obj.get("source").is_some_and(|s| !s.is_null()) {
        remove(obj, "source", "source");
    }
}

/// The public view of one job of `GET /api/v1/jobs`: no payload, no error text of its
/// last run.
pub fn job(v: &mut Value) {
    let Some(obj) = v.as_object_mut() else { return };
    remove(obj, "payload", "payload");
    let had_error = obj
        .get_mut("last_run")
        .and_then(Value::as_object_mut)
        .filter(|r| r.get("error").is_some_and(|e| !e.is_null()))
        .map(|r| r.insert("error".into(), Value::String(HIDDEN.into())))
        .is_some();
    if had_error {
        note(obj, "last_run.error");
    }
}

/// The public form of a failed call: the plugin's last error (a load error names paths
/// and carries driver messages) gives way to a pointer at the route that shows it to a
/// reader. What the call itself met stays: a worker's exit (`killed by SIGSEGV`), a
/// deadline, a limit.
pub fn call_failure(f: CallFailure) -> CallFailure {
    match f {
        CallFailure::Unavailable { name, state, detail: Some(_) } => CallFailure::Unavailable {
            detail: Some(format!("{HIDDEN} (GET /api/v1/plugins/{name})")),
            name,
            state,
        },
        other => other,
    }
}

/// The public form of a store failure on a read route: the driver's text is logged, the
/// client learns only that the database is unavailable.
pub fn store_unavailable(view: View, detail: String) -> ApiError {
    if view.is_public() {
        log::warn!(target: "xcore::api", "store unavailable on a read route: {detail}");
        ApiError::new(503, "store_unavailable", format!("the host's database is unavailable; {HIDDEN}"))
    } else {
        ApiError::new(503, "store_unavailable", detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_public_plugin_view_hides_paths_errors_and_pids() {
        let mut v = json!({"name": "x", "dir": "/srv/plugins/x", "last_error": "db at /var/x: boom",
                           "sandbox": {"pid": 42, "alive": true}, "state": "failed"});
        plugin_info(&mut v);
        assert_eq!(
            v,
            json!({"name": "x", "last_error": HIDDEN, "sandbox": {"alive": true}, "state": "failed",
                   "redacted": ["dir", "last_error", "sandbox.pid"]})
        );
        let mut clean = json!({"name": "y", "dir": "plugins/y", "last_error": null, "sandbox": null});
        plugin_info(&mut clean);
        assert_eq!(clean, json!({"name": "y", "last_error": null, "sandbox": null, "redacted": ["dir"]}));
    }

    #[test]
    fn the_public_job_view_hides_payloads_and_errors() {
        let mut v =
            json!({"id": "j", "payload": {"secret": 1}, "last_run": {"outcome": "error", "error": "x"}});
        job(&mut v);
        assert_eq!(
            v,
            json!({"id": "j", "last_run": {"outcome": "error", "error": HIDDEN},
                   "redacted": ["payload", "last_run.error"]})
        );
        let mut r = json!({"name": "p", "source": "https://git.example/p.git"});
        plugin_record(&mut r);
        assert_eq!(r, json!({"name": "p", "redacted": ["source"]}));
    }

    #[test]
    fn a_public_call_failure_names_no_internal_detail() {
        let f = CallFailure::Unavailable {
            name: "p".into(),
            state: "failed".into(),
            detail: Some("/root/x: permission denied".into()),
        };
        let text = call_failure(f).to_string();
        assert!(!text.contains("/root") && text.contains("GET /api/v1/plugins/p"), "{text}");
        let c = CallFailure::Crashed { name: "p".into(), reason: "killed by SIGSEGV".into() };
        assert_eq!(call_failure(c.clone()), c, "what the call met stays");
    }
}
