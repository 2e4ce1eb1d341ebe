//! Plugins' namespaces on the `default` database, apart from the host's tables.
//!
//! - SQLite: the host's tables stay in the `default` file (`data/xcore.db`); each
//!   plugin's SQL runs on a file of its own, `data/plugins/<plugin>.db`, under the
//!   authorizer ([`super::sqlite_guard`]) with the prefix rule `<plugin>_`.
//! - PostgreSQL: the host's tables live in the schema `xcore` (the host's connections
//!   set `search_path` to it; `PUBLIC` has no right on it). Each plugin has a LOGIN role
//!   of its own that owns a schema `xcore_p_<plugin>` and nothing else, and its SQL runs
//!   on connections made as that role (so no `SET ROLE` / `RESET ROLE` can undo it).
//!   Roles are per server, not per database, so the role's name carries a hash of the
//!   database's name: `xc<8 hex>_<plugin>`, and two installations on one server never
//!   share one.
//! - MySQL / MariaDB: the host's tables stay in the configured database; each plugin
//!   has a database and a user of its own, both `xc<8 hex>_<plugin>` (the hash is of
//!   the host's database name), with every right on that database and none elsewhere.
//!
//! Passwords are HMAC-SHA256(secret, role) in hex, where the secret is 32 random bytes
//! made once and kept in the host's table `host_secrets`, so several hosts on one
//! database agree on them.
//!
//! An installation of the former layout (plugin tables beside the host's) is moved when
//! a plugin's namespace is first opened: the tables named with its prefix, of a plugin
//! recorded in the host's `plugin_migrations`, go to its namespace with its migration
//! records. A table that matches the longer prefix of another recorded plugin (`a_b_x`
//! of `a-b`, not of `a`) is left to that one. Each step can run again after a crash.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use sha2::{Digest, Sha256};

use super::pool::{MysqlConn, PgConn};
use super::{mask_url, table_prefix, Backend, Database, DatabaseConfig, DbError, PG_HOST_SCHEMA};

/// The host's tables (and diesel's record of the host's migrations).
pub const HOST_TABLES: &[&str] = &[
    "__diesel_schema_migrations",
    "plugin_state",
    "plugin_kv",
    "job_runs",
    "audit_log",
    "plugin_migrations",
];

/// The columns of the host's table `host_secrets` (PostgreSQL and MySQL).
const HOST_SECRETS_COLUMNS: &str = "name VARCHAR(64) NOT NULL PRIMARY KEY, value VARCHAR(128) NOT NULL";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(data));
    out
}

/// HMAC-SHA256 (RFC 2104), by the `hmac` crate.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(message);
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// The name of `plugin`'s role / user / database on a server, for the host database
/// `host_db`: `xc<8 hex of sha256(host_db)>_<plugin>`, at most `max` bytes (a longer
/// plugin name is replaced by a hash of it).
pub fn server_ident(host_db: &str, plugin: &str, max: usize) -> String {
    let tag = server_tag(host_db);
    let name = format!("{tag}{}", plugin.replace('-', "_"));
    if name.len() <= max {
        name
    } else {
        format!("{tag}{}", &hex(&sha256(plugin.as_bytes()))[..max.saturating_sub(11).min(64)])
    }
}

/// What every server-wide name of the installation on `host_db` starts with:
/// `xc<8 hex>_`.
pub fn server_tag(host_db: &str) -> String {
    format!("xc{}_", &hex(&sha256(host_db.as_bytes()))[..8])
}

/// The PostgreSQL schema of `plugin`'s namespace: `xcore_p_<plugin>`.
pub fn pg_schema(plugin: &str) -> String {
    let name = format!("xcore_p_{}", plugin.replace('-', "_"));
    if name.len() <= 63 {
        name
    } else {
        format!("xcore_p_{}", &hex(&sha256(plugin.as_bytes()))[..32])
    }
}

/// Which plugin a table of the former layout belongs to: the recorded plugin with the
/// longest prefix the name starts with.
fn owner_of<'a>(table: &str, plugins: &'a [String]) -> Option<&'a str> {
    plugins
        .iter()
        .filter(|p| table.to_ascii_lowercase().starts_with(&table_prefix(p)))
        .max_by_key(|p| table_prefix(p).len())
        .map(String::as_str)
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn names<C>(conn: &mut C, sql: &str) -> QueryResult<Vec<String>>
where
    C: Connection,
    diesel::query_builder::SqlQuery: diesel::query_dsl::LoadQuery<'static, C, Name>,
{
    Ok(diesel::sql_query(sql).load::<Name>(conn)?.into_iter().map(|n| n.name).collect())
}

fn quote_pg(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn quote_my(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

// ---------------------------------------------------------------- SQLite

/// Moves `plugin`'s tables of the former layout from the host's SQLite file to the
/// plugin's own (`plugin_file`), with their indexes, triggers and migration records.
/// The host's own connection (`host`) is used; nothing here runs plugin SQL.
pub fn sqlite_adopt(host: &Database, plugin: &str, plugin_file: &std::path::Path) -> Result<usize, DbError> {
    let fail = |e: diesel::result::Error| DbError::Migration {
        name: host.name().into(),
        reason: format!("moving plugin '{plugin}''s tables to {}: {e}", plugin_file.display()),
    };
    let mut conn = host.conn()?;
    let crate::Conn::Sqlite(c) = &mut conn else { return Ok(0) };
    let c: &mut SqliteConnection = c;
    let recorded = names(
        c,
        "SELECT DISTINCT plugin AS name FROM plugin_migrations \
         WHERE EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'plugin_migrations')",
    )
    .or_else(|_| Ok::<_, diesel::result::Error>(Vec::new()))
    .map_err(fail)?;
    if !recorded.iter().any(|p| p == plugin) {
        return Ok(0);
    }
    let tables: Vec<String> = names(
        c,
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' \
             ORDER BY type = 'view', name",
    )
    .map_err(fail)?
    .into_iter()
    .filter(|t| !HOST_TABLES.contains(&t.as_str()) && owner_of(t, &recorded) == Some(plugin))
    .collect();
    if let Some(parent) = plugin_file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| DbError::Migration {
            name: host.name().into(),
            reason: format!("creating {}: {e}", parent.display()),
        })?;
    }
    let file = plugin_file.to_string_lossy().into_owned();
    // One transaction over both files: the host's file attached to the plugin's.
    c.batch_execute(&format!("ATTACH DATABASE {} AS ns", literal(&file))).map_err(fail)?;
    let result = c.transaction(|c| {
        let mut moved = 0;
        for t in &tables {
            #[derive(QueryableByName)]
            struct Obj {
                #[diesel(sql_type = Text)]
                kind: String,
                #[diesel(sql_type = Text)]
                sql: String,
            }
            let exists: Vec<Count> = diesel::sql_query(
                "SELECT COUNT(*) AS n FROM ns.sqlite_master WHERE name = ?",
            )
            .bind::<Text, _>(t)
            .load(c)?;
            let objects: Vec<Obj> = diesel::sql_query(
                "SELECT type AS kind, sql FROM main.sqlite_master WHERE (name = ? OR tbl_name = ?) \
                 AND sql IS NOT NULL ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'view' THEN 1 ELSE 2 END",
            )
            .bind::<Text, _>(t)
            .bind::<Text, _>(t)
            .load(c)?;
            let is_view = objects.first().is_some_and(|o| o.kind == "view");
            let q = quote_pg(t);
            if exists[0].n > 0 {
                // Copied by a run that stopped before the drop: drop the host's copy
                // only when it holds what the plugin's holds.
                if !is_view {
                    let host_rows: Vec<Count> =
                        diesel::sql_query(format!("SELECT COUNT(*) AS n FROM main.{q}")).load(c)?;
                    let ns_rows: Vec<Count> =
                        diesel::sql_query(format!("SELECT COUNT(*) AS n FROM ns.{q}")).load(c)?;
                    if host_rows[0].n != ns_rows[0].n {
                        log::warn!(target: "xcore::db", "plugin '{plugin}': table {t} is both in the host's database ({} rows) and in {} ({} rows): left as it is", host_rows[0].n, plugin_file.display(), ns_rows[0].n);
                        continue;
                    }
                }
            } else {
                for o in &objects {
                    // `CREATE TABLE x` / `CREATE INDEX i ON x` made in the plugin's file.
                    let sql = qualify(&o.sql, &o.kind);
                    c.batch_execute(&sql)?;
                    if o.kind == "table" {
                        c.batch_execute(&format!("INSERT INTO ns.{q} SELECT * FROM main.{q}"))?;
                    }
                }
            }
            c.batch_execute(&format!("DROP {} main.{q}", if is_view { "VIEW" } else { "TABLE" }))?;
            moved += 1;
        }
        c.batch_execute(&format!(
            "{}; INSERT OR IGNORE INTO ns.plugin_migrations SELECT plugin, version, applied_at \
             FROM main.plugin_migrations WHERE plugin = {p}; DELETE FROM main.plugin_migrations WHERE plugin = {p}",
            super::plugin_migrations::CREATE_TABLE.replace("IF NOT EXISTS plugin_migrations", "IF NOT EXISTS ns.plugin_migrations"),
            p = literal(plugin)
        ))?;
        Ok::<_, diesel::result::Error>(moved)
    });
    let detached = c.batch_execute("DETACH DATABASE ns");
    let moved = result.map_err(fail)?;
    detached.map_err(fail)?;
    if moved > 0 {
        log::info!(target: "xcore::db", "plugin '{plugin}': moved {moved} table(s) from the host's database to {}", plugin_file.display());
    }
    Ok(moved)
}

/// `CREATE TABLE x ...` / `CREATE [UNIQUE] INDEX i ON x ...` / `CREATE TRIGGER t ...` /
/// `CREATE VIEW v ...` as made in the schema `ns`: the object's own name qualified.
fn qualify(sql: &str, kind: &str) -> String {
    let upper = sql.to_ascii_uppercase();
    let keyword = match kind {
        "table" => "TABLE",
        "index" => "INDEX",
        "trigger" => "TRIGGER",
        _ => "VIEW",
    };
    let Some(at) = upper.find(keyword) else { return sql.to_string() };
    let mut i = at + keyword.len();
    let rest = &upper[i..];
    let skip = rest.len() - rest.trim_start().len();
    i += skip;
    if upper[i..].starts_with("IF NOT EXISTS") {
        i += "IF NOT EXISTS".len();
        let rest = &upper[i..];
        i += rest.len() - rest.trim_start().len();
    }
    format!("{}ns.{}", &sql[..i], &sql[i..])
}

// ---------------------------------------------------------------- PostgreSQL and MySQL

/// The host's secret for plugins' passwords, made on first use.
fn host_secret<C: Connection>(c: &mut C, backend: Backend) -> QueryResult<String>
where
    diesel::query_builder::SqlQuery: diesel::query_dsl::LoadQuery<'static, C, Name>,
{
    let fresh = hex(&rand::random::<[u8; 32]>());
    let insert = match backend {
        Backend::Postgres => format!(
            "INSERT INTO host_secrets (name, value) VALUES ('plugin_passwords', {}) ON CONFLICT DO NOTHING",
            literal(&fresh)
        ),
        _ => format!(
            "INSERT IGNORE INTO host_secrets (name, value) VALUES ('plugin_passwords', {})",
            literal(&fresh)
        ),
    };
    c.batch_execute(&format!("CREATE TABLE IF NOT EXISTS host_secrets ({HOST_SECRETS_COLUMNS}); {insert}"))?;
    let found = names(c, "SELECT value AS name FROM host_secrets WHERE name = 'plugin_passwords'")?;
    found.into_iter().next().ok_or(diesel::result::Error::NotFound)
}

/// `url` with its user and password replaced (and, with `database`, its path).
pub fn with_credentials(url: &str, user: &str, password: &str, database: Option<&str>) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = match rest.rfind('@') {
        Some(at) if !rest[..at].contains('/') => &rest[at + 1..],
        _ => rest,
    };
    let (host, tail) = match rest.find('/') {
        Some(s) => (&rest[..s], &rest[s..]),
        None => (rest, ""),
    };
    let tail = match database {
        Some(db) => {
            let query = tail.find('?').map(|q| &tail[q..]).unwrap_or("");
            format!("/{db}{query}")
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{user}:{password}@{host}{tail}")
}

/// Prepares the host's schema on a PostgreSQL `default` connection: creates `xcore`,
/// moves the host's tables of the former layout (in `public`) into it, keeps `PUBLIC`
/// out, and sets `search_path`. Run before the host's migrations.
pub fn pg_prepare_host(c: &mut PgConn) -> QueryResult<()> {
    let tables = HOST_TABLES.iter().map(|t| literal(t)).collect::<Vec<_>>().join(", ");
    c.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {PG_HOST_SCHEMA};
         REVOKE ALL ON SCHEMA {PG_HOST_SCHEMA} FROM PUBLIC;
         REVOKE CREATE ON SCHEMA public FROM PUBLIC;
         CREATE TABLE IF NOT EXISTS {PG_HOST_SCHEMA}.host_secrets ({HOST_SECRETS_COLUMNS});
         DO $$ DECLARE t text; BEGIN
           IF to_regclass('public.__diesel_schema_migrations') IS NOT NULL
              AND to_regclass('{PG_HOST_SCHEMA}.__diesel_schema_migrations') IS NULL THEN
             FOREACH t IN ARRAY ARRAY[{tables}] LOOP
               IF to_regclass('public.' || quote_ident(t)) IS NOT NULL THEN
                 EXECUTE format('ALTER TABLE public.%I SET SCHEMA {PG_HOST_SCHEMA}', t);
               END IF;
             END LOOP;
           END IF;
         END $$;
         SET search_path TO {PG_HOST_SCHEMA}"
    ))
}

/// Makes (or brings up to date) `plugin`'s role and schema on PostgreSQL, moves its
/// tables of the former layout, and returns the URL its pool connects with.
fn pg_provision(c: &mut PgConn, plugin: &str, url: &str) -> QueryResult<String> {
    let secret = host_secret(c, Backend::Postgres)?;
    let db = names(c, "SELECT current_database()::text AS name")?.into_iter().next().unwrap_or_default();
    let role = server_ident(&db, plugin, 63);
    let schema = pg_schema(plugin);
    let password = hex(&hmac_sha256(secret.as_bytes(), role.as_bytes()));
    let (r, s) = (quote_pg(&role), quote_pg(&schema));
    c.batch_execute(&format!(
        "DO $$ BEGIN CREATE ROLE {r}; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         ALTER ROLE {r} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS PASSWORD {pw};
         ALTER ROLE {r} IN DATABASE {d} SET search_path = {s};
         CREATE SCHEMA IF NOT EXISTS {s} AUTHORIZATION {r};
         ALTER SCHEMA {s} OWNER TO {r}",
        pw = literal(&password),
        d = quote_pg(&db),
    ))?;
    // The former layout: this plugin's tables in `public`, its records in the host's.
    let recorded =
        names(c, &format!("SELECT DISTINCT plugin AS name FROM {PG_HOST_SCHEMA}.plugin_migrations"))
            .unwrap_or_default();
    if recorded.iter().any(|p| p == plugin) {
        let tables: Vec<String> =
            names(c, "SELECT tablename::text AS name FROM pg_tables WHERE schemaname = 'public'")?
                .into_iter()
                .filter(|t| !HOST_TABLES.contains(&t.as_str()) && owner_of(t, &recorded) == Some(plugin))
                .collect();
        c.transaction(|c| {
            for t in &tables {
                let q = quote_pg(t);
                c.batch_execute(&format!("ALTER TABLE public.{q} SET SCHEMA {s}; ALTER TABLE {s}.{q} OWNER TO {r}"))?;
            }
            c.batch_execute(&format!(
                "{create}; ALTER TABLE {s}.plugin_migrations OWNER TO {r};
                 INSERT INTO {s}.plugin_migrations SELECT plugin, version, applied_at FROM {PG_HOST_SCHEMA}.plugin_migrations
                   WHERE plugin = {p} ON CONFLICT DO NOTHING;
                 DELETE FROM {PG_HOST_SCHEMA}.plugin_migrations WHERE plugin = {p}",
                create = super::plugin_migrations::CREATE_TABLE
                    .replace("IF NOT EXISTS plugin_migrations", &format!("IF NOT EXISTS {s}.plugin_migrations")),
                p = literal(plugin),
            ))
        })?;
        if !tables.is_empty() {
            log::info!(target: "xcore::db", "plugin '{plugin}': moved {} table(s) from schema public to {schema}", tables.len());
        }
    }
    Ok(with_credentials(url, &role, &password, None))
}

/// Makes (or brings up to date) `plugin`'s database and user on MySQL / MariaDB, moves
/// its tables of the former layout, and returns the URL its pool connects with.
fn mysql_provision(c: &mut MysqlConn, plugin: &str, url: &str) -> QueryResult<String> {
    let secret = host_secret(c, Backend::Mysql)?;
    let host_db = names(c, "SELECT DATABASE() AS name")?.into_iter().next().unwrap_or_default();
    // MySQL's user names have at most 32 characters; the database has the same name.
    let user = server_ident(&host_db, plugin, 32);
    let password = hex(&hmac_sha256(secret.as_bytes(), user.as_bytes()));
    let db = quote_my(&user);
    let mut sql = format!("CREATE DATABASE IF NOT EXISTS {db} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;");
    // 'localhost' as well as '%': MariaDB prefers a more specific host, so an anonymous
    // ''@'localhost' would otherwise shadow 'user'@'%' for local connections.
    for host in ["%", "localhost"] {
        let account = format!("{}@{}", literal(&user), literal(host));
        sql.push_str(&format!(
            "CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {pw};
             ALTER USER {account} IDENTIFIED BY {pw};
             GRANT ALL PRIVILEGES ON {db}.* TO {account};",
            pw = literal(&password)
        ));
    }
    c.batch_execute(&sql)?;
    let recorded = names(c, "SELECT DISTINCT plugin AS name FROM plugin_migrations").unwrap_or_default();
    if recorded.iter().any(|p| p == plugin) {
        let tables: Vec<String> = names(
            c,
            "SELECT CAST(table_name AS CHAR) AS name FROM information_schema.tables WHERE table_schema = DATABASE()",
        )?
        .into_iter()
        .filter(|t| !HOST_TABLES.contains(&t.as_str()) && owner_of(t, &recorded) == Some(plugin))
        .collect();
        let here = quote_my(&host_db);
        for t in &tables {
            let q = quote_my(t);
            c.batch_execute(&format!("RENAME TABLE {here}.{q} TO {db}.{q}"))?;
        }
        c.batch_execute(&format!(
            "{create}; INSERT IGNORE INTO {db}.plugin_migrations SELECT plugin, version, applied_at FROM {here}.plugin_migrations
               WHERE plugin = {p}; DELETE FROM {here}.plugin_migrations WHERE plugin = {p}",
            create = super::plugin_migrations::CREATE_TABLE
                .replace("IF NOT EXISTS plugin_migrations", &format!("IF NOT EXISTS {db}.plugin_migrations")),
            p = literal(plugin),
        ))?;
        if !tables.is_empty() {
            log::info!(target: "xcore::db", "plugin '{plugin}': moved {} table(s) from database {host_db} to {user}", tables.len());
        }
    }
    Ok(with_credentials(url, &user, &password, Some(&user)))
}

/// A pool for `plugin`'s namespace on the PostgreSQL or MySQL `default` database
/// (`host` is the host's own pool of it). Blocking.
pub(crate) fn connect_plugin(
    plugin: &str,
    name: &str,
    cfg: &DatabaseConfig,
    backend: Backend,
    host: &Database,
) -> Result<Database, DbError> {
    let fail = |e: diesel::result::Error| DbError::Connect {
        name: name.into(),
        url: mask_url(&cfg.url),
        reason: format!("preparing plugin '{plugin}''s namespace: {e}"),
    };
    let mut conn = host.conn()?;
    let mut provision = || match &mut conn {
        crate::Conn::Postgres(c) => pg_provision(c, plugin, &cfg.url).map(Some),
        crate::Conn::Mysql(c) => mysql_provision(c, plugin, &cfg.url).map(Some),
        crate::Conn::Sqlite(_) => Ok(None),
    };
    // Two hosts (or two loads) making the same objects at once can collide in the
    // server's catalog (a unique violation on CREATE ... IF NOT EXISTS): once more.
    let url = match provision() {
        Ok(url) => url,
        Err(first) => {
            log::debug!(target: "xcore::db", "plugin '{plugin}': preparing its namespace failed once ({first}); again");
            provision().map_err(fail)?
        }
    };
    drop(conn);
    let Some(url) = url else {
        return Err(DbError::Unknown(format!("{name} (an SQLite database has no server namespace)")));
    };
    Database::connect_plugin_remote(name, &url, cfg, backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex(&hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn names_fit_and_differ_per_installation() {
        let a = server_ident("test", "bookmarks", 32);
        assert!(a.starts_with("xc") && a.ends_with("_bookmarks") && a.len() <= 32, "{a}");
        assert_ne!(a, server_ident("other", "bookmarks", 32));
        let long = server_ident("test", &"x".repeat(60), 32);
        assert_eq!(long.len(), 32, "{long}");
        assert_ne!(long, server_ident("test", &"x".repeat(61), 32));
        assert_eq!(pg_schema("my-plugin"), "xcore_p_my_plugin");
        assert_eq!(owner_of("a_b_x", &["a".into(), "a-b".into()]), Some("a-b"));
        assert_eq!(owner_of("a_x", &["a".into(), "a-b".into()]), Some("a"));
        assert_eq!(owner_of("audit_log", &["a".into()]), None);
    }

    #[test]
    fn credentials_replace_the_users() {
        assert_eq!(
            with_credentials("postgres://postgres@127.0.0.1:5432/test", "r", "pw", None),
            "postgres://r:pw@127.0.0.1:5432/test"
        );
        assert_eq!(
            with_credentials("mysql://root:s@h:3306/test?ssl-mode=disabled", "u", "pw", Some("xc1_p")),
            "mysql://u:pw@h:3306/xc1_p?ssl-mode=disabled"
        );
        assert_eq!(with_credentials("postgres://h/db", "r", "pw", None), "postgres://r:pw@h/db");
    }

    #[test]
    fn qualified_ddl() {
        assert_eq!(
            qualify("CREATE TABLE bookmarks_items (id)", "table"),
            "CREATE TABLE ns.bookmarks_items (id)"
        );
        assert_eq!(
            qualify("CREATE UNIQUE INDEX IF NOT EXISTS i ON t (x)", "index"),
            "CREATE UNIQUE INDEX IF NOT EXISTS ns.i ON t (x)"
        );
    }
}
