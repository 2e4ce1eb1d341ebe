//! The host's schema migrations: embedded per dialect, applied when the server starts,
//! and driven by `xcore migrate status | run | revert`.
//!
//! These functions block: diesel's migration harness is synchronous. For PostgreSQL and
//! MySQL the async connection is wrapped (`AsyncConnectionWrapper`), which runs its own
//! small runtime when called outside one, so call them from a plain thread, never from
//! inside an async task.

use diesel::migration::MigrationSource;
use diesel::Connection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncMysqlConnection, AsyncPgConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use serde::Serialize;

use super::{mask_url, sqlite_path, Backend, DbError};

const SQLITE: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
const MYSQL: EmbeddedMigrations = embed_migrations!("../../migrations/mysql");

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// List applied and pending migrations.
    Status,
    /// Apply every pending migration.
    Run,
    /// Revert the last applied migration.
    Revert,
}

/// The outcome for one database.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// Database name.
    pub database: String,
    /// Its back-end.
    pub backend: Backend,
    /// Migrations applied (after the operation), oldest first.
    pub applied: Vec<String>,
    /// Migrations not applied.
    pub pending: Vec<String>,
    /// What the operation changed (applied or reverted versions).
    pub changed: Vec<String>,
}

/// (applied, pending, changed) version lists.
type Outcome = (Vec<String>, Vec<String>, Vec<String>);

fn operate<C, DB>(conn: &mut C, source: fn() -> EmbeddedMigrations, op: Op) -> Result<Outcome, String>
where
    DB: diesel::backend::Backend,
    C: MigrationHarness<DB>,
    EmbeddedMigrations: MigrationSource<DB>,
{
    let changed = match op {
        Op::Status => Vec::new(),
        Op::Run => conn
            .run_pending_migrations(source())
            .map_err(|e| e.to_string())?
            .iter()
            .map(|v| v.to_string())
            .collect(),
        Op::Revert => vec![conn.revert_last_migration(source()).map_err(|e| e.to_string())?.to_string()],
    };
    let mut applied: Vec<String> =
        conn.applied_migrations().map_err(|e| e.to_string())?.iter().map(|v| v.to_string()).collect();
    applied.sort();
    let pending = conn
        .pending_migrations(source())
        .map_err(|e| e.to_string())?
        .iter()
        .map(|m| m.name().version().to_string())
        .collect();
    Ok((applied, pending, changed))
}

/// Runs `op` on the database `name` at `url`. Blocking; see the module docs.
pub fn migrate(name: &str, url: &str, op: Op) -> Result<Report, DbError> {
    let backend = Backend::of(name, url)?;
    let connect = |reason: String| DbError::Connect { name: name.into(), url: mask_url(url), reason };
    let result = match backend {
        Backend::Sqlite => {
            let path = sqlite_path(url);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| connect(format!("creating {}: {e}", parent.display())))?;
            }
            let mut conn = diesel::SqliteConnection::establish(&path.to_string_lossy())
                .map_err(|e| connect(e.to_string()))?;
            operate(&mut conn, || SQLITE, op)
        }
        Backend::Postgres => {
            let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(url)
                .map_err(|e| connect(e.to_string()))?;
            // The host's tables (diesel's record of them included) live in the schema
            // `xcore`, apart from plugins' (see db::namespace).
            if name == "default" {
                super::namespace::pg_prepare_host(&mut conn).map_err(|e| DbError::Migration {
                    name: name.into(),
                    reason: format!("preparing the host's schema {}: {e}", super::PG_HOST_SCHEMA),
                })?;
            }
            operate(&mut conn, || POSTGRES, op)
        }
        Backend::Mysql => {
            let mut conn = AsyncConnectionWrapper::<AsyncMysqlConnection>::establish(url)
                .map_err(|e| connect(e.to_string()))?;
            operate(&mut conn, || MYSQL, op)
        }
    };
    let (applied, pending, changed) =
        result.map_err(|reason| DbError::Migration { name: name.into(), reason })?;
    Ok(Report { database: name.into(), backend, applied, pending, changed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_runs_reverts_and_reports() {
        let d = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", d.path().join("sub/x.db").display());
        let r = migrate("t", &url, Op::Status).unwrap();
        // The host tables, then plugin_state.library_sha256.
        assert!(r.applied.is_empty() && r.pending.len() == 2, "{r:?}");
        let r = migrate("t", &url, Op::Run).unwrap();
        assert_eq!((r.applied.len(), r.pending.len(), r.changed.len()), (2, 0, 2), "{r:?}");
        assert!(migrate("t", &url, Op::Run).unwrap().changed.is_empty(), "idempotent");
        let r = migrate("t", &url, Op::Revert).unwrap();
        assert_eq!((r.applied.len(), r.pending.len()), (1, 1), "{r:?}");
        let r = migrate("t", &url, Op::Revert).unwrap();
        assert_eq!((r.applied.len(), r.pending.len()), (0, 2), "{r:?}");
    }
}
