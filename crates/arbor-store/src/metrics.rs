//! Sandbox resource samples, kept after the sandbox is gone until pruned.

use sqlx::Row;

use crate::team::{team_filter, TeamScope};
use crate::{from_i64, to_i64, Result, Store};

/// One resource sample of a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Sandbox the sample belongs to (need not exist any more).
    pub sandbox_id: String,
    /// The sandbox's team (kept here, as the sample outlives the sandbox).
    pub team_id: String,
    /// Sample time (unix ms).
    pub timestamp: i64,
    /// vCPUs.
    pub cpu_count: u32,
    /// CPU use in percent of `cpu_count` CPUs.
    pub cpu_used_pct: f64,
    /// Memory limit in MiB.
    pub mem_total_mib: u64,
    /// Memory in use in MiB.
    pub mem_used_mib: u64,
    /// Disk size in bytes.
    pub disk_total: u64,
    /// Disk in use in bytes.
    pub disk_used: u64,
}

impl Store {
    /// Stores one sample.
    pub async fn insert_metric(&self, m: &Metric) -> Result<()> {
        let query = sqlx::query(
            "INSERT INTO metrics (sandbox_id, ts, cpu_count, cpu_used_pct, mem_total_mib, \
             mem_used_mib, disk_total, disk_used, team_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(m.sandbox_id.as_str())
        .bind(m.timestamp)
        .bind(i64::from(m.cpu_count))
        .bind(m.cpu_used_pct)
        .bind(to_i64("mem_total_mib", m.mem_total_mib)?)
        .bind(to_i64("mem_used_mib", m.mem_used_mib)?)
        .bind(to_i64("disk_total", m.disk_total)?)
        .bind(to_i64("disk_used", m.disk_used)?)
        .bind(m.team_id.as_str());
        self.execute_relaxed(query).await?;
        Ok(())
    }

    /// Samples of `sandbox_id` (of any team) with `start <= timestamp <= end`,
    /// oldest first.
    pub async fn metrics(&self, sandbox_id: &str, start: i64, end: i64) -> Result<Vec<Metric>> {
        self.metrics_of(None, sandbox_id, start, end).await
    }

    async fn metrics_of(&self, team: Option<&str>, sandbox_id: &str, start: i64, end: i64) -> Result<Vec<Metric>> {
        let sql = format!(
            "SELECT sandbox_id, team_id, ts, cpu_count, cpu_used_pct, mem_total_mib, mem_used_mib, \
             disk_total, disk_used FROM metrics WHERE sandbox_id = $1 AND ts >= $2 AND ts <= $3{} \
             ORDER BY ts",
            team_filter(team, "team_id", 4)
        );
        let mut query = sqlx::query(&sql).bind(sandbox_id).bind(start).bind(end);
        if let Some(team) = team {
            query = query.bind(team);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(Metric {
                    sandbox_id: row.try_get("sandbox_id")?,
                    team_id: row.try_get("team_id")?,
                    timestamp: row.try_get("ts")?,
                    cpu_count: from_i64("cpu_count", row.try_get("cpu_count")?)?,
                    cpu_used_pct: row.try_get("cpu_used_pct")?,
                    mem_total_mib: from_i64("mem_total_mib", row.try_get("mem_total_mib")?)?,
                    mem_used_mib: from_i64("mem_used_mib", row.try_get("mem_used_mib")?)?,
                    disk_total: from_i64("disk_total", row.try_get("disk_total")?)?,
                    disk_used: from_i64("disk_used", row.try_get("disk_used")?)?,
                })
            })
            .collect()
    }

    /// Deletes every sample older than `before`; returns how many went.
    pub async fn prune_metrics(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM metrics WHERE ts < $1").bind(before).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }
}

impl TeamScope<'_> {
    /// Samples of the team's sandbox `sandbox_id` with
    /// `start <= timestamp <= end`, oldest first; none for another team's.
    pub async fn metrics(&self, sandbox_id: &str, start: i64, end: i64) -> Result<Vec<Metric>> {
        self.store.metrics_of(Some(self.team_id), sandbox_id, start, end).await
    }
}
