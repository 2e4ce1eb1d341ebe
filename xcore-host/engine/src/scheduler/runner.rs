//! Runs jobs against the plugin registry: a plugin action through the supervised call
//! path (caller `scheduler`), or an event through the hook manager.

use std::sync::{Arc, Weak};

use futures_util::future::BoxFuture;

use super::{JobRunner, JobSpec, Target};
use crate::runtime::{CallInput, PluginRegistry};
use xcore_hooks::Outcome;

/// A [`JobRunner`] over the registry (weak: the registry owns the scheduler).
pub struct RegistryRunner {
    registry: Weak<PluginRegistry>,
}

impl RegistryRunner {
    /// A runner for `registry`.
    pub fn new(registry: &Arc<PluginRegistry>) -> Self {
        RegistryRunner { registry: Arc::downgrade(registry) }
    }
}

impl JobRunner for RegistryRunner {
    fn run(&self, job: &JobSpec, run_id: String) -> BoxFuture<'static, Result<(), String>> {
        let (registry, target, payload) = (self.registry.clone(), job.target.clone(), job.payload.clone());
        Box::pin(async move {
            let registry = registry.upgrade().ok_or("the host is shutting down")?;
            match target {
                Target::Action { plugin, action } => {
                    let input = CallInput {
                        action,
                        payload: serde_json::to_vec(&payload).unwrap_or_default(),
                        caller: "scheduler".into(),
                        request_id: run_id,
                        origin: None,
                    };
                    registry.call(&plugin, input).await.map(drop).map_err(|e| e.to_string())
                }
                Target::Emit { event } => {
                    let report = registry.hooks().emit(&event, payload).await;
                    let failed: Vec<String> = report
                        .results
                        .iter()
                        .filter_map(|r| match &r.outcome {
                            Outcome::Error(f) => Some(format!("{}: {}", r.handler, f.message)),
                            Outcome::Ok(_) => None,
                        })
                        .collect();
                    if let Some(why) = report.cancelled {
                        return Err(format!("event '{event}' cancelled: {why}"));
                    }
                    if failed.is_empty() {
                        Ok(())
                    } else {
                        Err(format!(
                            "event '{event}': {} handler(s) failed: {}",
                            failed.len(),
                            failed.join("; ")
                        ))
                    }
                }
            }
        })
    }
}
