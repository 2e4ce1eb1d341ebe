//! The OS calls of the sandboxed tier: the FFI module of the sandbox, and with
//! `runtime/trusted/loader.rs` the only place with `unsafe`. Each block says why it is
//! sound.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The fd of the requests socket (host -> worker) in the worker.
pub const REQUEST_FD: RawFd = 3;
/// The fd of the replies socket (worker -> host) in the worker.
pub const REPLY_FD: RawFd = 4;

/// Prepares `cmd` so the child: has the requests socket `request` as fd 3 and the
/// replies socket `reply` as fd 4, dies when the thread that spawned it dies
/// (`PR_SET_PDEATHSIG`), and leads its own process group (so the host can kill it and
/// anything it forked with one `kill(-pgid)`).
///
/// `PR_SET_PDEATHSIG` fires when the spawning *thread* exits, not the process: spawn
/// workers from a thread that lives as long as the host (see `spawner.rs`).
pub fn configure_child(cmd: &mut Command, request: RawFd, reply: RawFd) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (fcntl, dup2, close, prctl, getppid, setpgid) on
    // plain integers; it allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            // Move both out of the way first, so that placing one cannot clobber the
            // other (either may already be 3 or 4); dup2 clears FD_CLOEXEC.
            let high_request = libc::fcntl(request, libc::F_DUPFD_CLOEXEC, 10);
            check(high_request)?;
            let high_reply = libc::fcntl(reply, libc::F_DUPFD_CLOEXEC, 10);
            check(high_reply)?;
            check(libc::dup2(high_request, REQUEST_FD))?;
            check(libc::dup2(high_reply, REPLY_FD))?;
            check(libc::close(high_request))?;
            check(libc::close(high_reply))?;
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

fn is_socket(fd: RawFd) -> bool {
    // SAFETY: fstat only reads the descriptor's metadata into a zeroed struct we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    }
}

/// Takes ownership of the protocol sockets in the worker: (requests, replies).
///
/// Fails unless fds 3 and 4 are open sockets (the worker was not started by a host).
pub fn adopt_protocol_fds() -> io::Result<(UnixStream, UnixStream)> {
    if !is_socket(REQUEST_FD) || !is_socket(REPLY_FD) {
        return Err(io::Error::other(
            "fds 3 and 4 are not sockets: the worker mode is only started by the host",
        ));
    }
    // SAFETY: fds 3 and 4 are open sockets (checked above) that nothing else in this
    // process owns: the host placed them there for us, and we take them once at start.
    Ok(unsafe { (UnixStream::from_raw_fd(REQUEST_FD), UnixStream::from_raw_fd(REPLY_FD)) })
}

/// A reader that polls a non-blocking socket for a short while before it sleeps in
/// `poll(2)`. A protocol round trip is two thread wake-ups (the worker's reader, the
/// host's reader); waking a thread blocked in `read` costs tens of microseconds on a
/// small VM, more than a trivial call. Spinning for a bounded time after each frame
/// keeps a busy channel hot; an idle one costs nothing (it sleeps in `poll`).
pub struct SpinReader {
    sock: UnixStream,
    budget: Duration,
}

impl SpinReader {
    /// Wraps `sock` (made non-blocking here: use a socket whose writes go through
    /// another file description, or they would become non-blocking too).
    pub fn new(sock: UnixStream, budget: Duration) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        Ok(SpinReader { sock, budget })
    }

    fn wait_readable(&self) -> io::Result<()> {
        let mut pfd = libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        loop {
            // SAFETY: poll reads and writes the one pollfd we own, for the length we pass.
            let n = unsafe { libc::poll(&mut pfd, 1, -1) };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl io::Read for SpinReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let started = std::time::Instant::now();
        let mut spins = 0u32;
        loop {
            match io::Read::read(&mut self.sock, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    spins += 1;
                    // The clock is read every 32 spins; a zero budget sleeps at once.
                    if self.budget.is_zero() || (spins.is_multiple_of(32) && started.elapsed() >= self.budget)
                    {
                        self.wait_readable()?;
                    } else {
                        std::hint::spin_loop();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
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

/// Marks `fd` close-on-exec, so a program the plugin executes does not inherit it.
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an integer descriptor with integer arguments; a bad fd is EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    check(flags)?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) })
}

/// Blocks until the child process `pid` has ended, without reaping it: it stays a
/// zombie, so its pid (and its process group id) cannot be reused until the caller
/// reaps it (`Child::wait`). Unlike the end of its sockets, this cannot be delayed by
/// processes the child forked.
pub fn wait_exited_nowait(pid: u32) -> io::Result<()> {
    loop {
        // SAFETY: waitid writes into a zeroed siginfo_t we own; P_PID with a pid of our
        // own child, WNOWAIT leaves the child waitable.
        let ret = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        match check(ret) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Waits until `fd` can be written to, for at most `timeout`; `false` on timeout.
pub fn wait_writable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    loop {
        // SAFETY: poll reads and writes the one pollfd we own, for the length we pass.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n >= 0 {
            return Ok(n > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
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
