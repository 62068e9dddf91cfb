//! Template rows: named templates and their builds. Every build of a name
//! is a new version (1, 2, ...); only ready versions start sandboxes.
//! A template belongs to a team, and names are unique within a team; a build
//! belongs to its template's team.

use std::fmt;
use std::str::FromStr;

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::team::{team_filter, TeamScope};
use crate::{from_i64, to_i64, Error, Result, Store};

/// A named template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    /// Primary key (`templateID`).
    pub id: String,
    /// The team it belongs to.
    pub team_id: String,
    /// Its name (alias), unique within its team.
    pub name: String,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
}

/// Progress of a build, stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuildStatus {
    /// Asked for; its steps have not arrived or not started.
    Waiting,
    /// Running its steps.
    Building,
    /// Done: sandboxes may start from it.
    Ready,
    /// Failed (see [`BuildRecord::reason`]).
    Error,
}

impl BuildStatus {
    /// The stored name, also the SDK's (`waiting`, `building`, `ready`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Waiting => "waiting",
            BuildStatus::Building => "building",
            BuildStatus::Ready => "ready",
            BuildStatus::Error => "error",
        }
    }

    /// Whether the build will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, BuildStatus::Ready | BuildStatus::Error)
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BuildStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<BuildStatus> {
        match s {
            "waiting" => Ok(BuildStatus::Waiting),
            "building" => Ok(BuildStatus::Building),
            "ready" => Ok(BuildStatus::Ready),
            "error" => Ok(BuildStatus::Error),
            _ => Err(Error::InvalidArgument(format!("unknown build status {s:?}"))),
        }
    }
}

/// One build (= one version) of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRecord {
    /// Primary key (`buildID`).
    pub id: String,
    /// The template it is a version of.
    pub template_id: String,
    /// 1 for the first build of a name, then one more per build.
    pub version: u32,
    /// Where it is.
    pub status: BuildStatus,
    /// Default vCPUs of its sandboxes.
    pub cpu_count: u32,
    /// Default memory of its sandboxes in MiB.
    pub memory_mb: u64,
    /// Default disk of its sandboxes in MiB.
    pub disk_mb: u64,
    /// The build request (JSON), once it was started.
    pub request: Option<String>,
    /// The node's layer-store reference holding the result, once ready.
    pub node_ref: Option<String>,
    /// The node checkpoint of its started start command, if it has one.
    pub checkpoint: Option<String>,
    /// The envd token the checkpoint's envd holds.
    pub envd_token: Option<String>,
    /// Why it failed.
    pub reason: Option<String>,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// When it became ready or failed.
    pub finished_at: Option<i64>,
}

const BUILD_COLUMNS: &str = "id, template_id, version, status, cpu_count, memory_mb, disk_mb, request, \
     node_ref, checkpoint, envd_token, reason, created_at, finished_at";

const TEMPLATE_COLUMNS: &str = "id, team_id, name, created_at";

fn decode_template(row: &AnyRow) -> Result<TemplateRecord> {
    Ok(TemplateRecord {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

fn decode_build(row: &AnyRow) -> Result<BuildRecord> {
    let id: String = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    Ok(BuildRecord {
        template_id: row.try_get("template_id")?,
        version: from_i64("version", row.try_get("version")?)?,
        status: status.parse().map_err(|e: Error| Error::Corrupt(format!("build {id} status: {e}")))?,
        cpu_count: from_i64("cpu_count", row.try_get("cpu_count")?)?,
        memory_mb: from_i64("memory_mb", row.try_get("memory_mb")?)?,
        disk_mb: from_i64("disk_mb", row.try_get("disk_mb")?)?,
        request: row.try_get("request")?,
        node_ref: row.try_get("node_ref")?,
        checkpoint: row.try_get("checkpoint")?,
        envd_token: row.try_get("envd_token")?,
        reason: row.try_get("reason")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
        id,
    })
}

impl Store {
    /// Inserts a template. [`Error::Conflict`] if the id is taken, or the
    /// name within its team.
    pub async fn insert_template(&self, t: &TemplateRecord) -> Result<()> {
        sqlx::query("INSERT INTO templates (id, team_id, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(t.id.as_str())
            .bind(t.team_id.as_str())
            .bind(t.name.as_str())
            .bind(t.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The template with this id, of any team, if any.
    pub async fn get_template(&self, id: &str) -> Result<Option<TemplateRecord>> {
        self.template_where(None, "id", id).await
    }

    /// One template whose `column` is `value` (of `team`, when given).
    async fn template_where(&self, team: Option<&str>, column: &str, value: &str) -> Result<Option<TemplateRecord>> {
        // Names repeat across teams: unscoped, the oldest such template wins.
        let sql = format!(
            "SELECT {TEMPLATE_COLUMNS} FROM templates WHERE {column} = $1{} ORDER BY created_at, id LIMIT 1",
            team_filter(team, "team_id", 2)
        );
        let mut query = sqlx::query(&sql).bind(value);
        if let Some(team) = team {
            query = query.bind(team);
        }
        let row = query.fetch_optional(&self.pool).await?;
        row.as_ref().map(decode_template).transpose()
    }

    /// Every template of every team, oldest first.
    pub async fn list_templates(&self) -> Result<Vec<TemplateRecord>> {
        self.templates_of(None).await
    }

    async fn templates_of(&self, team: Option<&str>) -> Result<Vec<TemplateRecord>> {
        let filter = if team.is_some() { " WHERE team_id = $1" } else { "" };
        let sql = format!("SELECT {TEMPLATE_COLUMNS} FROM templates{filter} ORDER BY created_at, id");
        let mut query = sqlx::query(&sql);
        if let Some(team) = team {
            query = query.bind(team);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(decode_template).collect()
    }

    /// Deletes a template and all its build rows. Returns whether it existed.
    pub async fn delete_template(&self, id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM template_builds WHERE template_id = $1").bind(id).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM templates WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Inserts `b` as the next version of its template (the version field is
    /// chosen here and returned). Concurrent inserts for one template get
    /// distinct versions: a lost race on the unique (template, version)
    /// pair is retried.
    pub async fn insert_build(&self, b: &BuildRecord) -> Result<u32> {
        for _ in 0..8 {
            let next: i64 =
                sqlx::query("SELECT COALESCE(MAX(version), 0) + 1 FROM template_builds WHERE template_id = $1")
                    .bind(b.template_id.as_str())
                    .fetch_one(&self.pool)
                    .await?
                    .try_get(0)?;
            let sql = format!(
                "INSERT INTO template_builds ({BUILD_COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            );
            let done = sqlx::query(&sql)
                .bind(b.id.as_str())
                .bind(b.template_id.as_str())
                .bind(next)
                .bind(b.status.as_str())
                .bind(i64::from(b.cpu_count))
                .bind(to_i64("memory_mb", b.memory_mb)?)
                .bind(to_i64("disk_mb", b.disk_mb)?)
                .bind(b.request.as_deref())
                .bind(b.node_ref.as_deref())
                .bind(b.checkpoint.as_deref())
                .bind(b.envd_token.as_deref())
                .bind(b.reason.as_deref())
                .bind(b.created_at)
                .bind(b.finished_at)
                .execute(&self.pool)
                .await;
            match done {
                Ok(_) => return from_i64("version", next),
                // Either the id (a caller bug: report it) or the version (retry).
                Err(e) => match Error::from(e) {
                    Error::Conflict(_) if self.get_build(&b.id).await?.is_none() => continue,
                    other => return Err(other),
                },
            }
        }
        Err(Error::Conflict(format!("no free version for template {}", b.template_id)))
    }

    /// Writes the mutable fields of a build (status, request, results).
    /// [`Error::NotFound`] if it does not exist (deleted meanwhile).
    pub async fn update_build(&self, b: &BuildRecord) -> Result<()> {
        let done = sqlx::query(
            "UPDATE template_builds SET status = $2, request = $3, node_ref = $4, checkpoint = $5, \
             envd_token = $6, reason = $7, finished_at = $8 WHERE id = $1",
        )
        .bind(b.id.as_str())
        .bind(b.status.as_str())
        .bind(b.request.as_deref())
        .bind(b.node_ref.as_deref())
        .bind(b.checkpoint.as_deref())
        .bind(b.envd_token.as_deref())
        .bind(b.reason.as_deref())
        .bind(b.finished_at)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("build {}", b.id)));
        }
        Ok(())
    }

    /// The build with this id, of any team, if any.
    pub async fn get_build(&self, id: &str) -> Result<Option<BuildRecord>> {
        self.build_of(None, id).await
    }

    async fn build_of(&self, team: Option<&str>, id: &str) -> Result<Option<BuildRecord>> {
        let filter = match team {
            Some(_) => " AND template_id IN (SELECT t.id FROM templates t WHERE t.team_id = $2)",
            None => "",
        };
        let sql = format!("SELECT {BUILD_COLUMNS} FROM template_builds WHERE id = $1{filter}");
        let mut query = sqlx::query(&sql).bind(id);
        if let Some(team) = team {
            query = query.bind(team);
        }
        let row = query.fetch_optional(&self.pool).await?;
        row.as_ref().map(decode_build).transpose()
    }

    /// Every build of a template, oldest version first.
    pub async fn builds_of(&self, template_id: &str) -> Result<Vec<BuildRecord>> {
        let sql = format!("SELECT {BUILD_COLUMNS} FROM template_builds WHERE template_id = $1 ORDER BY version");
        let rows = sqlx::query(&sql).bind(template_id).fetch_all(&self.pool).await?;
        rows.iter().map(decode_build).collect()
    }

    /// Every build in `status` (crash recovery fails the unfinished ones).
    pub async fn builds_in_status(&self, status: BuildStatus) -> Result<Vec<BuildRecord>> {
        let sql = format!("SELECT {BUILD_COLUMNS} FROM template_builds WHERE status = $1 ORDER BY created_at, id");
        let rows = sqlx::query(&sql).bind(status.as_str()).fetch_all(&self.pool).await?;
        rows.iter().map(decode_build).collect()
    }

    /// Deletes one build row. Returns whether it existed.
    pub async fn delete_build(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM template_builds WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Ids of the sandboxes (not killed) started from build `id`.
    pub async fn build_users(&self, id: &str) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT id FROM sandboxes WHERE state <> 'killed' AND build_id = $1 ORDER BY started_at, id")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|row| Ok(row.try_get::<String, _>(0)?)).collect()
    }
}

impl TeamScope<'_> {
    /// The team's template with this id, if any.
    pub async fn get_template(&self, id: &str) -> Result<Option<TemplateRecord>> {
        self.store.template_where(Some(self.team_id), "id", id).await
    }

    /// The team's template with this name, if any.
    pub async fn template_by_name(&self, name: &str) -> Result<Option<TemplateRecord>> {
        self.store.template_where(Some(self.team_id), "name", name).await
    }

    /// The team's templates, oldest first.
    pub async fn list_templates(&self) -> Result<Vec<TemplateRecord>> {
        self.store.templates_of(Some(self.team_id)).await
    }

    /// The build with this id of one of the team's templates, if any.
    pub async fn get_build(&self, id: &str) -> Result<Option<BuildRecord>> {
        self.store.build_of(Some(self.team_id), id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in [BuildStatus::Waiting, BuildStatus::Building, BuildStatus::Ready, BuildStatus::Error] {
            assert_eq!(s.as_str().parse::<BuildStatus>().ok(), Some(s));
        }
        assert!(BuildStatus::Ready.is_final() && !BuildStatus::Building.is_final());
        assert!(matches!("done".parse::<BuildStatus>(), Err(Error::InvalidArgument(_))));
    }
}
