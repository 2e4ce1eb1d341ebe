//! FFI module: SQLite's authorizer on the connections that run plugins' SQL.
//!
//! Every SQLite connection the host opens passes through [`install`]'s auto-extension,
//! which gets the new connection's `sqlite3*`. A connection opened for a plugin carries a
//! marker in its URI (`file:...?xcore_plugin=<name>&xcore_prefix=<prefix>`, see
//! [`plugin_uri`]); on such a connection the callback arms `sqlite3_set_authorizer`, and
//! from then on SQLite asks [`decide`] about every action of every statement it prepares
//! (re-preparations and trigger bodies included). The host's own connections carry no
//! marker and are not watched.
//!
//! What a plugin's statement may not do, on any SQLite database:
//! - `ATTACH` / `DETACH` (a file created anywhere, another database read), and `VACUUM`,
//!   which works by attaching (so `VACUUM INTO` copies nothing anywhere);
//! - set a pragma (`PRAGMA x = y`, `PRAGMA x(y)`): connection state such as
//!   `query_only` would outlive the call on a pooled connection; the introspection
//!   pragmas that take a table name (`table_info`, `index_list`, ...) stay allowed;
//! - create or drop anything temporary (tables, views, indexes, triggers: connection
//!   state too), or control transactions (`BEGIN`, `COMMIT`, `SAVEPOINT`...: a
//!   transaction left open would hold the next caller's statements);
//! - call `load_extension`.
//!
//! With a prefix (a plugin's own namespace on `default`), every table it names must
//! start with the prefix (`<plugin>_`), or be SQLite's own (`sqlite_*`) or a
//! table-valued function (`json_each`, `pragma_*`...).
//!
//! The host runs a few statements of its own on these connections (the pragmas set when
//! a connection opens, `PRAGMA query_only` around a read-only query, the bookkeeping of
//! plugin migrations): it does so inside [`as_host`], which the authorizer lets through.
//! The flag is per thread, and SQLite calls the authorizer on the thread preparing the
//! statement, so a plugin's statement is never prepared under it.
//!
//! SQLite's own message for a refusal is only "not authorized" (or "access to t.c is
//! prohibited"); the reason
//! [`decide`] gave is kept per thread for [`take_denial`], so that the plugin is told
//! what was refused.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

/// The URI parameter naming the plugin a connection is for.
pub const PLUGIN_PARAM: &str = "xcore_plugin";
/// The URI parameter holding the table prefix its names must carry (absent: any name).
pub const PREFIX_PARAM: &str = "xcore_prefix";

thread_local! {
    static HOST: Cell<bool> = const { Cell::new(false) };
    static DENIAL: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f` with the authorizer letting everything through on this thread: for the
/// host's own statements on a plugin's connection. Never run plugin SQL inside it.
pub fn as_host<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = HOST.try_with(|h| h.set(self.0));
        }
    }
    let _restore = Restore(HOST.try_with(|h| h.replace(true)).unwrap_or(false));
    f()
}

/// The reason of the first refusal on this thread since the last call, and clears it.
pub fn take_denial() -> Option<String> {
    DENIAL.try_with(|d| d.borrow_mut().take()).ok().flatten()
}

/// Registers the auto-extension (once per process); call it before opening any SQLite
/// connection that may carry a plugin marker.
pub fn install() -> Result<(), String> {
    static RC: OnceLock<c_int> = OnceLock::new();
    // SAFETY: `on_open` has exactly the signature SQLite calls an auto-extension with,
    // and is a plain function that lives as long as the process.
    let rc = *RC.get_or_init(|| unsafe { ffi::sqlite3_auto_extension(Some(on_open)) });
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("registering the SQLite authorizer failed (sqlite3_auto_extension returned {rc})"))
    }
}

/// The URI that opens `path` for `plugin`, with `prefix` (or none) as its namespace
/// rule. `path` may carry URI parameters of its own (`x.db?mode=ro`).
pub fn plugin_uri(path: &str, plugin: &str, prefix: Option<&str>) -> String {
    let (file, query) = match path.split_once('?') {
        Some((f, q)) => (f, Some(q)),
        None => (path, None),
    };
    let file = file.replace('%', "%25").replace('#', "%23");
    let mut uri = format!("file:{file}?");
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        uri.push_str(q);
        uri.push('&');
    }
    // Plugin names are `[a-z0-9_-]+` and prefixes `[a-z0-9_]+`: nothing to escape.
    uri.push_str(&format!("{PLUGIN_PARAM}={plugin}"));
    if let Some(p) = prefix {
        uri.push_str(&format!("&{PREFIX_PARAM}={p}"));
    }
    uri
}

/// Reads URI parameter `name` of `db`'s main database.
///
/// # Safety
/// `db` must be an open connection.
unsafe fn uri_param<'a>(db: *mut ffi::sqlite3, name: &CStr) -> Option<&'a str> {
    // SAFETY: `db` is open (the caller's contract); the filename it returns is owned by
    // the connection and suitable for sqlite3_uri_parameter; the parameter's value is a
    // NUL-terminated string owned by the connection, valid while it is open, which
    // outlasts every use here (within one callback).
    unsafe {
        let file = ffi::sqlite3_db_filename(db, c"main".as_ptr());
        if file.is_null() {
            return None;
        }
        let value = ffi::sqlite3_uri_parameter(file, name.as_ptr());
        if value.is_null() {
            return None;
        }
        CStr::from_ptr(value).to_str().ok()
    }
}

/// The auto-extension: arms the authorizer on connections with a plugin marker.
unsafe extern "C" fn on_open(
    db: *mut ffi::sqlite3,
    _err: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    // SAFETY: SQLite calls this with the connection it is opening, open and valid.
    if unsafe { uri_param(db, c"xcore_plugin") }.is_none() {
        return ffi::SQLITE_OK;
    }
    // SAFETY: `db` is valid; `authorize` has the authorizer's signature; its user data is
    // the connection itself, which is valid whenever SQLite calls the authorizer.
    unsafe { ffi::sqlite3_set_authorizer(db, Some(authorize), db.cast()) }
}

/// The authorizer callback.
unsafe extern "C" fn authorize(
    user: *mut c_void,
    action: c_int,
    arg1: *const c_char,
    arg2: *const c_char,
    _database: *const c_char,
    _inner: *const c_char,
) -> c_int {
    if HOST.try_with(Cell::get).unwrap_or(false) {
        return ffi::SQLITE_OK;
    }
    let text = |p: *const c_char| {
        // SAFETY: SQLite passes NULL or a NUL-terminated string valid for the callback.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_str().ok()).flatten()
    };
    // SAFETY: the user data is the connection this authorizer was set on (see on_open).
    let prefix = unsafe { uri_param(user.cast(), c"xcore_prefix") }.filter(|p| !p.is_empty());
    match decide(action, text(arg1), text(arg2), prefix) {
        Ok(()) => ffi::SQLITE_OK,
        Err(reason) => {
            let _ = DENIAL.try_with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(reason);
                }
            });
            ffi::SQLITE_DENY
        }
    }
}

/// Introspection pragmas that take an argument and only read.
const READ_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
];

/// Names a plugin may read without its prefix: SQLite's own tables and the
/// table-valued functions.
fn always_readable(table: &str) -> bool {
    let t = table.to_ascii_lowercase();
    t.starts_with("sqlite_")
        || t.starts_with("pragma_")
        || matches!(t.as_str(), "json_each" | "json_tree" | "jsonb_each" | "jsonb_tree")
}

/// Whether a plugin's statement may do `action` (SQLite's action code, its two
/// arguments), and why not.
pub fn decide(
    action: c_int,
    arg1: Option<&str>,
    arg2: Option<&str>,
    prefix: Option<&str>,
) -> Result<(), String> {
    let table = |t: Option<&str>| -> Result<(), String> {
        match (prefix, t) {
            (Some(p), Some(t)) if !always_readable(t) && !t.to_ascii_lowercase().starts_with(p) => {
                Err(format!(
                    "table '{t}' is outside this plugin's namespace (its tables are named '{p}...'); \
                 the host's tables and other plugins' are not reachable"
                ))
            }
            _ => Ok(()),
        }
    };
    match action {
        ffi::SQLITE_SELECT | ffi::SQLITE_RECURSIVE | ffi::SQLITE_REINDEX => Ok(()),
        ffi::SQLITE_READ
        | ffi::SQLITE_INSERT
        | ffi::SQLITE_UPDATE
        | ffi::SQLITE_DELETE
        | ffi::SQLITE_CREATE_TABLE
        | ffi::SQLITE_DROP_TABLE
        | ffi::SQLITE_CREATE_VIEW
        | ffi::SQLITE_DROP_VIEW
        | ffi::SQLITE_CREATE_VTABLE
        | ffi::SQLITE_DROP_VTABLE
        | ffi::SQLITE_ANALYZE => table(arg1),
        ffi::SQLITE_CREATE_INDEX
        | ffi::SQLITE_DROP_INDEX
        | ffi::SQLITE_CREATE_TRIGGER
        | ffi::SQLITE_DROP_TRIGGER
        | ffi::SQLITE_ALTER_TABLE => table(arg2),
        ffi::SQLITE_ATTACH | ffi::SQLITE_DETACH => {
            Err("ATTACH, DETACH and VACUUM (which attaches) are not allowed".to_string())
        }
        ffi::SQLITE_PRAGMA => {
            let name = arg1.unwrap_or_default().to_ascii_lowercase();
            match arg2 {
                None => Ok(()),
                Some(_) if READ_PRAGMAS.contains(&name.as_str()) => Ok(()),
                Some(_) => Err(format!(
                    "setting PRAGMA {name} is not allowed (connection settings would outlive the call)"
                )),
            }
        }
        ffi::SQLITE_CREATE_TEMP_TABLE
        | ffi::SQLITE_CREATE_TEMP_INDEX
        | ffi::SQLITE_CREATE_TEMP_TRIGGER
        | ffi::SQLITE_CREATE_TEMP_VIEW
        | ffi::SQLITE_DROP_TEMP_TABLE
        | ffi::SQLITE_DROP_TEMP_INDEX
        | ffi::SQLITE_DROP_TEMP_TRIGGER
        | ffi::SQLITE_DROP_TEMP_VIEW => Err(
            "temporary tables, views, indexes and triggers are not allowed (they would outlive the call)"
                .to_string(),
        ),
        ffi::SQLITE_TRANSACTION | ffi::SQLITE_SAVEPOINT => Err(
            "transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT) is not allowed: each statement runs by itself"
                .to_string(),
        ),
        ffi::SQLITE_FUNCTION => match arg2 {
            Some(f) if f.eq_ignore_ascii_case("load_extension") => {
                Err("the function load_extension is not allowed".to_string())
            }
            _ => Ok(()),
        },
        other => Err(format!("SQLite action {other} is not allowed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::Connection;

    fn plugin_conn(dir: &std::path::Path, prefix: Option<&str>) -> diesel::SqliteConnection {
        install().unwrap();
        let path = dir.join("p.db");
        let uri = plugin_uri(&path.to_string_lossy(), "p", prefix);
        diesel::SqliteConnection::establish(&uri).unwrap()
    }

    fn refused(c: &mut diesel::SqliteConnection, sql: &str) -> String {
        take_denial();
        let e = c.batch_execute(sql).expect_err(sql).to_string();
        assert!(
            e.contains("not authorized") || e.contains("prohibited") || e.contains("authorization denied"),
            "{sql}: {e}"
        );
        take_denial().unwrap_or_else(|| panic!("{sql}: no reason kept"))
    }

    #[test]
    fn a_plugin_connection_is_held_to_its_namespace() {
        let d = tempfile::tempdir().unwrap();
        let mut host = diesel::SqliteConnection::establish(&d.path().join("p.db").to_string_lossy()).unwrap();
        host.batch_execute("CREATE TABLE audit_log (x INTEGER); INSERT INTO audit_log VALUES (1)").unwrap();
        let mut c = plugin_conn(d.path(), Some("p_"));
        c.batch_execute(
            "CREATE TABLE p_t (x INTEGER); INSERT INTO p_t VALUES (1); SELECT * FROM sqlite_master",
        )
        .unwrap();
        c.batch_execute("SELECT value FROM json_each('[1]'); PRAGMA table_info(p_t); PRAGMA query_only")
            .unwrap();
        let why = refused(&mut c, "DELETE FROM audit_log");
        assert!(why.contains("'audit_log'") && why.contains("'p_...'"), "{why}");
        assert!(refused(&mut c, "SELECT * FROM audit_log").contains("'audit_log'"));
        let file = d.path().join("attached.db");
        let why = refused(&mut c, &format!("ATTACH DATABASE '{}' AS a", file.display()));
        assert!(why.contains("ATTACH"), "{why}");
        let copy = d.path().join("copy.db");
        assert!(refused(&mut c, &format!("VACUUM INTO '{}'", copy.display())).contains("VACUUM"));
        assert!(!file.exists() && !copy.exists());
        assert!(refused(&mut c, "PRAGMA query_only = ON").contains("PRAGMA query_only"));
        assert!(refused(&mut c, "PRAGMA query_only(1)").contains("PRAGMA query_only"));
        assert!(refused(&mut c, "CREATE TEMP TRIGGER t AFTER INSERT ON p_t BEGIN SELECT 1; END")
            .contains("temporary"));
        assert!(refused(&mut c, "CREATE TEMP TABLE p_x (x)").contains("temporary"));
        assert!(refused(&mut c, "BEGIN").contains("transaction"));
        assert!(refused(&mut c, "SELECT load_extension('x')").contains("load_extension"));
        // The host's statements on the same connection pass.
        as_host(|| c.batch_execute("PRAGMA query_only = ON; PRAGMA query_only = OFF")).unwrap();
        // Nothing was changed.
        c.batch_execute("INSERT INTO p_t VALUES (2)").unwrap();
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        use diesel::RunQueryDsl;
        let n: Vec<N> = diesel::sql_query("SELECT COUNT(*) AS n FROM audit_log").load(&mut host).unwrap();
        assert_eq!(n[0].n, 1);
    }

    #[test]
    fn without_a_prefix_any_table_but_still_no_escape() {
        let d = tempfile::tempdir().unwrap();
        let mut c = plugin_conn(d.path(), None);
        c.batch_execute("CREATE TABLE anything (x INTEGER); SELECT * FROM anything").unwrap();
        assert!(refused(&mut c, "ATTACH DATABASE ':memory:' AS a").contains("ATTACH"));
        assert!(refused(&mut c, "PRAGMA journal_mode = DELETE").contains("journal_mode"));
    }

    #[test]
    fn uris_keep_the_operators_parameters() {
        assert_eq!(
            plugin_uri("data/x.db", "a-b", Some("a_b_")),
            "file:data/x.db?xcore_plugin=a-b&xcore_prefix=a_b_"
        );
        assert_eq!(
            plugin_uri("/t/50%#.db?mode=rwc", "p", None),
            "file:/t/50%25%23.db?mode=rwc&xcore_plugin=p"
        );
    }
}
