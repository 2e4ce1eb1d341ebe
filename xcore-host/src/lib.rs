//! The XCore plugin host as a library: everything the `xcore` binary is made of.
//!
//! See ARCHITECTURE.md at the repository root for the bird's-eye view. In short:
//! [`config`] reads `xcore.yaml` (`plugin.yaml` is the `xcore-manifest` crate); [`runtime`] loads and supervises plugins;
//! [`api`] serves the HTTP control API; the `xcore` binary (src/main.rs, src/cli/) is the command line.

// The sandboxed tier is built on Linux's seccomp, landlock, pid namespaces and /proc;
// elsewhere it would compile to something that confines nothing.
#[cfg(not(target_os = "linux"))]
compile_error!("XCore runs on Linux only: its sandboxed tier needs seccomp, landlock and /proc");

pub mod api;
pub mod config;
pub mod docgen;
mod lenient;
pub mod logging;
pub mod logtools;
pub mod metrics;
pub mod plugin_build;
pub mod runtime;
pub mod scheduler;
pub mod services;
pub mod template;
pub mod watcher;
