//! The SDK through the real host: a real `.so` (the misbehave fixture) loaded by the
//! `xcore` binary, in both tiers: the `log` bridge and `ctx.data_dir()`.

mod common;

use std::time::{Duration, Instant};

use common::{PluginSpec, Server};
use serde_json::{json, Value};

fn trusted(name: &str) -> PluginSpec {
    PluginSpec::with(name, "xcore-fixture-misbehave", "")
}

fn sandboxed(name: &str) -> PluginSpec {
    PluginSpec::with(name, "xcore-fixture-misbehave", "execution_mode: sandboxed\n")
}

fn act(s: &Server, plugin: &str, action: &str, body: Value) -> Value {
    let r = s.call(plugin, action, &body.to_string());
    assert_eq!(r.status, 200, "{plugin}/{action}: {}\n{}", r.body, s.output());
    r.json()
}

/// The server's log lines that contain `needle`.
fn lines_with(s: &Server, needle: &str) -> Vec<String> {
    s.output().lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
}

/// Waits (up to 10 s) until `needle` shows up in the server's log at least `n` times.
fn wait_lines(s: &Server, needle: &str, n: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let lines = lines_with(s, needle);
        if lines.len() >= n || start.elapsed() > Duration::from_secs(10) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn log_macros_reach_the_hosts_log_under_the_plugins_name_in_both_tiers() {
    let s = Server::start(&[trusted("logs_t"), sandboxed("logs_s")]);
    for plugin in ["logs_t", "logs_s"] {
        for level in ["error", "warn", "info", "debug", "trace"] {
            let marker = format!("bridge-{plugin}-{level}-marker");
            let r = act(&s, plugin, "log_macro", json!({ "message": marker, "level": level }));
            // The host's logging.level (debug in the tests) became the plugin's max level.
            assert_eq!(r["max_level"], "DEBUG", "{plugin}: {r}");
        }
        for level in ["error", "warn", "info", "debug"] {
            let marker = format!("bridge-{plugin}-{level}-marker");
            let lines = wait_lines(&s, &marker, 1);
            assert_eq!(lines.len(), 1, "{plugin} {level}: {lines:?}\n{}", s.output());
            assert!(lines[0].contains(&format!("[{plugin}]")), "under the plugin's name: {}", lines[0]);
            assert!(lines[0].to_ascii_lowercase().contains(level), "at its level: {}", lines[0]);
        }
        // Below the host's level: filtered in the plugin, never sent.
        assert!(lines_with(&s, &format!("bridge-{plugin}-trace-marker")).is_empty(), "{}", s.output());
    }
}

#[test]
fn a_trusted_plugins_log_lines_are_bounded_per_second_and_the_drop_is_reported() {
    let s = Server::start_with(&[trusted("noisy")], "plugins:\n  watch: false\n  log_lines_per_second: 5\n");
    let r = act(&s, "noisy", "log_macro", json!({ "message": "flood-line", "n": 200 }));
    assert_eq!(r["logged"], 200);
    std::thread::sleep(Duration::from_millis(300));
    let through = lines_with(&s, "flood-line").len();
    assert!((1..=10).contains(&through), "5 per second, burst 5: {through} lines went through");
    // A second later the budget is back; the next line reports what was dropped.
    std::thread::sleep(Duration::from_millis(1200));
    act(&s, "noisy", "log_macro", json!({ "message": "after-flood" }));
    assert_eq!(wait_lines(&s, "after-flood", 1).len(), 1, "{}", s.output());
    let report = wait_lines(&s, "plugins.log_lines_per_second", 1);
    assert_eq!(report.len(), 1, "{}", s.output());
    assert!(report[0].contains("plugin 'noisy': dropped"), "{}", report[0]);
    let metrics = s.get("/metrics").body;
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("xcore_limit_refusals_total{limit=\"log_lines_per_second\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(refused >= 190.0, "dropped lines are counted: {refused}");
}

#[test]
fn data_dir_is_the_plugins_data_folder_in_both_tiers_created_on_demand() {
    let s = Server::start(&[trusted("files_t"), sandboxed("files_s")]);
    let plugins = std::fs::canonicalize(s.plugins_dir()).unwrap();
    assert!(!plugins.join("files_t/data").exists(), "a trusted plugin's data/ is made on first use only");
    for plugin in ["files_t", "files_s"] {
        let r = act(&s, plugin, "data_dir", json!({ "name": "probe.txt", "text": plugin }));
        let expected = plugins.join(plugin).join("data");
        assert_eq!(r["dir"], expected.to_str().unwrap(), "{plugin}: {r}");
        assert_eq!(r["read_back"], plugin);
        assert_eq!(std::fs::read_to_string(expected.join("probe.txt")).unwrap(), plugin);
    }
    // A restarted instance asks again and gets the same folder, its files still there.
    let r = s.admin("/api/v1/plugins/files_t/reload");
    assert_eq!(r.status, 200, "{}", r.body);
    s.wait_state("files_t", "ready", Duration::from_secs(10));
    let r = act(&s, "files_t", "data_dir", json!({ "name": "second.txt", "text": "again" }));
    assert_eq!(r["dir"], plugins.join("files_t/data").to_str().unwrap());
    assert!(plugins.join("files_t/data/probe.txt").is_file());
}
