//! The host's schema migrations on SQLite (always) and on the PostgreSQL and MySQL of
//! `XCORE_TEST_POSTGRES_URL` / `XCORE_TEST_MYSQL_URL` (when set; CI sets them), through
//! the real binary: status, run, revert, and the server applying them at start.

mod common;

use std::process::Command;

use diesel::{Connection, RunQueryDsl};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncMysqlConnection, AsyncPgConnection};

use common::{PluginSpec, Server};

fn migrate(dir: &std::path::Path, url: &str, action: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_xcore"))
        .args(["migrate", action])
        .env("DATABASE_URL", url)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "migrate {action}: {text}");
    text
}

/// status, run, a write into every table, status, revert, status.
fn round_trip(url: &str, mut write: impl FnMut()) {
    let dir = tempfile::tempdir().unwrap();
    assert!(migrate(dir.path(), url, "status").contains("pending: 20261126000001"));
    let out = migrate(dir.path(), url, "run");
    assert!(out.contains("applied 20261126000001") && out.contains("pending: none"), "{out}");
    write();
    assert!(migrate(dir.path(), url, "run").contains("pending: none"), "idempotent");
    let out = migrate(dir.path(), url, "revert");
    assert!(out.contains("reverted 20261126000001") && out.contains("applied: none"), "{out}");
}

const INSERTS: &[&str] = &[
    "INSERT INTO plugin_state (name, version, mode, installed_at, updated_at) VALUES ('echo', '0.1.0', 'trusted', 0, 0)",
    "INSERT INTO plugin_kv (plugin, {key}, value, updated_at) VALUES ('echo', 'k', '\"v\"', 0)",
    "INSERT INTO job_runs (job_id, started_at, outcome) VALUES ('j', 0, 'ok')",
    "INSERT INTO audit_log (at, actor, action, target, outcome) VALUES (0, 'admin', 'reload', 'echo', 'ok')",
    "INSERT INTO plugin_migrations (plugin, version, applied_at) VALUES ('echo', '1', 0)",
];

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
    )
}

/// The URL with its database name replaced.
fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("URL with a database");
    format!("{base}/{db}")
}

#[test]
fn sqlite_migrates_and_the_server_applies_migrations_at_start() {
    let d = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", d.path().join("x.db").display());
    let path = d.path().join("x.db");
    round_trip(&url, || {
        let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        for sql in INSERTS {
            diesel::sql_query(sql.replace("{key}", "key")).execute(&mut conn).unwrap();
        }
    });
    // A server with no configuration creates data/xcore.db and migrates it.
    let s = Server::start(&[PluginSpec::echo()]);
    assert!(s.dir.path().join("data/xcore.db").is_file());
    let out = Command::new(env!("CARGO_BIN_EXE_xcore"))
        .args(["migrate", "status"])
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied: 20261126000001"), "{out:?}");
}

#[test]
fn postgres_migrates() {
    let Ok(base) = std::env::var("XCORE_TEST_POSTGRES_URL") else {
        eprintln!("skipped: XCORE_TEST_POSTGRES_URL not set");
        return;
    };
    let db = unique("xcore_mig");
    let mut admin = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&base).unwrap();
    diesel::sql_query(format!("CREATE DATABASE {db}")).execute(&mut admin).unwrap();
    let url = with_db(&base, &db);
    round_trip(&url, || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).unwrap();
        for sql in INSERTS {
            diesel::sql_query(sql.replace("{key}", "key")).execute(&mut conn).unwrap();
        }
    });
    diesel::sql_query(format!("DROP DATABASE {db} WITH (FORCE)")).execute(&mut admin).unwrap();
}

#[test]
fn mysql_migrates() {
    let Ok(base) = std::env::var("XCORE_TEST_MYSQL_URL") else {
        eprintln!("skipped: XCORE_TEST_MYSQL_URL not set");
        return;
    };
    let db = unique("xcore_mig");
    let mut admin = AsyncConnectionWrapper::<AsyncMysqlConnection>::establish(&base).unwrap();
    diesel::sql_query(format!("CREATE DATABASE {db}")).execute(&mut admin).unwrap();
    let url = with_db(&base, &db);
    round_trip(&url, || {
        let mut conn = AsyncConnectionWrapper::<AsyncMysqlConnection>::establish(&url).unwrap();
        for sql in INSERTS {
            diesel::sql_query(sql.replace("{key}", "`key`")).execute(&mut conn).unwrap();
        }
    });
    diesel::sql_query(format!("DROP DATABASE {db}")).execute(&mut admin).unwrap();
}
