//! The kit's [`PluginCalls`]: how the host's services reach plugins in a test. The plugin
//! under test is called in-process on a blocking thread (as the host's trusted tier calls
//! it on a worker thread, never on the async runtime); any other plugin is a stub the
//! test registered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use xcore_hooks::{HandlerId, HookError, HookManager};
use xcore_plugin_abi::abi_stable::std_types::{RResult, RSlice, RStr};
use xcore_plugin_abi::ffi::{CallMeta, CallRequest, PluginBox};
use xcore_runtime::plugin_calls::{event_handler, ActionSubscription};
use xcore_runtime::{CallFailure, CallInput, CallOrigin, PluginCalls};

use crate::log_sink;
use crate::record::{Failure, Journal, PluginCall};

/// What a stubbed plugin answers: a closure of the payload.
pub type StubFn = Arc<dyn Fn(&Value) -> Result<Value, Failure> + Send + Sync>;

/// The most request ids of event-handler calls tracked at once (their chain positions).
const MAX_ORIGINS: usize = 10_000;

pub(crate) struct KitPlugins {
    pub(crate) name: String,
    pub(crate) generation: u64,
    /// `resources.timeout_ms` of the manifest (0: none): the deadline the plugin sees.
    pub(crate) timeout_ms: u64,
    /// `resources.concurrency`: its call slots, for the host's re-entrancy rule.
    concurrency: u32,
    /// Calls of the plugin under test running now.
    in_flight: AtomicU32,
    pub(crate) plugin: RwLock<Option<Arc<PluginBox>>>,
    /// (plugin, action) -> stub; action `*` answers every action of that plugin.
    pub(crate) stubs: BTreeMap<(String, String), StubFn>,
    pub(crate) hooks: HookManager,
    pub(crate) journal: Arc<Journal>,
    origins: Mutex<BTreeMap<String, CallOrigin>>,
    next_id: AtomicU64,
    /// Itself, for the handlers it registers (weak, as the registry's are).
    me: Weak<KitPlugins>,
}

impl KitPlugins {
    pub(crate) fn new(
        name: &str,
        timeout_ms: u64,
        concurrency: u32,
        stubs: BTreeMap<(String, String), StubFn>,
        hooks: HookManager,
        journal: Arc<Journal>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| KitPlugins {
            name: name.to_string(),
            generation: 1,
            timeout_ms,
            concurrency,
            in_flight: AtomicU32::new(0),
            plugin: RwLock::new(None),
            stubs,
            hooks,
            journal,
            origins: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            me: me.clone(),
        })
    }

    /// A request id for a call the kit makes.
    pub(crate) fn request_id(&self, kind: &str) -> String {
        format!("{kind}-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Calls the plugin under test on this thread, as a trusted worker would: with the
    /// call's deadline set, and the event-chain position recorded for emits it makes.
    pub(crate) fn call_own(&self, input: &CallInput) -> Result<Vec<u8>, CallFailure> {
        let Some(plugin) = self.plugin.read().clone() else {
            return Err(CallFailure::Unavailable {
                name: self.name.clone(),
                state: "stopped".into(),
                detail: None,
            });
        };
        // The registry's rule: a handler's call into a plugin that waits on the same
        // event chain, with every call slot taken, would wait for itself.
        if let Some(origin) = &input.origin {
            if origin.chain.contains(&self.name) && self.in_flight.load(Ordering::SeqCst) >= self.concurrency
            {
                return Err(CallFailure::Reentrant {
                    name: self.name.clone(),
                    concurrency: self.concurrency,
                });
            }
        }
        struct InFlight<'a>(&'a AtomicU32);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight(&self.in_flight);
        let key = input.origin.as_ref().map(|origin| {
            let mut chain = origin.chain.clone();
            chain.push(self.name.clone());
            let mut origins = self.origins.lock();
            if origins.len() >= MAX_ORIGINS {
                origins.pop_first();
            }
            origins.insert(input.request_id.clone(), CallOrigin { depth: origin.depth, chain });
            input.request_id.clone()
        });
        let deadline = if self.timeout_ms == 0 {
            0
        } else {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
            u64::try_from(now.as_millis()).unwrap_or(u64::MAX).saturating_add(self.timeout_ms)
        };
        let request = CallRequest {
            action: RStr::from_str(&input.action),
            payload: RSlice::from_slice(&input.payload),
            meta: CallMeta {
                caller: RStr::from_str(&input.caller),
                request_id: RStr::from_str(&input.request_id),
                deadline_unix_ms: deadline,
            },
        };
        let result =
            log_sink::with_journal(&self.journal, || xcore_deadline::with(deadline, || plugin.call(request)));
        if let Some(key) = key {
            self.origins.lock().remove(&key);
        }
        match result {
            RResult::ROk(bytes) => Ok(bytes.into_vec()),
            RResult::RErr(e) => Err(CallFailure::Plugin {
                code: e.code.into_string(),
                message: e.message.into_string(),
                status: e.status,
            }),
        }
    }

    /// What a stub answers, recorded.
    fn call_stub(&self, plugin: &str, input: &CallInput) -> Result<Vec<u8>, CallFailure> {
        let payload: Value = serde_json::from_slice(&input.payload).unwrap_or(Value::Null);
        let stub = self
            .stubs
            .get(&(plugin.to_string(), input.action.clone()))
            .or_else(|| self.stubs.get(&(plugin.to_string(), "*".to_string())));
        let known = self.stubs.keys().any(|(p, _)| p == plugin);
        let result = match stub {
            Some(f) => f(&payload),
            // A plugin of that name with no such action answers as an SDK plugin does.
            None if known => Err(Failure::new(
                xcore_plugin_abi::codes::UNKNOWN_ACTION,
                404,
                format!("unknown action '{}'", input.action),
            )),
            None => {
                let f = CallFailure::UnknownPlugin(plugin.to_string());
                Err(Failure::new(f.code(), f.status(), f.to_string()))
            }
        };
        self.journal.plugin_call(PluginCall {
            plugin: plugin.to_string(),
            action: input.action.clone(),
            payload,
            result: result.clone(),
        });
        match result {
            Ok(v) => Ok(serde_json::to_vec(&v).unwrap_or_default()),
            Err(f) if f.code == "unknown_plugin" && !known => {
                Err(CallFailure::UnknownPlugin(plugin.to_string()))
            }
            Err(f) => Err(CallFailure::Plugin { code: f.code, message: f.message, status: f.status }),
        }
    }

    /// Subscribes an action of the plugin under test with the registry's handler and
    /// options (`xcore_runtime::plugin_calls`): through the call path, caller
    /// `event:<name>`, owner its instance.
    pub(crate) fn subscribe_action(&self, sub: &ActionSubscription) -> Result<HandlerId, HookError> {
        self.hooks.register(
            &sub.pattern,
            sub.options(),
            event_handler(self.me.clone(), &sub.plugin, &sub.action),
        )
    }
}

impl PluginCalls for KitPlugins {
    fn call_plugin(
        self: Arc<Self>,
        plugin: String,
        input: CallInput,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallFailure>> {
        Box::pin(async move {
            // Off the async worker, as a trusted instance runs on threads of its own: the
            // plugin may block on the runtime again (an emit, a call).
            let name = plugin.clone();
            tokio::task::spawn_blocking(move || {
                if plugin == self.name {
                    self.call_own(&input)
                } else {
                    self.call_stub(&plugin, &input)
                }
            })
            .await
            .unwrap_or_else(|e| {
                Err(CallFailure::Plugin {
                    code: xcore_plugin_abi::codes::INTERNAL.into(),
                    message: format!("the call into '{name}' panicked in the test kit: {e}"),
                    status: 500,
                })
            })
        })
    }

    fn call_origin(&self, request_id: &str) -> Option<CallOrigin> {
        if request_id.is_empty() {
            return None;
        }
        self.origins.lock().get(request_id).cloned()
    }

    fn next_internal_request_id(&self, kind: &str) -> String {
        self.request_id(kind)
    }

    fn subscribe(self: Arc<Self>, sub: ActionSubscription) -> Result<HandlerId, HookError> {
        self.subscribe_action(&sub)
    }
}
