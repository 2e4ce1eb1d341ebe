//! Connection pools: one per configured database, r2d2 over synchronous connections.
//!
//! Why synchronous: every database call comes from a plain thread (a plugin's worker
//! thread, a blocking-pool thread of an HTTP handler, the scheduler's runner), never
//! from inside an async task, so a sync pool is the simplest correct choice. SQLite is
//! diesel's own (bundled) connection; PostgreSQL and MySQL go through diesel-async's
//! pure-Rust drivers behind `AsyncConnectionWrapper`, which drives each connection on a
//! small runtime of its own (created by r2d2's threads, outside any runtime).
//!
//! [`with_conn!`](crate::with_conn) runs one piece of diesel code against whichever
//! back-end a connection is: the code is written once and compiled three times.

use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::{Connection, RunQueryDsl, SqliteConnection};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncMysqlConnection, AsyncPgConnection};

use super::{mask_url, sqlite_guard, sqlite_path, Backend, DatabaseConfig, DbError};

/// The most connections of one plugin's pool.
pub const PLUGIN_POOL_SIZE: u32 = 4;
/// How long an idle connection of a plugin's pool stays open.
pub const PLUGIN_POOL_IDLE: Duration = Duration::from_secs(60);

/// A PostgreSQL connection used synchronously.
pub type PgConn = AsyncConnectionWrapper<AsyncPgConnection>;
/// A MySQL / MariaDB connection used synchronously.
pub type MysqlConn = AsyncConnectionWrapper<AsyncMysqlConnection>;

/// A connection borrowed from a pool; back to the pool when dropped. Short-lived, on the
/// stack of one database call, so the size difference of its variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Conn {
    /// SQLite.
    Sqlite(PooledConnection<ConnectionManager<SqliteConnection>>),
    /// PostgreSQL.
    Postgres(PooledConnection<ConnectionManager<PgConn>>),
    /// MySQL / MariaDB.
    Mysql(PooledConnection<ConnectionManager<MysqlConn>>),
}

/// Runs `$body` with `$c` bound to the concrete connection (`&mut SqliteConnection`,
/// `&mut PgConn` or `&mut MysqlConn`) of a [`Conn`].
#[macro_export]
macro_rules! with_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::pool::Conn::Sqlite(pooled) => {
                let $c: &mut diesel::SqliteConnection = &mut *pooled;
                $body
            }
            $crate::pool::Conn::Postgres(pooled) => {
                let $c: &mut $crate::pool::PgConn = &mut *pooled;
                $body
            }
            $crate::pool::Conn::Mysql(pooled) => {
                let $c: &mut $crate::pool::MysqlConn = &mut *pooled;
                $body
            }
        }
    };
}

enum AnyPool {
    Sqlite(Pool<ConnectionManager<SqliteConnection>>),
    Postgres(Pool<ConnectionManager<PgConn>>),
    Mysql(Pool<ConnectionManager<MysqlConn>>),
}

/// One configured database and its pool.
pub struct Database {
    name: String,
    backend: Backend,
    url: String,
    pool: AnyPool,
    /// How long `conn` waits for a free connection at most.
    timeout: Duration,
}

/// SQLite settings applied to every pooled connection. WAL lets readers run beside the
/// one writer; `synchronous = NORMAL` in WAL mode keeps every committed transaction
/// across a crash or `kill -9` of the host (only a power loss can take the last ones);
/// the busy timeout makes concurrent writers wait instead of failing.
#[derive(Debug)]
struct SqlitePragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        // The host's own statements: let through on a plugin's connection too.
        sqlite_guard::as_host(|| {
            for pragma in
                ["PRAGMA busy_timeout = 10000", "PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL"]
            {
                diesel::sql_query(pragma).execute(conn).map_err(diesel::r2d2::Error::QueryError)?;
            }
            Ok(())
        })
    }
}

/// The host's connections to a PostgreSQL `default`: its tables are in the schema
/// `xcore` ([`super::namespace`] makes it).
#[derive(Debug)]
struct PgHostSchema;

impl CustomizeConnection<PgConn, diesel::r2d2::Error> for PgHostSchema {
    fn on_acquire(&self, conn: &mut PgConn) -> Result<(), diesel::r2d2::Error> {
        use diesel::connection::SimpleConnection;
        conn.batch_execute(&format!("SET search_path TO {}", super::PG_HOST_SCHEMA))
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// A plugin's lazy pool on a server database: nothing kept idle past
/// [`PLUGIN_POOL_IDLE`], no connection made before the first use.
fn plugin_pool<C>(url: &str, size: u32, timeout: Duration) -> Pool<ConnectionManager<C>>
where
    C: diesel::r2d2::R2D2Connection + 'static,
{
    Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .idle_timeout(Some(PLUGIN_POOL_IDLE))
        .connection_timeout(timeout)
        .build_unchecked(ConnectionManager::new(url.to_string()))
}

impl Database {
    /// Connects: one connection is made first so a wrong URL or an unreachable server
    /// fails here with the driver's own reason, then the pool is built. Blocking; call it
    /// from a plain thread (never inside an async task).
    pub fn connect(name: &str, cfg: &DatabaseConfig) -> Result<Database, DbError> {
        let backend = Backend::of(name, &cfg.url)?;
        let fail = |reason: String| DbError::Connect { name: name.into(), url: mask_url(&cfg.url), reason };
        let size = cfg.pool_size.max(1);
        let timeout = Duration::from_millis(cfg.connect_timeout_ms.max(1));
        let pool = match backend {
            Backend::Sqlite => {
                sqlite_guard::install().map_err(&fail)?;
                let path = sqlite_path(&cfg.url);
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| fail(format!("creating {}: {e}", parent.display())))?;
                }
                let path = path.to_string_lossy().into_owned();
                SqliteConnection::establish(&path).map_err(|e| fail(e.to_string()))?;
                AnyPool::Sqlite(
                    Pool::builder()
                        .max_size(size)
                        .connection_timeout(timeout)
                        .connection_customizer(Box::new(SqlitePragmas))
                        .build(ConnectionManager::new(path))
                        .map_err(|e| fail(e.to_string()))?,
                )
            }
            Backend::Postgres => {
                PgConn::establish(&cfg.url).map_err(|e| fail(e.to_string()))?;
                let mut builder =
                    Pool::builder().max_size(size).min_idle(Some(1)).connection_timeout(timeout);
                if name == "default" {
                    builder = builder.connection_customizer(Box::new(PgHostSchema));
                }
                AnyPool::Postgres(builder.build_unchecked(ConnectionManager::new(cfg.url.clone())))
            }
            Backend::Mysql => {
                MysqlConn::establish(&cfg.url).map_err(|e| fail(e.to_string()))?;
                AnyPool::Mysql(
                    Pool::builder()
                        .max_size(size)
                        .min_idle(Some(1))
                        .connection_timeout(timeout)
                        .build_unchecked(ConnectionManager::new(cfg.url.clone())),
                )
            }
        };
        Ok(Database { name: name.into(), backend, url: cfg.url.clone(), pool, timeout })
    }

    /// A pool for `plugin`'s SQL on the database `name` (configured as `cfg`), small
    /// and lazy: at most [`PLUGIN_POOL_SIZE`] connections, none kept idle past
    /// [`PLUGIN_POOL_IDLE`].
    ///
    /// SQLite: `default` becomes the plugin's own file ([`plugin_sqlite_file`]) with the
    /// namespace rule `<plugin>_`; another database is the operator's file itself. Either
    /// way every connection is marked for the authorizer ([`sqlite_guard`]).
    pub(super) fn connect_plugin_sqlite(
        plugin: &str,
        name: &str,
        cfg: &DatabaseConfig,
    ) -> Result<Database, DbError> {
        let fail = |reason: String| DbError::Connect { name: name.into(), url: mask_url(&cfg.url), reason };
        sqlite_guard::install().map_err(&fail)?;
        let (path, prefix) = if name == "default" {
            let prefix = super::table_prefix(plugin);
            (plugin_sqlite_file(&cfg.url, plugin).to_string_lossy().into_owned(), Some(prefix))
        } else {
            (sqlite_path(&cfg.url).to_string_lossy().into_owned(), None)
        };
        let file = PathBuf::from(path.split('?').next().unwrap_or(&path));
        if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| fail(format!("creating {}: {e}", parent.display())))?;
        }
        let uri = sqlite_guard::plugin_uri(&path, plugin, prefix.as_deref());
        SqliteConnection::establish(&uri).map_err(|e| fail(e.to_string()))?;
        let timeout = Duration::from_millis(cfg.connect_timeout_ms.max(1));
        let pool = Pool::builder()
            .max_size(cfg.pool_size.clamp(1, PLUGIN_POOL_SIZE))
            .min_idle(Some(0))
            .idle_timeout(Some(PLUGIN_POOL_IDLE))
            .connection_timeout(timeout)
            .connection_customizer(Box::new(SqlitePragmas))
            .build_unchecked(ConnectionManager::new(uri.clone()));
        Ok(Database {
            name: name.into(),
            backend: Backend::Sqlite,
            url: uri,
            pool: AnyPool::Sqlite(pool),
            timeout,
        })
    }

    /// A small lazy pool (as for SQLite) for a plugin's namespace on PostgreSQL or
    /// MySQL, connecting with `url` (the plugin's own role or user).
    pub(crate) fn connect_plugin_remote(
        name: &str,
        url: &str,
        cfg: &DatabaseConfig,
        backend: Backend,
    ) -> Result<Database, DbError> {
        let fail = |reason: String| DbError::Connect { name: name.into(), url: mask_url(url), reason };
        let timeout = Duration::from_millis(cfg.connect_timeout_ms.max(1));
        let size = cfg.pool_size.clamp(1, PLUGIN_POOL_SIZE);
        let pool = match backend {
            Backend::Postgres => {
                PgConn::establish(url).map_err(|e| fail(e.to_string()))?;
                AnyPool::Postgres(plugin_pool(url, size, timeout))
            }
            Backend::Mysql => {
                MysqlConn::establish(url).map_err(|e| fail(e.to_string()))?;
                AnyPool::Mysql(plugin_pool(url, size, timeout))
            }
            Backend::Sqlite => return Err(fail("not a server database".into())),
        };
        Ok(Database { name: name.into(), backend, url: url.to_string(), pool, timeout })
    }

    /// The database's name in the configuration.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its back-end.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Its URL with the password masked.
    pub fn masked_url(&self) -> String {
        mask_url(&self.url)
    }

    /// Borrows a connection, waiting up to the connect timeout for a free one, and no
    /// longer than what is left of the plugin call this thread serves (so a database
    /// that is down gives the plugin an error, not a timed-out call).
    pub fn conn(&self) -> Result<Conn, DbError> {
        let wait = xcore_deadline::bound(self.timeout);
        let unavailable = |e: diesel::r2d2::PoolError| DbError::Unavailable {
            name: self.name.clone(),
            reason: if wait < self.timeout {
                format!("{e} (waited {} ms, what was left of the call's deadline)", wait.as_millis())
            } else {
                e.to_string()
            },
        };
        Ok(match &self.pool {
            AnyPool::Sqlite(p) => Conn::Sqlite(p.get_timeout(wait).map_err(unavailable)?),
            AnyPool::Postgres(p) => Conn::Postgres(p.get_timeout(wait).map_err(unavailable)?),
            AnyPool::Mysql(p) => Conn::Mysql(p.get_timeout(wait).map_err(unavailable)?),
        })
    }

    /// Connections (open, idle) in the pool.
    pub fn pool_state(&self) -> (u32, u32) {
        let s = match &self.pool {
            AnyPool::Sqlite(p) => p.state(),
            AnyPool::Postgres(p) => p.state(),
            AnyPool::Mysql(p) => p.state(),
        };
        (s.connections, s.idle_connections)
    }
}

/// The file of `plugin`'s namespace on an SQLite `default` database at `host_url`:
/// `<folder of the host's file>/plugins/<plugin>.db` (`data/plugins/<plugin>.db` by
/// default).
pub fn plugin_sqlite_file(host_url: &str, plugin: &str) -> PathBuf {
    let host = sqlite_path(host_url.split('?').next().unwrap_or(host_url));
    let dir = host.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    dir.join("plugins").join(format!("{plugin}.db"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_pool_runs_the_same_code_as_every_back_end() {
        let d = tempfile::tempdir().unwrap();
        let cfg = DatabaseConfig {
            url: format!("sqlite://{}", d.path().join("a/x.db").display()),
            ..Default::default()
        };
        let db = Database::connect("t", &cfg).unwrap();
        assert_eq!(db.backend(), Backend::Sqlite);
        let mut conn = db.conn().unwrap();
        let n =
            with_conn!(&mut conn, c => diesel::sql_query("CREATE TABLE t (x INTEGER)").execute(c)).unwrap();
        assert_eq!(n, 0);
        let mode: Vec<String> = with_conn!(&mut conn, c => {
            #[derive(diesel::QueryableByName)]
            struct M {
                #[diesel(sql_type = diesel::sql_types::Text)]
                journal_mode: String,
            }
            diesel::sql_query("PRAGMA journal_mode").load::<M>(c).map(|v| v.into_iter().map(|m| m.journal_mode).collect())
        })
        .unwrap();
        assert_eq!(mode, ["wal"]);
    }

    #[test]
    fn a_connection_wait_ends_with_the_calls_deadline() {
        let d = tempfile::tempdir().unwrap();
        let cfg = DatabaseConfig {
            url: format!("sqlite://{}", d.path().join("x.db").display()),
            pool_size: 1,
            connect_timeout_ms: 10_000,
        };
        let db = Database::connect("t", &cfg).unwrap();
        let _held = db.conn().unwrap();
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let started = std::time::Instant::now();
        let e = xcore_deadline::with(now + 150, || db.conn()).err().unwrap().to_string();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited {:?}, not the 10 s timeout",
            started.elapsed()
        );
        assert!(e.contains("database 't' is unavailable") && e.contains("call's deadline"), "{e}");
    }

    #[test]
    fn a_bad_url_names_the_database_and_the_reason() {
        let cfg = DatabaseConfig { url: "postgres://nobody@127.0.0.1:1/x".into(), ..Default::default() };
        let e = Database::connect("reports", &cfg).err().unwrap().to_string();
        assert!(e.contains("database 'reports'") && e.contains("cannot connect"), "{e}");
    }
}
