//! Runs jobs against the plugins: a plugin action through the supervised call path
//! (caller `scheduler`), or an event through the hook manager.

use std::sync::Weak;

use futures_util::future::BoxFuture;

use super::{JobRunner, JobSpec, Target};
use xcore_hooks::{HookManager, Outcome};
use xcore_runtime::{CallInput, PluginCalls};

/// A [`JobRunner`] over the plugins (weak: the registry owns what owns the scheduler).
pub struct PluginRunner {
    plugins: Weak<dyn PluginCalls>,
    hooks: HookManager,
}

impl PluginRunner {
    /// A runner calling `plugins` and emitting on `hooks`.
    pub fn new(plugins: Weak<dyn PluginCalls>, hooks: HookManager) -> Self {
        PluginRunner { plugins, hooks }
    }
}

impl JobRunner for PluginRunner {
    fn run(&self, job: &JobSpec, run_id: String) -> BoxFuture<'static, Result<(), String>> {
        let (plugins, hooks, target, payload) =
            (self.plugins.clone(), self.hooks.clone(), job.target.clone(), job.payload.clone());
        Box::pin(async move {
            match target {
                Target::Action { plugin, action } => {
                    let plugins = plugins.upgrade().ok_or("the host is shutting down")?;
                    let input = CallInput {
                        action,
                        payload: serde_json::to_vec(&payload).unwrap_or_default(),
                        caller: "scheduler".into(),
                        request_id: run_id,
                        origin: None,
                    };
                    plugins.call_plugin(plugin, input).await.map(drop).map_err(|e| e.to_string())
                }
                Target::Emit { event } => {
                    let report = hooks.emit(&event, payload).await;
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
