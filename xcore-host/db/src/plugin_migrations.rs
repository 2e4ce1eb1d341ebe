//! A plugin's own migrations: `migrations/<backend>/<version>_<name>/up.sql` in its
//! folder (backend: `sqlite`, `postgres` or `mysql`, as for the host's own), applied in
//! version order when the plugin loads, on every database it may write.
//!
//! Each plugin has a table namespace of its own: every table its migrations create,
//! alter, drop or index must be named `<plugin>_...` (dashes become underscores), so
//! two plugins, or a plugin and the host, can never collide. What ran is recorded in
//! `plugin_migrations` (plugin, version), created on databases that lack it. Down
//! migrations are never run by the host: unloading a plugin never drops its data.
//!
//! The caller passes the plugin's own pool ([`super::Databases::for_plugin`]): on
//! `default` that is the plugin's namespace, so its migrations run with exactly the
//! rights of its SQL (on SQLite under the authorizer; the host's bookkeeping statements,
//! the `plugin_migrations` table and the transaction around each script, are the
//! host's, see [`super::sqlite_guard::as_host`]), and their record lives there too.

use std::path::{Path, PathBuf};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::schema::plugin_migrations::dsl as pm;
use super::sqlite_guard::as_host;
use super::{table_prefix, Backend, Database, DbError};
use crate::with_conn;

/// diesel's transaction manager of a connection, by the connection's type.
struct TransactionManagerOf;

impl TransactionManagerOf {
    fn begin<C: Connection>(c: &mut C) -> QueryResult<()> {
        <C::TransactionManager as diesel::connection::TransactionManager<C>>::begin_transaction(c)
    }
    fn commit<C: Connection>(c: &mut C) -> QueryResult<()> {
        <C::TransactionManager as diesel::connection::TransactionManager<C>>::commit_transaction(c)
    }
    fn rollback<C: Connection>(c: &mut C) -> QueryResult<()> {
        <C::TransactionManager as diesel::connection::TransactionManager<C>>::rollback_transaction(c)
    }
}

/// One migration folder.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginMigration {
    /// The folder name, which sorts by version (`2026-11-26-000001_notes`).
    pub version: String,
    /// Its `up.sql`.
    pub up: PathBuf,
}

fn backend_dir(b: Backend) -> &'static str {
    match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
        Backend::Mysql => "mysql",
    }
}

/// The migrations a plugin ships for `backend`, in version order; none when it ships
/// no folder for that back-end.
pub fn discover(plugin_dir: &Path, backend: Backend) -> Result<Vec<PluginMigration>, String> {
    let dir = plugin_dir.join("migrations").join(backend_dir(backend));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for e in entries.filter_map(Result::ok) {
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let up = e.path().join("up.sql");
        if !up.is_file() {
            return Err(format!("{}: a migration folder needs an up.sql", e.path().display()));
        }
        found.push(PluginMigration { version: e.file_name().to_string_lossy().into_owned(), up });
    }
    found.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(found)
}

/// The tables a statement list touches, from `CREATE/ALTER/DROP TABLE` and
/// `CREATE INDEX ... ON`; quotes and `IF [NOT] EXISTS` are skipped.
fn touched_tables(sql: &str) -> Vec<String> {
    let tokens: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';' || c == ',')
        .filter(|t| !t.is_empty())
        .map(|t| t.trim_matches(|c| c == '"' || c == '`' || c == '[' || c == ']').to_string())
        .collect();
    let upper: Vec<String> = tokens.iter().map(|t| t.to_ascii_uppercase()).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let name_after = |mut j: usize| {
            while j < upper.len() && matches!(upper[j].as_str(), "IF" | "NOT" | "EXISTS" | "ONLY") {
                j += 1;
            }
            tokens.get(j).cloned()
        };
        let kw = upper[i].as_str();
        let table_follows = upper.get(i + 1).is_some_and(|t| t == "TABLE");
        if table_follows && matches!(kw, "CREATE" | "ALTER" | "DROP" | "TEMPORARY") {
            out.extend(name_after(i + 2));
        } else if kw == "INDEX" {
            // CREATE [UNIQUE] INDEX [IF NOT EXISTS] name ON table
            if let Some(on) = upper[i..].iter().position(|t| t == "ON") {
                out.extend(tokens.get(i + on + 1).cloned());
            }
        }
        i += 1;
    }
    out
}

/// Checks that a migration stays in the plugin's namespace.
pub fn check_namespace(plugin: &str, m: &PluginMigration, sql: &str) -> Result<(), String> {
    let prefix = table_prefix(plugin);
    for table in touched_tables(sql) {
        // A schema-qualified name (`main.x`) is judged by its last part.
        let bare = table.rsplit('.').next().unwrap_or(&table).to_ascii_lowercase();
        if !bare.starts_with(&prefix) {
            return Err(format!(
                "{}: table '{table}' is outside plugin '{plugin}''s namespace: name it '{prefix}...'",
                m.up.display()
            ));
        }
    }
    Ok(())
}

pub(crate) const CREATE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS plugin_migrations (plugin VARCHAR(128) NOT NULL, \
     version VARCHAR(128) NOT NULL, applied_at BIGINT NOT NULL, PRIMARY KEY (plugin, version))";

/// Applies the plugin's pending migrations on `db`; returns the versions applied.
/// Blocking.
pub fn apply(plugin: &str, plugin_dir: &Path, db: &Database) -> Result<Vec<String>, DbError> {
    let fail = |reason: String| DbError::Migration { name: db.name().to_string(), reason };
    let migrations = discover(plugin_dir, db.backend()).map_err(fail)?;
    if migrations.is_empty() {
        return Ok(Vec::new());
    }
    let mut scripts = Vec::new();
    for m in &migrations {
        let sql = std::fs::read_to_string(&m.up).map_err(|e| fail(format!("{}: {e}", m.up.display())))?;
        check_namespace(plugin, m, &sql).map_err(fail)?;
        scripts.push(sql);
    }
    let mut conn = db.conn()?;
    let query = |e: diesel::result::Error| fail(e.to_string());
    with_conn!(&mut conn, c => as_host(|| c.batch_execute(CREATE_TABLE))).map_err(query)?;
    let done: Vec<String> = with_conn!(&mut conn, c => as_host(|| pm::plugin_migrations
        .filter(pm::plugin.eq(plugin))
        .select(pm::version)
        .load::<String>(c)))
    .map_err(query)?;
    let mut applied = Vec::new();
    for (m, sql) in migrations.iter().zip(&scripts) {
        if done.contains(&m.version) {
            continue;
        }
        // One transaction per migration where the back-end allows DDL in one
        // (PostgreSQL, SQLite); MySQL commits each DDL statement by itself. Only the
        // script itself runs as the plugin.
        let result: QueryResult<()> = with_conn!(&mut conn, c => (|| {
            as_host(|| TransactionManagerOf::begin(c))?;
            let body = c.batch_execute(sql).and_then(|()| as_host(|| {
                diesel::insert_into(pm::plugin_migrations)
                    .values((pm::plugin.eq(plugin), pm::version.eq(&m.version), pm::applied_at.eq(crate::store::now_ms())))
                    .execute(c)
                    .map(drop)
            }));
            match body {
                Ok(()) => as_host(|| TransactionManagerOf::commit(c)),
                Err(e) => {
                    let _ = as_host(|| TransactionManagerOf::rollback(c));
                    Err(e)
                }
            }
        })());
        result.map_err(|e| fail(format!("{}: {e}", m.up.display())))?;
        log::info!(target: "xcore::db", "plugin '{plugin}': applied migration {} on database '{}'", m.version, db.name());
        applied.push(m.version.clone());
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_rule_reads_ddl() {
        let m = PluginMigration { version: "1".into(), up: "x/up.sql".into() };
        let ok = "CREATE TABLE IF NOT EXISTS bookmarks_items (id INTEGER);\n\
                  CREATE UNIQUE INDEX bookmarks_url ON bookmarks_items (url);\n\
                  ALTER TABLE \"bookmarks_items\" ADD COLUMN x TEXT;";
        check_namespace("bookmarks", &m, ok).unwrap();
        let e = check_namespace("bookmarks", &m, "CREATE TABLE plugin_kv (x INT)").unwrap_err();
        assert!(e.contains("'plugin_kv'") && e.contains("'bookmarks_...'") && e.contains("x/up.sql"), "{e}");
        assert!(check_namespace("bookmarks", &m, "DROP TABLE IF EXISTS audit_log;").is_err());
        assert!(check_namespace("bookmarks", &m, "CREATE INDEX i ON job_runs (x)").is_err());
        assert!(check_namespace("my-plugin", &m, "CREATE TABLE my_plugin_t (x INT)").is_ok());
    }

    #[test]
    fn sqlite_applies_once_in_order() {
        let d = tempfile::tempdir().unwrap();
        let plugin = d.path().join("bookmarks");
        for (v, sql) in [
            ("0002_more", "ALTER TABLE bookmarks_items ADD COLUMN tag TEXT;"),
            ("0001_init", "CREATE TABLE bookmarks_items (id INTEGER PRIMARY KEY, url TEXT NOT NULL);"),
        ] {
            let dir = plugin.join("migrations/sqlite").join(v);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("up.sql"), sql).unwrap();
        }
        let cfg = crate::DatabaseConfig {
            url: format!("sqlite://{}", d.path().join("x.db").display()),
            ..Default::default()
        };
        let db = Database::connect("default", &cfg).unwrap();
        assert_eq!(apply("bookmarks", &plugin, &db).unwrap(), ["0001_init", "0002_more"]);
        assert!(apply("bookmarks", &plugin, &db).unwrap().is_empty(), "applied once");
        let bad = plugin.join("migrations/sqlite/0003_bad");
        std::fs::create_dir_all(&bad).unwrap();
        std::fs::write(bad.join("up.sql"), "CREATE TABLE bookmarks_x (id INTEGER); SELEC nonsense;").unwrap();
        let e = apply("bookmarks", &plugin, &db).unwrap_err().to_string();
        assert!(e.contains("0003_bad/up.sql") && e.contains("database 'default'"), "{e}");
        let mut conn = db.conn().unwrap();
        let n: i64 = with_conn!(&mut conn, c => pm::plugin_migrations.count().get_result(c)).unwrap();
        assert_eq!(n, 2, "the failed migration is not recorded, and its table rolled back");
    }
}
