//! The audit log: every admin action, who asked, what it did to what, and how it ended.

use diesel::prelude::*;
use serde::Serialize;

use super::{now_ms, rfc3339, Store};
use crate::schema::audit_log::dsl as al;
use crate::with_conn;
use crate::DbError;

/// One admin action.
#[derive(Debug, Clone, PartialEq, Serialize, Queryable)]
pub struct AuditEntry {
    /// Increasing id (for paging).
    pub id: i64,
    /// When (Unix ms).
    pub at: i64,
    /// Who: `admin@<peer address>` for the HTTP API, `cli` for local commands.
    pub actor: String,
    /// What: `load`, `reload`, `disable`, `job.run`...
    pub action: String,
    /// On what: a plugin, an event, a job.
    pub target: String,
    /// `ok` or `error`.
    pub outcome: String,
    /// The error, or what the action returned worth keeping.
    pub detail: Option<String>,
}

impl AuditEntry {
    /// As JSON with a readable time.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["at"] = rfc3339(self.at).into();
        v
    }
}

/// Which entries to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this action.
    pub action: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// Only entries older than this id (the previous page's last id).
    pub before: Option<i64>,
    /// At most this many (capped at 1000).
    pub limit: usize,
}

impl Store {
    /// Appends an entry.
    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<(), DbError> {
        let mut conn = self.db.conn()?;
        with_conn!(&mut conn, c => diesel::insert_into(al::audit_log)
            .values((
                al::at.eq(now_ms()),
                al::actor.eq(actor),
                al::action.eq(action),
                al::target.eq(target),
                al::outcome.eq(outcome),
                al::detail.eq(detail),
            ))
            .execute(c))
        .map(drop)
        .map_err(|e| self.query_error(e))
    }

    /// Entries, newest first.
    pub fn audit_entries(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, DbError> {
        let mut conn = self.db.conn()?;
        let limit = q.limit.clamp(1, 1000) as i64;
        with_conn!(&mut conn, c => {
            let mut query = al::audit_log.into_boxed();
            if let Some(a) = &q.action {
                query = query.filter(al::action.eq(a));
            }
            if let Some(t) = &q.target {
                query = query.filter(al::target.eq(t));
            }
            if let Some(b) = q.before {
                query = query.filter(al::id.lt(b));
            }
            query.order(al::id.desc()).limit(limit).load::<AuditEntry>(c)
        })
        .map_err(|e| self.query_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::sqlite_store;

    #[test]
    fn entries_newest_first_filtered_and_paged() {
        let (_d, s) = sqlite_store();
        s.audit("admin@127.0.0.1", "load", "echo", "ok", None).unwrap();
        s.audit("admin@127.0.0.1", "unload", "echo", "error", Some("required by notes")).unwrap();
        s.audit("cli", "load", "notes", "ok", None).unwrap();
        let all = s.audit_entries(&AuditQuery { limit: 10, ..Default::default() }).unwrap();
        assert_eq!(all.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(), ["notes", "echo", "echo"]);
        let loads = s
            .audit_entries(&AuditQuery { action: Some("load".into()), limit: 10, ..Default::default() })
            .unwrap();
        assert_eq!(loads.len(), 2);
        let page =
            s.audit_entries(&AuditQuery { before: Some(all[0].id), limit: 1, ..Default::default() }).unwrap();
        assert_eq!(page[0].detail.as_deref(), Some("required by notes"));
    }
}
