//! `db.execute` / `db.query`: SQL from plugins on a configured database, with bound
//! parameters ([`crate::db::dynamic`]). Permissions name the database: `db:<name>`
//! (or `db:<name>:write`) reads and writes, `db:<name>:read` only queries (in a read-only transaction, so a
//! write fails even when hidden in a query), and a bare `db` grants every database.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{Caller, ServiceError};
use crate::db::dynamic::{DynamicSql, SqlError};
use crate::runtime::PluginRegistry;
use crate::with_conn;

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

/// What `permissions` grant on `database`: (read, write).
pub fn access(permissions: &[String], database: &str) -> (bool, bool) {
    let mut read = false;
    let mut write = false;
    for p in permissions {
        let Some(rest) = p.strip_prefix("db") else { continue };
        match rest {
            "" => (read, write) = (true, true),
            r => match r.strip_prefix(':').map(|r| r.split_once(':').unwrap_or((r, ""))) {
                Some((db, "" | "write")) if db == database || db == "*" => (read, write) = (true, true),
                Some((db, "read")) if db == database || db == "*" => read = true,
                _ => {}
            },
        }
    }
    (read, write)
}

fn sql_error(database: &str, e: SqlError) -> ServiceError {
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

/// Serves `db.execute|query` for `caller`.
pub fn serve(
    registry: &PluginRegistry,
    caller: &Caller,
    service: &str,
    payload: &[u8],
) -> Result<Value, ServiceError> {
    let r: SqlRequest = serde_json::from_slice(payload).map_err(|e| ServiceError::bad_request(service, e))?;
    let (read, write) = access(&caller.permissions, &r.database);
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
                "plugin '{}' may not {what} database '{}': add '{grant}' to permissions in its plugin.yaml",
                caller.plugin, r.database
            ),
        ));
    }
    let databases = registry
        .databases()
        .ok_or_else(|| ServiceError::new("unavailable", 503, "this host has no database connected"))?;
    let db =
        databases.get(&r.database).map_err(|e| ServiceError::new("unknown_database", 404, e.to_string()))?;
    let mut conn = db.conn().map_err(|e| ServiceError::new("unavailable", 503, e.to_string()))?;
    match service {
        "db.execute" => {
            let n = with_conn!(&mut conn, c => c.execute_json(&r.sql, &r.params))
                .map_err(|e| sql_error(&r.database, e))?;
            Ok(json!({ "rows_affected": n }))
        }
        "db.query" => {
            let rows = with_conn!(&mut conn, c => c.query_json(&r.sql, &r.params, MAX_ROWS, !write))
                .map_err(|e| sql_error(&r.database, e))?;
            Ok(json!({ "rows": rows }))
        }
        other => Err(ServiceError::new(
            xcore_plugin_api::codes::UNSUPPORTED,
            501,
            format!("host service '{other}' is not available in this version of XCore"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::access;

    #[test]
    fn database_permissions() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(access(&[], "default"), (false, false));
        assert_eq!(access(&p(&["db"]), "anything"), (true, true));
        assert_eq!(access(&p(&["db:default"]), "default"), (true, true));
        assert_eq!(access(&p(&["db:default"]), "reports"), (false, false));
        assert_eq!(access(&p(&["db:reports:read"]), "reports"), (true, false));
        assert_eq!(access(&p(&["dbx", "db:reports:admin"]), "reports"), (false, false));
        assert_eq!(access(&p(&["db:reports:write"]), "reports"), (true, true));
        assert_eq!(access(&p(&["db:*:read", "db:app"]), "app"), (true, true));
    }
}
