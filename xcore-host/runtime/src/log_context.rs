//! The log context of a thread: the plugin it works for and the request it serves, as
//! MDC fields that the JSON log encoder writes on every line (`plugin`, `request_id`).

/// Marks the current thread as working for `plugin` (every log line it writes says so).
pub fn set_thread_plugin(plugin: &str) {
    log_mdc::insert("plugin", plugin);
}

/// Runs `f` with `plugin` and `request_id` in the log context, restoring the previous
/// values afterwards.
pub fn with_call_context<R>(plugin: &str, request_id: &str, f: impl FnOnce() -> R) -> R {
    let prev_plugin = log_mdc::get("plugin", |v| v.map(str::to_string));
    let prev_rid = log_mdc::get("request_id", |v| v.map(str::to_string));
    log_mdc::insert("plugin", plugin);
    if !request_id.is_empty() {
        log_mdc::insert("request_id", request_id);
    }
    let r = f();
    match prev_plugin {
        Some(p) => log_mdc::insert("plugin", p),
        None => log_mdc::remove("plugin"),
    };
    match prev_rid {
        Some(p) => log_mdc::insert("request_id", p),
        None => log_mdc::remove("request_id"),
    };
    r
}
