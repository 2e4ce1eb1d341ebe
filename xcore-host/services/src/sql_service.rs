//! `db.execute` / `db.query`: SQL from plugins on a configured database, with bound
//! parameters ([`xcore_db::dynamic`]). Permissions name the database: `db:<name>`
//! (or `db:<name>:write`) reads and writes, `db:<name>:read` only queries (in a read-only transaction, so a
//! write fails even when hidden in a query), and a bare `db` grants every database.
//!
//! A plugin's SQL runs on its own pool ([`xcore_db::Databases::for_plugin`]): on
//! `default`, in the plugin's namespace, never on the host's tables. What the namespace
//! or SQLite's authorizer refuses is a 403 `permission_denied` naming what was refused:
//! the table outside the namespace (`audit_log`, another plugin's `other_items`), the
//! statement (`ATTACH`, `PRAGMA query_only`...) or the server's own refusal.
//!
//! Placeholders: `?` works on every back-end, so a plugin's SQL can be portable; on
//! PostgreSQL each `?` outside strings and comments becomes `$1`, `$2`... unless the
//! statement already uses `$n` placeholders (then it is left alone, which is also the
//! way to use PostgreSQL's `?` JSON operators).

use serde::Deserialize;
use serde_json::{json, Value};

use std::borrow::Cow;

use super::{Caller, ServiceError};
use crate::Services;
use xcore_db::dynamic::{DynamicSql, SqlError};
use xcore_db::table_prefix;
use xcore_db::with_conn;
use xcore_db::{sqlite_guard, Backend, DbError};
use xcore_manifest::permissions::db_access;

/// The most rows one query returns.
pub const MAX_ROWS: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    #[serde(default = "default_db")]
    database: String,
    sql: String,
    #[serde(default)]
    params: Vec<Value>,
}

fn default_db() -> String {
    "default".into()
}

fn sql_error(plugin: &str, database: &str, e: SqlError) -> ServiceError {
    // SQLite's authorizer says only "not authorized"; it kept its reason.
    if let Some(reason) = sqlite_guard::take_denial() {
        return ServiceError::new(
            "permission_denied",
            403,
            format!("database '{database}': plugin '{plugin}' may not do this: {reason}"),
        );
    }
    if let SqlError::Database(message) = &e {
        if let Some(why) = refusal(plugin, database, message) {
            return ServiceError::new("permission_denied", 403, format!("database '{database}': {why}"));
        }
    }
    let code = match &e {
        SqlError::Param { .. } => "invalid_payload",
        SqlError::ReadOnly(_) => "permission_denied",
        SqlError::TooManyRows(_) => "too_many_rows",
        SqlError::Decode { .. } | SqlError::Database(_) => "sql_error",
    };
    let status = match &e {
        SqlError::ReadOnly(_) => 403,
        _ => 400,
    };
    ServiceError::new(code, status, format!("database '{database}': {e}"))
}

/// Whether a database's message is a refusal: the server's own (PostgreSQL's
/// "permission denied ...", MySQL's "... command denied to user ..." / "Access denied
/// for user ..."), or, on `default`, a table named outside the plugin's namespace (which
/// its namespace cannot hold, so the server reports it missing).
fn refusal(plugin: &str, database: &str, message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    if lower.starts_with("permission denied")
        || lower.contains("command denied to user")
        || lower.contains("access denied for user")
    {
        return Some(format!("plugin '{plugin}' was refused: {message}"));
    }
    if database != "default" {
        return None;
    }
    let table = missing_table(message)?;
    let bare = table.rsplit('.').next().unwrap_or(&table).trim_matches(|c| c == '"' || c == '`');
    let prefix = table_prefix(plugin);
    if bare.to_ascii_lowercase().starts_with(&prefix) {
        return None;
    }
    Some(format!(
        "plugin '{plugin}' may not use table '{bare}': its SQL reaches only its own namespace, tables named \
         '{prefix}...' (the host's tables and other plugins' are not reachable)"
    ))
}

/// The table of a "no such table" message: SQLite's `no such table: x`, PostgreSQL's
/// `relation "x" does not exist`, MySQL's `Table 'db.x' doesn't exist`.
fn missing_table(message: &str) -> Option<String> {
    if let Some(at) = message.find("no such table: ") {
        let rest = &message[at + "no such table: ".len()..];
        return rest.split_whitespace().next().map(str::to_string);
    }
    if let Some(at) = message.find("relation \"") {
        let rest = &message[at + "relation \"".len()..];
        return rest.split_once("\" does not exist").map(|(t, _)| t.to_string());
    }
    if let Some(at) = message.find("Table '") {
        let rest = &message[at + "Table '".len()..];
        return rest.split_once("' doesn't exist").map(|(t, _)| t.to_string());
    }
    None
}

/// Serves `db.execute|query` for `caller`.
pub fn serve(host: &Services, caller: &Caller, service: &str, payload: &[u8]) -> Result<Value, ServiceError> {
    let r: SqlRequest = serde_json::from_slice(payload).map_err(|e| ServiceError::bad_request(service, e))?;
    let (read, write) = db_access(&caller.permissions, &r.database);
    let needed = if service == "db.execute" { write } else { read };
    if !needed {
        let (grant, what) = if service == "db.execute" {
            (format!("db:{}", r.database), "write to")
        } else {
            (format!("db:{}:read", r.database), "query")
        };
        return Err(ServiceError::new(
            "permission_denied",
            403,
            format!(
                "plugin '{}' may not {what} database '{}': {}",
                caller.plugin,
                r.database,
                xcore_manifest::permissions::where_to_grant(&caller.plugin, &grant)
            ),
        ));
    }
    let databases =
        host.databases().ok_or_else(|| ServiceError::unavailable("this host has no database connected"))?;
    // The plugin's own pool (its namespace on `default`), made on first use.
    let db = databases.for_plugin(&caller.plugin, &r.database).map_err(|e| match e {
        DbError::Unknown(_) => ServiceError::new("unknown_database", 404, e.to_string()),
        e => ServiceError::unavailable(e.to_string()),
    })?;
    let sql = match db.backend() {
        Backend::Postgres => pg_placeholders(&r.sql),
        _ => Cow::Borrowed(r.sql.as_str()),
    };
    let mut conn = db.conn().map_err(|e| ServiceError::unavailable(e.to_string()))?;
    // A refusal left over from an earlier statement on this thread is not this one's.
    sqlite_guard::take_denial();
    match service {
        "db.execute" => {
            let n = with_conn!(&mut conn, c => c.execute_json(&sql, &r.params))
                .map_err(|e| sql_error(&caller.plugin, &r.database, e))?;
            Ok(json!({ "rows_affected": n }))
        }
        "db.query" => {
            let rows = with_conn!(&mut conn, c => c.query_json(&sql, &r.params, MAX_ROWS, !write))
                .map_err(|e| sql_error(&caller.plugin, &r.database, e))?;
            Ok(json!({ "rows": rows }))
        }
        other => Err(ServiceError::unsupported(other)),
    }
}

/// `?` placeholders as PostgreSQL's `$n`, skipping string literals, quoted
/// identifiers, dollar-quoted bodies and comments. A statement that already has a `$n`
/// placeholder is returned unchanged.
pub fn pg_placeholders(sql: &str) -> Cow<'_, str> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let (mut i, mut n, mut copied) = (0, 0, 0);
    let mut marks = Vec::new();
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                let q = b[i];
                i += 1;
                while i < b.len() {
                    if b[i] == q {
                        // A doubled quote is an escaped quote.
                        if b.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'$' => {
                if b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    return Cow::Borrowed(sql);
                }
                // $tag$ ... $tag$
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(e) if b[e] == b'$' => {
                        let tag = &sql[i..=e];
                        match sql[e + 1..].find(tag) {
                            Some(close) => i = e + 1 + close + tag.len(),
                            None => i = b.len(),
                        }
                    }
                    _ => i += 1,
                }
            }
            b'?' => {
                marks.push(i);
                i += 1;
            }
            _ => i += 1,
        }
    }
    if marks.is_empty() {
        return Cow::Borrowed(sql);
    }
    for m in marks {
        n += 1;
        out.push_str(&sql[copied..m]);
        out.push_str(&format!("${n}"));
        copied = m + 1;
    }
    out.push_str(&sql[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::{missing_table, pg_placeholders, refusal};

    #[test]
    fn refusals_name_the_table() {
        assert_eq!(missing_table("no such table: main.audit_log").as_deref(), Some("main.audit_log"));
        assert_eq!(missing_table("relation \"plugin_kv\" does not exist").as_deref(), Some("plugin_kv"));
        assert_eq!(
            missing_table("Table 'xc1_p.audit_log' doesn't exist").as_deref(),
            Some("xc1_p.audit_log")
        );
        let why = refusal("p", "default", "no such table: audit_log").unwrap();
        assert!(why.contains("'audit_log'") && why.contains("'p_...'"), "{why}");
        assert!(
            refusal("p", "default", "no such table: p_items").is_none(),
            "its own table is simply missing"
        );
        assert!(
            refusal("p", "reports", "no such table: audit_log").is_none(),
            "no namespace on other databases"
        );
        assert!(refusal("p", "default", "permission denied for schema xcore").unwrap().contains("xcore"));
    }

    #[test]
    fn question_marks_become_numbered_outside_strings_and_comments() {
        assert_eq!(
            pg_placeholders("SELECT * FROM t WHERE a = ? AND b = ?"),
            "SELECT * FROM t WHERE a = $1 AND b = $2"
        );
        assert_eq!(
            pg_placeholders("SELECT '?', \"a?\", 'it''s ?' -- why?\n, ? /* ? */ FROM t"),
            "SELECT '?', \"a?\", 'it''s ?' -- why?\n, $1 /* ? */ FROM t"
        );
        assert_eq!(pg_placeholders("SELECT $$ ? $$, $q$ ? $q$, ?"), "SELECT $$ ? $$, $q$ ? $q$, $1");
        assert_eq!(
            pg_placeholders("SELECT data ? 'k' FROM t WHERE id = $1"),
            "SELECT data ? 'k' FROM t WHERE id = $1"
        );
        assert_eq!(pg_placeholders("SELECT 1"), "SELECT 1");
    }
}
