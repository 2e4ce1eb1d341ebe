//! `kv.*` host services: the plugin's own namespace of the durable key-value store
//! ([`xcore_db::store::kv`]). Needs the permission `kv`. A new key past the plugin's quota
//! (`kv.max_keys_per_plugin`) is 507 `kv_quota`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{permissions, Caller, ServiceError};
use crate::Services;
use xcore_db::store::kv::{KvSet, MAX_KEY_BYTES, MAX_VALUE_BYTES};

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

/// Serves `kv.get|set|delete|list` for `caller`, in its namespace.
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
            let size = r.value.to_string().len();
            if size > MAX_VALUE_BYTES {
                return Err(ServiceError::new(
                    "payload_too_large",
                    413,
                    format!(
                        "kv value for '{}' is {size} bytes of JSON; the limit is {MAX_VALUE_BYTES}",
                        r.key
                    ),
                ));
            }
            let max = store.kv_max_keys();
            match store.kv_set_within(ns, &r.key, &r.value, r.ttl_ms, max).map_err(db_error)? {
                KvSet::Stored => Ok(json!({ "stored": true })),
                KvSet::QuotaExceeded { count } => {
                    host.metrics().limit_refused("kv_keys_per_plugin");
                    log::warn!(target: "xcore::kv", "plugin '{ns}': kv key refused, {count} keys of {max}");
                    Err(ServiceError::new(
                        "kv_quota",
                        507,
                        format!(
                            "kv key '{}' refused: plugin '{ns}' has {count} keys in the key-value store, \
                             the most kv.max_keys_per_plugin ({max}) allows; delete some, or raise \
                             kv.max_keys_per_plugin in xcore.yaml",
                            r.key.chars().take(64).collect::<String>()
                        ),
                    ))
                }
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
