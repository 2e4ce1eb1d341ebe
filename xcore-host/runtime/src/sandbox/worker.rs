//! The worker process: `xcore __sandbox-worker --spec JSON`, started by the host.
//!
//! It loads the plugin library with the same loader as the trusted tier, confines
//! itself (rlimits, landlock, seccomp), says hello over fd 4, then serves calls read from fd 3 on
//! `concurrency + 1` threads that take turns reading the socket; replies and
//! host-service requests go back over the same socket. The plugin's stdout and stderr
//! are pipes the host reads into its log, so nothing the plugin prints can reach the
//! protocol.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use xcore_plugin_abi::abi_stable::sabi_trait::TD_Opaque;
use xcore_plugin_abi::abi_stable::std_types::{RResult, RSlice, RStr, RString};

use crate::load_failure::LoadKind;
use serde::{Deserialize, Serialize};
use xcore_plugin_abi::codes;
use xcore_plugin_abi::ffi::{
    CallError, CallMeta, CallRequest, CallResult, HostBox, HostObject, InitArgs, PluginBox,
};

use super::confine::{self, FsPolicy};
use super::os;
use super::protocol::{self, FromWorker, ToWorker, WireResult, PROTOCOL_VERSION};
use crate::trusted::loader;

/// How long the reading thread spins on the requests socket before sleeping in poll(2).
const READER_SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// Everything the worker needs, decided by the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// Plugin name.
    pub name: String,
    /// The library to load.
    pub library: PathBuf,
    /// Its signed SHA-256, when a signature was checked: the worker's copy must match.
    pub library_sha256: Option<String>,
    /// The plugin folder (readable).
    pub plugin_dir: PathBuf,
    /// `data/` (writable).
    pub data_dir: PathBuf,
    /// Private temporary folder (writable).
    pub tmp_dir: PathBuf,
    /// Where the library copy goes.
    pub runtime_dir: PathBuf,
    /// The manifest's `config` map.
    pub config: serde_json::Value,
    /// Call threads.
    pub concurrency: u32,
    /// Address-space budget on top of the loaded worker, in MiB (0: none).
    pub max_memory_mb: u64,
    /// CPU per call in ms (0: none).
    pub cpu_time_ms: u64,
    /// Open files (0: unchanged).
    pub max_open_files: u64,
    /// Whether sockets are allowed.
    pub network: bool,
    /// Whether the plugin may start processes (the `process` permission).
    #[serde(default)]
    pub processes: bool,
    /// The user and group to run as (`sandbox.user`); `None` keeps the host's.
    #[serde(default)]
    pub user: Option<(u32, u32)>,
    /// Largest frame.
    pub max_frame: usize,
}

struct Channel {
    /// Buffered: small fields of a frame become one write; a large payload goes
    /// straight from the plugin's reply to the socket, never copied into a frame.
    writer: Mutex<std::io::BufWriter<UnixStream>>,
    max_frame: usize,
    next_host_call: AtomicU64,
    host_calls: Mutex<HashMap<u64, crossbeam_channel::Sender<WireResult>>>,
}

impl Channel {
    fn new(replies: UnixStream, max_frame: usize) -> Self {
        Channel {
            writer: Mutex::new(std::io::BufWriter::with_capacity(64 * 1024, replies)),
            max_frame,
            next_host_call: AtomicU64::new(1),
            host_calls: Mutex::new(HashMap::new()),
        }
    }

    /// Sends one frame; over the frame limit nothing is written (and nothing allocated).
    fn send(&self, msg: &FromWorker) -> Result<(), protocol::FrameError> {
        protocol::write_msg(&mut *self.writer.lock(), msg, self.max_frame)
    }
}

/// Address space the worker needs for frames, on top of the plugin's `max_memory_mb`:
/// the thread reading a request holds its frame and the decoded payload (two frames),
/// and each call in flight holds its payload. Replies are streamed, not copied. With
/// this in the limit, a call or reply of any size gets the same answer every time (413
/// over the frame limit) instead of an allocation failure that depends on headroom.
fn frame_headroom_mb(concurrency: u32, max_frame: usize) -> u64 {
    let frames = u64::from(concurrency.max(1)) + 2;
    (frames * max_frame as u64).div_ceil(1 << 20)
}

/// The host object inside the worker: every call travels to the host and is served by
/// the same code (and checks) as for a trusted plugin.
#[derive(Clone)]
struct RemoteHost {
    channel: Arc<Channel>,
}

impl HostObject for RemoteHost {
    fn log(&self, level: u8, request_id: RStr<'_>, message: RStr<'_>) {
        let _ = self.channel.send(&FromWorker::Log {
            level,
            request_id: request_id.as_str().to_string(),
            message: message.as_str().to_string(),
        });
    }

    fn call_host(&self, service: RStr<'_>, request_id: RStr<'_>, payload: RSlice<'_, u8>) -> CallResult {
        let id = self.channel.next_host_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.channel.host_calls.lock().insert(id, tx);
        let sent = self.channel.send(&FromWorker::HostCall {
            id,
            service: service.as_str().to_string(),
            request_id: request_id.as_str().to_string(),
            // Set by `serve` around the plugin's call on this thread.
            deadline_unix_ms: xcore_deadline::current_unix_ms(),
            payload: payload.as_slice().to_vec(),
        });
        let result = match sent {
            Ok(()) => rx.recv().unwrap_or(WireResult::Err {
                code: codes::INTERNAL.into(),
                message: "the host went away".into(),
                status: 500,
            }),
            Err(e) => WireResult::Err { code: codes::INTERNAL.into(), message: e.to_string(), status: 500 },
        };
        match result {
            WireResult::Ok(b) => RResult::ROk(b.into()),
            WireResult::Err { code, message, status } => {
                RResult::RErr(CallError { code: code.into(), message: message.into(), status })
            }
        }
    }
}

/// Runs the worker; never returns on success (the process exits without running the
/// plugin's static destructors).
pub fn run(spec_json: &str) -> ExitCode {
    let spec: WorkerSpec = match serde_json::from_str(spec_json) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("xcore worker: invalid spec: {e}");
            return ExitCode::from(2);
        }
    };
    // First, while this is the only thread and before any plugin code is loaded: with
    // the `process` permission, the worker carries on in a new pid namespace, so that
    // whatever the plugin starts dies with it (see `os::enter_pid_namespace`). A failure
    // comes before any fork: it is reported over the protocol below.
    let namespace = if spec.processes { os::enter_pid_namespace().err() } else { None };
    let (requests, replies) = match os::adopt_protocol_fds() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("xcore worker: {e}");
            return ExitCode::from(2);
        }
    };
    // Not inherited by programs the plugin executes (processes it forks keep them:
    // the host watches the worker's pid, not its sockets).
    for fd in [os::REQUEST_FD, os::REPLY_FD] {
        if let Err(e) = os::set_cloexec(fd) {
            eprintln!("xcore worker: close-on-exec on fd {fd}: {e}");
            return ExitCode::from(2);
        }
    }
    let channel = Arc::new(Channel::new(replies, spec.max_frame));
    let fail_as = |kind: LoadKind, message: String| -> ExitCode {
        let _ = channel.send(&FromWorker::InitFailed { message, kind });
        ExitCode::from(1)
    };
    let fail = |message: String| fail_as(LoadKind::Worker, message);
    if let Some(e) = namespace {
        return fail(format!(
            "the `process` permission needs a pid namespace (so that nothing the plugin starts \
             outlives its worker), which needs CAP_SYS_ADMIN: {e}"
        ));
    }

    let lib =
        match loader::load_path(&spec.name, &spec.library, &spec.runtime_dir, spec.library_sha256.as_deref())
        {
            Ok(l) => l,
            Err(e) => return fail_as(e.kind(), e.to_string()),
        };
    // Confine before any plugin code runs (its constructor included), and while this is
    // the only thread, so every later thread inherits the rules (capabilities are per
    // thread). The order matters: the change of user needs CAP_SETUID, the bounding set
    // CAP_SETPCAP; seccomp comes last, since it denies some of the calls before it.
    if let Some((uid, gid)) = spec.user {
        if let Err(e) = confine::give_to_user(&[spec.data_dir.clone(), spec.tmp_dir.clone()], uid, gid) {
            return fail(format!("sandbox.user: {e}"));
        }
    }
    if let Err(e) = confine::drop_privileges(spec.user) {
        return fail(e);
    }
    if let Err(e) = os::set_no_new_privs() {
        return fail(format!("no_new_privs: {e}"));
    }
    if let Err(e) = confine::no_core_dumps() {
        return fail(e);
    }
    if spec.max_open_files > 0 {
        if let Err(e) = confine::limit_open_files(spec.max_open_files) {
            return fail(e);
        }
    }
    let policy = FsPolicy {
        plugin_dir: spec.plugin_dir.clone(),
        writable: vec![spec.data_dir.clone(), spec.tmp_dir.clone()],
        network: spec.network,
    };
    let landlock = match confine::apply_landlock(&policy) {
        Ok(status) => status,
        Err(e) => return fail(e),
    };
    let fs_isolation = if landlock.filesystem { "landlock" } else { "none" };
    let syscalls = confine::SyscallPolicy {
        network: spec.network,
        processes: spec.processes,
        pid: std::process::id(),
        signals_scoped: landlock.scoped,
    };
    if let Err(e) = confine::apply_seccomp(&syscalls) {
        return fail(e);
    }
    let seccomp = !spec.network;
    if spec.max_memory_mb > 0 {
        if let Err(e) = confine::limit_memory(
            spec.max_memory_mb + frame_headroom_mb(spec.concurrency, spec.max_frame),
            spec.concurrency,
        ) {
            return fail(e);
        }
    }

    // Leader/follower: `concurrency + 1` threads take turns reading the socket. The
    // reader of a call runs it itself, so a call costs one thread wake-up in the worker,
    // not two; the lock's next waiter becomes the reader meanwhile, off the critical
    // path. The host never has more than `concurrency` calls in flight, so one thread
    // is always free to answer pings and to route host-service replies.
    // They start before the plugin's constructor: it may call host services (schedule,
    // subscribe, kv...), whose replies they route. The host sends no call before Hello,
    // so the plugin is always there when a call arrives.
    // Buffered: one read(2) usually brings a frame's length and body together.
    let reader = match os::SpinReader::new(requests, READER_SPIN) {
        Ok(r) => Arc::new(Mutex::new(std::io::BufReader::with_capacity(64 * 1024, r))),
        Err(e) => return fail(format!("protocol socket: {e}")),
    };
    let plugin_cell: Arc<std::sync::OnceLock<PluginBox>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Each serving thread holds a sender; all of them gone means every call has finished.
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    for i in 0..=spec.concurrency.max(1) {
        let (plugin, channel, reader, stop, done) =
            (plugin_cell.clone(), channel.clone(), reader.clone(), stop.clone(), done_tx.clone());
        let (cpu_ms, max_frame) = (spec.cpu_time_ms, spec.max_frame);
        let t = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .stack_size(2 << 20)
            .spawn(move || serve(&plugin, &channel, &reader, &stop, cpu_ms, max_frame, done));
        if let Err(e) = t {
            return fail(format!("spawning worker thread: {e}"));
        }
    }

    let host = HostBox::from_value(RemoteHost { channel: channel.clone() }, TD_Opaque);
    let args = InitArgs {
        plugin_name: RString::from(spec.name.as_str()),
        config_json: RString::from(spec.config.to_string()),
        host,
    };
    let description = match lib.module.instantiate()(args) {
        RResult::ROk(p) => {
            // Asked here, before a call can arrive; the host bounds and parses the answer.
            let description = loader::ask_description(&p).map(|b| String::from_utf8_lossy(&b).into_owned());
            let _ = plugin_cell.set(p);
            description
        }
        RResult::RErr(e) => {
            return fail_as(
                LoadKind::Constructor,
                format!("plugin '{}' failed to initialise: {}: {}", spec.name, e.code, e.message),
            )
        }
    };
    if channel
        .send(&FromWorker::Hello {
            protocol: PROTOCOL_VERSION,
            plugin: spec.name.clone(),
            api_version: lib.api_version.to_string(),
            fs_isolation: fs_isolation.to_string(),
            seccomp,
            description,
        })
        .is_err()
    {
        os::exit_now(1);
    }

    // Calls in flight finish; then the plugin shuts down, while the thread that read the
    // shutdown goes on routing the replies of the host services it may use.
    drop(done_tx);
    let _ = done_rx.recv();
    if let Some(plugin) = plugin_cell.get() {
        plugin.shutdown();
    }
    let _ = std::io::stdout().flush();
    os::exit_now(0)
}

/// How often a thread waiting for its turn to read looks at the stop flag: the reader
/// of the shutdown keeps the socket, so the others would otherwise wait for ever.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(20);

type SharedReader = Mutex<std::io::BufReader<os::SpinReader>>;

/// One worker thread: read a frame when it is this thread's turn, handle it.
///
/// The thread that reads the shutdown sets the stop flag while it still holds the
/// reader, so no other thread can take the socket after it and wait there for input
/// that never comes; the others see the flag (they wait for the reader with a timeout)
/// and leave. It then keeps the socket and routes host-service replies (and answers
/// pings) for the calls still running and for the plugin's `shutdown`.
fn serve(
    plugin: &std::sync::OnceLock<PluginBox>,
    channel: &Channel,
    reader: &SharedReader,
    stop: &std::sync::atomic::AtomicBool,
    cpu_ms: u64,
    max_frame: usize,
    done: crossbeam_channel::Sender<()>,
) {
    loop {
        let msg = {
            let mut sock = loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Some(guard) = reader.try_lock_for(STOP_POLL) {
                    break guard;
                }
            };
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match protocol::read::<ToWorker>(&mut *sock, max_frame) {
                Ok(ToWorker::Shutdown) => {
                    stop.store(true, Ordering::SeqCst);
                    drop(done);
                    route_after_shutdown(channel, &mut sock, max_frame);
                    return;
                }
                Err(_) => {
                    // The host is gone or broke the protocol: nothing more will come.
                    stop.store(true, Ordering::SeqCst);
                    return;
                }
                Ok(m) => m,
            }
        };
        match msg {
            ToWorker::Call { id, action, payload, caller, request_id, deadline_unix_ms } => {
                confine::budget_cpu_for_next_call(cpu_ms);
                let request = CallRequest {
                    action: RStr::from_str(&action),
                    payload: RSlice::from_slice(&payload),
                    meta: CallMeta {
                        caller: RStr::from_str(&caller),
                        request_id: RStr::from_str(&request_id),
                        deadline_unix_ms,
                    },
                };
                let result =
                    match xcore_deadline::with(deadline_unix_ms, || plugin.get().map(|p| p.call(request))) {
                        Some(RResult::ROk(b)) => WireResult::Ok(b.into_vec()),
                        Some(RResult::RErr(e)) => WireResult::Err {
                            code: e.code.into_string(),
                            message: e.message.into_string(),
                            status: e.status,
                        },
                        // The host waits for Hello before it calls; a call before it is a bug
                        // of the host, answered rather than crashing the worker.
                        None => WireResult::Err {
                            code: codes::INTERNAL.into(),
                            message: "the plugin is still starting".into(),
                            status: 503,
                        },
                    };
                drop(payload);
                if let Err(protocol::FrameError::TooLarge { size, limit }) =
                    channel.send(&FromWorker::Reply { id, result })
                {
                    let _ = channel.send(&FromWorker::Reply {
                        id,
                        result: WireResult::Err {
                            code: "payload_too_large".into(),
                            message: format!(
                                "the reply is {size} bytes; the frame limit is {limit} bytes (sandbox.max_frame_bytes)"
                            ),
                            status: 413,
                        },
                    });
                }
            }
            ToWorker::Ping { id } => {
                let _ = channel.send(&FromWorker::Pong { id });
            }
            ToWorker::HostReply { id, result } => route_host_reply(channel, id, result),
            // Handled above, where it was read.
            ToWorker::Shutdown => {}
        }
    }
}

fn route_host_reply(channel: &Channel, id: u64, result: WireResult) {
    if let Some(tx) = channel.host_calls.lock().remove(&id) {
        let _ = tx.send(result);
    }
}

/// After the shutdown: host-service replies and pings are still served (calls in flight
/// and the plugin's `shutdown` may use services); a call is refused. Ends with the
/// socket (the process exits before, once the plugin has shut down).
fn route_after_shutdown(channel: &Channel, sock: &mut std::io::BufReader<os::SpinReader>, max_frame: usize) {
    loop {
        match protocol::read::<ToWorker>(sock, max_frame) {
            Ok(ToWorker::HostReply { id, result }) => route_host_reply(channel, id, result),
            Ok(ToWorker::Ping { id }) => {
                let _ = channel.send(&FromWorker::Pong { id });
            }
            Ok(ToWorker::Call { id, .. }) => {
                let _ = channel.send(&FromWorker::Reply {
                    id,
                    result: WireResult::Err {
                        code: codes::INTERNAL.into(),
                        message: "the plugin is shutting down".into(),
                        status: 503,
                    },
                });
            }
            Ok(ToWorker::Shutdown) => {}
            Err(_) => return,
        }
    }
}
