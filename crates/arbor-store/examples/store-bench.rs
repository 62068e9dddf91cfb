//! Latency of the hot store operations on a SQLite file (or any URL given
//! as the first argument): `cargo run --release -p arbor-store --example
//! store-bench [URL]`. Prints per-operation means and percentiles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arbor_store::{ListQuery, SandboxRecord, State, Store};

const N: usize = 2_000;

fn record(i: usize) -> SandboxRecord {
    SandboxRecord {
        id: format!("bench-{i:05}"),
        team_id: arbor_store::DEFAULT_TEAM_ID.into(),
        template_id: "base".into(),
        alias: None,
        state: State::Running,
        node_id: "local".into(),
        cpu_count: 2,
        memory_mb: 512,
        disk_mb: 1024,
        metadata: BTreeMap::from([("user".into(), format!("u{}", i % 10)), ("team".into(), "x".into())]),
        env_vars: BTreeMap::from([("A".into(), "1".into())]),
        envd_token: format!("token-{i:05}"),
        traffic_token: None,
        secure: true,
        allow_internet: true,
        network: None,
        auto_pause: false,
        auto_resume: false,
        idle_timeout_s: None,
        started_at: i as i64,
        end_at: 1_000_000,
        last_activity_at: 0,
        paused_at: None,
        host_addr: Some("10.11.0.2".into()),
        init_pid: Some(1234),
        envd_version: "0.1.0".into(),
        domain: None,
        snapshot_id: None,
        build_id: None,
    }
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    let pct = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
    println!("{what:<28} n={:<5} mean={mean:>9.1?} p50={:>9.1?} p99={:>9.1?}", samples.len(), pct(50), pct(99));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let url = std::env::args().nth(1).unwrap_or_else(|| format!("sqlite:{}/bench.db", dir.path().display()));
    let store = Store::open(&url).await.unwrap();
    println!("backend: {:?}", store.backend());

    let (mut ins, mut get, mut touch) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..N {
        let r = record(i);
        let t = Instant::now();
        store.insert_sandbox(&r).await.unwrap();
        ins.push(t.elapsed());
        let t = Instant::now();
        store.get_sandbox(&r.id).await.unwrap().unwrap();
        get.push(t.elapsed());
    }
    for i in 0..N {
        let t = Instant::now();
        store.touch(&format!("bench-{:05}", i % N), 1_000 + i as i64).await.unwrap();
        touch.push(t.elapsed());
    }
    // Many requests to one sandbox: all but one a second are absorbed.
    let mut hot = Vec::new();
    for i in 0..N {
        let t = Instant::now();
        store.touch("bench-00000", 1_000_000 + i as i64).await.unwrap();
        hot.push(t.elapsed());
    }
    let key = store.create_key(arbor_store::DEFAULT_TEAM_ID, "bench", arbor_store::KeyRole::Member).await.unwrap();
    let mut verify = Vec::new();
    for _ in 0..N {
        let t = Instant::now();
        store.verify_key(&key.secret).await.unwrap().unwrap();
        verify.push(t.elapsed());
    }
    let mut list = Vec::new();
    let q = ListQuery { metadata: vec![("user".into(), "u3".into())], limit: 100, ..Default::default() };
    for _ in 0..200 {
        let t = Instant::now();
        store.list_sandboxes(&q).await.unwrap();
        list.push(t.elapsed());
    }
    // Concurrent touches from 64 tasks: throughput with writer contention.
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..64 {
        let store = store.clone();
        tasks.spawn(async move {
            for j in 0..100 {
                store
                    .touch(&format!("bench-{:05}", (w * 100 + j) % N), 10_000_000 + (w * 100 + j) as i64 * 1_000)
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let concurrent = t.elapsed();

    report("insert_sandbox (2 meta)", ins);
    report("get_sandbox", get);
    report("touch (written)", touch);
    report("touch (same sandbox)", hot);
    report("verify_key", verify);
    report(&format!("list (1 pair, {N} rows)"), list);
    println!("touch x6400 from 64 tasks: {concurrent:.1?} total, {:.0} touches/s", 6400.0 / concurrent.as_secs_f64());
    store.close().await;
}
