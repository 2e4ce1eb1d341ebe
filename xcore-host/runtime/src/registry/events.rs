//! The registry's side of the event system: the chain positions of handler calls,
//! host lifecycle events, and plugin subscriptions as actions on the call path.

use super::*;

impl PluginRegistry {
    /// The event-chain position of the call `request_id`, if an event handler made it.
    pub fn call_origin(&self, request_id: &str) -> Option<CallOrigin> {
        if request_id.is_empty() {
            return None;
        }
        self.origins.lock().get(request_id).cloned()
    }

    /// A request id for a call the host makes on a plugin's behalf (event handlers,
    /// plugin-to-plugin calls). Unguessable, so that no client-chosen request id can
    /// claim a position in an event chain.
    pub fn next_internal_request_id(&self, kind: &str) -> String {
        let n = self.event_calls.fetch_add(1, Ordering::Relaxed);
        format!("{kind}-{:016x}-{n}", self.event_tag)
    }

    /// The host-work runtime ([`crate::host_work`]): restarts, detached emits,
    /// the host's calls into plugins; plugin threads block on it to wait for an emit.
    pub fn host_work(&self) -> tokio::runtime::Handle {
        self.work()
    }

    /// Emits a host lifecycle event without waiting.
    pub fn emit_host_event(&self, event: &str, payload: serde_json::Value) {
        let hooks = self.hooks.clone();
        let event = event.to_string();
        self.work().spawn(async move {
            hooks.emit(&event, payload).await;
        });
    }

    /// Subscribes an action of a plugin to events (owner: its instance).
    pub fn subscribe_action(self: &Arc<Self>, sub: &ActionSubscription) -> Result<HandlerId, HookError> {
        let handler = event_handler(Arc::downgrade(self), &sub.plugin, &sub.action);
        self.hooks.register(&sub.pattern, sub.options(), handler)
    }

    /// Subscribes what instance `generation` of a plugin handles: its manifest's hooks
    /// and the `#[on]` handlers its action table declares (`described`, as the contract
    /// check listed them).
    pub(super) fn subscribe_instance(
        self: &Arc<Self>,
        m: &Manifest,
        generation: u64,
        described: &[(String, String)],
    ) {
        for sub in ActionSubscription::of_instance(m, generation, described) {
            if let Err(e) = self.subscribe_action(&sub) {
                // Patterns were validated with the manifest and the contract check; what
                // remains is a bound (events.max_subscriptions_per_plugin,
                // events.max_handlers), named in `e`.
                log::error!(target: "xcore::hooks", "plugin '{}': hook on '{}' ('{}'): {e}", m.name, sub.pattern, sub.action);
            }
        }
    }
}
