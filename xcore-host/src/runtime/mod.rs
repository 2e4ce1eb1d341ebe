//! The plugin runtime: loading, calling and supervising plugin instances.
//!
//! - [`registry`]: name -> [`registry::PluginSlot`]; discovery, load order, load, unload,
//!   reload, reset, and the call entry point the HTTP layer uses.
//! - [`supervisor`]: the restart policy (exponential backoff, restart intensity) and
//!   the plugin state machine.
//! - [`trusted`]: the in-process tier: the library loader (the only `unsafe` here) and
//!   the persistent worker threads that run calls under a deadline.
//! - [`host_services`]: the [`xcore_plugin_api::ffi::HostObject`] the host hands to
//!   every plugin instance.
//! - [`rate_limit`]: the per-plugin sliding-window limiter.

pub mod call;
pub mod host_services;
pub mod rate_limit;
pub mod registry;
pub mod supervisor;
pub mod trusted;

pub use call::{CallFailure, CallInput};
pub use registry::{PluginRegistry, RegistryError};
pub use supervisor::PluginState;
