//! One plugin instance on persistent worker threads.
//!
//! A call is handed to a worker over a channel and awaited with a deadline. A thread per
//! call would cost 20-40 µs; a persistent thread costs a channel hop (about 5 µs).
//! A call past its deadline cannot be stopped (the thread is inside foreign code): the
//! caller gets `timeout`, the thread is *abandoned* (counted until it comes back, if it
//! ever does) and the registry replaces the whole instance, because the stuck thread may
//! hold locks the plugin's other calls need.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RSlice, RStr, RString};
use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;
use xcore_plugin_api::ffi::{CallMeta, CallRequest, HostBox, InitArgs, PluginBox};

use super::loader::LoadedLibrary;
use crate::runtime::call::CallInput;
use crate::runtime::host_services::HostServices;
use crate::runtime::instance::{InstanceError, PluginErrorReply, PluginOutcome};

/// How long a caller polls for the reply before parking (see `runtime/spin.rs`).
const SPIN_BUDGET: Duration = Duration::from_micros(50);

// Job states: the worker and the waiting caller race to settle a job exactly once, so the
// abandoned-thread gauge is exact (no thread is counted abandoned after it answered).
const PENDING: u8 = 0;
const ANSWERED: u8 = 1;
const ABANDONED: u8 = 2;

struct Job {
    input: CallInput,
    deadline_unix_ms: u64,
    state: Arc<AtomicU8>,
    reply: oneshot::Sender<PluginOutcome>,
}

/// Counters shared by every instance of one plugin, so they survive restarts.
#[derive(Debug, Default)]
pub struct InstanceGauges {
    /// Threads stuck in a call whose caller gave up.
    pub abandoned_threads: AtomicU64,
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
        // Bounded: a flood of calls queues here instead of growing memory without limit;
        // callers past the bound wait for room (and still honour their deadline).
        let (tx, rx) = crossbeam_channel::bounded::<Job>(1024);
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
        })
    }

    /// Runs one call, waiting at most `timeout` in all (queueing included; `None`: no
    /// deadline). [`InstanceError::DeadlinePassed`] means the thread running the call has
    /// been abandoned and this instance must be replaced; [`InstanceError::Overloaded`]
    /// means the call never started because the queue stayed full.
    pub async fn call(
        &self,
        input: CallInput,
        timeout: Option<Duration>,
    ) -> Result<PluginOutcome, InstanceError> {
        // A day stands in for "no deadline" on the host side; the plugin sees 0.
        let wait = timeout.unwrap_or(Duration::from_secs(86_400));
        let started = tokio::time::Instant::now();
        let (reply_tx, mut reply_rx) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(PENDING));
        let deadline_unix_ms = timeout.map(|t| unix_ms(SystemTime::now() + t)).unwrap_or(0);
        let job = Job { input, deadline_unix_ms, state: state.clone(), reply: reply_tx };
        if let Err(crossbeam_channel::TrySendError::Full(job)) = self.tx.try_send(job) {
            // Queue full: wait for room on a blocking thread so the async worker is never
            // blocked. Disconnected cannot happen while `self` lives.
            let tx = self.tx.clone();
            let sent = tokio::task::spawn_blocking(move || tx.send_timeout(job, wait).is_ok()).await;
            if !matches!(sent, Ok(true)) {
                return Err(InstanceError::Overloaded);
            }
        }
        // Most calls answer within microseconds: poll briefly before parking, because
        // waking a parked runtime thread costs more than the call itself.
        if let Some(outcome) = crate::runtime::spin::poll_briefly(&mut reply_rx, SPIN_BUDGET) {
            return Ok(outcome);
        }
        let remaining = wait.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, &mut reply_rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            // The worker dropped the job without answering: only when its thread died.
            Ok(Err(_)) => Err(InstanceError::DeadlinePassed),
            Err(_) => {
                if state.compare_exchange(PENDING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                    self.gauges.abandoned_threads.fetch_add(1, Ordering::SeqCst);
                    log::warn!(target: "xcore::runtime", "plugin '{}': a worker thread is stuck past its deadline and is abandoned", self.name);
                    Err(InstanceError::DeadlinePassed)
                } else {
                    // The worker answered at the very deadline: take the reply.
                    reply_rx.await.map_err(|_| InstanceError::DeadlinePassed)
                }
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
        crate::logging::set_thread_plugin(&self.name);
        // `recv` fails once every sender is gone (the instance was retired) and the
        // queue is empty: queued calls are drained before the thread exits.
        while let Ok(job) = self.rx.recv() {
            let request = CallRequest {
                action: RStr::from_str(&job.input.action),
                payload: RSlice::from_slice(&job.input.payload),
                meta: CallMeta {
                    caller: RStr::from_str(&job.input.caller),
                    request_id: RStr::from_str(&job.input.request_id),
                    deadline_unix_ms: job.deadline_unix_ms,
                },
            };
            // The plugin's host calls come back on this thread: they see the deadline.
            let outcome =
                match super::super::deadline::with(job.deadline_unix_ms, || self.plugin.call(request)) {
                    RResult::ROk(bytes) => Ok(bytes.into_vec()),
                    RResult::RErr(e) => Err(PluginErrorReply {
                        code: e.code.into_string(),
                        message: e.message.into_string(),
                        status: e.status,
                    }),
                };
            if job.state.compare_exchange(PENDING, ANSWERED, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
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
