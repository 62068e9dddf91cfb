//! Timers of the control plane. Deadlines are data in the store, so a
//! restarted server honours them; the loops only look at the store.

use crate::{
    app::{ms, now_ms, pause_checkpoint, App},
    error::ApiResult,
};
use arbor_store::{SandboxRecord, SnapshotState, State};
use std::{collections::HashSet, sync::Arc, time::Duration};

/// How often deadlines are checked.
const DEADLINE_TICK: Duration = Duration::from_millis(250);
/// How often recorded activity is written to the store.
const ACTIVITY_FLUSH: Duration = Duration::from_secs(2);
/// How often old metrics are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Brings the store and this host into agreement after a (re)start, so
/// that every sandbox is running or paused, never half:
/// - a running sandbox whose envd still runs is served again; one that is
///   gone but whose pause checkpoint completed (a crash mid-pause) is paused;
///   the rest are forgotten;
/// - a paused sandbox whose checkpoint is gone is forgotten (a half-made
///   resume of it on the host is removed with the other strays);
/// - snapshots that never completed are forgotten;
/// - whatever the host holds that the store does not know is removed:
///   sandboxes, and checkpoints no paused sandbox or snapshot owns.
///
/// Returns (kept, dropped).
pub async fn recover(app: &Arc<App>) -> arbor_store::Result<(usize, usize)> {
    let checkpoints: HashSet<String> = match app.node.checkpoints().await {
        Ok(names) => names.into_iter().collect(),
        Err(e) => {
            tracing::error!("listing checkpoints: {e}");
            HashSet::new()
        }
    };
    let mut keep = HashSet::new();
    let mut dropped = 0;
    for mut record in app.store.by_state(State::Running).await? {
        let alive = matches!(app.node.status(&record.id).await, Ok(s) if s.running);
        if alive && record.host_addr.is_some() {
            app.register(&record);
            keep.insert(record.id.clone());
        } else if checkpoints.contains(&pause_checkpoint(&record.id)) {
            tracing::warn!(id = %record.id, "the server stopped while pausing this sandbox; it is paused");
            app.mark_paused(&mut record, now_ms());
            record.host_addr = None;
            record.init_pid = None;
            app.store.update_sandbox(&record).await?;
        } else {
            tracing::warn!(id = %record.id, "sandbox did not survive the restart; forgetting it");
            app.store.delete_sandbox(&record.id).await?;
            dropped += 1;
        }
    }
    let mut wanted = HashSet::new();
    for mut record in app.store.by_state(State::Paused).await? {
        let name = pause_checkpoint(&record.id);
        let resident = record.host_addr.is_some() && matches!(app.node.status(&record.id).await, Ok(s) if s.running);
        if checkpoints.contains(&name) {
            // Released now rather than after the grace period (the
            // reconcile below removes it from the host).
            wanted.insert(name);
            if record.host_addr.is_some() {
                record.host_addr = None;
                record.init_pid = None;
                app.store.update_sandbox(&record).await?;
            }
        } else if resident {
            // Frozen, its checkpoint never written: it runs on (the
            // reconcile below thaws it).
            tracing::warn!(id = %record.id, "the server stopped while pausing this sandbox; it runs on");
            record.state = State::Running;
            record.paused_at = None;
            record.end_at = app.deadline(now_ms(), ms(app.cfg.default_timeout));
            app.store.update_sandbox(&record).await?;
            app.register(&record);
            keep.insert(record.id.clone());
        } else {
            tracing::warn!(id = %record.id, "paused sandbox without its checkpoint; forgetting it");
            app.store.delete_sandbox(&record.id).await?;
            dropped += 1;
        }
    }
    wanted.extend(app.recover_builds().await?);
    for snap in app.store.snapshots_in_state(SnapshotState::Creating).await? {
        tracing::warn!(snapshot = %snap.id, "snapshot interrupted by a restart; forgetting it");
        app.store.delete_snapshot(&snap.id).await?;
    }
    match app.node.reconcile(&keep).await {
        Ok(removed) if !removed.is_empty() => tracing::info!(?removed, "removed sandboxes the store does not know"),
        Ok(_) => {}
        Err(e) => tracing::error!("reconciling the host: {e}"),
    }
    for name in checkpoints.into_iter().filter(|n| !wanted.contains(n)) {
        let owned = app.store.get_snapshot(&name).await?.is_some_and(|s| s.state == SnapshotState::Ready);
        if !owned {
            tracing::info!(%name, "removing a checkpoint nothing owns");
            if let Err(e) = app.node.remove_checkpoint(&name).await {
                tracing::error!(%name, "removing a stray checkpoint: {e}");
            }
        }
    }
    Ok((keep.len(), dropped))
}

/// Spawns the deadline, metrics, activity and pruning loops.
pub fn spawn(app: &Arc<App>) {
    tokio::spawn(deadlines(Arc::clone(app)));
    tokio::spawn(metrics(Arc::clone(app)));
    tokio::spawn(activity(Arc::clone(app)));
    tokio::spawn(prune(Arc::clone(app)));
}

async fn deadlines(app: Arc<App>) {
    let mut tick = tokio::time::interval(DEADLINE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let due = match app.store.due(now_ms()).await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!("reading deadlines: {e}");
                continue;
            }
        };
        for record in due {
            if let Err(e) = on_deadline(&app, record).await {
                tracing::error!("at a deadline: {e}");
            }
        }
    }
}

/// What to do with a sandbox the store found due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Nothing: a request not yet written down kept it from being idle.
    Busy,
    /// Kill it (its timeout, its idle timeout, or a paused one's retention).
    Kill(&'static str),
    /// Pause it (its timeout, with auto-pause).
    Pause,
}

/// What a due sandbox's deadline means: a paused one has been kept as long
/// as it may be; a running one idle too long is killed; a running one at its
/// timeout is paused with auto-pause, killed otherwise. `pending` is its last
/// request not yet in the store.
fn due_action(record: &SandboxRecord, now: i64, pending: Option<i64>) -> Due {
    match record.state {
        State::Paused => Due::Kill("paused sandbox expired"),
        _ if record.end_at <= now && record.auto_pause => Due::Pause,
        _ if record.end_at <= now => Due::Kill("timeout reached"),
        _ => {
            let idle_ms =
                record.idle_timeout_s.map_or(i64::MAX, |s| i64::try_from(s).unwrap_or(i64::MAX / 1000) * 1000);
            if pending.is_some_and(|at| at.saturating_add(idle_ms) > now) {
                Due::Busy
            } else {
                Due::Kill("idle timeout reached")
            }
        }
    }
}

async fn on_deadline(app: &Arc<App>, record: SandboxRecord) -> ApiResult<()> {
    let id = record.id.clone();
    match due_action(&record, now_ms(), app.registry.pending_activity(&id)) {
        Due::Busy => Ok(()),
        Due::Pause => {
            tracing::info!(%id, "timeout reached; pausing");
            match app.pause(&id).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::error!(%id, "auto-pause failed, killing instead: {e}");
                    app.kill(record).await
                }
            }
        }
        Due::Kill(why) => {
            tracing::info!(%id, "{why}");
            app.kill(record).await
        }
    }
}

async fn metrics(app: Arc<App>) {
    let mut tick = tokio::time::interval(app.cfg.metrics_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for id in app.registry.ids() {
            if let Ok(Some(record)) = app.store.get_sandbox(&id).await {
                app.sample(&record).await;
            }
        }
    }
}

async fn activity(app: Arc<App>) {
    loop {
        tokio::time::sleep(ACTIVITY_FLUSH).await;
        for (id, at) in app.registry.take_activity() {
            if let Err(e) = app.store.touch(&id, at).await {
                tracing::warn!(%id, "recording activity: {e}");
            }
        }
    }
}

async fn prune(app: Arc<App>) {
    loop {
        let before = now_ms().saturating_sub(ms(app.cfg.metrics_retention));
        if let Err(e) = app.store.prune_metrics(before).await {
            tracing::warn!("pruning metrics: {e}");
        }
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{due_action, Due};
    use arbor_store::{SandboxRecord, State};

    fn record(state: State, end_at: i64, auto_pause: bool, idle_timeout_s: Option<u64>) -> SandboxRecord {
        SandboxRecord {
            id: "a".into(),
            team_id: arbor_store::DEFAULT_TEAM_ID.into(),
            template_id: "base".into(),
            alias: None,
            state,
            node_id: "local".into(),
            cpu_count: 1,
            memory_mb: 512,
            disk_mb: 1024,
            metadata: Default::default(),
            env_vars: Default::default(),
            envd_token: "t".into(),
            traffic_token: None,
            secure: true,
            allow_internet: true,
            network: None,
            auto_pause,
            auto_resume: false,
            idle_timeout_s,
            started_at: 0,
            end_at,
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

    #[test]
    fn timeouts_pause_or_kill_and_idleness_respects_unwritten_requests() {
        let now = 100_000;
        assert_eq!(due_action(&record(State::Running, now, true, None), now, None), Due::Pause);
        assert_eq!(due_action(&record(State::Running, now, false, None), now, None), Due::Kill("timeout reached"));
        assert_eq!(due_action(&record(State::Paused, now, true, None), now, None), Due::Kill("paused sandbox expired"));
        let idle = record(State::Running, now + 1, true, Some(60));
        assert_eq!(due_action(&idle, now, None), Due::Kill("idle timeout reached"));
        assert_eq!(due_action(&idle, now, Some(now - 1_000)), Due::Busy);
        assert_eq!(due_action(&idle, now, Some(now - 61_000)), Due::Kill("idle timeout reached"));
    }
}
