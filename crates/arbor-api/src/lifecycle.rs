//! Timers of the control plane. Deadlines are data in the store, so a
//! restarted server honours them; the loops only look at the store.

use crate::{
    app::{now_ms, App, ENVD_PORT},
    registry::Live,
};
use arbor_store::State;
use std::{collections::HashSet, net::SocketAddr, sync::Arc, time::Duration};

/// How often deadlines are checked.
const DEADLINE_TICK: Duration = Duration::from_millis(250);
/// How often recorded activity is written to the store.
const ACTIVITY_FLUSH: Duration = Duration::from_secs(2);
/// How often old metrics are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Brings the store and this host into agreement after a (re)start:
/// running sandboxes whose envd still runs are served again, the rest are
/// forgotten, and whatever the host holds that the store does not know is
/// removed. Returns (kept, dropped).
pub async fn recover(app: &Arc<App>) -> arbor_store::Result<(usize, usize)> {
    let mut keep = HashSet::new();
    let mut dropped = 0;
    for record in app.store.by_state(State::Running).await? {
        let alive = matches!(app.node.status(&record.id).await, Ok(s) if s.running);
        let addr = record.host_addr.as_deref().and_then(|a| a.parse::<std::net::Ipv4Addr>().ok());
        match (alive, addr) {
            (true, Some(addr)) => {
                let live = Live { addr: SocketAddr::from((addr, ENVD_PORT)), token: record.envd_token.clone() };
                app.registry.insert(&record.id, live);
                keep.insert(record.id.clone());
            }
            _ => {
                tracing::warn!(id = %record.id, "sandbox did not survive the restart; forgetting it");
                app.store.delete_sandbox(&record.id).await?;
                dropped += 1;
            }
        }
    }
    match app.node.reconcile(&keep).await {
        Ok(removed) if !removed.is_empty() => tracing::info!(?removed, "removed sandboxes the store does not know"),
        Ok(_) => {}
        Err(e) => tracing::error!("reconciling the host: {e}"),
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
            let id = record.id.clone();
            tracing::info!(%id, "timeout reached");
            if let Err(e) = app.kill(record).await {
                tracing::error!(%id, "killing at the deadline: {e}");
            }
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
        let before = now_ms() - i64::try_from(app.cfg.metrics_retention.as_millis()).unwrap_or(i64::MAX);
        if let Err(e) = app.store.prune_metrics(before).await {
            tracing::warn!("pruning metrics: {e}");
        }
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}
