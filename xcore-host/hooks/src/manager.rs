//! [`HookManager`]: registration, emit pipeline, interceptors.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use super::catch::{panic_message, CatchUnwind};
use super::metrics::{duration_us, EventMetrics, HookMetrics, DEFAULT_MAX_TRACKED_EVENTS};
use super::pattern::Pattern;
use super::types::{
    codes, EmitMode, EmitReport, EventCtx, Failure, HandlerFn, HandlerId, HandlerOptions, HandlerOutcome,
    HandlerResult, InterceptorId, InterceptorInfo, InterceptorKind, InterceptorOptions, Outcome,
    PostInterceptorFn, PreAction, PreInterceptorFn, ResultProcessorFn, SubscriptionInfo, DEFAULT_OWNER,
};
use super::HookError;

/// Nested emits allowed below a top-level emit by default.
pub const DEFAULT_MAX_DEPTH: u32 = 8;

/// How much the manager holds: handlers in all, handlers per owner, detached emits in
/// flight in all and per source. 0 = no limit. The host sets them from the `events`
/// section of `xcore.yaml` (`EventsConfig` in the host's `services::events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookLimits {
    /// Subscriptions in the whole manager (`events.max_handlers`).
    pub max_handlers: usize,
    /// Subscriptions of one owner other than [`DEFAULT_OWNER`]: for a plugin, one
    /// instance's manifest hooks plus the subscriptions its code made
    /// (`events.max_subscriptions_per_plugin`).
    pub max_handlers_per_owner: usize,
    /// Detached emits queued or running, from every source (`events.max_detached_emits`).
    pub max_detached: usize,
    /// Detached emits queued or running from one source (a plugin)
    /// (`events.max_detached_emits_per_plugin`).
    pub max_detached_per_source: usize,
}

impl Default for HookLimits {
    fn default() -> Self {
        HookLimits {
            max_handlers: 10_000,
            max_handlers_per_owner: 100,
            max_detached: 1_000,
            max_detached_per_source: 100,
        }
    }
}

/// Limits as atomics, so they can be set after the manager is shared.
struct Limits {
    max_handlers: AtomicUsize,
    max_handlers_per_owner: AtomicUsize,
    max_detached: AtomicUsize,
    max_detached_per_source: AtomicUsize,
}

impl Limits {
    fn new(l: HookLimits) -> Self {
        let limits = Limits {
            max_handlers: AtomicUsize::new(0),
            max_handlers_per_owner: AtomicUsize::new(0),
            max_detached: AtomicUsize::new(0),
            max_detached_per_source: AtomicUsize::new(0),
        };
        limits.set(l);
        limits
    }

    fn set(&self, l: HookLimits) {
        self.max_handlers.store(l.max_handlers, Ordering::Relaxed);
        self.max_handlers_per_owner.store(l.max_handlers_per_owner, Ordering::Relaxed);
        self.max_detached.store(l.max_detached, Ordering::Relaxed);
        self.max_detached_per_source.store(l.max_detached_per_source, Ordering::Relaxed);
    }

    fn get(&self) -> HookLimits {
        HookLimits {
            max_handlers: self.max_handlers.load(Ordering::Relaxed),
            max_handlers_per_owner: self.max_handlers_per_owner.load(Ordering::Relaxed),
            max_detached: self.max_detached.load(Ordering::Relaxed),
            max_detached_per_source: self.max_detached_per_source.load(Ordering::Relaxed),
        }
    }
}

/// Detached emits in flight, in all and per source.
#[derive(Default)]
struct Detached {
    total: AtomicUsize,
    per_source: Mutex<HashMap<String, usize>>,
}

/// One detached emit in flight, counted until it is dropped (when the emit ends, or when
/// its task is dropped unrun).
pub struct DetachedPermit {
    detached: Arc<Detached>,
    source: String,
    gauge: prometheus::IntGauge,
}

impl std::fmt::Debug for DetachedPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetachedPermit").field("source", &self.source).finish()
    }
}

impl Drop for DetachedPermit {
    fn drop(&mut self) {
        self.detached.total.fetch_sub(1, Ordering::AcqRel);
        let mut per = self.detached.per_source.lock();
        if let Some(n) = per.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.source);
            }
        }
        self.gauge.dec();
    }
}

struct Subscription {
    id: HandlerId,
    pattern: Pattern,
    options: HandlerOptions,
    handler: HandlerFn,
    /// Cleared by unregistration (so a running emit skips it) and, for `once`, by the one emit
    /// that wins the right to run it.
    active: AtomicBool,
}

struct Interceptor<F> {
    id: InterceptorId,
    pattern: Pattern,
    options: InterceptorOptions,
    func: F,
}

/// Copy-on-write lists: an emit clones four `Arc`s under the read lock and releases it, so no
/// lock is held while handlers or interceptors run, and registration never waits for an emit.
#[derive(Default)]
struct State {
    handlers: Arc<Vec<Arc<Subscription>>>,
    pre: Arc<Vec<Arc<Interceptor<PreInterceptorFn>>>>,
    post: Arc<Vec<Arc<Interceptor<PostInterceptorFn>>>>,
    processors: Arc<Vec<Arc<Interceptor<ResultProcessorFn>>>>,
}

struct Inner {
    max_depth: u32,
    limits: Limits,
    detached: Arc<Detached>,
    runtime: Option<tokio::runtime::Handle>,
    next_id: AtomicU64,
    state: RwLock<State>,
    metrics: HookMetrics,
}

/// The event system: subscriptions, interceptors, emits and their metrics.
///
/// Cloning is cheap and clones share everything (it is an `Arc` inside); `Arc<HookManager>`
/// works as well.
#[derive(Clone)]
pub struct HookManager {
    inner: Arc<Inner>,
}

impl Default for HookManager {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for HookManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.state.read();
        f.debug_struct("HookManager")
            .field("max_depth", &self.inner.max_depth)
            .field("handlers", &state.handlers.len())
            .field("pre_interceptors", &state.pre.len())
            .field("post_interceptors", &state.post.len())
            .field("result_processors", &state.processors.len())
            .finish()
    }
}

/// Configures a [`HookManager`] before it is shared.
#[derive(Debug, Clone)]
pub struct HookManagerBuilder {
    max_depth: u32,
    max_tracked_events: usize,
    limits: HookLimits,
    runtime: Option<tokio::runtime::Handle>,
}

impl HookManagerBuilder {
    /// Nested emits allowed below a top-level emit (an emit at depth `max + 1` fails).
    pub fn max_depth(mut self, max: u32) -> Self {
        self.max_depth = max;
        self
    }

    /// Distinct event names with their own metrics before aggregating under `_other`.
    pub fn max_tracked_events(mut self, max: usize) -> Self {
        self.max_tracked_events = max;
        self
    }

    /// How many handlers and detached emits the manager holds (default [`HookLimits::default`]).
    pub fn limits(mut self, limits: HookLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Runtime for detached emits made from threads outside any runtime (plugin threads).
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Builds the manager.
    pub fn build(self) -> HookManager {
        HookManager {
            inner: Arc::new(Inner {
                max_depth: self.max_depth,
                limits: Limits::new(self.limits),
                detached: Arc::default(),
                runtime: self.runtime,
                next_id: AtomicU64::new(1),
                state: RwLock::new(State::default()),
                metrics: HookMetrics::new(self.max_tracked_events),
            }),
        }
    }
}

/// Inserts `item` after every element of priority <= `priority`: ascending priority, and
/// registration order among equals (ids only grow).
fn insert_sorted<T>(list: &mut Arc<Vec<Arc<T>>>, item: Arc<T>, priority: i32, prio_of: impl Fn(&T) -> i32) {
    let mut next = Vec::clone(list);
    let pos = next.partition_point(|x| prio_of(x) <= priority);
    next.insert(pos, item);
    *list = Arc::new(next);
}

/// Removes the elements matching `pred`; returns them.
fn remove_where<T>(list: &mut Arc<Vec<Arc<T>>>, pred: impl Fn(&T) -> bool) -> Vec<Arc<T>> {
    if !list.iter().any(|x| pred(x)) {
        return Vec::new();
    }
    let (removed, kept): (Vec<_>, Vec<_>) = list.iter().cloned().partition(|x| pred(x));
    *list = Arc::new(kept);
    removed
}

impl HookManager {
    /// A manager with the default maximum depth ([`DEFAULT_MAX_DEPTH`]).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A manager allowing `max` nested emits below a top-level emit.
    pub fn with_max_depth(max: u32) -> Self {
        Self::builder().max_depth(max).build()
    }

    /// A builder for the other settings.
    pub fn builder() -> HookManagerBuilder {
        HookManagerBuilder {
            max_depth: DEFAULT_MAX_DEPTH,
            max_tracked_events: DEFAULT_MAX_TRACKED_EVENTS,
            limits: HookLimits::default(),
            runtime: None,
        }
    }

    /// The maximum emit depth.
    pub fn max_depth(&self) -> u32 {
        self.inner.max_depth
    }

    /// The limits in force.
    pub fn limits(&self) -> HookLimits {
        self.inner.limits.get()
    }

    /// Changes the limits; what is already registered or in flight stays.
    pub fn set_limits(&self, limits: HookLimits) {
        self.inner.limits.set(limits);
    }

    /// Detached emits in flight.
    pub fn detached_in_flight(&self) -> usize {
        self.inner.detached.total.load(Ordering::Acquire)
    }

    /// Counts one more detached emit from `source`, or refuses it with
    /// [`HookError::TooManyEmits`] when `max_detached` are in flight, or
    /// `max_detached_per_source` from `source`. Hold the permit until the emit ends.
    pub fn try_detached(&self, source: &str) -> Result<DetachedPermit, HookError> {
        let limits = self.inner.limits.get();
        let detached = &self.inner.detached;
        // Both counts change under one lock, so neither limit can be overshot.
        let mut per = detached.per_source.lock();
        let total = detached.total.load(Ordering::Acquire);
        if limits.max_detached > 0 && total >= limits.max_detached {
            self.inner.metrics.refused("detached_emits");
            return Err(HookError::TooManyEmits {
                emitter: source.to_owned(),
                scope: "the host",
                limit: limits.max_detached,
                setting: "events.max_detached_emits",
            });
        }
        let mine = per.get(source).copied().unwrap_or(0);
        if limits.max_detached_per_source > 0 && mine >= limits.max_detached_per_source {
            self.inner.metrics.refused("detached_emits_per_plugin");
            return Err(HookError::TooManyEmits {
                emitter: source.to_owned(),
                scope: "this plugin",
                limit: limits.max_detached_per_source,
                setting: "events.max_detached_emits_per_plugin",
            });
        }
        per.insert(source.to_owned(), mine + 1);
        detached.total.fetch_add(1, Ordering::AcqRel);
        self.inner.metrics.detached_in_flight.inc();
        Ok(DetachedPermit {
            detached: detached.clone(),
            source: source.to_owned(),
            gauge: self.inner.metrics.detached_in_flight.clone(),
        })
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    // ---- registration ------------------------------------------------------------------

    /// Subscribes `handler` to the events matching `pattern`.
    pub fn register(
        &self,
        pattern: &str,
        options: HandlerOptions,
        handler: HandlerFn,
    ) -> Result<HandlerId, HookError> {
        let pattern = Pattern::new(pattern)?;
        let id = HandlerId(self.next_id());
        let mut options = options;
        if options.name.is_empty() {
            options.name = format!("handler-{}", id.0);
        }
        let priority = options.priority;
        let limits = self.inner.limits.get();
        let mut state = self.inner.state.write();
        if limits.max_handlers > 0 && state.handlers.len() >= limits.max_handlers {
            self.inner.metrics.refused("handlers");
            return Err(HookError::TooManyHandlers { limit: limits.max_handlers });
        }
        if limits.max_handlers_per_owner > 0 && options.owner != DEFAULT_OWNER {
            let owned = state.handlers.iter().filter(|s| s.options.owner == options.owner).count();
            if owned >= limits.max_handlers_per_owner {
                self.inner.metrics.refused("subscriptions_per_plugin");
                return Err(HookError::TooManySubscriptions {
                    owner: options.owner,
                    limit: limits.max_handlers_per_owner,
                });
            }
        }
        let sub = Arc::new(Subscription { id, pattern, options, handler, active: AtomicBool::new(true) });
        insert_sorted(&mut state.handlers, sub, priority, |s| s.options.priority);
        self.inner.metrics.handlers.set(state.handlers.len() as i64);
        Ok(id)
    }

    /// Removes a subscription; takes effect at once, even for an emit in progress.
    pub fn unregister(&self, id: HandlerId) -> bool {
        let removed = {
            let mut state = self.inner.state.write();
            let removed = remove_where(&mut state.handlers, |s| s.id == id);
            self.inner.metrics.handlers.set(state.handlers.len() as i64);
            removed
        };
        removed.iter().for_each(|s| s.active.store(false, Ordering::Release));
        !removed.is_empty()
    }

    /// Removes every subscription and interceptor of `owner`; returns how many.
    pub fn unregister_owner(&self, owner: &str) -> usize {
        let mut state = self.inner.state.write();
        let handlers = remove_where(&mut state.handlers, |s| s.options.owner == owner);
        self.inner.metrics.handlers.set(state.handlers.len() as i64);
        handlers.iter().for_each(|s| s.active.store(false, Ordering::Release));
        handlers.len()
            + remove_where(&mut state.pre, |i| i.options.owner == owner).len()
            + remove_where(&mut state.post, |i| i.options.owner == owner).len()
            + remove_where(&mut state.processors, |i| i.options.owner == owner).len()
    }

    /// The subscriptions, in run order.
    pub fn list(&self) -> Vec<SubscriptionInfo> {
        let handlers = self.inner.state.read().handlers.clone();
        handlers
            .iter()
            .map(|s| SubscriptionInfo {
                id: s.id,
                pattern: s.pattern.as_str().to_owned(),
                name: s.options.name.clone(),
                owner: s.options.owner.clone(),
                priority: s.options.priority,
                once: s.options.once,
                timeout_ms: s.options.timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            })
            .collect()
    }

    /// Removes every subscription, interceptor and result processor (metrics are kept: their
    /// counters must not go backwards).
    pub fn clear(&self) {
        let old = std::mem::take(&mut *self.inner.state.write());
        self.inner.metrics.handlers.set(0);
        old.handlers.iter().for_each(|s| s.active.store(false, Ordering::Release));
    }

    fn add_interceptor<F>(
        &self,
        pattern: &str,
        mut options: InterceptorOptions,
        func: F,
        list: impl FnOnce(&mut State) -> &mut Arc<Vec<Arc<Interceptor<F>>>>,
    ) -> Result<InterceptorId, HookError> {
        let pattern = Pattern::new(pattern)?;
        let id = InterceptorId(self.next_id());
        if options.name.is_empty() {
            options.name = format!("interceptor-{}", id.0);
        }
        let priority = options.priority;
        let item = Arc::new(Interceptor { id, pattern, options, func });
        insert_sorted(list(&mut self.inner.state.write()), item, priority, |i| i.options.priority);
        Ok(id)
    }

    /// Adds a pre-interceptor: runs before the handlers of matching events, may rewrite the
    /// payload, skip the handlers or cancel the emit. A panicking pre-interceptor cancels the
    /// emit (failing closed: it may have been a validation or permission check).
    pub fn add_pre_interceptor(
        &self,
        pattern: &str,
        options: InterceptorOptions,
        f: impl Fn(&str, &Value) -> PreAction + Send + Sync + 'static,
    ) -> Result<InterceptorId, HookError> {
        self.add_interceptor(pattern, options, Arc::new(f) as PreInterceptorFn, |s| &mut s.pre)
    }

    /// Adds a post-interceptor: runs after the handlers of matching events with the result list,
    /// which it may edit or replace. A panic is logged and the list kept as it stands.
    pub fn add_post_interceptor(
        &self,
        pattern: &str,
        options: InterceptorOptions,
        f: impl Fn(&str, &Value, &mut Vec<HandlerResult>) + Send + Sync + 'static,
    ) -> Result<InterceptorId, HookError> {
        self.add_interceptor(pattern, options, Arc::new(f) as PostInterceptorFn, |s| &mut s.post)
    }

    /// Adds a result processor: transforms each result of matching events, after the
    /// post-interceptors. A panic replaces that result's outcome with a `processor_panic`
    /// error (failing closed: the processor may have been redacting it).
    pub fn add_result_processor(
        &self,
        pattern: &str,
        options: InterceptorOptions,
        f: impl Fn(&str, &mut HandlerResult) + Send + Sync + 'static,
    ) -> Result<InterceptorId, HookError> {
        self.add_interceptor(pattern, options, Arc::new(f) as ResultProcessorFn, |s| &mut s.processors)
    }

    /// Removes an interceptor or result processor. An emit already past its snapshot may still
    /// run it once.
    pub fn remove_interceptor(&self, id: InterceptorId) -> bool {
        let mut state = self.inner.state.write();
        !(remove_where(&mut state.pre, |i| i.id == id).is_empty()
            && remove_where(&mut state.post, |i| i.id == id).is_empty()
            && remove_where(&mut state.processors, |i| i.id == id).is_empty())
    }

    /// The interceptors and result processors, by kind then run order.
    pub fn list_interceptors(&self) -> Vec<InterceptorInfo> {
        fn info<F>(kind: InterceptorKind, i: &Interceptor<F>) -> InterceptorInfo {
            InterceptorInfo {
                id: i.id,
                kind,
                pattern: i.pattern.as_str().to_owned(),
                name: i.options.name.clone(),
                owner: i.options.owner.clone(),
                priority: i.options.priority,
            }
        }
        let state = self.inner.state.read();
        let pre = state.pre.iter().map(|i| info(InterceptorKind::Pre, i));
        let post = state.post.iter().map(|i| info(InterceptorKind::Post, i));
        let proc = state.processors.iter().map(|i| info(InterceptorKind::ResultProcessor, i));
        pre.chain(post).chain(proc).collect()
    }

    // ---- emit --------------------------------------------------------------------------

    /// Top-level emit (depth 0) running every matching handler.
    pub async fn emit(&self, event: &str, payload: Value) -> EmitReport {
        self.emit_top(event, payload, EmitMode::All).await
    }

    /// Top-level emit stopping after the first handler that returns a non-null value
    /// ([`EmitReport::first_value`] gives it).
    pub async fn emit_until_first(&self, event: &str, payload: Value) -> EmitReport {
        self.emit_top(event, payload, EmitMode::UntilFirst).await
    }

    /// Top-level emit stopping after the first handler that does not fail
    /// ([`EmitReport::first_success`] gives it).
    pub async fn emit_until_success(&self, event: &str, payload: Value) -> EmitReport {
        self.emit_top(event, payload, EmitMode::UntilSuccess).await
    }

    /// Depth 0 needs no check: it never exceeds an unsigned maximum.
    async fn emit_top(&self, event: &str, payload: Value, mode: EmitMode) -> EmitReport {
        self.run_emit(event, payload, 0, mode).await
    }

    /// Emit at an explicit depth, for emits that come back through the host from a plugin
    /// handler (pass the handler's depth + 1). Fails with [`HookError::DepthExceeded`] when
    /// `depth > max_depth`, before any interceptor or handler runs.
    pub async fn emit_at_depth(
        &self,
        event: &str,
        payload: Value,
        depth: u32,
        mode: EmitMode,
    ) -> Result<EmitReport, HookError> {
        self.check_depth(event, depth)?;
        Ok(self.run_emit(event, payload, depth, mode).await)
    }

    /// Spawns a top-level emit and returns at once. Uses the current tokio runtime, else the
    /// one given to [`HookManagerBuilder::runtime`]; fails with [`HookError::NoRuntime`].
    pub fn emit_detached(
        &self,
        event: &str,
        payload: Value,
    ) -> Result<tokio::task::JoinHandle<EmitReport>, HookError> {
        self.emit_detached_at_depth(event, payload, 0)
    }

    /// [`Self::emit_detached`] at an explicit depth; the depth is checked before spawning, so
    /// detached re-emits cannot loop forever either.
    pub fn emit_detached_at_depth(
        &self,
        event: &str,
        payload: Value,
        depth: u32,
    ) -> Result<tokio::task::JoinHandle<EmitReport>, HookError> {
        self.check_depth(event, depth)?;
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| self.inner.runtime.clone())
            .ok_or(HookError::NoRuntime)?;
        let manager = self.clone();
        let event = event.to_owned();
        Ok(runtime.spawn(async move { manager.run_emit(&event, payload, depth, EmitMode::All).await }))
    }

    /// The per-event metrics, sorted by event name.
    pub fn metrics_snapshot(&self) -> Vec<EventMetrics> {
        self.inner.metrics.snapshot()
    }

    /// Registers the hook counters (see [`super::metrics`]) in `registry`.
    pub fn register_prometheus(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        self.inner.metrics.register(registry)
    }

    /// The hook counters, for callers that register collectors themselves.
    pub fn prometheus_collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        self.inner.metrics.collectors()
    }

    fn check_depth(&self, event: &str, depth: u32) -> Result<(), HookError> {
        let max = self.inner.max_depth;
        if depth > max {
            log::warn!("hooks: emit of {event:?} refused at depth {depth} (max {max})");
            return Err(HookError::DepthExceeded { event: event.to_owned(), depth, max });
        }
        Ok(())
    }

    async fn run_emit(&self, event: &str, payload: Value, depth: u32, mode: EmitMode) -> EmitReport {
        let started = Instant::now();
        let (handlers, pre, post, processors) = {
            let s = self.inner.state.read();
            (s.handlers.clone(), s.pre.clone(), s.post.clone(), s.processors.clone())
        };
        let stats = self.inner.metrics.stats_for(event);
        let segments: Vec<&str> = event.split('.').collect();
        let mut report = EmitReport {
            event: event.to_owned(),
            depth,
            results: Vec::new(),
            cancelled: None,
            skipped: false,
            duration_us: 0,
        };

        let mut payload = payload;
        for ic in pre.iter().filter(|i| i.pattern.matches_segments(&segments)) {
            match catch_unwind(AssertUnwindSafe(|| (ic.func)(event, &payload))) {
                Ok(PreAction::Continue) => {}
                Ok(PreAction::ContinueWith(rewritten)) => payload = rewritten,
                Ok(PreAction::Skip) => {
                    report.skipped = true;
                    break;
                }
                Ok(PreAction::Cancel(reason)) => {
                    report.cancelled = Some(reason);
                    break;
                }
                Err(panic) => {
                    let msg = panic_message(&panic);
                    log::error!("hooks: pre-interceptor {:?} panicked on {event:?}: {msg}", ic.options.name);
                    report.cancelled = Some(format!("pre-interceptor {:?} panicked: {msg}", ic.options.name));
                    break;
                }
            }
        }
        if report.skipped || report.cancelled.is_some() {
            let elapsed = started.elapsed();
            report.duration_us = duration_us(elapsed);
            self.inner.metrics.record(&stats, elapsed, 0, 0);
            return report;
        }

        let event_arc: Arc<str> = Arc::from(event);
        let payload = Arc::new(payload);
        let (mut runs, mut errors) = (0u64, 0u64);
        for sub in handlers.iter().filter(|s| s.pattern.matches_segments(&segments)) {
            if sub.options.once {
                // swap: exactly one concurrent emit sees `true` and runs it.
                if !sub.active.swap(false, Ordering::AcqRel) {
                    continue;
                }
                let mut state = self.inner.state.write();
                remove_where(&mut state.handlers, |s| s.id == sub.id);
                self.inner.metrics.handlers.set(state.handlers.len() as i64);
                drop(state);
            } else if !sub.active.load(Ordering::Acquire) {
                continue;
            }
            let mut result = self.run_handler(sub, &event_arc, &payload, depth).await;
            runs += 1;
            errors += u64::from(!result.outcome.is_ok());
            result.stopped |= match (mode, &result.outcome) {
                (EmitMode::All, _) => false,
                (EmitMode::UntilFirst, outcome) => outcome.value().is_some_and(|v| !v.is_null()),
                (EmitMode::UntilSuccess, outcome) => outcome.is_ok(),
            };
            let stop = result.stopped;
            report.results.push(result);
            if stop {
                break;
            }
        }

        for ic in post.iter().filter(|i| i.pattern.matches_segments(&segments)) {
            if let Err(panic) =
                catch_unwind(AssertUnwindSafe(|| (ic.func)(event, &payload, &mut report.results)))
            {
                log::error!(
                    "hooks: post-interceptor {:?} panicked on {event:?}: {}",
                    ic.options.name,
                    panic_message(&panic)
                );
            }
        }
        let processors: Vec<_> =
            processors.iter().filter(|p| p.pattern.matches_segments(&segments)).collect();
        for result in &mut report.results {
            for p in &processors {
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (p.func)(event, result))) {
                    let msg =
                        format!("result processor {:?} panicked: {}", p.options.name, panic_message(&panic));
                    log::error!("hooks: {msg} (event {event:?})");
                    result.outcome = Outcome::Error(Failure::new(codes::PROCESSOR_PANIC, msg));
                }
            }
        }

        let elapsed = started.elapsed();
        report.duration_us = duration_us(elapsed);
        self.inner.metrics.record(&stats, elapsed, runs, errors);
        report
    }

    /// Runs one handler with panic, timeout and depth-failure capture.
    async fn run_handler(
        &self,
        sub: &Subscription,
        event: &Arc<str>,
        payload: &Arc<Value>,
        depth: u32,
    ) -> HandlerResult {
        let depth_failure = Arc::new(OnceLock::new());
        let ctx = EventCtx {
            event: event.clone(),
            payload: payload.clone(),
            depth,
            handler_id: sub.id,
            manager: self.clone(),
            depth_failure: depth_failure.clone(),
        };
        let started = Instant::now();
        // The call itself may panic before returning a future.
        let raw = match catch_unwind(AssertUnwindSafe(|| (sub.handler)(ctx))) {
            Err(panic) => Some(Err(panic)),
            Ok(fut) => match sub.options.timeout {
                None => Some(CatchUnwind(fut).await),
                // On timeout the future is dropped, which cancels it at its current await point.
                Some(limit) => tokio::time::timeout(limit, CatchUnwind(fut)).await.ok(),
            },
        };
        let name = &sub.options.name;
        let (mut outcome, stopped) = match raw {
            Some(Ok(HandlerOutcome::Value(value))) => (Outcome::Ok(value), false),
            Some(Ok(HandlerOutcome::Stop(value))) => (Outcome::Ok(value.unwrap_or(Value::Null)), true),
            Some(Ok(HandlerOutcome::Error(failure))) => {
                log::debug!("hooks: handler {name:?} failed on {event:?}: {}", failure.message);
                (Outcome::Error(failure), false)
            }
            Some(Err(panic)) => {
                let msg = panic_message(&panic);
                log::warn!("hooks: handler {name:?} panicked on {event:?}: {msg}");
                (
                    Outcome::Error(Failure::new(codes::HANDLER_PANIC, format!("handler panicked: {msg}"))),
                    false,
                )
            }
            None => {
                let ms = sub.options.timeout.map_or(0, |t| t.as_millis());
                log::warn!("hooks: handler {name:?} timed out on {event:?} after {ms} ms");
                let msg = format!("handler exceeded its timeout of {ms} ms");
                (Outcome::Error(Failure::new(codes::HANDLER_TIMEOUT, msg)), false)
            }
        };
        if let (true, Some(err)) = (outcome.is_ok(), depth_failure.get()) {
            outcome = Outcome::Error(Failure::from(err));
        }
        HandlerResult {
            handler: name.clone(),
            handler_id: sub.id,
            outcome,
            duration_us: duration_us(started.elapsed()),
            stopped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler;
    use parking_lot::Mutex;
    use serde_json::json;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A handler recording its name into `log` and returning it.
    fn recorder(log: &Arc<Mutex<Vec<String>>>, name: &str) -> HandlerFn {
        let (log, name) = (log.clone(), name.to_owned());
        handler(move |_ctx| {
            let (log, name) = (log.clone(), name.clone());
            async move {
                log.lock().push(name.clone());
                HandlerOutcome::ok(name)
            }
        })
    }

    fn const_handler(outcome: HandlerOutcome) -> HandlerFn {
        handler(move |_| {
            let outcome = outcome.clone();
            async move { outcome }
        })
    }

    fn opts(name: &str) -> HandlerOptions {
        HandlerOptions::named(name)
    }

    #[tokio::test]
    async fn handlers_per_owner_and_in_all_are_bounded() {
        let hooks = HookManager::builder()
            .limits(HookLimits { max_handlers: 5, max_handlers_per_owner: 2, ..HookLimits::default() })
            .build();
        let ok = || const_handler(HandlerOutcome::ok(1));
        let owned = |o: &str| opts("h").owner(o);
        hooks.register("a", owned("plugin:p/1"), ok()).unwrap();
        let second = hooks.register("a", owned("plugin:p/1"), ok()).unwrap();
        let err = hooks.register("a", owned("plugin:p/1"), ok()).unwrap_err();
        assert_eq!(err.code(), "too_many_subscriptions");
        assert!(err.to_string().contains("events.max_subscriptions_per_plugin"), "{err}");
        // Another instance (a reload's) has its own budget; freeing one makes room.
        hooks.register("a", owned("plugin:p/2"), ok()).unwrap();
        assert!(hooks.unregister(second));
        hooks.register("a", owned("plugin:p/1"), ok()).unwrap();
        // The host's own handlers have no owner limit, only the total one.
        hooks.register("a", opts("host1"), ok()).unwrap();
        hooks.register("a", opts("host2"), ok()).unwrap();
        let err = hooks.register("a", opts("host3"), ok()).unwrap_err();
        assert_eq!(err, HookError::TooManyHandlers { limit: 5 });
        assert_eq!(hooks.list().len(), 5);
        let text = {
            let r = prometheus::Registry::new();
            hooks.register_prometheus(&r).unwrap();
            let mut buf = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut buf).unwrap();
            String::from_utf8(buf).unwrap()
        };
        assert!(text.contains("xcore_hook_handlers 5"), "{text}");
        assert!(text.contains("xcore_hook_refusals_total{limit=\"handlers\"} 1"), "{text}");
        assert!(text.contains("xcore_hook_refusals_total{limit=\"subscriptions_per_plugin\"} 1"), "{text}");
        hooks.unregister_owner("plugin:p/1");
        assert_eq!(hooks.list().len(), 3);
    }

    #[test]
    fn detached_emits_in_flight_are_bounded_per_source_and_in_all() {
        let hooks = HookManager::builder()
            .limits(HookLimits { max_detached: 3, max_detached_per_source: 2, ..HookLimits::default() })
            .build();
        let a1 = hooks.try_detached("a").unwrap();
        let _a2 = hooks.try_detached("a").unwrap();
        let err = hooks.try_detached("a").unwrap_err();
        assert_eq!(err.code(), "too_many_emits");
        assert!(err.to_string().contains("events.max_detached_emits_per_plugin"), "{err}");
        let _b1 = hooks.try_detached("b").unwrap();
        let err = hooks.try_detached("c").unwrap_err();
        assert!(err.to_string().contains("events.max_detached_emits "), "{err}");
        assert_eq!(hooks.detached_in_flight(), 3);
        drop(a1);
        assert_eq!(hooks.detached_in_flight(), 2);
        let _c1 = hooks.try_detached("c").unwrap();
        // 0 = no limit.
        hooks.set_limits(HookLimits { max_detached: 0, max_detached_per_source: 0, ..HookLimits::default() });
        let many: Vec<_> = (0..50).map(|_| hooks.try_detached("a").unwrap()).collect();
        assert_eq!(hooks.detached_in_flight(), 53);
        drop(many);
        assert_eq!(hooks.detached_in_flight(), 3);
    }

    fn values(report: &EmitReport) -> Vec<Value> {
        report.results.iter().map(|r| r.outcome.value().cloned().unwrap_or(json!("<error>"))).collect()
    }

    fn codes_of(report: &EmitReport) -> Vec<Option<String>> {
        report.results.iter().map(|r| r.outcome.failure().map(|f| f.code.clone())).collect()
    }

    #[tokio::test]
    async fn runs_by_priority_then_registration_order() {
        let hooks = HookManager::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        hooks.register("e", opts("late").priority(100), recorder(&log, "late")).unwrap();
        hooks.register("e", opts("b1").priority(10), recorder(&log, "b1")).unwrap();
        hooks.register("e", opts("first").priority(-5), recorder(&log, "first")).unwrap();
        hooks.register("e", opts("b2").priority(10), recorder(&log, "b2")).unwrap();
        hooks.register("*", opts("wild").priority(10), recorder(&log, "wild")).unwrap();
        hooks.register("other", opts("other"), recorder(&log, "other")).unwrap();
        let report = hooks.emit("e", json!({})).await;
        assert_eq!(*log.lock(), ["first", "b1", "b2", "wild", "late"]);
        assert_eq!(values(&report), [json!("first"), json!("b1"), json!("b2"), json!("wild"), json!("late")]);
        let names: Vec<_> = report.results.iter().map(|r| r.handler.as_str()).collect();
        assert_eq!(names, ["first", "b1", "b2", "wild", "late"]);
        let listed: Vec<_> = hooks.list().into_iter().map(|s| s.name).collect();
        assert_eq!(listed, ["first", "b1", "b2", "wild", "other", "late"]);
    }

    #[tokio::test]
    async fn patterns_select_handlers() {
        let hooks = HookManager::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        hooks.register("a.*", opts("one"), recorder(&log, "one")).unwrap();
        hooks.register("a.**", opts("any"), recorder(&log, "any")).unwrap();
        hooks.emit("a", Value::Null).await;
        hooks.emit("a.b", Value::Null).await;
        hooks.emit("a.b.c", Value::Null).await;
        assert_eq!(*log.lock(), ["any", "one", "any", "any"]);
        let err = hooks.register("a..b", opts("bad"), recorder(&log, "bad")).unwrap_err();
        assert_eq!(err.code(), "invalid_pattern");
        assert!(hooks.register("***", opts("bad"), recorder(&log, "bad")).is_err());
    }

    #[tokio::test]
    async fn handler_sees_name_payload_and_depth() {
        let hooks = HookManager::new();
        hooks
            .register(
                "orders.**",
                opts("echo"),
                handler(|ctx| async move {
                    HandlerOutcome::ok(
                        json!({"event": ctx.event(), "payload": ctx.payload(), "depth": ctx.depth()}),
                    )
                }),
            )
            .unwrap();
        let report = hooks.emit("orders.created.eu", json!({"id": 7})).await;
        assert_eq!(
            values(&report),
            [json!({"event": "orders.created.eu", "payload": {"id": 7}, "depth": 0})]
        );
        let serialized = serde_json::to_value(&report).unwrap();
        assert_eq!(serialized["results"][0]["outcome"]["ok"]["payload"]["id"], 7);
        assert_eq!(serialized["results"][0]["handler"], "echo");
        assert_eq!(serialized["cancelled"], Value::Null);
    }

    #[tokio::test]
    async fn once_runs_once_and_is_removed_even_after_failure() {
        let hooks = HookManager::new();
        let id = hooks.register("e", opts("o").once(), const_handler(HandlerOutcome::error("nope"))).unwrap();
        assert_eq!(hooks.list().len(), 1);
        let first = hooks.emit("e", Value::Null).await;
        assert_eq!(codes_of(&first), [Some("handler_error".to_owned())]);
        assert!(hooks.emit("e", Value::Null).await.results.is_empty());
        assert!(hooks.list().is_empty());
        assert!(!hooks.unregister(id));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn once_runs_once_under_concurrent_emits() {
        let hooks = HookManager::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let h = handler(move |_| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                HandlerOutcome::ok(1)
            }
        });
        hooks.register("e", opts("once").once(), h).unwrap();
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let hooks = hooks.clone();
                tokio::spawn(async move { hooks.emit("e", Value::Null).await.results.len() })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(total, 1);
    }

    #[tokio::test]
    async fn timeout_error_and_panic_are_isolated() {
        let hooks = HookManager::new();
        hooks
            .register(
                "e",
                opts("slow").priority(1).timeout(Duration::from_millis(30)),
                handler(|_| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    HandlerOutcome::ok("never")
                }),
            )
            .unwrap();
        hooks
            .register("e", opts("err").priority(2), const_handler(HandlerOutcome::error("bad input")))
            .unwrap();
        hooks
            .register(
                "e",
                opts("async-panic").priority(3),
                handler(|_| async {
                    tokio::task::yield_now().await;
                    panic!("kaboom");
                }),
            )
            .unwrap();
        hooks
            .register(
                "e",
                opts("sync-panic").priority(4),
                Arc::new(|_ctx: EventCtx| -> crate::BoxFuture<HandlerOutcome> { panic!("early") }),
            )
            .unwrap();
        hooks.register("e", opts("fine").priority(5), const_handler(HandlerOutcome::ok("fine"))).unwrap();
        let started = Instant::now();
        let report = hooks.emit("e", Value::Null).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            codes_of(&report),
            [
                Some("handler_timeout".to_owned()),
                Some("handler_error".to_owned()),
                Some("handler_panic".to_owned()),
                Some("handler_panic".to_owned()),
                None
            ]
        );
        assert_eq!(report.results[1].outcome.failure().unwrap().message, "bad input");
        assert!(report.results[2].outcome.failure().unwrap().message.contains("kaboom"));
        assert!(report.results[3].outcome.failure().unwrap().message.contains("early"));
        assert_eq!(report.results[4].outcome, Outcome::Ok(json!("fine")));
        assert_eq!(report.failures().count(), 4);
        // A handler that panicked stays registered.
        assert_eq!(hooks.emit("e", Value::Null).await.results.len(), 5);
    }

    #[tokio::test]
    async fn pre_interceptors_rewrite_skip_and_cancel() {
        let hooks = HookManager::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        hooks
            .register(
                "**",
                opts("echo"),
                handler(|ctx| async move { HandlerOutcome::ok(ctx.payload().clone()) }),
            )
            .unwrap();
        hooks
            .add_pre_interceptor("rewrite.*", InterceptorOptions::named("add-a").priority(1), |_, p| {
                let mut p = p.clone();
                p["a"] = json!(1);
                PreAction::ContinueWith(p)
            })
            .unwrap();
        let seen = log.clone();
        hooks
            .add_pre_interceptor("rewrite.*", InterceptorOptions::named("sees-a").priority(2), move |_, p| {
                seen.lock().push(p["a"].to_string());
                PreAction::Continue
            })
            .unwrap();
        hooks.add_pre_interceptor("skip.**", InterceptorOptions::default(), |_, _| PreAction::Skip).unwrap();
        let cancel = hooks
            .add_pre_interceptor("cancel.*", InterceptorOptions::default(), |e, _| {
                PreAction::Cancel(format!("{e} is not allowed"))
            })
            .unwrap();

        let rewritten = hooks.emit("rewrite.x", json!({"b": 2})).await;
        assert_eq!(values(&rewritten), [json!({"a": 1, "b": 2})]);
        assert_eq!(*log.lock(), ["1"]);

        let skipped = hooks.emit("skip.x.y", json!({})).await;
        assert!(skipped.skipped && skipped.results.is_empty() && skipped.cancelled.is_none());

        let cancelled = hooks.emit("cancel.x", json!({})).await;
        assert_eq!(cancelled.cancelled.as_deref(), Some("cancel.x is not allowed"));
        assert!(cancelled.results.is_empty() && !cancelled.skipped);

        assert!(hooks.remove_interceptor(cancel));
        assert!(!hooks.remove_interceptor(cancel));
        assert_eq!(hooks.emit("cancel.x", json!(1)).await.results.len(), 1);
    }

    #[tokio::test]
    async fn panicking_pre_interceptor_cancels() {
        let hooks = HookManager::new();
        hooks.register("e", opts("h"), const_handler(HandlerOutcome::ok(1))).unwrap();
        hooks.add_pre_interceptor("e", InterceptorOptions::named("guard"), |_, _| panic!("oops")).unwrap();
        let report = hooks.emit("e", Value::Null).await;
        assert!(report.cancelled.unwrap().contains("\"guard\" panicked: oops"));
        assert!(report.results.is_empty());
    }

    #[tokio::test]
    async fn post_interceptor_replaces_results_and_processors_redact() {
        let hooks = HookManager::new();
        hooks.register("e", opts("a"), const_handler(HandlerOutcome::ok(json!({"secret": "s1"})))).unwrap();
        hooks.register("e", opts("b"), const_handler(HandlerOutcome::ok(json!({"secret": "s2"})))).unwrap();
        let post = hooks
            .add_post_interceptor("e", InterceptorOptions::named("keep-last"), |_, _, results| {
                let last = results.pop();
                *results = last.into_iter().collect();
            })
            .unwrap();
        hooks
            .add_result_processor("**", InterceptorOptions::named("redact"), |_, result| {
                if let Outcome::Ok(Value::Object(map)) = &mut result.outcome {
                    if let Some(v) = map.get_mut("secret") {
                        *v = json!("***");
                    }
                }
            })
            .unwrap();
        let report = hooks.emit("e", Value::Null).await;
        assert_eq!(report.results.len(), 1);
        assert_eq!(report.results[0].handler, "b");
        assert_eq!(values(&report), [json!({"secret": "***"})]);

        assert!(hooks.remove_interceptor(post));
        assert_eq!(values(&hooks.emit("e", Value::Null).await).len(), 2);

        hooks.add_result_processor("e", InterceptorOptions::named("broken"), |_, _| panic!("no")).unwrap();
        let report = hooks.emit("e", Value::Null).await;
        assert_eq!(
            codes_of(&report),
            [Some("processor_panic".to_owned()), Some("processor_panic".to_owned())]
        );
        let kinds: Vec<_> = hooks.list_interceptors().into_iter().map(|i| i.kind).collect();
        assert_eq!(kinds, [InterceptorKind::ResultProcessor, InterceptorKind::ResultProcessor]);
    }

    #[tokio::test]
    async fn emit_variants_and_stop_propagation() {
        let hooks = HookManager::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        hooks
            .register(
                "e",
                opts("fails").priority(1),
                handler(move |_| {
                    l.lock().push("fails".to_owned());
                    async { HandlerOutcome::error("x") }
                }),
            )
            .unwrap();
        hooks
            .register("e", opts("null").priority(2), const_handler(HandlerOutcome::ok(Value::Null)))
            .unwrap();
        hooks.register("e", opts("value").priority(3), const_handler(HandlerOutcome::ok(3))).unwrap();
        hooks.register("e", opts("tail").priority(4), recorder(&log, "tail")).unwrap();

        let all = hooks.emit("e", Value::Null).await;
        assert_eq!(all.results.len(), 4);
        assert!(all.results.iter().all(|r| !r.stopped));

        let first = hooks.emit_until_first("e", Value::Null).await;
        assert_eq!(first.results.len(), 3);
        assert!(first.results[2].stopped);
        assert_eq!(first.first_value(), Some(&json!(3)));

        let success = hooks.emit_until_success("e", Value::Null).await;
        assert_eq!(success.results.len(), 2);
        assert_eq!(success.first_success().unwrap().handler, "null");
        assert!(success.results[1].stopped);

        hooks
            .register("e", opts("stopper").priority(0), const_handler(HandlerOutcome::stop_with("halt")))
            .unwrap();
        for report in [
            hooks.emit("e", Value::Null).await,
            hooks.emit_until_first("e", Value::Null).await,
            hooks.emit_until_success("e", Value::Null).await,
        ] {
            assert_eq!(report.results.len(), 1);
            assert!(report.results[0].stopped);
            assert_eq!(report.results[0].outcome, Outcome::Ok(json!("halt")));
        }
        assert_eq!(log.lock().iter().filter(|n| *n == "tail").count(), 1);
    }

    #[tokio::test]
    async fn unregister_and_unregister_owner() {
        let hooks = HookManager::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let host = hooks.register("e", opts("host"), recorder(&log, "host")).unwrap();
        hooks.register("e", opts("n1").owner("plugin:notes"), recorder(&log, "n1")).unwrap();
        hooks.register("**", opts("n2").owner("plugin:notes"), recorder(&log, "n2")).unwrap();
        hooks
            .add_pre_interceptor("e", InterceptorOptions::default().owner("plugin:notes"), |_, _| {
                PreAction::Continue
            })
            .unwrap();
        assert_eq!(hooks.emit("e", Value::Null).await.results.len(), 3);
        assert_eq!(hooks.unregister_owner("plugin:notes"), 3);
        assert_eq!(hooks.unregister_owner("plugin:notes"), 0);
        assert!(hooks.list_interceptors().is_empty());
        assert_eq!(values(&hooks.emit("e", Value::Null).await), [json!("host")]);
        assert!(hooks.unregister(host));
        assert!(!hooks.unregister(host));
        assert!(hooks.emit("e", Value::Null).await.results.is_empty());

        hooks.register("e", opts("x"), recorder(&log, "x")).unwrap();
        hooks.add_post_interceptor("e", InterceptorOptions::default(), |_, _, _| {}).unwrap();
        hooks.clear();
        assert!(hooks.list().is_empty() && hooks.list_interceptors().is_empty());
    }

    #[tokio::test]
    async fn unregistration_during_an_emit_takes_effect_at_once() {
        let hooks = HookManager::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let victim = Arc::new(OnceLock::new());
        let v = victim.clone();
        hooks
            .register(
                "e",
                opts("killer").priority(1),
                handler(move |ctx| {
                    let v = v.clone();
                    async move { HandlerOutcome::ok(ctx.manager().unregister(*v.get().unwrap())) }
                }),
            )
            .unwrap();
        victim
            .set(hooks.register("e", opts("victim").priority(2), recorder(&log, "victim")).unwrap())
            .unwrap();
        let report = hooks.emit("e", Value::Null).await;
        assert_eq!(values(&report), [json!(true)]);
        assert!(log.lock().is_empty());
    }

    /// Emits `target` from the handler and returns the nested report (or the error).
    fn emitter(target: &'static str) -> HandlerFn {
        handler(move |ctx| async move {
            match ctx.emit(target, ctx.payload().clone()).await {
                Ok(report) => HandlerOutcome::ok(serde_json::to_value(report).unwrap()),
                Err(err) => err.into(),
            }
        })
    }

    /// Follows the first result's nested reports down; returns the depth and failure at the end.
    fn innermost(report: &EmitReport) -> (u64, Failure) {
        let mut value = serde_json::to_value(report).unwrap();
        loop {
            let result = value["results"][0].clone();
            if let Some(err) = result["outcome"].get("error") {
                let failure = Failure::new(err["code"].as_str().unwrap(), err["message"].as_str().unwrap());
                return (value["depth"].as_u64().unwrap(), failure);
            }
            value = result["outcome"]["ok"].clone();
        }
    }

    #[tokio::test]
    async fn self_emitting_handler_hits_the_depth_bound() {
        let hooks = HookManager::with_max_depth(3);
        hooks.register("loop", opts("self"), emitter("loop")).unwrap();
        let report = tokio::time::timeout(Duration::from_secs(5), hooks.emit("loop", json!({})))
            .await
            .expect("no deadlock");
        let (depth, failure) = innermost(&report);
        assert_eq!(depth, 3);
        assert_eq!(failure.code, "depth_exceeded");
        assert!(
            failure.message.contains("\"loop\" at depth 4 exceeds the maximum depth 3"),
            "{}",
            failure.message
        );
        let metrics = hooks.metrics_snapshot();
        assert_eq!(metrics[0].emissions, 4, "depths 0..=3 ran, depth 4 was refused");
        assert_eq!(metrics[0].errors, 1);
    }

    #[tokio::test]
    async fn ping_pong_chain_hits_the_depth_bound() {
        let hooks = HookManager::new();
        hooks.register("a", opts("a->b"), emitter("b")).unwrap();
        hooks.register("b", opts("b->a"), emitter("a")).unwrap();
        let report = tokio::time::timeout(Duration::from_secs(5), hooks.emit("a", Value::Null))
            .await
            .expect("no deadlock");
        let (depth, failure) = innermost(&report);
        assert_eq!(depth, DEFAULT_MAX_DEPTH as u64);
        assert_eq!(failure.code, codes::DEPTH_EXCEEDED);
        assert!(failure.message.contains("at depth 9 exceeds the maximum depth 8"));
    }

    #[tokio::test]
    async fn ignored_depth_failure_is_still_recorded() {
        let hooks = HookManager::with_max_depth(0);
        hooks
            .register(
                "e",
                opts("swallows"),
                handler(|ctx| async move {
                    let _ = ctx.emit("e", Value::Null).await;
                    HandlerOutcome::ok("fine")
                }),
            )
            .unwrap();
        let report = hooks.emit("e", Value::Null).await;
        assert_eq!(codes_of(&report), [Some("depth_exceeded".to_owned())]);
        let err = hooks.emit_at_depth("e", Value::Null, 1, EmitMode::All).await.unwrap_err();
        assert_eq!(err, HookError::DepthExceeded { event: "e".into(), depth: 1, max: 0 });
    }

    #[tokio::test]
    async fn metrics_count_runs_errors_and_mean() {
        let hooks = HookManager::new();
        hooks.register("m.*", opts("ok"), const_handler(HandlerOutcome::ok(1))).unwrap();
        hooks.register("m.*", opts("bad"), const_handler(HandlerOutcome::error("x"))).unwrap();
        hooks.add_pre_interceptor("m.skip", InterceptorOptions::default(), |_, _| PreAction::Skip).unwrap();
        let mut total = 0;
        for _ in 0..3 {
            total += hooks.emit("m.x", Value::Null).await.duration_us;
        }
        hooks.emit("m.skip", Value::Null).await;
        let snap = hooks.metrics_snapshot();
        let x = snap.iter().find(|m| m.event == "m.x").unwrap();
        assert_eq!((x.emissions, x.handler_runs, x.errors), (3, 6, 3));
        assert!(x.total_duration_us >= total.saturating_sub(3));
        assert!((x.mean_duration_us - x.total_duration_us as f64 / 3.0).abs() < 1e-9);
        let skip = snap.iter().find(|m| m.event == "m.skip").unwrap();
        assert_eq!((skip.emissions, skip.handler_runs, skip.errors), (1, 0, 0));

        let registry = prometheus::Registry::new();
        hooks.register_prometheus(&registry).unwrap();
        let families = registry.gather();
        let emissions = families.iter().find(|f| f.name() == "xcore_hook_emissions_total").unwrap();
        assert_eq!(emissions.get_metric().len(), 2);
    }

    #[tokio::test]
    async fn metrics_cap_aggregates_other_names() {
        let hooks = HookManager::builder().max_tracked_events(2).build();
        for name in ["a", "b", "c", "d"] {
            hooks.emit(name, Value::Null).await;
        }
        let names: Vec<_> = hooks.metrics_snapshot().into_iter().map(|m| (m.event, m.emissions)).collect();
        assert_eq!(names, [("_other".to_owned(), 2), ("a".to_owned(), 1), ("b".to_owned(), 1)]);
    }

    #[tokio::test]
    async fn detached_emit_runs_in_the_background() {
        let hooks = HookManager::with_max_depth(1);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        hooks
            .register(
                "bg",
                opts("bg"),
                handler(move |ctx| {
                    let tx = tx.clone();
                    async move {
                        if let Some(tx) = tx.lock().take() {
                            let _ = tx.send(ctx.depth());
                        }
                        HandlerOutcome::ok(Value::Null)
                    }
                }),
            )
            .unwrap();
        let handle = hooks.emit_detached("bg", Value::Null).unwrap();
        assert_eq!(rx.await.unwrap(), 0);
        assert_eq!(handle.await.unwrap().results.len(), 1);
        let err = hooks.emit_detached_at_depth("bg", Value::Null, 2).unwrap_err();
        assert_eq!(err.code(), "depth_exceeded");
    }

    #[test]
    fn detached_emit_without_runtime_fails_or_uses_the_given_one() {
        let hooks = HookManager::new();
        assert_eq!(hooks.emit_detached("x", Value::Null).unwrap_err(), HookError::NoRuntime);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let hooks = HookManager::builder().runtime(rt.handle().clone()).build();
        hooks.register("x", opts("x"), const_handler(HandlerOutcome::ok(5))).unwrap();
        let handle = hooks.emit_detached("x", Value::Null).unwrap();
        let report = rt.block_on(handle).unwrap();
        assert_eq!(values(&report), [json!(5)]);
    }

    #[tokio::test]
    async fn handlers_may_register_during_an_emit() {
        let hooks = HookManager::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        hooks
            .register(
                "e",
                opts("adder"),
                handler(move |ctx| {
                    let l = l.clone();
                    async move {
                        let id = ctx.manager().register(
                            "e",
                            HandlerOptions::named("added"),
                            recorder(&l, "added"),
                        );
                        HandlerOutcome::ok(id.is_ok())
                    }
                }),
            )
            .unwrap();
        // Registered mid-emit: not part of this emit's snapshot, part of the next.
        assert_eq!(hooks.emit("e", Value::Null).await.results.len(), 1);
        assert_eq!(hooks.emit("e", Value::Null).await.results.len(), 2);
        assert_eq!(*log.lock(), ["added"]);
    }
}
