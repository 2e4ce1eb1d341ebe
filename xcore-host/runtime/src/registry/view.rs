//! What the registry shows: `PluginInfo` snapshots (the JSON views of the API), names,
//! counts by state, and the gauges refreshed before a scrape.

use super::*;
use xcore_plugin_abi::describe::PluginDescription;

/// A snapshot of one plugin for the API.
#[derive(Debug, Serialize)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// State.
    pub state: PluginState,
    /// Version from the manifest (absent when the manifest is unreadable).
    pub version: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Author.
    pub author: Option<String>,
    /// `trusted` or `sandboxed`.
    pub execution_mode: Option<String>,
    /// The manifest's api_version range.
    pub api_version: Option<String>,
    /// The contract version the loaded library was compiled against.
    pub compiled_api_version: Option<String>,
    /// The folder.
    pub dir: PathBuf,
    /// Limits from the manifest.
    pub limits: Option<serde_json::Value>,
    /// Restart policy.
    pub restart_policy: Option<serde_json::Value>,
    /// Declared routes.
    pub routes: Vec<serde_json::Value>,
    /// Requirements.
    pub requires: Vec<String>,
    /// Counters.
    pub counters: serde_json::Value,
    /// Restarts performed.
    pub restarts: u64,
    /// Failures within the restart policy's `within_seconds` now: what its
    /// `max_restarts` is counted against.
    pub restarts_in_window: Option<usize>,
    /// Worker threads stuck inside a call they started, past its deadline.
    pub abandoned_threads: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Seconds since the current instance became ready.
    pub uptime_seconds: Option<f64>,
    /// How long the last load took, in milliseconds.
    pub load_time_ms: Option<f64>,
    /// Which instance serves (1 = first load).
    pub generation: u64,
    /// Worker process details (sandboxed plugins): pid, RSS, last exit, disk use,
    /// filesystem isolation.
    pub sandbox: Option<serde_json::Value>,
    /// Fingerprint of the key that signed the loaded version, if it was checked.
    pub signed_by: Option<String>,
    /// Permissions of the loaded version: `requested` (manifest), `granted` (each with
    /// its `source`: `signature` or `config`), `effective` and `denied`.
    pub permissions: Option<serde_json::Value>,
}

impl PluginRegistry {
    /// Names of every known plugin.
    pub fn names(&self) -> Vec<String> {
        self.slots.read().keys().cloned().collect()
    }

    /// Counts of plugins by state.
    pub fn counts_by_state(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for s in self.slots.read().values() {
            *counts.entry(s.state().as_str()).or_insert(0) += 1;
        }
        counts
    }

    /// The serving plugins that describe their actions (`#[plugin]`), with the manifest
    /// they were loaded with, in name order: what the OpenAPI document lists of them.
    pub fn described(&self) -> Vec<(Arc<Manifest>, Arc<PluginDescription>)> {
        let slots: Vec<Arc<PluginSlot>> = self.slots.read().values().cloned().collect();
        slots
            .iter()
            .filter(|s| s.state() == PluginState::Ready)
            .filter_map(|s| {
                let manifest = s.manifest.load_full()?;
                let description = s.instance.load_full()?.description()?.clone();
                description.actions.is_some().then_some((manifest, description))
            })
            .collect()
    }

    /// A snapshot of one plugin.
    pub fn info(&self, name: &str) -> Option<PluginInfo> {
        let slot = self.slot(name)?;
        let m = slot.manifest.load_full();
        let inner = slot.inner.lock();
        let c = &slot.counters;
        let instance = slot.instance.load_full();
        Some(PluginInfo {
            name: slot.name.clone(),
            state: slot.state(),
            version: m.as_ref().map(|m| m.version.to_string()),
            description: m.as_ref().map(|m| m.description.clone()),
            author: m.as_ref().map(|m| m.author.clone()),
            execution_mode: m.as_ref().map(|m| m.execution_mode.to_string()),
            api_version: m.as_ref().map(|m| m.api_version.to_string()),
            compiled_api_version: instance.as_ref().map(|i| i.api_version().to_string()),
            dir: slot.dir.clone(),
            limits: m.as_ref().map(|m| {
                let r = &m.resources;
                serde_json::json!({
                    "timeout_ms": r.timeout_ms,
                    "concurrency": r.concurrency,
                    "max_memory_mb": r.max_memory_mb,
                    "max_disk_mb": r.max_disk_mb,
                    "cpu_time_ms": r.cpu_time_ms,
                    "max_open_files": r.max_open_files,
                    "rate_limit": {
                        "calls": r.rate_limit.calls,
                        "period_seconds": r.rate_limit.period_seconds,
                        "per_client": r.rate_limit.per_client,
                    },
                    "queue_timeout_ms": r.queue_timeout_ms.unwrap_or(self.opts.queue_timeout.as_millis() as u64),
                })
            }),
            restart_policy: m.as_ref().map(|m| {
                let p = &m.restart;
                serde_json::json!({
                    "max_restarts": p.max_restarts,
                    "within_seconds": p.within_seconds,
                    "backoff_initial_ms": p.backoff_initial_ms,
                    "backoff_max_ms": p.backoff_max_ms,
                })
            }),
            routes: m
                .as_ref()
                .map(|m| {
                    m.routes
                        .iter()
                        .map(|r| serde_json::json!({"method": r.method, "path": r.path, "action": r.action}))
                        .collect()
                })
                .unwrap_or_default(),
            requires: m
                .as_ref()
                .map(|m| m.requires.iter().map(|r| format!("{} {}", r.name, r.version)).collect())
                .unwrap_or_default(),
            counters: serde_json::json!({
                "calls": c.calls.load(Ordering::Relaxed),
                "errors": c.errors.load(Ordering::Relaxed),
                "panics": c.panics.load(Ordering::Relaxed),
                "timeouts": c.timeouts.load(Ordering::Relaxed),
                "rate_limited": c.rate_limited.load(Ordering::Relaxed),
                "rate_limited_per_client": c.rate_limited_per_client.load(Ordering::Relaxed),
                "overloaded": c.overloaded.load(Ordering::Relaxed),
                "shed": slot.gauges.shed_calls.load(Ordering::Relaxed),
            }),
            restarts: inner.tracker.total(),
            restarts_in_window: m.as_ref().map(|m| {
                inner.tracker.in_window(std::time::Duration::from_secs(m.restart.within_seconds), Instant::now())
            }),
            abandoned_threads: slot.gauges.abandoned_threads.load(Ordering::Relaxed),
            last_error: inner.last_error.clone(),
            uptime_seconds: inner.ready_since.map(|t| t.elapsed().as_secs_f64()),
            load_time_ms: inner.load_time.map(|d| d.as_secs_f64() * 1e3),
            generation: inner.generation,
            signed_by: inner.signed_by.clone(),
            permissions: inner.grants.as_ref().map(|g| g.to_json()),
            sandbox: m.as_ref().filter(|m| m.execution_mode == ExecutionMode::Sandboxed).map(|m| {
                let mut v = instance.as_ref().and_then(|i| i.sandbox_status()).unwrap_or_else(|| serde_json::json!({}));
                v["last_exit"] = serde_json::json!(inner.last_exit);
                v["disk_bytes"] = serde_json::json!(
                    sandbox::disk::plugin_usage(&m.dir.join("data"), &self.opts.runtime_dir, &m.name).ok()
                );
                v["disk_quota_bytes"] = serde_json::json!(m.resources.max_disk_mb * 1024 * 1024);
                v["network"] = serde_json::json!(m.permissions.iter().any(|p| p == "network"));
                if v.get("fs_isolation").is_none() {
                    v["fs_isolation"] = serde_json::json!(null);
                }
                v
            }),
        })
    }

    /// Refreshes the gauges that mirror state, just before a scrape.
    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        for s in self.slots.read().values() {
            let current = s.state();
            for st in PluginState::ALL {
                m.state.with_label_values(&[s.name.as_str(), st.as_str()]).set(i64::from(st == current));
            }
            m.abandoned_threads
                .with_label_values(&[s.name.as_str()])
                .set(s.gauges.abandoned_threads.load(Ordering::Relaxed) as i64);
            m.rate_limit_clients
                .with_label_values(&[s.name.as_str()])
                .set(s.client_limiter.lock().tracked() as i64);
        }
        m.abandoned_threads_limit.set(self.opts.max_abandoned_threads as i64);
        m.mapped_libraries.set(loader::mapped_libraries() as i64);
        self.resources.refresh_gauges(m);
    }
}
