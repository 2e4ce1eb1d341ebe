//! One running instance of a plugin, in either tier, behind one interface.

use std::sync::Arc;
use std::time::Duration;

use xcore_plugin_abi::describe::PluginDescription;

use super::call::CallInput;
use super::sandbox::SandboxInstance;
use super::trusted::instance::TrustedInstance;

pub use super::outcome::{InstanceError, PluginErrorReply, PluginOutcome};

/// A plugin instance of either tier.
pub enum Instance {
    /// In the host process.
    Trusted(TrustedInstance),
    /// In a worker process.
    Sandboxed(SandboxInstance),
}

impl Instance {
    /// Runs one call: it waits at most `queue_timeout` for a worker (trusted) or a call
    /// slot (sandboxed), then runs under `timeout` (`None`: no deadline), counted from
    /// when it started.
    pub async fn call(
        &self,
        input: CallInput,
        timeout: Option<Duration>,
        queue_timeout: Duration,
    ) -> Result<PluginOutcome, InstanceError> {
        match self {
            Instance::Trusted(i) => i.call(input, timeout, queue_timeout).await,
            Instance::Sandboxed(i) => i.call(input, timeout, queue_timeout).await,
        }
    }

    /// Whether the instance runs in the host process.
    pub fn is_trusted(&self) -> bool {
        matches!(self, Instance::Trusted(_))
    }

    /// Which instance of the plugin this is.
    pub fn generation(&self) -> u64 {
        match self {
            Instance::Trusted(i) => i.generation,
            Instance::Sandboxed(i) => i.generation,
        }
    }

    /// The contract version the library was compiled against.
    pub fn api_version(&self) -> &str {
        match self {
            Instance::Trusted(i) => i.api_version,
            Instance::Sandboxed(i) => &i.api_version,
        }
    }

    /// What the plugin says about itself (its action table), when it says anything.
    pub fn description(&self) -> Option<&Arc<PluginDescription>> {
        match self {
            Instance::Trusted(i) => i.description.as_ref(),
            Instance::Sandboxed(i) => i.description.as_ref(),
        }
    }

    /// A probe that turns true once the instance has finished (its threads or process
    /// are gone), usable after the instance is dropped.
    pub fn finished_probe(&self) -> Box<dyn Fn() -> bool + Send + Sync> {
        match self {
            Instance::Trusted(i) => {
                let workers = i.live_workers_handle();
                Box::new(move || workers.load(std::sync::atomic::Ordering::SeqCst) == 0)
            }
            Instance::Sandboxed(i) => Box::new(i.finished_probe()),
        }
    }

    /// Process details of a sandboxed instance.
    pub fn sandbox_status(&self) -> Option<serde_json::Value> {
        match self {
            Instance::Trusted(_) => None,
            Instance::Sandboxed(i) => Some(serde_json::json!({
                "pid": i.pid(),
                "alive": i.is_alive(),
                "rss_bytes": i.rss_bytes(),
                "fs_isolation": i.fs_isolation,
                "seccomp_sockets_denied": i.seccomp,
                "start_time_ms": i.start_time.as_secs_f64() * 1e3,
            })),
        }
    }
}
