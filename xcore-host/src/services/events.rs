//! `events.*` host services: plugins emit and subscribe through the host's one
//! [`crate::hooks::HookManager`].
//!
//! An emit that waits blocks the plugin's thread until every handler ran; handlers that
//! call plugins go through the registry's supervised call path. To keep that from
//! deadlocking, the registry follows each event chain (which plugins are waiting on it,
//! at what depth): depth is bounded by the hook manager, and a handler call into a
//! plugin that is waiting on the chain with no free call slot fails at once with
//! `reentrant_call` instead of waiting for itself.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{permissions, Caller, ServiceError};
use crate::hooks::{EmitMode, HandlerId, HookError};
use crate::runtime::registry::EMIT_CHAIN;
use crate::runtime::PluginRegistry;

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
    crate::hooks::DEFAULT_PRIORITY
}

#[derive(Deserialize)]
struct UnsubscribeRequest {
    id: u64,
}

fn hook_error(e: HookError) -> ServiceError {
    let status = if matches!(e, HookError::DepthExceeded { .. }) { 508 } else { 400 };
    ServiceError::new(e.code(), status, e.to_string())
}

/// `events.emit`: `{event, payload, wait}`.
pub fn emit(
    registry: &PluginRegistry,
    caller: &Caller,
    request_id: &str,
    payload: &[u8],
) -> Result<Value, ServiceError> {
    let req: EmitRequest =
        serde_json::from_slice(payload).map_err(|e| ServiceError::bad_request("events.emit", e))?;
    if !permissions::allowed(&caller.permissions, "events.emit", &req.event) {
        return Err(permissions::denied(&caller.plugin, "events.emit", &req.event));
    }
    // Where this plugin stands in an event chain: a top-level call emits at depth 0.
    let (depth, mut chain) =
        registry.call_origin(request_id).map(|o| (o.depth + 1, o.chain)).unwrap_or_else(|| (0, Vec::new()));
    // Only a waiting emitter blocks its own call: a detached emit leaves it free.
    if req.wait {
        chain.push(caller.plugin.to_string());
    }
    let hooks = registry.hooks().clone();
    let handle = registry.supervisor_handle();
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
        let event = req.event.clone();
        handle.spawn(EMIT_CHAIN.scope(chain, async move {
            let _ = hooks.emit_at_depth(&event, req.payload, depth, EmitMode::All).await;
        }));
        Ok(json!({ "queued": true }))
    }
}

/// `events.subscribe`: `{pattern, action, priority, once, timeout_ms}` -> `{id}`.
pub fn subscribe(
    registry: &std::sync::Arc<PluginRegistry>,
    caller: &Caller,
    payload: &[u8],
) -> Result<Value, ServiceError> {
    let req: SubscribeRequest =
        serde_json::from_slice(payload).map_err(|e| ServiceError::bad_request("events.subscribe", e))?;
    if !permissions::allowed(&caller.permissions, "events.subscribe", &req.pattern) {
        return Err(permissions::denied(&caller.plugin, "events.subscribe", &req.pattern));
    }
    let id = registry
        .subscribe_action(
            &caller.plugin,
            caller.generation,
            &req.pattern,
            &req.action,
            req.priority,
            req.once,
            req.timeout_ms.map(Duration::from_millis),
        )
        .map_err(hook_error)?;
    Ok(json!({ "id": id.0 }))
}

/// `events.unsubscribe`: `{id}` -> `{removed}`; only the plugin's own subscriptions.
pub fn unsubscribe(
    registry: &PluginRegistry,
    caller: &Caller,
    payload: &[u8],
) -> Result<Value, ServiceError> {
    let req: UnsubscribeRequest =
        serde_json::from_slice(payload).map_err(|e| ServiceError::bad_request("events.unsubscribe", e))?;
    let owner = crate::runtime::registry::owner_of(&caller.plugin, caller.generation);
    let hooks = registry.hooks();
    let own = hooks.list().into_iter().any(|s| s.id == HandlerId(req.id) && s.owner == owner);
    Ok(json!({ "removed": own && hooks.unregister(HandlerId(req.id)) }))
}
