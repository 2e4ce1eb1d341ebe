//! The host's schema migrations on SQLite (always) and on the PostgreSQL and MySQL of
//! `XCORE_TEST_POSTGRES_URL` / `XCORE_TEST_MYSQL_URL` (when set; CI sets them), through
//! the real binary: status, run, revert, and the server applying them at start.

mod common;

use std::process::Command;

use diesel::{Connection, RunQueryDsl};
use xcore_db::Backend;

use common::{PluginSpec, Server, TempDatabase};

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
    let out = migrate(dir.path(), url, "status");
    assert!(out.contains("pending: 20261126000001") && out.contains("20261201000001"), "{out}");
    let out = migrate(dir.path(), url, "run");
    assert!(
        out.contains("applied 20261126000001")
            && out.contains("applied 20261201000001")
            && out.contains("pending: none"),
        "{out}"
    );
    write();
    assert!(migrate(dir.path(), url, "run").contains("pending: none"), "idempotent");
    // Revert goes back one migration at a time, the newest first.
    let out = migrate(dir.path(), url, "revert");
    assert!(out.contains("reverted 20261201000001") && out.contains("applied: 20261126000001"), "{out}");
    let out = migrate(dir.path(), url, "revert");
    assert!(out.contains("reverted 20261126000001") && out.contains("applied: none"), "{out}");
}

const INSERTS: &[&str] = &[
    "INSERT INTO plugin_state (name, version, mode, installed_at, updated_at, library_sha256) VALUES ('echo', '0.1.0', 'trusted', 0, 0, 'ab')",
    "INSERT INTO plugin_kv (plugin, {key}, value, updated_at) VALUES ('echo', 'k', '\"v\"', 0)",
    "INSERT INTO job_runs (job_id, started_at, outcome) VALUES ('j', 0, 'ok')",
    "INSERT INTO audit_log (at, actor, action, target, outcome) VALUES (0, 'admin', 'reload', 'echo', 'ok')",
    "INSERT INTO plugin_migrations (plugin, version, applied_at) VALUES ('echo', '1', 0)",
];

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
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("applied: 20261126000001, 20261201000001"),
        "{out:?}"
    );
}

/// The round trip on a fresh database of the server of `env_var`; `quote` is how the
/// back-end quotes the `key` column.
fn server_round_trip(env_var: &str, backend: Backend, quote: &str) {
    let Some(db) = TempDatabase::from_env(env_var, backend) else { return };
    round_trip(&db.url, || {
        for sql in INSERTS {
            let sql = sql.replace("{key}", quote);
            // On PostgreSQL the host's tables live in the schema `xcore`.
            let sql = match backend {
                Backend::Postgres => sql.replace("INSERT INTO ", "INSERT INTO xcore."),
                _ => sql,
            };
            common::admin_execute(&db.url, backend, &sql).unwrap();
        }
    });
}

#[test]
fn postgres_migrates() {
    server_round_trip("XCORE_TEST_POSTGRES_URL", Backend::Postgres, "key");
}

#[test]
fn mysql_migrates() {
    server_round_trip("XCORE_TEST_MYSQL_URL", Backend::Mysql, "`key`");
}
