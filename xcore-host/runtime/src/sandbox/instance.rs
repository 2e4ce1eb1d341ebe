//! The host side of a sandboxed plugin: one worker process, its protocol sockets, and
//! the threads that watch it. The worker is assumed hostile: it may write anything to
//! its sockets and its output, stop reading, or fork; nothing it does may grow the host
//! without bound or hold a host thread.
//!
//! - The reader thread owns the replies socket's read half: it routes replies to
//!   waiting callers by request id, forwards log lines (capped in length and rate), and
//!   hands host-service requests to a pool bounded per worker
//!   (`sandbox.max_host_calls_in_flight`). A frame it cannot trust kills the worker.
//! - The writer thread owns the requests socket's write half: frames go through a
//!   bounded queue, and a write that makes no progress for `sandbox.write_timeout_ms`
//!   kills the worker. No caller and no health check ever blocks on a write.
//! - The reaper thread waits for the process itself (not for the end of its sockets,
//!   which processes it forked may hold open), kills what is left of its process group,
//!   reaps it, fails the calls in flight with the exit reason, and reports the death at
//!   once (not at the next call).
//! - The health thread pings at the manifest's interval and kills a worker that does not
//!   answer in time.
//! - A call past its deadline kills the worker (SIGTERM, then SIGKILL after a grace):
//!   the worker is never reused, so no later call can see the late reply.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::TrySendError;
use parking_lot::{Condvar, Mutex};
use prometheus::IntCounter;
use tokio::sync::oneshot;
use xcore_plugin_abi::abi_stable::std_types::RStr;
use xcore_plugin_abi::describe::PluginDescription;
use xcore_plugin_abi::ffi::HostObject;

use super::protocol::{self, FromWorker, ToWorker, WireResult, PROTOCOL_VERSION};
use super::worker::WorkerSpec;
use super::{confine, os, spawner};
use crate::call::CallInput;
use crate::host_services::HostServices;
use crate::line_budget::LineBudget;
use crate::load_failure::{LoadFailure, LoadKind};
use crate::outcome::{InstanceError, PluginErrorReply, PluginOutcome};
use xcore_manifest::Manifest;

/// How long a caller polls for the worker's reply before parking: a round trip is two
/// thread wake-ups (the worker's reader, the host's reader), longer than a trusted call.
const SPIN_BUDGET: Duration = Duration::from_micros(100);

/// How long an idle host-call thread waits for work before it ends.
const HOST_CALL_IDLE: Duration = Duration::from_secs(10);

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
    /// What one worker may make the host do.
    pub limits: SandboxLimits,
}

/// What one worker may make the host do (the `sandbox` configuration section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Host-service requests in flight per worker (`sandbox.max_host_calls_in_flight`;
    /// never less than the plugin's `concurrency` + 1, so that a re-entrant emit always
    /// finds a thread).
    pub max_host_calls_in_flight: usize,
    /// Longest line of output forwarded to the log (`sandbox.log_line_max_bytes`).
    pub log_line_max_bytes: usize,
    /// Lines of output forwarded per second, with a burst of as many
    /// (`sandbox.log_lines_per_second`).
    pub log_lines_per_second: u32,
    /// A write that makes no progress for this long kills the worker
    /// (`sandbox.write_timeout_ms`).
    pub write_timeout: Duration,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            max_host_calls_in_flight: 32,
            log_line_max_bytes: 16 << 10,
            log_lines_per_second: 200,
            write_timeout: Duration::from_secs(5),
        }
    }
}

impl From<&super::config::SandboxConfig> for SandboxLimits {
    fn from(c: &super::config::SandboxConfig) -> Self {
        SandboxLimits {
            max_host_calls_in_flight: c.max_host_calls_in_flight,
            log_line_max_bytes: c.log_line_max_bytes,
            log_lines_per_second: c.log_lines_per_second,
            write_timeout: Duration::from_millis(c.write_timeout_ms),
        }
    }
}

/// Called once when the worker process ends, with the reason (signal name or exit
/// code) and whether it ended on its own (crash, kill after a timeout, failed health
/// check: `true`) rather than because the host retired it (`false`).
pub type DeathHook = Box<dyn Fn(String, bool) + Send + Sync>;

type Pending = Mutex<HashMap<u64, oneshot::Sender<Result<WireResult, String>>>>;

/// The counters of what the host refused or dropped from one worker
/// (`xcore_sandbox_limited_total`, `xcore_sandbox_dropped_output_bytes_total`).
#[derive(Clone)]
struct Counters {
    host_calls_refused: IntCounter,
    lines_truncated: IntCounter,
    lines_dropped: IntCounter,
    unknown_replies: IntCounter,
    violations: IntCounter,
    write_timeouts: IntCounter,
    dropped_bytes: IntCounter,
}

impl Counters {
    fn new(services: &HostServices) -> Self {
        let detached = || IntCounter::new("detached", "not exported").expect("valid metric");
        let metrics = services.metrics();
        let plugin = services.plugin();
        let limited = |limit: &str| {
            metrics.as_ref().map_or_else(detached, |m| m.sandbox_limited.with_label_values(&[plugin, limit]))
        };
        Counters {
            host_calls_refused: limited("max_host_calls_in_flight"),
            lines_truncated: limited("log_line_max_bytes"),
            lines_dropped: limited("log_lines_per_second"),
            unknown_replies: limited("unknown_reply"),
            violations: limited("protocol_violation"),
            write_timeouts: limited("write_timeout"),
            dropped_bytes: metrics
                .as_ref()
                .map_or_else(detached, |m| m.sandbox_dropped_output_bytes.with_label_values(&[plugin])),
        }
    }
}

/// Why a frame could not be queued for the worker.
enum QueueError {
    /// The call queue is full (calls hold permits, so only calls whose callers went
    /// away pile up there): the call is refused, the worker is not blamed.
    Full,
    /// The worker is gone, or was killed for not reading.
    Gone(String),
}

/// The requests socket's write half (non-blocking), and the unwritten end of a frame
/// a caller started to write itself: it goes out before anything else.
struct WriteSide {
    sock: UnixStream,
    carry: Vec<u8>,
    carry_from: usize,
}

struct Shared {
    name: String,
    pid: u32,
    /// Callers write a frame themselves when nothing is queued and the socket takes it
    /// (no thread hop on the hot path); everything else goes through the writer thread.
    write_side: Mutex<WriteSide>,
    /// Call frames for the writer thread (bounded by the call permits).
    calls: crossbeam_channel::Sender<Vec<u8>>,
    /// Every other frame: host-service replies, refusals, pings, the shutdown.
    others: crossbeam_channel::Sender<Vec<u8>>,
    /// Bytes of `others` queued and not yet written.
    backlog: AtomicUsize,
    backlog_limit: usize,
    /// Clones of the host's ends of both sockets, to wake the reader and the writer
    /// when the process ends (forked children may keep the worker's ends open).
    sockets: [UnixStream; 2],
    pending: Pending,
    alive: AtomicBool,
    retired: AtomicBool,
    greeted: AtomicBool,
    killing: AtomicBool,
    kill_reason: Mutex<Option<String>>,
    exit_reason: Mutex<Option<String>>,
    last_ping: AtomicU64,
    last_pong: AtomicU64,
    max_frame: usize,
    kill_grace: Duration,
    write_timeout: Duration,
    counters: Counters,
}

impl Shared {
    /// Encodes `msg` and queues it for the writer, waiting at most `wait` for room: a
    /// queue that stays full that long (or a backlog past its limit) means the worker
    /// stopped reading, and it is killed. The wait is what slows down a worker that
    /// floods the host with requests whose answers it does not read.
    fn send(self: &Arc<Self>, msg: &ToWorker, wait: Duration) -> Result<(), String> {
        let frame = protocol::encode(msg, self.max_frame).map_err(|e| e.to_string())?;
        let Err(frame) = self.write_now(frame) else { return Ok(()) };
        let len = frame.len();
        let queued = self.backlog.fetch_add(len, Ordering::SeqCst) + len;
        let refused = if queued > self.backlog_limit {
            format!(
                "killed: it stopped reading its requests ({queued} bytes of replies queued, the limit is {})",
                self.backlog_limit
            )
        } else {
            match self.others.send_timeout(frame, wait) {
                Ok(()) => return Ok(()),
                Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => format!(
                    "killed: it stopped reading its requests (its request queue stayed full for {} ms)",
                    wait.as_millis()
                ),
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {
                    self.backlog.fetch_sub(len, Ordering::SeqCst);
                    return Err("the worker's requests socket is closed".into());
                }
            }
        };
        self.backlog.fetch_sub(len, Ordering::SeqCst);
        self.counters.write_timeouts.inc();
        self.kill(refused.clone());
        Err(refused)
    }

    /// Writes `frame` at once when nothing is queued before it and the writer side is
    /// free; what the socket does not take now is left for the writer thread. Gives the
    /// frame back when it could not start (then it is queued). Never blocks.
    fn write_now(&self, frame: Vec<u8>) -> Result<(), Vec<u8>> {
        if !self.calls.is_empty() || !self.others.is_empty() {
            return Err(frame);
        }
        let Some(mut w) = self.write_side.try_lock() else { return Err(frame) };
        if !w.carry.is_empty() {
            return Err(frame);
        }
        match (&w.sock).write(&frame) {
            Ok(n) if n == frame.len() => Ok(()),
            Ok(n) if n > 0 => {
                w.carry = frame;
                w.carry_from = n;
                drop(w);
                // Wake the writer for the rest (it also looks at the carry on its own).
                let _ = self.calls.try_send(Vec::new());
                Ok(())
            }
            // Nothing written (full socket, or an error the writer will meet too).
            _ => Err(frame),
        }
    }

    /// Queues a call frame for the writer; never blocks.
    fn send_call(&self, frame: Vec<u8>) -> Result<(), QueueError> {
        let Err(frame) = self.write_now(frame) else { return Ok(()) };
        self.calls.try_send(frame).map_err(|e| match e {
            TrySendError::Full(_) => QueueError::Full,
            TrySendError::Disconnected(_) => {
                QueueError::Gone("the worker's requests socket is closed".into())
            }
        })
    }

    /// SIGTERM the worker's process group now, SIGKILL it after the grace. The first
    /// reason given is the one reported.
    fn kill(self: &Arc<Self>, reason: String) {
        {
            let mut r = self.kill_reason.lock();
            if r.is_none() {
                *r = Some(reason);
            }
        }
        if !self.alive.load(Ordering::SeqCst) || self.killing.swap(true, Ordering::SeqCst) {
            return;
        }
        os::kill_group(self.pid, libc::SIGTERM);
        let shared = self.clone();
        let escalate = move || {
            let until = Instant::now() + shared.kill_grace;
            while shared.alive.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            if shared.alive.load(Ordering::SeqCst) {
                os::kill_group(shared.pid, libc::SIGKILL);
            }
        };
        if std::thread::Builder::new().name(format!("sandbox-kill-{}", self.name)).spawn(escalate).is_err() {
            os::kill_group(self.pid, libc::SIGKILL);
        }
    }

    /// Wakes the reader and the writer: the process is gone, whoever holds the other
    /// ends of its sockets.
    fn close_sockets(&self) {
        for s in &self.sockets {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
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
    /// What the plugin says about itself (its action table), when it says anything.
    pub description: Option<Arc<PluginDescription>>,
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

/// The budget of log lines one worker may forward: a token bucket shared by its
/// stdout, its stderr and its log frames. What it refuses is counted, and the count is
/// logged with the next line it lets through.
struct OutputGate {
    plugin: String,
    budget: LineBudget,
    counters: Counters,
}

impl OutputGate {
    fn new(plugin: &str, limits: &SandboxLimits, counters: Counters) -> Self {
        OutputGate {
            plugin: plugin.to_string(),
            budget: LineBudget::new(limits.log_lines_per_second, limits.log_line_max_bytes),
            counters,
        }
    }

    /// Whether one more line may go to the log; `Some(n)` with the lines dropped since
    /// the last one that did.
    fn admit(&self, bytes: usize) -> Option<u64> {
        let admitted = self.budget.admit();
        if admitted.is_none() {
            self.counters.lines_dropped.inc();
            self.counters.dropped_bytes.inc_by(bytes as u64);
        }
        admitted
    }

    fn note_dropped(&self, dropped: u64) {
        if dropped > 0 {
            log::warn!(
                target: "xcore::sandbox",
                "plugin '{}': dropped {dropped} lines of output over the limit of {} lines per second (sandbox.log_lines_per_second)",
                self.plugin,
                self.budget.rate()
            );
        }
    }

    /// Cuts `line` to the line limit (on a character boundary), counting what is cut.
    fn cut<'a>(&self, line: &'a str, already_cut: usize) -> (&'a str, usize) {
        let (kept, cut_here) = self.budget.cut(line);
        let cut = already_cut + cut_here;
        if cut > 0 {
            self.counters.lines_truncated.inc();
            self.counters.dropped_bytes.inc_by(cut as u64);
        }
        (kept, cut)
    }
}

/// Forwards a pipe of the worker (stdout or stderr) to the log, line by line, holding
/// at most one line of `log_line_max_bytes` in memory whatever the plugin writes.
fn forward_output(gate: Arc<OutputGate>, stream: impl Read + Send + 'static, what: &'static str) {
    let name = format!("sandbox-{what}-{}", gate.plugin);
    let _ = std::thread::Builder::new().name(name).spawn(move || {
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let mut line = Vec::with_capacity(256);
        let mut scratch = Vec::new();
        loop {
            line.clear();
            // std's read_until finds the newline with an optimised memchr; `take` keeps
            // the line within the limit.
            let room = (gate.budget.max_line() + 1) as u64;
            match (&mut reader).take(room).read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
            let complete = line.last() == Some(&b'\n');
            if complete {
                line.pop();
            }
            // Over the limit: skip to the end of the line, counting, never holding it.
            let mut cut = 0usize;
            if !complete && line.len() > gate.budget.max_line() {
                cut += line.len() - gate.budget.max_line();
                line.truncate(gate.budget.max_line());
                loop {
                    scratch.clear();
                    match (&mut reader).take(64 * 1024).read_until(b'\n', &mut scratch) {
                        Ok(0) => break,
                        Ok(n) => {
                            if scratch.last() == Some(&b'\n') {
                                cut += n - 1;
                                break;
                            }
                            cut += n;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
            let Some(dropped) = gate.admit(line.len() + cut) else { continue };
            gate.note_dropped(dropped);
            let text = String::from_utf8_lossy(&line);
            let (text, cut) = gate.cut(&text, cut);
            let suffix = if cut > 0 {
                format!(
                    " [{cut} more bytes dropped: sandbox.log_line_max_bytes is {}]",
                    gate.budget.max_line()
                )
            } else {
                String::new()
            };
            let target = gate.plugin.as_str();
            crate::log_context::with_call_context(target, "", || {
                if what == "stderr" {
                    log::warn!(target: target, "[{what}] {text}{suffix}");
                } else {
                    log::info!(target: target, "[{what}] {text}{suffix}");
                }
            });
        }
    });
}

/// The threads that serve one worker's host-service requests: at most `cap` requests
/// in flight, each on a thread of the pool (a request may block, e.g. an emit whose
/// handlers call this very plugin, so every request in flight has a thread of its own:
/// threads are started as needed up to `cap`, reused, and end after being idle). Past
/// the cap a request is refused at once; the host never starts a thread per frame.
struct HostCallPool {
    name: String,
    cap: usize,
    state: Mutex<PoolState>,
    work: Condvar,
}

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Job>,
    /// Requests accepted and not finished (queued or running).
    in_flight: usize,
    /// Threads alive; kept >= `in_flight`, so a queued request never waits for another.
    threads: usize,
    closed: bool,
}

impl HostCallPool {
    fn new(name: &str, cap: usize) -> Arc<Self> {
        Arc::new(HostCallPool {
            name: name.to_string(),
            cap: cap.max(1),
            state: Mutex::new(PoolState::default()),
            work: Condvar::new(),
        })
    }

    /// Runs `job` on a pool thread, or gives it back when the cap is reached.
    fn submit(self: &Arc<Self>, job: Job) -> Result<(), Job> {
        let mut st = self.state.lock();
        if st.closed || st.in_flight >= self.cap {
            return Err(job);
        }
        st.in_flight += 1;
        st.queue.push_back(job);
        if st.threads < st.in_flight {
            let pool = self.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sandbox-host-call-{}", self.name))
                .spawn(move || pool.run());
            if spawned.is_err() {
                st.in_flight -= 1;
                return Err(st.queue.pop_back().expect("the job just queued"));
            }
            st.threads += 1;
        } else {
            self.work.notify_one();
        }
        Ok(())
    }

    fn run(&self) {
        let mut st = self.state.lock();
        loop {
            if let Some(job) = st.queue.pop_front() {
                drop(st);
                job();
                st = self.state.lock();
                st.in_flight -= 1;
                continue;
            }
            if st.closed {
                break;
            }
            let idle = self.work.wait_for(&mut st, HOST_CALL_IDLE).timed_out();
            if idle && st.queue.is_empty() && st.threads > st.in_flight {
                break;
            }
        }
        st.threads -= 1;
    }

    /// Ends idle threads; running requests finish first.
    fn close(&self) {
        self.state.lock().closed = true;
        self.work.notify_all();
    }
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
    ) -> Result<SandboxInstance, LoadFailure> {
        // What the worker says went wrong (its loader, the plugin's constructor); anything
        // else that fails here is the worker's start itself.
        let mut kind = LoadKind::Worker;
        Self::start_inner(manifest, services, opts, generation, library_sha256, on_death, &mut kind)
            .map_err(|message| LoadFailure::new(kind, message))
    }

    fn start_inner(
        manifest: &Manifest,
        services: HostServices,
        opts: &SandboxOptions,
        generation: u64,
        library_sha256: Option<String>,
        on_death: DeathHook,
        kind: &mut LoadKind,
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
        // Only the worker (and whatever it forks) holds its ends now.
        drop((worker_requests, worker_replies));
        let pid = child.id();
        let counters = Counters::new(&services);
        let gate = Arc::new(OutputGate::new(&name, &opts.limits, counters.clone()));
        if let Some(out) = child.stdout.take() {
            forward_output(gate.clone(), out, "stdout");
        }
        if let Some(err) = child.stderr.take() {
            forward_output(gate.clone(), err, "stderr");
        }

        let concurrency = manifest.resources.concurrency.max(1) as usize;
        let host_call_cap = opts.limits.max_host_calls_in_flight.max(concurrency + 1);
        // Calls hold a permit each; the rest is host replies, refusals, pings and the
        // shutdown.
        let (calls, calls_rx) = crossbeam_channel::bounded(4 * concurrency + 16);
        let (others, others_rx) = crossbeam_channel::bounded(host_call_cap + 16);
        let clone = |s: &UnixStream| s.try_clone().map_err(|e| format!("plugin '{name}': socket: {e}"));
        let sockets = [clone(&host_requests)?, clone(&host_replies)?];
        host_requests.set_nonblocking(true).map_err(|e| format!("plugin '{name}': requests socket: {e}"))?;
        let shared = Arc::new(Shared {
            name: name.clone(),
            pid,
            calls,
            others,
            backlog: AtomicUsize::new(0),
            backlog_limit: (2 * opts.max_frame).max(64 << 20),
            sockets,
            write_side: Mutex::new(WriteSide { sock: host_requests, carry: Vec::new(), carry_from: 0 }),
            pending: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
            retired: AtomicBool::new(false),
            greeted: AtomicBool::new(false),
            killing: AtomicBool::new(false),
            kill_reason: Mutex::new(None),
            exit_reason: Mutex::new(None),
            last_ping: AtomicU64::new(0),
            last_pong: AtomicU64::new(0),
            max_frame: opts.max_frame,
            kill_grace: opts.kill_grace,
            write_timeout: opts.limits.write_timeout,
            counters,
        });
        let pool = HostCallPool::new(&name, host_call_cap);
        // The reader starts before the handshake: the plugin's constructor may already
        // log or call host services, and those must be served for it to finish.
        let (hello_tx, hello_rx) = crossbeam_channel::bounded(2);
        let (reader_done_tx, reader_done_rx) = crossbeam_channel::bounded::<()>(1);
        let threads = {
            let (s1, s2, s3) = (shared.clone(), shared.clone(), shared.clone());
            let (hello, pool2) = (hello_tx.clone(), pool.clone());
            let spawn = |what: &str, f: Box<dyn FnOnce() + Send>| {
                std::thread::Builder::new().name(format!("sandbox-{what}-{name}")).spawn(f)
            };
            spawn("writer", Box::new(move || write_loop(s1, calls_rx, others_rx)))
                .and_then(|_| {
                    spawn(
                        "reader",
                        Box::new(move || {
                            read_loop(s2, host_replies, services, gate, pool, hello);
                            drop(reader_done_tx);
                        }),
                    )
                })
                .and_then(|_| {
                    spawn(
                        "reaper",
                        Box::new(move || reap(s3, child, reader_done_rx, pool2, hello_tx, on_death)),
                    )
                })
        };
        if let Err(e) = threads {
            // Without its threads nobody would notice the worker: end it now.
            os::kill_group(pid, libc::SIGKILL);
            return Err(format!("plugin '{name}': starting the worker's threads: {e}"));
        }
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
        let (api_version, fs_isolation, seccomp, description) = match hello_rx
            .recv_timeout(opts.startup_timeout)
        {
            Ok(Handshake::Hello { protocol, plugin, api_version, fs_isolation, seccomp, description }) => {
                if protocol != PROTOCOL_VERSION || plugin != name {
                    return Err(failed_start(format!(
                        "plugin '{name}': worker speaks protocol {protocol} for '{plugin}', \
                         expected protocol {PROTOCOL_VERSION} for '{name}'"
                    )));
                }
                match crate::trusted::loader::parse_description(
                    &name,
                    description.as_deref().map(str::as_bytes),
                ) {
                    Ok(description) => (api_version, fs_isolation, seccomp, description.map(Arc::new)),
                    Err(e) => {
                        *kind = LoadKind::Abi;
                        return Err(failed_start(e.to_string()));
                    }
                }
            }
            Ok(Handshake::Failed(failed_kind, message)) => {
                *kind = failed_kind;
                return Err(failed_start(message));
            }
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
                let busy = || !shared.pending.lock().is_empty();
                confine::watch_cpu(pid, spec.cpu_time_ms, calls, busy, running, |why| shared.kill(why));
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
            description,
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
        // However this call ends (a reply, a deadline, the caller going away), its entry
        // goes: a reply that comes later finds no one and is dropped.
        let _registered = PendingEntry { shared, id };
        // Queued for the writer thread: a worker that stops reading cannot hold this
        // task, the HTTP worker it runs on, or the health check.
        match shared.send_call(frame) {
            Ok(()) => {}
            Err(QueueError::Full) => {
                return Err(InstanceError::Overloaded("the queue of frames to its worker is full".into()))
            }
            Err(QueueError::Gone(e)) => {
                let why = shared.exit_reason.lock().clone();
                return Err(InstanceError::Crashed(
                    why.unwrap_or(format!("writing to the worker failed: {e}")),
                ));
            }
        }
        let mut rx = rx;
        let _in_flight = crate::spin::InFlight::enter();
        let reply = match crate::spin::poll_briefly(&mut rx, SPIN_BUDGET) {
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

/// Removes a call's pending entry when the call ends, however it ends.
struct PendingEntry<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingEntry<'_> {
    fn drop(&mut self) {
        self.shared.pending.lock().remove(&self.id);
    }
}

impl Drop for SandboxInstance {
    /// Retires the worker: it finishes the calls it has, shuts the plugin down and
    /// exits; past the drain timeout it is killed. A retired worker's exit is not a
    /// crash and is not reported.
    fn drop(&mut self) {
        let shared = self.shared.clone();
        shared.retired.store(true, Ordering::SeqCst);
        let (drain, tmp) = (self.drain_timeout, self.tmp_dir.clone());
        let _ =
            std::thread::Builder::new().name(format!("sandbox-retire-{}", shared.name)).spawn(move || {
                let until = Instant::now() + drain;
                let _ = shared.send(&ToWorker::Shutdown, drain);
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
    Hello {
        protocol: u32,
        plugin: String,
        api_version: String,
        fs_isolation: String,
        seccomp: bool,
        description: Option<String>,
    },
    Failed(LoadKind, String),
}

/// Writes `buf` to the non-blocking socket, waiting for room at most `timeout` at a
/// time: `Ok(false)` when the socket took nothing for that long.
fn write_with_deadline(sock: &UnixStream, mut buf: &[u8], timeout: Duration) -> std::io::Result<bool> {
    let mut sock_w = sock;
    while !buf.is_empty() {
        match sock_w.write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if !os::wait_writable(sock.as_raw_fd(), timeout)? {
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes queued frames to the requests socket, calls first, after the end of a frame
/// a caller started. A write that makes no progress for the write timeout means the
/// worker stopped reading: it is killed.
fn write_loop(
    shared: Arc<Shared>,
    calls: crossbeam_channel::Receiver<Vec<u8>>,
    others: crossbeam_channel::Receiver<Vec<u8>>,
) {
    while shared.alive.load(Ordering::SeqCst) {
        let next = if let Ok(f) = calls.try_recv() {
            Some((f, false))
        } else if let Ok(f) = others.try_recv() {
            Some((f, true))
        } else {
            crossbeam_channel::select! {
                recv(calls) -> f => f.ok().map(|f| (f, false)),
                recv(others) -> f => f.ok().map(|f| (f, true)),
                default(Duration::from_millis(200)) => None,
            }
        };
        let written = {
            let mut w = shared.write_side.lock();
            let carry = std::mem::take(&mut w.carry);
            let from = std::mem::take(&mut w.carry_from);
            let mut result =
                write_with_deadline(&w.sock, &carry[from.min(carry.len())..], shared.write_timeout);
            if let (Ok(true), Some((frame, _))) = (&result, &next) {
                result = write_with_deadline(&w.sock, frame, shared.write_timeout);
            }
            result
        };
        if let Some((frame, true)) = &next {
            shared.backlog.fetch_sub(frame.len(), Ordering::SeqCst);
        }
        drop(next);
        match written {
            Ok(true) => {}
            Ok(false) => {
                shared.counters.write_timeouts.inc();
                shared.kill(format!(
                    "killed: it stopped reading its requests (a write made no progress for {} ms, sandbox.write_timeout_ms)",
                    shared.write_timeout.as_millis()
                ));
                return;
            }
            // The worker is gone (the reaper reports why) or closed its end.
            Err(_) => return,
        }
    }
}

/// Reads the worker's frames until its socket ends or it breaks the protocol.
fn read_loop(
    shared: Arc<Shared>,
    sock: UnixStream,
    services: HostServices,
    gate: Arc<OutputGate>,
    pool: Arc<HostCallPool>,
    hello: crossbeam_channel::Sender<Handshake>,
) {
    // Buffered: one read(2) usually brings a frame's length and body together. This
    // reader blocks: spinning here as well as in the worker and the caller starves the
    // worker on two cores (docs/benchmarks.md).
    let mut sock = std::io::BufReader::with_capacity(64 * 1024, sock);
    let end = loop {
        if !shared.alive.load(Ordering::SeqCst) {
            // The process is gone; what its children may still write is not its.
            break String::new();
        }
        let greeted = shared.greeted.load(Ordering::SeqCst);
        match protocol::read::<FromWorker>(&mut sock, shared.max_frame) {
            Ok(FromWorker::Hello { protocol, plugin, api_version, fs_isolation, seccomp, description })
                if !greeted =>
            {
                shared.greeted.store(true, Ordering::SeqCst);
                let _ = hello.try_send(Handshake::Hello {
                    protocol,
                    plugin,
                    api_version,
                    fs_isolation,
                    seccomp,
                    description,
                });
            }
            Ok(FromWorker::InitFailed { message, kind }) if !greeted => {
                shared.greeted.store(true, Ordering::SeqCst);
                let _ = hello.try_send(Handshake::Failed(kind, message));
            }
            Ok(FromWorker::Reply { id, result }) => {
                let waiting = shared.pending.lock().remove(&id);
                match waiting {
                    Some(tx) => {
                        let _ = tx.send(Ok(result));
                    }
                    // A caller that went away, or a forged id: dropped, counted.
                    None => shared.counters.unknown_replies.inc(),
                }
            }
            Ok(FromWorker::Pong { id }) => {
                // Only an answer to a ping that was sent counts.
                if id <= shared.last_ping.load(Ordering::SeqCst) {
                    shared.last_pong.fetch_max(id, Ordering::SeqCst);
                } else {
                    shared.counters.unknown_replies.inc();
                }
            }
            Ok(FromWorker::Log { level, request_id, message }) => {
                let bytes = message.len() + request_id.len();
                if let Some(dropped) = gate.admit(bytes) {
                    gate.note_dropped(dropped);
                    let (text, cut) = gate.cut(&message, 0);
                    let (request_id, _) = gate.cut(&request_id, 0);
                    if cut == 0 {
                        services.log(level, RStr::from_str(request_id), RStr::from_str(text));
                    } else {
                        let text = format!(
                            "{text} [{cut} more bytes dropped: sandbox.log_line_max_bytes is {}]",
                            gate.budget.max_line()
                        );
                        services.log(level, RStr::from_str(request_id), RStr::from_str(&text));
                    }
                }
            }
            Ok(FromWorker::HostCall { id, service, request_id, deadline_unix_ms, payload }) => {
                // On a pool thread: a service may wait (an emit whose handlers call this
                // very plugin), and this thread must keep reading.
                let (job_services, job_shared) = (services.clone(), shared.clone());
                let job: Job = Box::new(move || {
                    let served = xcore_deadline::with(deadline_unix_ms, || {
                        job_services.serve(&service, &request_id, &payload)
                    });
                    let result = match served {
                        Ok(v) => WireResult::Ok(v),
                        Err(e) => WireResult::Err {
                            code: e.code.into_string(),
                            message: e.message.into_string(),
                            status: e.status,
                        },
                    };
                    send_host_reply(&job_shared, id, result);
                });
                if pool.submit(job).is_err() {
                    shared.counters.host_calls_refused.inc();
                    let result = WireResult::Err {
                        code: "overloaded".into(),
                        message: format!(
                            "too many host-service requests in flight from this worker: the limit is {} (sandbox.max_host_calls_in_flight)",
                            pool.cap
                        ),
                        status: 503,
                    };
                    send_host_reply(&shared, id, result);
                }
            }
            Ok(other) => {
                break format!("killed: protocol violation: unexpected {}", message_kind(&other));
            }
            Err(protocol::FrameError::Closed) => break String::new(),
            Err(e) => break format!("killed: protocol error: {e}"),
        }
    };
    if !end.is_empty() {
        // A worker that breaks the protocol cannot be trusted with another call.
        shared.counters.violations.inc();
        shared.kill(end);
        return;
    }
    // The socket ended. Normally the process is ending too (the reaper reports why); a
    // worker that closed its end and lives on can no longer be talked to.
    let until = Instant::now() + shared.kill_grace.max(Duration::from_millis(500));
    while shared.alive.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    if shared.alive.load(Ordering::SeqCst) {
        shared.counters.violations.inc();
        shared.kill("killed: it closed its protocol socket".into());
    }
}

/// Answers a host call; a result over the frame limit becomes an error the worker can
/// read (else its caller would wait for ever).
fn send_host_reply(shared: &Arc<Shared>, id: u64, result: WireResult) {
    let reply = ToWorker::HostReply { id, result };
    if let Err(e) = shared.send(&reply, shared.write_timeout) {
        if e.contains("over the limit") {
            let result = WireResult::Err {
                code: "payload_too_large".into(),
                message: format!("the host service's reply: {e} (sandbox.max_frame_bytes)"),
                status: 413,
            };
            let _ = shared.send(&ToWorker::HostReply { id, result }, shared.write_timeout);
        }
    }
}

/// What a frame was, without its contents (they may be huge or hostile).
fn message_kind(m: &FromWorker) -> &'static str {
    match m {
        FromWorker::Hello { .. } => "a second Hello",
        FromWorker::InitFailed { .. } => "InitFailed after Hello",
        FromWorker::Reply { .. } => "Reply",
        FromWorker::Pong { .. } => "Pong",
        FromWorker::Log { .. } => "Log",
        FromWorker::HostCall { .. } => "HostCall",
    }
}

/// Waits for the worker process itself to end (its sockets may outlive it in processes
/// it forked), kills what is left of its process group, reaps it, and reports.
fn reap(
    shared: Arc<Shared>,
    mut child: std::process::Child,
    reader_done: crossbeam_channel::Receiver<()>,
    pool: Arc<HostCallPool>,
    hello: crossbeam_channel::Sender<Handshake>,
    on_death: DeathHook,
) {
    let waited = os::wait_exited_nowait(shared.pid);
    // Still a zombie: its process group id cannot have been reused. Whatever it forked
    // (and did not move out of the group) ends with it.
    os::kill_group(shared.pid, libc::SIGKILL);
    let status = match waited {
        Ok(()) => child.wait(),
        Err(e) => Err(e),
    };
    shared.alive.store(false, Ordering::SeqCst);
    // Wake the reader and the writer, then let the reader route what it already has.
    shared.close_sockets();
    let _ = reader_done.recv_timeout(Duration::from_millis(500));
    pool.close();
    let reason = shared.kill_reason.lock().take().unwrap_or_else(|| describe_exit(status));
    *shared.exit_reason.lock() = Some(reason.clone());
    if !shared.greeted.load(Ordering::SeqCst) {
        // Died while starting: that is a failed load, told to `start`, not a crash.
        shared.retired.store(true, Ordering::SeqCst);
        let _ = hello.try_send(Handshake::Failed(
            LoadKind::Worker,
            format!("plugin '{}': the worker {reason} before it was ready", shared.name),
        ));
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
        shared.last_ping.store(id, Ordering::SeqCst);
        // Queued, never waiting on a write: behind a large request to a worker that
        // stopped reading, the ping goes unanswered and the worker is killed below.
        if shared.send(&ToWorker::Ping { id }, timeout).is_err() {
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
