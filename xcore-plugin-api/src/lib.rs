//! The contract between the XCore host and its plugins.
//!
//! Two layers live here, kept apart on purpose (as wasmtime keeps its ABI crate apart
//! from its runtime):
//!
//! - [`ffi`]: the ABI-stable types that cross the dynamic-library boundary: the root
//!   module a plugin exports, the plugin object the host calls, and the host object the
//!   plugin calls back. Everything there is `#[repr(C)]` + [`abi_stable::StableAbi`], so
//!   the host checks the layout of every type when it loads a library.
//! - [`sdk`]: the safe API a plugin author writes against: [`Plugin`], [`Context`],
//!   [`Request`], [`Reply`], [`PluginError`] and the [`export_plugin!`] macro.
//!
//! # Writing a plugin
//!
//! ```no_run
//! use xcore_plugin_api::{export_plugin, Context, Plugin, PluginError, Reply, Request};
//!
//! #[derive(Default)]
//! struct Echo;
//!
//! impl Plugin for Echo {
//!     fn new(_ctx: &Context) -> Result<Self, PluginError> { Ok(Echo) }
//!     fn call(&self, ctx: &Context, req: Request<'_>) -> Result<Reply, PluginError> {
//!         match req.action() {
//!             "echo" => Reply::json(&req.json::<serde_json::Value>()?),
//!             other => Err(PluginError::unknown_action(other)),
//!         }
//!     }
//! }
//!
//! export_plugin!(Echo);
//! ```
//!
//! The plugin crate is a `cdylib` that depends on `xcore-plugin-api` and `abi_stable`
//! (the export macro expands to abi_stable's `#[export_root_module]`, which names
//! `::abi_stable` directly).
//!
//! # Panics
//!
//! A panic must never cross the `extern "C"` boundary: abi_stable's guard turns it into
//! `process::exit(1)` of the whole host, and the host's own `catch_unwind` cannot catch
//! it because the plugin carries its own copy of std. The SDK therefore wraps every entry
//! point in `catch_unwind` and turns a panic into an error with code
//! [`codes::PLUGIN_PANIC`]. The host's test `panic_guard_without_it_a_plugin_panic_ends_the_host` (xcore-host/tests/supervision.rs) proves it.
//!
//! # Versioning
//!
//! [`API_VERSION`] is this crate's semver version. A plugin reports the version it was
//! compiled against through its root module, its manifest declares a semver range in
//! `api_version`, and abi_stable checks the layout of every type at load. The host
//! refuses a plugin when any of the three disagree. Rules for evolving the contract:
//! never add a method to a `#[sabi_trait]` (older plugins would stop loading); append
//! new functions to the root module after its last prefix field instead, and route new
//! host services through [`ffi::HostObject::call_host`].

#![warn(missing_docs)]

pub mod codes;
pub mod ffi;
pub mod sdk;

pub use sdk::{
    Context, EmitReport, Event, Failure, HandlerResult, LogLevel, Outcome, Plugin, PluginError, Reply,
    Request, RequestMeta, Subscription, SubscriptionId,
};

/// Re-exported so that plugin crates and the export macro use the exact same version.
pub use abi_stable;
/// Re-exported for plugin authors: payloads are JSON by convention.
pub use serde_json;

/// The semver version of this contract crate. A plugin compiled against an incompatible
/// version is refused by the host.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Whether a plugin compiled against `plugin` can be loaded by a host built against
/// `host`, by Cargo's compatibility rule: same major, and for 0.x the same minor.
pub fn api_compatible(host: &str, plugin: &str) -> bool {
    fn parts(v: &str) -> Option<(u64, u64)> {
        let mut it = v.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        Some((major, minor))
    }
    match (parts(host), parts(plugin)) {
        (Some((0, hmin)), Some((0, pmin))) => hmin == pmin,
        (Some((hmaj, _)), Some((pmaj, _))) => hmaj == pmaj,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatibility_follows_cargo_rules() {
        assert!(api_compatible("0.1.0", "0.1.7"));
        assert!(!api_compatible("0.1.0", "0.2.0"));
        assert!(api_compatible("1.2.0", "1.0.3"));
        assert!(!api_compatible("1.0.0", "2.0.0"));
        assert!(!api_compatible("1.0.0", "garbage"));
    }
}
