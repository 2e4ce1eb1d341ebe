//! The host's databases: configuration, back-end detection, and the host's own schema
//! migrations (`migrations/` at the repository root, embedded in the binary).
//!
//! One code path for three back-ends: SQLite (bundled, the default: `data/xcore.db`),
//! PostgreSQL and MySQL/MariaDB through diesel-async's pure-Rust drivers, so the
//! default build needs no system library. The host's own tables live in `default`;
//! a plugin's SQL never reaches them: a plugin asking for `db:default` gets a namespace
//! of its own there ([`namespace`]: a file of its own on SQLite, a schema and a role on
//! PostgreSQL, a database and a user on MySQL), and every SQLite connection that runs
//! plugin SQL is under an authorizer ([`sqlite_guard`]). Other databases are the
//! operator's, for plugins granted them.
//!
//! - [`pool`]: one database's pool and [`with_conn!`](crate::with_conn), which runs one piece of
//!   diesel code on whichever back-end a connection is.
//! - [`databases`]: every database by name, and plugins' own pools.
//! - [`schema`]: the host's tables; [`migrate`]: their migrations.
//! - [`dynamic`]: SQL from plugins, with JSON parameters and JSON rows.
//! - [`namespace`], [`sqlite_guard`]: where plugins' SQL runs, and what it may do.

pub mod databases;
pub mod dynamic;
pub mod migrate;
pub mod namespace;
pub mod plugin_migrations;
pub mod pool;
pub mod schema;
pub mod sqlite_guard;
pub mod store;

pub use databases::Databases;
pub use pool::{Conn, Database};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The PostgreSQL schema of the host's tables ([`namespace`] creates it, the host's pool
/// sets it as its search path).
pub const PG_HOST_SCHEMA: &str = "xcore";

/// The table-name prefix of a plugin's namespace.
pub fn table_prefix(plugin: &str) -> String {
    format!("{}_", plugin.replace('-', "_").to_ascii_lowercase())
}

/// A named database of `xcore.yaml`'s `databases` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `sqlite://path` (or a path), `postgres://...`, `mysql://...`.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: u32,
    /// How long to wait for a connection (first connect, or a free one from the pool).
    pub connect_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url: "sqlite://data/xcore.db".into(), pool_size: 8, connect_timeout_ms: 5000 }
    }
}

/// Which SQL dialect a URL speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// SQLite (bundled).
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
}

/// A database problem, naming the database.
#[derive(Debug, Error)]
pub enum DbError {
    /// The URL's scheme is not one we speak.
    #[error("database '{name}': unsupported URL '{url}' (use sqlite://, postgres:// or mysql://)")]
    Scheme {
        /// Database name.
        name: String,
        /// The URL, password masked.
        url: String,
    },
    /// Connecting failed.
    #[error("database '{name}' ({url}): cannot connect: {reason}")]
    Connect {
        /// Database name.
        name: String,
        /// The URL, password masked.
        url: String,
        /// Why.
        reason: String,
    },
    /// A migration failed.
    #[error("database '{name}': migration failed: {reason}")]
    Migration {
        /// Database name.
        name: String,
        /// Why.
        reason: String,
    },
    /// No connection could be had from the pool in time.
    #[error("database '{name}' is unavailable: {reason}")]
    Unavailable {
        /// Database name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A query failed.
    #[error("database '{name}': {reason}")]
    Query {
        /// Database name.
        name: String,
        /// The database's message.
        reason: String,
    },
    /// No database of that name is configured.
    #[error("no database named '{0}' in the configuration")]
    Unknown(String),
}

/// Masks the password of a URL for messages and logs.
pub fn mask_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Backend {
    /// The back-end of a URL.
    pub fn of(name: &str, url: &str) -> Result<Backend, DbError> {
        let scheme = url.split("://").next().unwrap_or("");
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "mysql" | "mariadb" => Ok(Backend::Mysql),
            _ if !url.contains("://") => Ok(Backend::Sqlite),
            _ => Err(DbError::Scheme { name: name.into(), url: mask_url(url) }),
        }
    }
}

/// The path of an SQLite URL (`sqlite://data/x.db`, `sqlite:///abs/x.db` or a bare path).
pub fn sqlite_path(url: &str) -> PathBuf {
    PathBuf::from(url.strip_prefix("sqlite://").unwrap_or(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_and_masking() {
        assert_eq!(Backend::of("d", "sqlite://data/x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("d", "data/x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("d", "postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of("d", "mysql://root@h/test").unwrap(), Backend::Mysql);
        let e = Backend::of("d", "oracle://u:secret@h/x").unwrap_err().to_string();
        assert!(e.contains("oracle://u:***@h/x") && !e.contains("secret"), "{e}");
        assert_eq!(sqlite_path("sqlite:///tmp/a.db"), PathBuf::from("/tmp/a.db"));
        assert_eq!(mask_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(mask_url("redis://h:6379"), "redis://h:6379");
    }
}
