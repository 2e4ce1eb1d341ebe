//! [`Databases`]: every configured database by name, and the pools plugins' SQL runs on
//! (made on first use through [`super::namespace`], at most [`MAX_PLUGIN_POOLS`]). Above
//! both [`super::pool`] (one database's pool) and the namespaces, which use the pool.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::pool::{plugin_sqlite_file, Database};
use super::{Backend, DatabaseConfig, DbError};

/// The most plugin connection pools open at once (one per plugin and database it uses).
pub const MAX_PLUGIN_POOLS: usize = 512;

/// Every configured database, by name, and the pools of plugins' SQL.
#[derive(Default)]
pub struct Databases {
    map: BTreeMap<String, Arc<Database>>,
    configs: BTreeMap<String, DatabaseConfig>,
    /// plugin -> database -> the pool its SQL runs on.
    plugin_pools: parking_lot::Mutex<BTreeMap<String, BTreeMap<String, Arc<Database>>>>,
}

impl Databases {
    /// Connects every database of the configuration. Blocking, like [`Database::connect`].
    pub fn connect(configs: &BTreeMap<String, DatabaseConfig>) -> Result<Databases, DbError> {
        let mut map = BTreeMap::new();
        for (name, cfg) in configs {
            map.insert(name.clone(), Arc::new(Database::connect(name, cfg)?));
        }
        Ok(Databases { map, configs: configs.clone(), plugin_pools: Default::default() })
    }

    /// The database `name`, as the host uses it (the host's own tables are on
    /// `default`). Never hand it to a plugin: see [`Databases::for_plugin`].
    pub fn get(&self, name: &str) -> Result<&Arc<Database>, DbError> {
        self.map.get(name).ok_or_else(|| DbError::Unknown(name.to_string()))
    }

    /// The names of every database.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Where `plugin`'s SQL on the database `name` runs: on `default`, the plugin's own
    /// namespace, never the host's tables; on another SQLite database, the operator's
    /// file through connections of the plugin's own (under the authorizer); on another
    /// PostgreSQL or MySQL database, the operator's pool as configured. The pool is made
    /// on first use and kept until [`Databases::release_plugin`]; at most
    /// [`MAX_PLUGIN_POOLS`] are open at once. Blocking.
    pub fn for_plugin(&self, plugin: &str, name: &str) -> Result<Arc<Database>, DbError> {
        let shared = self.get(name)?;
        let cfg = self.configs.get(name).ok_or_else(|| DbError::Unknown(name.to_string()))?;
        let own = match shared.backend() {
            Backend::Sqlite => true,
            _ => name == "default",
        };
        if !own {
            return Ok(shared.clone());
        }
        if let Some(db) = self.plugin_pools.lock().get(plugin).and_then(|m| m.get(name)) {
            return Ok(db.clone());
        }
        let full = |open: usize| DbError::Unavailable {
            name: name.into(),
            reason: format!(
                "{open} plugin connection pools are open, the most there may be (MAX_PLUGIN_POOLS)"
            ),
        };
        if self.plugin_pool_count() >= MAX_PLUGIN_POOLS {
            return Err(full(MAX_PLUGIN_POOLS));
        }
        // Connecting may wait on the network: outside the lock.
        let db = Arc::new(match shared.backend() {
            Backend::Sqlite => {
                if name == "default" {
                    super::namespace::sqlite_adopt(shared, plugin, &plugin_sqlite_file(&cfg.url, plugin))?;
                }
                Database::connect_plugin_sqlite(plugin, name, cfg)?
            }
            backend => super::namespace::connect_plugin(plugin, name, cfg, backend, shared)?,
        });
        let mut pools = self.plugin_pools.lock();
        if let Some(existing) = pools.get(plugin).and_then(|m| m.get(name)) {
            // Another call made it meanwhile; ours is dropped (on this plain thread).
            return Ok(existing.clone());
        }
        let open: usize = pools.values().map(BTreeMap::len).sum();
        if open >= MAX_PLUGIN_POOLS {
            return Err(full(open));
        }
        pools.entry(plugin.to_string()).or_default().insert(name.to_string(), db.clone());
        Ok(db)
    }

    /// Closes `plugin`'s pools (when it unloads); calls still running keep theirs.
    /// Callable from async code: a PostgreSQL or MySQL connection owns a small runtime,
    /// which must not be dropped inside another, so the pools are dropped on a thread
    /// of their own.
    pub fn release_plugin(&self, plugin: &str) {
        if let Some(removed) = self.plugin_pools.lock().remove(plugin) {
            std::thread::spawn(move || drop(removed));
        }
    }

    /// How many plugin pools are open.
    pub fn plugin_pool_count(&self) -> usize {
        self.plugin_pools.lock().values().map(BTreeMap::len).sum()
    }
}
