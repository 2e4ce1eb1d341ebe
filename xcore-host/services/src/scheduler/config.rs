//! `xcore.yaml`'s `scheduler` section and the validation of a job.

use chrono::FixedOffset;
use job_scheduler_ng::Schedule;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `scheduler` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// Whether jobs run at all (the API still lists them).
    pub enabled: bool,
    /// `UTC` (default), `local` (the host's offset when it starts), or a fixed offset
    /// such as `+02:00`. Cron fields are read in this zone.
    pub timezone: String,
    /// The jobs.
    pub jobs: Vec<JobConfig>,
    /// Jobs one plugin may have at once (`scheduler.add`); 0 = no limit. Default 32.
    pub max_jobs_per_plugin: usize,
}

/// Default of [`SchedulerConfig::max_jobs_per_plugin`].
pub const DEFAULT_MAX_JOBS_PER_PLUGIN: usize = 32;

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            enabled: true,
            timezone: "UTC".into(),
            jobs: Vec::new(),
            max_jobs_per_plugin: DEFAULT_MAX_JOBS_PER_PLUGIN,
        }
    }
}

/// One job of the configuration: a cron string and either a plugin action or an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobConfig {
    /// Unique id.
    pub id: String,
    /// Six or seven fields, seconds first: `sec min hour day-of-month month day-of-week [year]`.
    pub cron: String,
    /// The plugin whose `action` runs.
    #[serde(default)]
    pub plugin: Option<String>,
    /// The action.
    #[serde(default)]
    pub action: Option<String>,
    /// Or: the event to emit.
    #[serde(default)]
    pub emit: Option<String>,
    /// The payload (JSON).
    #[serde(default)]
    pub payload: Value,
    /// Whether it runs on its schedule (it can still be run by hand).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    /// Call `plugin`'s `action` with the payload.
    Action {
        /// Plugin.
        plugin: String,
        /// Action.
        action: String,
    },
    /// Emit `event` with the payload.
    Emit {
        /// Event name.
        event: String,
    },
}

/// A checked job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Unique id.
    pub id: String,
    /// The cron string as written.
    pub cron: String,
    /// Parsed.
    pub schedule: Schedule,
    /// What it does.
    pub target: Target,
    /// Its payload.
    pub payload: Value,
    /// Whether it runs on its schedule.
    pub enabled: bool,
    /// `config`, or the plugin that added it (and which instance, so a reload's new
    /// instance can take its jobs over).
    pub owner: Owner,
}

/// Who added a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    /// `xcore.yaml`.
    Config,
    /// A plugin, through `Context::schedule`.
    Plugin {
        /// Its name.
        name: String,
        /// Its instance.
        generation: u64,
    },
}

/// A job that cannot be scheduled, and why.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JobError {
    /// The cron string does not parse.
    #[error("job '{id}': cron '{cron}' is invalid ({reason}); it has six or seven fields, seconds first, e.g. '0 */5 * * * *'")]
    Cron {
        /// Job id.
        id: String,
        /// The string.
        cron: String,
        /// The parser's reason.
        reason: String,
    },
    /// Neither or both of plugin+action and emit.
    #[error("job '{0}': give either 'plugin' and 'action', or 'emit'")]
    Target(String),
    /// Bad id.
    #[error("job id '{0}' is invalid: 1 to 128 characters of letters, digits, '.', '_', '-'")]
    Id(String),
    /// Two jobs with one id.
    #[error("job '{0}' is defined twice")]
    Duplicate(String),
    /// A plugin tried to replace a job it does not own.
    #[error("job '{0}' belongs to someone else")]
    NotOwner(String),
    /// A plugin has as many jobs as `scheduler.max_jobs_per_plugin` allows.
    #[error("job '{id}' refused: plugin '{plugin}' has {limit} jobs, the most scheduler.max_jobs_per_plugin allows; remove one, or raise scheduler.max_jobs_per_plugin in xcore.yaml")]
    TooManyJobs {
        /// The job.
        id: String,
        /// The plugin.
        plugin: String,
        /// The limit.
        limit: usize,
    },
    /// Unknown timezone.
    #[error("scheduler.timezone '{0}' is not supported: use UTC, local, or a fixed offset like +02:00 (named zones with daylight saving are not supported)")]
    Timezone(String),
}

/// Parses a cron string.
pub fn parse_cron(id: &str, cron: &str) -> Result<Schedule, JobError> {
    cron.parse::<Schedule>().map_err(|e| JobError::Cron {
        id: id.into(),
        cron: cron.into(),
        reason: e.to_string(),
    })
}

/// Checks a job id.
pub fn check_id(id: &str) -> Result<(), JobError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(JobError::Id(id.into()))
    }
}

impl JobConfig {
    /// The checked job.
    pub fn to_spec(&self) -> Result<JobSpec, JobError> {
        check_id(&self.id)?;
        let target = match (&self.plugin, &self.action, &self.emit) {
            (Some(p), Some(a), None) => Target::Action { plugin: p.clone(), action: a.clone() },
            (None, None, Some(e)) => Target::Emit { event: e.clone() },
            _ => return Err(JobError::Target(self.id.clone())),
        };
        Ok(JobSpec {
            id: self.id.clone(),
            cron: self.cron.clone(),
            schedule: parse_cron(&self.id, &self.cron)?,
            target,
            payload: self.payload.clone(),
            enabled: self.enabled,
            owner: Owner::Config,
        })
    }
}

impl SchedulerConfig {
    /// The zone cron fields are read in.
    pub fn offset(&self) -> Result<FixedOffset, JobError> {
        let tz = self.timezone.trim();
        let utc = FixedOffset::east_opt(0).expect("UTC");
        if tz.eq_ignore_ascii_case("utc") || tz.eq_ignore_ascii_case("z") || tz.is_empty() {
            return Ok(utc);
        }
        if tz.eq_ignore_ascii_case("local") {
            return Ok(*chrono::Local::now().offset());
        }
        tz.parse::<FixedOffset>().map_err(|_| JobError::Timezone(tz.into()))
    }

    /// Every job, checked, ids unique.
    pub fn specs(&self) -> Result<Vec<JobSpec>, JobError> {
        let mut seen = std::collections::HashSet::new();
        self.jobs
            .iter()
            .map(|j| {
                if !seen.insert(j.id.clone()) {
                    return Err(JobError::Duplicate(j.id.clone()));
                }
                j.to_spec()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(yaml: &str) -> JobConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn jobs_are_checked() {
        let ok = job("{id: nightly, cron: '0 0 3 * * *', plugin: notes, action: compact}").to_spec().unwrap();
        assert_eq!(ok.target, Target::Action { plugin: "notes".into(), action: "compact".into() });
        let e = job("{id: x, cron: '*/5 * * * *', emit: tick}").to_spec().unwrap_err().to_string();
        assert!(e.contains("seconds first"), "five fields are refused: {e}");
        let e = job("{id: x, cron: '* * * * * *', emit: a, plugin: p, action: b}").to_spec().unwrap_err();
        assert_eq!(e, JobError::Target("x".into()));
        assert!(matches!(job("{id: 'a b', cron: '* * * * * *', emit: a}").to_spec(), Err(JobError::Id(_))));
        let cfg: SchedulerConfig = serde_yaml_ng::from_str(
            "jobs: [{id: a, cron: '* * * * * *', emit: x}, {id: a, cron: '* * * * * *', emit: y}]",
        )
        .unwrap();
        assert_eq!(cfg.specs().unwrap_err(), JobError::Duplicate("a".into()));
    }

    #[test]
    fn timezones() {
        let tz = |t: &str| SchedulerConfig { timezone: t.into(), ..Default::default() }.offset();
        assert_eq!(tz("UTC").unwrap().local_minus_utc(), 0);
        assert_eq!(tz("+02:00").unwrap().local_minus_utc(), 7200);
        assert!(tz("local").is_ok());
        assert!(tz("Europe/Paris").unwrap_err().to_string().contains("named zones"));
    }
}
