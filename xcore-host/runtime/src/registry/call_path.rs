//! The call path: slot lookup, state check, rate limits, the disk quota, the
//! re-entrancy check, the instance call and what its outcome does to the slot.

use super::*;
use xcore_plugin_abi::describe::RESERVED_PREFIX;

impl PluginRegistry {
    /// The plugin's quota check: the blocks of `data/` and of its private temporary
    /// folders, plus its key-value entries when it may write some (`kv`), measured on
    /// the blocking pool. What cannot be measured counts as over the quota.
    pub(super) async fn check_quota(
        &self,
        m: &Manifest,
        dir: &Path,
        limit: u64,
        when: &str,
    ) -> Option<CallFailure> {
        let (dir, runtime, plugin) = (dir.to_path_buf(), self.opts.runtime_dir.clone(), m.name.clone());
        let stores_entries = m.permissions.iter().any(|p| p == "kv");
        let resources = stores_entries.then(|| self.resources.clone());
        let measure = move || -> Result<u64, String> {
            let disk = sandbox::disk::plugin_usage(&dir, &runtime, &plugin).map_err(|e| e.to_string())?;
            let stored = match &resources {
                Some(r) => r
                    .stored_bytes(&plugin)
                    .map_err(|e| format!("cannot measure its key-value entries: {e}"))?,
                None => 0,
            };
            Ok(disk.saturating_add(stored))
        };
        // Database work never runs on an async worker; a walk of the plugin's own small
        // folders does, as before, rather than pay a thread hop twice per call.
        let measured = if stores_entries {
            tokio::task::spawn_blocking(measure).await.unwrap_or_else(|e| Err(e.to_string()))
        } else {
            measure()
        };
        let detail = match measured {
            Ok(used) if used <= limit => return None,
            Ok(used) => format!(
                "data/, its temporary folder and its key-value entries use {used} bytes {when} the call; \
                 the quota is {limit} bytes"
            ),
            Err(e) => format!("{e} {when} the call: counted as over the quota of {limit} bytes"),
        };
        Some(CallFailure::DiskQuota { name: m.name.clone(), detail })
    }
}

/// Counts a call inside an instance, and keeps its event-chain position registered,
/// for as long as it lives.
pub(super) struct InFlight<'a> {
    count: &'a AtomicU32,
    origin: Option<(&'a Mutex<std::collections::HashMap<String, CallOrigin>>, String)>,
}

impl<'a> InFlight<'a> {
    pub(super) fn enter(
        count: &'a AtomicU32,
        origin: Option<(&'a Mutex<std::collections::HashMap<String, CallOrigin>>, String)>,
    ) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight { count, origin }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        if let Some((origins, key)) = &self.origin {
            origins.lock().remove(key);
        }
    }
}

impl PluginRegistry {
    /// Calls `input.action` on plugin `name`: state check, rate limit, then the
    /// instance's worker under the manifest's deadline. No per-client limit applies (the
    /// host's own calls: events, jobs, plugin-to-plugin); see [`PluginRegistry::call_from`].
    pub async fn call(self: &Arc<Self>, name: &str, input: CallInput) -> Result<Vec<u8>, CallFailure> {
        self.call_from(name, input, || None).await
    }

    /// [`PluginRegistry::call`] on behalf of `client` (an HTTP client's address or the
    /// value of `server.client_ip_header`), which the plugin's per-client rate limit
    /// (`resources.rate_limit.per_client`) counts. `client` is asked only when that limit
    /// is on, so a plugin without it pays nothing for the client's identity.
    pub async fn call_from(
        self: &Arc<Self>,
        name: &str,
        input: CallInput,
        client: impl FnOnce() -> Option<String>,
    ) -> Result<Vec<u8>, CallFailure> {
        let slot = self.slot(name).ok_or_else(|| CallFailure::UnknownPlugin(name.to_string()))?;
        // Reserved actions are the host's questions to the plugin (its description), asked
        // at load; nobody calls them through here.
        if input.action.starts_with(RESERVED_PREFIX) {
            return Err(CallFailure::Plugin {
                code: codes::UNKNOWN_ACTION.into(),
                message: format!(
                    "plugin '{name}' has no action '{}': names starting with '{RESERVED_PREFIX}' are reserved for the host",
                    input.action
                ),
                status: 404,
            });
        }
        let instance = match (slot.state(), slot.instance.load_full()) {
            (PluginState::Ready, Some(i)) => i,
            (state, _) => {
                return Err(CallFailure::Unavailable {
                    name: name.to_string(),
                    state: state.to_string(),
                    detail: slot.inner.lock().last_error.clone(),
                })
            }
        };
        let manifest = slot.manifest.load();
        let Some(manifest) = manifest.as_ref() else {
            return Err(CallFailure::Unavailable {
                name: name.into(),
                state: "loading".into(),
                detail: None,
            });
        };
        slot.counters.calls.fetch_add(1, Ordering::Relaxed);
        slot.metrics.calls.inc();
        let rl = &manifest.resources.rate_limit;
        let now = Instant::now();
        // The client's own window first: a client over its limit must not use up the
        // plugin-wide window for everybody else.
        if let Some(client) = (rl.per_client > 0).then(client).flatten() {
            let verdict = slot.client_limiter.lock().check(&client, now);
            if verdict.overflow {
                slot.metrics.client_overflow.inc();
            }
            if let Err(retry_after) = verdict.admitted {
                slot.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                slot.counters.rate_limited_per_client.fetch_add(1, Ordering::Relaxed);
                slot.metrics.rate_limited.inc();
                slot.metrics.client_rate_limited.inc();
                return Err(CallFailure::RateLimited {
                    name: name.to_string(),
                    per_client: true,
                    calls: rl.per_client,
                    period_seconds: rl.period_seconds,
                    retry_after,
                });
            }
        }
        if let Err(retry_after) = slot.limiter.lock().check(now) {
            slot.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            slot.metrics.rate_limited.inc();
            return Err(CallFailure::RateLimited {
                name: name.to_string(),
                per_client: false,
                calls: rl.calls,
                period_seconds: rl.period_seconds,
                retry_after,
            });
        }
        let timeout_ms = manifest.resources.timeout_ms;
        // 0 means no deadline.
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
        let queue_timeout =
            manifest.resources.queue_timeout_ms.map(Duration::from_millis).unwrap_or(self.opts.queue_timeout);
        let quota = disk_quota(manifest);
        if let Some((dir, limit)) = &quota {
            if let Some(f) = self.check_quota(manifest, dir, *limit, "before").await {
                slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                slot.metrics.error("disk_quota");
                return Err(f);
            }
        }
        let action = input.action.clone();
        // A handler's call into a plugin that waits on the same event chain, with every
        // call slot taken, would wait for itself until its deadline.
        let origin_key = match &input.origin {
            Some(origin) => {
                let concurrency = manifest.resources.concurrency;
                if origin.chain.iter().any(|p| p == name)
                    && slot.counters.in_flight.load(Ordering::SeqCst) >= concurrency
                {
                    slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                    slot.metrics.error("reentrant_call");
                    return Err(CallFailure::Reentrant { name: name.to_string(), concurrency });
                }
                let mut chain = origin.chain.clone();
                chain.push(name.to_string());
                let key = input.request_id.clone();
                self.origins.lock().insert(key.clone(), CallOrigin { depth: origin.depth, chain });
                Some(key)
            }
            None => None,
        };
        let started = Instant::now();
        let outcome = {
            // Undone on every path, the future being dropped (a handler timeout, a
            // client gone) included.
            let _in_flight =
                InFlight::enter(&slot.counters.in_flight, origin_key.map(|k| (&self.origins, k)));
            instance.call(input, timeout, queue_timeout).await
        };
        // A call that never started says nothing about the plugin's latency.
        if !matches!(outcome, Err(InstanceError::Overloaded(_))) {
            slot.metrics.latency.observe(started.elapsed().as_secs_f64());
        }
        match outcome {
            Ok(Ok(bytes)) => {
                slot.counters.panics_in_a_row.store(0, Ordering::Relaxed);
                if let Some((dir, limit)) = &quota {
                    if let Some(f) = self.check_quota(manifest, dir, *limit, "after").await {
                        slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                        slot.metrics.error("disk_quota");
                        return Err(f);
                    }
                }
                Ok(bytes)
            }
            Ok(Err(e)) => {
                slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                slot.metrics.error(&e.code);
                if e.code == codes::PLUGIN_PANIC {
                    slot.counters.panics.fetch_add(1, Ordering::Relaxed);
                    let streak = slot.counters.panics_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                    if streak >= PANICS_IN_A_ROW_IS_A_CRASH {
                        self.on_instance_failure(
                            &slot,
                            instance.generation(),
                            format!("{streak} panics in a row; last: {}", e.message),
                        );
                    }
                } else {
                    slot.counters.panics_in_a_row.store(0, Ordering::Relaxed);
                }
                Err(CallFailure::Plugin { code: e.code, message: e.message, status: e.status })
            }
            Err(InstanceError::Crashed(reason)) => {
                // The death itself is reported by the worker's watcher, at once.
                slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                slot.metrics.error("plugin_crashed");
                Err(CallFailure::Crashed { name: name.to_string(), reason })
            }
            Err(InstanceError::TooLarge(detail)) => {
                slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                slot.metrics.error("payload_too_large");
                Err(CallFailure::TooLarge(detail))
            }
            Err(InstanceError::Overloaded(detail)) => {
                // Load, not failure: no error, no timeout, no restart.
                slot.counters.overloaded.fetch_add(1, Ordering::Relaxed);
                slot.metrics.overloaded.inc();
                if !instance.is_trusted() {
                    // The sandboxed tier's queue is its slot wait: giving it up drops the
                    // call before the worker ever sees it. (Trusted workers count the
                    // jobs they drop themselves.)
                    slot.gauges.count_shed();
                }
                Err(CallFailure::Overloaded {
                    name: name.to_string(),
                    detail,
                    retry_after: Duration::from_secs(1),
                })
            }
            Err(InstanceError::DeadlinePassed) => {
                slot.counters.errors.fetch_add(1, Ordering::Relaxed);
                slot.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                slot.metrics.error("timeout");
                let reason = format!("action '{action}' ran past its deadline of {timeout_ms} ms");
                let abandoned = slot.gauges.abandoned_threads.load(Ordering::SeqCst);
                let limit = self.opts.max_abandoned_threads;
                if instance.is_trusted() && abandoned > limit {
                    // Each restart in-process may leave another thread stuck for good.
                    let why = format!(
                        "{abandoned} threads are stuck in calls past their deadline, over the limit of {limit} \
                         (plugins.max_abandoned_threads), so it is not restarted in-process again; last: {reason}. \
                         A trusted plugin's stuck thread cannot be stopped: run it in the sandboxed tier \
                         (execution_mode: sandboxed), where a call past its deadline kills the worker. \
                         Reset it with POST /api/v1/plugins/{name}/reset"
                    );
                    self.fail_instance(&slot, instance.generation(), reason, Some(why));
                } else {
                    self.on_instance_failure(&slot, instance.generation(), reason);
                }
                Err(CallFailure::Timeout { name: name.to_string(), action, timeout_ms })
            }
        }
    }
}
