//! The cron scheduler: jobs from `xcore.yaml` and from plugins (`Context::schedule`),
//! each calling a plugin action or emitting an event.
//!
//! job_scheduler_ng ticks on a thread of its own (`xcore-scheduler`). It is synchronous
//! and runs due jobs one after another on that thread, so a job's closure only hands
//! the run to the tokio runtime and returns. A job whose previous run is still going is
//! skipped and counted, never run twice at once. Each run is recorded in `job_runs`
//! (started, then finished with its outcome).

pub mod config;
pub mod runner;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{FixedOffset, Utc};
use futures_util::future::BoxFuture;
use job_scheduler_ng::{Job, JobScheduler, Uuid};
use parking_lot::Mutex;
use serde::Serialize;

pub use config::{JobConfig, JobError, JobSpec, Owner, SchedulerConfig, Target};

use xcore_db::store::{now_ms, rfc3339, Store};

/// Runs one job to its end; `Err` carries why it failed.
pub trait JobRunner: Send + Sync + 'static {
    /// Runs `job`; `run_id` tags the call (its request id).
    fn run(&self, job: &JobSpec, run_id: String) -> BoxFuture<'static, Result<(), String>>;
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOutcome {
    /// The job.
    pub job_id: String,
    /// Start, RFC 3339.
    pub started_at: String,
    /// How long it took.
    pub duration_ms: i64,
    /// `ok` or `error`.
    pub outcome: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// Why a run did not start.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RunError {
    /// No such job.
    #[error("no job '{0}'")]
    Unknown(String),
    /// Its previous run is still going.
    #[error("job '{0}' is already running; overlapping runs are skipped")]
    Overlap(String),
}

#[derive(Default)]
struct JobState {
    running: AtomicBool,
    runs: AtomicU64,
    skipped: AtomicU64,
    /// Start of the latest run (ms), so two runs never share a start time.
    last_start: AtomicI64,
}

struct Entry {
    spec: JobSpec,
    /// Its handle in job_scheduler_ng, when it runs on its schedule.
    uuid: Option<Uuid>,
    state: Arc<JobState>,
    /// The job as an older instance of the same plugin added it, while the instance
    /// that replaced it is not confirmed: restored if that instance is released first
    /// (a failed reload), dropped when the older one is.
    shadowed: Option<JobSpec>,
}

struct Inner {
    /// Lock order: `sched` before `jobs` (a tick holds `sched` while jobs fire).
    sched: Mutex<JobScheduler<'static>>,
    jobs: Mutex<BTreeMap<String, Entry>>,
    runner: Arc<dyn JobRunner>,
    store: Option<Store>,
    handle: tokio::runtime::Handle,
    tz: FixedOffset,
    ticking: bool,
    stop: AtomicBool,
    /// Runs by job and outcome (`ok`, `error`, `skipped`).
    runs_total: prometheus::IntCounterVec,
    /// Jobs on the list.
    jobs_gauge: prometheus::IntGauge,
    /// `scheduler.max_jobs_per_plugin` (0 = no limit).
    max_jobs_per_plugin: usize,
}

/// A checked scheduler configuration ([`Scheduler::plan`]), so that starting cannot fail.
#[derive(Debug, Clone)]
pub struct SchedulerPlan {
    tz: FixedOffset,
    specs: Vec<JobSpec>,
    ticking: bool,
    max_jobs_per_plugin: usize,
}

/// The scheduler. Dropping it stops the ticking thread.
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
    }
}

/// One job, for `GET /api/v1/jobs`.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    /// Id.
    pub id: String,
    /// Cron string.
    pub cron: String,
    /// What it does.
    pub target: Target,
    /// Its payload.
    pub payload: serde_json::Value,
    /// Runs on its schedule.
    pub enabled: bool,
    /// Who added it.
    pub owner: Owner,
    /// Next scheduled run (RFC 3339), when enabled and the scheduler ticks.
    pub next_run: Option<String>,
    /// A run is going on now.
    pub running: bool,
    /// Runs since the host started.
    pub runs: u64,
    /// Runs skipped because the previous one was still going.
    pub skipped: u64,
}

impl Scheduler {
    /// Checks `cfg` (its time zone and its jobs): what [`Scheduler::start`] runs.
    pub fn plan(cfg: &SchedulerConfig) -> Result<SchedulerPlan, JobError> {
        Ok(SchedulerPlan {
            tz: cfg.offset()?,
            specs: cfg.specs()?,
            ticking: cfg.enabled,
            max_jobs_per_plugin: cfg.max_jobs_per_plugin,
        })
    }

    /// A scheduler whose runs go to `runner` on `handle`, recorded in `store`, with the
    /// configured jobs of `plan`. When the configuration enables it, a thread ticks it;
    /// otherwise jobs only run by hand.
    pub fn start(
        plan: SchedulerPlan,
        runner: Arc<dyn JobRunner>,
        store: Option<Store>,
        handle: tokio::runtime::Handle,
    ) -> Scheduler {
        let mut sched = JobScheduler::new();
        sched.set_timezone(plan.tz);
        let inner = Arc::new(Inner {
            sched: Mutex::new(sched),
            jobs: Mutex::new(BTreeMap::new()),
            runner,
            store,
            handle,
            tz: plan.tz,
            ticking: plan.ticking,
            stop: AtomicBool::new(false),
            runs_total: prometheus::IntCounterVec::new(
                prometheus::Opts::new("xcore_job_runs_total", "Scheduler runs by job and outcome"),
                &["job", "outcome"],
            )
            .expect("valid metric"),
            jobs_gauge: prometheus::IntGauge::new("xcore_scheduler_jobs", "Jobs on the scheduler's list")
                .expect("valid metric"),
            max_jobs_per_plugin: plan.max_jobs_per_plugin,
        });
        let scheduler = Scheduler { inner };
        for spec in plan.specs {
            // The plan's ids are unique and configured jobs have no per-plugin bound, so
            // an empty list takes them all; a refusal would be a bug, logged, not fatal.
            if let Err(e) = scheduler.add(spec) {
                log::error!(target: "xcore::scheduler", "configured job refused: {e}");
            }
        }
        if plan.ticking {
            let weak = Arc::downgrade(&scheduler.inner);
            std::thread::Builder::new()
                .name("xcore-scheduler".into())
                .spawn(move || tick_loop(weak))
                .expect("spawning the scheduler thread");
        }
        scheduler
    }

    /// Adds a job, or replaces one with the same id and the same owner (a plugin's new
    /// instance takes over the jobs of the one it replaces).
    pub fn add(&self, spec: JobSpec) -> Result<(), JobError> {
        let mut sched = self.inner.sched.lock();
        let mut jobs = self.inner.jobs.lock();
        let max = self.inner.max_jobs_per_plugin;
        if let (Owner::Plugin { name: plugin, .. }, true) = (&spec.owner, max > 0) {
            // A replacement (same id) does not count twice.
            let owned = jobs
                .iter()
                .filter(|(id, e)| {
                    *id != &spec.id && matches!(&e.spec.owner, Owner::Plugin { name, .. } if name == plugin)
                })
                .count();
            if owned >= max {
                return Err(JobError::TooManyJobs {
                    id: spec.id.clone(),
                    plugin: plugin.clone(),
                    limit: max,
                });
            }
        }
        let (mut state, mut shadowed) = (Arc::default(), None);
        if let Some(old) = jobs.remove(&spec.id) {
            if !same_owner(&old.spec.owner, &spec.owner) {
                let id = spec.id.clone();
                jobs.insert(id.clone(), old);
                return Err(JobError::NotOwner(id));
            }
            if let Some(u) = old.uuid {
                sched.remove(u);
            }
            state = old.state;
            // Another instance's job is kept aside; the same instance's is just replaced.
            shadowed = if old.spec.owner != spec.owner { Some(old.spec) } else { old.shadowed };
        }
        let uuid = self.schedule(&mut sched, &spec);
        log::info!(target: "xcore::scheduler", "job '{}' ({}) scheduled: {:?}", spec.id, spec.cron, spec.target);
        jobs.insert(spec.id.clone(), Entry { spec, uuid, state, shadowed });
        self.inner.jobs_gauge.set(jobs.len() as i64);
        Ok(())
    }

    /// Drops the run counters of a job that is gone: job ids are chosen by plugins, so
    /// their series must not outlive their jobs.
    fn forget_series(&self, id: &str) {
        for outcome in ["ok", "error", "skipped"] {
            let _ = self.inner.runs_total.remove_label_values(&[id, outcome]);
        }
    }

    /// Puts an enabled job on job_scheduler_ng's list.
    fn schedule(&self, sched: &mut JobScheduler<'static>, spec: &JobSpec) -> Option<Uuid> {
        spec.enabled.then(|| {
            let (weak, id) = (Arc::downgrade(&self.inner), spec.id.clone());
            sched.add(Job::new(spec.schedule.clone(), move || {
                if let Some(inner) = weak.upgrade() {
                    // A skip is counted and logged by start_run; nothing else to do here.
                    let _ = start_run(&inner, &id);
                }
            }))
        })
    }

    /// Removes the job `id` if `owner` added it (`None`: any owner).
    pub fn remove(&self, id: &str, plugin: Option<&str>) -> bool {
        let mut sched = self.inner.sched.lock();
        let mut jobs = self.inner.jobs.lock();
        let owned = jobs.get(id).is_some_and(|e| match plugin {
            None => true,
            Some(p) => matches!(&e.spec.owner, Owner::Plugin { name, .. } if name == p),
        });
        if !owned {
            return false;
        }
        if let Some(Entry { uuid: Some(u), .. }) = jobs.remove(id) {
            sched.remove(u);
        }
        self.inner.jobs_gauge.set(jobs.len() as i64);
        self.forget_series(id);
        true
    }

    /// Removes the jobs a plugin instance added (when it unloads or is replaced).
    pub fn remove_owned(&self, plugin: &str, generation: u64) {
        let owned_by = |o: &Owner| matches!(o, Owner::Plugin { name, generation: g } if name == plugin && *g == generation);
        let mut sched = self.inner.sched.lock();
        let mut jobs = self.inner.jobs.lock();
        let ids: Vec<String> = jobs.keys().cloned().collect();
        for id in ids {
            let Some(e) = jobs.get_mut(&id) else { continue };
            if e.shadowed.as_ref().is_some_and(|s| owned_by(&s.owner)) {
                // The older instance is gone: its version of the job is no longer needed.
                e.shadowed = None;
            }
            if !owned_by(&e.spec.owner) {
                continue;
            }
            if let Some(u) = e.uuid.take() {
                sched.remove(u);
            }
            match e.shadowed.take() {
                // A new instance failed before taking over: the job goes back to the
                // instance that still serves.
                Some(previous) => {
                    e.uuid = self.schedule(&mut sched, &previous);
                    e.spec = previous;
                }
                None => {
                    jobs.remove(&id);
                    self.forget_series(&id);
                }
            }
        }
        self.inner.jobs_gauge.set(jobs.len() as i64);
    }

    /// Every job, by id.
    pub fn list(&self) -> Vec<JobInfo> {
        let now = Utc::now().with_timezone(&self.inner.tz);
        self.inner
            .jobs
            .lock()
            .values()
            .map(|e| JobInfo {
                id: e.spec.id.clone(),
                cron: e.spec.cron.clone(),
                target: e.spec.target.clone(),
                payload: e.spec.payload.clone(),
                enabled: e.spec.enabled,
                owner: e.spec.owner.clone(),
                next_run: (e.spec.enabled && self.inner.ticking)
                    .then(|| e.spec.schedule.after(&now).next())
                    .flatten()
                    .map(|t| rfc3339(t.timestamp_millis())),
                running: e.state.running.load(Ordering::Acquire),
                runs: e.state.runs.load(Ordering::Relaxed),
                skipped: e.state.skipped.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Runs `id` now (the overlap rule applies) and waits for its outcome.
    pub async fn run_now(&self, id: &str) -> Result<RunOutcome, RunError> {
        let handle = start_run(&self.inner, id)?;
        handle.await.map_err(|_| RunError::Unknown(id.to_string()))
    }

    /// The scheduler's Prometheus counters, for the host's registry.
    pub fn prometheus_collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![Box::new(self.inner.runs_total.clone()), Box::new(self.inner.jobs_gauge.clone())]
    }

    /// Stops firing jobs on their schedule (runs going on finish; `run_now` still works).
    /// The host calls it when it shuts down, before it unloads the plugins.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Release);
    }

    /// The store runs are recorded in.
    pub fn store(&self) -> Option<&Store> {
        self.inner.store.as_ref()
    }
}

fn same_owner(a: &Owner, b: &Owner) -> bool {
    match (a, b) {
        (Owner::Config, Owner::Config) => true,
        (Owner::Plugin { name: x, .. }, Owner::Plugin { name: y, .. }) => x == y,
        _ => false,
    }
}

fn tick_loop(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.stop.load(Ordering::Acquire) {
            return;
        }
        let wait = {
            let mut sched = inner.sched.lock();
            sched.tick();
            sched.time_till_next_job()
        };
        drop(inner);
        // Never longer than 250 ms, so new jobs and the stop flag are seen promptly;
        // never shorter than 1 ms, so a due job cannot spin the thread.
        std::thread::sleep(wait.clamp(Duration::from_millis(1), Duration::from_millis(250)));
    }
}

/// A write to the store, run on the blocking pool.
type StoreWrite = Box<dyn FnOnce(&Store) -> Result<(), xcore_db::DbError> + Send>;

/// Starts a run on the runtime, unless one is going on.
fn start_run(inner: &Arc<Inner>, id: &str) -> Result<tokio::task::JoinHandle<RunOutcome>, RunError> {
    let (spec, state) = {
        let jobs = inner.jobs.lock();
        let e = jobs.get(id).ok_or_else(|| RunError::Unknown(id.to_string()))?;
        (e.spec.clone(), e.state.clone())
    };
    if state.running.swap(true, Ordering::AcqRel) {
        let n = state.skipped.fetch_add(1, Ordering::Relaxed) + 1;
        inner.runs_total.with_label_values(&[id, "skipped"]).inc();
        log::warn!(target: "xcore::scheduler", "job '{id}' skipped: its previous run is still going ({n} skipped so far)");
        return Err(RunError::Overlap(id.to_string()));
    }
    let started = now_ms().max(state.last_start.load(Ordering::Relaxed) + 1);
    state.last_start.store(started, Ordering::Relaxed);
    let run_id = format!("job-{id}-{started}");
    let (runner, store, runs_total) = (inner.runner.clone(), inner.store.clone(), inner.runs_total.clone());
    Ok(inner.handle.spawn(async move {
        let record = |f: StoreWrite| {
            let store = store.clone();
            async move {
                if let Some(store) = store {
                    match tokio::task::spawn_blocking(move || f(&store)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => log::error!(target: "xcore::scheduler", "job run not recorded: {e}"),
                        Err(e) => log::error!(target: "xcore::scheduler", "job run not recorded: {e}"),
                    }
                }
            }
        };
        let job_id = spec.id.clone();
        let j = job_id.clone();
        record(Box::new(move |s| s.job_started(&j, started, "running", None))).await;
        let result = runner.run(&spec, run_id).await;
        let finished = now_ms();
        let (outcome, error) = match &result {
            Ok(()) => ("ok", None),
            Err(e) => ("error", Some(e.clone())),
        };
        match &error {
            None => log::info!(target: "xcore::scheduler", "job '{job_id}' ran in {} ms", finished - started),
            Some(e) => log::warn!(target: "xcore::scheduler", "job '{job_id}' failed: {e}"),
        }
        let (j, err) = (job_id.clone(), error.clone());
        record(Box::new(move |s| s.job_finished(&j, started, finished, outcome, err.as_deref()))).await;
        state.runs.fetch_add(1, Ordering::Relaxed);
        runs_total.with_label_values(&[job_id.as_str(), outcome]).inc();
        state.running.store(false, Ordering::Release);
        RunOutcome {
            job_id,
            started_at: rfc3339(started),
            duration_ms: finished - started,
            outcome: outcome.into(),
            error,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts runs; each run takes `hold`.
    struct Counting {
        runs: Arc<AtomicU64>,
        hold: Duration,
    }

    impl JobRunner for Counting {
        fn run(&self, job: &JobSpec, _run_id: String) -> BoxFuture<'static, Result<(), String>> {
            let (runs, hold, fail) = (self.runs.clone(), self.hold, job.id == "failing");
            Box::pin(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(hold).await;
                if fail {
                    Err("boom".into())
                } else {
                    Ok(())
                }
            })
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
    }

    #[test]
    fn jobs_fire_on_schedule_overlaps_are_skipped_and_runs_recorded() {
        let rt = rt();
        // A migrated SQLite store in a temporary folder.
        let _d = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", _d.path().join("x.db").display());
        xcore_db::migrate::migrate("default", &url, xcore_db::migrate::Op::Run).unwrap();
        let cfg = xcore_db::DatabaseConfig { url, ..Default::default() };
        let store = Store::new(Arc::new(xcore_db::Database::connect("default", &cfg).unwrap()));
        let runs = Arc::new(AtomicU64::new(0));
        let cfg: SchedulerConfig = serde_yaml_ng::from_str(
            "jobs: [{id: every-second, cron: '* * * * * *', emit: tick}, \
             {id: off, cron: '* * * * * *', emit: tick, enabled: false}]",
        )
        .unwrap();
        // Each run holds 1.5 s: every other second's run overlaps and is skipped.
        let runner = Arc::new(Counting { runs: runs.clone(), hold: Duration::from_millis(1500) });
        let s = Scheduler::start(
            Scheduler::plan(&cfg).unwrap(),
            runner,
            Some(store.clone()),
            rt.handle().clone(),
        );
        std::thread::sleep(Duration::from_millis(4300));
        let list = s.list();
        let job = list.iter().find(|j| j.id == "every-second").unwrap();
        assert!(job.next_run.is_some());
        assert!(runs.load(Ordering::SeqCst) >= 2, "ran {}", runs.load(Ordering::SeqCst));
        assert!(job.skipped >= 1, "{job:?}");
        let off = list.iter().find(|j| j.id == "off").unwrap();
        assert_eq!((off.runs, off.next_run.as_deref()), (0, None), "a disabled job does not run");
        std::thread::sleep(Duration::from_millis(1600));
        let history = store.job_history("every-second", 10).unwrap();
        assert!(history.iter().any(|r| r.outcome == "ok" && r.finished_at.is_some()), "{history:?}");
        drop(s);
    }

    #[test]
    fn jobs_per_plugin_are_bounded_and_their_series_go_with_them() {
        let rt = rt();
        let runner = Arc::new(Counting { runs: Arc::default(), hold: Duration::ZERO });
        let cfg = SchedulerConfig { enabled: false, max_jobs_per_plugin: 2, ..Default::default() };
        let s = Scheduler::start(Scheduler::plan(&cfg).unwrap(), runner, None, rt.handle().clone());
        let spec = |id: &str, plugin: &str| JobSpec {
            id: id.into(),
            cron: "0 0 * * * *".into(),
            schedule: config::parse_cron(id, "0 0 * * * *").unwrap(),
            target: Target::Emit { event: "x".into() },
            payload: serde_json::Value::Null,
            enabled: true,
            owner: Owner::Plugin { name: plugin.into(), generation: 1 },
        };
        s.add(spec("p.a", "p")).unwrap();
        s.add(spec("p.b", "p")).unwrap();
        s.add(spec("p.b", "p")).unwrap(); // a replacement is not one more
        let err = s.add(spec("p.c", "p")).unwrap_err();
        assert!(matches!(err, JobError::TooManyJobs { limit: 2, .. }), "{err}");
        assert!(err.to_string().contains("scheduler.max_jobs_per_plugin"), "{err}");
        s.add(spec("q.a", "q")).unwrap();
        s.add(spec("cfg", "p").clone()).unwrap_err();
        let mut config_job = spec("cfg", "p");
        config_job.owner = Owner::Config;
        s.add(config_job).unwrap();
        rt.block_on(s.run_now("p.a")).unwrap();
        let families = || prometheus::core::Collector::collect(&s.inner.runs_total)[0].get_metric().len();
        assert_eq!(families(), 1);
        assert!(s.remove("p.a", Some("p")));
        assert_eq!(families(), 0, "the removed job's series is gone");
        s.add(spec("p.c", "p")).unwrap();
        assert_eq!(s.inner.jobs_gauge.get(), 4);
    }

    #[test]
    fn run_now_reports_the_outcome_and_plugins_own_their_jobs() {
        let rt = rt();
        let runs = Arc::new(AtomicU64::new(0));
        let runner = Arc::new(Counting { runs: runs.clone(), hold: Duration::ZERO });
        let cfg = SchedulerConfig { enabled: false, ..Default::default() };
        let s = Scheduler::start(Scheduler::plan(&cfg).unwrap(), runner, None, rt.handle().clone());
        let spec = |id: &str, owner: Owner| JobSpec {
            id: id.into(),
            cron: "0 0 * * * *".into(),
            schedule: config::parse_cron(id, "0 0 * * * *").unwrap(),
            target: Target::Emit { event: "x".into() },
            payload: serde_json::Value::Null,
            enabled: true,
            owner,
        };
        s.add(spec("failing", Owner::Config)).unwrap();
        let out = rt.block_on(s.run_now("failing")).unwrap();
        assert_eq!((out.outcome.as_str(), out.error.as_deref()), ("error", Some("boom")));
        assert_eq!(rt.block_on(s.run_now("nope")).unwrap_err(), RunError::Unknown("nope".into()));
        let p = |g| Owner::Plugin { name: "notes".into(), generation: g };
        s.add(spec("notes.sweep", p(1))).unwrap();
        assert_eq!(s.add(spec("failing", p(1))).unwrap_err(), JobError::NotOwner("failing".into()));
        s.add(spec("notes.sweep", p(2))).unwrap();
        // A failed reload: generation 2 is released first, generation 1 keeps its job.
        s.remove_owned("notes", 2);
        let owner = |s: &Scheduler| s.list().into_iter().find(|j| j.id == "notes.sweep").map(|j| j.owner);
        assert_eq!(owner(&s), Some(p(1)), "the job went back to the instance that still serves");
        s.add(spec("notes.sweep", p(2))).unwrap();
        s.remove_owned("notes", 1);
        assert!(s.list().iter().any(|j| j.id == "notes.sweep"), "generation 2 took it over");
        s.remove_owned("notes", 2);
        assert!(!s.list().iter().any(|j| j.id == "notes.sweep"));
        assert!(!s.remove("failing", Some("notes")), "a plugin cannot remove a config job");
    }
}
