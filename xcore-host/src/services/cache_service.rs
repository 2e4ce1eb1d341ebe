//! `cache.*` host services: a plugin's own namespace of the host's cache (memory or
//! Redis, [`super::cache`]). Needs the permission `cache`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::cache::CacheError;
use super::{permissions, Caller, ServiceError};
use crate::runtime::PluginRegistry;

#[derive(Deserialize)]
struct KeyRequest {
    key: String,
}

#[derive(Deserialize)]
struct SetRequest {
    key: String,
    value: Value,
    /// Seconds; absent: the configured default; 0: no expiry.
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

fn cache_error(e: CacheError) -> ServiceError {
    match e {
        CacheError::InvalidKey(m) => ServiceError::new("invalid_payload", 400, m),
        other => ServiceError::new("cache_error", 503, other.to_string()),
    }
}

/// Serves `cache.get|set|delete|clear` for `caller`, in its namespace.
pub fn serve(
    registry: &PluginRegistry,
    caller: &Caller,
    service: &str,
    payload: &[u8],
) -> Result<Value, ServiceError> {
    permissions::require(caller, "cache", "use the cache")?;
    let Some(cache) = registry.cache() else {
        return Err(ServiceError::unavailable("this host has no cache configured"));
    };
    let ns = &*caller.plugin;
    let handle = registry.supervisor_handle();
    let bad = |e| ServiceError::bad_request(service, e);
    match service {
        "cache.get" => {
            let r: KeyRequest = serde_json::from_slice(payload).map_err(bad)?;
            let v = handle.block_on(cache.get(ns, &r.key)).map_err(cache_error)?;
            Ok(json!({ "found": v.is_some(), "value": v }))
        }
        "cache.set" => {
            let r: SetRequest = serde_json::from_slice(payload).map_err(bad)?;
            let ttl = r.ttl_seconds.map(Duration::from_secs);
            handle.block_on(cache.set(ns, &r.key, &r.value, ttl)).map_err(cache_error)?;
            Ok(json!({ "stored": true }))
        }
        "cache.delete" => {
            let r: KeyRequest = serde_json::from_slice(payload).map_err(bad)?;
            Ok(json!({ "deleted": handle.block_on(cache.delete(ns, &r.key)).map_err(cache_error)? }))
        }
        "cache.clear" => Ok(json!({ "removed": handle.block_on(cache.clear(ns)).map_err(cache_error)? })),
        other => Err(ServiceError::unsupported(other)),
    }
}
