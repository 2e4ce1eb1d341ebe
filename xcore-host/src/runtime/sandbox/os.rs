//! The OS calls of the sandboxed tier: the FFI module of the sandbox, and with
//! `runtime/trusted/loader.rs` the only place with `unsafe`. Each block says why it is
//! sound.

use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// The fd number the protocol socket gets in the worker.
pub const PROTOCOL_FD: RawFd = 3;

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Prepares `cmd` so the child: has the protocol socket `fd` as fd 3, dies when the
/// thread that spawned it dies (`PR_SET_PDEATHSIG`), and leads its own process group
/// (so the host can kill it and anything it forked with one `kill(-pgid)`).
///
/// `PR_SET_PDEATHSIG` fires when the spawning *thread* exits, not the process: spawn
/// workers from a thread that lives as long as the host (see `spawner.rs`).
pub fn configure_child(cmd: &mut Command, fd: RawFd) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (dup2, fcntl, prctl, getppid, setpgid) on plain
    // integers; it allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            if fd == PROTOCOL_FD {
                // dup2 onto itself would keep FD_CLOEXEC: clear it instead.
                let flags = libc::fcntl(fd, libc::F_GETFD);
                check(flags)?;
                check(libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC))?;
            } else {
                check(libc::dup2(fd, PROTOCOL_FD))?;
            }
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0))?;
            // The parent may have died between fork and prctl: then nobody will.
            if libc::getppid() != parent {
                return Err(io::Error::other("host exited while spawning the worker"));
            }
            check(libc::setpgid(0, 0))?;
            Ok(())
        });
    }
}

/// Takes ownership of the protocol socket in the worker.
///
/// Fails unless fd 3 is an open socket (the worker was not started by a host).
pub fn adopt_protocol_fd() -> io::Result<UnixStream> {
    // SAFETY: fstat only reads the descriptor's metadata into a zeroed struct we own.
    let is_socket = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(PROTOCOL_FD, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    };
    if !is_socket {
        return Err(io::Error::other("fd 3 is not a socket: the worker mode is only started by the host"));
    }
    // SAFETY: fd 3 is an open socket (checked above) that nothing else in this process
    // owns: the host placed it there for us, and we take it exactly once at start.
    Ok(unsafe { UnixStream::from_raw_fd(PROTOCOL_FD) })
}

/// Sends `signal` to the whole process group `pgid`.
pub fn kill_group(pgid: u32, signal: libc::c_int) {
    // SAFETY: kill takes plain integers; a stale pgid only yields ESRCH, ignored.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), signal);
    }
}

/// Sets a resource limit of this process.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: setrlimit reads the struct we pass by reference.
    check(unsafe { libc::setrlimit(resource, &lim) })
}

/// Reads a resource limit of this process: (soft, hard).
pub fn get_rlimit(resource: libc::__rlimit_resource_t) -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    check(unsafe { libc::getrlimit(resource, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// CPU time (user + system) used so far by this process.
pub fn process_cpu_time() -> Duration {
    // SAFETY: getrusage writes into a zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// `PR_SET_NO_NEW_PRIVS`: exec can no longer grant privileges (required for seccomp and
/// landlock without CAP_SYS_ADMIN).
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
}

/// Immediately ends the process without running destructors or atexit handlers (the
/// plugin's statics may be in any state).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is always safe to call.
    unsafe { libc::_exit(code) }
}

/// The conventional name of a signal number.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmSize`...), if readable.
pub fn proc_status_bytes(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kb: u64 = line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_cpu() {
        assert!(proc_status_bytes("self", "VmRSS").unwrap() > 0);
        assert!(proc_status_bytes("self", "VmSize").unwrap() >= proc_status_bytes("self", "VmRSS").unwrap());
        assert!(proc_status_bytes("self", "NoSuchField").is_none());
        let _ = process_cpu_time();
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(signal_name(64), "signal 64");
    }

    #[test]
    fn rlimits_read_back() {
        let (soft, hard) = get_rlimit(libc::RLIMIT_NOFILE).unwrap();
        assert!(soft <= hard);
    }
}
