//! `events.*` host services: plugins emit and subscribe through the host's one
//! [`xcore_hooks::HookManager`].
//!
//! An emit that waits blocks the plugin's thread until every handler ran; handlers that
//! call plugins go through the registry's supervised call path. To keep that from
//! deadlocking, the registry follows each event chain (which plugins are waiting on it,
//! at what depth): depth is bounded by the hook manager, and a handler call into a
//! plugin that is waiting on the chain with no free call slot fails at once with
//! `reentrant_call` instead of waiting for itself.
//!
//! Bounds (the `events` section of `xcore.yaml`, [`EventsConfig`]): subscriptions per
//! plugin instance and in the whole host, detached emits in flight per plugin and in the
//! whole host. Event names under `xcore.` and `plugin.` are the host's own: a plugin
//! cannot emit them (403 `reserved_event`); the host, and an admin through
//! `POST /api/v1/events/{event}`, still can.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{permissions, Caller, ServiceError};
use crate::Services;
use xcore_hooks::{EmitMode, HandlerId, HookError, HookLimits};
use xcore_runtime::plugin_calls::ActionSubscription;
use xcore_runtime::registry::EMIT_CHAIN;

/// The `events` section of `xcore.yaml`: how much plugins may grow the event system.
/// 0 = no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventsConfig {
    /// Subscriptions of one plugin instance: its manifest hooks plus what its code
    /// subscribed. Default 100.
    pub max_subscriptions_per_plugin: usize,
    /// Subscriptions in the whole host (plugins' and the host's own). Default 10 000.
    pub max_handlers: usize,
    /// Detached emits (`wait: false`) queued or running, from every plugin. Default 1000.
    pub max_detached_emits: usize,
    /// Detached emits queued or running from one plugin. Default 100.
    pub max_detached_emits_per_plugin: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        let d = HookLimits::default();
        EventsConfig {
            max_subscriptions_per_plugin: d.max_handlers_per_owner,
            max_handlers: d.max_handlers,
            max_detached_emits: d.max_detached,
            max_detached_emits_per_plugin: d.max_detached_per_source,
        }
    }
}

impl EventsConfig {
    /// The hook manager's limits.
    pub fn hook_limits(&self) -> HookLimits {
        HookLimits {
            max_handlers: self.max_handlers,
            max_handlers_per_owner: self.max_subscriptions_per_plugin,
            max_detached: self.max_detached_emits,
            max_detached_per_source: self.max_detached_emits_per_plugin,
        }
    }
}

/// The prefixes of the host's own event names.
pub const RESERVED_PREFIXES: [&str; 2] = ["xcore", "plugin"];

/// Whether `event` is one of the host's own names (`xcore`, `xcore.*`, `plugin`,
/// `plugin.*`), which plugins may not emit.
pub fn is_reserved(event: &str) -> bool {
    let first = event.split('.').next().unwrap_or(event);
    RESERVED_PREFIXES.contains(&first)
}

#[derive(Deserialize)]
struct EmitRequest {
    event: String,
    #[serde(default)]
    payload: Value,
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct SubscribeRequest {
    pattern: String,
    action: String,
    #[serde(default = "default_priority")]
    priority: i32,
    #[serde(default)]
    once: bool,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

fn default_priority() -> i32 {
    xcore_hooks::DEFAULT_PRIORITY
}

#[derive(Deserialize)]
struct UnsubscribeRequest {
    id: u64,
}

fn hook_error(e: HookError) -> ServiceError {
    let status = match e {
        HookError::DepthExceeded { .. } => 508,
        HookError::TooManyHandlers { .. }
        | HookError::TooManySubscriptions { .. }
        | HookError::TooManyEmits { .. } => 429,
        HookError::NoRuntime => 503,
        HookError::InvalidPattern { .. } => 400,
    };
    ServiceError::new(e.code(), status, e.to_string())
}

/// `events.emit`: `{event, payload, wait}`.
pub fn emit(
    host: &Services,
    caller: &Caller,
    request_id: &str,
    payload: &[u8],
) -> Result<Value, ServiceError> {
    let req: EmitRequest =
        serde_json::from_slice(payload).map_err(|e| ServiceError::bad_request("events.emit", e))?;
    if is_reserved(&req.event) {
        host.metrics().limit_refused("reserved_event");
        return Err(ServiceError::new(
            "reserved_event",
            403,
            format!(
                "plugin '{}' may not emit '{}': event names under 'xcore.' and 'plugin.' are the \
                 host's own; pick a name of your own (e.g. '{}.{}')",
                caller.plugin,
                req.event,
                caller.plugin,
                req.event.split_once('.').map_or("event", |(_, rest)| rest)
            ),
        ));
    }
    if !xcore_manifest::permissions::allowed(&caller.permissions, "events.emit", &req.event) {
        return Err(permissions::denied(&caller.plugin, "events.emit", &req.event));
    }
    // Where this plugin stands in an event chain: a top-level call emits at depth 0.
    let (depth, mut chain) = host
        .plugins()?
        .call_origin(request_id)
        .map(|o| (o.depth + 1, o.chain))
        .unwrap_or_else(|| (0, Vec::new()));
    // Only a waiting emitter blocks its own call: a detached emit leaves it free.
    if req.wait {
        chain.push(caller.plugin.to_string());
    }
    let hooks = host.hooks().clone();
    let handle = host.work();
    if req.wait {
        let report = handle
            .block_on(
                EMIT_CHAIN.scope(chain, hooks.emit_at_depth(&req.event, req.payload, depth, EmitMode::All)),
            )
            .map_err(hook_error)?;
        serde_json::to_value(report).map_err(|e| ServiceError::new("internal", 500, e.to_string()))
    } else {
        // Checked here, so a detached loop is refused at its first step too.
        if depth > hooks.max_depth() {
            return Err(hook_error(HookError::DepthExceeded {
                event: req.event,
                depth,
                max: hooks.max_depth(),
            }));
        }
        // Counted until the emit ends: a plugin cannot pile up unbounded queued emits.
        let permit = hooks.try_detached(&caller.plugin).map_err(|e| {
            log::warn!(target: "xcore::hooks", "{e}");
            hook_error(e)
        })?;
        let event = req.event.clone();
        handle.spawn(EMIT_CHAIN.scope(chain, async move {
            let _permit = permit;
            let _ = hooks.emit_at_depth(&event, req.payload, depth, EmitMode::All).await;
        }));
        Ok(json!({ "queued": true }))
    }
}

/// `events.subscribe`: `{pattern, action, priority, once, timeout_ms}` -> `{id}`.
pub fn subscribe(host: &Services, caller: &Caller, payload: &[u8]) -> Result<Value, ServiceError> {
    let req: SubscribeRequest =
        serde_json::from_slice(payload).map_err(|e| ServiceError::bad_request("events.subscribe", e))?;
    if !xcore_manifest::permissions::allowed(&caller.permissions, "events.subscribe", &req.pattern) {
        return Err(permissions::denied(&caller.plugin, "events.subscribe", &req.pattern));
    }
    let sub = ActionSubscription {
        plugin: caller.plugin.to_string(),
        generation: caller.generation,
        pattern: req.pattern,
        action: req.action,
        priority: req.priority,
        once: req.once,
        timeout: req.timeout_ms.map(Duration::from_millis),
    };
    let id = host.plugins()?.subscribe(sub).map_err(|e| {
        if !matches!(e, HookError::InvalidPattern { .. }) {
            log::warn!(target: "xcore::hooks", "plugin '{}': {e}", caller.plugin);
        }
        hook_error(e)
    })?;
    Ok(json!({ "id": id.0 }))
}

/// `events.unsubscribe`: `{id}` -> `{removed}`; only the plugin's own subscriptions.
pub fn unsubscribe(host: &Services, caller: &Caller, payload: &[u8]) -> Result<Value, ServiceError> {
    let req: UnsubscribeRequest =
        serde_json::from_slice(payload).map_err(|e| ServiceError::bad_request("events.unsubscribe", e))?;
    let owner = xcore_runtime::registry::owner_of(&caller.plugin, caller.generation);
    let hooks = host.hooks();
    let own = hooks.list().into_iter().any(|s| s.id == HandlerId(req.id) && s.owner == owner);
    Ok(json!({ "removed": own && hooks.unregister(HandlerId(req.id)) }))
}
