//! The sandboxed tier against a hostile plugin (the `hostile` fixture), through the real
//! `xcore` binary and real HTTP. For every attack: the host survives; a steady stream of
//! calls to another sandboxed plugin, each with a marker of its own, is answered
//! correctly throughout; the attacker gets a clear error or is killed and replaced; and
//! nothing the attacker started is left running.
//!
//! These tests run as root here and in CI, so dropping capabilities is part of what
//! they check. Landlock (ABI 7) and seccomp are in force on this machine: nothing skips.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{PluginSpec, Server};
use serde_json::{json, Value};

const EPERM: i64 = 1;
const EACCES: i64 = 13;

fn hostile(name: &str, extra: &str) -> PluginSpec {
    PluginSpec::with(
        name,
        "xcore-fixture-hostile",
        &format!(
            "execution_mode: sandboxed\nrestart: {{ backoff_initial_ms: 20, max_restarts: 50 }}\n\
             health_check: {{ interval_ms: 1000, timeout_ms: 3000 }}\n{extra}"
        ),
    )
}

fn bystander() -> PluginSpec {
    PluginSpec::with(
        "bystander",
        "xcore-fixture-misbehave",
        "execution_mode: sandboxed\nresources: { concurrency: 2, rate_limit: { calls: 1000000, period_seconds: 1 } }",
    )
}

fn start(plugins: Vec<PluginSpec>) -> Server {
    let mut all = plugins;
    all.push(bystander());
    let s = Server::start(&all);
    for p in &all {
        let info = s.wait_state(&p.folder, "ready", Duration::from_secs(30));
        assert_eq!(info["sandbox"]["fs_isolation"], "landlock", "landlock runs on this machine: {info}");
        assert_eq!(info["sandbox"]["seccomp_sockets_denied"], true, "{info}");
    }
    s
}

/// Calls `plugin`'s `action` and returns the reply's JSON (a 200 is required).
fn attack(s: &Server, plugin: &str, action: &str, body: Value) -> Value {
    let r = s.call(plugin, action, &body.to_string());
    assert_eq!(r.status, 200, "{plugin}/{action}: {}", r.body);
    r.json()
}

fn errno(v: &Value) -> i64 {
    v["errno"].as_i64().unwrap_or_else(|| panic!("expected a failed system call, got {v}"))
}

fn pid_of(s: &Server, plugin: &str) -> u64 {
    s.info(plugin)["sandbox"]["pid"].as_u64().expect("a running worker")
}

/// The fields of `/proc/<pid>/stat` after the command name: state, ppid, pgrp, session.
fn proc_stat(pid: u64) -> Option<(String, u64, u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = s[s.rfind(')')? + 2..].split_whitespace().collect();
    Some((rest[0].to_string(), rest[1].parse().ok()?, rest[2].parse().ok()?, rest[3].parse().ok()?))
}

fn all_pids() -> Vec<u64> {
    std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Processes (not zombies) that belong to a worker of `plugin` in this server other
/// than the `allowed` pids: whose command line or environment names the plugin's folder
/// (a fork of a worker keeps both), or whose parent chain, process group or session
/// leads to one of `old_workers`.
fn leftovers(s: &Server, plugin: &str, allowed: &HashSet<u64>, old_workers: &HashSet<u64>) -> Vec<String> {
    let marker = s.plugins_dir().join(plugin).display().to_string();
    let mut found = Vec::new();
    for pid in all_pids() {
        if allowed.contains(&pid) {
            continue;
        }
        let Some((state, ppid, pgid, sid)) = proc_stat(pid) else { continue };
        if state == "Z" || state == "X" {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let named = String::from_utf8_lossy(&cmdline).contains(&marker)
            || String::from_utf8_lossy(&environ).contains(&marker);
        let mut chain = ppid;
        let mut descends = false;
        for _ in 0..64 {
            if old_workers.contains(&chain) {
                descends = true;
                break;
            }
            match proc_stat(chain) {
                Some((_, up, _, _)) if up > 1 => chain = up,
                _ => break,
            }
        }
        if named || descends || old_workers.contains(&pgid) || old_workers.contains(&sid) {
            found.push(format!("pid {pid} (state {state}, ppid {ppid}, pgid {pgid}, sid {sid})"));
        }
    }
    found
}

/// Every process under `pid`.
fn descendants(pid: u64) -> HashSet<u64> {
    let mut found = HashSet::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        for task in std::fs::read_dir(format!("/proc/{p}/task")).into_iter().flatten().flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse::<u64>().ok()) {
                if found.insert(c) {
                    queue.push(c);
                }
            }
        }
    }
    found
}

/// Waits (generously: the machine is shared) until nothing of `plugin` but its current
/// worker runs.
fn assert_nothing_left(s: &Server, plugin: &str, old_workers: &HashSet<u64>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = s.info(plugin);
        let mut allowed = HashSet::new();
        if let Some(pid) = info["sandbox"]["pid"].as_u64() {
            if info["sandbox"]["alive"] == true {
                // With `process`, the worker runs two levels down, in a pid namespace.
                allowed = descendants(pid);
                allowed.insert(pid);
            }
        }
        let left = leftovers(s, plugin, &allowed, old_workers);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{plugin}: still running: {left:?}\n{}", s.output());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `f` while another thread calls the bystander in a loop, each call with a unique
/// marker that its reply must carry. Checks that every call was answered correctly, the
/// host still answers, the attacker is ready again, and nothing of it is left running.
fn under_attack<R>(s: &Server, attacker: &str, what: &str, f: impl FnOnce() -> R) -> R {
    let before = pid_of(s, attacker);
    let stop = AtomicBool::new(false);
    let answered = AtomicU64::new(0);
    let result = std::thread::scope(|scope| {
        let stream = scope.spawn(|| {
            let mut failures = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let marker = format!("{what}-{n}");
                match s.try_post(
                    "/api/v1/plugins/bystander/call/ok",
                    json!({ "marker": marker }).to_string().as_bytes(),
                    None,
                ) {
                    Ok(r) if r.status == 200 && r.json()["payload"]["marker"] == marker.as_str() => {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures.push(format!("{marker}: {} {}", r.status, r.body)),
                    Err(e) => failures.push(format!("{marker}: {e}")),
                }
                if failures.len() >= 5 {
                    break;
                }
                // Steady, not a flood: the machine is shared.
                std::thread::sleep(Duration::from_millis(2));
            }
            failures
        });
        let wait_for = |n: u64| {
            let deadline = Instant::now() + Duration::from_secs(30);
            let target = answered.load(Ordering::SeqCst) + n;
            while answered.load(Ordering::SeqCst) < target
                && Instant::now() < deadline
                && !stream.is_finished()
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        wait_for(5);
        // A failed assertion in `f` still ends the stream, so the scope can end.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _stop = StopOnDrop(&stop);
        let result = f();
        // The stream keeps going while the attacker is replaced.
        s.wait_state(attacker, "ready", Duration::from_secs(30));
        wait_for(20);
        stop.store(true, Ordering::SeqCst);
        let failures = stream.join().unwrap();
        assert!(failures.is_empty(), "{what}: calls to the bystander failed: {failures:?}\n{}", s.output());
        result
    });
    assert!(answered.load(Ordering::SeqCst) >= 25, "{what}: the bystander stream made too few calls");
    assert_eq!(s.get("/health").status, 200, "{what}: the host answers");
    s.wait_state(attacker, "ready", Duration::from_secs(30));
    let mut old = HashSet::from([before]);
    let now = pid_of(s, attacker);
    if now == before {
        old.clear();
    }
    assert_nothing_left(s, attacker, &old);
    result
}

#[test]
fn signals_to_the_host_and_to_other_workers_are_denied() {
    let s = start(vec![hostile("hostile", "")]);
    let ids = attack(&s, "hostile", "ids", json!({}));
    let host = ids["ppid"].as_i64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{host}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("serve"), "the worker's parent is the host");
    let other = pid_of(&s, "bystander") as i64;
    under_attack(&s, "hostile", "kill_parent", || {
        let r = attack(&s, "hostile", "kill_parent", json!({}));
        assert_eq!(errno(&r), EPERM, "{r}");
    });
    for via in ["kill", "tkill", "tgkill", "sigqueue", "pidfd"] {
        for target in [host, other] {
            under_attack(&s, "hostile", &format!("{via}-{target}"), || {
                let r = attack(
                    &s,
                    "hostile",
                    "signal",
                    json!({ "pid": target, "sig": libc::SIGKILL, "via": via }),
                );
                let e = if r.get("step").is_some() { errno(&r["result"]) } else { errno(&r) };
                assert!(e == EPERM || e == EACCES, "{via} to {target}: {r}");
            });
        }
    }
    // kill(-1) would reach every process the worker may signal; signal 0 only asks
    // whether it could (the same permission check), so a failure here harms nobody.
    let r = attack(&s, "hostile", "signal", json!({ "pid": -1, "sig": 0, "via": "kill" }));
    assert_eq!(errno(&r), EPERM, "{r}");
    // The worker can still signal itself (abort, raise).
    let own = ids["pid"].as_i64().unwrap();
    let r = attack(&s, "hostile", "signal", json!({ "pid": own, "sig": 0, "via": "kill" }));
    assert_eq!(r["ok"], 0, "{r}");
    assert_eq!(s.info("hostile")["generation"], 1, "no attack cost the attacker its worker");
}

#[test]
fn ptrace_process_memory_and_other_processes_proc_are_denied() {
    let s = start(vec![hostile("hostile", "")]);
    let host = attack(&s, "hostile", "ids", json!({}))["ppid"].as_i64().unwrap();
    let other = pid_of(&s, "bystander") as i64;
    for target in [host, other] {
        under_attack(&s, "hostile", &format!("ptrace-{target}"), || {
            let r = attack(&s, "hostile", "ptrace", json!({ "pid": target }));
            assert_eq!(errno(&r), EPERM, "{r}");
            let r = attack(&s, "hostile", "vm_read", json!({ "pid": target, "addr": 0x40_0000 }));
            assert_eq!(errno(&r), EPERM, "{r}");
            for file in ["environ", "cmdline", "maps", "status"] {
                let r = attack(&s, "hostile", "read", json!({ "path": format!("/proc/{target}/{file}") }));
                assert_eq!(errno(&r), EACCES, "/proc/{target}/{file}: {r}");
            }
            let r = attack(&s, "hostile", "prlimit_other", json!({ "pid": target }));
            assert_eq!(errno(&r), EPERM, "{r}");
        });
    }
    // Its own /proc entry stays readable (the Rust runtime uses it).
    let r = attack(&s, "hostile", "read", json!({ "path": "/proc/self/status" }));
    assert!(r["ok"].as_str().unwrap().contains("Name:"), "{r}");
}

#[test]
fn capabilities_are_dropped_and_device_nodes_cannot_be_made() {
    let s = start(vec![hostile("hostile", "")]);
    under_attack(&s, "hostile", "caps", || {
        let caps = attack(&s, "hostile", "caps", json!({}))["ok"].clone();
        for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(caps[field], "0000000000000000", "{field}: {caps}");
        }
        assert_eq!(caps["NoNewPrivs"], "1", "{caps}");
        assert_eq!(caps["Seccomp"], "2", "{caps}");
        let r = attack(&s, "hostile", "raise_limits", json!({}));
        assert_eq!(errno(&r["as"]), EPERM, "{r}");
        assert_eq!(errno(&r["nofile"]), EPERM, "{r}");
    });
    under_attack(&s, "hostile", "mknod", || {
        // 1:11 is /dev/kmsg, 8:0 the first disk.
        for (major, minor) in [(1, 11), (8, 0)] {
            let r = attack(
                &s,
                "hostile",
                "mknod",
                json!({ "path": format!("node-{major}-{minor}"), "major": major, "minor": minor }),
            );
            assert_eq!(errno(&r["mknod"]), EPERM, "{r}");
            assert!(r["open"]["errno"].is_i64(), "{r}");
            assert!(!s.plugins_dir().join(format!("hostile/data/node-{major}-{minor}")).exists());
        }
        let r = attack(&s, "hostile", "read", json!({ "path": "/dev/kmsg" }));
        assert_eq!(errno(&r), EACCES, "{r}");
    });
}

#[test]
fn raising_its_cpu_limit_then_spinning_gets_the_worker_killed_and_replaced() {
    let s = start(vec![hostile("hostile", "resources: { timeout_ms: 60000, cpu_time_ms: 300 }")]);
    under_attack(&s, "hostile", "raise_cpu_and_spin", || {
        let r = s.call("hostile", "raise_cpu_and_spin", "{}");
        assert_eq!((r.status, r.code().as_str()), (502, "plugin_crashed"), "{}", r.body);
        let detail = r.json()["detail"].as_str().unwrap_or_default().to_string();
        assert!(detail.contains("CPU") && detail.contains("300 ms"), "{detail}");
    });
    let info = s.info("hostile");
    assert_eq!(info["generation"], 2, "{info}");
    assert!(info["sandbox"]["last_exit"].as_str().unwrap().contains("CPU"), "{info}");
    assert_eq!(attack(&s, "hostile", "ok", json!({}))["ok"], true);
}

#[test]
fn a_thread_left_spinning_between_short_calls_gets_the_worker_killed_and_replaced() {
    let s = start(vec![hostile("hostile", "resources: { timeout_ms: 60000, cpu_time_ms: 300 }")]);
    under_attack(&s, "hostile", "spin_in_background", || {
        assert_eq!(attack(&s, "hostile", "spin_in_background", json!({}))["spinning"], true);
        // Short calls keep coming, as a busy client's would: each one alone is cheap.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let info = s.info("hostile");
            if info["generation"] == 2 && info["state"] == "ready" {
                let exit = info["sandbox"]["last_exit"].as_str().unwrap_or_default().to_string();
                assert!(exit.contains("no call in flight"), "{info}");
                break;
            }
            assert!(Instant::now() < deadline, "the spinning worker was never stopped: {info}");
            let _ = s.try_post("/api/v1/plugins/hostile/call/ok", b"{}", None);
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    assert_eq!(attack(&s, "hostile", "ok", json!({}))["ok"], true);
}

#[test]
fn new_processes_are_denied_without_the_process_permission() {
    let s = start(vec![hostile("hostile", "")]);
    under_attack(&s, "hostile", "fork", || {
        let r = attack(&s, "hostile", "fork_setsid", json!({ "n": 200 }));
        assert_eq!(r["forked"], 0, "{r}");
        assert_eq!(errno(&r["first_failure"]), EPERM, "{r}");
        let r = attack(&s, "hostile", "exec", json!({}));
        assert!(r["errno"].is_i64(), "{r}");
    });
}

fn wait_gone(s: &Server, plugin: &str, workers: &HashSet<u64>) {
    assert_nothing_left(s, plugin, workers);
}

#[test]
fn with_the_process_permission_nothing_outlives_the_worker() {
    let s = start(vec![hostile("forker", "permissions: [process]\nresources: { timeout_ms: 2000 }")]);
    // Retired by a reload: the old worker's 200 setsid children go with it.
    under_attack(&s, "forker", "fork-reload", || {
        let worker = pid_of(&s, "forker");
        let r = attack(&s, "forker", "fork_setsid", json!({ "n": 200 }));
        assert_eq!(r["forked"], 200, "{r}");
        let r = s.admin("/api/v1/plugins/forker/reload");
        assert_eq!(r.status, 200, "{}", r.body);
        s.wait_state("forker", "ready", Duration::from_secs(30));
        wait_gone(&s, "forker", &HashSet::from([worker]));
    });
    // Killed past its deadline: the same.
    under_attack(&s, "forker", "fork-kill", || {
        let worker = pid_of(&s, "forker");
        let r = attack(&s, "forker", "fork_setsid", json!({ "n": 200 }));
        assert_eq!(r["forked"], 200, "{r}");
        let r = s.call("forker", "spin", "{}");
        assert_eq!(r.status, 504, "{}", r.body);
        s.wait_state("forker", "ready", Duration::from_secs(30));
        wait_gone(&s, "forker", &HashSet::from([worker]));
    });
    // A worker in its namespace that dies of a signal is reported with that signal.
    under_attack(&s, "forker", "fork-crash", || {
        let worker = pid_of(&s, "forker");
        let r = attack(&s, "forker", "fork_setsid", json!({ "n": 20 }));
        assert_eq!(r["forked"], 20, "{r}");
        // abort() raises SIGABRT on the calling thread: it dies before it can reply.
        let r = s.call("forker", "abort", "{}");
        assert_eq!((r.status, r.code().as_str()), (502, "plugin_crashed"), "{}", r.body);
        assert!(r.body.contains("killed by SIGABRT"), "{}", r.body);
        s.wait_state("forker", "ready", Duration::from_secs(30));
        wait_gone(&s, "forker", &HashSet::from([worker]));
    });
    // And the plugin's own exec works.
    let r = attack(&s, "forker", "exec", json!({}));
    assert_eq!(r["ok"], "spawned\n", "{r}");
}

#[test]
fn the_network_stays_denied() {
    let s = start(vec![hostile("hostile", "")]);
    let port = s.base.rsplit(':').next().unwrap().to_string();
    under_attack(&s, "hostile", "connect", || {
        for addr in ["127.0.0.1:5432".to_string(), format!("127.0.0.1:{port}")] {
            let r = attack(&s, "hostile", "connect", json!({ "addr": addr }));
            assert_eq!(errno(&r), EACCES, "{addr}: {r}");
        }
    });
}

#[test]
fn writing_outside_data_is_denied() {
    let s = start(vec![hostile("hostile", "")]);
    let folder = s.plugins_dir().join("hostile");
    under_attack(&s, "hostile", "write", || {
        for path in [
            folder.join("planted.txt"),
            folder.join("plugin.yaml"),
            "/tmp/hostile-planted".into(),
            "/root/hostile-planted".into(),
        ] {
            let r = attack(&s, "hostile", "write", json!({ "path": path }));
            assert_eq!(errno(&r), EACCES, "{}: {r}", path.display());
        }
        let r = attack(&s, "hostile", "write", json!({ "path": "inside.txt" }));
        assert_eq!(r["ok"], "written", "{r}");
    });
    assert!(!folder.join("planted.txt").exists());
    assert!(!std::path::Path::new("/tmp/hostile-planted").exists());
    assert!(folder.join("data/inside.txt").is_file());
}

#[test]
fn the_disk_quota_counts_the_private_tmpdir() {
    let s = start(vec![hostile("hostile", "resources: { max_disk_mb: 1 }")]);
    under_attack(&s, "hostile", "tmp", || {
        // The call that writes it is over on the way out, and the next one before it runs.
        let r = s.call("hostile", "write_tmp", &json!({ "bytes": 2 << 20 }).to_string());
        assert_eq!((r.status, r.code().as_str()), (507, "disk_quota"), "{}", r.body);
        let r = s.call("hostile", "ok", "{}");
        assert_eq!((r.status, r.code().as_str()), (507, "disk_quota"), "{}", r.body);
    });
}

#[test]
fn the_disk_quota_counts_key_value_entries() {
    let s = start(vec![hostile("hostile", "permissions: [kv]\nresources: { max_disk_mb: 1 }")]);
    under_attack(&s, "hostile", "kv", || {
        let r = s.call("hostile", "kv_fill", &json!({ "n": 3, "bytes": 500_000 }).to_string());
        assert_eq!((r.status, r.code().as_str()), (507, "disk_quota"), "{}", r.body);
        assert!(r.body.contains("key-value"), "{}", r.body);
        let r = s.call("hostile", "ok", "{}");
        assert_eq!((r.status, r.code().as_str()), (507, "disk_quota"), "{}", r.body);
    });
}

#[test]
fn with_sandbox_user_the_worker_runs_unprivileged() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let plugins = [hostile("hostile", ""), bystander()];
    let s = Server::start_custom(
        |dir| {
            common::write_plugins(dir, &plugins);
            // The worker's folders must be reachable by that user.
            let root = dir.parent().unwrap();
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        },
        "sandbox:\n  user: nobody\n",
        &[],
        &[],
    );
    s.wait_state("hostile", "ready", Duration::from_secs(30));
    under_attack(&s, "hostile", "user", || {
        let caps = attack(&s, "hostile", "caps", json!({}))["ok"].clone();
        assert!(caps["Uid"].as_str().unwrap().starts_with("65534"), "{caps}");
        assert!(caps["Gid"].as_str().unwrap().starts_with("65534"), "{caps}");
        assert_eq!(caps["CapEff"], "0000000000000000", "{caps}");
        assert_eq!(caps["CapBnd"], "0000000000000000", "{caps}");
        assert_eq!(attack(&s, "hostile", "write", json!({ "path": "mine.txt" }))["ok"], "written");
        assert_eq!(attack(&s, "hostile", "write_tmp", json!({ "bytes": 10 }))["ok"], 10);
        let r = attack(&s, "hostile", "read", json!({ "path": s.dir.path().join("xcore.yaml") }));
        assert_eq!(errno(&r), EACCES, "{r}");
    });
    let owner = std::fs::metadata(s.plugins_dir().join("hostile/data/mine.txt")).unwrap().uid();
    assert_eq!(owner, 65534);
    assert_eq!(
        attack(&s, "bystander", "ok", json!({}))["ok"],
        true,
        "every sandboxed plugin runs as that user"
    );
}

#[test]
fn with_network_granted_abstract_unix_sockets_outside_stay_out_of_reach() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("xcore-hostile-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let s = Server::start(&[hostile("hostile", "permissions: [network]"), bystander()]);
    s.wait_state("hostile", "ready", Duration::from_secs(30));
    under_attack(&s, "hostile", "abstract", || {
        let r = attack(&s, "hostile", "connect_abstract", json!({ "name": name }));
        assert_eq!(errno(&r), EPERM, "{r}");
        // Sockets themselves are allowed: the refusal is landlock's scope.
        let r = attack(&s, "hostile", "connect", json!({ "addr": "127.0.0.1:9" }));
        assert_ne!(r["errno"], EACCES, "{r}");
    });
}
