//! What a call carries in and what can go wrong with it.

use std::time::Duration;

use thiserror::Error;

/// Where a call made by an event handler stands in its event chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOrigin {
    /// The depth of the emit whose handler made the call.
    pub depth: u32,
    /// Plugins waiting on that emit (each blocked in its own call until it returns).
    pub chain: Vec<String>,
}

/// A call as the runtime receives it, from HTTP or elsewhere.
#[derive(Debug, Clone)]
pub struct CallInput {
    /// The action name.
    pub action: String,
    /// The JSON payload bytes.
    pub payload: Vec<u8>,
    /// Who asked (`http`, `cli`, ...).
    pub caller: String,
    /// The request id, carried into the plugin and its log lines.
    pub request_id: String,
    /// Set when an event handler makes the call.
    pub origin: Option<CallOrigin>,
}

/// Why a call did not produce a reply. Each variant has a stable code and HTTP status.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum CallFailure {
    /// No plugin of that name.
    #[error("no plugin named '{0}'")]
    UnknownPlugin(String),
    /// The plugin exists but cannot take calls now.
    #[error("plugin '{name}' is {state} and cannot take calls{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Unavailable {
        /// Plugin name.
        name: String,
        /// Its state.
        state: String,
        /// The last error, if any.
        detail: Option<String>,
    },
    /// Over the plugin's rate limit, or over its per-client limit.
    #[error(
        "plugin '{name}' allows {calls} calls per {period_seconds} s{}; retry in {} s",
        if *per_client { " per client (resources.rate_limit.per_client)" } else { " (resources.rate_limit.calls)" },
        retry_after.as_secs_f64().ceil().max(1.0)
    )]
    RateLimited {
        /// Plugin name.
        name: String,
        /// Whether the per-client limit refused it (else the plugin-wide one).
        per_client: bool,
        /// The limit.
        calls: u32,
        /// Its window.
        period_seconds: f64,
        /// When a call will be accepted again.
        retry_after: Duration,
    },
    /// No worker (trusted) or call slot (sandboxed) took the call within the queue
    /// timeout: the plugin is busy. Not a failure of the plugin; nothing is restarted.
    #[error("plugin '{name}' is overloaded: {detail}; retry in {} s", retry_after.as_secs_f64().ceil().max(1.0))]
    Overloaded {
        /// Plugin name.
        name: String,
        /// What was full and for how long.
        detail: String,
        /// A hint for the client (`Retry-After`).
        retry_after: Duration,
    },
    /// The call ran past its deadline; the instance is being replaced.
    #[error("plugin '{name}' did not answer action '{action}' within {timeout_ms} ms")]
    Timeout {
        /// Plugin name.
        name: String,
        /// Action.
        action: String,
        /// The deadline that passed.
        timeout_ms: u64,
    },
    /// The sandbox worker died during the call.
    #[error("plugin '{name}' crashed: the worker {reason}")]
    Crashed {
        /// Plugin name.
        name: String,
        /// Signal name or exit code.
        reason: String,
    },
    /// The call or its reply is over the sandbox frame limit.
    #[error("{0}")]
    TooLarge(String),
    /// The plugin's `data/` folder is over its quota.
    #[error("plugin '{name}' is over its disk quota: {detail}")]
    DiskQuota {
        /// Plugin name.
        name: String,
        /// Usage and quota.
        detail: String,
    },
    /// An event handler's call into a plugin that is itself waiting on the event, with
    /// no free call slot: it would wait for itself.
    #[error(
        "plugin '{name}' is waiting on this event chain and all its {concurrency} call slot(s) are busy: \
         the handler call would wait for itself; raise resources.concurrency or emit without waiting"
    )]
    Reentrant {
        /// Plugin name.
        name: String,
        /// Its concurrency.
        concurrency: u32,
    },
    /// The plugin returned an error (including a caught panic).
    #[error("{message}")]
    Plugin {
        /// The plugin's code.
        code: String,
        /// Its message.
        message: String,
        /// The HTTP status it chose.
        status: u16,
    },
}

impl CallFailure {
    /// The stable error code.
    pub fn code(&self) -> &str {
        match self {
            CallFailure::UnknownPlugin(_) => "unknown_plugin",
            CallFailure::Unavailable { .. } => "unavailable",
            CallFailure::RateLimited { .. } => "rate_limited",
            CallFailure::Overloaded { .. } => "overloaded",
            CallFailure::Timeout { .. } => "timeout",
            CallFailure::Crashed { .. } => "plugin_crashed",
            CallFailure::TooLarge(_) => "payload_too_large",
            CallFailure::DiskQuota { .. } => "disk_quota",
            CallFailure::Reentrant { .. } => "reentrant_call",
            CallFailure::Plugin { code, .. } => code,
        }
    }

    /// When the client may try again (`Retry-After`), for refusals caused by load.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallFailure::RateLimited { retry_after, .. } | CallFailure::Overloaded { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            CallFailure::UnknownPlugin(_) => 404,
            CallFailure::Unavailable { .. } => 503,
            CallFailure::RateLimited { .. } => 429,
            CallFailure::Overloaded { .. } => 503,
            CallFailure::Timeout { .. } => 504,
            CallFailure::Crashed { .. } => 502,
            CallFailure::TooLarge(_) => 413,
            CallFailure::DiskQuota { .. } => 507,
            CallFailure::Reentrant { .. } => 409,
            // A plugin may only choose an error status; anything else would lie to clients.
            CallFailure::Plugin { status, .. } if (400..600).contains(status) => *status,
            CallFailure::Plugin { .. } => 500,
        }
    }
}
