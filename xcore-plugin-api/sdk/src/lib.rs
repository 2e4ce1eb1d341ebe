//! The SDK for writing XCore plugins.
//!
//! A plugin is a `cdylib` that depends on this crate alone (no direct abi_stable
//! dependency): [`Plugin`], [`Context`], [`Request`], [`Reply`], [`PluginError`] and the
//! [`export_plugin!`] macro. The types that cross the library boundary live in the ABI
//! crate (`xcore-plugin-api`, imported as `xcore_plugin_abi`) and are not part of this
//! crate's documented surface.
//!
//! # Writing a plugin
//!
//! ```no_run
//! use xcore_plugin_sdk::{export_plugin, Context, Plugin, PluginError, Reply, Request};
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
//! # Panics
//!
//! A panic must never cross the `extern "C"` boundary: abi_stable's guard turns it into
//! `process::exit(1)` of the whole host, and the host's own `catch_unwind` cannot catch
//! it because the plugin carries its own copy of std. The SDK therefore wraps every entry
//! point in `catch_unwind` and turns a panic into an error with code
//! [`codes::PLUGIN_PANIC`]. The host's test `panic_guard_without_it_a_plugin_panic_ends_the_host` (xcore-host/tests/supervision.rs) proves it.
//!
//! # Versions
//!
//! [`SDK_VERSION`] is this crate's version; [`ABI_VERSION`] is the version of the ABI it
//! is built on, the one the host checks (and the one a manifest's `api_version` range
//! names). SDK releases that keep the ABI keep every plugin loadable.

#![warn(missing_docs)]

// The `#[plugin]` expansion names `::xcore_plugin_sdk`, also in this crate's own tests.
extern crate self as xcore_plugin_sdk;

pub mod sdk;
pub mod typed;

pub use sdk::{
    Context, EmitReport, Event, Failure, HandlerResult, LogLevel, Outcome, Plugin, PluginError, Reply,
    Request, RequestMeta, Subscription, SubscriptionId,
};
pub use typed::{Json, Path, Query};
pub use xcore_plugin_abi::{codes, describe, ABI_VERSION};
pub use xcore_plugin_macros::plugin;

/// Re-exported: a typed handler's payload types derive `schemars::JsonSchema` (add
/// `schemars = "1"` to the plugin's dependencies for the derive).
pub use schemars;

/// Re-exported for plugin authors: payloads are JSON by convention.
pub use serde_json;

/// The ABI crate, for the SDK's macros and the test kit; not for plugin code.
#[doc(hidden)]
pub use xcore_plugin_abi as __abi;

/// The version of this SDK.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");
