//! What one call inside an instance yields, in either tier: the plugin's reply or its
//! error, or why the instance produced none. Both tiers and [`crate::instance`] use it;
//! it uses neither.

/// The outcome of one call inside the plugin: reply bytes or the plugin's error.
pub type PluginOutcome = Result<Vec<u8>, PluginErrorReply>;

/// An error as the plugin returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginErrorReply {
    /// Stable code.
    pub code: String,
    /// Message.
    pub message: String,
    /// HTTP status the plugin chose.
    pub status: u16,
}

/// Why an instance produced no outcome for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceError {
    /// The call ran past its deadline (counted from when it started); the instance
    /// must be replaced.
    DeadlinePassed,
    /// The call never started: no worker or call slot took it within the queue
    /// timeout, or the queue is full. The detail says which.
    Overloaded(String),
    /// The worker process died (sandboxed); the reason names the signal or exit code.
    Crashed(String),
    /// The call or its reply does not fit the sandbox's frame limit.
    TooLarge(String),
}
