//! The part of the XCore host not yet cut into crates of one job: the runtime
//! ([`runtime`]: loader, both tiers, supervisor, registry), the host services
//! ([`services`]), the scheduler, the configuration ([`config`] aggregates the sections
//! their owners define), metrics, logging, hot reload and plugin builds.
//!
//! Inside it the rules of ARCHITECTURE.md hold module by module (`make lint` checks
//! them): the runtime names no service, and nothing names `config` but the `xcore` binary.
//! The HTTP API (`xcore-api`) sits above it, the `xcore` binary (`xcore-host`) above both.

// The sandboxed tier is built on Linux's seccomp, landlock, pid namespaces and /proc;
// elsewhere it would compile to something that confines nothing.
#[cfg(not(target_os = "linux"))]
compile_error!("XCore runs on Linux only: its sandboxed tier needs seccomp, landlock and /proc");

pub mod config;
mod lenient;
pub mod logging;
pub mod metrics;
pub mod plugin_build;
pub mod runtime;
pub mod scheduler;
pub mod services;
pub mod watcher;
