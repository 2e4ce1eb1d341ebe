//! What a worker does to itself before it runs any plugin code: resource limits,
//! landlock filesystem rules, and a seccomp filter against sockets.

use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI,
};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};

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

/// Applies landlock rules to this process (all threads created afterwards inherit them).
/// Returns `true` when the kernel enforces them, `false` when it has no landlock.
pub fn apply_landlock(policy: &FsPolicy) -> Result<bool, String> {
    let abi = ABI::V5;
    let mut read: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
    if policy.network {
        read.extend(NETWORK_READ.iter().map(PathBuf::from));
    }
    read.push(policy.plugin_dir.clone());
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(existing(read), AccessFs::from_read(abi))))
        .and_then(|r| {
            r.add_rules(path_beneath_rules(existing(policy.writable.clone()), AccessFs::from_all(abi)))
        })
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("landlock: {e}"))?;
    Ok(!matches!(status.ruleset, RulesetStatus::NotEnforced))
}

/// Installs a seccomp filter on every thread of this process: `socket()` (and
/// io_uring, which can open sockets without calling it) fail with EACCES.
pub fn deny_sockets() -> Result<(), String> {
    let arch = std::env::consts::ARCH.try_into().map_err(|e| format!("seccomp: {e:?}"))?;
    let rules = [libc::SYS_socket, libc::SYS_io_uring_setup].into_iter().map(|nr| (nr, vec![])).collect();
    let filter =
        SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EACCES as u32), arch)
            .map_err(|e| format!("seccomp: {e}"))?;
    let program: BpfProgram = filter.try_into().map_err(|e| format!("seccomp: {e:?}"))?;
    seccompiler::apply_filter_all_threads(&program).map_err(|e| format!("seccomp: {e}"))
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

/// Gives the next call `cpu_ms` of CPU time (rounded up to seconds, RLIMIT_CPU's unit)
/// on top of what the process used so far; past it the kernel sends SIGXCPU. Only the
/// soft limit moves, so it can be raised again for the next call.
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
