//! Retention of the host's growing tables, `job_runs` and `audit_log`: rows older than a
//! number of days, and rows beyond a count (the oldest first), are deleted. `xcore serve`
//! applies it at start and then every `retention.interval_seconds` (a thread of its own,
//! like the KV sweeper), and counts the deleted rows in `xcore_store_pruned_rows_total`.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::{now_ms, Store};
use crate::schema::{audit_log::dsl as al, job_runs::dsl as jr};
use crate::with_conn;
use crate::DbError;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The `retention` section of `xcore.yaml`. 0 = no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// Days a job run is kept (by its start). Default 30.
    pub job_runs_days: u64,
    /// Job runs kept at most (the newest). Default 100 000.
    pub job_runs_max_rows: u64,
    /// Days an audit entry is kept. Default 90.
    pub audit_log_days: u64,
    /// Audit entries kept at most (the newest). Default 100 000.
    pub audit_log_max_rows: u64,
    /// Seconds between two prunes. Default 3600; at least 1.
    pub interval_seconds: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            job_runs_days: 30,
            job_runs_max_rows: 100_000,
            audit_log_days: 90,
            audit_log_max_rows: 100_000,
            interval_seconds: 3600,
        }
    }
}

/// Rows one prune deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// From `job_runs`.
    pub job_runs: u64,
    /// From `audit_log`.
    pub audit_log: u64,
}

/// `now` minus `days`, in Unix ms; `None` for 0 (no age limit).
fn cutoff(now: i64, days: u64) -> Option<i64> {
    (days > 0).then(|| now.saturating_sub(i64::try_from(days).unwrap_or(i64::MAX).saturating_mul(DAY_MS)))
}

/// `None` for 0 (no count limit).
fn keep(rows: u64) -> Option<u64> {
    (rows > 0).then_some(rows)
}

/// Deletes the rows of `$table` whose `$time` is before `$before` and all but the newest
/// `$keep` (by `$id`); how many went. One path for both tables and the three back-ends:
/// the row limit finds the first row to go, then deletes up to it, in two statements,
/// because MySQL cannot delete from a table its subquery reads.
macro_rules! prune_table {
    ($store:expr, $table:path, $id:path, $time:path, $before:expr, $keep:expr) => {{
        let store: &Store = $store;
        let mut conn = store.db.conn()?;
        let mut deleted = 0usize;
        if let Some(before) = $before {
            deleted += with_conn!(&mut conn, c => diesel::delete($table.filter($time.lt(before))).execute(c))
                .map_err(|e| store.query_error(e))?;
        }
        if let Some(keep) = $keep {
            let offset = i64::try_from(keep).unwrap_or(i64::MAX);
            let first_gone: Option<i64> = with_conn!(&mut conn, c => $table
                .select($id)
                .order($id.desc())
                .offset(offset)
                .limit(1)
                .first(c)
                .optional())
            .map_err(|e| store.query_error(e))?;
            if let Some(id) = first_gone {
                deleted += with_conn!(&mut conn, c => diesel::delete($table.filter($id.le(id))).execute(c))
                    .map_err(|e| store.query_error(e))?;
            }
        }
        Ok(deleted as u64)
    }};
}

impl Store {
    /// Applies `cfg` once, at time `now` (Unix ms).
    pub fn prune(&self, cfg: &RetentionConfig, now: i64) -> Result<Pruned, DbError> {
        Ok(Pruned {
            job_runs: self.prune_job_runs(cutoff(now, cfg.job_runs_days), keep(cfg.job_runs_max_rows))?,
            audit_log: self.prune_audit(cutoff(now, cfg.audit_log_days), keep(cfg.audit_log_max_rows))?,
        })
    }

    /// Deletes job runs that started before `before` (Unix ms) and all but the newest
    /// `keep_rows`; how many went.
    pub fn prune_job_runs(&self, before: Option<i64>, keep_rows: Option<u64>) -> Result<u64, DbError> {
        prune_table!(self, jr::job_runs, jr::id, jr::started_at, before, keep_rows)
    }

    /// Deletes audit entries from before `before` (Unix ms) and all but the newest
    /// `keep_rows`; how many went.
    pub fn prune_audit(&self, before: Option<i64>, keep_rows: Option<u64>) -> Result<u64, DbError> {
        prune_table!(self, al::audit_log, al::id, al::at, before, keep_rows)
    }

    /// [`Store::prune`] now.
    pub fn prune_now(&self, cfg: &RetentionConfig) -> Result<Pruned, DbError> {
        self.prune(cfg, now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::sqlite_store;

    #[test]
    fn old_rows_and_rows_beyond_the_count_go() {
        let (_d, s) = sqlite_store();
        let now = 1_000 * DAY_MS;
        for day in [1, 500, 990, 995, 999] {
            s.job_started("j", now - (1000 - day) * DAY_MS, "ok", None).unwrap();
        }
        let cfg = RetentionConfig { job_runs_days: 30, job_runs_max_rows: 2, ..Default::default() };
        let pruned = s.prune(&cfg, now).unwrap();
        // Days 1 and 500 are too old; of the other three, the two newest stay.
        assert_eq!(pruned.job_runs, 3);
        let left: Vec<i64> = s.job_history("j", 10).unwrap().iter().map(|r| r.started_at).collect();
        assert_eq!(left, [now - DAY_MS, now - 5 * DAY_MS]);
        assert_eq!(s.prune(&cfg, now).unwrap(), Pruned::default(), "nothing more to do");
        let unlimited = RetentionConfig {
            job_runs_days: 0,
            job_runs_max_rows: 0,
            audit_log_days: 0,
            audit_log_max_rows: 0,
            interval_seconds: 1,
        };
        assert_eq!(s.prune(&unlimited, now + 10_000 * DAY_MS).unwrap(), Pruned::default());
    }
}
