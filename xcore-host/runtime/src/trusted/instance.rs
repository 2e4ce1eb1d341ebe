//! One plugin instance on persistent worker threads.
//!
//! A call is handed to a worker over a channel and awaited with a deadline. A thread per
//! call would cost 20-40 µs; a persistent thread costs a channel hop (about 5 µs).
//! A call waits at most its queue timeout for a worker; its own deadline (`timeout_ms`)
//! starts when a worker takes it. A caller that gives up before that marks the job
//! *shed*, and the worker that reaches it drops it without calling the plugin, so a
//! call answered 503 never runs later.
//!
//! A call past its deadline cannot be stopped (the thread is inside foreign code): the
//! caller gets `timeout`, the thread is *abandoned* (counted until it comes back, if it
//! ever does) and the registry replaces the whole instance, because the stuck thread may
//! hold locks the plugin's other calls need.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;
use xcore_plugin_abi::abi_stable::sabi_trait::TD_Opaque;
use xcore_plugin_abi::abi_stable::std_types::{RResult, RSlice, RStr, RString};
use xcore_plugin_abi::describe::PluginDescription;
use xcore_plugin_abi::ffi::{CallMeta, CallRequest, HostBox, InitArgs, PluginBox};

use super::loader::LoadedLibrary;
use crate::call::CallInput;
use crate::host_services::HostServices;
use crate::outcome::{InstanceError, PluginErrorReply, PluginOutcome};

/// How long a caller polls for the reply before parking (see `runtime/spin.rs`).
const SPIN_BUDGET: Duration = Duration::from_micros(50);

/// Jobs the queue holds; past it a call is answered `overloaded` at once.
pub const QUEUE_CAPACITY: usize = 1024;

// Job states. The worker and the waiting caller race on them so that each job is settled
// exactly once: QUEUED -> SHED (the caller gave up first; the worker drops the job) or
// QUEUED -> STARTED (a worker took it) -> ANSWERED or ABANDONED (the caller's deadline
// passed first). So a shed call never runs, and the abandoned-thread gauge is exact:
// only threads inside a call they started, and never one that already answered.
const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const ANSWERED: u8 = 2;
const ABANDONED: u8 = 3;
const SHED: u8 = 4;

/// The instant [`clock_us`] counts from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since [`epoch`], plus one (0 means "not started"): a time both sides of
/// a job can share through an atomic.
fn clock_us() -> u64 {
    epoch().elapsed().as_micros() as u64 + 1
}

fn from_clock_us(us: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(epoch() + Duration::from_micros(us.saturating_sub(1)))
}

#[derive(Default)]
struct JobState {
    state: AtomicU8,
    /// [`clock_us`] when a worker took the job; 0 before.
    started_us: AtomicU64,
}

impl JobState {
    fn get(&self) -> u8 {
        self.state.load(Ordering::SeqCst)
    }

    fn settle(&self, from: u8, to: u8) -> bool {
        self.state.compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// When a worker took the job, if one did.
    fn started(&self) -> Option<tokio::time::Instant> {
        if self.get() == QUEUED {
            return None;
        }
        match self.started_us.load(Ordering::SeqCst) {
            0 => None,
            us => Some(from_clock_us(us)),
        }
    }
}

/// Marks the job shed if the caller goes away (its future is dropped: a client that
/// disconnected, a handler timeout) before a worker took it.
struct ShedOnDrop(Arc<JobState>);

impl Drop for ShedOnDrop {
    fn drop(&mut self) {
        self.0.settle(QUEUED, SHED);
    }
}

struct Job {
    input: CallInput,
    /// The call's own deadline, counted from when a worker takes it.
    timeout: Option<Duration>,
    state: Arc<JobState>,
    reply: oneshot::Sender<PluginOutcome>,
}

/// Counters shared by every instance of one plugin, so they survive restarts.
#[derive(Debug, Default)]
pub struct InstanceGauges {
    /// Threads stuck inside a call they started, past its deadline.
    pub abandoned_threads: AtomicU64,
    /// Calls a worker dropped without running them because their caller had given up.
    pub shed_calls: AtomicU64,
    /// Mirrors `shed_calls` in the plugin's metrics, when set.
    pub shed_metric: Option<prometheus::IntCounter>,
}

impl InstanceGauges {
    /// Counts one shed call.
    pub fn count_shed(&self) {
        self.shed_calls.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.shed_metric {
            m.inc();
        }
    }
}

/// A running in-process plugin instance.
pub struct TrustedInstance {
    name: String,
    tx: Sender<Job>,
    live_workers: Arc<AtomicUsize>,
    gauges: Arc<InstanceGauges>,
    /// Which instance of the plugin this is (1 for the first load, +1 per restart/reload).
    pub generation: u64,
    /// The contract version the library was compiled against.
    pub api_version: &'static str,
    /// What the plugin says about itself (its action table), when it says anything.
    pub description: Option<Arc<PluginDescription>>,
}

/// Why an instance could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InstantiateError {
    /// The plugin's constructor returned an error (or panicked).
    #[error("plugin '{name}' failed to initialise: {code}: {message}")]
    Init {
        /// Plugin name.
        name: String,
        /// Error code.
        code: String,
        /// Message.
        message: String,
    },
    /// The plugin's self-description is malformed (asked right after its constructor).
    #[error("{0}")]
    Description(String),
    /// A worker thread could not be spawned.
    #[error("plugin '{name}': cannot spawn worker thread: {reason}")]
    Spawn {
        /// Plugin name.
        name: String,
        /// OS error.
        reason: String,
    },
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl TrustedInstance {
    /// Builds the plugin object from `library` and starts `concurrency` worker threads.
    pub fn start(
        name: &str,
        host: HostServices,
        config: &serde_json::Value,
        library: LoadedLibrary,
        concurrency: u32,
        generation: u64,
        gauges: Arc<InstanceGauges>,
    ) -> Result<TrustedInstance, InstantiateError> {
        let host = HostBox::from_value(host, TD_Opaque);
        let args = InitArgs {
            plugin_name: RString::from(name),
            config_json: RString::from(config.to_string()),
            host,
        };
        let plugin = match library.module.instantiate()(args) {
            RResult::ROk(p) => Arc::new(p),
            RResult::RErr(e) => {
                return Err(InstantiateError::Init {
                    name: name.to_string(),
                    code: e.code.into_string(),
                    message: e.message.into_string(),
                })
            }
        };
        let description =
            super::loader::parse_description(name, super::loader::ask_description(&plugin).as_deref())
                .map_err(|e| InstantiateError::Description(e.to_string()))?
                .map(Arc::new);
        // Bounded: a flood of calls queues here instead of growing memory without limit;
        // a call that finds it full is answered `overloaded` at once.
        let (tx, rx) = crossbeam_channel::bounded::<Job>(QUEUE_CAPACITY);
        let live_workers = Arc::new(AtomicUsize::new(0));
        for i in 0..concurrency.max(1) {
            let worker = Worker {
                name: name.to_string(),
                plugin: plugin.clone(),
                rx: rx.clone(),
                live: live_workers.clone(),
                gauges: gauges.clone(),
            };
            live_workers.fetch_add(1, Ordering::SeqCst);
            let spawned = std::thread::Builder::new()
                .name(format!("plugin-{name}-{generation}-{i}"))
                .spawn(move || worker.run());
            if let Err(e) = spawned {
                live_workers.fetch_sub(1, Ordering::SeqCst);
                return Err(InstantiateError::Spawn { name: name.to_string(), reason: e.to_string() });
            }
        }
        Ok(TrustedInstance {
            name: name.to_string(),
            tx,
            live_workers,
            gauges,
            generation,
            api_version: library.api_version,
            description,
        })
    }

    /// Runs one call: it waits at most `queue_timeout` for a worker to take it, then at
    /// most `timeout` (`None`: no deadline) from when the worker started it.
    /// [`InstanceError::DeadlinePassed`] means the thread running the call has been
    /// abandoned and this instance must be replaced; [`InstanceError::Overloaded`] means
    /// the call never started (and never will: the worker that reaches it drops it).
    pub async fn call(
        &self,
        input: CallInput,
        timeout: Option<Duration>,
        queue_timeout: Duration,
    ) -> Result<PluginOutcome, InstanceError> {
        // A day stands in for "no deadline" on the host side; the plugin sees 0.
        let run_limit = timeout.unwrap_or(Duration::from_secs(86_400));
        let queue_deadline = tokio::time::Instant::now() + queue_timeout;
        let (reply_tx, mut reply_rx) = oneshot::channel();
        let state = Arc::new(JobState::default());
        let job = Job { input, timeout, state: state.clone(), reply: reply_tx };
        if self.tx.try_send(job).is_err() {
            // Full (disconnected cannot happen while `self` lives): a queue this long
            // would not be served within any sensible queue timeout.
            return Err(InstanceError::Overloaded(format!("its queue of {QUEUE_CAPACITY} calls is full")));
        }
        let _shed_on_drop = ShedOnDrop(state.clone());
        let _in_flight = crate::spin::InFlight::enter();
        // Most calls answer within microseconds: poll briefly before parking (when a core
        // is free for it), because waking a parked runtime thread costs more than the
        // call itself.
        if let Some(outcome) = crate::spin::poll_briefly(&mut reply_rx, SPIN_BUDGET) {
            return Ok(outcome);
        }
        loop {
            // Sleep until the next moment something must be decided: the call's deadline
            // once started; before that the queue deadline, or one run limit from now (a
            // call that starts meanwhile cannot end its run limit earlier than that).
            let wake = match state.started() {
                Some(started) => started + run_limit,
                None => queue_deadline.min(tokio::time::Instant::now() + run_limit),
            };
            match tokio::time::timeout_at(wake, &mut reply_rx).await {
                Ok(Ok(outcome)) => return Ok(outcome),
                // The worker dropped the job without answering: only when its thread died.
                Ok(Err(_)) => return Err(InstanceError::DeadlinePassed),
                Err(_) => {}
            }
            let now = tokio::time::Instant::now();
            match state.get() {
                // (When the exchange fails, a worker took it just now: its own deadline
                // starts, and the loop waits for it.)
                QUEUED if now >= queue_deadline && state.settle(QUEUED, SHED) => {
                    return Err(InstanceError::Overloaded(format!(
                        "no worker (resources.concurrency) took the call within {} ms",
                        queue_timeout.as_millis()
                    )));
                }
                STARTED if state.started().is_some_and(|s| now >= s + run_limit) => {
                    if state.settle(STARTED, ABANDONED) {
                        self.gauges.abandoned_threads.fetch_add(1, Ordering::SeqCst);
                        log::warn!(target: "xcore::runtime", "plugin '{}': a worker thread is stuck past its deadline and is abandoned", self.name);
                        return Err(InstanceError::DeadlinePassed);
                    }
                    // The worker answered at the very deadline: take the reply.
                    return reply_rx.await.map_err(|_| InstanceError::DeadlinePassed);
                }
                ANSWERED => return reply_rx.await.map_err(|_| InstanceError::DeadlinePassed),
                _ => {}
            }
        }
    }

    /// A handle on the number of worker threads still running (stuck ones included),
    /// valid after the instance is dropped.
    pub fn live_workers_handle(&self) -> Arc<AtomicUsize> {
        self.live_workers.clone()
    }
}

struct Worker {
    name: String,
    plugin: Arc<PluginBox>,
    rx: Receiver<Job>,
    live: Arc<AtomicUsize>,
    gauges: Arc<InstanceGauges>,
}

impl Worker {
    fn run(self) {
        crate::log_context::set_thread_plugin(&self.name);
        // `recv` fails once every sender is gone (the instance was retired) and the
        // queue is empty: queued calls are drained before the thread exits.
        while let Ok(job) = self.rx.recv() {
            job.state.started_us.store(clock_us(), Ordering::SeqCst);
            if !job.state.settle(QUEUED, STARTED) {
                // Its caller gave up (503 `overloaded`) or went away: never run it.
                self.gauges.count_shed();
                continue;
            }
            // The call's deadline starts now, for the plugin and its host calls too.
            let deadline_unix_ms = job.timeout.map(|t| unix_ms(SystemTime::now() + t)).unwrap_or(0);
            let request = CallRequest {
                action: RStr::from_str(&job.input.action),
                payload: RSlice::from_slice(&job.input.payload),
                meta: CallMeta {
                    caller: RStr::from_str(&job.input.caller),
                    request_id: RStr::from_str(&job.input.request_id),
                    deadline_unix_ms,
                },
            };
            // The plugin's host calls come back on this thread: they see the deadline.
            let outcome = match xcore_deadline::with(deadline_unix_ms, || self.plugin.call(request)) {
                RResult::ROk(bytes) => Ok(bytes.into_vec()),
                RResult::RErr(e) => Err(PluginErrorReply {
                    code: e.code.into_string(),
                    message: e.message.into_string(),
                    status: e.status,
                }),
            };
            if job.state.settle(STARTED, ANSWERED) {
                let _ = job.reply.send(outcome);
            } else {
                // Our caller gave up long ago; we are back, so no longer abandoned.
                self.gauges.abandoned_threads.fetch_sub(1, Ordering::SeqCst);
            }
        }
        // The last worker out shuts the plugin down.
        if self.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.plugin.shutdown();
        }
    }
}
