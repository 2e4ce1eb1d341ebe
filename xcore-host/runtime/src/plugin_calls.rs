//! [`PluginCalls`]: how the host's services reach plugins. The registry implements it;
//! services hold it weakly (instances hold services, so a strong handle would keep the
//! registry alive), and a test of a service can implement it without any plugin.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use xcore_hooks::{self as hooks, EventCtx, Failure, HandlerId, HandlerOptions, HandlerOutcome, HookError};
use xcore_manifest::Manifest;

use crate::call::{CallFailure, CallInput, CallOrigin};

tokio::task_local! {
    /// The plugins waiting on the emit that runs in this task (each blocked in a call
    /// until the emit returns). Handlers read it to refuse a call that would wait for
    /// itself.
    pub static EMIT_CHAIN: Vec<String>;
}

/// The hook owner of the subscriptions of one instance of a plugin: manifest hooks and
/// those its code made. They go together when the instance is replaced or unloaded,
/// and a new instance's own subscriptions (made in its constructor) survive the swap.
pub fn owner_of(plugin: &str, generation: u64) -> String {
    format!("plugin:{plugin}/{generation}")
}

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

impl ActionSubscription {
    /// What a freshly loaded instance subscribes: its manifest's hooks (with their
    /// options), then the `#[on]` handlers the contract check listed
    /// ([`crate::contract::Agreement::subscriptions`]), with the default options.
    pub fn of_instance(
        m: &Manifest,
        generation: u64,
        described: &[(String, String)],
    ) -> Vec<ActionSubscription> {
        let hooks = m.hooks.iter().map(|h| ActionSubscription {
            plugin: m.name.clone(),
            generation,
            pattern: h.event.clone(),
            action: h.action.clone(),
            priority: h.priority,
            once: h.once,
            timeout: h.timeout_ms.map(Duration::from_millis),
        });
        let described = described.iter().map(|(pattern, action)| ActionSubscription {
            plugin: m.name.clone(),
            generation,
            pattern: pattern.clone(),
            action: action.clone(),
            priority: hooks::DEFAULT_PRIORITY,
            once: false,
            timeout: None,
        });
        hooks.chain(described).collect()
    }

    /// The hook manager's options for it: named `plugin/action`, owned by its instance
    /// ([`owner_of`]).
    pub fn options(&self) -> HandlerOptions {
        let mut options = HandlerOptions::named(format!("{}/{}", self.plugin, self.action))
            .priority(self.priority)
            .owner(owner_of(&self.plugin, self.generation));
        if self.once {
            options = options.once();
        }
        if let Some(t) = self.timeout {
            options = options.timeout(t);
        }
        options
    }
}

/// The hook handler of a subscription: calls `action` of `plugin` through `calls` (the
/// registry, or a test kit's) with `{"event": name, "payload": ...}`, caller
/// `event:<name>`, at its place in the event chain. Held weakly: the hook manager must not
/// keep the host alive.
pub fn event_handler<C: PluginCalls>(calls: Weak<C>, plugin: &str, action: &str) -> hooks::HandlerFn {
    let (plugin, action) = (plugin.to_string(), action.to_string());
    hooks::handler(move |ctx: EventCtx| {
        let (calls, plugin, action) = (calls.clone(), plugin.clone(), action.clone());
        async move {
            let Some(calls) = calls.upgrade() else {
                return HandlerOutcome::error("the host is shutting down");
            };
            let chain = EMIT_CHAIN.try_with(|c| c.clone()).unwrap_or_default();
            let payload = serde_json::json!({ "event": ctx.event(), "payload": ctx.payload() });
            let input = CallInput {
                action,
                payload: serde_json::to_vec(&payload).unwrap_or_default(),
                caller: format!("event:{}", ctx.event()),
                request_id: calls.next_internal_request_id("event"),
                origin: Some(CallOrigin { depth: ctx.depth(), chain }),
            };
            match calls.call_plugin(plugin, input).await {
                Ok(bytes) => {
                    HandlerOutcome::Value(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
                }
                Err(f) => {
                    HandlerOutcome::Error(Failure { code: f.code().to_string(), message: f.to_string() })
                }
            }
        }
    })
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
