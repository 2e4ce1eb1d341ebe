//! The host-work runtime: the tokio runtime the host's own async work runs on, apart from
//! the HTTP workers.
//!
//! What runs on it: restarts and their backoff timers, detached emits (`plugin.loaded`,
//! ...), every call the host itself makes into a plugin (event handlers, cron jobs,
//! plugin-to-plugin calls), the cache's Redis I/O, and the watcher's syncs. A plugin's
//! thread that waits for one of these (an emit, a call to another plugin, a cache
//! request) blocks on this runtime's handle.
//!
//! Sized on purpose: [`WORKER_THREADS`] = 1. That work only waits (on plugins, on Redis,
//! on timers), so one thread keeps up; more would compete with the HTTP workers for the
//! cores under load, which is when restarts and emits matter most. Anything that blocks
//! goes to the runtime's blocking pool, never onto the worker thread. The composition root
//! builds it first, so that the services which must live on it (the cache) exist before
//! the registry.

/// The runtime's async worker threads.
pub const WORKER_THREADS: usize = 1;

/// The name of its threads (`top -H`, `/proc/<pid>/task/*/comm`).
pub const THREAD_NAME: &str = "xcore-host-work";

/// Builds the host-work runtime.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name(THREAD_NAME)
        .enable_all()
        .build()
}
