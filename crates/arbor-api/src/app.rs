//! The control plane's shared state and the operations handlers and timers
//! share: start a sandbox, kill it, sample its metrics.

use crate::{
    auth::KeyCache,
    config::ApiConfig,
    error::{ApiError, ApiResult},
    locks::Locks,
    registry::{Live, Registry},
};
use arbor_node::{Node, StartSpec, Template};
use arbor_store::{SandboxRecord, Store};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Instant, UNIX_EPOCH},
};

/// envd's port in every sandbox.
pub use arbor_proto::ENVD_PORT;

/// Everything a request handler or a timer needs.
#[derive(Debug)]
pub struct App {
    /// Settings.
    pub cfg: ApiConfig,
    /// Durable state.
    pub store: Store,
    /// This host's sandboxes.
    pub node: Arc<Node>,
    /// Template builds on this host.
    pub builder: arbor_build::Builder,
    /// Builds in progress (and finished ones since the start): logs and progress.
    pub builds: crate::templates::Builds,
    /// Signs the upload URLs of template files (a key of this process).
    pub upload_key: String,
    /// Open upgrade tunnels (WebSockets) into sandboxes through their
    /// public URLs; a pause or kill closes a sandbox's.
    pub tunnels: arbor_proxy::Tunnels,
    /// Running sandboxes, for the proxy.
    pub registry: Registry,
    /// Recently verified API keys.
    pub keys: KeyCache,
    /// Failed-key budgets per client address.
    pub failed_auth: crate::ratelimit::FailedAuth,
    /// One operation at a time per sandbox (and per snapshot).
    pub locks: Locks,
    /// The last CPU reading per sandbox, for usage between samples.
    cpu: Mutex<HashMap<String, (u64, Instant)>>,
    /// Memory snapshots of built-in templates taken since the start: job id
    /// → (checkpoint, the envd token it holds). See [`crate::builtin`].
    pub(crate) builtin: Mutex<HashMap<String, (String, String)>>,
}

/// What a new sandbox starts from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A template's file system, with envd started afresh.
    Template(Template),
    /// A checkpoint (a snapshot, or a paused sandbox's own), with its
    /// processes as saved.
    Checkpoint {
        /// The checkpoint's name on the node.
        name: String,
        /// The envd access token the saved processes hold.
        saved_token: String,
    },
}

/// A duration in milliseconds, as the store keeps times (saturating).
pub fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// For `or_else` after a node call that removes something: already gone is done.
pub fn gone(e: arbor_node::Error) -> arbor_node::Result<()> {
    if e.is_not_found() {
        Ok(())
    } else {
        Err(e)
    }
}

/// The name of the checkpoint that holds paused sandbox `id`.
pub fn pause_checkpoint(id: &str) -> String {
    format!("pause-{id}")
}

/// Unix time in milliseconds, as the store keeps times.
pub use arbor_store::now_ms;

/// RFC 3339 of a unix time in milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

impl App {
    /// The control plane over `store` and `node`.
    pub fn new(cfg: ApiConfig, store: Store, node: Node) -> Arc<App> {
        let node = Arc::new(node);
        let root = node.layers().root().to_path_buf();
        let builder =
            arbor_build::Builder::new(Arc::clone(&node), &root.join("build-cache"), &root.join("build-files"));
        Arc::new(App {
            cfg,
            store,
            node,
            builder,
            builds: crate::templates::Builds::new(root.join("builds")),
            upload_key: crate::ids::token(),
            tunnels: arbor_proxy::Tunnels::default(),
            registry: Registry::default(),
            keys: KeyCache::default(),
            failed_auth: crate::ratelimit::FailedAuth::default(),
            locks: Locks::default(),
            cpu: Mutex::new(HashMap::new()),
            builtin: Mutex::new(HashMap::new()),
        })
    }

    /// Starts `record` (already in the store) on the node from `source`; on
    /// failure the record is removed again.
    pub async fn start(
        self: &Arc<Self>,
        source: Source,
        mut record: SandboxRecord,
        spec: StartSpec,
    ) -> ApiResult<SandboxRecord> {
        // In a task of its own: a client that disconnects mid-create must not
        // cancel it half-way; what it started is then either running or undone.
        let app = Arc::clone(self);
        let task = tokio::spawn(async move {
            let started = match &source {
                Source::Template(template) => app.node.start(template, spec).await,
                Source::Checkpoint { name, saved_token } => app.node.restore(name, spec, saved_token).await,
            };
            match started {
                Ok(started) => {
                    record.host_addr = Some(started.host_addr.to_string());
                    record.init_pid = Some(started.init_pid);
                    if let Err(e) = app.store.update_sandbox(&record).await {
                        let _ = app.node.stop(&record.id).await;
                        let _ = app.store.delete_sandbox(&record.id).await;
                        return Err(e.into());
                    }
                    app.register(&record);
                    app.sample(&record).await;
                    Ok(record)
                }
                Err(e) => {
                    if let Err(cleanup) = app.store.delete_sandbox(&record.id).await {
                        tracing::error!(id = %record.id, "forgetting a failed sandbox: {cleanup}");
                    }
                    Err(ApiError::from(e))
                }
            }
        });
        task.await.map_err(|e| ApiError::internal("starting the sandbox", e))?
    }

    /// Makes a running sandbox reachable through the proxy. Each
    /// registration is a new generation: connections pooled to an earlier
    /// envd of the same id (before a pause) are never reused.
    pub fn register(&self, record: &SandboxRecord) {
        let Some(addr) = record.host_addr.as_deref().and_then(|a| a.parse::<std::net::Ipv4Addr>().ok()) else {
            tracing::error!(id = %record.id, "a running sandbox without an address");
            return;
        };
        let generation = u64::try_from(now_ms()).unwrap_or(0);
        let live = Live {
            addr: SocketAddr::from((addr, ENVD_PORT)),
            token: record.envd_token.clone(),
            generation,
            traffic_token: record.traffic_token.clone(),
        };
        self.registry.insert(&record.id, live);
    }

    /// Kills a sandbox (running or paused) and forgets it; its metrics stay
    /// until pruned.
    pub async fn kill(self: &Arc<Self>, record: SandboxRecord) -> ApiResult<()> {
        let app = Arc::clone(self);
        let task = tokio::spawn(async move {
            let _op = app.locks.lock(&record.id).await;
            app.registry.remove(&record.id);
            app.tunnels.close(&record.id);
            if record.state == arbor_store::State::Running {
                app.sample(&record).await;
            }
            if let Err(e) = app.node.stop(&record.id).await.or_else(gone) {
                tracing::error!(id = %record.id, "stopping: {e}");
            }
            if let Err(e) = app.node.remove_checkpoint(&pause_checkpoint(&record.id)).await.or_else(gone) {
                tracing::error!(id = %record.id, "removing its pause checkpoint: {e}");
            }
            app.cpu.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&record.id);
            app.store.delete_sandbox(&record.id).await?;
            tracing::info!(id = %record.id, "sandbox killed");
            Ok(())
        });
        task.await.map_err(|e| ApiError::internal("killing the sandbox", e))?
    }

    /// Takes one metrics sample of a running sandbox; failures are logged.
    pub async fn sample(&self, record: &SandboxRecord) {
        let status = match self.node.status(&record.id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(id = %record.id, "metrics: {e}");
                return;
            }
        };
        let now = Instant::now();
        let pct = {
            let mut cpu = self.cpu.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let pct = cpu.get(&record.id).map_or(0.0, |(ns, at)| {
                let elapsed = now.duration_since(*at).as_nanos() as f64;
                let used = status.cpu_usage_ns.saturating_sub(*ns) as f64;
                if elapsed > 0.0 {
                    (used / elapsed / f64::from(record.cpu_count.max(1)) * 100.0).min(100.0)
                } else {
                    0.0
                }
            });
            cpu.insert(record.id.clone(), (status.cpu_usage_ns, now));
            pct
        };
        let metric = arbor_store::Metric {
            sandbox_id: record.id.clone(),
            team_id: record.team_id.clone(),
            timestamp: now_ms(),
            cpu_count: record.cpu_count,
            cpu_used_pct: (pct * 100.0).round() / 100.0,
            mem_total_mib: record.memory_mb,
            mem_used_mib: status.memory_bytes >> 20,
            disk_total: record.disk_mb << 20,
            disk_used: status.disk_bytes.unwrap_or(0),
        };
        if let Err(e) = self.store.insert_metric(&metric).await {
            tracing::warn!(id = %record.id, "storing metrics: {e}");
        }
    }
}
