//! The safe plugin SDK: what a plugin author writes against.
//!
//! [`export_plugin!`](crate::export_plugin) turns a type implementing [`Plugin`] into the
//! root module the host loads. Every entry point runs under [`catch_unwind`], so a panic
//! becomes an error with code [`codes::PLUGIN_PANIC`] instead of killing the host.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codes;
use crate::ffi::{self, CallError, CallRequest, CallResult, HostBox, InitArgs, PluginBox, PluginObject};

/// A plugin. One instance serves every call; with `resources.concurrency` above 1 the host
/// calls it from several threads at once, hence `Sync`.
pub trait Plugin: Send + Sync + Sized + 'static {
    /// Builds the instance. Called at load and again on every restart.
    fn new(ctx: &Context) -> Result<Self, PluginError>;

    /// Runs one action. Unknown actions should answer [`PluginError::unknown_action`].
    fn call(&self, ctx: &Context, req: Request<'_>) -> Result<Reply, PluginError>;

    /// Handles an event the plugin subscribed to. The default ignores it.
    fn on_event(&self, _ctx: &Context, _event: &str, _payload: &[u8]) -> Result<Reply, PluginError> {
        Ok(Reply::empty())
    }

    /// Called once before the host drops the instance (unload, reload, restart).
    fn shutdown(&self, _ctx: &Context) {}
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

    /// Writes a log line under the plugin's name, tagged with the current request id.
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
        let v = self.call_host_json("cache.get", &serde_json::json!({ "key": key }))?;
        if v["found"] != true {
            return Ok(None);
        }
        T::deserialize(&v["value"])
            .map(Some)
            .map_err(|e| PluginError::internal(format!("cached '{key}': {e}")))
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
        self.call_host_json("cache.set", &body).map(|_| ())
    }

    /// Whole milliseconds, rounded up (so only a zero TTL is 0, which the key-value store
    /// reads as "never expires": a 0.5 ms TTL must not become that), saturating.
    fn ttl_ms(ttl: Duration) -> u64 {
        let ms = ttl.as_millis() + u128::from(!ttl.subsec_nanos().is_multiple_of(1_000_000));
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// Removes `key`; `true` if it was there.
    pub fn cache_delete(&self, key: &str) -> Result<bool, PluginError> {
        let v = self.call_host_json("cache.delete", &serde_json::json!({ "key": key }))?;
        Ok(v["deleted"] == true)
    }

    /// Removes every key of this plugin's namespace (and only those); returns how many.
    pub fn cache_clear(&self) -> Result<u64, PluginError> {
        let v = self.call_host_json("cache.clear", &serde_json::json!({}))?;
        Ok(v["removed"].as_u64().unwrap_or(0))
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
        let v = self.call_host_json("kv.get", &serde_json::json!({ "key": key }))?;
        if v["found"] != true {
            return Ok(None);
        }
        T::deserialize(&v["value"]).map(Some).map_err(|e| PluginError::internal(format!("kv '{key}': {e}")))
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
        self.call_host_json("kv.set", &body).map(|_| ())
    }

    /// Removes `key`; `true` if it was there.
    pub fn kv_delete(&self, key: &str) -> Result<bool, PluginError> {
        let v = self.call_host_json("kv.delete", &serde_json::json!({ "key": key }))?;
        Ok(v["deleted"] == true)
    }

    /// Entries whose key starts with `prefix`, in key order: at most `limit` (the host
    /// caps it at 1000), after the key `after` when paging.
    pub fn kv_list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, PluginError> {
        let v = self.call_host_json(
            "kv.list",
            &serde_json::json!({ "prefix": prefix, "after": after, "limit": limit }),
        )?;
        let entries = v["entries"].as_array().cloned().unwrap_or_default();
        Ok(entries
            .into_iter()
            .map(|mut e| (e["key"].as_str().unwrap_or_default().to_string(), e["value"].take()))
            .collect())
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
        let v = self.call_host_json(
            "db.execute",
            &serde_json::json!({ "database": database, "sql": sql, "params": params }),
        )?;
        Ok(v["rows_affected"].as_u64().unwrap_or(0))
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
        let mut v = self.call_host_json(
            "db.query",
            &serde_json::json!({ "database": database, "sql": sql, "params": params }),
        )?;
        serde_json::from_value(v["rows"].take())
            .map_err(|e| PluginError::internal(format!("db.query reply: {e}")))
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
        let v = self.call_host_json(
            "scheduler.add",
            &serde_json::json!({ "id": id, "cron": cron, "action": action, "payload": payload }),
        )?;
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }

    /// Removes one of this plugin's jobs; `true` if it existed.
    pub fn unschedule(&self, id: &str) -> Result<bool, PluginError> {
        let v = self.call_host_json("scheduler.remove", &serde_json::json!({ "id": id }))?;
        Ok(v["removed"] == true)
    }

    /// Emits an event and waits for every subscriber; returns the emit report
    /// (`{"event", "results": [{"handler", "outcome": {"ok": ...} | {"error": ...}}], ...}`).
    /// Needs the permission `events.emit` (or `events.emit:<pattern>` matching `event`).
    pub fn emit<T: Serialize>(&self, event: &str, payload: &T) -> Result<serde_json::Value, PluginError> {
        self.call_host_json(
            "events.emit",
            &serde_json::json!({ "event": event, "payload": payload, "wait": true }),
        )
    }

    /// Emits an event without waiting for its subscribers.
    pub fn emit_detached<T: Serialize>(&self, event: &str, payload: &T) -> Result<(), PluginError> {
        self.call_host_json(
            "events.emit",
            &serde_json::json!({ "event": event, "payload": payload, "wait": false }),
        )
        .map(|_| ())
    }

    /// Subscribes one of this plugin's actions to the events matching `pattern`; the
    /// action receives `{"event": name, "payload": ...}` through the normal call path.
    /// Returns the subscription's id. Needs the permission `events.subscribe` (or
    /// `events.subscribe:<pattern>`). Subscriptions end when the plugin unloads.
    pub fn subscribe(&self, pattern: &str, action: &str, options: Subscription) -> Result<u64, PluginError> {
        let v = self.call_host_json(
            "events.subscribe",
            &serde_json::json!({
                "pattern": pattern,
                "action": action,
                "priority": options.priority,
                "once": options.once,
                "timeout_ms": options.timeout_ms,
            }),
        )?;
        v.get("id")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| PluginError::internal("host sent no id"))
    }

    /// Ends one of this plugin's subscriptions; `false` if it did not exist.
    pub fn unsubscribe(&self, id: u64) -> Result<bool, PluginError> {
        let v = self.call_host_json("events.unsubscribe", &serde_json::json!({ "id": id }))?;
        Ok(v.get("removed").and_then(serde_json::Value::as_bool).unwrap_or(false))
    }
}

/// Options of [`Context::subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Metadata of the current call.
#[derive(Debug, Clone, Copy)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// `invalid_payload`, 404 for `unknown_action`/`not_found`, else 500).
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        let code = code.into();
        let status = match code.as_str() {
            codes::INVALID_PAYLOAD => 400,
            codes::UNKNOWN_ACTION | codes::NOT_FOUND => 404,
            codes::UNSUPPORTED => 501,
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

    fn on_event(&self, event: RStr<'_>, payload: RSlice<'_, u8>) -> CallResult {
        to_ffi(guarded(event.as_str(), || {
            self.plugin()?.on_event(&self.ctx, event.as_str(), payload.as_slice())
        }))
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
            inner: Arc::new(ContextInner { name: args.plugin_name.into_string(), config, host: args.host }),
        };
        let plugin = P::new(&ctx)?;
        Ok(PluginBox::from_value(Adapter { plugin: Some(plugin), ctx }, TD_Opaque))
    });
    match result {
        Ok(b) => RResult::ROk(b),
        Err(e) => RResult::RErr(e.into_ffi()),
    }
}

/// Exports a [`Plugin`] type as the library's root module.
///
/// The plugin crate must be a `cdylib` and depend on `abi_stable` (0.11) as well as on
/// `xcore-plugin-api`: abi_stable's export attribute names `::abi_stable`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        extern "C" fn __xcore_api_version() -> $crate::abi_stable::std_types::RStr<'static> {
            $crate::abi_stable::std_types::RStr::from_str($crate::API_VERSION)
        }

        extern "C" fn __xcore_instantiate(
            args: $crate::ffi::InitArgs,
        ) -> $crate::abi_stable::std_types::RResult<$crate::ffi::PluginBox, $crate::ffi::CallError> {
            $crate::sdk::instantiate::<$plugin>(args)
        }

        /// The root module of this plugin library.
        #[$crate::abi_stable::export_root_module]
        pub fn __xcore_root_module() -> $crate::ffi::PluginModuleRef {
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;
            $crate::ffi::PluginModule { api_version: __xcore_api_version, instantiate: __xcore_instantiate }
                .leak_into_prefix()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::{CallMeta, HostObject};
    use std::sync::atomic::{AtomicUsize, Ordering};

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
        fn on_event(&self, _ctx: &Context, _event: &str, _payload: &[u8]) -> Result<Reply, PluginError> {
            std::panic::panic_any(PanicsOnDrop(&PAYLOAD_DROPS))
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
        match plugin.on_event(RStr::from_str("x.y"), RSlice::from_slice(b"{}")) {
            RResult::RErr(e) => assert_eq!(e.code.as_str(), codes::PLUGIN_PANIC),
            RResult::ROk(_) => panic!("a panic answered ok"),
        }
        plugin.shutdown();
        assert_eq!(PAYLOAD_DROPS.load(Ordering::SeqCst), 3);
        // Dropped through the vtable, as the host drops it.
        drop(plugin);
        assert_eq!(PLUGIN_DROPS.load(Ordering::SeqCst), 1);
    }
}
