//! The plugins' key-value store: JSON values under string keys, one namespace per
//! plugin, optional expiry. A `set` returns after the database committed, so an
//! acknowledged write survives a crash of the host.
//!
//! Quota: a plugin may have at most `kv.max_keys_per_plugin` live keys
//! ([`KvConfig`], default [`DEFAULT_MAX_KEYS_PER_PLUGIN`]). Overwriting a key is always
//! allowed; a new key is refused ([`KvSet::QuotaExceeded`]) when the plugin already has
//! that many. The count and the insert are two statements, not one serialisable
//! transaction: concurrent inserts of new keys by one plugin may each see the last free
//! slot, so the quota can be overshot by at most the number of such writes in flight at
//! once (the plugin's `concurrency` plus its event handlers). Expired rows that the
//! sweeper has not removed yet do not count.

use diesel::prelude::*;
use serde::Serialize;
use serde_json::Value;

use super::{is_duplicate, now_ms, upsert, Store};
use crate::schema::plugin_kv::dsl as kv;
use crate::with_conn;
use crate::DbError;

/// Live (unexpired) keys of `plugin` on connection `c`, as `QueryResult<u64>` (a macro:
/// each back-end's connection is its own type). Counted on the primary key's `plugin`
/// prefix.
macro_rules! live_keys {
    ($c:expr, $plugin:expr, $now:expr) => {
        kv::plugin_kv
            .filter(kv::plugin.eq($plugin))
            .filter(kv::expires_at.is_null().or(kv::expires_at.gt($now)))
            .count()
            .get_result::<i64>($c)
            .map(|n| n.max(0) as u64)
    };
}

diesel::define_sql_function! {
    /// `substr(text, start, length)`: SQLite, PostgreSQL and MySQL all have it.
    fn substr(x: diesel::sql_types::Text, start: diesel::sql_types::Integer, length: diesel::sql_types::Integer) -> diesel::sql_types::Text;
}

diesel::define_sql_function! {
    /// `octet_length(text)`: bytes, not characters (SQLite 3.43+, PostgreSQL, MySQL).
    fn octet_length(x: diesel::sql_types::Text) -> diesel::sql_types::Integer;
}

/// The longest key, in bytes (the MySQL column is VARCHAR(512)).
pub const MAX_KEY_BYTES: usize = 512;
/// The largest value, as JSON text.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// The most entries one `list` returns.
pub const MAX_LIST: usize = 1000;
/// Default of [`KvConfig::max_keys_per_plugin`].
pub const DEFAULT_MAX_KEYS_PER_PLUGIN: u64 = 10_000;

/// The `kv` section of `xcore.yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct KvConfig {
    /// Live keys one plugin may have; 0 = no limit. Default 10 000.
    pub max_keys_per_plugin: u64,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig { max_keys_per_plugin: DEFAULT_MAX_KEYS_PER_PLUGIN }
    }
}

/// What [`Store::kv_set_within`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvSet {
    /// Stored (committed).
    Stored,
    /// Not stored: `key` is new and the plugin already has `count` live keys.
    QuotaExceeded {
        /// Its live keys.
        count: u64,
    },
}

/// What [`Store::kv_cas`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum KvCas {
    /// The key held the expected value (or was absent, as expected) and now holds the
    /// new one (committed).
    Swapped,
    /// Nothing written: the key holds something else (`None`: it is absent).
    Mismatch {
        /// What it holds now.
        current: Option<Value>,
    },
    /// Nothing written: the key is new and the plugin already has `count` live keys.
    QuotaExceeded {
        /// Its live keys.
        count: u64,
    },
}

/// What [`Store::kv_incr`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvIncr {
    /// The new value (committed). An absent key counts from 0.
    Value(i64),
    /// The key holds something that is not an integer; nothing written.
    NotInteger,
    /// The sum does not fit a signed 64-bit integer; nothing written.
    Overflow,
    /// The key is new and the plugin already has `count` live keys.
    QuotaExceeded {
        /// Its live keys.
        count: u64,
    },
    /// Other writers won every one of [`MAX_INCR_ATTEMPTS`] attempts.
    Contended,
}

/// How often [`Store::kv_incr`] retries its compare-and-swap when other writers change
/// the key in between. Each failed attempt means another write succeeded, so with a
/// plugin's bounded concurrency this is only reached under pathological contention.
pub const MAX_INCR_ATTEMPTS: u32 = 100;

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Value,
    /// When it expires (Unix ms), if it does.
    pub expires_at: Option<i64>,
}

fn parse(value: &str) -> Value {
    // Only the host writes this column, always as JSON; a row edited by hand that is not
    // JSON comes back as a string rather than failing the read.
    serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()))
}

impl Store {
    /// The value of `key`, unless it is absent or expired.
    pub fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Value>, DbError> {
        let now = now_ms();
        let mut conn = self.db.conn()?;
        let row: Option<(String, Option<i64>)> = with_conn!(&mut conn, c => kv::plugin_kv
            .filter(kv::plugin.eq(plugin).and(kv::key.eq(key)))
            .select((kv::value, kv::expires_at))
            .first(c)
            .optional())
        .map_err(|e| self.query_error(e))?;
        Ok(row.filter(|(_, exp)| exp.is_none_or(|t| t > now)).map(|(v, _)| parse(&v)))
    }

    /// Stores `value` under `key`; `ttl_ms` > 0 makes it expire. Returns once committed.
    /// No quota (see [`Store::kv_set_within`]).
    pub fn kv_set(&self, plugin: &str, key: &str, value: &Value, ttl_ms: Option<u64>) -> Result<(), DbError> {
        self.kv_set_within(plugin, key, value, ttl_ms, 0).map(drop)
    }

    /// Live keys of `plugin`.
    pub fn kv_count(&self, plugin: &str) -> Result<u64, DbError> {
        let now = now_ms();
        let mut conn = self.db.conn()?;
        with_conn!(&mut conn, c => live_keys!(c, plugin, now)).map_err(|e| self.query_error(e))
    }

    /// [`Store::kv_set`] under a quota: a new key is stored only while `plugin` has fewer
    /// than `max_keys` live keys (0 = no limit); an existing key is always overwritten.
    pub fn kv_set_within(
        &self,
        plugin: &str,
        key: &str,
        value: &Value,
        ttl_ms: Option<u64>,
        max_keys: u64,
    ) -> Result<KvSet, DbError> {
        let text = value.to_string();
        let now = now_ms();
        let expires = ttl_ms.filter(|t| *t > 0).map(|t| now.saturating_add(t.min(i64::MAX as u64) as i64));
        let mut conn = self.db.conn()?;
        let mut refused = None;
        let result: QueryResult<bool> = with_conn!(&mut conn, c => upsert(
            c,
            |c| {
                diesel::update(kv::plugin_kv.filter(kv::plugin.eq(plugin).and(kv::key.eq(key))))
                    .set((kv::value.eq(&text), kv::expires_at.eq(expires), kv::updated_at.eq(now)))
                    .execute(c)
            },
            |c| {
                if max_keys > 0 {
                    let count = live_keys!(&mut *c, plugin, now)?;
                    // On MySQL an update that changed nothing reports 0 rows: the key
                    // exists and holds these values already, which is no new key.
                    let mut exists = || {
                        kv::plugin_kv
                            .filter(kv::plugin.eq(plugin).and(kv::key.eq(key)))
                            .count()
                            .get_result::<i64>(&mut *c)
                            .map(|n| n > 0)
                    };
                    if count >= max_keys && !exists()? {
                        refused = Some(count);
                        return Ok(0);
                    }
                }
                diesel::insert_into(kv::plugin_kv)
                    .values((
                        kv::plugin.eq(plugin),
                        kv::key.eq(key),
                        kv::value.eq(&text),
                        kv::expires_at.eq(expires),
                        kv::updated_at.eq(now),
                    ))
                    .execute(c)
            },
        ));
        result.map_err(|e| self.query_error(e))?;
        Ok(match refused {
            Some(count) => KvSet::QuotaExceeded { count },
            None => KvSet::Stored,
        })
    }

    /// Compare-and-swap: stores `new` under `key` only if the key holds `expected` now
    /// (`None`: only if it is absent or expired), atomically on every back-end. Values
    /// compare as the host's JSON text, which it always writes the same way for equal
    /// values (object keys sorted). An existing key keeps its expiry; a key created here
    /// has none. A new key counts against `max_keys` (0 = no limit).
    ///
    /// One statement decides: an `UPDATE ... WHERE value = expected` (or an `INSERT`,
    /// which the primary key refuses when someone else created the key first). A read
    /// then a write in a transaction would not do: PostgreSQL's default isolation and a
    /// deferred SQLite transaction let two of them both read the old value.
    pub fn kv_cas(
        &self,
        plugin: &str,
        key: &str,
        expected: Option<&Value>,
        new: &Value,
        max_keys: u64,
    ) -> Result<KvCas, DbError> {
        let now = now_ms();
        let new_text = new.to_string();
        let mut conn = self.db.conn()?;
        // A closure, so that `?` and `return` leave the statements, not the function.
        let result: QueryResult<KvCas> = with_conn!(&mut conn, c => (|| -> QueryResult<KvCas> {
            let live = |c: &mut _| {
                kv::plugin_kv
                    .filter(kv::plugin.eq(plugin).and(kv::key.eq(key)))
                    .filter(kv::expires_at.is_null().or(kv::expires_at.gt(now)))
                    .select(kv::value)
                    .first::<String>(c)
                    .optional()
            };
            match expected {
                Some(expected) => {
                    let expected_text = expected.to_string();
                    // MySQL reports 0 rows for an update that changes nothing: with
                    // equal values the swap is a comparison.
                    let swapped = if expected_text == new_text {
                        live(&mut *c)?.as_deref() == Some(expected_text.as_str())
                    } else {
                        diesel::update(
                            kv::plugin_kv
                                .filter(kv::plugin.eq(plugin).and(kv::key.eq(key)))
                                .filter(kv::value.eq(&expected_text))
                                .filter(kv::expires_at.is_null().or(kv::expires_at.gt(now))),
                        )
                        .set((kv::value.eq(&new_text), kv::updated_at.eq(now)))
                        .execute(&mut *c)?
                            > 0
                    };
                    if swapped {
                        Ok(KvCas::Swapped)
                    } else {
                        live(&mut *c).map(|v| KvCas::Mismatch { current: v.as_deref().map(parse) })
                    }
                }
                None => {
                    if let Some(v) = live(&mut *c)? {
                        return Ok(KvCas::Mismatch { current: Some(parse(&v)) });
                    }
                    if max_keys > 0 {
                        let count = live_keys!(&mut *c, plugin, now)?;
                        if count >= max_keys {
                            return Ok(KvCas::QuotaExceeded { count });
                        }
                    }
                    // An expired remnant would block the insert.
                    diesel::delete(
                        kv::plugin_kv
                            .filter(kv::plugin.eq(plugin).and(kv::key.eq(key)))
                            .filter(kv::expires_at.le(now)),
                    )
                    .execute(&mut *c)?;
                    let inserted = diesel::insert_into(kv::plugin_kv)
                        .values((
                            kv::plugin.eq(plugin),
                            kv::key.eq(key),
                            kv::value.eq(&new_text),
                            kv::expires_at.eq(None::<i64>),
                            kv::updated_at.eq(now),
                        ))
                        .execute(&mut *c);
                    match inserted {
                        Ok(_) => Ok(KvCas::Swapped),
                        Err(e) if is_duplicate(&e) => {
                            live(&mut *c).map(|v| KvCas::Mismatch { current: v.as_deref().map(parse) })
                        }
                        Err(e) => Err(e),
                    }
                }
            }
        })());
        result.map_err(|e| self.query_error(e))
    }

    /// Adds `by` to the integer under `key` (an absent or expired key counts from 0) and
    /// returns the sum, atomically: concurrent increments are never lost. Built on
    /// [`Store::kv_cas`], retried while other writers change the key in between (at most
    /// [`MAX_INCR_ATTEMPTS`] times), which keeps one query path for the three back-ends
    /// (a single `UPDATE ... SET value = value + n` would need each dialect's casts
    /// between text and integers).
    pub fn kv_incr(&self, plugin: &str, key: &str, by: i64, max_keys: u64) -> Result<KvIncr, DbError> {
        let mut current = self.kv_get(plugin, key)?;
        for _ in 0..MAX_INCR_ATTEMPTS {
            let base = match &current {
                None => 0,
                Some(v) => match v.as_i64() {
                    Some(n) => n,
                    None => return Ok(KvIncr::NotInteger),
                },
            };
            let Some(sum) = base.checked_add(by) else {
                return Ok(KvIncr::Overflow);
            };
            match self.kv_cas(plugin, key, current.as_ref(), &Value::from(sum), max_keys)? {
                KvCas::Swapped => return Ok(KvIncr::Value(sum)),
                KvCas::QuotaExceeded { count } => return Ok(KvIncr::QuotaExceeded { count }),
                KvCas::Mismatch { current: now } => current = now,
            }
        }
        Ok(KvIncr::Contended)
    }

    /// Deletes `key`; whether it existed (and had not expired).
    pub fn kv_delete(&self, plugin: &str, key: &str) -> Result<bool, DbError> {
        let now = now_ms();
        let mut conn = self.db.conn()?;
        let live: QueryResult<usize> = with_conn!(&mut conn, c => {
            let entry = || kv::plugin_kv.filter(kv::plugin.eq(plugin).and(kv::key.eq(key)));
            // The live entry first (its count is the answer), then an expired remnant.
            diesel::delete(entry().filter(kv::expires_at.is_null().or(kv::expires_at.gt(now))))
                .execute(c)
                .and_then(|live| diesel::delete(entry()).execute(c).map(|_| live))
        });
        live.map(|n| n > 0).map_err(|e| self.query_error(e))
    }

    /// Entries whose key starts with `prefix`, in key order, at most `limit` (capped at
    /// [`MAX_LIST`]), starting after the key `after` when given (for paging).
    pub fn kv_list(
        &self,
        plugin: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>, DbError> {
        let now = now_ms();
        let pattern = format!("{}%", escape_like(prefix));
        // LIKE narrows (and can use the key index); the substr comparison makes the match
        // exact, because SQLite's LIKE ignores ASCII case.
        let prefix_chars = prefix.chars().count() as i32;
        let limit = limit.clamp(1, MAX_LIST) as i64;
        let after = after.unwrap_or("");
        let mut conn = self.db.conn()?;
        let rows: Vec<(String, String, Option<i64>)> = with_conn!(&mut conn, c => kv::plugin_kv
            .filter(kv::plugin.eq(plugin))
            .filter(kv::key.like(&pattern).escape('!'))
            .filter(substr(kv::key, 1, prefix_chars).eq(prefix))
            .filter(kv::key.gt(after))
            .filter(kv::expires_at.is_null().or(kv::expires_at.gt(now)))
            .order(kv::key.asc())
            .limit(limit)
            .select((kv::key, kv::value, kv::expires_at))
            .load(c))
        .map_err(|e| self.query_error(e))?;
        Ok(rows.into_iter().map(|(key, v, expires_at)| Entry { key, value: parse(&v), expires_at }).collect())
    }

    /// Bytes a plugin's entries take: the sum of the UTF-8 lengths of their keys and
    /// values (expired entries not yet purged included), for its disk quota.
    pub fn kv_bytes(&self, plugin: &str) -> Result<u64, DbError> {
        let mut conn = self.db.conn()?;
        let lengths: Vec<(i32, i32)> = with_conn!(&mut conn, c => kv::plugin_kv
            .filter(kv::plugin.eq(plugin))
            .select((octet_length(kv::key), octet_length(kv::value)))
            .load(c))
        .map_err(|e| self.query_error(e))?;
        Ok(lengths.into_iter().map(|(k, v)| k.max(0) as u64 + v.max(0) as u64).sum())
    }

    /// Deletes expired entries of every plugin; how many.
    pub fn kv_purge_expired(&self) -> Result<usize, DbError> {
        let now = now_ms();
        let mut conn = self.db.conn()?;
        with_conn!(&mut conn, c => diesel::delete(kv::plugin_kv.filter(kv::expires_at.le(now))).execute(c))
            .map_err(|e| self.query_error(e))
    }
}

/// A LIKE pattern matching `s` literally, with `!` as the escape character.
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::store::testing::sqlite_store;
    use serde_json::json;

    #[test]
    fn set_get_overwrite_delete_list_and_expiry() {
        let (_d, s) = sqlite_store();
        assert_eq!(s.kv_get("p", "a").unwrap(), None);
        s.kv_set("p", "a", &json!({"n": 1}), None).unwrap();
        s.kv_set("p", "a", &json!({"n": 2}), None).unwrap();
        s.kv_set("p", "a", &json!({"n": 2}), None).unwrap();
        assert_eq!(s.kv_get("p", "a").unwrap(), Some(json!({"n": 2})));
        assert_eq!(s.kv_get("other", "a").unwrap(), None, "namespaced per plugin");
        s.kv_set("p", "user:1", &json!("x"), None).unwrap();
        s.kv_set("p", "user:2", &json!("y"), None).unwrap();
        s.kv_set("p", "user_3", &json!("z"), None).unwrap();
        s.kv_set("p", "Usr:4", &json!("w"), None).unwrap();
        s.kv_set("p", "USER:5", &json!("v"), None).unwrap();
        let keys: Vec<String> =
            s.kv_list("p", "user:", None, 10).unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["user:1", "user:2"], "'_' and '%' are literal in a prefix");
        let page: Vec<String> =
            s.kv_list("p", "user", Some("user:1"), 1).unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(page, ["user:2"]);
        assert!(s.kv_delete("p", "user:1").unwrap());
        assert!(!s.kv_delete("p", "user:1").unwrap());
        s.kv_set("p", "short", &json!(1), Some(1)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(s.kv_get("p", "short").unwrap(), None, "expired");
        assert!(s.kv_list("p", "sh", None, 10).unwrap().is_empty());
        assert_eq!(s.kv_purge_expired().unwrap(), 1);
        // "a" + {"n":2}, "user:2" + "y" (quoted), "user_3" + "z", "Usr:4" + "w", "USER:5" + "v".
        assert_eq!(s.kv_bytes("p").unwrap(), (1 + 7) + (6 + 3) + (6 + 3) + (5 + 3) + (6 + 3));
        s.kv_set("p", "é", &json!("ü"), None).unwrap();
        assert_eq!(s.kv_bytes("p").unwrap(), 43 + 2 + 4, "bytes, not characters");
        assert_eq!(s.kv_bytes("nobody").unwrap(), 0);
        s.kv_set("p", "forever", &json!(1), Some(0)).unwrap();
        assert_eq!(s.kv_get("p", "forever").unwrap(), Some(json!(1)), "ttl 0 never expires");
    }

    #[test]
    fn the_quota_refuses_new_keys_only() {
        use super::KvSet;
        let (_d, s) = sqlite_store();
        for i in 0..3 {
            assert_eq!(s.kv_set_within("p", &format!("k{i}"), &json!(i), None, 3).unwrap(), KvSet::Stored);
        }
        assert_eq!(
            s.kv_set_within("p", "k3", &json!(3), None, 3).unwrap(),
            KvSet::QuotaExceeded { count: 3 }
        );
        assert_eq!(s.kv_get("p", "k3").unwrap(), None);
        assert_eq!(
            s.kv_set_within("p", "k0", &json!("new"), None, 3).unwrap(),
            KvSet::Stored,
            "an overwrite"
        );
        assert_eq!(s.kv_get("p", "k0").unwrap(), Some(json!("new")));
        assert_eq!(s.kv_set_within("q", "k3", &json!(3), None, 3).unwrap(), KvSet::Stored, "per plugin");
        // Expired keys do not count.
        s.kv_set("p", "k1", &json!(1), Some(1)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(s.kv_count("p").unwrap(), 2);
        assert_eq!(s.kv_set_within("p", "k4", &json!(4), None, 3).unwrap(), KvSet::Stored);
        assert!(s.kv_delete("p", "k4").unwrap());
        assert_eq!(s.kv_set_within("p", "k5", &json!(5), None, 0).unwrap(), KvSet::Stored, "0 = no limit");
    }
}
