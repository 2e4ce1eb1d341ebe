//! What a worker does to itself before it runs any plugin code: resource limits,
//! capabilities, landlock filesystem rules and scopes, and seccomp filters; and, for the
//! host, the CPU watchdog that enforces the per-call CPU budget from outside.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use landlock::{
    path_beneath_rules, Access, AccessFs, BitFlags, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    Scope, ABI,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

use super::os;

/// What the worker may touch.
#[derive(Debug, Clone)]
pub struct FsPolicy {
    /// Read-only: the plugin folder (its library copy is mapped before the rules apply).
    pub plugin_dir: PathBuf,
    /// Read-write: `data/` and a private temporary folder.
    pub writable: Vec<PathBuf>,
    /// Whether the plugin may use the network (then resolver files are readable too).
    pub network: bool,
}

/// Read-only system paths a Rust program needs after start: shared libraries,
/// locale and time zone data, and its own /proc entry. /etc as a whole is not among
/// them: a plugin cannot read /etc/hostname, /etc/passwd and the like.
const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/etc/localtime",
    "/etc/ld.so.cache",
    "/proc/self",
    "/dev/urandom",
    "/dev/null",
];
const NETWORK_READ: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/gai.conf",
];

fn existing(paths: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    paths.into_iter().filter(|p| p.exists()).collect()
}

/// What landlock enforces in this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LandlockStatus {
    /// The filesystem rules are in force.
    pub filesystem: bool,
    /// Signals to processes outside the worker's domain (the host, other workers) and
    /// connections to abstract unix sockets created outside it are denied (ABI 6+).
    pub scoped: bool,
}

/// Applies landlock rules to this process (all threads created afterwards inherit them):
/// read-only access to the system paths and the plugin folder, read-write access (never
/// the right to make character or block devices) to the writable folders, and, where
/// the kernel has them (ABI 6+), the signal and abstract-unix-socket scopes.
pub fn apply_landlock(policy: &FsPolicy) -> Result<LandlockStatus, String> {
    let abi = ABI::V6;
    let mut read: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
    if policy.network {
        read.extend(NETWORK_READ.iter().map(PathBuf::from));
    }
    read.push(policy.plugin_dir.clone());
    let writable: BitFlags<AccessFs> = AccessFs::from_all(abi) & !(AccessFs::MakeChar | AccessFs::MakeBlock);
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(existing(read), AccessFs::from_read(abi))))
        .and_then(|r| r.add_rules(path_beneath_rules(existing(policy.writable.clone()), writable)))
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("landlock: {e}"))?;
    let filesystem = !matches!(status.ruleset, RulesetStatus::NotEnforced);
    // Scopes came with ABI 6, after everything the filesystem rules use: fully enforced
    // at ABI 6 means both are.
    let scoped = matches!(status.ruleset, RulesetStatus::FullyEnforced);
    Ok(LandlockStatus { filesystem, scoped })
}

/// What the seccomp filters allow, decided by the manifest and by what landlock did.
#[derive(Debug, Clone, Copy)]
pub struct SyscallPolicy {
    /// `network` granted: sockets allowed.
    pub network: bool,
    /// `process` granted: fork, clone without `CLONE_THREAD` and exec allowed.
    pub processes: bool,
    /// This process's pid (the filters compare signal and limit targets with it).
    pub pid: u32,
    /// Landlock's signal scope is in force: it confines the signals of the processes
    /// this worker starts, so that the seccomp filter need not.
    pub signals_scoped: bool,
}

fn arg(index: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(index, len, op, value).map_err(|e| format!("seccomp: {e}"))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conditions).map_err(|e| format!("seccomp: {e}"))
}

fn install(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<(), String> {
    let arch = std::env::consts::ARCH.try_into().map_err(|e| format!("seccomp: {e:?}"))?;
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno as u32), arch)
        .map_err(|e| format!("seccomp: {e}"))?;
    let program: BpfProgram = filter.try_into().map_err(|e| format!("seccomp: {e:?}"))?;
    seccompiler::apply_filter_all_threads(&program).map_err(|e| format!("seccomp: {e}"))
}

/// System calls denied outright: other processes' memory and file descriptors,
/// kernel-wide state, namespaces, and the legacy ways of reaching them. Most need a
/// capability the worker no longer has; the filter holds if one were left.
const DENIED: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_kcmp,
    libc::SYS_perf_event_open,
    libc::SYS_bpf,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_open_by_handle_at,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    // Signals to a thread by its id alone: the worker's own threads are signalled with
    // tgkill (glibc, Rust), whose thread group is checked below.
    libc::SYS_tkill,
];

/// Installs the seccomp filters on every thread of this process:
///
/// - `EACCES` for `socket()` and io_uring (which can open sockets without it), unless
///   `network` is granted;
/// - `EPERM` for the [`DENIED`] calls; for signals (`kill`, `tgkill`,
///   `rt_sigqueueinfo`, `rt_tgsigqueueinfo`) to anything but this process and its
///   process group, and `pidfd_send_signal` (unless `process` is granted and
///   landlock's signal scope is in force: then the plugin may signal its children, and
///   landlock keeps it from signalling anything else); `pidfd_open` of another process;
///   `prlimit64` on another process; `mknod`/`mknodat` of a character or block device;
///   and unless `process` is granted, `fork`, `vfork`, `clone` without `CLONE_THREAD`,
///   `execve` and `execveat` (with it, `clone` with `CLONE_NEWUSER`);
/// - `ENOSYS` for `clone3`, whose flags are behind a pointer a filter cannot read:
///   glibc then falls back to `clone`.
pub fn apply_seccomp(policy: &SyscallPolicy) -> Result<(), String> {
    use SeccompCmpArgLen::{Dword, Qword};
    use SeccompCmpOp::{MaskedEq, Ne};
    if !policy.network {
        let rules = [libc::SYS_socket, libc::SYS_io_uring_setup].into_iter().map(|nr| (nr, vec![])).collect();
        install(rules, libc::EACCES)?;
    }

    let pid = u64::from(policy.pid);
    let negative = u64::from((-(policy.pid as i32)) as u32);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|nr| (*nr, vec![])).collect();
    let not_self = |index: u8| arg(index, Dword, Ne, pid);
    if !(policy.processes && policy.signals_scoped) {
        // kill(pid), kill(0) (own group) and kill(-pid) (own group by id) only.
        rules.insert(
            libc::SYS_kill,
            vec![rule(vec![not_self(0)?, arg(0, Dword, Ne, 0)?, arg(0, Dword, Ne, negative)?])?],
        );
        for nr in [libc::SYS_tgkill, libc::SYS_rt_sigqueueinfo, libc::SYS_rt_tgsigqueueinfo] {
            rules.insert(nr, vec![rule(vec![not_self(0)?])?]);
        }
        rules.insert(libc::SYS_pidfd_send_signal, vec![]);
    }
    if !policy.processes {
        rules.insert(libc::SYS_pidfd_open, vec![rule(vec![not_self(0)?])?]);
    }
    rules.insert(libc::SYS_prlimit64, vec![rule(vec![not_self(0)?, arg(0, Dword, Ne, 0)?])?]);
    let device = |index: u8| -> Result<Vec<SeccompRule>, String> {
        let kind = |t: libc::mode_t| arg(index, Dword, MaskedEq(u64::from(libc::S_IFMT)), u64::from(t));
        Ok(vec![rule(vec![kind(libc::S_IFCHR)?])?, rule(vec![kind(libc::S_IFBLK)?])?])
    };
    rules.insert(libc::SYS_mknodat, device(2)?);
    #[cfg(target_arch = "x86_64")]
    rules.insert(libc::SYS_mknod, device(1)?);
    let clone_flag = |flag: libc::c_int, set: bool| {
        let flag = flag as u64;
        arg(0, Qword, MaskedEq(flag), if set { flag } else { 0 })
    };
    if policy.processes {
        rules.insert(libc::SYS_clone, vec![rule(vec![clone_flag(libc::CLONE_NEWUSER, true)?])?]);
    } else {
        rules.insert(libc::SYS_clone, vec![rule(vec![clone_flag(libc::CLONE_THREAD, false)?])?]);
        rules.insert(libc::SYS_execve, vec![]);
        rules.insert(libc::SYS_execveat, vec![]);
        #[cfg(target_arch = "x86_64")]
        {
            rules.insert(libc::SYS_fork, vec![]);
            rules.insert(libc::SYS_vfork, vec![]);
        }
    }
    install(rules, libc::EPERM)?;

    install([(libc::SYS_clone3, vec![])].into_iter().collect(), libc::ENOSYS)
}

/// Drops every capability, after changing to `user` (uid, gid) when given. Call it
/// while this process has one thread: capabilities are per thread, and the threads
/// created afterwards inherit the empty sets.
pub fn drop_privileges(user: Option<(u32, u32)>) -> Result<(), String> {
    os::drop_bounding_and_ambient_capabilities().map_err(|e| format!("dropping capabilities: {e}"))?;
    if let Some((uid, gid)) = user {
        os::set_user(uid, gid).map_err(|e| format!("changing to uid {uid}, gid {gid}: {e}"))?;
    }
    os::clear_capability_sets().map_err(|e| format!("dropping capabilities: {e}"))?;
    match os::capability_counts() {
        (0, 0, _) => Ok(()),
        (p, e, _) => Err(format!("{p} permitted and {e} effective capabilities are left")),
    }
}

/// Gives the worker's writable folders (and everything in them, symlinks not followed)
/// to `uid`:`gid`, before the worker changes to that user.
pub fn give_to_user(dirs: &[PathBuf], uid: u32, gid: u32) -> Result<(), String> {
    fn walk(p: &Path, uid: u32, gid: u32) -> Result<(), String> {
        os::lchown(p, uid, gid).map_err(|e| format!("chown {}: {e}", p.display()))?;
        let meta = std::fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()))? {
                let entry = entry.map_err(|e| format!("{}: {e}", p.display()))?;
                walk(&entry.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    dirs.iter().try_for_each(|d| walk(d, uid, gid))
}

/// Limits this process's address space to what it maps now plus `extra_mb`.
///
/// RLIMIT_AS counts virtual memory: the worker binary, the plugin library and thread
/// stacks are already mapped, so a fixed limit would either not start or not bind. The
/// budget is therefore what the worker uses once loaded, plus the manifest's
/// `max_memory_mb` (the host also sets MALLOC_ARENA_MAX so glibc does not reserve 64 MiB
/// of address space per thread).
pub fn limit_memory(extra_mb: u64, threads: u32) -> Result<u64, String> {
    let now = os::proc_status_bytes("self", "VmSize").ok_or("cannot read VmSize")?;
    // Each worker thread reserves its stack (2 MiB) plus a guard page.
    let stacks = u64::from(threads) * (2 << 20) + (1 << 20);
    let limit = now + stacks + extra_mb * 1024 * 1024;
    os::set_rlimit(libc::RLIMIT_AS, limit, limit).map_err(|e| format!("RLIMIT_AS: {e}"))?;
    Ok(limit)
}

/// Limits open file descriptors.
pub fn limit_open_files(n: u64) -> Result<(), String> {
    os::set_rlimit(libc::RLIMIT_NOFILE, n, n).map_err(|e| format!("RLIMIT_NOFILE: {e}"))
}

/// No core dumps: a crashing worker would write its memory (the plugin's secrets, and
/// maybe more than its disk quota) wherever the system's core pattern says.
pub fn no_core_dumps() -> Result<(), String> {
    os::set_rlimit(libc::RLIMIT_CORE, 0, 0).map_err(|e| format!("RLIMIT_CORE: {e}"))
}

/// Gives the next call `cpu_ms` of CPU time (rounded up to seconds, RLIMIT_CPU's unit)
/// on top of what the process used so far; past it the kernel sends SIGXCPU. Only the
/// soft limit moves, so it can be raised again for the next call.
///
/// The plugin can move that soft limit too, or ignore SIGXCPU: this is the precise,
/// cooperative first line; [`watch_cpu`] in the host is the one the plugin cannot
/// touch.
pub fn budget_cpu_for_next_call(cpu_ms: u64) {
    if cpu_ms == 0 {
        return;
    }
    let used = os::process_cpu_time().as_secs();
    let soft = used + cpu_ms.div_ceil(1000) + 1;
    let _ = os::set_rlimit(libc::RLIMIT_CPU, soft, libc::RLIM_INFINITY);
}

/// The folder a worker writes its temporary files to.
pub fn private_tmp(runtime_dir: &Path, plugin: &str, generation: u64) -> PathBuf {
    runtime_dir.join("tmp").join(format!("{plugin}-{}-{generation}", std::process::id()))
}

/// How much CPU the host's watchdog lets a worker use since its last call started:
/// more than the kernel's soft `RLIMIT_CPU` ever allows (`budget_cpu_for_next_call`:
/// whole seconds, at most one more), so a plugin that leaves its limit alone is always
/// stopped by SIGXCPU first.
pub fn watchdog_limit(cpu_ms: u64) -> Duration {
    Duration::from_secs(cpu_ms.div_ceil(1000) + 1) + Duration::from_millis(500)
}

/// How far back the watchdog looks at the CPU a worker uses with no call in flight.
pub const IDLE_WINDOW: Duration = Duration::from_secs(5);

/// CPU a worker may use within [`IDLE_WINDOW`] while no call is in flight: half a core.
/// An idle plugin only answers pings and routes host replies, far below this.
pub const IDLE_CPU_LIMIT: Duration = Duration::from_millis(2500);

/// The host-side CPU watchdog of one worker, run on a thread of its own until
/// `running` says no: every `tick` it reads the CPU time of the worker and of every
/// process under it from `/proc` ([`os::tree_cpu_time`]); when
/// `calls_started` moved since the last look, a call started, and the count starts
/// over from there. Past [`watchdog_limit`] of CPU since that mark, `kill` is called
/// once with the reason.
///
/// A thread the plugin leaves spinning between calls restarts no count of its own, and
/// a steady stream of short calls would keep resetting the one above; so CPU used while
/// `busy` says no call is in flight is counted apart: more than [`IDLE_CPU_LIMIT`] of
/// it within the last [`IDLE_WINDOW`] of idle time, and the worker is killed too. The
/// plugin cannot reach any of it: it lives in the host.
pub fn watch_cpu(
    pid: u32,
    cpu_ms: u64,
    calls_started: Arc<AtomicU64>,
    busy: impl Fn() -> bool,
    running: impl Fn() -> bool,
    kill: impl FnOnce(String),
) {
    let limit = watchdog_limit(cpu_ms);
    let tick = Duration::from_millis(50);
    let Some(mut mark) = os::tree_cpu_time(pid) else { return };
    let mut seen = calls_started.load(Ordering::SeqCst);
    let (mut last, mut was_busy) = (mark, busy());
    // CPU used in each of the last idle ticks (0 for a tick with a call in it).
    let window = (IDLE_WINDOW.as_millis() / tick.as_millis()) as usize;
    let mut idle = std::collections::VecDeque::with_capacity(window + 1);
    while running() {
        std::thread::sleep(tick);
        let Some(now) = os::tree_cpu_time(pid) else { return };
        let calls = calls_started.load(Ordering::SeqCst);
        let busy_now = busy();
        let idle_tick = !was_busy && !busy_now && calls == seen;
        idle.push_back(if idle_tick { now.saturating_sub(last) } else { Duration::ZERO });
        if idle.len() > window {
            idle.pop_front();
        }
        (last, was_busy) = (now, busy_now);
        let idle_used: Duration = idle.iter().sum();
        if idle_used > IDLE_CPU_LIMIT && running() {
            kill(format!(
                "killed: used {} ms of CPU in {} s with no call in flight (at most {} ms); \
                 it kept a thread spinning between calls",
                idle_used.as_millis(),
                IDLE_WINDOW.as_secs(),
                IDLE_CPU_LIMIT.as_millis()
            ));
            return;
        }
        if calls != seen {
            seen = calls;
            mark = now;
            continue;
        }
        let used = now.saturating_sub(mark);
        if used > limit && running() {
            kill(format!(
                "killed: used {} ms of CPU since its last call started, past its CPU budget \
                 (resources.cpu_time_ms: {cpu_ms} ms, {} ms allowed with RLIMIT_CPU's rounding); \
                 it had lifted its own CPU limit or ignored SIGXCPU",
                used.as_millis(),
                limit.as_millis()
            ));
            return;
        }
    }
}
