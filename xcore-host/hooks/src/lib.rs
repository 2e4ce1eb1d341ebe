//! Hooks: the one event system of the host and its plugins.
//!
//! It replaces the two systems of the Python original (a `HookManager` running low priorities
//! first and an `EventBus` running high priorities first) with a single model:
//!
//! - **Events** have dotted names (`plugin.loaded`, `orders.created.eu`) and a JSON payload.
//!   Emitted names are not validated; they are split on `.` for matching.
//! - **Subscriptions** pair a [`Pattern`] with an async [`HandlerFn`]. Patterns are compiled at
//!   registration and invalid ones refused: `*` matches exactly one segment (`a.*` matches
//!   `a.b`, not `a.b.c`), `**` matches zero or more segments (`a.**` matches `a`, `a.b` and
//!   `a.b.c`), a segment with one `*` inside (`order*`, `*ed`) matches one segment by prefix
//!   and suffix, anything else is literal. Empty segments, `***`, `a**`, `?`, `[`, `]` and
//!   whitespace are errors.
//! - **Order**: lower `priority` runs first; equal priorities run in registration order.
//!   Handlers run one after another on the emitting task, so their order is observable.
//! - **An emit** goes: pre-interceptors (may rewrite the payload, skip the handlers or cancel)
//!   -> matching handlers in order -> post-interceptors (may edit or replace the result list)
//!   -> result processors (each result, e.g. redaction) -> metrics. It returns an
//!   [`EmitReport`] with one [`HandlerResult`] per handler run.
//! - **Variants**: [`HookManager::emit`] runs every handler; [`HookManager::emit_until_first`]
//!   stops at the first non-null value; [`HookManager::emit_until_success`] at the first run that
//!   does not fail. [`HandlerOutcome::Stop`] stops the chain in every variant.
//! - **Failures are isolated**: an error, a panic or a timeout becomes that handler's result
//!   (codes in [`codes`]) and the next handler runs. A timed-out handler is dropped at its
//!   current `.await`; one that blocks its thread without awaiting cannot be interrupted.
//! - **`once`** subscriptions are consumed by the first emit that reaches them (removed even if
//!   the run fails); concurrent emits cannot both run one.
//! - **No lock is held while user code runs**: an emit snapshots the lists and releases the lock,
//!   so handlers may register, unregister or emit. Handlers registered during an emit run from
//!   the next emit; handlers unregistered during an emit are not run by it.
//! - **Re-entrancy** is bounded by an explicit depth: [`EventCtx::emit`] emits at depth + 1,
//!   top-level emits are at depth 0, and an emit deeper than [`HookManager::max_depth`]
//!   (default [`DEFAULT_MAX_DEPTH`]) fails with [`HookError::DepthExceeded`] before anything runs.
//!   The handler that attempted it gets a `depth_exceeded` result even if it ignored the error.
//!   Plugins emitting from their own threads go through the host, which passes the depth on
//!   ([`HookManager::emit_at_depth`]); a task-local would not follow them across threads.
//! - **Metrics** per event name (see [`metrics`] for the Prometheus series and the cap on
//!   distinct names).

mod catch;
mod manager;
pub mod metrics;
mod pattern;
mod types;

pub use manager::{DetachedPermit, HookLimits, HookManager, HookManagerBuilder, DEFAULT_MAX_DEPTH};
pub use metrics::{EventMetrics, DEFAULT_MAX_TRACKED_EVENTS, OTHER_EVENT};
pub use pattern::Pattern;
pub use types::{
    codes, handler, BoxFuture, EmitMode, EmitReport, EventCtx, Failure, HandlerFn, HandlerId, HandlerOptions,
    HandlerOutcome, HandlerResult, InterceptorId, InterceptorInfo, InterceptorKind, InterceptorOptions,
    Outcome, PostInterceptorFn, PreAction, PreInterceptorFn, ResultProcessorFn, SubscriptionInfo,
    DEFAULT_OWNER, DEFAULT_PRIORITY,
};

/// Errors of the hooks API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// A pattern failed to compile.
    #[error("invalid pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An emit would nest deeper than the manager allows (usually a handler loop).
    #[error("emit of {event:?} at depth {depth} exceeds the maximum depth {max} (handler recursion?)")]
    DepthExceeded {
        /// The event that was refused.
        event: String,
        /// Its depth.
        depth: u32,
        /// The maximum.
        max: u32,
    },
    /// A detached emit was requested outside a tokio runtime and the manager has none.
    #[error("no tokio runtime to run a detached emit on")]
    NoRuntime,
    /// The manager holds as many handlers as `events.max_handlers` allows.
    #[error(
        "the host has {limit} event subscriptions, the most events.max_handlers allows; \
         unsubscribe some, or raise events.max_handlers in xcore.yaml"
    )]
    TooManyHandlers {
        /// The limit.
        limit: usize,
    },
    /// One owner (a plugin instance) holds as many handlers as it may.
    #[error(
        "{owner} has {limit} event subscriptions (manifest hooks included), the most \
         events.max_subscriptions_per_plugin allows; unsubscribe some, or raise \
         events.max_subscriptions_per_plugin in xcore.yaml"
    )]
    TooManySubscriptions {
        /// The owner (`plugin:<name>/<generation>`).
        owner: String,
        /// The limit.
        limit: usize,
    },
    /// Too many detached emits are in flight.
    #[error(
        "detached emit from '{emitter}' refused: {limit} detached emits of {scope} are in flight, \
         the most {setting} allows; emit with wait, retry later, or raise {setting} in xcore.yaml"
    )]
    TooManyEmits {
        /// Who emitted.
        emitter: String,
        /// `the host` or `this plugin`.
        scope: &'static str,
        /// The limit.
        limit: usize,
        /// The setting that holds it.
        setting: &'static str,
    },
}

impl HookError {
    /// A stable code: `invalid_pattern`, `depth_exceeded`, `no_runtime`,
    /// `too_many_handlers`, `too_many_subscriptions` or `too_many_emits`.
    pub fn code(&self) -> &'static str {
        match self {
            HookError::InvalidPattern { .. } => "invalid_pattern",
            HookError::DepthExceeded { .. } => codes::DEPTH_EXCEEDED,
            HookError::NoRuntime => "no_runtime",
            HookError::TooManyHandlers { .. } => "too_many_handlers",
            HookError::TooManySubscriptions { .. } => "too_many_subscriptions",
            HookError::TooManyEmits { .. } => "too_many_emits",
        }
    }
}
