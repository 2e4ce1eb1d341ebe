//! `cache.*` host services: a plugin's own namespace of the host's cache (memory or
//! Redis, [`super::cache`]). Needs the permission `cache`.
//!
//! `cache.set` takes `ttl_ms`: absent or null = the host's default (`cache.ttl_seconds`),
//! 1 or more = that many milliseconds, 0 = refused (400 `invalid_payload`; for an entry
//! that lives as long as the cache allows, give a large TTL). Plugins built against
//! SDK 0.1 releases before milliseconds send `ttl_seconds` instead, with its old meaning
//! (0 = no expiry); it is still accepted. A value over `cache.max_value_bytes` is 413
//! `value_too_large`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::cache::CacheError;
use super::{permissions, Caller, ServiceError};
use crate::Services;

#[derive(Deserialize)]
struct KeyRequest {
    key: String,
}

#[derive(Deserialize)]
struct SetRequest {
    key: String,
    value: Value,
    /// Milliseconds; absent: the configured default; 0: refused.
    #[serde(default)]
    ttl_ms: Option<u64>,
    /// Seconds, from plugins built before `ttl_ms`; 0: no expiry.
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

impl SetRequest {
    /// The TTL for [`super::cache::Cache::set`]: `None` = the default, `Some(ZERO)` = no
    /// expiry.
    fn ttl(&self) -> Result<Option<Duration>, ServiceError> {
        match (self.ttl_ms, self.ttl_seconds) {
            (Some(_), Some(_)) => Err(ServiceError::new(
                "invalid_payload",
                400,
                "cache.set: give ttl_ms or the older ttl_seconds, not both",
            )),
            (Some(0), None) => Err(ServiceError::new(
                "invalid_payload",
                400,
                format!(
                    "cache.set of '{}': a TTL of 0 ms would expire at once; give at least 1 ms, \
                     or none for the host's default",
                    self.key
                ),
            )),
            (Some(ms), None) => Ok(Some(Duration::from_millis(ms))),
            (None, Some(secs)) => Ok(Some(Duration::from_secs(secs))),
            (None, None) => Ok(None),
        }
    }
}

fn cache_error(e: CacheError) -> ServiceError {
    match e {
        CacheError::InvalidKey(m) => ServiceError::new("invalid_payload", 400, m),
        e @ CacheError::ValueTooLarge { .. } => ServiceError::new("value_too_large", 413, e.to_string()),
        other => ServiceError::new("cache_error", 503, other.to_string()),
    }
}

/// Serves `cache.get|set|delete|clear` for `caller`, in its namespace.
pub fn serve(host: &Services, caller: &Caller, service: &str, payload: &[u8]) -> Result<Value, ServiceError> {
    permissions::require(caller, "cache", "use the cache")?;
    let Some(cache) = host.cache() else {
        return Err(ServiceError::unavailable("this host has no cache configured"));
    };
    let ns = &*caller.plugin;
    let handle = host.work();
    let bad = |e| ServiceError::bad_request(service, e);
    match service {
        "cache.get" => {
            let r: KeyRequest = serde_json::from_slice(payload).map_err(bad)?;
            let v = handle.block_on(cache.get(ns, &r.key)).map_err(cache_error)?;
            Ok(json!({ "found": v.is_some(), "value": v }))
        }
        "cache.set" => {
            let r: SetRequest = serde_json::from_slice(payload).map_err(bad)?;
            let ttl = r.ttl()?;
            handle.block_on(cache.put(ns, &r.key, r.value, ttl)).map_err(|e| {
                if matches!(e, CacheError::ValueTooLarge { .. }) {
                    host.metrics().limit_refused("cache_value_bytes");
                }
                cache_error(e)
            })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ttl(body: Value) -> Result<Option<Duration>, ServiceError> {
        serde_json::from_value::<SetRequest>(body).unwrap().ttl()
    }

    #[test]
    fn ttls_are_milliseconds_and_the_old_seconds_still_work() {
        assert_eq!(ttl(json!({"key": "k", "value": 1})).unwrap(), None);
        assert_eq!(ttl(json!({"key": "k", "value": 1, "ttl_ms": null})).unwrap(), None);
        assert_eq!(
            ttl(json!({"key": "k", "value": 1, "ttl_ms": 500})).unwrap(),
            Some(Duration::from_millis(500))
        );
        let zero = ttl(json!({"key": "k", "value": 1, "ttl_ms": 0})).unwrap_err();
        assert_eq!((zero.code.as_str(), zero.status), ("invalid_payload", 400));
        assert!(zero.message.contains("1 ms"), "{}", zero.message);
        // Plugins built before: seconds, 0 = no expiry.
        assert_eq!(
            ttl(json!({"key": "k", "value": 1, "ttl_seconds": 3})).unwrap(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(ttl(json!({"key": "k", "value": 1, "ttl_seconds": 0})).unwrap(), Some(Duration::ZERO));
        assert!(ttl(json!({"key": "k", "value": 1, "ttl_seconds": 1, "ttl_ms": 1})).is_err());
    }
}
