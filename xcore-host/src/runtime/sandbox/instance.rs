//! The host side of a sandboxed plugin: one worker process, its protocol socket, and
//! the threads that watch it.
//!
//! - The reader thread owns the socket's read half and the `Child`: it routes replies to
//!   waiting callers by request id, serves log lines and host-service requests with the
//!   same code as the trusted tier, and on EOF reaps the process, fails the calls in
//!   flight with the exit reason, and reports the death at once (not at the next call).
//! - The health thread pings at the manifest's interval and kills a worker that does not
//!   answer in time.
//! - A call past its deadline kills the worker (SIGTERM, then SIGKILL after a grace):
//!   the worker is never reused, so no later call can see the late reply.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use abi_stable::std_types::RStr;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use xcore_plugin_api::ffi::HostObject;

use super::protocol::{self, FromWorker, ToWorker, WireResult, PROTOCOL_VERSION};
use super::worker::WorkerSpec;
use super::{confine, os, spawner};
use crate::manifest::Manifest;
use crate::runtime::call::CallInput;
use crate::runtime::host_services::HostServices;
use crate::runtime::instance::{InstanceError, PluginErrorReply, PluginOutcome};

/// How long a caller polls for the worker's reply before parking: a round trip is two
/// thread wake-ups (the worker's reader, the host's reader), longer than a trusted call.
const SPIN_BUDGET: Duration = Duration::from_micros(100);

/// Host-wide settings of the sandboxed tier.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// The `xcore` binary, re-executed as the worker.
    pub worker_exe: PathBuf,
    /// Where library copies and private temporary folders go.
    pub runtime_dir: PathBuf,
    /// Largest frame in bytes.
    pub max_frame: usize,
    /// How long a worker may take to say hello.
    pub startup_timeout: Duration,
    /// SIGTERM to SIGKILL.
    pub kill_grace: Duration,
    /// How long a retired worker may take to finish its queued calls.
    pub drain_timeout: Duration,
    /// The user and group workers run as (`sandbox.user`); `None`: the host's.
    pub user: Option<(u32, u32)>,
}

/// Called once when the worker process ends, with the reason (signal name or exit
/// code) and whether it ended on its own (crash, kill after a timeout, failed health
/// check: `true`) rather than because the host retired it (`false`).
pub type DeathHook = Box<dyn Fn(String, bool) + Send + Sync>;

type Pending = Mutex<HashMap<u64, oneshot::Sender<Result<WireResult, String>>>>;

struct Shared {
    name: String,
    pid: u32,
    writer: Mutex<UnixStream>,
    pending: Pending,
    alive: AtomicBool,
    retired: AtomicBool,
    kill_reason: Mutex<Option<String>>,
    exit_reason: Mutex<Option<String>>,
    last_pong: AtomicU64,
    max_frame: usize,
    kill_grace: Duration,
}

impl Shared {
    fn send(&self, msg: &ToWorker) -> Result<(), protocol::FrameError> {
        let frame = protocol::encode(msg, self.max_frame)?;
        protocol::write_frame(&mut *self.writer.lock(), &frame)
    }

    /// SIGTERM the worker's process group now, SIGKILL it after the grace.
    fn kill(self: &Arc<Self>, reason: String) {
        {
            let mut r = self.kill_reason.lock();
            if r.is_none() {
                *r = Some(reason);
            }
        }
        os::kill_group(self.pid, libc::SIGTERM);
        let shared = self.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + shared.kill_grace;
            while shared.alive.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            if shared.alive.load(Ordering::SeqCst) {
                os::kill_group(shared.pid, libc::SIGKILL);
            }
        });
    }
}

/// A running worker process.
pub struct SandboxInstance {
    shared: Arc<Shared>,
    /// Also read by the CPU watchdog: a change means a call started.
    next_id: Arc<AtomicU64>,
    /// At most `concurrency` calls in the worker at once, so one of its threads is
    /// always free to answer pings and host-service replies.
    permits: tokio::sync::Semaphore,
    tmp_dir: PathBuf,
    drain_timeout: Duration,
    /// Which instance of the plugin this is.
    pub generation: u64,
    /// The contract version the library was compiled against.
    pub api_version: String,
    /// `landlock` or `none`.
    pub fs_isolation: String,
    /// Whether sockets are denied by seccomp.
    pub seccomp: bool,
    /// How long spawn + load + handshake took.
    pub start_time: Duration,
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with code {c}"),
            (_, Some(sig)) => format!("killed by {}", os::signal_name(sig)),
            _ => format!("ended ({s})"),
        },
        Err(e) => format!("could not be reaped: {e}"),
    }
}

fn forward_output(name: String, stream: impl Read + Send + 'static, what: &'static str) {
    let _ = std::thread::Builder::new().name(format!("sandbox-{what}-{name}")).spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            crate::logging::with_call_context(&name, "", || {
                if what == "stderr" {
                    log::warn!(target: &name, "[{what}] {line}");
                } else {
                    log::info!(target: &name, "[{what}] {line}");
                }
            });
        }
    });
}

impl SandboxInstance {
    /// Spawns a worker for `manifest`, waits for its hello, and starts watching it.
    /// Blocking: call it from a blocking context.
    pub fn start(
        manifest: &Manifest,
        services: HostServices,
        opts: &SandboxOptions,
        generation: u64,
        library_sha256: Option<String>,
        on_death: DeathHook,
    ) -> Result<SandboxInstance, String> {
        let started = Instant::now();
        let name = manifest.name.clone();
        let data_dir = manifest.dir.join("data");
        let tmp_dir = confine::private_tmp(&opts.runtime_dir, &name, generation);
        for d in [&data_dir, &tmp_dir] {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("plugin '{name}': creating {}: {e}", d.display()))?;
        }
        let abs = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let network = manifest.permissions.iter().any(|p| p == "network");
        let processes = manifest.permissions.iter().any(|p| p == "process");
        let spec = WorkerSpec {
            name: name.clone(),
            library: abs(&manifest.library_path()),
            library_sha256,
            plugin_dir: abs(&manifest.dir),
            data_dir: abs(&data_dir),
            tmp_dir: abs(&tmp_dir),
            runtime_dir: abs(&opts.runtime_dir),
            config: manifest.config.clone(),
            concurrency: manifest.resources.concurrency,
            max_memory_mb: manifest.resources.max_memory_mb,
            cpu_time_ms: manifest.resources.cpu_time_ms,
            max_open_files: manifest.resources.max_open_files,
            network,
            processes,
            user: opts.user,
            max_frame: opts.max_frame,
        };
        let spec_json = serde_json::to_string(&spec).map_err(|e| e.to_string())?;

        // One socket pair per direction, so that each reading end can be non-blocking
        // (see `os::SpinReader`) while the writing ends stay blocking.
        let pair = || UnixStream::pair().map_err(|e| format!("plugin '{name}': socket pair: {e}"));
        let (host_requests, worker_requests) = pair()?;
        let (worker_replies, host_replies) = pair()?;
        let mut cmd = Command::new(&opts.worker_exe);
        cmd.arg("__sandbox-worker")
            .arg("--spec")
            .arg(&spec_json)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &spec.data_dir)
            .env("TMPDIR", &spec.tmp_dir)
            .env("LANG", std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into()))
            // One malloc arena: glibc reserves 64 MiB of address space per arena, which
            // RLIMIT_AS would count.
            .env("MALLOC_ARENA_MAX", "1")
            .envs(&manifest.env)
            .current_dir(&spec.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        os::configure_child(&mut cmd, worker_requests.as_raw_fd(), worker_replies.as_raw_fd());
        let mut child =
            spawner::spawn(cmd).map_err(|e| format!("plugin '{name}': spawning the worker: {e}"))?;
        // Only the worker holds its ends now: its death closes them, which the reader sees.
        drop((worker_requests, worker_replies));
        let pid = child.id();
        if let Some(out) = child.stdout.take() {
            forward_output(name.clone(), out, "stdout");
        }
        if let Some(err) = child.stderr.take() {
            forward_output(name.clone(), err, "stderr");
        }

        let shared = Arc::new(Shared {
            name: name.clone(),
            pid,
            writer: Mutex::new(host_requests),
            pending: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
            retired: AtomicBool::new(false),
            kill_reason: Mutex::new(None),
            exit_reason: Mutex::new(None),
            last_pong: AtomicU64::new(0),
            max_frame: opts.max_frame,
            kill_grace: opts.kill_grace,
        });
        // The reader starts before the handshake: the plugin's constructor may already
        // log or call host services, and those must be served for it to finish.
        let (hello_tx, hello_rx) = crossbeam_channel::bounded(1);
        let reader_shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("sandbox-reader-{name}"))
            .spawn(move || read_loop(reader_shared, host_replies, child, services, hello_tx, on_death))
            .map_err(|e| format!("plugin '{name}': reader thread: {e}"))?;
        let failed_start = |why: String| -> String {
            // Not a crash of a running instance: nobody is to be told but the caller.
            shared.retired.store(true, Ordering::SeqCst);
            os::kill_group(pid, libc::SIGKILL);
            let until = Instant::now() + Duration::from_secs(5);
            while shared.alive.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = std::fs::remove_dir_all(&tmp_dir);
            why
        };
        let (api_version, fs_isolation, seccomp) = match hello_rx.recv_timeout(opts.startup_timeout) {
            Ok(Handshake::Hello { protocol, plugin, api_version, fs_isolation, seccomp }) => {
                if protocol != PROTOCOL_VERSION || plugin != name {
                    return Err(failed_start(format!(
                        "plugin '{name}': worker speaks protocol {protocol} for '{plugin}', \
                         expected protocol {PROTOCOL_VERSION} for '{name}'"
                    )));
                }
                (api_version, fs_isolation, seccomp)
            }
            Ok(Handshake::Failed(message)) => return Err(failed_start(message)),
            Err(_) => {
                return Err(failed_start(format!(
                    "plugin '{name}': the worker did not say hello within {} ms",
                    opts.startup_timeout.as_millis()
                )))
            }
        };

        let hc = manifest.health_check.clone();
        if hc.interval_ms > 0 {
            let shared = shared.clone();
            let _ = std::thread::Builder::new().name(format!("sandbox-health-{name}")).spawn(move || {
                health_loop(
                    shared,
                    Duration::from_millis(hc.interval_ms),
                    Duration::from_millis(hc.timeout_ms),
                )
            });
        }

        // The per-call CPU budget, enforced from here, where the plugin cannot lift it.
        let next_id = Arc::new(AtomicU64::new(1));
        if spec.cpu_time_ms > 0 {
            let (shared, calls) = (shared.clone(), next_id.clone());
            let _ = std::thread::Builder::new().name(format!("sandbox-cpu-{name}")).spawn(move || {
                let running =
                    || shared.alive.load(Ordering::SeqCst) && !shared.retired.load(Ordering::SeqCst);
                confine::watch_cpu(pid, spec.cpu_time_ms, calls, running, |why| shared.kill(why));
            });
        }

        Ok(SandboxInstance {
            shared,
            next_id,
            permits: tokio::sync::Semaphore::new(manifest.resources.concurrency.max(1) as usize),
            tmp_dir,
            drain_timeout: opts.drain_timeout,
            generation,
            api_version,
            fs_isolation,
            seccomp,
            start_time: started.elapsed(),
        })
    }

    /// Runs one call in the worker: waits at most `queue_timeout` for a call slot, then
    /// at most `timeout` from when it got one (the deadline the worker sees starts then
    /// too).
    pub async fn call(
        &self,
        input: CallInput,
        timeout: Option<Duration>,
        queue_timeout: Duration,
    ) -> Result<PluginOutcome, InstanceError> {
        let shared = &self.shared;
        if !shared.alive.load(Ordering::SeqCst) {
            return Err(InstanceError::Crashed(self.exit_reason()));
        }
        let total = timeout.unwrap_or(Duration::from_secs(86_400));
        // A free slot is taken without arming a timer.
        let _permit = match self.permits.try_acquire() {
            Ok(p) => p,
            Err(_) => match tokio::time::timeout(queue_timeout, self.permits.acquire()).await {
                Ok(Ok(p)) => p,
                // Nothing was sent: the worker never sees this call.
                _ => {
                    return Err(InstanceError::Overloaded(format!(
                        "no call slot (resources.concurrency) became free within {} ms",
                        queue_timeout.as_millis()
                    )))
                }
            },
        };
        let wait = total;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let action = input.action.clone();
        let deadline_unix_ms = timeout
            .map(|t| {
                (SystemTime::now() + t).duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
            })
            .unwrap_or(0);
        let msg = ToWorker::Call {
            id,
            action: input.action,
            payload: input.payload,
            caller: input.caller,
            request_id: input.request_id,
            deadline_unix_ms,
        };
        let frame = match protocol::encode(&msg, shared.max_frame) {
            Ok(f) => f,
            Err(protocol::FrameError::TooLarge { size, limit }) => {
                return Err(InstanceError::TooLarge(format!(
                    "the call is {size} bytes; the sandbox frame limit is {limit} bytes"
                )))
            }
            Err(e) => return Err(InstanceError::Crashed(e.to_string())),
        };
        drop(msg);
        let (tx, rx) = oneshot::channel();
        shared.pending.lock().insert(id, tx);
        // Large frames are written off the async thread; small ones cost less than a hop.
        let written = if frame.len() > 256 * 1024 {
            let s = shared.clone();
            tokio::task::spawn_blocking(move || protocol::write_frame(&mut *s.writer.lock(), &frame))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
        } else {
            protocol::write_frame(&mut *shared.writer.lock(), &frame).map_err(|e| e.to_string())
        };
        if let Err(e) = written {
            shared.pending.lock().remove(&id);
            return Err(InstanceError::Crashed(format!("writing to the worker failed: {e}")));
        }
        let mut rx = rx;
        let reply = match crate::runtime::spin::poll_briefly(&mut rx, SPIN_BUDGET) {
            Some(r) => Ok(Ok(r)),
            None => tokio::time::timeout(wait, rx).await,
        };
        match reply {
            Ok(Ok(Ok(WireResult::Ok(bytes)))) => Ok(Ok(bytes)),
            Ok(Ok(Ok(WireResult::Err { code, message, status }))) => {
                Ok(Err(PluginErrorReply { code, message, status }))
            }
            Ok(Ok(Err(reason))) => Err(InstanceError::Crashed(reason)),
            Ok(Err(_)) => Err(InstanceError::Crashed(self.exit_reason())),
            Err(_) => {
                shared.pending.lock().remove(&id);
                shared.kill(format!(
                    "killed: action '{action}' ran past its deadline of {} ms",
                    total.as_millis()
                ));
                Err(InstanceError::DeadlinePassed)
            }
        }
    }

    /// The worker's pid.
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// Whether the process is still running.
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// Resident memory of the worker, if it runs.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.is_alive().then(|| os::proc_status_bytes(&self.shared.pid.to_string(), "VmRSS")).flatten()
    }

    fn exit_reason(&self) -> String {
        self.shared.exit_reason.lock().clone().unwrap_or_else(|| "the worker is gone".into())
    }

    /// A probe that says when the process has exited, valid after the instance is
    /// dropped.
    pub fn finished_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let s = self.shared.clone();
        move || !s.alive.load(Ordering::SeqCst)
    }
}

impl Drop for SandboxInstance {
    /// Retires the worker: it finishes the calls it has, shuts the plugin down and
    /// exits; past the drain timeout it is killed. A retired worker's exit is not a
    /// crash and is not reported.
    fn drop(&mut self) {
        let shared = self.shared.clone();
        shared.retired.store(true, Ordering::SeqCst);
        let _ = shared.send(&ToWorker::Shutdown);
        let (drain, tmp) = (self.drain_timeout, self.tmp_dir.clone());
        let _ =
            std::thread::Builder::new().name(format!("sandbox-retire-{}", shared.name)).spawn(move || {
                let until = Instant::now() + drain;
                while shared.alive.load(Ordering::SeqCst) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if shared.alive.load(Ordering::SeqCst) {
                    shared.kill("killed: did not exit within the drain timeout".into());
                }
                let _ = std::fs::remove_dir_all(&tmp);
            });
    }
}

/// The outcome of a worker's start, from the reader to `start`.
enum Handshake {
    Hello { protocol: u32, plugin: String, api_version: String, fs_isolation: String, seccomp: bool },
    Failed(String),
}

fn read_loop(
    shared: Arc<Shared>,
    sock: UnixStream,
    mut child: std::process::Child,
    services: HostServices,
    hello: crossbeam_channel::Sender<Handshake>,
    on_death: DeathHook,
) {
    // Buffered: one read(2) usually brings a frame's length and body together. This
    // reader blocks: spinning here as well as in the worker and the caller starves the
    // worker on two cores (docs/benchmarks.md).
    let mut sock = std::io::BufReader::with_capacity(64 * 1024, sock);
    let mut greeted = false;
    let end = loop {
        match protocol::read::<FromWorker>(&mut sock, shared.max_frame) {
            Ok(FromWorker::Hello { protocol, plugin, api_version, fs_isolation, seccomp }) if !greeted => {
                greeted = true;
                let _ =
                    hello.try_send(Handshake::Hello { protocol, plugin, api_version, fs_isolation, seccomp });
            }
            Ok(FromWorker::InitFailed { message }) if !greeted => {
                greeted = true;
                let _ = hello.try_send(Handshake::Failed(message));
            }
            Ok(FromWorker::Reply { id, result }) => {
                if let Some(tx) = shared.pending.lock().remove(&id) {
                    let _ = tx.send(Ok(result));
                }
            }
            Ok(FromWorker::Pong { id }) => {
                shared.last_pong.fetch_max(id, Ordering::SeqCst);
            }
            Ok(FromWorker::Log { level, request_id, message }) => {
                services.log(level, RStr::from_str(&request_id), RStr::from_str(&message));
            }
            Ok(FromWorker::HostCall { id, service, request_id, deadline_unix_ms, payload }) => {
                // Served on a thread of its own: a service may wait (an emit whose
                // handlers call this very plugin), and this thread must keep reading.
                let (services, shared) = (services.clone(), shared.clone());
                let _ = std::thread::Builder::new().name("sandbox-host-call".into()).spawn(move || {
                    let served = crate::runtime::deadline::with(deadline_unix_ms, || {
                        services.serve(&service, &request_id, &payload)
                    });
                    let result = match served {
                        Ok(v) => WireResult::Ok(v),
                        Err(e) => WireResult::Err {
                            code: e.code.into_string(),
                            message: e.message.into_string(),
                            status: e.status,
                        },
                    };
                    let _ = shared.send(&ToWorker::HostReply { id, result });
                });
            }
            Ok(other) => {
                break format!("protocol violation: unexpected {other:?}");
            }
            Err(protocol::FrameError::Closed) => break String::new(),
            Err(e) => break format!("protocol error: {e}"),
        }
    };
    if !end.is_empty() {
        // A worker that breaks the protocol cannot be trusted with another call.
        shared.kill(end);
    }
    let status = child.wait();
    shared.alive.store(false, Ordering::SeqCst);
    let reason = shared.kill_reason.lock().take().unwrap_or_else(|| describe_exit(status));
    *shared.exit_reason.lock() = Some(reason.clone());
    if !greeted {
        // Died while starting: that is a failed load, told to `start`, not a crash.
        shared.retired.store(true, Ordering::SeqCst);
        let _ = hello.try_send(Handshake::Failed(format!(
            "plugin '{}': the worker {reason} before it was ready",
            shared.name
        )));
    }
    let unexpected = !shared.retired.load(Ordering::SeqCst);
    if unexpected {
        log::warn!(target: "xcore::sandbox", "plugin '{}': worker {} {reason}", shared.name, shared.pid);
    }
    // Report first, so that once a caller learns of the crash the plugin is already
    // out of the ready state.
    on_death(reason.clone(), unexpected);
    let pending: Vec<_> = shared.pending.lock().drain().collect();
    for (_, tx) in pending {
        let _ = tx.send(Err(reason.clone()));
    }
}

fn health_loop(shared: Arc<Shared>, interval: Duration, timeout: Duration) {
    let step = Duration::from_millis(20);
    let running = |s: &Shared| s.alive.load(Ordering::SeqCst) && !s.retired.load(Ordering::SeqCst);
    let mut id = 0u64;
    loop {
        let until = Instant::now() + interval;
        while Instant::now() < until {
            if !running(&shared) {
                return;
            }
            std::thread::sleep(step.min(interval));
        }
        id += 1;
        if shared.send(&ToWorker::Ping { id }).is_err() {
            return;
        }
        let until = Instant::now() + timeout;
        while shared.last_pong.load(Ordering::SeqCst) < id && Instant::now() < until {
            if !running(&shared) {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if shared.last_pong.load(Ordering::SeqCst) < id && running(&shared) {
            shared.kill(format!("killed: health check got no answer within {} ms", timeout.as_millis()));
            return;
        }
    }
}
