//! The sandboxed tier: the same plugin library, in a child process of its own.
//!
//! The host re-executes `xcore` in a hidden worker mode ([`worker`]); the worker loads
//! the library with the trusted tier's loader, confines itself ([`confine`]: rlimits,
//! landlock, seccomp) and serves calls over two sockets, fds 3 and 4 ([`protocol`]). The host
//! side ([`instance`]) spawns workers from one long-lived thread ([`spawner`]), watches
//! them, kills them on a deadline, and reports deaths at once. [`os`] holds the system
//! calls (the module's only `unsafe`). docs/sandbox.md says what this protects against
//! and what it does not.

pub mod config;
pub mod confine;
pub mod disk;
pub mod instance;
pub mod os;
pub mod protocol;
pub mod spawner;
pub mod worker;

pub use instance::{SandboxInstance, SandboxOptions};
