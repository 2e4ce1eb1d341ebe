//! The safe plugin SDK: what a plugin author writes against.
//!
//! [`export_plugin!`](crate::export_plugin) turns a type implementing [`Plugin`] into the
//! root module the host loads. Every entry point runs under [`catch_unwind`], so a panic
//! becomes an error with code [`codes::PLUGIN_PANIC`] instead of killing the host.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use xcore_plugin_abi::abi_stable::sabi_trait::TD_Opaque;
use xcore_plugin_abi::abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};

use crate::codes;
use xcore_plugin_abi::describe::{ActionDescription, PluginDescription, DESCRIBE_ACTION};
use xcore_plugin_abi::ffi::{
    self, CallError, CallRequest, CallResult, HostBox, InitArgs, PluginBox, PluginObject,
};

/// A plugin. One instance serves every call; with `resources.concurrency` above 1 the host
/// calls it from several threads at once, hence `Sync`.
pub trait Plugin: Send + Sync + Sized + 'static {
    /// Builds the instance. Called at load and again on every restart.
    fn new(ctx: &Context) -> Result<Self, PluginError>;

    /// Runs one action. Unknown actions should answer [`PluginError::unknown_action`].
    fn call(&self, ctx: &Context, req: Request<'_>) -> Result<Reply, PluginError>;

    // There is no `on_event`: the host delivers every event (a manifest hook or a
    // `Context::subscribe`) as a call of the subscribed action, through the supervised
    // call path, with `{"event", "payload"}` (read it with `Request::event`).

    /// Called once before the host drops the instance (unload, reload, restart).
    fn shutdown(&self, _ctx: &Context) {}

    /// The plugin's action table: what the host checks the manifest against at load and
    /// puts in the OpenAPI document. [`plugin`](crate::plugin) writes it from the
    /// handlers; a plugin that writes its own `call` has none (`None`), and the host then
    /// trusts its manifest.
    fn actions() -> Option<Vec<ActionDescription>> {
        None
    }
}

/// A log level for [`Context::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Error.
    Error,
    /// Warning.
    Warn,
    /// Information.
    Info,
    /// Debug.
    Debug,
    /// Trace.
    Trace,
}

impl LogLevel {
    fn to_ffi(self) -> u8 {
        match self {
            LogLevel::Error => ffi::level::ERROR,
            LogLevel::Warn => ffi::level::WARN,
            LogLevel::Info => ffi::level::INFO,
            LogLevel::Debug => ffi::level::DEBUG,
            LogLevel::Trace => ffi::level::TRACE,
        }
    }
}

thread_local! {
    // The request id of the call running on this thread, so that log lines carry it
    // without the plugin threading it through by hand.
    static CURRENT_REQUEST: RefCell<String> = const { RefCell::new(String::new()) };
}

struct ContextInner {
    name: String,
    config: serde_json::Value,
    host: HostBox,
    /// Asked of the host once, on first use.
    data_dir: OnceLock<PathBuf>,
}

/// The `log` crate's logger inside this library: it forwards every record to the host of
/// the instance built last in it, under the plugin's name and the current request id.
/// A library copy holds one instance at a time (the host maps a fresh copy for every
/// load, reload and restart; a sandbox worker builds one), so one slot is enough; it is
/// weak, so a line logged after the instance is gone is dropped rather than keeping the
/// host object alive.
struct LogBridge;

static LOG_BRIDGE: LogBridge = LogBridge;
static LOG_TARGET: RwLock<Weak<ContextInner>> = RwLock::new(Weak::new());
/// Whether `log::set_logger` took the bridge (a plugin may install its own logger first;
/// then the SDK leaves it, and its max level, alone).
static LOG_INSTALLED: AtomicBool = AtomicBool::new(false);

impl log::Log for LogBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Some(inner) = LOG_TARGET.read().ok().and_then(|w| w.upgrade()) else {
            return;
        };
        let level = match record.level() {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        };
        let message = record.args().to_string();
        CURRENT_REQUEST.with(|rid| {
            let rid = rid.borrow();
            inner.host.log(level.to_ffi(), RStr::from_str(&rid), RStr::from_str(&message));
        });
    }

    fn flush(&self) {}
}

/// Points the bridge at `ctx`'s host, installs it as the `log` logger if no logger is
/// installed yet, and takes the host's log level (`host.info`), so that a disabled
/// `debug!` costs the plugin a comparison, not a host call. A host without `host.info`
/// (older than this SDK) gets every record and filters them itself.
fn install_log_bridge(ctx: &Context) {
    if let Ok(mut target) = LOG_TARGET.write() {
        *target = Arc::downgrade(&ctx.inner);
    }
    if log::set_logger(&LOG_BRIDGE).is_ok() {
        LOG_INSTALLED.store(true, Ordering::SeqCst);
    }
    if !LOG_INSTALLED.load(Ordering::SeqCst) {
        return;
    }
    #[derive(Deserialize)]
    struct Info {
        log_level: String,
    }
    let level = ctx
        .call_host_as::<Info, _>("host.info", &serde_json::json!({}))
        .ok()
        .and_then(|i| i.log_level.parse::<log::LevelFilter>().ok())
        .unwrap_or(log::LevelFilter::Trace);
    log::set_max_level(level);
}

/// The plugin's handle on the host: its name, its configuration and the host services.
/// Cheap to clone.
#[derive(Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

impl Context {
    /// The plugin's name, from its manifest.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The manifest's `config` map (an empty object when absent).
    pub fn config(&self) -> &serde_json::Value {
        &self.inner.config
    }

    /// The manifest's `config` map deserialized into `T`.
    pub fn config_as<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        T::deserialize(&self.inner.config)
            .map_err(|e| PluginError::new("invalid_config", format!("plugin config: {e}")))
    }

    /// The plugin's own folder for files: `data/` inside its plugin folder, as an
    /// absolute path, the same in both tiers (a sandboxed plugin can write only there
    /// and in its temporary folder; its quota is `resources.max_disk_mb`). The host
    /// gives the path (`host.data_dir`, asked once) and creates the folder on first
    /// use. A trusted plugin is trusted with the whole process: nothing stops it from
    /// writing elsewhere, but this is where its files belong.
    pub fn data_dir(&self) -> Result<&Path, PluginError> {
        if let Some(dir) = self.inner.data_dir.get() {
            return Ok(dir);
        }
        #[derive(Deserialize)]
        struct Dir {
            path: PathBuf,
        }
        let dir: Dir = self.call_host_as("host.data_dir", &serde_json::json!({}))?;
        if !dir.path.is_absolute() {
            return Err(PluginError::new(
                codes::INVALID_HOST_REPLY,
                format!("the host's reply to host.data_dir: '{}' is not absolute", dir.path.display()),
            ));
        }
        Ok(self.inner.data_dir.get_or_init(|| dir.path))
    }

    /// Writes a log line under the plugin's name, tagged with the current request id.
    /// The `log` crate's macros (`log::info!`...) reach the same place: the SDK installs
    /// a logger at instantiate.
    pub fn log(&self, level: LogLevel, message: &str) {
        CURRENT_REQUEST.with(|rid| {
            let rid = rid.borrow();
            self.inner.host.log(level.to_ffi(), RStr::from_str(&rid), RStr::from_str(message));
        });
    }

    /// Logs at error level.
    pub fn error(&self, message: &str) {
        self.log(LogLevel::Error, message)
    }
    /// Logs at warning level.
    pub fn warn(&self, message: &str) {
        self.log(LogLevel::Warn, message)
    }
    /// Logs at info level.
    pub fn info(&self, message: &str) {
        self.log(LogLevel::Info, message)
    }
    /// Logs at debug level.
    pub fn debug(&self, message: &str) {
        self.log(LogLevel::Debug, message)
    }
    /// Logs at trace level.
    pub fn trace(&self, message: &str) {
        self.log(LogLevel::Trace, message)
    }

    /// Calls a host service by name with a JSON payload. The typed helpers of later
    /// services are built on this; unknown services answer [`codes::UNSUPPORTED`].
    pub fn call_host<T: Serialize>(&self, service: &str, payload: &T) -> Result<Vec<u8>, PluginError> {
        let bytes = serde_json::to_vec(payload)
            .map_err(|e| PluginError::internal(format!("serialising host call: {e}")))?;
        let result = CURRENT_REQUEST.with(|rid| {
            let rid = rid.borrow();
            self.inner.host.call_host(
                RStr::from_str(service),
                RStr::from_str(&rid),
                RSlice::from_slice(&bytes),
            )
        });
        match result {
            RResult::ROk(v) => Ok(v.into_vec()),
            RResult::RErr(e) => Err(PluginError::from_ffi(e)),
        }
    }

    fn call_host_json<T: Serialize>(
        &self,
        service: &str,
        payload: &T,
    ) -> Result<serde_json::Value, PluginError> {
        let bytes = self.call_host(service, payload)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| PluginError::internal(format!("host reply to {service}: {e}")))
    }

    /// A host reply decoded into the shape this SDK expects of `service`. A reply of
    /// another shape (a host speaking another protocol) is an
    /// [`codes::INVALID_HOST_REPLY`] error naming the service, never a silent default.
    fn call_host_as<R: DeserializeOwned, T: Serialize>(
        &self,
        service: &str,
        payload: &T,
    ) -> Result<R, PluginError> {
        let bytes = self.call_host(service, payload)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            PluginError::new(codes::INVALID_HOST_REPLY, format!("the host's reply to {service}: {e}"))
        })
    }

    /// Calls `action` of another plugin through the host's supervised call path (its
    /// limits, deadline and rate limit apply; the callee sees the caller
    /// `plugin:<this plugin>`), and returns its JSON reply. The callee's error comes back
    /// as this call's error, with its code and status. Needs the permission `call` (or
    /// `call:<plugin>`).
    pub fn call<T: Serialize>(
        &self,
        plugin: &str,
        action: &str,
        payload: &T,
    ) -> Result<serde_json::Value, PluginError> {
        self.call_host_json(
            "plugins.call",
            &serde_json::json!({ "plugin": plugin, "action": action, "payload": payload }),
        )
    }

    /// Reads `key` from this plugin's cache namespace; `None` when absent or expired.
    /// Needs the permission `cache`.
    pub fn cache_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, PluginError> {
        let r: Found = self.call_host_as("cache.get", &serde_json::json!({ "key": key }))?;
        if !r.found {
            return Ok(None);
        }
        T::deserialize(r.value).map(Some).map_err(|e| PluginError::internal(format!("cached '{key}': {e}")))
    }

    /// Stores `value` under `key`. `ttl` `None` takes the host's default
    /// (`cache.ttl_seconds`); `Some(d)` expires after `d`, to the millisecond (a
    /// non-zero `d` under 1 ms counts as 1 ms; the host clamps very long TTLs to 100
    /// years); `Some(0)` is refused (`invalid_payload`). A value larger than the host's
    /// `cache.max_value_bytes` (1 MiB by default) is refused with `value_too_large`.
    pub fn cache_set<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), PluginError> {
        let body = serde_json::json!({ "key": key, "value": value, "ttl_ms": ttl.map(Self::ttl_ms) });
        let r: Stored = self.call_host_as("cache.set", &body)?;
        r.check("cache.set")
    }

    /// Whole milliseconds, rounded up (so only a zero TTL is 0, which the key-value store
    /// reads as "never expires": a 0.5 ms TTL must not become that), saturating.
    fn ttl_ms(ttl: Duration) -> u64 {
        let ms = ttl.as_millis() + u128::from(!ttl.subsec_nanos().is_multiple_of(1_000_000));
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// Removes `key`; `true` if it was there.
    pub fn cache_delete(&self, key: &str) -> Result<bool, PluginError> {
        let r: Deleted = self.call_host_as("cache.delete", &serde_json::json!({ "key": key }))?;
        Ok(r.deleted)
    }

    /// Removes every key of this plugin's namespace (and only those); returns how many.
    pub fn cache_clear(&self) -> Result<u64, PluginError> {
        let r: Cleared = self.call_host_as("cache.clear", &serde_json::json!({}))?;
        Ok(r.removed)
    }

    /// The cached value of `key`, or `compute()`'s, stored with `ttl` (as in
    /// [`Context::cache_set`]).
    pub fn cache_get_or_set<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        compute: impl FnOnce() -> Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        if let Some(v) = self.cache_get(key)? {
            return Ok(v);
        }
        let v = compute()?;
        self.cache_set(key, &v, ttl)?;
        Ok(v)
    }

    /// Reads `key` from this plugin's durable key-value store; `None` when absent or
    /// expired. Needs the permission `kv`.
    pub fn kv_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, PluginError> {
        let r: Found = self.call_host_as("kv.get", &serde_json::json!({ "key": key }))?;
        if !r.found {
            return Ok(None);
        }
        T::deserialize(r.value).map(Some).map_err(|e| PluginError::internal(format!("kv '{key}': {e}")))
    }

    /// Stores `value` under `key`, durably: when this returns, the write survives a crash
    /// of the host. `ttl` `None` (or zero) never expires; any other TTL is rounded up to
    /// whole milliseconds.
    pub fn kv_set<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), PluginError> {
        let ttl_ms = ttl.map(Self::ttl_ms);
        let body = serde_json::json!({ "key": key, "value": value, "ttl_ms": ttl_ms });
        let r: Stored = self.call_host_as("kv.set", &body)?;
        r.check("kv.set")
    }

    /// Adds `by` (negative to subtract) to the integer under `key` and returns the sum,
    /// atomically: concurrent increments from any number of calls are never lost. An
    /// absent key counts from 0 (and is created without expiry; an existing key keeps
    /// its own). A key holding anything but an integer is `kv_not_integer` (409), a sum
    /// outside `i64` is `kv_overflow` (409), both leaving the key alone. Needs `kv`.
    pub fn kv_incr(&self, key: &str, by: i64) -> Result<i64, PluginError> {
        #[derive(Deserialize)]
        struct Sum {
            value: i64,
        }
        let r: Sum = self.call_host_as("kv.incr", &serde_json::json!({ "key": key, "by": by }))?;
        Ok(r.value)
    }

    /// Compare-and-swap: stores `new` under `key` only if the key holds `expected` now
    /// (`None`: only if the key is absent), atomically. `true` when it swapped; `false`
    /// when the key holds something else, which the caller reads again and decides.
    /// Values compare as JSON values (`{"a":1,"b":2}` equals `{"b":2,"a":1}`). An
    /// existing key keeps its expiry; a key created here has none. Needs `kv`.
    pub fn kv_cas<E: Serialize, N: Serialize>(
        &self,
        key: &str,
        expected: Option<&E>,
        new: &N,
    ) -> Result<bool, PluginError> {
        let mut body = serde_json::json!({ "key": key, "new": new });
        if let Some(e) = expected {
            body["expected"] = serde_json::to_value(e)?;
        }
        #[derive(Deserialize)]
        struct Swap {
            swapped: bool,
        }
        let r: Swap = self.call_host_as("kv.cas", &body)?;
        Ok(r.swapped)
    }

    /// Removes `key`; `true` if it was there.
    pub fn kv_delete(&self, key: &str) -> Result<bool, PluginError> {
        let r: Deleted = self.call_host_as("kv.delete", &serde_json::json!({ "key": key }))?;
        Ok(r.deleted)
    }

    /// Entries whose key starts with `prefix`, in key order: at most `limit` (the host
    /// caps it at 1000), after the key `after` when paging.
    pub fn kv_list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, PluginError> {
        let r: Listed = self.call_host_as(
            "kv.list",
            &serde_json::json!({ "prefix": prefix, "after": after, "limit": limit }),
        )?;
        Ok(r.entries.into_iter().map(|e| (e.key, e.value)).collect())
    }

    /// Runs a statement on the database `database` with bound parameters (`?` on every
    /// back-end: the host numbers them for PostgreSQL; a statement already written with
    /// `$1`... is left alone there); returns the rows affected.
    /// Needs the permission `db:<database>` (read and write).
    pub fn db_execute(
        &self,
        database: &str,
        sql: &str,
        params: &[serde_json::Value],
    ) -> Result<u64, PluginError> {
        let r: Executed = self.call_host_as(
            "db.execute",
            &serde_json::json!({ "database": database, "sql": sql, "params": params }),
        )?;
        Ok(r.rows_affected)
    }

    /// Runs a query with bound parameters; every row comes back as a JSON object keyed by
    /// column name. Needs `db:<database>` or `db:<database>:read` (then the query runs
    /// in a read-only transaction).
    pub fn db_query(
        &self,
        database: &str,
        sql: &str,
        params: &[serde_json::Value],
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, PluginError> {
        let r: Rows = self.call_host_as(
            "db.query",
            &serde_json::json!({ "database": database, "sql": sql, "params": params }),
        )?;
        Ok(r.rows)
    }

    /// [`Context::db_query`] with each row deserialized into `T`.
    pub fn db_query_as<T: DeserializeOwned>(
        &self,
        database: &str,
        sql: &str,
        params: &[serde_json::Value],
    ) -> Result<Vec<T>, PluginError> {
        self.db_query(database, sql, params)?
            .into_iter()
            .map(|row| {
                T::deserialize(serde_json::Value::Object(row))
                    .map_err(|e| PluginError::internal(format!("db.query row: {e}")))
            })
            .collect()
    }

    /// Adds (or replaces) a cron job of this plugin: `cron` has six or seven fields,
    /// seconds first (`"0 */5 * * * *"`); the job calls this plugin's `action` with
    /// `payload`. Its id is `<plugin>.<id>`; it lasts until the plugin unloads. Needs
    /// the permission `scheduler`.
    pub fn schedule<T: Serialize>(
        &self,
        id: &str,
        cron: &str,
        action: &str,
        payload: &T,
    ) -> Result<String, PluginError> {
        let r: Scheduled = self.call_host_as(
            "scheduler.add",
            &serde_json::json!({ "id": id, "cron": cron, "action": action, "payload": payload }),
        )?;
        Ok(r.id)
    }

    /// Removes one of this plugin's jobs; `true` if it existed.
    pub fn unschedule(&self, id: &str) -> Result<bool, PluginError> {
        let r: Removed = self.call_host_as("scheduler.remove", &serde_json::json!({ "id": id }))?;
        Ok(r.removed)
    }

    /// Emits an event and waits for every subscriber; returns what each of them did.
    /// Needs the permission `events.emit` (or `events.emit:<pattern>` matching `event`).
    pub fn emit<T: Serialize>(&self, event: &str, payload: &T) -> Result<EmitReport, PluginError> {
        self.call_host_as(
            "events.emit",
            &serde_json::json!({ "event": event, "payload": payload, "wait": true }),
        )
    }

    /// Emits an event without waiting for its subscribers.
    pub fn emit_detached<T: Serialize>(&self, event: &str, payload: &T) -> Result<(), PluginError> {
        let r: Queued = self.call_host_as(
            "events.emit",
            &serde_json::json!({ "event": event, "payload": payload, "wait": false }),
        )?;
        if r.queued {
            Ok(())
        } else {
            Err(PluginError::new(
                codes::INVALID_HOST_REPLY,
                "the host's reply to events.emit: queued is false",
            ))
        }
    }

    /// Subscribes one of this plugin's actions to the events matching `pattern`; the
    /// action receives `{"event": name, "payload": ...}` through the normal call path.
    /// Returns the subscription's id. Needs the permission `events.subscribe` (or
    /// `events.subscribe:<pattern>`). Subscriptions end when the plugin unloads.
    pub fn subscribe(
        &self,
        pattern: &str,
        action: &str,
        options: Subscription,
    ) -> Result<SubscriptionId, PluginError> {
        let r: Subscribed = self.call_host_as(
            "events.subscribe",
            &serde_json::json!({
                "pattern": pattern,
                "action": action,
                "priority": options.priority,
                "once": options.once,
                "timeout_ms": options.timeout_ms,
            }),
        )?;
        Ok(r.id)
    }

    /// Ends one of this plugin's subscriptions; `false` if it did not exist (or is
    /// another plugin's).
    pub fn unsubscribe(&self, id: SubscriptionId) -> Result<bool, PluginError> {
        let r: Removed = self.call_host_as("events.unsubscribe", &serde_json::json!({ "id": id }))?;
        Ok(r.removed)
    }
}

// The shapes of the host's replies, one per service. Unknown fields are ignored (a
// newer host may add some); a missing or mistyped field is an error.
#[derive(Deserialize)]
struct Found {
    found: bool,
    #[serde(default)]
    value: serde_json::Value,
}
#[derive(Deserialize)]
struct Stored {
    stored: bool,
}
impl Stored {
    /// A host answers `stored: true` or an error; `false` is drift.
    fn check(self, service: &str) -> Result<(), PluginError> {
        if self.stored {
            Ok(())
        } else {
            Err(PluginError::new(
                codes::INVALID_HOST_REPLY,
                format!("the host's reply to {service}: stored is false"),
            ))
        }
    }
}
#[derive(Deserialize)]
struct Deleted {
    deleted: bool,
}
#[derive(Deserialize)]
struct Removed {
    removed: bool,
}
#[derive(Deserialize)]
struct Cleared {
    removed: u64,
}
#[derive(Deserialize)]
struct Listed {
    entries: Vec<ListedEntry>,
}
#[derive(Deserialize)]
struct ListedEntry {
    key: String,
    value: serde_json::Value,
}
#[derive(Deserialize)]
struct Executed {
    rows_affected: u64,
}
#[derive(Deserialize)]
struct Rows {
    rows: Vec<serde_json::Map<String, serde_json::Value>>,
}
#[derive(Deserialize)]
struct Scheduled {
    id: String,
}
#[derive(Deserialize)]
struct Queued {
    queued: bool,
}
#[derive(Deserialize)]
struct Subscribed {
    id: SubscriptionId,
}

/// The id of one subscription made with [`Context::subscribe`]; the same id appears as
/// `handler_id` in an [`EmitReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubscriptionId(u64);

impl SubscriptionId {
    /// The number the host gave it.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// An id kept outside the plugin (in a payload, in the key-value store).
impl From<u64> for SubscriptionId {
    fn from(id: u64) -> Self {
        SubscriptionId(id)
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What one emit did, as [`Context::emit`] returns it. It serialises back to the host's
/// JSON shape, so a plugin can pass it on as a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EmitReport {
    /// The event name.
    pub event: String,
    /// The emit depth (0 for an emit made outside any event handler).
    pub depth: u32,
    /// One entry per handler run, in run order.
    pub results: Vec<HandlerResult>,
    /// Set when an interceptor of the host cancelled the emit (its reason).
    #[serde(default)]
    pub cancelled: Option<String>,
    /// Set when an interceptor of the host skipped the handlers.
    #[serde(default)]
    pub skipped: bool,
    /// Wall time of the whole emit, in microseconds.
    pub duration_us: u64,
}

impl EmitReport {
    /// How many handlers succeeded.
    pub fn handled(&self) -> usize {
        self.results.iter().filter(|r| r.outcome.is_ok()).count()
    }

    /// The handlers that failed.
    pub fn failures(&self) -> impl Iterator<Item = &HandlerResult> {
        self.results.iter().filter(|r| !r.outcome.is_ok())
    }
}

/// One handler run within an [`EmitReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HandlerResult {
    /// The handler's name (`plugin:<name>/<generation>:<action>` for a plugin's).
    pub handler: String,
    /// The subscription that ran.
    pub handler_id: SubscriptionId,
    /// Its value or failure.
    pub outcome: Outcome,
    /// Wall time of the run, in microseconds.
    pub duration_us: u64,
    /// This result ended the chain.
    #[serde(default)]
    pub stopped: bool,
}

/// What became of one handler run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The handler's reply (`null` for none).
    Ok(serde_json::Value),
    /// Why it failed.
    Error(Failure),
}

impl Outcome {
    /// Whether the run succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

/// A handler's failure: a stable code and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Failure {
    /// The code (`timeout`, `handler_error`, the plugin's own code...).
    pub code: String,
    /// Human-readable detail.
    pub message: String,
}

/// What a subscribed action receives: the event's name and its payload, read with
/// [`Request::event`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Event<T> {
    /// The event's name (`notes.created`).
    pub event: String,
    /// Its payload.
    pub payload: T,
}

/// Options of [`Context::subscribe`]: `Subscription::default().priority(10).once()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Subscription {
    /// Lower runs first (default 50).
    pub priority: i32,
    /// Run once, then unsubscribe.
    pub once: bool,
    /// Per-handler timeout in ms (the action's own deadline applies too).
    pub timeout_ms: Option<u64>,
}

impl Default for Subscription {
    fn default() -> Self {
        Subscription { priority: 50, once: false, timeout_ms: None }
    }
}

impl Subscription {
    /// Sets the priority (lower runs first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Runs once, then unsubscribes.
    pub fn once(mut self) -> Self {
        self.once = true;
        self
    }

    /// Sets the per-handler timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }
}

/// Metadata of the current call.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RequestMeta<'a> {
    /// Who asked (`http`, `cli`, `plugin:<name>`...).
    pub caller: &'a str,
    /// The request id.
    pub request_id: &'a str,
    /// The deadline, if the host set one.
    pub deadline: Option<SystemTime>,
}

/// One call: the action, its payload and its metadata.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    raw: CallRequest<'a>,
}

impl<'a> Request<'a> {
    /// The action name.
    pub fn action(&self) -> &'a str {
        self.raw.action.as_str()
    }

    /// The raw payload bytes.
    pub fn payload(&self) -> &'a [u8] {
        self.raw.payload.as_slice()
    }

    /// The payload deserialized from JSON; a mismatch is an `invalid_payload` error (400)
    /// that says what was expected.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        serde_json::from_slice(self.payload())
            .map_err(|e| PluginError::invalid_payload(format!("action '{}': {e}", self.action())))
    }

    /// The payload of an event delivered to a subscribed action (a manifest hook or a
    /// [`Context::subscribe`]): `{"event", "payload"}` with the payload as `T`.
    pub fn event<T: DeserializeOwned>(&self) -> Result<Event<T>, PluginError> {
        self.json()
    }

    /// The call's metadata.
    pub fn meta(&self) -> RequestMeta<'a> {
        let ms = self.raw.meta.deadline_unix_ms;
        RequestMeta {
            caller: self.raw.meta.caller.as_str(),
            request_id: self.raw.meta.request_id.as_str(),
            deadline: (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }
}

/// A successful reply: bytes, JSON by convention.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply(Vec<u8>);

impl Reply {
    /// A reply serialised from any serde value.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Reply, PluginError> {
        serde_json::to_vec(value)
            .map(Reply)
            .map_err(|e| PluginError::internal(format!("serialising reply: {e}")))
    }

    /// The JSON `null` reply.
    pub fn empty() -> Reply {
        Reply(b"null".to_vec())
    }

    /// A reply made of raw bytes (the host expects JSON).
    pub fn bytes(bytes: Vec<u8>) -> Reply {
        Reply(bytes)
    }

    /// The reply's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl From<serde_json::Value> for Reply {
    fn from(v: serde_json::Value) -> Self {
        // Serialising a Value cannot fail.
        Reply(serde_json::to_vec(&v).unwrap_or_default())
    }
}

/// An error a plugin returns: a stable code, a message, and the HTTP status to answer.
/// Built with [`PluginError::new`] and its shortcuts, or with `?` from the errors that
/// have a `From` impl.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PluginError {
    /// Stable, machine-readable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// HTTP status.
    pub status: u16,
}

impl PluginError {
    /// An error with a code; the status is chosen from the code (400 for
    /// `invalid_payload`, 404 for `unknown_action`/`not_found`, 501 for `unsupported`,
    /// 502 for `invalid_host_reply`, else 500).
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        let code = code.into();
        let status = match code.as_str() {
            codes::INVALID_PAYLOAD => 400,
            codes::UNKNOWN_ACTION | codes::NOT_FOUND => 404,
            codes::UNSUPPORTED => 501,
            codes::INVALID_HOST_REPLY => 502,
            _ => 500,
        };
        PluginError { code, message: message.into(), status }
    }

    /// Sets the HTTP status the host answers with.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The action is not known to this plugin.
    pub fn unknown_action(action: &str) -> Self {
        Self::new(codes::UNKNOWN_ACTION, format!("unknown action '{action}'"))
    }

    /// The payload does not fit the action.
    pub fn invalid_payload(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_PAYLOAD, message)
    }

    /// Something the caller named does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(codes::NOT_FOUND, message)
    }

    /// A failure inside the plugin.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(codes::INTERNAL, message)
    }

    fn from_ffi(e: CallError) -> Self {
        PluginError { code: e.code.into_string(), message: e.message.into_string(), status: e.status }
    }

    fn into_ffi(self) -> CallError {
        CallError {
            code: RString::from(self.code),
            message: RString::from(self.message),
            status: self.status,
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for PluginError {}

/// A JSON error reached with `?` is the plugin's own fault (500 `internal`): a payload
/// the caller got wrong is read with [`Request::json`], which answers 400.
impl From<serde_json::Error> for PluginError {
    fn from(e: serde_json::Error) -> Self {
        PluginError::internal(format!("JSON: {e}"))
    }
}

/// An I/O error (in [`Context::data_dir`], say) is 500 `io_error`, with its kind.
impl From<std::io::Error> for PluginError {
    fn from(e: std::io::Error) -> Self {
        PluginError::new(codes::IO_ERROR, format!("I/O ({:?}): {e}", e.kind()))
    }
}

/// A failed UTF-8 conversion is 500 `internal`.
impl From<std::str::Utf8Error> for PluginError {
    fn from(e: std::str::Utf8Error) -> Self {
        PluginError::internal(format!("UTF-8: {e}"))
    }
}

/// A failed UTF-8 conversion is 500 `internal`.
impl From<std::string::FromUtf8Error> for PluginError {
    fn from(e: std::string::FromUtf8Error) -> Self {
        PluginError::internal(format!("UTF-8: {e}"))
    }
}

/// A failed number parse is 400 `invalid_payload`: numbers a plugin parses come from
/// its callers (path parameters, query strings).
impl From<std::num::ParseIntError> for PluginError {
    fn from(e: std::num::ParseIntError) -> Self {
        PluginError::invalid_payload(format!("not an integer: {e}"))
    }
}

/// Runs `f`, turning a panic into a `plugin_panic` error. This is the one place where
/// the SDK keeps a panic from crossing the boundary.
///
/// The guard is total: the panic payload is dropped under a guard of its own (a payload
/// whose `Drop` panics again would otherwise unwind out of the entry point and end the
/// host), and the payload of that second panic is leaked rather than dropped.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, PluginError>) -> Result<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = panic_message(&*payload);
            drop_payload(payload);
            Err(PluginError::new(codes::PLUGIN_PANIC, format!("plugin panicked in {what}: {msg}")))
        }
    }
}

/// The message of a panic payload (`&str` or `String`), without running any of the
/// payload's own code.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}

/// Drops a panic payload; a panic in its `Drop` is caught, and that panic's own payload
/// is leaked (`mem::forget`), since dropping it could panic once more.
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// Runs `f` (a drop, a log line) where a panic has nowhere to go: it is caught and its
/// payload dropped under [`drop_payload`]'s guard.
fn swallow_panic(f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        drop_payload(payload);
    }
}

fn to_ffi(r: Result<Reply, PluginError>) -> CallResult {
    match r {
        Ok(reply) => RResult::ROk(RVec::from(reply.0)),
        Err(e) => RResult::RErr(e.into_ffi()),
    }
}

/// Bridges a [`Plugin`] to the ABI-stable [`PluginObject`].
///
/// The plugin sits in an `Option` only so that [`Drop`] can take it out and drop it
/// under a guard: the host drops the adapter through an `extern "C"` vtable entry, and a
/// panicking `Drop` of the plugin must not unwind through it.
struct Adapter<P> {
    plugin: Option<P>,
    ctx: Context,
}

impl<P> Adapter<P> {
    fn plugin(&self) -> Result<&P, PluginError> {
        self.plugin.as_ref().ok_or_else(|| PluginError::internal("the plugin instance was dropped"))
    }
}

impl<P> Drop for Adapter<P> {
    fn drop(&mut self) {
        let plugin = self.plugin.take();
        swallow_panic(move || drop(plugin));
    }
}

impl<P: Plugin> PluginObject for Adapter<P> {
    fn call(&self, request: CallRequest<'_>) -> CallResult {
        if request.action.as_str() == DESCRIBE_ACTION {
            return RResult::ROk(RVec::from(describe::<P>()));
        }
        CURRENT_REQUEST.with(|r| {
            let mut r = r.borrow_mut();
            r.clear();
            r.push_str(request.meta.request_id.as_str());
        });
        let result =
            guarded(request.action.as_str(), || self.plugin()?.call(&self.ctx, Request { raw: request }));
        CURRENT_REQUEST.with(|r| r.borrow_mut().clear());
        to_ffi(result)
    }

    /// Kept in the vtable, which must not change layout (plugins built before still load
    /// and are checked against it), but never called by the host: events arrive as
    /// calls of the subscribed action. Should anything call it, it answers
    /// `unsupported` without running plugin code.
    fn on_event(&self, event: RStr<'_>, _payload: RSlice<'_, u8>) -> CallResult {
        to_ffi(Err(PluginError::new(
            codes::UNSUPPORTED,
            format!(
                "on_event('{}') is not part of the SDK: events reach a plugin as calls of the action it subscribed",
                event.as_str()
            ),
        )))
    }

    fn shutdown(&self) {
        // A panic in shutdown has nowhere to go but the log.
        if let Err(e) = guarded("shutdown", || {
            self.plugin()?.shutdown(&self.ctx);
            Ok(())
        }) {
            swallow_panic(|| self.ctx.error(&e.message));
        }
    }
}

/// Builds a plugin instance from the host's [`InitArgs`]. Used by
/// [`export_plugin!`](crate::export_plugin); not meant to be called by hand.
#[doc(hidden)]
pub fn instantiate<P: Plugin>(args: InitArgs) -> RResult<PluginBox, CallError> {
    let result = guarded("new", || {
        let config = if args.config_json.is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_str(args.config_json.as_str())
                .map_err(|e| PluginError::new("invalid_config", format!("plugin config: {e}")))?
        };
        let ctx = Context {
            inner: Arc::new(ContextInner {
                name: args.plugin_name.into_string(),
                config,
                host: args.host,
                data_dir: OnceLock::new(),
            }),
        };
        install_log_bridge(&ctx);
        let plugin = P::new(&ctx)?;
        Ok(PluginBox::from_value(Adapter { plugin: Some(plugin), ctx }, TD_Opaque))
    });
    match result {
        Ok(b) => RResult::ROk(b),
        Err(e) => RResult::RErr(e.into_ffi()),
    }
}

/// What the plugin answers to the host's reserved [`DESCRIBE_ACTION`]: its
/// [`PluginDescription`] as JSON.
fn describe<P: Plugin>() -> Vec<u8> {
    // A panic in a hand-written `actions` must not cross the boundary either; the host
    // then sees no table and checks nothing.
    let actions = catch_unwind(P::actions).unwrap_or(None);
    let description = PluginDescription { sdk_version: crate::SDK_VERSION.to_string(), actions };
    serde_json::to_vec(&description).unwrap_or_default()
}

/// Exports a [`Plugin`] type as the library's root module.
///
/// The plugin crate must be a `cdylib` (add `rlib` to test it with the test kit); it
/// needs no dependency but this SDK.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        extern "C" fn __xcore_api_version() -> $crate::__abi::abi_stable::std_types::RStr<'static> {
            $crate::__abi::abi_stable::std_types::RStr::from_str($crate::ABI_VERSION)
        }

        extern "C" fn __xcore_instantiate(
            args: $crate::__abi::ffi::InitArgs,
        ) -> $crate::__abi::abi_stable::std_types::RResult<
            $crate::__abi::ffi::PluginBox,
            $crate::__abi::ffi::CallError,
        > {
            $crate::sdk::instantiate::<$plugin>(args)
        }

        $crate::__abi::export_root_module!($crate::__abi::ffi::PluginModule {
            api_version: __xcore_api_version,
            instantiate: __xcore_instantiate,
        });
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use xcore_plugin_abi::ffi::{CallMeta, HostObject};

    /// A panic payload whose `Drop` panics again.
    struct PanicsOnDrop(&'static AtomicUsize);

    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
            panic!("the payload panics in its Drop");
        }
    }

    #[test]
    fn a_ttl_rounds_up_to_whole_milliseconds_so_only_zero_means_never() {
        assert_eq!(Context::ttl_ms(Duration::ZERO), 0);
        assert_eq!(Context::ttl_ms(Duration::from_micros(500)), 1, "0.5 ms must not mean 'never expires'");
        assert_eq!(Context::ttl_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(Context::ttl_ms(Duration::from_nanos(1_500_001)), 2);
        assert_eq!(Context::ttl_ms(Duration::MAX), u64::MAX);
    }

    #[test]
    fn a_payload_that_panics_in_drop_is_contained() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let r: Result<(), PluginError> = guarded("boom", || std::panic::panic_any(PanicsOnDrop(&DROPS)));
        let e = r.unwrap_err();
        assert_eq!(e.code, codes::PLUGIN_PANIC);
        assert_eq!(e.status, 500);
        assert!(e.message.contains("non-string panic payload"), "{}", e.message);
        assert_eq!(DROPS.load(Ordering::SeqCst), 1, "the payload was dropped, under the guard");
    }

    #[test]
    fn string_payloads_keep_their_message() {
        let e = guarded::<()>("act", || panic!("plain {}", 42)).unwrap_err();
        assert_eq!(e.message, "plugin panicked in act: plain 42");
        let e = guarded::<()>("act", || panic!("static")).unwrap_err();
        assert_eq!(e.message, "plugin panicked in act: static");
    }

    struct NullHost;

    impl HostObject for NullHost {
        fn log(&self, _level: u8, _request_id: RStr<'_>, _message: RStr<'_>) {}
        fn call_host(&self, _s: RStr<'_>, _r: RStr<'_>, _p: RSlice<'_, u8>) -> CallResult {
            RResult::RErr(PluginError::new(codes::UNSUPPORTED, "none").into_ffi())
        }
    }

    static PLUGIN_DROPS: AtomicUsize = AtomicUsize::new(0);
    static PAYLOAD_DROPS: AtomicUsize = AtomicUsize::new(0);

    /// Panics with a payload that panics in its Drop in every entry point, and in its
    /// own Drop too.
    struct Hostile;

    impl Drop for Hostile {
        fn drop(&mut self) {
            PLUGIN_DROPS.fetch_add(1, Ordering::SeqCst);
            panic!("the plugin panics in its Drop");
        }
    }

    impl Plugin for Hostile {
        fn new(_ctx: &Context) -> Result<Self, PluginError> {
            Ok(Hostile)
        }
        fn call(&self, _ctx: &Context, req: Request<'_>) -> Result<Reply, PluginError> {
            match req.action() {
                "ok" => Ok(Reply::empty()),
                _ => std::panic::panic_any(PanicsOnDrop(&PAYLOAD_DROPS)),
            }
        }
        fn shutdown(&self, _ctx: &Context) {
            std::panic::panic_any(PanicsOnDrop(&PAYLOAD_DROPS))
        }
    }

    #[test]
    fn no_panic_crosses_an_entry_point_of_the_plugin_object() {
        let host = ffi::HostBox::from_value(NullHost, TD_Opaque);
        let args = InitArgs { plugin_name: "hostile".into(), config_json: RString::new(), host };
        let plugin = match instantiate::<Hostile>(args) {
            RResult::ROk(p) => p,
            RResult::RErr(e) => panic!("instantiate: {e:?}"),
        };
        let req = |action| CallRequest {
            action: RStr::from_str(action),
            payload: RSlice::from_slice(b"null"),
            meta: CallMeta {
                caller: RStr::from_str("test"),
                request_id: RStr::from_str("r1"),
                deadline_unix_ms: 0,
            },
        };
        assert!(matches!(plugin.call(req("ok")), RResult::ROk(_)));
        match plugin.call(req("boom")) {
            RResult::RErr(e) => assert_eq!(e.code.as_str(), codes::PLUGIN_PANIC),
            RResult::ROk(_) => panic!("a panic answered ok"),
        }
        // The vtable keeps on_event for layout; it runs no plugin code.
        match plugin.on_event(RStr::from_str("x.y"), RSlice::from_slice(b"{}")) {
            RResult::RErr(e) => assert_eq!(e.code.as_str(), codes::UNSUPPORTED),
            RResult::ROk(_) => panic!("on_event answered ok"),
        }
        plugin.shutdown();
        assert_eq!(PAYLOAD_DROPS.load(Ordering::SeqCst), 2);
        // Dropped through the vtable, as the host drops it.
        drop(plugin);
        assert_eq!(PLUGIN_DROPS.load(Ordering::SeqCst), 1);
    }

    /// A host that answers every service with the same bytes: a host speaking another
    /// protocol than this SDK.
    struct DriftedHost(&'static str);

    impl HostObject for DriftedHost {
        fn log(&self, _level: u8, _request_id: RStr<'_>, _message: RStr<'_>) {}
        fn call_host(&self, _s: RStr<'_>, _r: RStr<'_>, _p: RSlice<'_, u8>) -> CallResult {
            RResult::ROk(RVec::from(self.0.as_bytes().to_vec()))
        }
    }

    fn ctx_on(host: DriftedHost) -> Context {
        Context {
            inner: Arc::new(ContextInner {
                name: "drift".into(),
                config: serde_json::json!({}),
                host: ffi::HostBox::from_value(host, TD_Opaque),
                data_dir: OnceLock::new(),
            }),
        }
    }

    #[test]
    fn a_reply_of_another_shape_is_an_error_naming_the_service_never_a_default() {
        let ctx = ctx_on(DriftedHost(r#"{"something": "else"}"#));
        let drift = |r: Result<(), PluginError>, service: &str| {
            let e = r.unwrap_err();
            assert_eq!(e.code, codes::INVALID_HOST_REPLY, "{service}: {e}");
            assert_eq!(e.status, 502);
            assert!(e.message.contains(service), "{service}: {}", e.message);
        };
        drift(ctx.cache_clear().map(drop), "cache.clear");
        drift(ctx.kv_list("p", None, 10).map(drop), "kv.list");
        drift(ctx.schedule("j", "0 * * * * *", "a", &1).map(drop), "scheduler.add");
        drift(ctx.cache_get::<u64>("k").map(drop), "cache.get");
        drift(ctx.cache_delete("k").map(drop), "cache.delete");
        drift(ctx.cache_set("k", &1, None), "cache.set");
        drift(ctx.kv_get::<u64>("k").map(drop), "kv.get");
        drift(ctx.kv_set("k", &1, None), "kv.set");
        drift(ctx.kv_delete("k").map(drop), "kv.delete");
        drift(ctx.db_execute("default", "x", &[]).map(drop), "db.execute");
        drift(ctx.db_query("default", "x", &[]).map(drop), "db.query");
        drift(ctx.unschedule("j").map(drop), "scheduler.remove");
        drift(ctx.emit("a.b", &1).map(drop), "events.emit");
        drift(ctx.emit_detached("a.b", &1), "events.emit");
        drift(ctx.subscribe("a.*", "a", Subscription::default()).map(drop), "events.subscribe");
        drift(ctx.unsubscribe(SubscriptionId(1)).map(drop), "events.unsubscribe");
        // Not JSON at all.
        let ctx = ctx_on(DriftedHost("not json"));
        drift(ctx.kv_list("p", None, 10).map(drop), "kv.list");
        // Entries of the wrong shape.
        let ctx = ctx_on(DriftedHost(r#"{"entries": [{"key": 7, "value": 1}]}"#));
        drift(ctx.kv_list("p", None, 10).map(drop), "kv.list");
    }

    #[test]
    fn common_errors_convert_with_a_status_that_says_whose_fault() {
        let json: PluginError = serde_json::from_str::<u8>("x").unwrap_err().into();
        assert_eq!((json.code.as_str(), json.status), (codes::INTERNAL, 500));
        let io: PluginError = std::io::Error::new(std::io::ErrorKind::NotFound, "gone").into();
        assert_eq!((io.code.as_str(), io.status), (codes::IO_ERROR, 500));
        assert!(io.message.contains("NotFound"), "{}", io.message);
        let int: PluginError = "x1".parse::<u32>().unwrap_err().into();
        assert_eq!((int.code.as_str(), int.status), (codes::INVALID_PAYLOAD, 400));
        let utf8: PluginError = String::from_utf8(vec![0xff]).unwrap_err().into();
        assert_eq!(utf8.status, 500);
    }

    #[test]
    fn an_emit_report_reads_the_hosts_shape() {
        // As xcore-hooks serialises it (EmitReport in hooks/src/types.rs).
        let report: EmitReport = serde_json::from_value(serde_json::json!({
            "event": "notes.created", "depth": 0, "cancelled": null, "skipped": false, "duration_us": 12,
            "results": [
                {"handler": "plugin:echo/1:echo", "handler_id": 3, "outcome": {"ok": {"x": 1}}, "duration_us": 5, "stopped": false},
                {"handler": "plugin:b/1:h", "handler_id": 4, "outcome": {"error": {"code": "timeout", "message": "slow"}}, "duration_us": 7, "stopped": false}
            ]
        }))
        .unwrap();
        assert_eq!(report.handled(), 1);
        let failed: Vec<_> = report.failures().collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].handler_id, SubscriptionId(4));
        assert!(matches!(&failed[0].outcome, Outcome::Error(f) if f.code == "timeout"));
    }
}
