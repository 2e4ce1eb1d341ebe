//! [`PluginCalls`]: how the host's services reach plugins. The registry implements it;
//! services hold it weakly (instances hold services, so a strong handle would keep the
//! registry alive), and a test of a service can implement it without any plugin.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use xcore_hooks::{HandlerId, HookError};

use crate::call::{CallFailure, CallInput, CallOrigin};

/// A subscription of a plugin's action to events (`events.subscribe`).
#[derive(Debug, Clone)]
pub struct ActionSubscription {
    /// The subscribing plugin.
    pub plugin: String,
    /// Its instance: the subscription ends with it.
    pub generation: u64,
    /// The event pattern.
    pub pattern: String,
    /// The action that handles each event.
    pub action: String,
    /// Lower runs first.
    pub priority: i32,
    /// Ends after the first event.
    pub once: bool,
    /// The handler's own timeout, if any.
    pub timeout: Option<Duration>,
}

/// Calls into plugins, as services and jobs make them.
pub trait PluginCalls: Send + Sync + 'static {
    /// Calls `input.action` on `plugin` through the supervised call path (state check,
    /// rate limit, deadline, restarts), as the host's own call: no per-client limit.
    fn call_plugin(
        self: Arc<Self>,
        plugin: String,
        input: CallInput,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallFailure>>;

    /// The event-chain position of the call `request_id`, if an event handler made it.
    fn call_origin(&self, request_id: &str) -> Option<CallOrigin>;

    /// A fresh, unguessable request id for a call the host makes on a plugin's behalf.
    fn next_internal_request_id(&self, kind: &str) -> String;

    /// Subscribes a plugin's action to events; the handler calls it through
    /// [`PluginCalls::call_plugin`] with `{"event", "payload"}`.
    fn subscribe(self: Arc<Self>, sub: ActionSubscription) -> Result<HandlerId, HookError>;
}
