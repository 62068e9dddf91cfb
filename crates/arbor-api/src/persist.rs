//! Pause, resume, snapshots and clones as the control plane runs them.
//!
//! The node does the work (freezer, CRIU checkpoints); the store records each
//! step in an order that lets `lifecycle::recover` finish or undo it after a
//! crash: a sandbox is `paused` once frozen (a restart finds it frozen with no
//! checkpoint and lets it run on, or with its checkpoint and releases it),
//! `running` again only once thawed or restored, and a snapshot is `ready`
//! only once written.
//! Each operation runs in a task of its own, so a client that disconnects
//! does not cancel it half-way, and under the sandbox's lock.

use crate::{
    app::{gone, ms, now_ms, pause_checkpoint, App, Source},
    error::{ApiError, ApiResult},
    handlers::sandboxes::policy,
    ids,
};
use arbor_node::StartSpec;
use arbor_store::{SandboxRecord, SnapshotKind, SnapshotRecord, SnapshotState, State};
use axum::http::StatusCode;
use std::{future::Future, sync::Arc};

/// Runs `op` to completion in a task of its own.
async fn detached<T: Send + 'static>(
    what: &'static str,
    op: impl Future<Output = ApiResult<T>> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(op).await.map_err(|e| ApiError::internal(what, e))?
}

/// What the node needs to run `record` again.
fn start_spec(record: &SandboxRecord) -> ApiResult<StartSpec> {
    let network = record.network.clone().and_then(|n| serde_json::from_value(n).ok());
    Ok(StartSpec {
        id: record.id.clone(),
        cpu_count: record.cpu_count,
        memory_mb: record.memory_mb,
        disk_mb: record.disk_mb,
        env_vars: record.env_vars.clone(),
        access_token: record.envd_token.clone(),
        policy: policy(record.allow_internet, network.as_ref())?,
    })
}

/// Sandbox `id` of any team, unless killed or unknown (404). The handlers
/// have checked the caller's team already, and auto-resume (the proxy) has
/// none; a sandbox never changes team, so the id alone is enough here.
async fn existing(app: &App, id: &str) -> ApiResult<SandboxRecord> {
    match app.store.get_sandbox(id).await? {
        Some(r) if r.state != State::Killed => Ok(r),
        _ => Err(ApiError::sandbox_not_found(id)),
    }
}

fn not_found_if_gone(id: &str, e: arbor_node::Error) -> ApiError {
    if e.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, format!("paused sandbox {id} not found"))
    } else {
        e.into()
    }
}

impl App {
    /// The deadline of a sandbox (re)started now with `timeout_ms`, within
    /// the maximum lifetime.
    pub fn deadline(&self, now: i64, timeout_ms: i64) -> i64 {
        now.saturating_add(timeout_ms.min(ms(self.cfg.max_lifetime)))
    }

    /// Records `record` as paused at `now`, kept until the paused retention ends.
    pub fn mark_paused(&self, record: &mut SandboxRecord, now: i64) {
        record.state = State::Paused;
        record.paused_at = Some(now);
        record.end_at = now.saturating_add(ms(self.cfg.paused_retention));
    }

    /// Pauses running sandbox `id`; 409 if it is paused already. It answers
    /// once the sandbox is frozen (no CPU; clients disconnected); then, in
    /// the background, its memory and files are written to a checkpoint, and
    /// after `pause_grace` its memory is released. A resume before that is a
    /// thaw.
    pub async fn pause(self: &Arc<Self>, id: &str) -> ApiResult<()> {
        let (app, id) = (Arc::clone(self), id.to_string());
        detached("pausing the sandbox", async move {
            let _op = app.locks.lock(&id).await;
            let mut record = existing(&app, &id).await?;
            if record.state == State::Paused {
                return Err(ApiError::conflict(format!("sandbox {id} is already paused")));
            }
            app.registry.remove(&id);
            // Its connections end, as a paused VM's would.
            app.tunnels.close(&id);
            app.sample(&record).await;
            if let Err(e) = app.node.freeze(&id).await {
                app.register(&record);
                return Err(e.into());
            }
            let now = now_ms();
            app.mark_paused(&mut record, now);
            if let Err(e) = app.store.update_sandbox(&record).await {
                let _ = app.node.thaw(&id).await;
                app.register(&record);
                return Err(e.into());
            }
            tokio::spawn(Arc::clone(&app).settle(id.clone(), now));
            tracing::info!(%id, "sandbox paused");
            Ok(())
        })
        .await
    }

    /// The background half of the pause made at `paused_at`: checkpoint the
    /// frozen sandbox now, release it after the grace period (unless it was
    /// resumed meanwhile, and paused again by then: that pause settles itself).
    async fn settle(self: Arc<Self>, id: String, paused_at: i64) {
        if let Err(e) = self.write_pause_checkpoint(&id).await {
            // The sandbox stays frozen and resident: a resume thaws it, and
            // a kill or the retention deadline removes it.
            tracing::error!(%id, "writing the pause checkpoint: {e}");
            return;
        }
        tokio::time::sleep(self.cfg.pause_grace).await;
        let _op = self.locks.lock(&id).await;
        let Ok(Some(mut record)) = self.store.get_sandbox(&id).await else { return };
        if record.state != State::Paused || record.paused_at != Some(paused_at) || record.host_addr.is_none() {
            return;
        }
        if let Err(e) = self.node.stop(&id).await.or_else(gone) {
            tracing::error!(%id, "releasing a paused sandbox: {e}");
            return;
        }
        record.host_addr = None;
        record.init_pid = None;
        if let Err(e) = self.store.update_sandbox(&record).await {
            tracing::error!(%id, "recording a released sandbox: {e}");
        }
        tracing::info!(%id, "paused sandbox released");
    }

    /// Makes sure paused sandbox `id` has its checkpoint, writing it from the
    /// frozen sandbox if not yet done. Takes the sandbox's lock.
    async fn write_pause_checkpoint(&self, id: &str) -> ApiResult<()> {
        let _op = self.locks.lock(id).await;
        self.ensure_pause_checkpoint(id).await
    }

    /// [`App::write_pause_checkpoint`] for a caller holding the lock.
    async fn ensure_pause_checkpoint(&self, id: &str) -> ApiResult<()> {
        let name = pause_checkpoint(id);
        match self.node.checkpoint_info(&name).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        match self.store.get_sandbox(id).await? {
            Some(r) if r.state == State::Paused => {}
            _ => return Ok(()),
        }
        let checkpoint = self.node.checkpoint_frozen(id, &name).await?;
        tracing::info!(%id, ms = checkpoint.stopped_ms, bytes = checkpoint.image_bytes, "pause checkpoint written");
        Ok(())
    }

    /// Resumes sandbox `id` if it is paused, with a deadline `timeout_ms`
    /// from now; returns its record and whether it was resumed. A sandbox
    /// still resident is thawed; a released one is restored from its
    /// checkpoint. 404 for a killed or unknown sandbox, or one whose
    /// checkpoint has expired.
    pub async fn resume(self: &Arc<Self>, id: &str, timeout_ms: i64) -> ApiResult<(SandboxRecord, bool)> {
        let (app, id) = (Arc::clone(self), id.to_string());
        detached("resuming the sandbox", async move {
            let _op = app.locks.lock(&id).await;
            let mut record = existing(&app, &id).await?;
            if record.state == State::Running {
                return Ok((record, false));
            }
            let name = pause_checkpoint(&id);
            let resident = record.host_addr.is_some() && app.node.thaw(&id).await.is_ok();
            if !resident {
                let spec = start_spec(&record)?;
                let started =
                    app.node.restore(&name, spec, &record.envd_token).await.map_err(|e| not_found_if_gone(&id, e))?;
                record.host_addr = Some(started.host_addr.to_string());
                record.init_pid = Some(started.init_pid);
            }
            let now = now_ms();
            record.state = State::Running;
            record.paused_at = None;
            record.started_at = now;
            record.end_at = app.deadline(now, timeout_ms);
            record.last_activity_at = now;
            if let Err(e) = app.store.update_sandbox(&record).await {
                // Still paused as far as anyone knows.
                let _ = if resident { app.node.freeze(&id).await } else { app.node.stop(&id).await };
                return Err(e.into());
            }
            app.register(&record);
            if let Err(e) = app.node.remove_checkpoint(&name).await.or_else(gone) {
                tracing::warn!(%id, "removing the pause checkpoint: {e}");
            }
            tracing::info!(%id, thawed = resident, "sandbox resumed");
            Ok((record, true))
        })
        .await
    }

    /// Takes a snapshot of sandbox `id`: a running one is frozen for as long
    /// as that takes and runs on; a paused one stays paused (its checkpoint
    /// is copied).
    pub async fn snapshot(
        self: &Arc<Self>,
        id: &str,
        kind: SnapshotKind,
        name: Option<String>,
    ) -> ApiResult<SnapshotRecord> {
        let (app, id) = (Arc::clone(self), id.to_string());
        detached("taking the snapshot", async move {
            let _op = app.locks.lock(&id).await;
            let origin = existing(&app, &id).await?;
            let snap_id = ids::sandbox_id();
            let mut snap = SnapshotRecord {
                id: snap_id.clone(),
                team_id: origin.team_id.clone(),
                sandbox_id: id.clone(),
                kind,
                state: SnapshotState::Creating,
                names: vec![name.unwrap_or_else(|| snap_id.clone())],
                template_id: origin.template_id.clone(),
                node_id: app.cfg.node_id.clone(),
                cpu_count: origin.cpu_count,
                memory_mb: origin.memory_mb,
                disk_mb: origin.disk_mb,
                env_vars: origin.env_vars.clone(),
                metadata: origin.metadata.clone(),
                envd_version: origin.envd_version.clone(),
                envd_token: origin.envd_token.clone(),
                memory_bytes: None,
                created_at: now_ms(),
            };
            if origin.state == State::Paused {
                app.ensure_pause_checkpoint(&id).await?;
            }
            app.store.insert_snapshot(&snap).await?;
            let taken = match origin.state {
                State::Paused => app.node.copy_checkpoint(&pause_checkpoint(&id), &snap_id).await,
                _ => app.node.snapshot(&id, &snap_id).await,
            };
            let checkpoint = match taken {
                Ok(c) => c,
                Err(e) => {
                    let _ = app.store.delete_snapshot(&snap_id).await;
                    return Err(e.into());
                }
            };
            snap.memory_bytes = Some(checkpoint.image_bytes);
            snap.state = SnapshotState::Ready;
            app.store.mark_snapshot_ready(&snap_id, snap.memory_bytes).await?;
            tracing::info!(%id, snapshot = %snap_id, stopped_ms = checkpoint.stopped_ms, "snapshot taken");
            Ok(snap)
        })
        .await
    }

    /// Deletes snapshot `id`: 404 if unknown, 409 while sandboxes use it.
    pub async fn delete_snapshot(self: &Arc<Self>, id: &str) -> ApiResult<()> {
        let _op = self.locks.lock(id).await;
        let Some(snap) = self.store.get_snapshot(id).await?.filter(|s| s.state == SnapshotState::Ready) else {
            return Err(ApiError::new(StatusCode::NOT_FOUND, format!("snapshot {id} not found")));
        };
        let users = self.store.snapshot_users(&snap.id).await?;
        if !users.is_empty() {
            return Err(ApiError::in_use(&format!("snapshot {id}"), &users));
        }
        self.node.remove_checkpoint(&snap.id).await.or_else(gone)?;
        self.store.delete_snapshot(&snap.id).await?;
        Ok(())
    }

    /// `count` new sandboxes from a snapshot of `origin`, each running with
    /// `timeout_ms`: each one's outcome, and the snapshot's id. With
    /// `strict`, all of them or none: a failure undoes the others and the
    /// snapshot and is the answer.
    pub async fn clone_sandbox(
        self: &Arc<Self>,
        origin: &SandboxRecord,
        count: u64,
        strict: bool,
        timeout_ms: i64,
    ) -> ApiResult<(Vec<ApiResult<SandboxRecord>>, String)> {
        let snap = self.snapshot(&origin.id, SnapshotKind::Clone, None).await?;
        let source = Source::Checkpoint { name: snap.id.clone(), saved_token: snap.envd_token.clone() };
        let now = now_ms();
        let starts = (0..count).map(|_| {
            let mut record = origin.clone();
            record.id = ids::sandbox_id();
            record.envd_token = ids::token();
            record.traffic_token = origin.traffic_token.as_ref().map(|_| ids::token());
            record.state = State::Running;
            record.auto_pause = false;
            record.snapshot_id = Some(snap.id.clone());
            record.started_at = now;
            record.end_at = self.deadline(now, timeout_ms);
            record.last_activity_at = now;
            record.paused_at = None;
            record.host_addr = None;
            record.init_pid = None;
            let (app, source) = (Arc::clone(self), source.clone());
            async move {
                let spec = start_spec(&record)?;
                app.store.insert_sandbox(&record).await?;
                app.start(source, record, spec).await
            }
        });
        let results = futures::future::join_all(starts).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 && (strict || failed == results.len()) {
            let mut first_error = None;
            for result in results {
                match result {
                    Ok(clone) => {
                        if let Err(kill) = self.kill(clone).await {
                            tracing::error!("undoing a strict clone: {kill}");
                        }
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Err(del) = self.delete_snapshot(&snap.id).await {
                tracing::error!(snapshot = %snap.id, "removing a failed clone's snapshot: {del}");
            }
            return Err(first_error.unwrap_or_else(|| ApiError::internal("cloning", "no clone started")));
        }
        if failed > 0 {
            tracing::warn!(origin = %origin.id, "{failed} of {count} clones failed");
        }
        Ok((results, snap.id))
    }
}
