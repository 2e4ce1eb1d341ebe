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

    /// A handler that calls `action` of `plugin` through the supervised call path with
    /// `{"event": name, "payload": ...}`.
    pub(super) fn action_handler(self: &Arc<Self>, plugin: &str, action: &str) -> hooks::HandlerFn {
        let registry = Arc::downgrade(self);
        let (plugin, action) = (plugin.to_string(), action.to_string());
        hooks::handler(move |ctx: EventCtx| {
            let (registry, plugin, action) = (registry.clone(), plugin.clone(), action.clone());
            async move {
                let Some(registry) = registry.upgrade() else {
                    return HandlerOutcome::error("the host is shutting down");
                };
                let chain = EMIT_CHAIN.try_with(|c| c.clone()).unwrap_or_default();

                let payload = serde_json::json!({ "event": ctx.event(), "payload": ctx.payload() });
                let input = CallInput {
                    action,
                    payload: serde_json::to_vec(&payload).unwrap_or_default(),
                    caller: format!("event:{}", ctx.event()),
                    request_id: registry.next_internal_request_id("event"),
                    origin: Some(CallOrigin { depth: ctx.depth(), chain }),
                };
                match registry.call(&plugin, input).await {
                    Ok(bytes) => HandlerOutcome::Value(
                        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
                    ),
                    Err(f) => {
                        HandlerOutcome::Error(Failure { code: f.code().to_string(), message: f.to_string() })
                    }
                }
            }
        })
    }

    /// Subscribes an action of a plugin to events (owner: its instance).
    pub fn subscribe_action(self: &Arc<Self>, sub: &ActionSubscription) -> Result<HandlerId, HookError> {
        let mut options = HandlerOptions::named(format!("{}/{}", sub.plugin, sub.action))
            .priority(sub.priority)
            .owner(owner_of(&sub.plugin, sub.generation));
        if sub.once {
            options = options.once();
        }
        if let Some(t) = sub.timeout {
            options = options.timeout(t);
        }
        self.hooks.register(&sub.pattern, options, self.action_handler(&sub.plugin, &sub.action))
    }

    /// Subscribes the actions a manifest lists, for instance `generation`.
    /// Subscribes the plugin's `#[on(...)]` handlers that no manifest hook names, as
    /// hooks with the default options (a manifest hook sets priority, once, timeout).
    pub(super) fn register_described_handlers(
        self: &Arc<Self>,
        m: &Manifest,
        generation: u64,
        handlers: &[(String, String)],
    ) {
        for (pattern, action) in handlers {
            let sub = ActionSubscription {
                plugin: m.name.clone(),
                generation,
                pattern: pattern.clone(),
                action: action.clone(),
                priority: xcore_hooks::DEFAULT_PRIORITY,
                once: false,
                timeout: None,
            };
            if let Err(e) = self.subscribe_action(&sub) {
                log::error!(target: "xcore::hooks", "plugin '{}': #[on(\"{pattern}\")] on '{action}': {e}", m.name);
            }
        }
    }

    pub(super) fn register_manifest_hooks(self: &Arc<Self>, m: &Manifest, generation: u64) {
        for h in &m.hooks {
            let sub = ActionSubscription {
                plugin: m.name.clone(),
                generation,
                pattern: h.event.clone(),
                action: h.action.clone(),
                priority: h.priority,
                once: h.once,
                timeout: h.timeout_ms.map(Duration::from_millis),
            };
            if let Err(e) = self.subscribe_action(&sub) {
                // Patterns were validated with the manifest; what remains is a bound
                // (events.max_subscriptions_per_plugin, events.max_handlers), named in `e`.
                log::error!(target: "xcore::hooks", "plugin '{}': hook on '{}': {e}", m.name, h.event);
            }
        }
    }
}
