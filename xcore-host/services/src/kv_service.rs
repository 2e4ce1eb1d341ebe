//! `kv.*` host services: the plugin's own namespace of the durable key-value store
//! ([`xcore_db::store::kv`]). Needs the permission `kv`. A new key past the plugin's quota
//! (`kv.max_keys_per_plugin`) is 507 `kv_quota`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{permissions, Caller, ServiceError};
use crate::Services;
use xcore_db::store::kv::{KvCas, KvIncr, KvSet, MAX_INCR_ATTEMPTS, MAX_KEY_BYTES, MAX_VALUE_BYTES};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRequest {
    key: String,
    value: Value,
    /// Milliseconds; absent or 0: no expiry.
    #[serde(default)]
    ttl_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListRequest {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrRequest {
    key: String,
    /// Default 1; negative decrements.
    #[serde(default = "one")]
    by: i64,
}

fn one() -> i64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasRequest {
    key: String,
    /// Absent: the key must be absent; `null` is a value like any other.
    #[serde(default, deserialize_with = "present")]
    expected: Option<Value>,
    new: Value,
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn check_value(key: &str, value: &Value) -> Result<(), ServiceError> {
    let size = value.to_string().len();
    if size > MAX_VALUE_BYTES {
        return Err(ServiceError::new(
            "payload_too_large",
            413,
            format!("kv value for '{key}' is {size} bytes of JSON; the limit is {MAX_VALUE_BYTES}"),
        ));
    }
    Ok(())
}

fn quota_refused(host: &Services, ns: &str, key: &str, count: u64, max: u64) -> ServiceError {
    host.metrics().limit_refused("kv_keys_per_plugin");
    log::warn!(target: "xcore::kv", "plugin '{ns}': kv key refused, {count} keys of {max}");
    ServiceError::new(
        "kv_quota",
        507,
        format!(
            "kv key '{}' refused: plugin '{ns}' has {count} keys in the key-value store, \
             the most kv.max_keys_per_plugin ({max}) allows; delete some, or raise \
             kv.max_keys_per_plugin in xcore.yaml",
            key.chars().take(64).collect::<String>()
        ),
    )
}

fn check_key(key: &str) -> Result<(), ServiceError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ServiceError::new(
            "invalid_payload",
            400,
            format!("a kv key must be 1 to {MAX_KEY_BYTES} bytes long; this one is {} bytes", key.len()),
        ));
    }
    Ok(())
}

/// Serves `kv.get|set|incr|cas|delete|list` for `caller`, in its namespace.
pub fn serve(host: &Services, caller: &Caller, service: &str, payload: &[u8]) -> Result<Value, ServiceError> {
    permissions::require(caller, "kv", "use the key-value store")?;
    let Some(store) = host.store() else {
        return Err(ServiceError::unavailable("this host has no database connected"));
    };
    let ns = &*caller.plugin;
    let bad = |e| ServiceError::bad_request(service, e);
    let db_error = |e: xcore_db::DbError| ServiceError::new("kv_error", 503, e.to_string());
    match service {
        "kv.get" => {
            let r: KeyRequest = serde_json::from_slice(payload).map_err(bad)?;
            check_key(&r.key)?;
            let v = store.kv_get(ns, &r.key).map_err(db_error)?;
            Ok(json!({ "found": v.is_some(), "value": v }))
        }
        "kv.set" => {
            let r: SetRequest = serde_json::from_slice(payload).map_err(bad)?;
            check_key(&r.key)?;
            check_value(&r.key, &r.value)?;
            let max = store.kv_max_keys();
            match store.kv_set_within(ns, &r.key, &r.value, r.ttl_ms, max).map_err(db_error)? {
                KvSet::Stored => Ok(json!({ "stored": true })),
                KvSet::QuotaExceeded { count } => Err(quota_refused(host, ns, &r.key, count, max)),
            }
        }
        "kv.incr" => {
            let r: IncrRequest = serde_json::from_slice(payload).map_err(bad)?;
            check_key(&r.key)?;
            let max = store.kv_max_keys();
            let shown = || r.key.chars().take(64).collect::<String>();
            match store.kv_incr(ns, &r.key, r.by, max).map_err(db_error)? {
                KvIncr::Value(n) => Ok(json!({ "value": n })),
                KvIncr::NotInteger => Err(ServiceError::new(
                    "kv_not_integer",
                    409,
                    format!(
                        "kv key '{}' holds a value that is not an integer; kv.incr left it alone",
                        shown()
                    ),
                )),
                KvIncr::Overflow => Err(ServiceError::new(
                    "kv_overflow",
                    409,
                    format!(
                        "kv key '{}' plus {} does not fit a signed 64-bit integer; nothing written",
                        shown(),
                        r.by
                    ),
                )),
                KvIncr::QuotaExceeded { count } => Err(quota_refused(host, ns, &r.key, count, max)),
                KvIncr::Contended => {
                    host.metrics().limit_refused("kv_incr_attempts");
                    Err(ServiceError::new(
                        "kv_contended",
                        503,
                        format!(
                            "kv key '{}': other writers changed it during each of {MAX_INCR_ATTEMPTS} attempts; retry",
                            shown()
                        ),
                    ))
                }
            }
        }
        "kv.cas" => {
            let r: CasRequest = serde_json::from_slice(payload).map_err(bad)?;
            check_key(&r.key)?;
            check_value(&r.key, &r.new)?;
            let max = store.kv_max_keys();
            match store.kv_cas(ns, &r.key, r.expected.as_ref(), &r.new, max).map_err(db_error)? {
                KvCas::Swapped => Ok(json!({ "swapped": true })),
                KvCas::Mismatch { current } => {
                    Ok(json!({ "swapped": false, "found": current.is_some(), "current": current }))
                }
                KvCas::QuotaExceeded { count } => Err(quota_refused(host, ns, &r.key, count, max)),
            }
        }
        "kv.delete" => {
            let r: KeyRequest = serde_json::from_slice(payload).map_err(bad)?;
            check_key(&r.key)?;
            Ok(json!({ "deleted": store.kv_delete(ns, &r.key).map_err(db_error)? }))
        }
        "kv.list" => {
            let r: ListRequest = serde_json::from_slice(payload).map_err(bad)?;
            let limit = r.limit.unwrap_or(xcore_db::store::kv::MAX_LIST);
            let entries = store.kv_list(ns, &r.prefix, r.after.as_deref(), limit).map_err(db_error)?;
            Ok(json!({ "entries": entries }))
        }
        other => Err(ServiceError::unsupported(other)),
    }
}
