//! What the host remembers about each plugin across restarts: whether an operator
//! disabled it, and what was last loaded (version, tier, signer).

use diesel::prelude::*;
use serde::Serialize;

use super::{now_ms, rfc3339, upsert, Store};
use crate::schema::plugin_state::dsl as ps;
use crate::with_conn;
use crate::{Conn, DbError};

/// One plugin's remembered state.
#[derive(Debug, Clone, PartialEq, Serialize, Queryable)]
pub struct PluginRecord {
    /// Name.
    pub name: String,
    /// False once an operator disabled it.
    pub enabled: bool,
    /// The version last loaded.
    pub version: String,
    /// `trusted` or `sandboxed`.
    pub mode: String,
    /// Where it was installed from, when known.
    pub source: Option<String>,
    /// Fingerprint of the key that signed the version last loaded.
    pub signed_by: Option<String>,
    /// First seen (Unix ms).
    pub installed_at: i64,
    /// Last change (Unix ms).
    pub updated_at: i64,
    /// SHA-256 of the library this host built for it from verified sources
    /// (`xcore plugin add`); its build record `build.sig` carries the same, signed.
    pub library_sha256: Option<String>,
}

impl PluginRecord {
    /// As JSON with readable times.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["installed_at"] = rfc3339(self.installed_at).into();
        v["updated_at"] = rfc3339(self.updated_at).into();
        v
    }
}

impl Store {
    /// Applies `update` (given the current time) to `name`'s record, creating the
    /// record first (enabled, with `version` and `mode`) when there is none.
    fn update_record<U>(&self, name: &str, version: &str, mode: &str, update: U) -> Result<(), DbError>
    where
        U: Fn(&mut Conn, i64) -> QueryResult<usize>,
    {
        let now = now_ms();
        let update = |conn: &mut Conn| update(conn, now);
        let mut conn = self.db.conn()?;
        let r = upsert(&mut conn, update, |conn| {
            with_conn!(conn, c => diesel::insert_into(ps::plugin_state)
                .values((
                    ps::name.eq(name),
                    ps::enabled.eq(true),
                    ps::version.eq(version),
                    ps::mode.eq(mode),
                    ps::installed_at.eq(now),
                    ps::updated_at.eq(now),
                ))
                .execute(c))
        })
        // The new record has the defaults; the update gives it what was asked.
        .and_then(|inserted| if inserted { update(&mut conn).map(drop) } else { Ok(()) });
        r.map_err(|e| self.query_error(e))
    }

    /// Records a successful load; keeps `enabled` and `installed_at`.
    pub fn record_loaded(
        &self,
        name: &str,
        version: &str,
        mode: &str,
        signed_by: Option<&str>,
    ) -> Result<(), DbError> {
        self.update_record(name, version, mode, |conn, now| {
            with_conn!(conn, c => diesel::update(ps::plugin_state.find(name))
                .set((ps::version.eq(version), ps::mode.eq(mode), ps::signed_by.eq(signed_by), ps::updated_at.eq(now)))
                .execute(c))
        })
    }

    /// Records where `name` was installed from (`xcore plugin add`) and the SHA-256 of the
    /// library this host built from it; `version` and `mode` fill a first record.
    pub fn record_source(
        &self,
        name: &str,
        version: &str,
        mode: &str,
        source: &str,
        library_sha256: Option<&str>,
    ) -> Result<(), DbError> {
        self.update_record(name, version, mode, |conn, now| {
            with_conn!(conn, c => diesel::update(ps::plugin_state.find(name))
                .set((ps::source.eq(source), ps::library_sha256.eq(library_sha256), ps::updated_at.eq(now)))
                .execute(c))
        })
    }

    /// Sets whether `name` is enabled; `version` and `mode` fill a first record.
    pub fn set_enabled(&self, name: &str, enabled: bool, version: &str, mode: &str) -> Result<(), DbError> {
        self.update_record(name, version, mode, |conn, now| {
            with_conn!(conn, c => diesel::update(ps::plugin_state.find(name))
                .set((ps::enabled.eq(enabled), ps::updated_at.eq(now)))
                .execute(c))
        })
    }

    /// Every remembered plugin, by name.
    pub fn plugin_records(&self) -> Result<Vec<PluginRecord>, DbError> {
        let mut conn = self.db.conn()?;
        with_conn!(&mut conn, c => ps::plugin_state.order(ps::name.asc()).load::<PluginRecord>(c))
            .map_err(|e| self.query_error(e))
    }

    /// The names of the plugins an operator disabled.
    pub fn disabled_plugins(&self) -> Result<Vec<String>, DbError> {
        let mut conn = self.db.conn()?;
        with_conn!(&mut conn, c => ps::plugin_state.filter(ps::enabled.eq(false)).select(ps::name).load::<String>(c))
            .map_err(|e| self.query_error(e))
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::sqlite_store;

    #[test]
    fn disabling_survives_a_new_load_record() {
        let (_d, s) = sqlite_store();
        s.record_loaded("echo", "0.1.0", "trusted", None).unwrap();
        s.set_enabled("echo", false, "0.1.0", "trusted").unwrap();
        s.record_loaded("echo", "0.2.0", "trusted", Some("ab12")).unwrap();
        assert_eq!(s.disabled_plugins().unwrap(), ["echo"]);
        let r = &s.plugin_records().unwrap()[0];
        assert_eq!((r.version.as_str(), r.enabled, r.signed_by.as_deref()), ("0.2.0", false, Some("ab12")));
        s.record_source("echo", "", "", "https://example.org/echo.git@abc123", Some("ab12")).unwrap();
        let r = &s.plugin_records().unwrap()[0];
        assert_eq!(r.source.as_deref(), Some("https://example.org/echo.git@abc123"));
        assert_eq!(r.library_sha256.as_deref(), Some("ab12"));
        s.set_enabled("never-loaded", false, "", "").unwrap();
        s.set_enabled("echo", true, "", "").unwrap();
        assert_eq!(s.disabled_plugins().unwrap(), ["never-loaded"]);
    }
}
