//! A plugin's SQL never reaches the host's tables nor another plugin's, through the real
//! binary, real plugins (the `hostile` fixture runs the SQL given in its input) and real
//! HTTP: on SQLite always, and on the PostgreSQL and MySQL/MariaDB servers of
//! `XCORE_TEST_POSTGRES_URL` / `XCORE_TEST_MYSQL_URL` when set (skipped with a printed
//! line otherwise), each on a fresh database.
//!
//! Every refusal is checked for its status (403 `permission_denied`), for naming what was
//! refused, and for having changed nothing. Beside them, the plugin's own table works,
//! so a test where everything were refused would fail.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::Connection;
use serde_json::{json, Value};
use xcore_db::Backend;

use common::{PluginSpec, Server, TempDatabase};

/// The `hostile` fixture as plugin `name`, with these permissions.
fn sql_plugin(name: &str, permissions: &str) -> PluginSpec {
    PluginSpec::with(name, "xcore-fixture-hostile", &format!("permissions: {permissions}"))
}

fn start(db: &Option<TempDatabase>) -> Server {
    let env: Vec<(&str, &str)> = db.iter().map(|d| ("DATABASE_URL", d.url.as_str())).collect();
    let s = Server::start_full(
        &[
            sql_plugin("hostile", r#"[kv, "db:default"]"#),
            sql_plugin("victim", r#"[kv, "db:default"]"#),
            sql_plugin("reader", r#"[kv, "db:default:read"]"#),
        ],
        "",
        &env,
    );
    for p in ["hostile", "victim", "reader"] {
        s.wait_state(p, "ready", Duration::from_secs(30));
    }
    s
}

fn exec(s: &Server, plugin: &str, sql: &str) -> common::Reply {
    s.call(plugin, "sql_execute", &json!({ "sql": sql }).to_string())
}

fn query(s: &Server, plugin: &str, sql: &str) -> common::Reply {
    s.call(plugin, "sql_query", &json!({ "sql": sql }).to_string())
}

/// A 403 `permission_denied` whose message contains every one of `names`.
fn assert_refused(r: &common::Reply, names: &[&str], what: &str) {
    assert_eq!((r.status, r.code().as_str()), (403, "permission_denied"), "{what}: {}", r.body);
    for n in names {
        assert!(r.body.contains(n), "{what}: the refusal does not name {n}: {}", r.body);
    }
}

fn ok(r: common::Reply, what: &str) -> Value {
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    r.json()
}

fn kv_get(s: &Server, plugin: &str, key: &str) -> Value {
    ok(s.call(plugin, "kv_get", &json!({ "key": key }).to_string()), "kv_get")["value"].clone()
}

fn audit_count(s: &Server) -> usize {
    let r = s.request_admin("GET", "/api/v1/audit?limit=1000");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["entries"].as_array().map_or(0, Vec::len)
}

fn db_name(db: &Option<TempDatabase>) -> String {
    let url = &db.as_ref().expect("a server database").url;
    url.rsplit('/').next().unwrap_or_default().split('?').next().unwrap_or_default().to_string()
}

/// The names by which the host's tables (`owner` None) and another plugin's can be
/// reached on each back-end, each with what its refusal must name: the bare name, and
/// SQLite's schema `main`, PostgreSQL's schemas (the refusal names the schema), the MySQL
/// databases.
fn qualified(
    backend: Backend,
    db: &Option<TempDatabase>,
    table: &str,
    owner: Option<&str>,
) -> Vec<(String, String)> {
    let mut names = vec![(table.to_string(), table.to_string())];
    match backend {
        Backend::Sqlite => names.push((format!("main.{table}"), table.to_string())),
        Backend::Postgres => {
            let schema = match owner {
                None => "xcore".to_string(),
                Some(p) => format!("xcore_p_{p}"),
            };
            names.push((format!("{schema}.{table}"), schema));
        }
        Backend::Mysql => {
            let database = match owner {
                None => db_name(db),
                Some(p) => xcore_db::namespace::server_ident(&db_name(db), p, 32),
            };
            names.push((format!("{database}.{table}"), table.to_string()));
        }
    }
    names
}

/// Every check that holds on every back-end.
fn isolation(backend: Backend, db: Option<TempDatabase>) {
    let s = start(&db);

    // The plugin's own namespace works (so a refusal below is not "everything fails").
    ok(exec(&s, "hostile", "CREATE TABLE hostile_t (id INTEGER PRIMARY KEY, v VARCHAR(20))"), "own table");
    ok(exec(&s, "hostile", "INSERT INTO hostile_t (id, v) VALUES (1, 'a')"), "own insert");
    let rows = ok(query(&s, "hostile", "SELECT v FROM hostile_t"), "own select");
    assert_eq!(rows["rows"], json!([{ "v": "a" }]));

    // Another plugin's key-value rows: neither read nor overwritten.
    ok(s.call("victim", "kv_set", &json!({ "key": "secret", "value": "v1" }).to_string()), "kv_set");
    for (t, named) in qualified(backend, &db, "plugin_kv", None) {
        assert_refused(&query(&s, "hostile", &format!("SELECT * FROM {t}")), &[&named], &t);
        let r = exec(&s, "hostile", &format!("UPDATE {t} SET value = '\"pwned\"' WHERE plugin = 'victim'"));
        assert_refused(&r, &[&named], &t);
        assert_refused(&query(&s, "reader", &format!("SELECT * FROM {t}")), &[&named], &t);
    }
    assert_eq!(kv_get(&s, "victim", "secret"), json!("v1"), "the victim's value is unchanged");

    // The audit log: no delete, and it keeps its entries (a reload makes one).
    let r = s.post_with("/api/v1/plugins/victim/reload", "", Some(common::TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    s.wait_state("victim", "ready", Duration::from_secs(30));
    let before = audit_count(&s);
    assert!(before > 0, "the reload is in the audit log");
    for (t, named) in qualified(backend, &db, "audit_log", None) {
        assert_refused(&exec(&s, "hostile", &format!("DELETE FROM {t}")), &[&named], &t);
    }
    assert_eq!(audit_count(&s), before, "the audit log is intact");

    // Another plugin's table.
    ok(
        exec(&s, "victim", "CREATE TABLE victim_items (id INTEGER PRIMARY KEY, v VARCHAR(20))"),
        "victim table",
    );
    ok(exec(&s, "victim", "INSERT INTO victim_items (id, v) VALUES (1, 'mine')"), "victim insert");
    for (t, named) in qualified(backend, &db, "victim_items", Some("victim")) {
        assert_refused(&query(&s, "hostile", &format!("SELECT * FROM {t}")), &[&named], &t);
        assert_refused(&exec(&s, "hostile", &format!("DELETE FROM {t}")), &[&named], &t);
    }
    let rows = ok(query(&s, "victim", "SELECT v FROM victim_items"), "victim select");
    assert_eq!(rows["rows"], json!([{ "v": "mine" }]), "the victim's rows are unchanged");

    // A plugin's session settings stay on its own connections: another plugin's writes
    // (and the host's key-value writes) all succeed afterwards.
    let setting = match backend {
        Backend::Sqlite => "PRAGMA query_only = ON",
        Backend::Postgres => "SET default_transaction_read_only = on",
        Backend::Mysql => "SET SESSION TRANSACTION READ ONLY",
    };
    let r = exec(&s, "hostile", setting);
    if backend == Backend::Sqlite {
        assert_refused(&r, &["PRAGMA query_only"], setting);
    }
    for i in 0..20 {
        ok(
            s.call("victim", "kv_set", &json!({ "key": format!("k{i}"), "value": i }).to_string()),
            "kv write",
        );
        ok(
            exec(&s, "victim", &format!("INSERT INTO victim_items (id, v) VALUES ({}, 'w')", i + 2)),
            "sql write",
        );
    }
    let rows = ok(query(&s, "victim", "SELECT COUNT(*) AS n FROM victim_items"), "count");
    assert_eq!(rows["rows"][0]["n"], json!(21), "20 of 20 writes of the other plugin landed");
    assert_eq!(kv_get(&s, "victim", "k19"), json!(19));
}

#[test]
fn sqlite_plugins_reach_only_their_own_tables() {
    isolation(Backend::Sqlite, None);
}

#[test]
fn postgres_plugins_reach_only_their_own_tables() {
    if let Some(db) = TempDatabase::from_env("XCORE_TEST_POSTGRES_URL", Backend::Postgres) {
        isolation(Backend::Postgres, Some(db));
    }
}

#[test]
fn mysql_plugins_reach_only_their_own_tables() {
    if let Some(db) = TempDatabase::from_env("XCORE_TEST_MYSQL_URL", Backend::Mysql) {
        isolation(Backend::Mysql, Some(db));
    }
}

/// SQLite's escapes, each refused by the authorizer, with nothing created on disk and
/// the connection left as it was.
#[test]
fn sqlite_escapes_are_refused() {
    let s = start(&None);
    ok(exec(&s, "hostile", "CREATE TABLE hostile_t (id INTEGER PRIMARY KEY)"), "own table");
    let outside = tempfile::tempdir().unwrap();

    // ATTACH creates a file anywhere: refused with read access and with write access.
    let attached = outside.path().join("attached.db");
    let attach = format!("ATTACH DATABASE '{}' AS a", attached.display());
    assert_refused(&query(&s, "reader", &attach), &["ATTACH"], "ATTACH with db:default:read");
    assert_refused(&exec(&s, "hostile", &attach), &["ATTACH"], "ATTACH with db:default");
    assert!(!attached.exists(), "ATTACH created {}", attached.display());

    // VACUUM INTO copies the database anywhere.
    let copy = outside.path().join("copy.db");
    let vacuum = format!("VACUUM INTO '{}'", copy.display());
    assert_refused(&exec(&s, "hostile", &vacuum), &["VACUUM"], "VACUUM INTO");
    assert_refused(&query(&s, "reader", &vacuum), &["VACUUM"], "VACUUM INTO with db:default:read");
    assert!(!copy.exists(), "VACUUM INTO created {}", copy.display());

    // Pragma writes, in both spellings; a pragma read stays allowed.
    assert_refused(&exec(&s, "hostile", "PRAGMA query_only = ON"), &["PRAGMA query_only"], "pragma");
    assert_refused(&exec(&s, "hostile", "PRAGMA query_only(1)"), &["PRAGMA query_only"], "pragma()");
    assert_refused(&exec(&s, "hostile", "PRAGMA journal_mode = DELETE"), &["PRAGMA journal_mode"], "wal off");
    let r = ok(query(&s, "hostile", "PRAGMA query_only"), "pragma read");
    assert_eq!(r["rows"][0]["query_only"], json!(0), "query_only is off: {r}");

    // Temporary objects and open transactions would outlive the call.
    let r = exec(
        &s,
        "hostile",
        "CREATE TEMP TRIGGER t AFTER INSERT ON hostile_t BEGIN DELETE FROM hostile_t; END",
    );
    assert_refused(&r, &["temporary"], "temp trigger");
    assert_refused(&exec(&s, "hostile", "CREATE TEMP TABLE x (id INTEGER)"), &["temporary"], "temp table");
    assert_refused(&exec(&s, "hostile", "BEGIN"), &["transaction"], "BEGIN");

    // Every connection of the plugin's pool still writes (4 connections, 20 writes).
    for i in 0..20 {
        ok(
            exec(&s, "hostile", &format!("INSERT INTO hostile_t (id) VALUES ({i})")),
            "write after the attempts",
        );
    }
    let rows = ok(query(&s, "hostile", "SELECT COUNT(*) AS n FROM hostile_t"), "count");
    assert_eq!(rows["rows"][0]["n"], json!(20));

    // The namespace is a file of its own beside the host's.
    let data = s.dir.path().join("data");
    assert!(data.join("plugins/hostile.db").is_file() && data.join("xcore.db").is_file());
    let metrics = s.get("/metrics").body;
    assert!(metrics.contains("xcore_db_plugin_pools "), "{metrics}");
}

/// Another SQLite database the operator granted: the plugin reaches all of it, still
/// under the authorizer.
#[test]
fn sqlite_operator_databases_are_whole_but_guarded() {
    let s = Server::start_with(
        &[sql_plugin("hostile", r#"[kv, "db:default", "db:reports"]"#)],
        "databases:\n  default:\n    url: sqlite://data/xcore.db\n  reports:\n    url: sqlite://data/reports.db\n",
    );
    s.wait_state("hostile", "ready", Duration::from_secs(30));
    let run = |action: &str, sql: &str| {
        s.call("hostile", action, &json!({ "database": "reports", "sql": sql }).to_string())
    };
    ok(run("sql_execute", "CREATE TABLE shared_totals (n INTEGER)"), "any table name on reports");
    ok(run("sql_execute", "INSERT INTO shared_totals VALUES (7)"), "insert");
    assert_eq!(ok(run("sql_query", "SELECT n FROM shared_totals"), "select")["rows"], json!([{ "n": 7 }]));
    let attached = s.dir.path().join("attached.db");
    let attach = format!("ATTACH DATABASE '{}' AS a", attached.display());
    assert_refused(&run("sql_execute", &attach), &["ATTACH"], "ATTACH on reports");
    assert!(!attached.exists());
    assert_refused(
        &run("sql_execute", "PRAGMA query_only = ON"),
        &["PRAGMA query_only"],
        "pragma on reports",
    );
    // The host's tables are not on reports, and `default` is still the namespace.
    assert_refused(&exec(&s, "hostile", "DELETE FROM audit_log"), &["audit_log"], "audit_log");
}

// ---------------------------------------------------------------------------------------
// An installation of the former layout, upgraded

fn try_batch(url: &str, backend: Backend, sql: &str) -> Result<(), String> {
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
    use diesel_async::{AsyncMysqlConnection, AsyncPgConnection};
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || match backend {
        Backend::Postgres => AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .map_err(|e| e.to_string())?
            .batch_execute(&sql)
            .map_err(|e| e.to_string()),
        Backend::Mysql => AsyncConnectionWrapper::<AsyncMysqlConnection>::establish(&url)
            .map_err(|e| e.to_string())?
            .batch_execute(&sql)
            .map_err(|e| e.to_string()),
        Backend::Sqlite => diesel::SqliteConnection::establish(&url)
            .map_err(|e| e.to_string())?
            .batch_execute(&sql)
            .map_err(|e| e.to_string()),
    })
    .join()
    .map_err(|_| "the SQL thread panicked".to_string())?
}

fn batch(url: &str, backend: Backend, sql: &str) {
    try_batch(url, backend, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

const BOOKMARKS: &str = "INSERT INTO bookmarks_items (url, title, created_at) VALUES \
     ('https://example.org/old-1', 'Old one', 1), ('https://example.org/old-2', 'Old two', 2)";

/// The host's migrations by `xcore migrate run` in `dir`, then the layout of the version
/// before this one: (on PostgreSQL) the host's tables back in `public`, and the bookmarks
/// example's table, rows and migration record beside them.
fn old_layout(dir: &Path, url: &str, backend: Backend) {
    let out = Command::new(env!("CARGO_BIN_EXE_xcore"))
        .args(["migrate", "run"])
        .env("DATABASE_URL", url)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/bookmarks/migrations");
    let dialect = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
        Backend::Mysql => "mysql",
    };
    let up = std::fs::read_to_string(root.join(dialect).join("0001_create_items/up.sql")).unwrap();
    let mut sql = String::new();
    if backend == Backend::Postgres {
        for t in xcore_db::namespace::HOST_TABLES {
            sql.push_str(&format!("ALTER TABLE xcore.{t} SET SCHEMA public;"));
        }
        sql.push_str("DROP SCHEMA xcore CASCADE;");
    }
    sql.push_str(up.trim().trim_end_matches(';'));
    sql.push_str(&format!(
        ";{BOOKMARKS}; INSERT INTO plugin_migrations (plugin, version, applied_at) VALUES ('bookmarks', '0001_create_items', 0)"
    ));
    batch(url, backend, &sql);
}

fn count(url: &str, backend: Backend, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    use diesel::RunQueryDsl;
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
    use diesel_async::{AsyncMysqlConnection, AsyncPgConnection};
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let rows: Vec<N> = match backend {
            Backend::Postgres => diesel::sql_query(sql)
                .load(&mut AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).unwrap())
                .unwrap(),
            Backend::Mysql => diesel::sql_query(sql)
                .load(&mut AsyncConnectionWrapper::<AsyncMysqlConnection>::establish(&url).unwrap())
                .unwrap(),
            Backend::Sqlite => {
                diesel::sql_query(sql).load(&mut diesel::SqliteConnection::establish(&url).unwrap()).unwrap()
            }
        };
        rows[0].n
    })
    .join()
    .expect("the SQL thread")
}

fn bookmark_urls(s: &Server) -> Vec<String> {
    let r = s.request("GET", "/plugins/bookmarks/bookmarks", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["bookmarks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["url"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The bookmarks example's data of the former layout survives the upgrade: moved into
/// its namespace on first start, still there (and not moved twice) on the next.
fn upgrade(backend: Backend, db: Option<TempDatabase>) {
    let env: Vec<(&str, &str)> = db.iter().map(|d| ("DATABASE_URL", d.url.as_str())).collect();
    let url = db.as_ref().map(|d| d.url.clone());
    let mut s = Server::start_custom(
        |plugins| {
            let dir = plugins.parent().unwrap();
            let url = url.clone().unwrap_or_else(|| format!("{}", dir.join("data/xcore.db").display()));
            old_layout(dir, &url, backend);
            common::write_plugins(plugins, &[PluginSpec::bookmarks(None)]);
        },
        "",
        &env,
        &[],
    );
    s.wait_state("bookmarks", "ready", Duration::from_secs(30));
    let old = ["https://example.org/old-1", "https://example.org/old-2"];
    assert_eq!(bookmark_urls(&s), old, "{}", s.output());
    let r = s.request("POST", "/plugins/bookmarks/bookmarks", Some(r#"{"url": "https://example.org/new"}"#));
    assert_eq!(r.status, 200, "{}", r.body);

    // The table left the host's tables, its migration record with it.
    let host_url = url.clone().unwrap_or_else(|| s.dir.path().join("data/xcore.db").display().to_string());
    let (host_tables, records) = match backend {
        Backend::Sqlite => (
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 'bookmarks_items'",
            "SELECT COUNT(*) AS n FROM plugin_migrations WHERE plugin = 'bookmarks'",
        ),
        Backend::Postgres => (
            "SELECT COUNT(*) AS n FROM pg_tables WHERE tablename = 'bookmarks_items' AND schemaname IN ('public', 'xcore')",
            "SELECT COUNT(*) AS n FROM xcore.plugin_migrations WHERE plugin = 'bookmarks'",
        ),
        Backend::Mysql => (
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_name = 'bookmarks_items' AND table_schema = DATABASE()",
            "SELECT COUNT(*) AS n FROM plugin_migrations WHERE plugin = 'bookmarks'",
        ),
    };
    assert_eq!(count(&host_url, backend, host_tables), 0, "bookmarks_items is still among the host's tables");
    assert_eq!(count(&host_url, backend, records), 0, "the migration record stayed with the host");
    if backend == Backend::Sqlite {
        let own = s.dir.path().join("data/plugins/bookmarks.db").display().to_string();
        assert_eq!(count(&own, backend, "SELECT COUNT(*) AS n FROM bookmarks_items"), 3);
        assert_eq!(count(&own, backend, "SELECT COUNT(*) AS n FROM plugin_migrations"), 1, "recorded once");
    }

    // A second start moves nothing and runs no migration again.
    s.restart();
    s.wait_state("bookmarks", "ready", Duration::from_secs(30));
    let mut all = old.map(String::from).to_vec();
    all.push("https://example.org/new".into());
    assert_eq!(bookmark_urls(&s), all, "{}", s.output());
}

#[test]
fn sqlite_upgrade_keeps_the_bookmarks() {
    upgrade(Backend::Sqlite, None);
}

#[test]
fn postgres_upgrade_keeps_the_bookmarks() {
    if let Some(db) = TempDatabase::from_env("XCORE_TEST_POSTGRES_URL", Backend::Postgres) {
        upgrade(Backend::Postgres, Some(db));
    }
}

#[test]
fn mysql_upgrade_keeps_the_bookmarks() {
    if let Some(db) = TempDatabase::from_env("XCORE_TEST_MYSQL_URL", Backend::Mysql) {
        upgrade(Backend::Mysql, Some(db));
    }
}
