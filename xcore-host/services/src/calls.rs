//! `plugins.call`: one plugin calling another's action through the supervised call
//! path (limits, deadlines, rate limits, sandboxing), with its own identity as the
//! caller (`plugin:<name>`). Needs the permission `call` or `call:<plugin>`.
//!
//! The caller's thread waits for the answer, so the same event-chain bookkeeping as for
//! events applies: a call back into a plugin that waits on the chain with no free call
//! slot fails at once with `reentrant_call` instead of waiting for itself.

use serde::Deserialize;
use serde_json::Value;

use super::{permissions, Caller, ServiceError};
use xcore_runtime::{CallInput, CallOrigin};

use crate::Services;

#[derive(Deserialize)]
struct CallRequest {
    plugin: String,
    action: String,
    #[serde(default)]
    payload: Value,
}

/// `plugins.call`: `{plugin, action, payload}` -> the callee's JSON reply.
pub fn call(
    host: &Services,
    caller: &Caller,
    request_id: &str,
    payload: &[u8],
) -> Result<Value, ServiceError> {
    let req: CallRequest =
        serde_json::from_slice(payload).map_err(|e| ServiceError::bad_request("plugins.call", e))?;
    if !xcore_manifest::permissions::allowed(&caller.permissions, "call", &req.plugin) {
        return Err(permissions::denied(&caller.plugin, "call", &req.plugin));
    }
    let plugins = host.plugins()?;
    let (depth, mut chain) =
        plugins.call_origin(request_id).map(|o| (o.depth, o.chain)).unwrap_or((0, Vec::new()));
    chain.push(caller.plugin.to_string());
    let input = CallInput {
        action: req.action,
        payload: serde_json::to_vec(&req.payload).unwrap_or_default(),
        caller: format!("plugin:{}", caller.plugin),
        request_id: plugins.next_internal_request_id("call"),
        origin: Some(CallOrigin { depth, chain }),
    };
    let reply = host.work().block_on(plugins.clone().call_plugin(req.plugin.clone(), input));
    match reply {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            ServiceError::new("internal", 502, format!("plugin '{}' answered invalid JSON: {e}", req.plugin))
        }),
        // The callee's own error travels back unchanged, so the caller can act on its code.
        Err(f) => Err(ServiceError::new(f.code(), f.status(), f.to_string())),
    }
}
