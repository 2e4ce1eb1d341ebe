//! Stable error codes shared by plugins, the host and HTTP clients.
//!
//! The host maps each code to an HTTP status; a plugin may also invent its own codes and
//! pick their status through the SDK's `PluginError::with_status`.

/// The plugin does not know the requested action (HTTP 404).
pub const UNKNOWN_ACTION: &str = "unknown_action";
/// The payload is not what the action expects (HTTP 400).
pub const INVALID_PAYLOAD: &str = "invalid_payload";
/// A panic inside the plugin was caught at the boundary (HTTP 500).
pub const PLUGIN_PANIC: &str = "plugin_panic";
/// A generic failure inside the plugin (HTTP 500).
pub const INTERNAL: &str = "internal";
/// Something the caller asked for does not exist (HTTP 404).
pub const NOT_FOUND: &str = "not_found";
/// A host service was asked for something it does not offer (HTTP 501).
pub const UNSUPPORTED: &str = "unsupported";
/// A plugin answered bytes that are not JSON; the host refuses to serve them as JSON
/// (HTTP 502).
pub const INVALID_REPLY: &str = "invalid_reply";
/// A host service answered in a shape this SDK does not know: the host and the SDK speak
/// different versions of a service (HTTP 502).
pub const INVALID_HOST_REPLY: &str = "invalid_host_reply";
/// An I/O operation of the plugin failed (HTTP 500).
pub const IO_ERROR: &str = "io_error";
