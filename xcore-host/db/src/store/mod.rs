//! The host's durable data, in the `default` database: plugins' key-value entries
//! ([`kv`]), plugin state ([`plugin_state`]), the audit log ([`audit`]) and the
//! scheduler's runs ([`job_runs`]).
//!
//! Every function here blocks on the database: call it from a plugin's worker thread,
//! the scheduler's thread or `web::block`, never inside an async task. Each is written
//! once with diesel's query builder and compiled for the three back-ends by
//! [`with_conn!`](crate::with_conn). Upserts are "update, else insert" (an insert that
//! loses a race to the same key becomes an update), because the three dialects spell
//! `ON CONFLICT` differently.

pub mod audit;
pub mod job_runs;
pub mod kv;
pub mod plugin_state;
pub mod retention;

use std::sync::Arc;

use crate::{Database, DbError};

/// The current time in Unix milliseconds, as the host's tables store it.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix milliseconds as RFC 3339 UTC (`2026-11-26T16:24:38.123Z`).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// The host's data store: the `default` database.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    /// Live keys one plugin may have in the key-value store (0 = no limit).
    kv_max_keys: u64,
}

impl Store {
    /// A store over `db` (its host migrations must have run), with the default KV quota.
    pub fn new(db: Arc<Database>) -> Self {
        Store { db, kv_max_keys: kv::DEFAULT_MAX_KEYS_PER_PLUGIN }
    }

    /// The same store with another KV quota per plugin (`kv.max_keys_per_plugin`).
    pub fn with_kv_max_keys(mut self, max: u64) -> Self {
        self.kv_max_keys = max;
        self
    }

    /// Live keys one plugin may have in the key-value store (0 = no limit).
    pub fn kv_max_keys(&self) -> u64 {
        self.kv_max_keys
    }

    /// The database underneath.
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    fn query_error(&self, e: diesel::result::Error) -> DbError {
        DbError::Query { name: self.db.name().to_string(), reason: e.to_string() }
    }
}

/// Whether a diesel error is a unique-key violation (an insert that lost a race).
fn is_duplicate(e: &diesel::result::Error) -> bool {
    matches!(e, diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _))
}

/// Update, else insert; whether it inserted. An insert that hits an existing row (it
/// lost a race, or, on MySQL, the update changed nothing because the values were the
/// same: MySQL counts changed rows, not matched ones) becomes the update again.
fn upsert<C: ?Sized>(
    c: &mut C,
    update: impl Fn(&mut C) -> diesel::QueryResult<usize>,
    insert: impl FnOnce(&mut C) -> diesel::QueryResult<usize>,
) -> diesel::QueryResult<bool> {
    if update(c)? > 0 {
        return Ok(false);
    }
    match insert(c) {
        Err(e) if is_duplicate(&e) => update(c).map(|_| false),
        other => other.map(|_| true),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A migrated SQLite store in a temporary folder.
    use super::*;

    pub fn sqlite_store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", d.path().join("x.db").display());
        crate::migrate::migrate("default", &url, crate::migrate::Op::Run).unwrap();
        let cfg = crate::DatabaseConfig { url, ..Default::default() };
        let db = Database::connect("default", &cfg).unwrap();
        (d, Store::new(Arc::new(db)))
    }
}
