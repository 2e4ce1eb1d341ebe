//! The values that cross the hooks API: handler signature, options, outcomes, reports.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::{HookError, HookManager};

/// Stable error codes found in [`Failure::code`].
pub mod codes {
    /// The handler returned an error.
    pub const HANDLER_ERROR: &str = "handler_error";
    /// The handler panicked (the panic was caught).
    pub const HANDLER_PANIC: &str = "handler_panic";
    /// The handler ran past its `timeout` and was cancelled.
    pub const HANDLER_TIMEOUT: &str = "handler_timeout";
    /// The handler emitted an event deeper than the manager's maximum depth.
    pub const DEPTH_EXCEEDED: &str = "depth_exceeded";
    /// A result processor panicked on this result; its value is withheld rather than returned
    /// unprocessed (the processor may have been redacting it).
    pub const PROCESSOR_PANIC: &str = "processor_panic";
}

/// A boxed, sendable future, as returned by handlers.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// An async event handler. Build one from an `async` closure with [`handler`].
pub type HandlerFn = Arc<dyn Fn(EventCtx) -> BoxFuture<HandlerOutcome> + Send + Sync>;

/// Wraps `f` (a closure returning a future) as a [`HandlerFn`].
pub fn handler<F, Fut>(f: F) -> HandlerFn
where
    F: Fn(EventCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerOutcome> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(f(ctx)))
}

/// A synchronous pre-interceptor: sees the event name and payload, decides what happens next.
pub type PreInterceptorFn = Arc<dyn Fn(&str, &Value) -> PreAction + Send + Sync>;
/// A synchronous post-interceptor: may edit or replace the results of an emit.
pub type PostInterceptorFn = Arc<dyn Fn(&str, &Value, &mut Vec<HandlerResult>) + Send + Sync>;
/// A synchronous result processor: transforms one handler result (redaction, enrichment).
pub type ResultProcessorFn = Arc<dyn Fn(&str, &mut HandlerResult) + Send + Sync>;

/// Identifies one handler subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct HandlerId(pub u64);

/// Identifies one pre-interceptor, post-interceptor or result processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct InterceptorId(pub u64);

impl fmt::Display for HandlerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "h{}", self.0)
    }
}

impl fmt::Display for InterceptorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

/// Priority given when none is set: the middle of the customary 0-100 range of the Python
/// original, so plugins can go before or after without negative numbers.
pub const DEFAULT_PRIORITY: i32 = 50;

/// Owner given when none is set.
pub const DEFAULT_OWNER: &str = "host";

/// How a handler is registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerOptions {
    /// Lower runs first; equal priorities run in registration order.
    pub priority: i32,
    /// Remove the subscription after its first run (even a failed one).
    pub once: bool,
    /// Cancel the handler and record `handler_timeout` after this long.
    pub timeout: Option<Duration>,
    /// Who registered it (`host`, `plugin:notes`), for [`HookManager::unregister_owner`].
    pub owner: String,
    /// Shown in listings and results; empty means "derive one from the id".
    pub name: String,
}

impl Default for HandlerOptions {
    fn default() -> Self {
        HandlerOptions {
            priority: DEFAULT_PRIORITY,
            once: false,
            timeout: None,
            owner: DEFAULT_OWNER.to_owned(),
            name: String::new(),
        }
    }
}

impl HandlerOptions {
    /// Default options with a name.
    pub fn named(name: impl Into<String>) -> Self {
        HandlerOptions { name: name.into(), ..Self::default() }
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Makes the subscription run once.
    pub fn once(mut self) -> Self {
        self.once = true;
        self
    }

    /// Sets the per-run timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the owner.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }
}

/// How an interceptor or result processor is registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptorOptions {
    /// Lower runs first; equal priorities run in registration order.
    pub priority: i32,
    /// Who registered it, for [`HookManager::unregister_owner`].
    pub owner: String,
    /// Shown in listings and in cancellation reasons.
    pub name: String,
}

impl Default for InterceptorOptions {
    fn default() -> Self {
        InterceptorOptions {
            priority: DEFAULT_PRIORITY,
            owner: DEFAULT_OWNER.to_owned(),
            name: String::new(),
        }
    }
}

impl InterceptorOptions {
    /// Default options with a name.
    pub fn named(name: impl Into<String>) -> Self {
        InterceptorOptions { name: name.into(), ..Self::default() }
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the owner.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }
}

/// What a pre-interceptor decides.
#[derive(Debug, Clone, PartialEq)]
pub enum PreAction {
    /// Go on unchanged.
    Continue,
    /// Go on with this payload instead (later interceptors and handlers see it).
    ContinueWith(Value),
    /// Run no handler; the report has `skipped: true` and no results.
    Skip,
    /// Run no handler; the report has `cancelled: Some(reason)`.
    Cancel(String),
}

/// An error code and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// One of [`codes`], or a code chosen by the handler.
    pub code: String,
    /// Human-readable detail.
    pub message: String,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Failure { code: code.into(), message: message.into() }
    }
}

impl From<&HookError> for Failure {
    fn from(err: &HookError) -> Self {
        Failure::new(err.code(), err.to_string())
    }
}

/// What a handler returns.
#[derive(Debug, Clone, PartialEq)]
pub enum HandlerOutcome {
    /// A value (`Value::Null` for "nothing to say").
    Value(Value),
    /// A failure; recorded, never stops the other handlers.
    Error(Failure),
    /// Stop propagation: no later handler runs, in every emit variant.
    Stop(Option<Value>),
}

impl HandlerOutcome {
    /// A value.
    pub fn ok(value: impl Into<Value>) -> Self {
        HandlerOutcome::Value(value.into())
    }

    /// A `handler_error` failure with `message`.
    pub fn error(message: impl fmt::Display) -> Self {
        HandlerOutcome::Error(Failure::new(codes::HANDLER_ERROR, message.to_string()))
    }

    /// Stop propagation without a value.
    pub fn stop() -> Self {
        HandlerOutcome::Stop(None)
    }

    /// Stop propagation with a value.
    pub fn stop_with(value: impl Into<Value>) -> Self {
        HandlerOutcome::Stop(Some(value.into()))
    }
}

/// Lets handlers end with `result.into()` or use `?` inside a helper returning `Result`.
impl<E: fmt::Display> From<Result<Value, E>> for HandlerOutcome {
    fn from(result: Result<Value, E>) -> Self {
        match result {
            Ok(value) => HandlerOutcome::Value(value),
            Err(err) => HandlerOutcome::error(err),
        }
    }
}

/// A [`HookError`] keeps its own code (`depth_exceeded`), not `handler_error`.
impl From<HookError> for HandlerOutcome {
    fn from(err: HookError) -> Self {
        HandlerOutcome::Error(Failure::from(&err))
    }
}

/// What became of one handler run: `{"ok": value}` or `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The handler's value (`null` for none).
    Ok(Value),
    /// Why it failed.
    Error(Failure),
}

impl Outcome {
    /// Whether the run succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// The value of a successful run.
    pub fn value(&self) -> Option<&Value> {
        match self {
            Outcome::Ok(value) => Some(value),
            Outcome::Error(_) => None,
        }
    }

    /// The failure of a failed run.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Ok(_) => None,
            Outcome::Error(failure) => Some(failure),
        }
    }
}

/// The result of one handler run within an emit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HandlerResult {
    /// The handler's name.
    pub handler: String,
    /// The handler's subscription id.
    pub handler_id: HandlerId,
    /// Its value or failure.
    pub outcome: Outcome,
    /// Wall time of the run, in microseconds.
    pub duration_us: u64,
    /// This result ended the chain: the handler asked to stop, or it satisfied
    /// `emit_until_first` / `emit_until_success`.
    pub stopped: bool,
}

/// Everything one emit did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmitReport {
    /// The event name.
    pub event: String,
    /// The emit depth (0 for a top-level emit).
    pub depth: u32,
    /// One entry per handler run, in run order (after post-interceptors and result processors).
    pub results: Vec<HandlerResult>,
    /// Set when a pre-interceptor cancelled the emit.
    pub cancelled: Option<String>,
    /// Set when a pre-interceptor skipped the handlers.
    pub skipped: bool,
    /// Wall time of the whole emit, nested emits included, in microseconds.
    pub duration_us: u64,
}

impl EmitReport {
    /// The first successful non-null value (the answer of `emit_until_first`).
    pub fn first_value(&self) -> Option<&Value> {
        self.results.iter().filter_map(|r| r.outcome.value()).find(|v| !v.is_null())
    }

    /// The first successful result (the answer of `emit_until_success`).
    pub fn first_success(&self) -> Option<&HandlerResult> {
        self.results.iter().find(|r| r.outcome.is_ok())
    }

    /// The failed results.
    pub fn failures(&self) -> impl Iterator<Item = &HandlerResult> {
        self.results.iter().filter(|r| !r.outcome.is_ok())
    }
}

/// Which handlers an emit runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmitMode {
    /// Every matching handler (unless one stops propagation).
    #[default]
    All,
    /// Stop after the first handler returning a non-null value.
    UntilFirst,
    /// Stop after the first handler that does not fail.
    UntilSuccess,
}

/// One handler subscription, as listed by [`HookManager::list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionInfo {
    /// Its id.
    pub id: HandlerId,
    /// The pattern as registered.
    pub pattern: String,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: String,
    /// Its priority.
    pub priority: i32,
    /// Whether it runs once.
    pub once: bool,
    /// Its timeout in milliseconds.
    pub timeout_ms: Option<u64>,
}

/// The three kinds of interceptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InterceptorKind {
    /// Runs before handlers.
    Pre,
    /// Runs after handlers, on the result list.
    Post,
    /// Runs on each result, after post-interceptors.
    ResultProcessor,
}

/// One interceptor, as listed by [`HookManager::list_interceptors`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterceptorInfo {
    /// Its id.
    pub id: InterceptorId,
    /// Its kind.
    pub kind: InterceptorKind,
    /// The pattern as registered.
    pub pattern: String,
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: String,
    /// Its priority.
    pub priority: i32,
}

/// What a handler receives: the event, its payload, the emit depth and a way to emit further.
#[derive(Clone)]
pub struct EventCtx {
    pub(crate) event: Arc<str>,
    pub(crate) payload: Arc<Value>,
    pub(crate) depth: u32,
    pub(crate) handler_id: HandlerId,
    pub(crate) manager: HookManager,
    /// First nested emit refused for depth; the manager turns it into this handler's result so a
    /// runaway recursion shows up even if the handler ignores the error.
    pub(crate) depth_failure: Arc<OnceLock<HookError>>,
}

impl fmt::Debug for EventCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventCtx")
            .field("event", &self.event)
            .field("payload", &self.payload)
            .field("depth", &self.depth)
            .field("handler_id", &self.handler_id)
            .finish_non_exhaustive()
    }
}

impl EventCtx {
    /// The emitted event name.
    pub fn event(&self) -> &str {
        &self.event
    }

    /// The payload (after pre-interceptor rewrites).
    pub fn payload(&self) -> &Value {
        &self.payload
    }

    /// The emit depth: 0 for a top-level emit, +1 per nested emit.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// The id of the running handler.
    pub fn handler_id(&self) -> HandlerId {
        self.handler_id
    }

    /// The manager, for registering or unregistering from inside a handler.
    pub fn manager(&self) -> &HookManager {
        &self.manager
    }

    /// Emits `event` at depth + 1, running every matching handler.
    pub async fn emit(&self, event: &str, payload: Value) -> Result<EmitReport, HookError> {
        self.emit_mode(event, payload, EmitMode::All).await
    }

    /// Emits `event` at depth + 1 in the given mode.
    pub async fn emit_mode(
        &self,
        event: &str,
        payload: Value,
        mode: EmitMode,
    ) -> Result<EmitReport, HookError> {
        let result = self.manager.emit_at_depth(event, payload, self.depth.saturating_add(1), mode).await;
        self.note(&result);
        result
    }

    /// Spawns an emit of `event` at depth + 1 and returns at once (see
    /// [`HookManager::emit_detached_at_depth`]).
    pub fn emit_detached(
        &self,
        event: &str,
        payload: Value,
    ) -> Result<tokio::task::JoinHandle<EmitReport>, HookError> {
        let result = self.manager.emit_detached_at_depth(event, payload, self.depth.saturating_add(1));
        self.note(&result);
        result
    }

    fn note<T>(&self, result: &Result<T, HookError>) {
        if let Err(err @ HookError::DepthExceeded { .. }) = result {
            // Only the first is kept: it is the one that explains the failure.
            let _ = self.depth_failure.set(err.clone());
        }
    }
}
