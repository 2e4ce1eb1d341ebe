//! The scheduler's record of runs: one row per run, written when it starts and
//! completed when it ends. A run is identified by (job, start time): the scheduler
//! never runs two of the same job at once.

use diesel::prelude::*;
use serde::Serialize;

use super::{rfc3339, Store};
use crate::schema::job_runs::dsl as jr;
use crate::with_conn;
use crate::DbError;

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Queryable)]
pub struct JobRun {
    /// Row id.
    pub id: i64,
    /// The job.
    pub job_id: String,
    /// Start (Unix ms).
    pub started_at: i64,
    /// End (Unix ms); none while running (or if the host died during the run).
    pub finished_at: Option<i64>,
    /// `running`, `ok`, `error` or `skipped`.
    pub outcome: String,
    /// The error, if any.
    pub error: Option<String>,
}

impl JobRun {
    /// As JSON with readable times.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "job_id": self.job_id,
            "started_at": rfc3339(self.started_at),
            "finished_at": self.finished_at.map(rfc3339),
            "duration_ms": self.finished_at.map(|f| f - self.started_at),
            "outcome": self.outcome,
            "error": self.error,
        })
    }
}

impl Store {
    /// Records a run that starts now (`outcome` = `running`), or one already settled
    /// (`skipped`).
    pub fn job_started(
        &self,
        job_id: &str,
        started_at: i64,
        outcome: &str,
        error: Option<&str>,
    ) -> Result<(), DbError> {
        let mut conn = self.db.conn()?;
        with_conn!(&mut conn, c => diesel::insert_into(jr::job_runs)
            .values((
                jr::job_id.eq(job_id),
                jr::started_at.eq(started_at),
                jr::outcome.eq(outcome),
                jr::error.eq(error),
            ))
            .execute(c))
        .map(drop)
        .map_err(|e| self.query_error(e))
    }

    /// Completes the run of `job_id` that started at `started_at`.
    pub fn job_finished(
        &self,
        job_id: &str,
        started_at: i64,
        finished_at: i64,
        outcome: &str,
        error: Option<&str>,
    ) -> Result<(), DbError> {
        let mut conn = self.db.conn()?;
        with_conn!(&mut conn, c => diesel::update(
            jr::job_runs.filter(jr::job_id.eq(job_id)).filter(jr::started_at.eq(started_at)),
        )
        .set((jr::finished_at.eq(Some(finished_at)), jr::outcome.eq(outcome), jr::error.eq(error)))
        .execute(c))
        .map(drop)
        .map_err(|e| self.query_error(e))
    }

    /// The latest runs of `job_id`, newest first.
    pub fn job_history(&self, job_id: &str, limit: usize) -> Result<Vec<JobRun>, DbError> {
        let mut conn = self.db.conn()?;
        with_conn!(&mut conn, c => jr::job_runs
            .filter(jr::job_id.eq(job_id))
            .order((jr::started_at.desc(), jr::id.desc()))
            .limit(limit.clamp(1, 1000) as i64)
            .load::<JobRun>(c))
        .map_err(|e| self.query_error(e))
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::sqlite_store;

    #[test]
    fn a_run_is_started_then_finished() {
        let (_d, s) = sqlite_store();
        s.job_started("j", 1000, "running", None).unwrap();
        s.job_started("j", 2000, "skipped", Some("the previous run is still going")).unwrap();
        s.job_finished("j", 1000, 1500, "error", Some("boom")).unwrap();
        let h = s.job_history("j", 10).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!((h[0].outcome.as_str(), h[0].started_at), ("skipped", 2000));
        assert_eq!(
            (h[1].outcome.as_str(), h[1].finished_at, h[1].error.as_deref()),
            ("error", Some(1500), Some("boom"))
        );
    }
}
