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

/// Serves allocations of 1 MiB and more from their own mappings, returned to the system
/// when freed. glibc's default threshold rises to the largest block freed so far, so a
/// host that once handled a few large payloads (6 MiB cache values, large frames) on
/// many threads keeps that memory in its arenas for good.
pub fn return_large_allocations_to_the_system() {
    // SAFETY: mallopt takes two integers and only changes the allocator's tuning; it is
    // called once at start, before the host's threads allocate large blocks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// `PR_SET_NO_NEW_PRIVS`: exec can no longer grant privileges (required for seccomp and
/// landlock without CAP_SYS_ADMIN).
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
}

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`).
fn cap_last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// How many capabilities this process still has: (permitted, effective, bounding set).
pub fn capability_counts() -> (u32, u32, u32) {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim_start_matches(':').trim(), 16).ok())
            .map_or(u32::MAX, u64::count_ones)
    };
    (field("CapPrm"), field("CapEff"), field("CapBnd"))
}

/// Drops every capability of this thread (and so of every thread it creates): the
/// bounding set (needs CAP_SETPCAP, so it must come before a change of user), the
/// ambient set, and the effective, permitted and inheritable sets.
///
/// A process without CAP_SETPCAP (a host not run as root) cannot shrink its bounding
/// set; that is not an error when it has no capability to begin with, since
/// `PR_SET_NO_NEW_PRIVS` keeps exec from granting any.
pub fn drop_bounding_and_ambient_capabilities() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) })?;
    for cap in 0..=cap_last_cap() {
        // SAFETY: prctl with integer arguments only.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if ret == -1 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // A capability number this kernel does not have.
                Some(libc::EINVAL) => break,
                Some(libc::EPERM) if capability_counts().0 == 0 => return Ok(()),
                _ => return Err(e),
            }
        }
    }
    Ok(())
}

/// Empties this thread's effective, permitted and inheritable capability sets.
pub fn clear_capability_sets() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header { version: VERSION_3, pid: 0 };
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: capset reads one header and two data structs (version 3 layout), which
    // we own and which outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    check(ret as libc::c_int)
}

/// Changes this process's user and group (supplementary groups dropped): needs
/// CAP_SETUID and CAP_SETGID, and removes every capability when `uid` is not 0.
pub fn set_user(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: setgroups reads zero entries; the others take integers.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(gid, gid, gid))?;
        check(libc::setresuid(uid, uid, uid))?;
    }
    Ok(())
}

/// Gives `path` (not following a symlink) to `uid`:`gid`.
pub fn lchown(path: &std::path::Path, uid: u32, gid: u32) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: lchown reads the NUL-terminated path we own.
    check(unsafe { libc::lchown(c.as_ptr(), uid, gid) })
}

fn wait_status(pid: libc::pid_t) -> Option<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into an integer we own.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Some(status);
        }
        if r == -1 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

/// Ends this process the way `status` (a wait status) says another one ended: with the
/// same exit code, or killed by the same signal (no core dump).
fn end_like(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: integer arguments; an empty signal set we own.
        unsafe {
            let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
        exit_now(128 + sig);
    }
    exit_now(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 1 })
}

/// Runs the rest of this process's life in a new pid namespace, so that nothing the
/// plugin starts can outlive the worker: returns in a grandchild (the worker proper,
/// pid 2 there) and never in the caller.
///
/// - The caller (the process the host spawned, and the one it watches) stays outside,
///   waits for its child, and ends the way the worker ended (same exit code, or killed
///   by the same signal), so the host reports the worker's own exit.
/// - The child is the namespace's init (pid 1): it reaps orphans and, when the worker
///   ends, tells the caller how (a pipe) and exits. When the init of a pid namespace
///   ends, the kernel kills every process in it, whatever `setsid` or double forks
///   they did. It dies with the caller (`PR_SET_PDEATHSIG`), and so does the worker.
///
/// Needs CAP_SYS_ADMIN and a process with one thread (then the fork children may run
/// any code); the protocol fds 3 and 4 are closed in the two outer processes.
pub fn enter_pid_namespace() -> io::Result<()> {
    // SAFETY: unshare with a flag only: it applies to the children created from now on.
    check(unsafe { libc::unshare(libc::CLONE_NEWPID) })?;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let (status_read, status_write) = (fds[0], fds[1]);
    // The init's way to know the caller is alive before PR_SET_PDEATHSIG covers it:
    // EOF on this pipe, whose write end only the caller holds.
    // SAFETY: as above.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let (alive_read, alive_write) = (fds[0], fds[1]);
    // SAFETY: one thread (the caller's promise), so the child may run any code.
    let init = unsafe { libc::fork() };
    if init == -1 {
        return Err(io::Error::last_os_error());
    }
    if init > 0 {
        // The outer process: keep nothing of the worker's, wait, end like it.
        // SAFETY: closing descriptors this process owns; reading into a buffer we own.
        unsafe {
            libc::close(status_write);
            libc::close(alive_read);
            libc::close(REQUEST_FD);
            libc::close(REPLY_FD);
        }
        let _ = alive_write;
        let own = wait_status(init).unwrap_or(0);
        let mut buf = [0u8; 4];
        // SAFETY: as above.
        let n = unsafe { libc::read(status_read, buf.as_mut_ptr().cast(), 4) };
        end_like(if n == 4 { libc::c_int::from_ne_bytes(buf) } else { own })
    }
    // The namespace's init.
    // SAFETY: integer arguments and a pollfd we own.
    unsafe {
        libc::close(status_read);
        libc::close(alive_write);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        // The caller may have died before prctl (getppid says 0 in a new namespace
        // either way): then the pipe is at EOF.
        let mut pfd = libc::pollfd { fd: alive_read, events: libc::POLLIN, revents: 0 };
        if libc::poll(&mut pfd, 1, 0) != 0 {
            exit_now(1);
        }
        libc::close(alive_read);
    }
    // SAFETY: one thread here too.
    let worker = unsafe { libc::fork() };
    if worker == -1 {
        return Err(io::Error::last_os_error());
    }
    if worker == 0 {
        // SAFETY: closing a descriptor this process owns; prctl with integers.
        unsafe {
            libc::close(status_write);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        }
        return Ok(());
    }
    // SAFETY: closing descriptors this process owns.
    unsafe {
        libc::close(REQUEST_FD);
        libc::close(REPLY_FD);
    }
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes into an integer we own.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == worker || (r == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)) {
            let bytes = status.to_ne_bytes();
            // SAFETY: writing 4 bytes we own to a pipe we own.
            unsafe { libc::write(status_write, bytes.as_ptr().cast(), 4) };
            exit_now(0);
        }
    }
}

/// CPU time (user + system) used so far by the whole process `pid` and the children it
/// waited for, from `/proc/<pid>/stat` (so with the resolution of the kernel's clock
/// tick).
pub fn cpu_time_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14 to 17, the 12th to 15th after the name.
    let mut ticks = 0u64;
    for i in 11..15 {
        ticks = ticks.saturating_add(fields.get(i)?.parse::<u64>().ok()?);
    }
    // SAFETY: sysconf takes an integer and reads nothing we own.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_nanos(ticks.saturating_mul(1_000_000_000 / hz)))
}

/// The CPU time of `pid` and of every process under it (children found through
/// `/proc/<pid>/task/<tid>/children`, at most 10,000 processes), each with the children
/// it waited for: what a worker and everything it started used.
pub fn tree_cpu_time(pid: u32) -> Option<Duration> {
    let mut total = cpu_time_of(pid)?;
    let mut queue = vec![pid];
    let mut visited = 1usize;
    while let Some(p) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for task in tasks.filter_map(Result::ok) {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
                if visited >= 10_000 {
                    return Some(total);
                }
                visited += 1;
                total += cpu_time_of(child).unwrap_or_default();
                queue.push(child);
            }
        }
    }
    Some(total)
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
        let me = std::process::id();
        let burn = std::time::Instant::now();
        while burn.elapsed() < Duration::from_millis(60) {
            std::hint::spin_loop();
        }
        assert!(cpu_time_of(me).unwrap() >= Duration::from_millis(10));
        assert!(cpu_time_of(u32::MAX).is_none());
        let _ = process_cpu_time();
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(signal_name(64), "signal 64");
    }

    const PROBE: &str = "XCORE_TEST_SECCOMP_PROBE";

    /// The seccomp filters on their own (landlock would deny much of this too, so the
    /// integration tests cannot tell the two apart), in a child process of this test
    /// binary that runs this same test with `PROBE` set.
    #[test]
    fn seccomp_alone_denies_signals_ptrace_limits_devices_and_processes() {
        if std::env::var_os(PROBE).is_some() {
            return seccomp_probe();
        }
        let name = "sandbox::os::tests::seccomp_alone_denies_signals_ptrace_limits_devices_and_processes";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(PROBE, "1")
            .output()
            .unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("seccomp probe passed"), "{text}");
    }

    fn errno_of(ret: i64) -> i32 {
        if ret == -1 {
            io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    }

    fn seccomp_probe() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY (the whole probe): system calls with integer arguments, or pointers to
        // memory owned by this function for the call's duration.
        unsafe {
            let me = libc::getpid();
            let parent = libc::getppid();
            set_no_new_privs().unwrap();
            let policy = super::super::confine::SyscallPolicy {
                network: false,
                processes: false,
                pid: me as u32,
                signals_scoped: false,
            };
            super::super::confine::apply_seccomp(&policy).unwrap();
            assert_eq!(errno_of(libc::kill(parent, 0).into()), libc::EPERM, "kill(parent)");
            assert_eq!(errno_of(libc::kill(-1, 0).into()), libc::EPERM, "kill(-1)");
            assert_eq!(errno_of(libc::kill(me, 0).into()), 0, "kill(self)");
            assert_eq!(errno_of(libc::kill(0, 0).into()), 0, "kill(own group)");
            assert_eq!(errno_of(libc::syscall(libc::SYS_tgkill, parent, parent, 0)), libc::EPERM, "tgkill");
            assert_eq!(errno_of(libc::syscall(libc::SYS_tkill, parent, 0)), libc::EPERM, "tkill");
            assert_eq!(errno_of(libc::ptrace(libc::PTRACE_ATTACH, parent, 0, 0)), libc::EPERM, "ptrace");
            let mut buf = [0u8; 8];
            let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: 8 };
            let remote = libc::iovec { iov_base: 0x40_0000 as *mut libc::c_void, iov_len: 8 };
            let r = libc::process_vm_readv(parent, &local, 1, &remote, 1, 0);
            assert_eq!(errno_of(r as i64), libc::EPERM, "process_vm_readv");
            let mut old = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
            let r = libc::prlimit64(parent, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old);
            assert_eq!(errno_of(r.into()), libc::EPERM, "prlimit64(parent)");
            let r = libc::prlimit64(0, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old);
            assert_eq!(errno_of(r.into()), 0, "prlimit64(self)");
            assert_eq!(errno_of(libc::fork().into()), libc::EPERM, "fork");
            assert_eq!(errno_of(libc::syscall(libc::SYS_clone3, 0, 0)), libc::ENOSYS, "clone3");
            assert_eq!(errno_of(libc::unshare(libc::CLONE_NEWUSER).into()), libc::EPERM, "unshare");
            // Threads still start (glibc falls back from clone3 to clone).
            assert_eq!(std::thread::spawn(|| 7).join().unwrap(), 7);
            assert!(std::process::Command::new("/bin/true").status().is_err(), "exec");
            let node = std::ffi::CString::new(dir.path().join("c").to_str().unwrap()).unwrap();
            let r = libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3));
            assert_eq!(errno_of(r.into()), libc::EPERM, "mknod char");
            let r = libc::mknod(node.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(8, 0));
            assert_eq!(errno_of(r.into()), libc::EPERM, "mknod block");
            let fifo = std::ffi::CString::new(dir.path().join("f").to_str().unwrap()).unwrap();
            assert_eq!(errno_of(libc::mkfifo(fifo.as_ptr(), 0o600).into()), 0, "a FIFO is fine");
            let r = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert_eq!(errno_of(r.into()), libc::EACCES, "socket");
        }
        println!("seccomp probe passed");
    }

    #[test]
    fn rlimits_read_back() {
        let (soft, hard) = get_rlimit(libc::RLIMIT_NOFILE).unwrap();
        assert!(soft <= hard);
    }
}
