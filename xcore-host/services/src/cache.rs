//! The cache service offered to plugins: JSON values under per-plugin namespaces, kept in
//! memory (moka, bounded, per-entry TTL) or in Redis (deadpool-redis pool).
//!
//! Every key is stored as `xcore:cache:{ns}:{key}`, where `ns` is the plugin name. `ns` may
//! not contain `:`, so the prefix of one namespace is never the prefix of another, and
//! [`Cache::clear`] removes exactly one namespace's keys: Redis `SCAN MATCH` on the prefix
//! (glob characters escaped) and `UNLINK` in batches. It never issues `FLUSHDB`/`FLUSHALL`
//! (the Python original's `clear` wiped the whole Redis database).
//!
//! TTLs: `None` means the configured default (`ttl_seconds`, 0 = no expiry); `Some(0)` means
//! no expiry (the original treated 0 as "use the default"). Sub-second TTLs work on both
//! backends (moka's per-entry expiry, Redis `PX`). Plugins send milliseconds
//! (`cache.set`'s `ttl_ms`, see [`super::cache_service`]), where 0 is refused.
//!
//! Size: one value may be at most `max_value_bytes` of JSON (both backends;
//! [`CacheError::ValueTooLarge`]). The memory backend holds at most `max_bytes`: each entry
//! is charged its key, its JSON size and [`ENTRY_OVERHEAD_BYTES`], and at least
//! `max_bytes / max_entries`, so `max_entries` bounds the count too; beyond that moka evicts
//! (or does not admit) entries. `xcore_cache_bytes` and `xcore_cache_entries` show it
//! ([`Cache::collector`]).
//!
//! The API is async and meant for a tokio runtime (the host calls it with
//! `Handle::block_on` from plugin threads). The memory backend never awaits; the Redis
//! backend bounds every wait (connect, pool, response) so a dead or hung Redis gives a
//! [`CacheError::Backend`] instead of a stuck plugin thread. A connection that failed with
//! an I/O error or a timeout is removed from the pool at once, and the pool pings every
//! other connection before reuse, so calls work again as soon as Redis is back.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_redis::redis::{self, AsyncConnectionConfig, RedisError};
use deadpool_redis::{Connection, Manager, Pool, PoolConfig, PoolError, Runtime, Timeouts};
use moka::sync::Cache as MokaCache;
use moka::Expiry;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Prefix of every cache key, before the namespace.
pub const KEY_PREFIX: &str = "xcore:cache:";
/// Longest accepted key, in bytes (the key proper, without prefix and namespace).
pub const MAX_KEY_BYTES: usize = 512;
/// Longest accepted namespace, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 128;
/// Longest TTL honoured; longer ones are clamped (keeps Redis' and moka's clocks from
/// overflowing).
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What one memory entry is charged beyond its key and its JSON (the entry, its `Value`
/// tree's nodes, moka's bookkeeping), roughly.
pub const ENTRY_OVERHEAD_BYTES: u64 = 128;
/// Default of [`CacheConfig::max_bytes`]: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default of [`CacheConfig::max_value_bytes`]: 1 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 1024 * 1024;

/// How long establishing a Redis connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one Redis command may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller may wait for a free pooled connection.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys asked per `SCAN` step and removed per `UNLINK` in [`Cache::clear`].
const CLEAR_BATCH: usize = 500;

/// Which store holds the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// In-process, bounded, lost at restart; not shared between hosts.
    #[default]
    Memory,
    /// Redis at `url`; shared between hosts.
    Redis,
}

/// What [`Cache::connect`] does when Redis cannot be reached at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnreachable {
    /// Log a warning and serve from a memory cache.
    #[default]
    FallbackMemory,
    /// Fail with [`CacheError::Unreachable`].
    Refuse,
}

/// The `cache` section of `xcore.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    /// `memory` (default) or `redis`.
    pub backend: Backend,
    /// `redis://[user:password@]host[:port][/db]`; required by the `redis` backend.
    /// [`CacheConfig::from_env`] takes it from `REDIS_URL`.
    pub url: Option<String>,
    /// Default TTL in seconds; 0 = no expiry. Default 300. `ttl` is accepted too (the
    /// name the Python original used).
    #[serde(alias = "ttl")]
    pub ttl_seconds: u64,
    /// Capacity of the memory backend (also of the fallback memory cache). Default 10 000.
    pub max_entries: u64,
    /// `fallback_memory` (default) or `refuse`.
    pub on_unreachable: OnUnreachable,
    /// Bytes the memory backend holds at most (keys, JSON values and per-entry overhead).
    /// Default 64 MiB.
    pub max_bytes: u64,
    /// The largest value, as JSON text, on either backend (413 `value_too_large` beyond).
    /// Default 1 MiB.
    pub max_value_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            backend: Backend::Memory,
            url: None,
            ttl_seconds: 300,
            max_entries: 10_000,
            on_unreachable: OnUnreachable::FallbackMemory,
            max_bytes: DEFAULT_MAX_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

impl CacheConfig {
    /// Applies the environment: a non-empty `REDIS_URL` replaces `url` (it does not change
    /// `backend`).
    pub fn from_env(self) -> Self {
        self.with_env_url(std::env::var("REDIS_URL").ok())
    }

    fn with_env_url(mut self, url: Option<String>) -> Self {
        if let Some(url) = url.filter(|u| !u.trim().is_empty()) {
            self.url = Some(url);
        }
        self
    }

    /// The default TTL (`None` = no expiry).
    fn default_ttl(&self) -> Option<Duration> {
        ttl_of(Duration::from_secs(self.ttl_seconds))
    }

    fn check(&self) -> Result<(), CacheError> {
        if self.max_bytes == 0 || self.max_value_bytes == 0 || self.max_entries == 0 {
            return Err(CacheError::Config(
                "cache.max_bytes, cache.max_value_bytes and cache.max_entries must be at least 1".into(),
            ));
        }
        if self.max_value_bytes > self.max_bytes {
            return Err(CacheError::Config(format!(
                "cache.max_value_bytes ({}) is larger than cache.max_bytes ({}): no such value could be kept",
                self.max_value_bytes, self.max_bytes
            )));
        }
        if self.max_value_bytes > u64::from(u32::MAX) {
            return Err(CacheError::Config(format!(
                "cache.max_value_bytes ({}) is above the most one entry can weigh ({} bytes)",
                self.max_value_bytes,
                u32::MAX
            )));
        }
        Ok(())
    }
}

/// A failed cache operation. Messages name the operation, the key and the backend; Redis
/// URLs have their password masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The namespace or the key is not acceptable.
    #[error("invalid cache key: {0}")]
    InvalidKey(String),
    /// Redis could not be reached when the cache was set up.
    #[error("cache: Redis at {url} is unreachable: {reason}")]
    Unreachable {
        /// The URL, password masked.
        url: String,
        /// Why.
        reason: String,
    },
    /// The configuration cannot work (e.g. `backend: redis` without a URL, a malformed URL).
    #[error("cache configuration: {0}")]
    Config(String),
    /// The backend failed during an operation (Redis gone, timeout, ...).
    #[error("cache backend error: {0}")]
    Backend(String),
    /// A value could not be encoded or a stored value could not be decoded.
    #[error("cache value error: {0}")]
    Serde(String),
    /// A value is larger than `cache.max_value_bytes`.
    #[error(
        "cache value for '{key}' is {size} bytes of JSON; the limit is {limit} \
         (cache.max_value_bytes in xcore.yaml)"
    )]
    ValueTooLarge {
        /// The key (without the namespace), shortened.
        key: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

/// The cache. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    default_ttl: Option<Duration>,
    max_value_bytes: u64,
    store: Store,
}

enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Cache");
        d.field("backend", &self.backend()).field("default_ttl", &self.inner.default_ttl);
        if let Store::Redis(r) = &self.inner.store {
            d.field("url", &r.url);
        }
        d.finish()
    }
}

impl Cache {
    /// Sets up the configured backend. For Redis, opens a connection and pings it; when that
    /// fails, `on_unreachable` decides between [`CacheError::Unreachable`] and a memory cache
    /// (with a logged warning). A missing or malformed Redis URL is a
    /// [`CacheError::Config`] whatever `on_unreachable` says.
    pub async fn connect(cfg: &CacheConfig) -> Result<Cache, CacheError> {
        cfg.check()?;
        let default_ttl = cfg.default_ttl();
        let memory = || MemoryStore::new(cfg.max_entries, cfg.max_bytes);
        let store = match cfg.backend {
            Backend::Memory => Store::Memory(memory()),
            Backend::Redis => {
                let url = cfg.url.as_deref().filter(|u| !u.trim().is_empty()).ok_or_else(|| {
                    CacheError::Config(
                        "cache backend is 'redis' but no url is set (set cache.url or REDIS_URL)".to_string(),
                    )
                })?;
                let store = RedisStore::new(url)?;
                match store.ping().await {
                    Ok(()) => Store::Redis(store),
                    Err(reason) => {
                        let url = store.url.clone();
                        match cfg.on_unreachable {
                            OnUnreachable::Refuse => return Err(CacheError::Unreachable { url, reason }),
                            OnUnreachable::FallbackMemory => {
                                log::warn!(
                                    "cache: Redis at {url} is unreachable ({reason}); using an in-memory \
                                     cache of {} entries instead (not shared between hosts, lost at \
                                     restart; set cache.on_unreachable: refuse to fail instead)",
                                    cfg.max_entries
                                );
                                Store::Memory(memory())
                            }
                        }
                    }
                }
            }
        };
        Ok(Cache { inner: Arc::new(Inner { default_ttl, max_value_bytes: cfg.max_value_bytes, store }) })
    }

    /// A memory cache (for tests and embedding), with the default byte limits.
    pub fn memory(max_entries: u64, default_ttl: Option<Duration>) -> Cache {
        Self::memory_bounded(max_entries, DEFAULT_MAX_BYTES, DEFAULT_MAX_VALUE_BYTES, default_ttl)
    }

    /// A memory cache holding at most `max_bytes`, with values of at most `max_value_bytes`.
    pub fn memory_bounded(
        max_entries: u64,
        max_bytes: u64,
        max_value_bytes: u64,
        default_ttl: Option<Duration>,
    ) -> Cache {
        let store = Store::Memory(MemoryStore::new(max_entries, max_bytes));
        Cache { inner: Arc::new(Inner { default_ttl: default_ttl.and_then(ttl_of), max_value_bytes, store }) }
    }

    /// The memory backend's charged bytes and entries (both 0 for Redis). Eventually
    /// consistent: moka settles its counts in batches.
    pub fn memory_usage(&self) -> (u64, u64) {
        match &self.inner.store {
            Store::Memory(m) => (m.cache.weighted_size(), m.cache.entry_count()),
            Store::Redis(_) => (0, 0),
        }
    }

    /// A Prometheus collector of `xcore_cache_bytes` and `xcore_cache_entries` (the memory
    /// backend's, read at scrape time) and `xcore_cache_max_bytes`.
    pub fn collector(&self) -> Box<dyn prometheus::core::Collector> {
        Box::new(CacheCollector::new(self.clone()))
    }

    /// The backend in use: `"memory"` or `"redis"`.
    pub fn backend(&self) -> &'static str {
        match self.inner.store {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }

    /// The value under `key` in namespace `ns`, if present and not expired.
    pub async fn get(&self, ns: &str, key: &str) -> Result<Option<Value>, CacheError> {
        let full = full_key(ns, key)?;
        match &self.inner.store {
            Store::Memory(m) => Ok(m.get(&full)),
            Store::Redis(r) => r.get(&full).await,
        }
    }

    /// Stores `value` under `key`. `ttl`: `None` = the default TTL, `Some(ZERO)` = no expiry.
    pub async fn set(
        &self,
        ns: &str,
        key: &str,
        value: &Value,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        self.put(ns, key, value.clone(), ttl).await
    }

    /// [`Cache::set`] taking the value (the memory backend keeps it without a copy).
    pub async fn put(
        &self,
        ns: &str,
        key: &str,
        value: Value,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        let full = full_key(ns, key)?;
        let ttl = self.effective_ttl(ttl);
        let size = json_size(&value);
        if size > self.inner.max_value_bytes {
            return Err(CacheError::ValueTooLarge {
                key: truncate(key, 64).to_string(),
                size,
                limit: self.inner.max_value_bytes,
            });
        }
        match &self.inner.store {
            Store::Memory(m) => {
                m.set(full, value, size, ttl);
                Ok(())
            }
            Store::Redis(r) => r.set(&full, &value, ttl).await,
        }
    }

    /// Removes `key`; `true` if it was present.
    pub async fn delete(&self, ns: &str, key: &str) -> Result<bool, CacheError> {
        let full = full_key(ns, key)?;
        match &self.inner.store {
            Store::Memory(m) => Ok(m.delete(&full)),
            Store::Redis(r) => r.delete(&full).await,
        }
    }

    /// The cached value, or `compute()`'s result, stored with `ttl` (as in [`Cache::set`]).
    /// An error from `compute` is returned and nothing is stored. A stored value that is not
    /// valid JSON counts as a miss and is overwritten. Concurrent misses of the same key
    /// may each compute (there is no cross-host lock).
    pub async fn get_or_set<F, Fut>(
        &self,
        ns: &str,
        key: &str,
        ttl: Option<Duration>,
        compute: F,
    ) -> Result<Value, CacheError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Value, CacheError>>,
    {
        match self.get(ns, key).await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(CacheError::Serde(e)) => log::warn!("cache: {e}; recomputing it"),
            Err(e) => return Err(e),
        }
        let value = compute().await?;
        self.set(ns, key, &value, ttl).await?;
        Ok(value)
    }

    /// Removes every key of namespace `ns` and nothing else; returns how many were removed.
    pub async fn clear(&self, ns: &str) -> Result<u64, CacheError> {
        let prefix = namespace_prefix(ns)?;
        match &self.inner.store {
            Store::Memory(m) => Ok(m.clear_prefix(&prefix)),
            Store::Redis(r) => r.clear_prefix(&prefix).await,
        }
    }

    fn effective_ttl(&self, ttl: Option<Duration>) -> Option<Duration> {
        match ttl {
            None => self.inner.default_ttl,
            Some(d) => ttl_of(d),
        }
    }
}

/// Bytes of `value` as JSON text, counted without building the text.
fn json_size(value: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a `Value` to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}

/// `ZERO` = no expiry; otherwise clamped to [`MAX_TTL`].
fn ttl_of(d: Duration) -> Option<Duration> {
    if d.is_zero() {
        None
    } else {
        Some(d.min(MAX_TTL))
    }
}

fn validate_namespace(ns: &str) -> Result<(), CacheError> {
    if ns.is_empty() {
        return Err(CacheError::InvalidKey("the namespace is empty".to_string()));
    }
    if ns.len() > MAX_NAMESPACE_BYTES {
        return Err(CacheError::InvalidKey(format!(
            "namespace '{}...' is {} bytes long; at most {MAX_NAMESPACE_BYTES} are allowed",
            truncate(ns, 32),
            ns.len()
        )));
    }
    if ns.contains(':') {
        return Err(CacheError::InvalidKey(format!(
            "namespace '{}' contains ':', which is not allowed",
            ns.escape_debug()
        )));
    }
    if ns.chars().any(char::is_control) {
        return Err(CacheError::InvalidKey(format!(
            "namespace '{}' contains a control character",
            ns.escape_debug()
        )));
    }
    Ok(())
}

fn namespace_prefix(ns: &str) -> Result<String, CacheError> {
    validate_namespace(ns)?;
    Ok(format!("{KEY_PREFIX}{ns}:"))
}

fn full_key(ns: &str, key: &str) -> Result<String, CacheError> {
    let prefix = namespace_prefix(ns)?;
    if key.is_empty() {
        return Err(CacheError::InvalidKey(format!("empty key in namespace '{ns}'")));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(CacheError::InvalidKey(format!(
            "key '{}...' in namespace '{ns}' is {} bytes long; at most {MAX_KEY_BYTES} are allowed",
            truncate(key, 32).escape_debug(),
            key.len()
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(CacheError::InvalidKey(format!(
            "key '{}' in namespace '{ns}' contains a control character",
            key.escape_debug()
        )));
    }
    Ok(prefix + key)
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` with Redis glob metacharacters escaped, for `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The URL with the password (or the whole user-info part) masked, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let masked = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_string(),
            };
            format!("{}{masked}{}", &url[..scheme_end + 3], &rest[at..])
        }
        None => url.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Memory backend

#[derive(Clone)]
struct Entry {
    value: Arc<Value>,
    /// What the entry is charged against `max_bytes` (see [`MemoryStore::new`]).
    weight: u32,
    ttl: Option<Duration>,
    /// When `ttl` runs out (moka may hand back an expired entry it has not evicted yet).
    expires_at: Option<Instant>,
}

impl Entry {
    fn live(&self) -> bool {
        self.expires_at.is_none_or(|t| t > Instant::now())
    }
}

/// Each entry expires after its own TTL, counted from its last write.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Entry, _created_at: Instant) -> Option<Duration> {
        value.ttl
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        // The default keeps the old expiry; an overwrite sets its own TTL.
        value.ttl
    }
}

struct MemoryStore {
    cache: MokaCache<String, Entry>,
    max_bytes: u64,
    /// The least an entry is charged: `max_bytes / max_entries`.
    min_weight: u64,
    /// Weight inserted since moka last settled its counts; past a share of `max_bytes`
    /// the writer settles them (evicting), so a burst of large values cannot run far
    /// past the limit before eviction catches up.
    unsettled: std::sync::atomic::AtomicU64,
}

impl MemoryStore {
    /// Weighted by bytes: capacity `max_bytes`, each entry charged
    /// max(key + JSON + [`ENTRY_OVERHEAD_BYTES`], `max_bytes / max_entries`).
    fn new(max_entries: u64, max_bytes: u64) -> Self {
        let max_bytes = max_bytes.max(1);
        let cache = MokaCache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &String, e: &Entry| e.weight)
            .expire_after(PerEntryTtl)
            .build();
        MemoryStore {
            cache,
            max_bytes,
            min_weight: max_bytes / max_entries.max(1),
            unsettled: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn get(&self, key: &str) -> Option<Value> {
        self.cache.get(key).map(|e| Value::clone(&e.value))
    }

    fn set(&self, key: String, value: Value, size: u64, ttl: Option<Duration>) {
        use std::sync::atomic::Ordering;
        let expires_at = ttl.and_then(|d| Instant::now().checked_add(d));
        let weight = (key.len() as u64 + size + ENTRY_OVERHEAD_BYTES).max(self.min_weight);
        let weight = u32::try_from(weight).unwrap_or(u32::MAX);
        self.cache.insert(key, Entry { value: Arc::new(value), weight, ttl, expires_at });
        let unsettled = self.unsettled.fetch_add(u64::from(weight), Ordering::AcqRel) + u64::from(weight);
        if unsettled > self.max_bytes / 8 {
            self.unsettled.store(0, Ordering::Release);
            self.cache.run_pending_tasks();
        }
    }

    fn delete(&self, key: &str) -> bool {
        self.cache.remove(key).is_some_and(|e| e.live())
    }

    fn clear_prefix(&self, prefix: &str) -> u64 {
        let keys: Vec<Arc<String>> =
            self.cache.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, _)| k).collect();
        keys.iter().filter(|k| self.cache.remove(k.as_str()).is_some_and(|e| e.live())).count() as u64
    }
}

/// `xcore_cache_bytes`, `xcore_cache_entries`, `xcore_cache_max_bytes`, read at scrape time.
struct CacheCollector {
    cache: Cache,
    bytes: prometheus::IntGauge,
    entries: prometheus::IntGauge,
    max_bytes: prometheus::IntGauge,
    descs: Vec<prometheus::core::Desc>,
}

impl CacheCollector {
    fn new(cache: Cache) -> Self {
        let gauge = |name: &str, help: &str| prometheus::IntGauge::new(name, help).expect("valid metric");
        let bytes =
            gauge("xcore_cache_bytes", "Bytes the memory cache holds (charged against cache.max_bytes)");
        let entries = gauge("xcore_cache_entries", "Entries in the memory cache");
        let max_bytes = gauge("xcore_cache_max_bytes", "cache.max_bytes of the memory cache (0 for Redis)");
        let descs = [&bytes, &entries, &max_bytes]
            .iter()
            .flat_map(|g| prometheus::core::Collector::desc(*g).into_iter().cloned())
            .collect();
        CacheCollector { cache, bytes, entries, max_bytes, descs }
    }
}

impl prometheus::core::Collector for CacheCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let (bytes, entries) = self.cache.memory_usage();
        let max = match &self.cache.inner.store {
            Store::Memory(m) => m.max_bytes,
            Store::Redis(_) => 0,
        };
        self.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.max_bytes.set(i64::try_from(max).unwrap_or(i64::MAX));
        [&self.bytes, &self.entries, &self.max_bytes]
            .iter()
            .flat_map(|g| prometheus::core::Collector::collect(*g))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Redis backend

struct RedisStore {
    pool: Pool,
    /// Redacted URL, for messages.
    url: String,
}

impl RedisStore {
    fn new(url: &str) -> Result<Self, CacheError> {
        let shown = redact_url(url);
        let conn_cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let manager = Manager::new_with_config(url, conn_cfg)
            .map_err(|e| CacheError::Config(format!("Redis URL {shown} is not valid: {e}")))?;
        let pool_cfg = PoolConfig {
            timeouts: Timeouts {
                wait: Some(POOL_WAIT_TIMEOUT),
                create: Some(CONNECT_TIMEOUT + Duration::from_millis(500)),
                recycle: Some(RESPONSE_TIMEOUT),
            },
            ..PoolConfig::default()
        };
        let pool = Pool::builder(manager)
            .config(pool_cfg)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| CacheError::Config(format!("cannot build the Redis pool for {shown}: {e}")))?;
        Ok(RedisStore { pool, url: shown })
    }

    /// One round trip, for the start-up check; the error is the reason.
    async fn ping(&self) -> Result<(), String> {
        let mut conn = self.pool.get().await.map_err(|e| pool_error_text(&e))?;
        let pong: Result<String, RedisError> = redis::cmd("PING").query_async(&mut conn).await;
        match pong {
            Ok(_) => Ok(()),
            Err(e) => {
                let text = e.to_string();
                discard_if_broken(conn, &e);
                Err(text)
            }
        }
    }

    async fn conn(&self, op: &str, target: &str) -> Result<Connection, CacheError> {
        self.pool.get().await.map_err(|e| {
            CacheError::Backend(format!(
                "{op} of '{target}' on Redis {}: no connection: {}",
                self.url,
                pool_error_text(&e)
            ))
        })
    }

    /// The error of a failed command; the connection is dropped from the pool if broken.
    fn fail(&self, conn: Connection, op: &str, target: &str, e: RedisError) -> CacheError {
        let err = CacheError::Backend(format!("{op} of '{target}' on Redis {}: {e}", self.url));
        discard_if_broken(conn, &e);
        err
    }

    async fn get(&self, key: &str) -> Result<Option<Value>, CacheError> {
        let mut conn = self.conn("GET", key).await?;
        let text: Option<String> = match redis::cmd("GET").arg(key).query_async(&mut conn).await {
            Ok(t) => t,
            Err(e) => return Err(self.fail(conn, "GET", key, e)),
        };
        drop(conn);
        match text {
            None => Ok(None),
            Some(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
                CacheError::Serde(format!("value of '{key}' on Redis {} is not valid JSON: {e}", self.url))
            }),
        }
    }

    async fn set(&self, key: &str, value: &Value, ttl: Option<Duration>) -> Result<(), CacheError> {
        let text = serde_json::to_string(value)
            .map_err(|e| CacheError::Serde(format!("cannot encode the value of '{key}' as JSON: {e}")))?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(text);
        if let Some(ttl) = ttl {
            // PX so sub-second TTLs work; at least 1 ms (0 would be rejected).
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            cmd.arg("PX").arg(ms);
        }
        let mut conn = self.conn("SET", key).await?;
        match cmd.query_async::<()>(&mut conn).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(conn, "SET", key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let mut conn = self.conn("DEL", key).await?;
        match redis::cmd("DEL").arg(key).query_async::<u64>(&mut conn).await {
            Ok(n) => Ok(n > 0),
            Err(e) => Err(self.fail(conn, "DEL", key, e)),
        }
    }

    async fn clear_prefix(&self, prefix: &str) -> Result<u64, CacheError> {
        let pattern = format!("{}*", glob_escape(prefix));
        let target = format!("{prefix}*");
        let mut conn = self.conn("clear", &target).await?;
        let mut cursor: u64 = 0;
        let mut removed: u64 = 0;
        loop {
            let step: Result<(u64, Vec<Vec<u8>>), RedisError> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(CLEAR_BATCH)
                .query_async(&mut conn)
                .await;
            let (next, keys) = match step {
                Ok(s) => s,
                Err(e) => return Err(self.fail(conn, "clear (SCAN)", &target, e)),
            };
            // Belt and braces: only keys that really carry the prefix.
            let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| k.starts_with(prefix.as_bytes())).collect();
            for batch in keys.chunks(CLEAR_BATCH) {
                match redis::cmd("UNLINK").arg(batch).query_async::<u64>(&mut conn).await {
                    Ok(n) => removed += n,
                    Err(e) => return Err(self.fail(conn, "clear (UNLINK)", &target, e)),
                }
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

/// A connection whose command failed at the transport level is taken out of the pool
/// (dropped) rather than returned to it; others go back (the pool pings them before reuse).
fn discard_if_broken(conn: Connection, e: &RedisError) {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error() {
        drop(Connection::take(conn));
    }
}

fn pool_error_text(e: &PoolError) -> String {
    match e {
        PoolError::Timeout(kind) => format!("timed out ({kind:?}) waiting for a connection"),
        PoolError::Backend(e) => e.to_string(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    static COUNTER: AtomicU64 = AtomicU64::new(0);

    /// A namespace no other test (or test process) uses.
    fn unique_ns(tag: &str) -> String {
        format!("test-{tag}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
    }

    fn mem() -> Cache {
        Cache::memory(10_000, Some(Duration::from_secs(300)))
    }

    fn memory_store(c: &Cache) -> &MemoryStore {
        match &c.inner.store {
            Store::Memory(m) => m,
            Store::Redis(_) => panic!("not a memory cache"),
        }
    }

    #[test]
    fn config_defaults_and_yaml_names() {
        let c: CacheConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(c, CacheConfig::default());
        assert_eq!(c.ttl_seconds, 300);
        assert_eq!(c.max_entries, 10_000);
        let c: CacheConfig = serde_json::from_value(
            json!({"backend": "redis", "url": "redis://h", "on_unreachable": "refuse", "ttl_seconds": 0}),
        )
        .unwrap();
        assert_eq!(c.backend, Backend::Redis);
        assert_eq!(c.on_unreachable, OnUnreachable::Refuse);
        assert_eq!(c.default_ttl(), None);
        assert!(serde_json::from_value::<CacheConfig>(json!({"backend": "memcached"})).is_err());
        let c: CacheConfig = serde_json::from_value(json!({"ttl": 60})).unwrap();
        assert_eq!(c.ttl_seconds, 60, "the original's name for it");
        let c = CacheConfig::default().with_env_url(Some("redis://x:6379".into()));
        assert_eq!(c.url.as_deref(), Some("redis://x:6379"));
        assert_eq!(c.backend, Backend::Memory);
        let c = CacheConfig { url: Some("redis://a".into()), ..Default::default() }
            .with_env_url(Some(" ".into()));
        assert_eq!(c.url.as_deref(), Some("redis://a"));
    }

    #[test]
    fn redaction_and_escaping() {
        assert_eq!(redact_url("redis://:secret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact_url("redis://user:pw@h/1"), "redis://user:***@h/1");
        assert_eq!(redact_url("redis://token@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[tokio::test]
    async fn key_validation() {
        let c = mem();
        let v = json!(1);
        for (ns, key) in [("", "k"), ("a:b", "k"), ("a\nb", "k"), ("ns", ""), ("ns", "a\u{7}b")] {
            let err = c.set(ns, key, &v, None).await.unwrap_err();
            assert!(matches!(err, CacheError::InvalidKey(_)), "{ns:?}/{key:?}: {err}");
        }
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        let err = c.get("ns", &long).await.unwrap_err();
        assert!(err.to_string().contains("513 bytes"), "{err}");
        assert!(matches!(c.clear("a:b").await, Err(CacheError::InvalidKey(_))));
        // ':' and unicode are fine in keys; the longest key is accepted.
        c.set("ns", "a:b:ü", &v, None).await.unwrap();
        assert_eq!(c.get("ns", "a:b:ü").await.unwrap(), Some(v.clone()));
        c.set("ns", &"k".repeat(MAX_KEY_BYTES), &v, None).await.unwrap();
    }

    #[tokio::test]
    async fn memory_get_set_delete() {
        let c = mem();
        assert_eq!(c.backend(), "memory");
        assert_eq!(c.get("p", "k").await.unwrap(), None);
        let v = json!({"a": [1, 2, {"b": null}], "s": "x"});
        c.set("p", "k", &v, None).await.unwrap();
        assert_eq!(c.get("p", "k").await.unwrap(), Some(v));
        c.set("p", "k", &json!("new"), None).await.unwrap();
        assert_eq!(c.get("p", "k").await.unwrap(), Some(json!("new")));
        assert!(c.delete("p", "k").await.unwrap());
        assert!(!c.delete("p", "k").await.unwrap());
        assert_eq!(c.get("p", "k").await.unwrap(), None);
        // Clones share the store.
        let c2 = c.clone();
        c2.set("p", "shared", &json!(true), None).await.unwrap();
        assert_eq!(c.get("p", "shared").await.unwrap(), Some(json!(true)));
    }

    #[tokio::test]
    async fn memory_ttl_expiry_and_zero() {
        let c = Cache::memory(100, Some(Duration::from_millis(150)));
        c.set("p", "default", &json!(1), None).await.unwrap();
        c.set("p", "short", &json!(2), Some(Duration::from_millis(100))).await.unwrap();
        c.set("p", "forever", &json!(3), Some(Duration::ZERO)).await.unwrap();
        c.set("p", "long", &json!(4), Some(Duration::from_secs(60))).await.unwrap();
        // Overwriting with another TTL replaces the expiry.
        c.set("p", "extended", &json!(5), Some(Duration::from_millis(100))).await.unwrap();
        c.set("p", "extended", &json!(6), Some(Duration::ZERO)).await.unwrap();
        assert_eq!(c.get("p", "short").await.unwrap(), Some(json!(2)));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(c.get("p", "default").await.unwrap(), None);
        assert_eq!(c.get("p", "short").await.unwrap(), None);
        assert!(!c.delete("p", "short").await.unwrap(), "an expired entry is not 'present'");
        assert_eq!(c.get("p", "forever").await.unwrap(), Some(json!(3)));
        assert_eq!(c.get("p", "long").await.unwrap(), Some(json!(4)));
        assert_eq!(c.get("p", "extended").await.unwrap(), Some(json!(6)));
    }

    #[tokio::test]
    async fn memory_default_ttl_zero_never_expires() {
        let cfg = CacheConfig { ttl_seconds: 0, ..Default::default() };
        let c = Cache::connect(&cfg).await.unwrap();
        c.set("p", "k", &json!("v"), None).await.unwrap();
        let m = memory_store(&c);
        m.cache.run_pending_tasks();
        let (_, e) = m.cache.iter().next().unwrap();
        assert_eq!(e.ttl, None);
    }

    #[tokio::test]
    async fn memory_namespaces_isolated_and_clear() {
        let c = mem();
        for i in 0..5 {
            c.set("a", &format!("k{i}"), &json!(i), None).await.unwrap();
        }
        c.set("b", "k0", &json!("b"), None).await.unwrap();
        c.set("ab", "k0", &json!("ab"), None).await.unwrap();
        assert_eq!(c.get("a", "k0").await.unwrap(), Some(json!(0)));
        assert_eq!(c.get("b", "k0").await.unwrap(), Some(json!("b")));
        assert_eq!(c.clear("a").await.unwrap(), 5);
        assert_eq!(c.get("a", "k3").await.unwrap(), None);
        assert_eq!(c.get("b", "k0").await.unwrap(), Some(json!("b")));
        assert_eq!(c.get("ab", "k0").await.unwrap(), Some(json!("ab")));
        assert_eq!(c.clear("a").await.unwrap(), 0);
        assert_eq!(c.clear("nothing").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn get_or_set_computes_once() {
        let c = mem();
        let calls = AtomicUsize::new(0);
        for _ in 0..3 {
            let v = c
                .get_or_set("p", "k", None, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok(json!({"computed": true}))
                })
                .await
                .unwrap();
            assert_eq!(v, json!({"computed": true}));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A failing computation is returned and nothing is stored.
        let err = c
            .get_or_set("p", "bad", None, || async { Err(CacheError::Backend("upstream down".into())) })
            .await
            .unwrap_err();
        assert_eq!(err, CacheError::Backend("upstream down".into()));
        assert_eq!(c.get("p", "bad").await.unwrap(), None);
        // Its TTL applies.
        c.get_or_set("p", "t", Some(Duration::from_millis(50)), || async { Ok(json!(1)) }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let v = c.get_or_set("p", "t", None, || async { Ok(json!(2)) }).await.unwrap();
        assert_eq!(v, json!(2));
    }

    #[tokio::test]
    async fn memory_capacity_bound() {
        let c = Cache::memory(50, None);
        for i in 0..500 {
            c.set("p", &format!("k{i}"), &json!(i), None).await.unwrap();
        }
        let m = memory_store(&c);
        m.cache.run_pending_tasks();
        assert!(m.cache.entry_count() <= 50, "{} entries", m.cache.entry_count());
        let present = m.cache.iter().count();
        assert!(present <= 50 && present > 0, "{present} entries");
    }

    #[tokio::test]
    async fn memory_bytes_and_value_size_are_bounded() {
        let mib = 1024 * 1024;
        let c = Cache::memory_bounded(10_000, 8 * mib, mib, None);
        let big = json!("x".repeat(mib as usize)); // 1 MiB + 2 quotes of JSON
        let err = c.set("p", "big", &big, None).await.unwrap_err();
        assert!(matches!(err, CacheError::ValueTooLarge { limit, .. } if limit == mib), "{err}");
        assert!(err.to_string().contains("cache.max_value_bytes"), "{err}");
        let value = json!("y".repeat(mib as usize - 100));
        for i in 0..40 {
            c.set("p", &format!("k{i}"), &value, None).await.unwrap();
        }
        let m = memory_store(&c);
        m.cache.run_pending_tasks();
        let (bytes, entries) = c.memory_usage();
        assert!(bytes <= 8 * mib, "{bytes} bytes");
        assert!((1..40).contains(&entries), "{entries} entries");
        // The entry bound still holds for small values: each is charged max_bytes / max_entries.
        let c = Cache::memory_bounded(10, 8 * mib, mib, None);
        for i in 0..100 {
            c.set("p", &format!("k{i}"), &json!(i), None).await.unwrap();
        }
        memory_store(&c).cache.run_pending_tasks();
        assert!(c.memory_usage().1 <= 10, "{:?}", c.memory_usage());
        // And the collector exports it.
        let r = prometheus::Registry::new();
        r.register(c.collector()).unwrap();
        let fams = r.gather();
        let names: Vec<&str> = fams.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["xcore_cache_bytes", "xcore_cache_entries", "xcore_cache_max_bytes"]);
        assert_eq!(fams[2].get_metric()[0].get_gauge().get_value(), (8 * mib) as f64);
        assert!(fams[0].get_metric()[0].get_gauge().get_value() > 0.0);
    }

    #[tokio::test]
    async fn limits_that_cannot_work_are_config_errors() {
        for cfg in [
            CacheConfig { max_bytes: 0, ..Default::default() },
            CacheConfig { max_value_bytes: 2, max_bytes: 1, ..Default::default() },
        ] {
            assert!(matches!(Cache::connect(&cfg).await, Err(CacheError::Config(_))), "{cfg:?}");
        }
    }

    #[tokio::test]
    async fn redis_without_url_is_a_config_error() {
        let cfg = CacheConfig { backend: Backend::Redis, ..Default::default() };
        assert!(matches!(Cache::connect(&cfg).await, Err(CacheError::Config(_))));
        let cfg =
            CacheConfig { backend: Backend::Redis, url: Some("http://nope".into()), ..Default::default() };
        let err = Cache::connect(&cfg).await.unwrap_err();
        assert!(matches!(err, CacheError::Config(_)), "{err}");
    }

    // -----------------------------------------------------------------------------------
    // Redis (XCORE_TEST_REDIS_URL)

    fn redis_url() -> Option<String> {
        match std::env::var("XCORE_TEST_REDIS_URL") {
            Ok(u) if !u.is_empty() => Some(u),
            _ => {
                println!("skipped: XCORE_TEST_REDIS_URL not set");
                None
            }
        }
    }

    fn redis_cfg(url: &str) -> CacheConfig {
        CacheConfig {
            backend: Backend::Redis,
            url: Some(url.to_string()),
            on_unreachable: OnUnreachable::Refuse,
            ..Default::default()
        }
    }

    async fn raw_conn(url: &str) -> redis::aio::MultiplexedConnection {
        redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_round_trip_and_ttl() {
        let Some(url) = redis_url() else { return };
        let c = Cache::connect(&redis_cfg(&url)).await.unwrap();
        assert_eq!(c.backend(), "redis");
        let ns = unique_ns("rt");
        let v = json!({"a": [1, 2.5, "ü"], "b": null});
        assert_eq!(c.get(&ns, "k").await.unwrap(), None);
        c.set(&ns, "k", &v, None).await.unwrap();
        assert_eq!(c.get(&ns, "k").await.unwrap(), Some(v.clone()));
        // Stored as JSON text under the namespaced key, with the default TTL.
        let mut raw = raw_conn(&url).await;
        let full = format!("xcore:cache:{ns}:k");
        let text: String = redis::cmd("GET").arg(&full).query_async(&mut raw).await.unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
        let pttl: i64 = redis::cmd("PTTL").arg(&full).query_async(&mut raw).await.unwrap();
        assert!(pttl > 290_000 && pttl <= 300_000, "{pttl}");

        c.set(&ns, "short", &json!(1), Some(Duration::from_millis(200))).await.unwrap();
        c.set(&ns, "forever", &json!(2), Some(Duration::ZERO)).await.unwrap();
        let pttl: i64 =
            redis::cmd("PTTL").arg(format!("xcore:cache:{ns}:forever")).query_async(&mut raw).await.unwrap();
        assert_eq!(pttl, -1, "TTL 0 = no expiry");
        assert_eq!(c.get(&ns, "short").await.unwrap(), Some(json!(1)));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(c.get(&ns, "short").await.unwrap(), None);
        assert_eq!(c.get(&ns, "forever").await.unwrap(), Some(json!(2)));

        let calls = AtomicUsize::new(0);
        for _ in 0..2 {
            let got = c
                .get_or_set(&ns, "gos", None, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok(json!("computed"))
                })
                .await
                .unwrap();
            assert_eq!(got, json!("computed"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Invalid JSON planted by someone else: get says so, get_or_set recomputes.
        let _: () = redis::cmd("SET")
            .arg(format!("xcore:cache:{ns}:junk"))
            .arg("{not json")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(matches!(c.get(&ns, "junk").await, Err(CacheError::Serde(_))));
        assert_eq!(c.get_or_set(&ns, "junk", None, || async { Ok(json!(7)) }).await.unwrap(), json!(7));

        assert!(c.delete(&ns, "k").await.unwrap());
        assert!(!c.delete(&ns, "k").await.unwrap());
        c.clear(&ns).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_refuses_values_over_the_limit() {
        let Some(url) = redis_url() else { return };
        let cfg = CacheConfig { max_value_bytes: 1000, ..redis_cfg(&url) };
        let c = Cache::connect(&cfg).await.unwrap();
        let ns = unique_ns("big");
        let err = c.set(&ns, "k", &json!("x".repeat(1000)), None).await.unwrap_err();
        assert!(matches!(err, CacheError::ValueTooLarge { size: 1002, limit: 1000, .. }), "{err}");
        assert_eq!(c.get(&ns, "k").await.unwrap(), None, "nothing was written");
        c.set(&ns, "k", &json!("x".repeat(998)), None).await.unwrap();
        assert!(c.get(&ns, "k").await.unwrap().is_some());
        c.clear(&ns).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_clear_removes_only_its_namespace() {
        let Some(url) = redis_url() else { return };
        let c = Cache::connect(&redis_cfg(&url)).await.unwrap();
        let base = unique_ns("clr");
        // A namespace with glob characters must match only itself.
        let ns = format!("{base}*[x]");
        let n = 1234; // several SCAN/UNLINK batches
        for i in 0..n {
            c.set(&ns, &format!("k{i}"), &json!(i), Some(Duration::from_secs(60))).await.unwrap();
        }
        let mut raw = raw_conn(&url).await;
        let outside = [
            format!("{base}-outside"),             // not under the prefix at all
            format!("xcore:cache:{base}x]:k0"),    // would match the unescaped glob
            format!("xcore:cache:{base}:k0"),      // the namespace without the suffix
            format!("xcore:cache:{base}*[x]x:k0"), // a longer namespace
        ];
        for k in &outside {
            let _: () = redis::cmd("SET")
                .arg(k)
                .arg("\"keep\"")
                .arg("EX")
                .arg(60)
                .query_async(&mut raw)
                .await
                .unwrap();
        }
        assert_eq!(c.clear(&ns).await.unwrap(), n);
        assert_eq!(c.get(&ns, "k0").await.unwrap(), None);
        for k in &outside {
            let exists: u64 = redis::cmd("EXISTS").arg(k).query_async(&mut raw).await.unwrap();
            assert_eq!(exists, 1, "{k} was removed");
        }
        assert_eq!(c.clear(&ns).await.unwrap(), 0);
        let _: u64 = redis::cmd("DEL").arg(&outside[..]).query_async(&mut raw).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_unreachable_at_start() {
        if redis_url().is_none() {
            return;
        }
        let url = "redis://:hunter2@127.0.0.1:1";
        let err = Cache::connect(&redis_cfg(url)).await.unwrap_err();
        match &err {
            CacheError::Unreachable { url, reason } => {
                assert_eq!(url, "redis://:***@127.0.0.1:1");
                assert!(!reason.is_empty());
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let cfg = CacheConfig { on_unreachable: OnUnreachable::FallbackMemory, ..redis_cfg(url) };
        let c = Cache::connect(&cfg).await.unwrap();
        assert_eq!(c.backend(), "memory");
        c.set("p", "k", &json!(1), None).await.unwrap();
        assert_eq!(c.get("p", "k").await.unwrap(), Some(json!(1)));
    }

    /// A redis-server child, killed on drop.
    struct Server {
        child: std::process::Child,
    }

    impl Server {
        fn start(port: u16) -> Option<Server> {
            let child = std::process::Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()?;
            let server = Server { child };
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server on port {port} did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            Some(server)
        }

        fn stop(mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn redis_server_on_path() -> bool {
        std::process::Command::new("redis-server")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_reconnects_after_restart() {
        if redis_url().is_none() {
            return;
        }
        if !redis_server_on_path() {
            println!("skipped: redis-server is not on PATH");
            return;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("redis://127.0.0.1:{port}");
        let server = Server::start(port).expect("start redis-server");
        let c = Cache::connect(&redis_cfg(&url)).await.unwrap();
        let ns = unique_ns("rc");
        c.set(&ns, "k", &json!("before"), None).await.unwrap();
        assert_eq!(c.get(&ns, "k").await.unwrap(), Some(json!("before")));

        server.stop();
        for _ in 0..3 {
            let t = Instant::now();
            let err = c.get(&ns, "k").await.unwrap_err();
            assert!(matches!(err, CacheError::Backend(_)), "{err:?}");
            assert!(err.to_string().contains(&url), "{err}");
            assert!(t.elapsed() < Duration::from_secs(8), "took {:?}", t.elapsed());
            assert!(matches!(c.set(&ns, "k", &json!(1), None).await, Err(CacheError::Backend(_))));
            assert!(matches!(c.clear(&ns).await, Err(CacheError::Backend(_))));
        }

        let _server = Server::start(port).expect("restart redis-server");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match c.set(&ns, "k", &json!("after"), None).await {
                Ok(()) => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no recovery within 5 s: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        // Every pooled connection works again (none of the broken ones is reused).
        for i in 0..20 {
            c.set(&ns, &format!("n{i}"), &json!(i), None).await.unwrap();
            assert_eq!(c.get(&ns, "k").await.unwrap(), Some(json!("after")));
        }
        // Concurrent callers (several pooled connections) too.
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let c = c.clone();
                let ns = ns.clone();
                tokio::spawn(async move { c.get(&ns, &format!("n{i}")).await })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap(), Some(json!(i)));
        }
    }
}
