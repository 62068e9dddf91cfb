//! Sandbox rows: the record type and its single-row operations.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};

use crate::team::{team_filter, TeamScope};
use crate::{from_i64, to_i64, Error, Result, Store};

/// Touches closer than this to the last one written are not written.
pub const TOUCH_GRANULARITY_MS: i64 = 1_000;
/// Bound on remembered sandboxes; past it the memory starts over (at
/// worst one extra write per sandbox).
const ACTIVITY_CACHE_MAX: usize = 100_000;

/// Per-sandbox time of the last activity this process wrote.
#[derive(Debug, Default)]
pub(crate) struct ActivityCache(Mutex<HashMap<String, i64>>);

impl ActivityCache {
    fn map(&self) -> MutexGuard<'_, HashMap<String, i64>> {
        // The map holds only hints; one left half-updated by a panic is fine.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `at` should go to the database, remembering it if so.
    fn should_write(&self, id: &str, at: i64) -> bool {
        let mut map = self.map();
        if let Some(&last) = map.get(id) {
            if at < last.saturating_add(TOUCH_GRANULARITY_MS) {
                return false;
            }
        }
        if map.len() >= ACTIVITY_CACHE_MAX {
            map.clear();
        }
        map.insert(id.to_string(), at);
        true
    }

    fn forget(&self, id: &str) {
        self.map().remove(id);
    }
}

/// Lifecycle state of a sandbox, stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Processes run; the deadline (`end_at`) and idle timeout apply.
    Running,
    /// Frozen or checkpointed; resumed by `connect`.
    Paused,
    /// Gone; the row is kept only until the caller deletes it.
    Killed,
}

impl State {
    /// The stored (and wire) name: `running`, `paused`, `killed`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Paused => "paused",
            State::Killed => "killed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = Error;

    fn from_str(s: &str) -> Result<State> {
        match s {
            "running" => Ok(State::Running),
            "paused" => Ok(State::Paused),
            "killed" => Ok(State::Killed),
            _ => Err(Error::InvalidArgument(format!("unknown sandbox state {s:?}"))),
        }
    }
}

/// Everything the control plane keeps about one sandbox. Times are unix
/// milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    /// Primary key, chosen by the caller.
    pub id: String,
    /// The team it belongs to (the creating key's; a clone's origin's).
    /// Set at insert, never changed by [`Store::update_sandbox`].
    pub team_id: String,
    /// Template (or snapshot) the sandbox was created from.
    pub template_id: String,
    /// Template alias, if it was created by alias.
    pub alias: Option<String>,
    /// Lifecycle state.
    pub state: State,
    /// Node that runs (or holds the paused state of) the sandbox.
    pub node_id: String,
    /// vCPUs.
    pub cpu_count: u32,
    /// Memory limit in MiB.
    pub memory_mb: u64,
    /// Disk size in MiB.
    pub disk_mb: u64,
    /// User metadata; also mirrored in `sandbox_metadata` for list filters.
    pub metadata: BTreeMap<String, String>,
    /// Environment variables given at create.
    pub env_vars: BTreeMap<String, String>,
    /// Token the SDK sends to envd (`X-Access-Token`); unique.
    pub envd_token: String,
    /// Token for public traffic to the sandbox's ports, when `secure`.
    pub traffic_token: Option<String>,
    /// Whether envd requires the access token.
    pub secure: bool,
    /// Whether the sandbox may reach the internet.
    pub allow_internet: bool,
    /// Network configuration as given at create (`allowOut`, `denyOut`, …).
    pub network: Option<serde_json::Value>,
    /// Pause (instead of kill) when the deadline passes.
    pub auto_pause: bool,
    /// Resume a paused sandbox on incoming traffic.
    pub auto_resume: bool,
    /// Seconds without activity after which the sandbox is due.
    pub idle_timeout_s: Option<u64>,
    /// Creation time.
    pub started_at: i64,
    /// Deadline: the sandbox is due when `end_at <= now`.
    pub end_at: i64,
    /// Last request seen for the sandbox (see [`Store::touch`]).
    pub last_activity_at: i64,
    /// When it was last paused.
    pub paused_at: Option<i64>,
    /// Address envd listens on (host side), e.g. `10.11.0.2`.
    pub host_addr: Option<String>,
    /// PID of the sandbox's init on its node.
    pub init_pid: Option<u32>,
    /// envd version reported to the SDK.
    pub envd_version: String,
    /// Domain for host-based URLs.
    pub domain: Option<String>,
    /// Snapshot the sandbox was created or cloned from (`None` when it
    /// started from a template). While the sandbox is not killed, the
    /// snapshot counts as in use (see [`Store::snapshot_users`]).
    pub snapshot_id: Option<String>,
    /// Template version (build) the sandbox started from, if it started
    /// from a built template. While the sandbox is not killed, the version
    /// counts as in use (see [`Store::build_users`]).
    pub build_id: Option<String>,
}

/// Columns of `sandboxes` in the order [`bind_record`] binds and
/// [`decode_record`] reads them.
pub(crate) const COLUMNS: &str = "id, template_id, alias, state, node_id, cpu_count, memory_mb, \
     disk_mb, metadata, env_vars, envd_token, traffic_token, secure, allow_internet, network, \
     auto_pause, auto_resume, idle_timeout_s, started_at, end_at, last_activity_at, paused_at, \
     host_addr, init_pid, envd_version, domain, snapshot_id, build_id, team_id";

/// The record's columns converted to what the `Any` driver can bind.
struct Encoded {
    cpu_count: i64,
    memory_mb: i64,
    disk_mb: i64,
    metadata: String,
    env_vars: String,
    network: Option<String>,
    idle_timeout_s: Option<i64>,
    init_pid: Option<i64>,
}

impl Encoded {
    fn new(r: &SandboxRecord) -> Result<Encoded> {
        Ok(Encoded {
            cpu_count: i64::from(r.cpu_count),
            memory_mb: to_i64("memory_mb", r.memory_mb)?,
            disk_mb: to_i64("disk_mb", r.disk_mb)?,
            metadata: json(&r.metadata)?,
            env_vars: json(&r.env_vars)?,
            network: r.network.as_ref().map(json).transpose()?,
            idle_timeout_s: r.idle_timeout_s.map(|v| to_i64("idle_timeout_s", v)).transpose()?,
            init_pid: r.init_pid.map(i64::from),
        })
    }
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::InvalidArgument(format!("JSON encoding: {e}")))
}

/// Binds the columns of [`COLUMNS`], in order, as `$1…$28`.
fn bind_record<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    r: &'q SandboxRecord,
    e: &'q Encoded,
) -> Query<'q, Any, AnyArguments<'q>> {
    q.bind(r.id.as_str())
        .bind(r.template_id.as_str())
        .bind(r.alias.as_deref())
        .bind(r.state.as_str())
        .bind(r.node_id.as_str())
        .bind(e.cpu_count)
        .bind(e.memory_mb)
        .bind(e.disk_mb)
        .bind(e.metadata.as_str())
        .bind(e.env_vars.as_str())
        .bind(r.envd_token.as_str())
        .bind(r.traffic_token.as_deref())
        .bind(i64::from(r.secure))
        .bind(i64::from(r.allow_internet))
        .bind(e.network.as_deref())
        .bind(i64::from(r.auto_pause))
        .bind(i64::from(r.auto_resume))
        .bind(e.idle_timeout_s)
        .bind(r.started_at)
        .bind(r.end_at)
        .bind(r.last_activity_at)
        .bind(r.paused_at)
        .bind(r.host_addr.as_deref())
        .bind(e.init_pid)
        .bind(r.envd_version.as_str())
        .bind(r.domain.as_deref())
        .bind(r.snapshot_id.as_deref())
        .bind(r.build_id.as_deref())
}

/// Reads a row selected with [`COLUMNS`].
pub(crate) fn decode_record(row: &AnyRow) -> Result<SandboxRecord> {
    let id: String = row.try_get("id")?;
    let corrupt = |col: &str, e: &dyn fmt::Display| Error::Corrupt(format!("sandbox {id} {col}: {e}"));
    let metadata: String = row.try_get("metadata")?;
    let env_vars: String = row.try_get("env_vars")?;
    let network: Option<String> = row.try_get("network")?;
    let state: String = row.try_get("state")?;
    Ok(SandboxRecord {
        template_id: row.try_get("template_id")?,
        alias: row.try_get("alias")?,
        state: state.parse().map_err(|e: Error| corrupt("state", &e))?,
        node_id: row.try_get("node_id")?,
        cpu_count: from_i64("cpu_count", row.try_get("cpu_count")?)?,
        memory_mb: from_i64("memory_mb", row.try_get("memory_mb")?)?,
        disk_mb: from_i64("disk_mb", row.try_get("disk_mb")?)?,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt("metadata", &e))?,
        env_vars: serde_json::from_str(&env_vars).map_err(|e| corrupt("env_vars", &e))?,
        envd_token: row.try_get("envd_token")?,
        traffic_token: row.try_get("traffic_token")?,
        secure: row.try_get::<i64, _>("secure")? != 0,
        allow_internet: row.try_get::<i64, _>("allow_internet")? != 0,
        network: network.map(|n| serde_json::from_str(&n)).transpose().map_err(|e| corrupt("network", &e))?,
        auto_pause: row.try_get::<i64, _>("auto_pause")? != 0,
        auto_resume: row.try_get::<i64, _>("auto_resume")? != 0,
        idle_timeout_s: row
            .try_get::<Option<i64>, _>("idle_timeout_s")?
            .map(|v| from_i64("idle_timeout_s", v))
            .transpose()?,
        started_at: row.try_get("started_at")?,
        end_at: row.try_get("end_at")?,
        last_activity_at: row.try_get("last_activity_at")?,
        paused_at: row.try_get("paused_at")?,
        host_addr: row.try_get("host_addr")?,
        init_pid: row.try_get::<Option<i64>, _>("init_pid")?.map(|v| from_i64("init_pid", v)).transpose()?,
        envd_version: row.try_get("envd_version")?,
        domain: row.try_get("domain")?,
        snapshot_id: row.try_get("snapshot_id")?,
        build_id: row.try_get("build_id")?,
        team_id: row.try_get("team_id")?,
        id,
    })
}

const INSERT_SQL: &str = "INSERT INTO sandboxes (id, template_id, alias, state, node_id, \
     cpu_count, memory_mb, disk_mb, metadata, env_vars, envd_token, traffic_token, secure, \
     allow_internet, network, auto_pause, auto_resume, idle_timeout_s, started_at, end_at, \
     last_activity_at, paused_at, host_addr, init_pid, envd_version, domain, snapshot_id, build_id, team_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, \
     $21, $22, $23, $24, $25, $26, $27, $28, $29)";

const UPDATE_SQL: &str = "UPDATE sandboxes SET template_id = $2, alias = $3, state = $4, \
     node_id = $5, cpu_count = $6, memory_mb = $7, disk_mb = $8, metadata = $9, env_vars = $10, \
     envd_token = $11, traffic_token = $12, secure = $13, allow_internet = $14, network = $15, \
     auto_pause = $16, auto_resume = $17, idle_timeout_s = $18, started_at = $19, end_at = $20, \
     last_activity_at = CASE WHEN last_activity_at < $21 THEN $21 ELSE last_activity_at END, \
     paused_at = $22, host_addr = $23, init_pid = $24, \
     envd_version = $25, domain = $26, snapshot_id = $27, build_id = $28 WHERE id = $1";

impl Store {
    /// Inserts a new sandbox and its metadata pairs. [`Error::Conflict`] if
    /// the id or the envd token is taken.
    pub async fn insert_sandbox(&self, r: &SandboxRecord) -> Result<()> {
        let e = Encoded::new(r)?;
        // The transaction's first statement writes, so SQLite takes the
        // write lock through its busy handler instead of failing on a stale
        // read snapshot.
        let mut tx = self.pool.begin().await?;
        bind_record(sqlx::query(INSERT_SQL), r, &e).bind(r.team_id.as_str()).execute(&mut *tx).await?;
        insert_metadata(&mut tx, r).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces the whole row (but its team) and its metadata pairs, except that
    /// `last_activity_at` never moves backwards: a concurrent
    /// [`Store::touch`] is not lost to a stale copy of the record.
    /// [`Error::NotFound`] if the sandbox does not exist.
    pub async fn update_sandbox(&self, r: &SandboxRecord) -> Result<()> {
        let e = Encoded::new(r)?;
        let mut tx = self.pool.begin().await?;
        let done = bind_record(sqlx::query(UPDATE_SQL), r, &e).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("sandbox {}", r.id)));
        }
        sqlx::query("DELETE FROM sandbox_metadata WHERE sandbox_id = $1").bind(r.id.as_str()).execute(&mut *tx).await?;
        insert_metadata(&mut tx, r).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The sandbox with this id, of any team, if any.
    pub async fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>> {
        self.sandbox_of(None, id).await
    }

    async fn sandbox_of(&self, team: Option<&str>, id: &str) -> Result<Option<SandboxRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM sandboxes WHERE id = $1{}", team_filter(team, "team_id", 2));
        let mut query = sqlx::query(&sql).bind(id);
        if let Some(team) = team {
            query = query.bind(team);
        }
        let row = query.fetch_optional(&self.pool).await?;
        row.as_ref().map(decode_record).transpose()
    }

    /// The sandbox whose envd access token is `token`, if any.
    pub async fn sandbox_by_token(&self, token: &str) -> Result<Option<SandboxRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM sandboxes WHERE envd_token = $1");
        let row = sqlx::query(&sql).bind(token).fetch_optional(&self.pool).await?;
        row.as_ref().map(decode_record).transpose()
    }

    /// Sets the state. Entering `running` records `at` as the last activity
    /// (unless a later one is stored) and clears `paused_at`; entering `paused` sets `paused_at = at`.
    /// [`Error::NotFound`] if the sandbox does not exist.
    pub async fn set_state(&self, id: &str, state: State, at: i64) -> Result<()> {
        if self.change_state(id, None, state, at).await? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("sandbox {id}")))
        }
    }

    /// Like [`Store::set_state`], but only if the current state is `from`
    /// (an atomic compare-and-set, e.g. for "pause only if running").
    /// Returns whether the row changed; `false` also when it does not exist.
    pub async fn transition(&self, id: &str, from: State, to: State, at: i64) -> Result<bool> {
        self.change_state(id, Some(from), to, at).await
    }

    async fn change_state(&self, id: &str, from: Option<State>, to: State, at: i64) -> Result<bool> {
        let (set, binds_at) = match to {
            State::Running => (
                "state = $2, paused_at = NULL, last_activity_at = \
                 CASE WHEN last_activity_at < $3 THEN $3 ELSE last_activity_at END",
                true,
            ),
            State::Paused => ("state = $2, paused_at = $3", true),
            State::Killed => ("state = $2", false),
        };
        let cond = match (from, binds_at) {
            (None, _) => "",
            (Some(_), true) => " AND state = $4",
            (Some(_), false) => " AND state = $3",
        };
        let sql = format!("UPDATE sandboxes SET {set} WHERE id = $1{cond}");
        let mut q = sqlx::query(&sql).bind(id).bind(to.as_str());
        if binds_at {
            q = q.bind(at);
        }
        if let Some(from) = from {
            q = q.bind(from.as_str());
        }
        let changed = q.execute(&self.pool).await?.rows_affected() > 0;
        if to == State::Killed {
            self.activity.forget(id);
        }
        Ok(changed)
    }

    /// Moves the deadline. [`Error::NotFound`] if the sandbox does not exist.
    pub async fn set_end_at(&self, id: &str, end_at: i64) -> Result<()> {
        let done = sqlx::query("UPDATE sandboxes SET end_at = $2 WHERE id = $1")
            .bind(id)
            .bind(end_at)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("sandbox {id}")));
        }
        Ok(())
    }

    /// Records activity at `at` (never moves it backwards); a missing
    /// sandbox is not an error, so that a request racing a kill does not
    /// fail on bookkeeping.
    ///
    /// Called on every proxied request, so it is throttled: a touch less
    /// than [`TOUCH_GRANULARITY_MS`] after the last one this `Store` wrote
    /// for the sandbox is absorbed in memory. The stored value therefore
    /// lags the true last activity by less than that, which [`Store::due`]
    /// allows for. Otherwise one indexed `UPDATE`.
    pub async fn touch(&self, id: &str, at: i64) -> Result<()> {
        if !self.activity.should_write(id, at) {
            return Ok(());
        }
        let query = sqlx::query("UPDATE sandboxes SET last_activity_at = $2 WHERE id = $1 AND last_activity_at < $2")
            .bind(id)
            .bind(at);
        let res = self.execute_relaxed(query).await;
        if let Err(e) = res {
            // Not written after all: let the next touch try again.
            self.activity.forget(id);
            return Err(e);
        }
        Ok(())
    }

    /// Deletes the sandbox and its metadata pairs (not its metrics).
    /// Returns whether it existed.
    pub async fn delete_sandbox(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM sandboxes WHERE id = $1").bind(id).execute(&self.pool).await?;
        self.activity.forget(id);
        Ok(done.rows_affected() > 0)
    }
}

impl TeamScope<'_> {
    /// The team's sandbox with this id, if any (in any state).
    pub async fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>> {
        self.store.sandbox_of(Some(self.team_id), id).await
    }
}

async fn insert_metadata(tx: &mut sqlx::Transaction<'_, Any>, r: &SandboxRecord) -> Result<()> {
    for (k, v) in &r.metadata {
        sqlx::query("INSERT INTO sandbox_metadata (sandbox_id, key, value) VALUES ($1, $2, $3)")
            .bind(r.id.as_str())
            .bind(k.as_str())
            .bind(v.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A plausible running sandbox.
    pub(crate) fn record(id: &str) -> SandboxRecord {
        SandboxRecord {
            id: id.into(),
            team_id: crate::DEFAULT_TEAM_ID.into(),
            template_id: "base".into(),
            alias: None,
            state: State::Running,
            node_id: "local".into(),
            cpu_count: 2,
            memory_mb: 512,
            disk_mb: 1024,
            metadata: BTreeMap::new(),
            env_vars: BTreeMap::new(),
            envd_token: format!("tok-{id}"),
            traffic_token: None,
            secure: true,
            allow_internet: true,
            network: None,
            auto_pause: false,
            auto_resume: false,
            idle_timeout_s: None,
            started_at: 0,
            end_at: 0,
            last_activity_at: 0,
            paused_at: None,
            host_addr: None,
            init_pid: None,
            envd_version: "0.1.0".into(),
            domain: None,
            snapshot_id: None,
            build_id: None,
        }
    }
}
