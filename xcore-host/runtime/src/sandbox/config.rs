//! The `sandbox` section of `xcore.yaml`: settings of the sandboxed tier's worker processes.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use xcore_manifest::lenient;

/// `sandbox.user` names no user this host knows, or is not `uid:gid`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("(configuration): sandbox.user: {0}")]
pub struct UserError(String);

/// Settings of the sandboxed tier's worker processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxConfig {
    /// Largest protocol frame between host and worker, in bytes (default 16 MiB). A
    /// call whose payload or reply does not fit fails with `payload_too_large`.
    #[serde(deserialize_with = "lenient::parse")]
    pub max_frame_bytes: usize,
    /// How long a new worker may take to load its plugin and say hello (default 10 s).
    #[serde(deserialize_with = "lenient::parse")]
    pub startup_timeout_ms: u64,
    /// Between SIGTERM and SIGKILL when a worker is stopped (default 200 ms).
    #[serde(deserialize_with = "lenient::parse")]
    pub kill_grace_ms: u64,
    /// The user workers run as: a name from `/etc/passwd`, a uid, or `uid:gid`
    /// (default: the host's own user). Changing user needs a host run as root.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub user: Option<String>,
    /// Host-service requests one worker may have in flight (default 32; never less than
    /// the plugin's `concurrency` + 1). Past it a request is refused with `overloaded`.
    #[serde(deserialize_with = "lenient::parse")]
    pub max_host_calls_in_flight: usize,
    /// Longest line of a sandboxed plugin's output (stdout, stderr, log) forwarded to the
    /// log, in bytes (default 16 KiB); the rest of the line is dropped and counted.
    #[serde(deserialize_with = "lenient::parse")]
    pub log_line_max_bytes: usize,
    /// Lines of output per second one worker may send to the log (default 200, with a
    /// burst of as many); the excess is dropped and counted.
    #[serde(deserialize_with = "lenient::parse")]
    pub log_lines_per_second: u32,
    /// A write to a worker that makes no progress for this long kills it: it stopped
    /// reading its requests (default 5000 ms).
    #[serde(deserialize_with = "lenient::parse")]
    pub write_timeout_ms: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            max_frame_bytes: 16 << 20,
            startup_timeout_ms: 10_000,
            kill_grace_ms: 200,
            max_host_calls_in_flight: 32,
            log_line_max_bytes: 16 << 10,
            log_lines_per_second: 200,
            write_timeout_ms: 5_000,
            user: None,
        }
    }
}

impl SandboxConfig {
    /// `user` as (uid, gid): `uid:gid`, a uid (its group from `/etc/passwd`, else the
    /// same number), or a name from `/etc/passwd`.
    pub fn resolve_user(&self) -> Result<Option<(u32, u32)>, UserError> {
        let Some(user) = self.user.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let invalid = UserError;
        if let Some((u, g)) = user.split_once(':') {
            return match (u.parse(), g.parse()) {
                (Ok(u), Ok(g)) => Ok(Some((u, g))),
                _ => Err(invalid(format!("'{user}' is not uid:gid"))),
            };
        }
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let entry = |l: &str| -> Option<(String, u32, u32)> {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
        };
        let entries: Vec<_> = passwd.lines().filter_map(entry).collect();
        if let Ok(uid) = user.parse::<u32>() {
            let gid = entries.iter().find(|e| e.1 == uid).map_or(uid, |e| e.2);
            return Ok(Some((uid, gid)));
        }
        entries
            .iter()
            .find(|e| e.0 == user)
            .map(|e| Some((e.1, e.2)))
            .ok_or_else(|| invalid(format!("no user '{user}' in /etc/passwd")))
    }
}
