//! Snapshot rows: captured sandboxes (filesystem and memory) that new
//! sandboxes start from, made by `create_snapshot` or by a clone.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::query::{decode_cursor, encode_position, page_limit};
use crate::team::{team_filter, TeamScope};
use crate::{from_i64, to_i64, Error, Page, Result, Store};

/// Why a snapshot exists, stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotKind {
    /// Asked for with `POST /sandboxes/{id}/snapshots`.
    Snapshot,
    /// Made by `POST /sandboxes/{id}/clone`; in use while its origin lives.
    Clone,
}

impl SnapshotKind {
    /// The stored name: `snapshot`, `clone`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Snapshot => "snapshot",
            SnapshotKind::Clone => "clone",
        }
    }
}

impl fmt::Display for SnapshotKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SnapshotKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<SnapshotKind> {
        match s {
            "snapshot" => Ok(SnapshotKind::Snapshot),
            "clone" => Ok(SnapshotKind::Clone),
            _ => Err(Error::InvalidArgument(format!("unknown snapshot kind {s:?}"))),
        }
    }
}

/// Progress of a snapshot, stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotState {
    /// Row written, image not complete: after a crash it is garbage.
    Creating,
    /// Image complete; sandboxes may start from it.
    Ready,
}

impl SnapshotState {
    /// The stored name: `creating`, `ready`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Creating => "creating",
            SnapshotState::Ready => "ready",
        }
    }
}

impl fmt::Display for SnapshotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SnapshotState {
    type Err = Error;

    fn from_str(s: &str) -> Result<SnapshotState> {
        match s {
            "creating" => Ok(SnapshotState::Creating),
            "ready" => Ok(SnapshotState::Ready),
            _ => Err(Error::InvalidArgument(format!("unknown snapshot state {s:?}"))),
        }
    }
}

/// Everything the control plane keeps about one snapshot. The resource
/// fields are the origin's at capture time, so a sandbox started from the
/// snapshot gets the same shape even after the origin is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Primary key, chosen by the caller; usable as a `templateID`.
    pub id: String,
    /// The team it belongs to: its origin sandbox's.
    pub team_id: String,
    /// The origin sandbox. Not a foreign key: the snapshot outlives it.
    pub sandbox_id: String,
    /// Snapshot or clone.
    pub kind: SnapshotKind,
    /// Creating or ready.
    pub state: SnapshotState,
    /// Names returned to the SDK (`names` of `create_snapshot`).
    pub names: Vec<String>,
    /// The origin's template.
    pub template_id: String,
    /// Node that holds the image.
    pub node_id: String,
    /// The origin's vCPUs.
    pub cpu_count: u32,
    /// The origin's memory limit in MiB.
    pub memory_mb: u64,
    /// The origin's disk size in MiB.
    pub disk_mb: u64,
    /// The origin's environment variables.
    pub env_vars: BTreeMap<String, String>,
    /// The origin's metadata.
    pub metadata: BTreeMap<String, String>,
    /// envd version inside the image.
    pub envd_version: String,
    /// The access token the saved envd holds: a sandbox started from the
    /// snapshot authenticates with it once to give envd its own.
    pub envd_token: String,
    /// Size of the memory image in bytes, once known.
    pub memory_bytes: Option<u64>,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
}

/// Filters and position of one [`Store::list_snapshots`] call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotQuery {
    /// Only snapshots of this origin sandbox.
    pub sandbox_id: Option<String>,
    /// Only snapshots of this kind; `None` means both.
    pub kind: Option<SnapshotKind>,
    /// Only snapshots with this among their names.
    pub name: Option<String>,
    /// Page size; 0 means [`crate::DEFAULT_LIMIT`], larger than
    /// [`crate::MAX_LIMIT`] is capped.
    pub limit: u32,
    /// Cursor from the previous [`Page::next_token`].
    pub next_token: Option<String>,
}

/// Columns of `snapshots` in the order `insert_snapshot` binds them.
const COLUMNS: &str = "id, sandbox_id, kind, state, names, template_id, node_id, cpu_count, \
     memory_mb, disk_mb, env_vars, metadata, envd_version, envd_token, memory_bytes, created_at, team_id";

fn json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::InvalidArgument(format!("JSON encoding: {e}")))
}

fn decode(row: &AnyRow) -> Result<SnapshotRecord> {
    let id: String = row.try_get("id")?;
    let corrupt = |col: &str, e: &dyn fmt::Display| Error::Corrupt(format!("snapshot {id} {col}: {e}"));
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    let names: String = row.try_get("names")?;
    let env_vars: String = row.try_get("env_vars")?;
    let metadata: String = row.try_get("metadata")?;
    Ok(SnapshotRecord {
        sandbox_id: row.try_get("sandbox_id")?,
        kind: kind.parse().map_err(|e: Error| corrupt("kind", &e))?,
        state: state.parse().map_err(|e: Error| corrupt("state", &e))?,
        names: serde_json::from_str(&names).map_err(|e| corrupt("names", &e))?,
        template_id: row.try_get("template_id")?,
        node_id: row.try_get("node_id")?,
        cpu_count: from_i64("cpu_count", row.try_get("cpu_count")?)?,
        memory_mb: from_i64("memory_mb", row.try_get("memory_mb")?)?,
        disk_mb: from_i64("disk_mb", row.try_get("disk_mb")?)?,
        env_vars: serde_json::from_str(&env_vars).map_err(|e| corrupt("env_vars", &e))?,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt("metadata", &e))?,
        envd_version: row.try_get("envd_version")?,
        envd_token: row.try_get("envd_token")?,
        memory_bytes: row
            .try_get::<Option<i64>, _>("memory_bytes")?
            .map(|v| from_i64("memory_bytes", v))
            .transpose()?,
        created_at: row.try_get("created_at")?,
        team_id: row.try_get("team_id")?,
        id,
    })
}

impl Store {
    /// Inserts a snapshot (normally in [`SnapshotState::Creating`], before
    /// the image is written, so a crash leaves a row that recovery finds).
    /// [`Error::Conflict`] if the id is taken.
    pub async fn insert_snapshot(&self, r: &SnapshotRecord) -> Result<()> {
        let memory_bytes = r.memory_bytes.map(|v| to_i64("memory_bytes", v)).transpose()?;
        let sql = format!(
            "INSERT INTO snapshots ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        );
        sqlx::query(&sql)
            .bind(r.id.as_str())
            .bind(r.sandbox_id.as_str())
            .bind(r.kind.as_str())
            .bind(r.state.as_str())
            .bind(json(&r.names)?)
            .bind(r.template_id.as_str())
            .bind(r.node_id.as_str())
            .bind(i64::from(r.cpu_count))
            .bind(to_i64("memory_mb", r.memory_mb)?)
            .bind(to_i64("disk_mb", r.disk_mb)?)
            .bind(json(&r.env_vars)?)
            .bind(json(&r.metadata)?)
            .bind(r.envd_version.as_str())
            .bind(r.envd_token.as_str())
            .bind(memory_bytes)
            .bind(r.created_at)
            .bind(r.team_id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The snapshot with this id, of any team, in any state, if any.
    pub async fn get_snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>> {
        self.snapshot_of(None, id).await
    }

    async fn snapshot_of(&self, team: Option<&str>, id: &str) -> Result<Option<SnapshotRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM snapshots WHERE id = $1{}", team_filter(team, "team_id", 2));
        let mut query = sqlx::query(&sql).bind(id);
        if let Some(team) = team {
            query = query.bind(team);
        }
        let row = query.fetch_optional(&self.pool).await?;
        row.as_ref().map(decode).transpose()
    }

    /// Marks the image complete and records its size (`None` if unknown).
    /// Idempotent. [`Error::NotFound`] if the snapshot does not exist.
    pub async fn mark_snapshot_ready(&self, id: &str, memory_bytes: Option<u64>) -> Result<()> {
        let bytes = memory_bytes.map(|v| to_i64("memory_bytes", v)).transpose()?;
        let done = sqlx::query("UPDATE snapshots SET state = 'ready', memory_bytes = $2 WHERE id = $1")
            .bind(id)
            .bind(bytes)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("snapshot {id}")));
        }
        Ok(())
    }

    /// Deletes the row (not the image, which is the caller's). Returns
    /// whether it existed. Does not check [`Store::snapshot_users`]; the
    /// caller does, first.
    pub async fn delete_snapshot(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM snapshots WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// One page of **ready** snapshots matching `q`, oldest first
    /// (`created_at`, then `id`). The order is total and the cursor is the
    /// last row's sort key (the same token format as
    /// [`Store::list_sandboxes`]), so pages neither repeat nor skip rows
    /// when snapshots come and go between calls; new ones appear on later
    /// pages. Snapshots still being created are left out: they cannot be
    /// used yet. [`Error::InvalidArgument`] for a bad token. Every team's;
    /// [`TeamScope::list_snapshots`] lists one team's.
    pub async fn list_snapshots(&self, q: &SnapshotQuery) -> Result<Page<SnapshotRecord>> {
        self.snapshots_of(None, q).await
    }

    async fn snapshots_of(&self, team: Option<&str>, q: &SnapshotQuery) -> Result<Page<SnapshotRecord>> {
        let cursor = q.next_token.as_deref().map(decode_cursor).transpose()?;
        let limit = page_limit(q.limit);
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        let mut sql = format!("SELECT {COLUMNS} FROM snapshots WHERE state = 'ready'");
        if team.is_some() {
            sql.push_str(&format!(" AND team_id = {}", next()));
        }
        if q.sandbox_id.is_some() {
            sql.push_str(&format!(" AND sandbox_id = {}", next()));
        }
        if q.kind.is_some() {
            sql.push_str(&format!(" AND kind = {}", next()));
        }
        // A name is an element of the JSON array: its JSON string, quotes
        // included, appears in the column; LIKE's own wildcards are escaped.
        let name_pattern = q.name.as_ref().map(|name| {
            let quoted = serde_json::Value::String(name.clone()).to_string();
            let escaped = quoted.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            format!("%{escaped}%")
        });
        if name_pattern.is_some() {
            sql.push_str(&format!(" AND names LIKE {} ESCAPE '\\'", next()));
        }
        if cursor.is_some() {
            let (t1, t2, id) = (next(), next(), next());
            sql.push_str(&format!(" AND (created_at > {t1} OR (created_at = {t2} AND id > {id}))"));
        }
        sql.push_str(&format!(" ORDER BY created_at, id LIMIT {}", next()));

        let mut query = sqlx::query(&sql);
        if let Some(team) = team {
            query = query.bind(team);
        }
        if let Some(sandbox_id) = &q.sandbox_id {
            query = query.bind(sandbox_id.as_str());
        }
        if let Some(kind) = q.kind {
            query = query.bind(kind.as_str());
        }
        if let Some(pattern) = &name_pattern {
            query = query.bind(pattern.as_str());
        }
        if let Some((t, id)) = &cursor {
            query = query.bind(*t).bind(*t).bind(id.as_str());
        }
        // One extra row tells whether another page exists.
        query = query.bind(i64::from(limit) + 1);

        let rows = query.fetch_all(&self.pool).await?;
        let mut items = rows.iter().map(decode).collect::<Result<Vec<_>>>()?;
        let next_token = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|r| encode_position(r.created_at, &r.id))
        } else {
            None
        };
        // SQLite's LIKE ignores ASCII case: keep exact matches only.
        if let Some(name) = &q.name {
            items.retain(|r| r.names.contains(name));
        }
        Ok(Page { items, next_token })
    }

    /// Every snapshot in `state`, oldest first (crash recovery deletes the
    /// ones left [`SnapshotState::Creating`]).
    pub async fn snapshots_in_state(&self, state: SnapshotState) -> Result<Vec<SnapshotRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM snapshots WHERE state = $1 ORDER BY created_at, id");
        let rows = sqlx::query(&sql).bind(state.as_str()).fetch_all(&self.pool).await?;
        rows.iter().map(decode).collect()
    }

    /// Ids of the sandboxes that keep snapshot `id` from being deleted,
    /// oldest first: those not killed that were created or cloned from it,
    /// and, for a [`SnapshotKind::Clone`] snapshot, its origin while not
    /// killed. A missing row (origin deleted) counts as gone. Empty means
    /// the snapshot may be deleted.
    pub async fn snapshot_users(&self, id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT s.id FROM sandboxes s WHERE s.state <> 'killed' AND (s.snapshot_id = $1 \
             OR s.id IN (SELECT p.sandbox_id FROM snapshots p WHERE p.id = $2 AND p.kind = 'clone')) \
             ORDER BY s.started_at, s.id",
        )
        .bind(id)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok(row.try_get::<String, _>(0)?)).collect()
    }
}

impl TeamScope<'_> {
    /// The team's snapshot with this id, in any state, if any.
    pub async fn get_snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>> {
        self.store.snapshot_of(Some(self.team_id), id).await
    }

    /// One page of the team's ready snapshots matching `q`, as
    /// [`Store::list_snapshots`] pages every team's.
    pub async fn list_snapshots(&self, q: &SnapshotQuery) -> Result<Page<SnapshotRecord>> {
        self.store.snapshots_of(Some(self.team_id), q).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_unknown() {
        for k in [SnapshotKind::Snapshot, SnapshotKind::Clone] {
            assert_eq!(k.as_str().parse::<SnapshotKind>().ok(), Some(k));
        }
        for s in [SnapshotState::Creating, SnapshotState::Ready] {
            assert_eq!(s.to_string().parse::<SnapshotState>().ok(), Some(s));
        }
        assert!(matches!("Clone".parse::<SnapshotKind>(), Err(Error::InvalidArgument(_))));
        assert!(matches!("done".parse::<SnapshotState>(), Err(Error::InvalidArgument(_))));
    }
}
