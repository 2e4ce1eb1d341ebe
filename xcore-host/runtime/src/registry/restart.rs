//! Restart decisions: an instance that failed (a timeout, a crash, a panic streak, a
//! worker death) is taken out of service and the restart policy decides what follows.

use super::*;

impl PluginRegistry {
    /// What a sandbox worker's watcher calls when the worker dies on its own.
    pub(super) fn death_hook(
        self: &Arc<Self>,
        slot: &Arc<PluginSlot>,
        generation: u64,
    ) -> sandbox::instance::DeathHook {
        let registry = Arc::downgrade(self);
        let slot = slot.clone();
        Box::new(move |reason: String, unexpected: bool| {
            slot.inner.lock().last_exit = Some(reason.clone());
            if unexpected {
                if let Some(registry) = registry.upgrade() {
                    registry.on_instance_failure(&slot, generation, format!("worker {reason}"));
                }
            }
        })
    }

    /// An instance misbehaved: stop routing to it and restart the plugin under its
    /// policy. Only the first report about a given instance acts.
    pub(super) fn on_instance_failure(
        self: &Arc<Self>,
        slot: &Arc<PluginSlot>,
        generation: u64,
        reason: String,
    ) {
        self.fail_instance(slot, generation, reason, None)
    }

    /// [`Self::on_instance_failure`]; with `final_reason`, the plugin goes to `failed`
    /// with that message instead of asking the restart policy.
    pub(super) fn fail_instance(
        self: &Arc<Self>,
        slot: &Arc<PluginSlot>,
        generation: u64,
        reason: String,
        final_reason: Option<String>,
    ) {
        let decision = {
            let mut inner = slot.inner.lock();
            let current = slot.instance.load();
            if inner.generation != generation || current.is_none() || slot.state() != PluginState::Ready {
                return;
            }
            slot.set_state(PluginState::Degraded);
            slot.instance.store(None);
            inner.ready_since = None;
            inner.last_error = Some(reason.clone());
            if final_reason.is_some() {
                None
            } else {
                let Some(m) = slot.manifest.load_full() else { return };
                Some(inner.tracker.on_failure(&m.restart, Instant::now()))
            }
        };
        log::warn!(target: "xcore::runtime", "plugin '{}' instance {generation} degraded: {reason}", slot.name);
        let version = slot.manifest.load().as_ref().map(|m| m.version.to_string());
        self.emit_host_event(
            "plugin.crashed",
            serde_json::json!({ "plugin": slot.name, "version": version, "generation": generation, "reason": reason }),
        );
        match (decision, final_reason) {
            (Some(decision), _) => self.apply_decision(slot.clone(), decision, reason),
            (None, Some(why)) => {
                slot.fail(why.clone());
                self.emit_host_event(
                    "plugin.failed",
                    serde_json::json!({ "plugin": slot.name, "reason": why }),
                );
            }
            (None, None) => {}
        }
    }

    pub(super) fn apply_decision(
        self: &Arc<Self>,
        slot: Arc<PluginSlot>,
        decision: RestartDecision,
        reason: String,
    ) {
        match decision {
            RestartDecision::GiveUp { restarts } => {
                let within = slot.manifest.load().as_ref().map(|m| m.restart.within_seconds).unwrap_or(0);
                let why = format!(
                    "restart intensity exceeded ({restarts} failures within {within} s); last: {reason}; \
                     reset it with POST /api/v1/plugins/{}/reset",
                    slot.name
                );
                slot.fail(why.clone());
                self.emit_host_event(
                    "plugin.failed",
                    serde_json::json!({ "plugin": slot.name, "reason": why }),
                );
            }
            RestartDecision::After(delay) => {
                slot.set_state(PluginState::Restarting);
                slot.metrics.restarts.inc();
                let registry = self.clone();
                self.work().spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _guard = registry.ops.lock().await;
                    // An operator may have unloaded it meanwhile.
                    if slot.state() != PluginState::Restarting {
                        return;
                    }
                    if let Err(e) = registry.load_slot(&slot.name, None).await {
                        // load_slot marked it failed; count this as another failure.
                        let decision = {
                            let mut inner = slot.inner.lock();
                            let m = slot.manifest.load_full();
                            m.map(|m| inner.tracker.on_failure(&m.restart, Instant::now()))
                        };
                        // Still under the ops lock, so an operator's reset cannot slip
                        // between the failure and the next decision.
                        if let Some(d) = decision {
                            registry.apply_decision(slot.clone(), d, e.to_string());
                        }
                    }
                });
            }
        }
    }
}
