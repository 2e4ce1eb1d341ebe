//! The plugin runtime: loading, calling and supervising plugin instances.
//!
//! It names no service. What plugins ask of the host arrives at a [`HostCalls`] trait
//! object, what the host keeps for a plugin outside its instance (its recorded state,
//! databases, jobs, stored bytes) behind [`PluginResources`]; the composition root
//! builds both (the host's are `xcore-services`' `Services`) and hands them to
//! [`PluginRegistry::new`], which in turn gives them the registry as a [`PluginCalls`]:
//! the one way services reach plugins.
//!
//! - [`registry`]: name -> [`registry::PluginSlot`]; discovery, load order, load, unload,
//!   reload, reset, and the call entry point the HTTP layer uses.
//! - [`supervisor`]: the restart policy (exponential backoff, restart intensity) and
//!   the plugin state machine.
//! - [`instance`]: one running instance of either tier behind one interface.
//! - [`outcome`]: what a call inside an instance yields (reply, plugin error, or why none).
//! - [`trusted`]: the in-process tier: the library loader and the persistent worker
//!   threads that run calls under a deadline.
//! - [`sandbox`]: the sandboxed tier: the same library in a supervised, confined child
//!   process.
//! - [`host_work`]: the runtime the host's own async work runs on (restarts, emits,
//!   the host's calls into plugins, Redis I/O, watcher syncs), one thread on purpose.
//! - [`host_services`]: the [`xcore_plugin_abi::ffi::HostObject`] the host hands to
//!   every plugin instance.
//! - [`load_failure`]: why a load failed, by kind, each with its own problem code.
//! - [`rate_limit`]: the per-plugin sliding-window limiter.
//! - [`metrics`]: the host's Prometheus series (plugins, HTTP, host services, databases).
//! - [`log_context`]: the plugin and request id a log line is written under.
//! - the deadline of the call a thread serves, for host services that wait, is the
//!   `xcore-deadline` crate (the runtime sets it, the database pool reads it).

// The sandboxed tier is built on Linux's seccomp, landlock, pid namespaces and /proc;
// elsewhere it would compile to something that confines nothing.
#[cfg(not(target_os = "linux"))]
compile_error!("XCore runs on Linux only: its sandboxed tier needs seccomp, landlock and /proc");

pub mod call;
pub mod contract;
pub mod host_services;
pub mod host_work;
pub mod instance;
pub mod line_budget;
pub mod load_failure;
pub mod log_context;
pub mod metrics;
pub mod outcome;
pub mod plugin_calls;
pub mod rate_limit;
pub mod registry;
pub mod resources;
pub mod sandbox;
mod spin;
pub mod supervisor;
pub mod trusted;

pub use call::{CallFailure, CallInput, CallOrigin};
pub use host_services::HostCalls;
pub use load_failure::{LoadFailure, LoadKind};
pub use plugin_calls::PluginCalls;
pub use registry::{PluginRegistry, RegistryError};
pub use resources::{PluginResources, ResourceError};
pub use supervisor::PluginState;
