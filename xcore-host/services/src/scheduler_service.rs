//! `scheduler.add` / `scheduler.remove`: a plugin's own cron jobs, calling its own
//! actions. Needs the permission `scheduler`. A job's id is `<plugin>.<id>`, and the
//! job lasts as long as the plugin instance that added it (a reload's new instance
//! takes it over when it adds it again).

use serde::Deserialize;
use serde_json::{json, Value};

use super::{permissions, Caller, ServiceError};
use crate::scheduler::{config, JobSpec, Owner, Target};
use crate::Services;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddRequest {
    id: String,
    cron: String,
    action: String,
    #[serde(default)]
    payload: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveRequest {
    id: String,
}

/// Serves `scheduler.add|remove` for `caller`.
pub fn serve(host: &Services, caller: &Caller, service: &str, payload: &[u8]) -> Result<Value, ServiceError> {
    permissions::require(caller, "scheduler", "schedule jobs")?;
    let Some(scheduler) = host.scheduler() else {
        return Err(ServiceError::unavailable("this host runs no scheduler"));
    };
    let bad = |e| ServiceError::bad_request(service, e);
    match service {
        "scheduler.add" => {
            let r: AddRequest = serde_json::from_slice(payload).map_err(bad)?;
            let id = format!("{}.{}", caller.plugin, r.id);
            let invalid = |e: config::JobError| ServiceError::new("invalid_payload", 400, e.to_string());
            config::check_id(&id).map_err(invalid)?;
            let spec = JobSpec {
                schedule: config::parse_cron(&id, &r.cron).map_err(invalid)?,
                id: id.clone(),
                cron: r.cron,
                target: Target::Action { plugin: caller.plugin.to_string(), action: r.action },
                payload: r.payload,
                enabled: true,
                owner: Owner::Plugin { name: caller.plugin.to_string(), generation: caller.generation },
            };
            scheduler.add(spec).map_err(|e| match e {
                config::JobError::TooManyJobs { .. } => {
                    host.metrics().limit_refused("jobs_per_plugin");
                    log::warn!(target: "xcore::scheduler", "{e}");
                    ServiceError::new("too_many_jobs", 429, e.to_string())
                }
                other => ServiceError::new("conflict", 409, other.to_string()),
            })?;
            Ok(json!({ "id": id }))
        }
        "scheduler.remove" => {
            let r: RemoveRequest = serde_json::from_slice(payload).map_err(bad)?;
            let id = format!("{}.{}", caller.plugin, r.id);
            Ok(json!({ "removed": scheduler.remove(&id, Some(&caller.plugin)) }))
        }
        other => Err(ServiceError::unsupported(other)),
    }
}
