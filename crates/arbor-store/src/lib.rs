//! `arbor-store`: persistence of the control plane — teams, API keys, sandboxes
//! (with their metadata), snapshots, templates and sandbox metrics — in SQLite
//! (the default, one file) or PostgreSQL (chosen by URL).
//!
//! # Teams
//!
//! Every key and every row a key creates belongs to a team. Request handlers
//! look rows up through [`Store::team`], a [`TeamScope`] whose queries carry
//! `team_id = <team>`, so another team's row is not found exactly as a missing
//! one is not. The unscoped lookups on [`Store`] see every team; they serve
//! the server's own work (deadlines, recovery, the envd proxy).
//!
//! # One code path: sqlx's `Any` driver
//!
//! Every query is written once and runs through [`sqlx::AnyPool`], which
//! hands the SQL text to the SQLite or PostgreSQL driver picked from the URL
//! scheme. We chose it over an enum of two typed pools because an enum
//! would need every query and every row mapping twice (or a generic layer
//! with heavy trait bounds), which is where the two back ends would drift
//! apart. What `Any` costs, and how we live with it:
//! - it only carries integers, floats, text and blobs, so the schema uses
//!   `BIGINT`, `DOUBLE PRECISION` and `TEXT` only: booleans are 0/1, times
//!   are unix milliseconds, JSON is text;
//! - SQLite options cannot be set programmatically, so WAL mode, the busy
//!   timeout and foreign keys are set by `PRAGMA`s on each new connection;
//! - placeholders are written `$1, $2, …`, which both engines accept.
//!
//! The SQL itself sticks to the common subset (`ON CONFLICT DO NOTHING`,
//! `EXISTS`, `CAST(… AS BIGINT)` around sums, which PostgreSQL would
//! otherwise return as `NUMERIC`). Migrations are embedded with
//! `sqlx::migrate!` and run on every [`Store::open`]; sqlx records applied
//! versions, so reopening is a no-op.
//!
//! Times are exposed as `i64` unix milliseconds, as stored; see [`now_ms`].
//!
//! ```no_run
//! # async fn demo() -> arbor_store::Result<()> {
//! use arbor_store::{KeyRole, ListQuery, State, Store, DEFAULT_TEAM_ID};
//! let store = Store::open("sqlite:/var/lib/arbor/arbor.db").await?;
//! let key = store.create_key(DEFAULT_TEAM_ID, "ci", KeyRole::Member).await?; // key.secret is shown once
//! let info = store.verify_key(&key.secret).await?.expect("a live key");
//! let page = store
//!     .team(&info.team_id)
//!     .list_sandboxes(&ListQuery { states: vec![State::Running], limit: 50, ..Default::default() })
//!     .await?;
//! for sandbox in &page.items {
//!     println!("{} ends at {}", sandbox.id, sandbox.end_at);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Crates: `sqlx` (drivers, pool, migrations; SQLite is compiled in, so no
//! system library is needed), `tokio` (sqlx's runtime), `sha2` (API key
//! hashes), `getrandom` (key secrets and ids), `percent-encoding` (SQLite paths), `serde_json` (metadata,
//! environment and network columns), `thiserror`, `tracing`.
#![warn(missing_docs)]

mod error;
mod keys;
mod metrics;
mod query;
mod sandbox;
mod snapshot;
mod team;
mod template;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use error::{Error, Result};
pub use keys::{KeyInfo, KeyRole, NewKey, MIN_IMPORTED_SECRET_LEN};
pub use metrics::Metric;
pub use query::{ListQuery, Page, Usage, DEFAULT_LIMIT, MAX_LIMIT};
pub use sandbox::{SandboxRecord, State, TOUCH_GRANULARITY_MS};
pub use snapshot::{SnapshotKind, SnapshotQuery, SnapshotRecord, SnapshotState};
pub use team::{TeamRecord, TeamScope, DEFAULT_TEAM_ID};
pub use template::{BuildRecord, BuildStatus, TemplateRecord};

/// How long a SQLite connection waits for another writer before failing.
const SQLITE_BUSY_TIMEOUT_MS: u64 = 10_000;
/// Connections per pool. SQLite serialises writers anyway; more readers
/// than this gain nothing on the hosts Arbor targets.
const SQLITE_MAX_CONNECTIONS: u32 = 8;
const POSTGRES_MAX_CONNECTIONS: u32 = 16;

/// The control-plane database. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    activity: Arc<sandbox::ActivityCache>,
}

/// Which engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and applies the
    /// embedded migrations.
    ///
    /// `url` is `sqlite:/path/arbor.db` (also `sqlite:///path`, or a
    /// relative `sqlite:arbor.db`; the file and its parent directory are
    /// created if missing, the journal is switched to WAL) or
    /// `postgres://user@host/db` / `postgresql://…` (the database must
    /// exist; `?host=/run/postgresql` selects a unix socket directory).
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (backend, url) = prepare_url(url)?;
        let opts: AnyConnectOptions = url.parse().map_err(|e| Error::InvalidArgument(format!("database URL: {e}")))?;
        let pool_opts = match backend {
            Backend::Sqlite => {
                AnyPoolOptions::new().max_connections(SQLITE_MAX_CONNECTIONS).after_connect(|conn, _| {
                    Box::pin(async move {
                        // WAL lets readers run beside the single writer;
                        // NORMAL sync is durable across crashes of the
                        // process (not of the machine) and far cheaper.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        let busy = format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}");
                        conn.execute(busy.as_str()).await?;
                        Ok(())
                    })
                })
            }
            Backend::Postgres => AnyPoolOptions::new().max_connections(POSTGRES_MAX_CONNECTIONS),
        };
        let pool = pool_opts.acquire_timeout(Duration::from_secs(30)).connect_with(opts).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        tracing::info!(?backend, "control-plane store open, schema up to date");
        Ok(Store { pool, backend, activity: Arc::default() })
    }

    /// The engine behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs one statement whose loss in a crash of the database server is
    /// harmless (activity times, last key use, metric samples). PostgreSQL
    /// then commits without waiting for its WAL flush, which otherwise costs
    /// a disk sync per statement; SQLite in WAL mode with
    /// `synchronous=NORMAL` does not sync on commit anyway.
    async fn execute_relaxed<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<sqlx::any::AnyQueryResult> {
        match self.backend {
            Backend::Sqlite => Ok(query.execute(&self.pool).await?),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SET LOCAL synchronous_commit TO OFF").execute(&mut *tx).await?;
                let done = query.execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(done)
            }
        }
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Checks the scheme and, for SQLite, creates the parent directory and
/// makes sqlx create the file (`mode=rwc`).
fn prepare_url(url: &str) -> Result<(Backend, String)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_string()));
    }
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Err(Error::InvalidArgument(format!("database URL {url:?}: expected sqlite:PATH or postgres://…")));
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" {
        return Err(Error::InvalidArgument(format!("database URL {url:?}: a SQLite store needs a file path")));
    }
    // sqlx percent-decodes the path (so that `?` and `#` can appear in it).
    let fs_path = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|e| Error::InvalidArgument(format!("database URL {url:?}: {e}")))?;
    if let Some(parent) = Path::new(fs_path.as_ref()).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .map_err(|source| Error::Io { what: format!("create {}", parent.display()), source })?;
        }
    }
    let url = match query {
        Some(q) if q.split('&').any(|kv| kv.starts_with("mode=")) => format!("sqlite://{rest}"),
        Some(q) => format!("sqlite://{path}?{q}&mode=rwc"),
        None => format!("sqlite://{path}?mode=rwc"),
    };
    Ok((Backend::Sqlite, url))
}

/// The current time as unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// Converts an unsigned value for a `BIGINT` column.
fn to_i64(what: &str, v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::InvalidArgument(format!("{what} {v} is too large")))
}

/// Converts a `BIGINT` column back to an unsigned Rust type.
fn from_i64<T: TryFrom<i64>>(what: &str, v: i64) -> Result<T> {
    T::try_from(v).map_err(|_| Error::Corrupt(format!("{what} {v} out of range")))
}
