//! One suite, run against SQLite (a temp file) and PostgreSQL (a throw-away
//! cluster): every case gets a fresh, empty database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use arbor_store::{
    Backend, BuildRecord, BuildStatus, Error, KeyRole, ListQuery, Metric, SandboxRecord, SnapshotKind, SnapshotQuery,
    SnapshotRecord, SnapshotState, State, Store, TemplateRecord, Usage, DEFAULT_TEAM_ID, TOUCH_GRANULARITY_MS,
};

type Case = fn(String) -> Pin<Box<dyn Future<Output = ()>>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        const CASES: &[(&str, Case)] = &[$((stringify!($name), |url| Box::pin($name(url)))),*];
    };
}

cases!(
    migrations_idempotent,
    keys_lifecycle,
    sandbox_crud,
    list_filters,
    pagination,
    due_sandboxes,
    concurrency,
    metrics_range_and_prune,
    migration_over_v1,
    snapshots_crud_and_list,
    snapshot_users_rules,
    templates_and_versions,
    teams_and_keys,
    team_scoped_sandboxes,
    team_scoped_snapshots_metrics,
    team_scoped_templates,
    migration_0004_over_v3,
);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap()
}

#[test]
fn sqlite_suite() {
    runtime().block_on(async {
        for (name, case) in CASES {
            let dir = tempfile::tempdir().unwrap();
            // A missing parent directory is created by Store::open.
            let url = format!("sqlite:{}/state/arbor.db", dir.path().display());
            let t = Instant::now();
            case(url).await;
            eprintln!("sqlite {name}: ok in {:?}", t.elapsed());
        }
    });
}

#[test]
fn bad_urls_are_invalid_arguments() {
    runtime().block_on(async {
        for url in ["mysql://x/y", "sqlite:", "sqlite::memory:", "arbor.db"] {
            match Store::open(url).await {
                Err(Error::InvalidArgument(msg)) => assert!(msg.contains("URL"), "{msg}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    });
}

#[test]
fn postgres_suite() {
    let Some(cluster) = common::PgCluster::start() else {
        return;
    };
    runtime().block_on(async {
        for (name, case) in CASES {
            let url = cluster.create_db(name).await;
            let t = Instant::now();
            case(url).await;
            eprintln!("postgres {name}: ok in {:?}", t.elapsed());
        }
    });
    drop(cluster);
}

fn record(id: &str, started_at: i64) -> SandboxRecord {
    SandboxRecord {
        id: id.into(),
        team_id: DEFAULT_TEAM_ID.into(),
        template_id: "base".into(),
        alias: None,
        state: State::Running,
        node_id: "local".into(),
        cpu_count: 2,
        memory_mb: 512,
        disk_mb: 1024,
        metadata: BTreeMap::new(),
        env_vars: BTreeMap::new(),
        envd_token: format!("envd-{id}"),
        traffic_token: None,
        secure: true,
        allow_internet: true,
        network: None,
        auto_pause: false,
        auto_resume: false,
        idle_timeout_s: None,
        started_at,
        end_at: started_at + 300_000,
        last_activity_at: started_at,
        paused_at: None,
        host_addr: None,
        init_pid: None,
        envd_version: "0.1.0".into(),
        domain: None,
        snapshot_id: None,
        build_id: None,
    }
}

fn ids(items: &[SandboxRecord]) -> Vec<&str> {
    items.iter().map(|r| r.id.as_str()).collect()
}

fn meta(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn migrations_idempotent(url: String) {
    let store = Store::open(&url).await.unwrap();
    store.create_key(DEFAULT_TEAM_ID, "first", KeyRole::Member).await.unwrap();
    store.insert_sandbox(&record("sb1", 1)).await.unwrap();
    if let Some(path) = url.strip_prefix("sqlite:") {
        assert_eq!(store.backend(), Backend::Sqlite);
        // WAL mode is on: the write-ahead log exists beside the database.
        assert!(std::path::Path::new(&format!("{path}-wal")).exists());
    } else {
        assert_eq!(store.backend(), Backend::Postgres);
    }
    store.close().await;
    for _ in 0..2 {
        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.key_count().await.unwrap(), 1);
        assert!(store.get_sandbox("sb1").await.unwrap().is_some());
        store.close().await;
    }
}

async fn keys_lifecycle(url: String) {
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.key_count().await.unwrap(), 0);

    let new = store.create_key(DEFAULT_TEAM_ID, "ci", KeyRole::Member).await.unwrap();
    assert!(new.secret.starts_with("arbor_") && new.secret.len() == 70, "{}", new.secret);
    assert!(new.secret.starts_with(&new.info.prefix));
    assert_eq!(new.info.name, "ci");

    let seen = store.verify_key(&new.secret).await.unwrap().expect("valid key");
    assert_eq!(seen.id, new.info.id);
    let used = seen.last_used_at.expect("use recorded");
    // Within the minute the use is not rewritten.
    let again = store.verify_key(&new.secret).await.unwrap().unwrap();
    assert_eq!(again.last_used_at, Some(used));
    assert_eq!(store.verify_key("arbor_nope").await.unwrap(), None);
    assert_eq!(store.verify_key("").await.unwrap(), None);

    assert!(matches!(
        store.import_key(DEFAULT_TEAM_ID, "op", "short", KeyRole::Member).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.import_key(DEFAULT_TEAM_ID, "op", "has a space in it!", KeyRole::Member).await,
        Err(Error::InvalidArgument(_))
    ));
    let op = store.import_key(DEFAULT_TEAM_ID, "operator", "operator-given-secret-1", KeyRole::Member).await.unwrap();
    let op2 = store.import_key(DEFAULT_TEAM_ID, "renamed", "operator-given-secret-1", KeyRole::Member).await.unwrap();
    assert_eq!(op, op2, "importing the same secret is idempotent");
    assert!(store.verify_key("operator-given-secret-1").await.unwrap().is_some());
    assert_eq!(store.key_count().await.unwrap(), 2);
    assert_eq!(store.list_keys().await.unwrap().len(), 2);

    // Revoke by display prefix, then by id.
    assert!(store.revoke_key(&new.info.prefix).await.unwrap());
    assert_eq!(store.verify_key(&new.secret).await.unwrap(), None);
    assert!(!store.revoke_key(&new.info.prefix).await.unwrap());
    assert!(!store.revoke_key("no-such-key").await.unwrap());
    assert_eq!(store.key_count().await.unwrap(), 1);
    assert!(store.revoke_key(&op.id).await.unwrap());
    assert_eq!(store.key_count().await.unwrap(), 0);
    // Reimporting a revoked secret does not bring it back.
    let back = store.import_key(DEFAULT_TEAM_ID, "operator", "operator-given-secret-1", KeyRole::Member).await.unwrap();
    assert!(back.revoked_at.is_some());
    assert_eq!(store.verify_key("operator-given-secret-1").await.unwrap(), None);
    let listed = store.list_keys().await.unwrap();
    assert!(listed.iter().all(|k| k.revoked_at.is_some()));

    // A prefix shared by two live keys is ambiguous.
    let a = store.import_key(DEFAULT_TEAM_ID, "a", "samesameAAAAAAAA1", KeyRole::Member).await.unwrap();
    let b = store.import_key(DEFAULT_TEAM_ID, "b", "samesameBBBBBBBB2", KeyRole::Member).await.unwrap();
    assert_eq!(a.prefix, b.prefix);
    assert!(matches!(store.revoke_key(&a.prefix).await, Err(Error::Conflict(_))));
    assert!(store.revoke_key(&a.id).await.unwrap());
    assert!(store.revoke_key(&b.prefix).await.unwrap());
}

async fn sandbox_crud(url: String) {
    let store = Store::open(&url).await.unwrap();
    let mut r = record("sb-full", 1_700_000_000_000);
    r.alias = Some("my-template".into());
    r.metadata = BTreeMap::from([("user".into(), "ann".into()), ("a b".into(), "c&d=e".into())]);
    r.env_vars = BTreeMap::from([("FOO".into(), "bar baz".into())]);
    r.traffic_token = Some("traffic".into());
    r.network = Some(serde_json::json!({"allowOut": ["1.1.1.1/32"], "allowPublicTraffic": false}));
    r.auto_pause = true;
    r.auto_resume = true;
    r.idle_timeout_s = Some(60);
    r.host_addr = Some("10.11.0.2".into());
    r.init_pid = Some(4242);
    r.domain = Some("sandbox.test".into());
    r.snapshot_id = Some("snap-1".into());
    r.memory_mb = u64::from(u32::MAX) + 1;
    store.insert_sandbox(&r).await.unwrap();
    assert_eq!(store.get_sandbox(&r.id).await.unwrap().as_ref(), Some(&r));
    assert_eq!(store.sandbox_by_token(&r.envd_token).await.unwrap().as_ref(), Some(&r));
    assert_eq!(store.get_sandbox("missing").await.unwrap(), None);
    assert_eq!(store.sandbox_by_token("missing").await.unwrap(), None);

    // Duplicate id, duplicate token.
    let mut dup = record("sb-full", 5);
    dup.envd_token = "other".into();
    assert!(matches!(store.insert_sandbox(&dup).await, Err(Error::Conflict(_))));
    let mut dup = record("sb-other", 5);
    dup.envd_token = r.envd_token.clone();
    assert!(matches!(store.insert_sandbox(&dup).await, Err(Error::Conflict(_))));
    // The failed insert left no metadata behind.
    let page =
        store.list_sandboxes(&ListQuery { metadata: meta(&[("user", "ann")]), ..Default::default() }).await.unwrap();
    assert_eq!(ids(&page.items), ["sb-full"]);

    // Whole-row update replaces metadata.
    r.metadata = BTreeMap::from([("user".into(), "bob".into())]);
    r.cpu_count = 4;
    r.network = None;
    r.snapshot_id = None;
    store.update_sandbox(&r).await.unwrap();
    assert_eq!(store.get_sandbox(&r.id).await.unwrap().as_ref(), Some(&r));
    let q = |k: &str, v: &str| ListQuery { metadata: meta(&[(k, v)]), ..Default::default() };
    assert!(store.list_sandboxes(&q("user", "ann")).await.unwrap().items.is_empty());
    assert_eq!(store.list_sandboxes(&q("user", "bob")).await.unwrap().items.len(), 1);
    assert!(matches!(store.update_sandbox(&record("missing", 1)).await, Err(Error::NotFound(_))));

    // State changes.
    store.set_state(&r.id, State::Paused, 2_000).await.unwrap();
    let got = store.get_sandbox(&r.id).await.unwrap().unwrap();
    assert_eq!((got.state, got.paused_at), (State::Paused, Some(2_000)));
    assert!(!store.transition(&r.id, State::Running, State::Paused, 3_000).await.unwrap());
    assert!(store.transition(&r.id, State::Paused, State::Running, 3_000).await.unwrap());
    let got = store.get_sandbox(&r.id).await.unwrap().unwrap();
    assert_eq!((got.state, got.paused_at), (State::Running, None));
    assert_eq!(got.last_activity_at, r.started_at.max(3_000));
    assert!(matches!(store.set_state("missing", State::Killed, 1).await, Err(Error::NotFound(_))));
    assert!(!store.transition("missing", State::Running, State::Killed, 1).await.unwrap());

    // Deadline and activity.
    store.set_end_at(&r.id, 42).await.unwrap();
    assert_eq!(store.get_sandbox(&r.id).await.unwrap().unwrap().end_at, 42);
    assert!(matches!(store.set_end_at("missing", 1).await, Err(Error::NotFound(_))));
    let t = r.started_at + 10_000;
    let activity = |store: Store| {
        let id = r.id.clone();
        async move { store.get_sandbox(&id).await.unwrap().unwrap().last_activity_at }
    };
    store.touch(&r.id, t).await.unwrap();
    store.touch(&r.id, t - 5_000).await.unwrap();
    assert_eq!(activity(store.clone()).await, t);
    // Within the granularity a touch is absorbed; at it, written.
    store.touch(&r.id, t + TOUCH_GRANULARITY_MS - 1).await.unwrap();
    assert_eq!(activity(store.clone()).await, t);
    store.touch(&r.id, t + TOUCH_GRANULARITY_MS).await.unwrap();
    assert_eq!(activity(store.clone()).await, t + TOUCH_GRANULARITY_MS);
    // The throttle is per Store: another one (another replica) writes.
    let replica = Store::open(&url).await.unwrap();
    replica.touch(&r.id, t + TOUCH_GRANULARITY_MS + 1).await.unwrap();
    assert_eq!(activity(store.clone()).await, t + TOUCH_GRANULARITY_MS + 1);
    store.touch("missing", t).await.unwrap();

    // Usage counts running sandboxes only.
    let mut p = record("sb-paused", 10);
    p.state = State::Paused;
    store.insert_sandbox(&p).await.unwrap();
    let usage = store.usage().await.unwrap();
    assert_eq!(usage, Usage { running: 1, vcpu: 4, memory_mb: u64::from(u32::MAX) + 1, paused: 1 });

    // Delete takes the metadata along; the id can be reused.
    assert!(store.delete_sandbox(&r.id).await.unwrap());
    assert!(!store.delete_sandbox(&r.id).await.unwrap());
    assert_eq!(store.get_sandbox(&r.id).await.unwrap(), None);
    assert!(store.list_sandboxes(&q("user", "bob")).await.unwrap().items.is_empty());
    store.insert_sandbox(&r).await.unwrap();
    assert_eq!(store.list_sandboxes(&q("user", "bob")).await.unwrap().items.len(), 1);

    // Killed rows are cleaned up by deadline.
    store.set_state("sb-paused", State::Killed, 0).await.unwrap();
    assert_eq!(store.delete_killed(0).await.unwrap(), 0);
    assert_eq!(store.delete_killed(i64::MAX).await.unwrap(), 1);
    assert_eq!(store.get_sandbox("sb-paused").await.unwrap(), None);
}

async fn list_filters(url: String) {
    let store = Store::open(&url).await.unwrap();
    type Pairs = &'static [(&'static str, &'static str)];
    let specs: [(&str, State, Pairs); 5] = [
        ("s1", State::Running, &[("a b", "c&d=e"), ("x", "y")]),
        ("s2", State::Running, &[("a b", "c&d=e")]),
        ("s3", State::Paused, &[("a b", "c&d=e"), ("x", "y"), ("k=1", "v=2 & w")]),
        ("s4", State::Killed, &[("a b", "c&d=e"), ("x", "y")]),
        ("s5", State::Running, &[("x", "y")]),
    ];
    for (i, (id, state, pairs)) in specs.iter().enumerate() {
        let mut r = record(id, 1_000 - i as i64);
        r.state = *state;
        r.metadata = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        store.insert_sandbox(&r).await.unwrap();
    }
    let list = |states: Vec<State>, pairs: &[(&str, &str)]| {
        let q = ListQuery { states, metadata: meta(pairs), ..Default::default() };
        let store = store.clone();
        async move { store.list_sandboxes(&q).await.unwrap() }
    };
    use State::*;
    // No filter: everything but killed, newest first.
    assert_eq!(ids(&list(vec![], &[]).await.items), ["s1", "s2", "s3", "s5"]);
    assert_eq!(ids(&list(vec![Running], &[]).await.items), ["s1", "s2", "s5"]);
    assert_eq!(ids(&list(vec![Paused], &[]).await.items), ["s3"]);
    assert_eq!(ids(&list(vec![Killed], &[]).await.items), ["s4"]);
    assert_eq!(ids(&list(vec![Running, Paused, Killed], &[]).await.items), ["s1", "s2", "s3", "s4", "s5"]);
    // Metadata: special characters, AND of pairs.
    assert_eq!(ids(&list(vec![], &[("a b", "c&d=e")]).await.items), ["s1", "s2", "s3"]);
    assert_eq!(ids(&list(vec![], &[("a b", "c&d=e"), ("x", "y")]).await.items), ["s1", "s3"]);
    assert_eq!(ids(&list(vec![Running], &[("a b", "c&d=e"), ("x", "y")]).await.items), ["s1"]);
    assert_eq!(ids(&list(vec![], &[("k=1", "v=2 & w")]).await.items), ["s3"]);
    assert!(list(vec![], &[("k=1", "v=2")]).await.items.is_empty());
    assert!(list(vec![], &[("a b", "c")]).await.items.is_empty());
    assert!(list(vec![], &[("x", "y"), ("nope", "y")]).await.items.is_empty());
    // The same pair twice is still an AND that holds.
    assert_eq!(ids(&list(vec![], &[("x", "y"), ("x", "y")]).await.items), ["s1", "s3", "s5"]);
}

async fn pagination(url: String) {
    let store = Store::open(&url).await.unwrap();
    // Two share a start time: the id breaks the tie.
    for (id, t) in [("p-b", 100), ("p-a", 100), ("p-c", 50)] {
        store.insert_sandbox(&record(id, t)).await.unwrap();
    }
    let mut q = ListQuery { limit: 1, ..Default::default() };
    let mut seen = Vec::new();
    loop {
        let page = store.list_sandboxes(&q).await.unwrap();
        assert!(page.items.len() <= 1);
        seen.extend(page.items.iter().map(|r| r.id.clone()));
        match page.next_token {
            Some(t) => q.next_token = Some(t),
            None => break,
        }
        assert!(seen.len() <= 3, "pagination does not end: {seen:?}");
    }
    assert_eq!(seen, ["p-a", "p-b", "p-c"]);

    // A sandbox created between pages does not shift the rest.
    let first = store.list_sandboxes(&ListQuery { limit: 1, ..Default::default() }).await.unwrap();
    store.insert_sandbox(&record("p-new", 200)).await.unwrap();
    let rest = store
        .list_sandboxes(&ListQuery { limit: 10, next_token: first.next_token, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(ids(&rest.items), ["p-b", "p-c"]);
    assert_eq!(rest.next_token, None);

    // limit 0 means the default page size.
    let all = store.list_sandboxes(&ListQuery::default()).await.unwrap();
    assert_eq!(ids(&all.items), ["p-new", "p-a", "p-b", "p-c"]);

    for bad in ["garbage", "zz", "", "0000"] {
        let q = ListQuery { next_token: Some(bad.into()), ..Default::default() };
        match store.list_sandboxes(&q).await {
            Err(Error::InvalidArgument(msg)) => assert!(msg.contains("nextToken"), "{msg}"),
            other => panic!("token {bad:?}: {other:?}"),
        }
    }
}

async fn due_sandboxes(url: String) {
    let store = Store::open(&url).await.unwrap();
    let now = 1_000_000;
    let mut expired = record("expired", 0);
    expired.end_at = now;
    let mut alive = record("alive", 0);
    alive.end_at = now + 1;
    let mut idle = record("idle", 0);
    idle.end_at = now + 100_000;
    idle.idle_timeout_s = Some(10);
    // Idle timeouts get TOUCH_GRANULARITY_MS (1 s) of grace.
    idle.last_activity_at = now - 11_000;
    let mut busy = record("busy", 0);
    busy.end_at = now + 100_000;
    busy.idle_timeout_s = Some(10);
    busy.last_activity_at = now - 10_999;
    let mut paused_idle = idle.clone();
    paused_idle.id = "paused-idle".into();
    paused_idle.envd_token = "t-pi".into();
    paused_idle.state = State::Paused;
    let mut paused_expired = expired.clone();
    paused_expired.id = "paused-expired".into();
    paused_expired.envd_token = "t-pe".into();
    paused_expired.state = State::Paused;
    paused_expired.end_at = now - 1;
    let mut killed = expired.clone();
    killed.id = "killed".into();
    killed.envd_token = "t-k".into();
    killed.state = State::Killed;
    for r in [&expired, &alive, &idle, &busy, &paused_idle, &paused_expired, &killed] {
        store.insert_sandbox(r).await.unwrap();
    }
    let due = store.due(now).await.unwrap();
    let mut got = ids(&due);
    got.sort();
    assert_eq!(got, ["expired", "idle", "paused-expired"]);
    // Activity makes the idle one live again; a later clock makes more due.
    store.touch("idle", now).await.unwrap();
    assert_eq!(ids(&store.due(now).await.unwrap()), ["paused-expired", "expired"]);
    // `alive`'s deadline and `busy`'s idle timeout are both at now + 1;
    // the order is by deadline.
    assert_eq!(ids(&store.due(now + 1).await.unwrap()), ["paused-expired", "expired", "alive", "busy"]);
    assert_eq!(ids(&store.by_state(State::Paused).await.unwrap()), ["paused-expired", "paused-idle"]);
}

async fn concurrency(url: String) {
    let store = Store::open(&url).await.unwrap();
    // A second pool on the same database, as a second process would have:
    // its writers contend through the engine's locks, not one pool's queue.
    let other = Store::open(&url).await.unwrap();
    const N: usize = 200;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let store = if i % 2 == 0 { store.clone() } else { other.clone() };
        tasks.spawn(async move {
            let mut r = record(&format!("c{i:03}"), i as i64);
            r.metadata = BTreeMap::from([("group".into(), (i % 4).to_string())]);
            store.insert_sandbox(&r).await?;
            for j in 0..5 {
                let at = 1_000 + j * TOUCH_GRANULARITY_MS;
                store.touch(&r.id, at).await?;
                store.touch(&format!("c{:03}", (i + 1) % N), at).await?;
            }
            r.cpu_count = 8;
            store.update_sandbox(&r).await?;
            store.get_sandbox(&r.id).await?;
            store.list_sandboxes(&ListQuery { limit: 5, ..Default::default() }).await?;
            Ok::<_, Error>(())
        });
    }
    while let Some(res) = tasks.join_next().await {
        res.unwrap().unwrap();
    }
    let usage = store.usage().await.unwrap();
    assert_eq!((usage.running, usage.vcpu), (N as u64, 8 * N as u64));
    let group = ListQuery { metadata: meta(&[("group", "2")]), limit: 1000, ..Default::default() };
    assert_eq!(store.list_sandboxes(&group).await.unwrap().items.len(), N / 4);
    let last = store.get_sandbox("c007").await.unwrap().unwrap();
    assert_eq!(last.last_activity_at, 1_000 + 4 * TOUCH_GRANULARITY_MS);
}

async fn metrics_range_and_prune(url: String) {
    let store = Store::open(&url).await.unwrap();
    store.insert_sandbox(&record("m1", 0)).await.unwrap();
    for (sb, t) in [("m1", 1_000), ("m1", 2_000), ("m1", 3_000), ("m1", 4_000), ("m2", 2_000)] {
        let m = Metric {
            sandbox_id: sb.into(),
            team_id: DEFAULT_TEAM_ID.into(),
            timestamp: t,
            cpu_count: 2,
            cpu_used_pct: t as f64 / 100.0 + 0.25,
            mem_total_mib: 512,
            mem_used_mib: 100,
            disk_total: 1 << 40,
            disk_used: 1 << 20,
        };
        store.insert_metric(&m).await.unwrap();
    }
    let got = store.metrics("m1", 2_000, 3_000).await.unwrap();
    assert_eq!(got.iter().map(|m| m.timestamp).collect::<Vec<_>>(), [2_000, 3_000]);
    assert_eq!(got[0].cpu_used_pct, 20.25);
    assert_eq!(got[0].disk_total, 1 << 40);
    assert_eq!(store.metrics("m1", 0, i64::MAX).await.unwrap().len(), 4);
    assert!(store.metrics("m1", 5_000, 9_000).await.unwrap().is_empty());
    // Metrics outlive their sandbox.
    assert!(store.delete_sandbox("m1").await.unwrap());
    assert_eq!(store.metrics("m1", 0, i64::MAX).await.unwrap().len(), 4);
    assert_eq!(store.prune_metrics(3_000).await.unwrap(), 3);
    assert_eq!(
        store.metrics("m1", 0, i64::MAX).await.unwrap().iter().map(|m| m.timestamp).collect::<Vec<_>>(),
        [3_000, 4_000]
    );
    assert!(store.metrics("m2", 0, i64::MAX).await.unwrap().is_empty());
}

/// Applies only migration 0001 (as an older binary did), writes a sandbox
/// in that schema, then opens the store, which must add 0002 over it.
async fn migration_over_v1(url: String) {
    sqlx::any::install_default_drivers();
    let v1 = tempfile::tempdir().unwrap();
    let init = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/0001_init.sql");
    std::fs::copy(&init, v1.path().join("0001_init.sql")).unwrap();
    let raw_url = match url.strip_prefix("sqlite:") {
        Some(path) => {
            std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
            format!("sqlite://{path}?mode=rwc")
        }
        None => url.clone(),
    };
    let pool = sqlx::AnyPool::connect(&raw_url).await.unwrap();
    sqlx::migrate::Migrator::new(v1.path()).await.unwrap().run(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO sandboxes (id, template_id, state, node_id, cpu_count, memory_mb, disk_mb, metadata, \
         env_vars, envd_token, secure, allow_internet, auto_pause, auto_resume, started_at, end_at, \
         last_activity_at, envd_version) VALUES ('old', 'base', 'paused', 'local', 1, 256, 512, \
         '{\"k\":\"v\"}', '{}', 'tok-old', 1, 0, 1, 0, 5, 6, 7, '0.0.9')",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let store = Store::open(&url).await.unwrap();
    let old = store.get_sandbox("old").await.unwrap().expect("row kept across the migration");
    assert_eq!((old.state, old.snapshot_id.as_deref(), old.metadata.len()), (State::Paused, None, 1));
    assert!(old.auto_pause && !old.allow_internet);
    // The new column and table are usable on the migrated database.
    let mut r = old.clone();
    r.snapshot_id = Some("s1".into());
    store.update_sandbox(&r).await.unwrap();
    store.insert_snapshot(&snapshot("s1", "old", 1, SnapshotKind::Snapshot)).await.unwrap();
    assert_eq!(store.snapshot_users("s1").await.unwrap(), ["old"]);
    store.close().await;
    // Reopening finds both migrations applied.
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.get_sandbox("old").await.unwrap().unwrap().snapshot_id.as_deref(), Some("s1"));
    store.close().await;
}

/// A ready snapshot of `sandbox_id`.
fn snapshot(id: &str, sandbox_id: &str, created_at: i64, kind: SnapshotKind) -> SnapshotRecord {
    SnapshotRecord {
        id: id.into(),
        team_id: DEFAULT_TEAM_ID.into(),
        sandbox_id: sandbox_id.into(),
        kind,
        state: SnapshotState::Ready,
        names: vec![format!("team/{id}"), id.into()],
        template_id: "base".into(),
        node_id: "local".into(),
        cpu_count: 2,
        memory_mb: 512,
        disk_mb: 1024,
        env_vars: BTreeMap::from([("FOO".into(), "bar baz".into())]),
        metadata: BTreeMap::from([("a b".into(), "c&d".into())]),
        envd_version: "0.1.0".into(),
        envd_token: format!("token-{id}"),
        memory_bytes: Some(1 << 20),
        created_at,
    }
}

fn snap_ids(items: &[SnapshotRecord]) -> Vec<&str> {
    items.iter().map(|r| r.id.as_str()).collect()
}

/// Follows next tokens to the end, checking page sizes.
async fn all_pages(store: &Store, mut q: SnapshotQuery) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let page = store.list_snapshots(&q).await.unwrap();
        assert!(q.limit == 0 || page.items.len() <= q.limit as usize);
        seen.extend(page.items.iter().map(|r| r.id.clone()));
        match page.next_token {
            Some(t) => q.next_token = Some(t),
            None => return seen,
        }
        assert!(seen.len() <= 100, "pagination does not end: {seen:?}");
    }
}

async fn snapshots_crud_and_list(url: String) {
    let store = Store::open(&url).await.unwrap();
    let mut s1 = snapshot("sn1", "sb1", 100, SnapshotKind::Snapshot);
    s1.state = SnapshotState::Creating;
    s1.memory_bytes = None;
    s1.names = vec![];
    s1.metadata = BTreeMap::new();
    store.insert_snapshot(&s1).await.unwrap();
    assert_eq!(store.get_snapshot("sn1").await.unwrap().as_ref(), Some(&s1));
    assert_eq!(store.get_snapshot("missing").await.unwrap(), None);
    assert!(matches!(store.insert_snapshot(&s1).await, Err(Error::Conflict(_))));

    // A snapshot being created is not listed, but recovery finds it.
    assert!(store.list_snapshots(&SnapshotQuery::default()).await.unwrap().items.is_empty());
    assert_eq!(snap_ids(&store.snapshots_in_state(SnapshotState::Creating).await.unwrap()), ["sn1"]);
    let big = u64::from(u32::MAX) * 3;
    store.mark_snapshot_ready("sn1", Some(big)).await.unwrap();
    store.mark_snapshot_ready("sn1", Some(big)).await.unwrap();
    let got = store.get_snapshot("sn1").await.unwrap().unwrap();
    assert_eq!((got.state, got.memory_bytes), (SnapshotState::Ready, Some(big)));
    assert!(matches!(store.mark_snapshot_ready("missing", None).await, Err(Error::NotFound(_))));
    assert!(store.snapshots_in_state(SnapshotState::Creating).await.unwrap().is_empty());
    assert_eq!(snap_ids(&store.snapshots_in_state(SnapshotState::Ready).await.unwrap()), ["sn1"]);

    // Oldest first; sn1 and sn2 tie on created_at and the id breaks it.
    store.insert_snapshot(&snapshot("sn2", "sb1", 100, SnapshotKind::Snapshot)).await.unwrap();
    store.insert_snapshot(&snapshot("sn3", "sb2", 50, SnapshotKind::Snapshot)).await.unwrap();
    store.insert_snapshot(&snapshot("sn4", "sb1", 200, SnapshotKind::Clone)).await.unwrap();
    let mut pending = snapshot("sn5", "sb1", 150, SnapshotKind::Snapshot);
    pending.state = SnapshotState::Creating;
    store.insert_snapshot(&pending).await.unwrap();
    let q = |sandbox: Option<&str>, limit| SnapshotQuery {
        sandbox_id: sandbox.map(Into::into),
        limit,
        ..Default::default()
    };
    assert_eq!(all_pages(&store, q(None, 1)).await, ["sn3", "sn1", "sn2", "sn4"]);
    assert_eq!(all_pages(&store, q(None, 3)).await, ["sn3", "sn1", "sn2", "sn4"]);
    assert_eq!(all_pages(&store, q(Some("sb1"), 2)).await, ["sn1", "sn2", "sn4"]);
    assert_eq!(all_pages(&store, q(Some("sb2"), 0)).await, ["sn3"]);
    assert!(all_pages(&store, q(Some("nobody"), 5)).await.is_empty());
    let clones = SnapshotQuery { kind: Some(SnapshotKind::Clone), ..Default::default() };
    assert_eq!(snap_ids(&store.list_snapshots(&clones).await.unwrap().items), ["sn4"]);
    // By name: an element of `names`, matched exactly (`_` and `%` are no wildcards, case counts).
    let named = |name: &str| SnapshotQuery { name: Some(name.into()), ..Default::default() };
    assert_eq!(snap_ids(&store.list_snapshots(&named("team/sn3")).await.unwrap().items), ["sn3"]);
    for other in ["team/sn", "TEAM/sn3", "team_sn3", "team/%", "sn"] {
        assert!(store.list_snapshots(&named(other)).await.unwrap().items.is_empty(), "{other}");
    }
    let full = store.list_snapshots(&q(Some("sb2"), 0)).await.unwrap();
    assert_eq!(full.items, [snapshot("sn3", "sb2", 50, SnapshotKind::Snapshot)]);
    assert_eq!(full.next_token, None);

    // Snapshots added between pages: an older one is not seen, a newer one
    // comes at the end; nothing repeats or goes missing.
    let first = store.list_snapshots(&q(None, 2)).await.unwrap();
    assert_eq!(snap_ids(&first.items), ["sn3", "sn1"]);
    store.insert_snapshot(&snapshot("sn0", "sb3", 10, SnapshotKind::Snapshot)).await.unwrap();
    store.insert_snapshot(&snapshot("sn9", "sb3", 300, SnapshotKind::Snapshot)).await.unwrap();
    let rest = SnapshotQuery { next_token: first.next_token, ..q(None, 10) };
    assert_eq!(all_pages(&store, rest).await, ["sn2", "sn4", "sn9"]);

    for bad in ["garbage", "zz", "", "0000"] {
        let q = SnapshotQuery { next_token: Some(bad.into()), ..Default::default() };
        match store.list_snapshots(&q).await {
            Err(Error::InvalidArgument(msg)) => assert!(msg.contains("nextToken"), "{msg}"),
            other => panic!("token {bad:?}: {other:?}"),
        }
    }

    // Snapshots outlive their origin; deleting one is reported once.
    store.insert_sandbox(&record("sb1", 1)).await.unwrap();
    assert!(store.delete_sandbox("sb1").await.unwrap());
    assert_eq!(all_pages(&store, q(Some("sb1"), 10)).await, ["sn1", "sn2", "sn4"]);
    assert!(store.delete_snapshot("sn2").await.unwrap());
    assert!(!store.delete_snapshot("sn2").await.unwrap());
    assert_eq!(store.get_snapshot("sn2").await.unwrap(), None);
    assert_eq!(all_pages(&store, q(Some("sb1"), 10)).await, ["sn1", "sn4"]);
}

async fn snapshot_users_rules(url: String) {
    let store = Store::open(&url).await.unwrap();
    let sandbox = |id: &str, started_at: i64, state: State, from: Option<&str>| {
        let mut r = record(id, started_at);
        r.state = state;
        r.snapshot_id = from.map(Into::into);
        r
    };
    // `o` itself started from snapshot `s`; `c` is the snapshot of a clone of `o`.
    store.insert_sandbox(&sandbox("o", 1, State::Running, Some("s"))).await.unwrap();
    store.insert_snapshot(&snapshot("s", "elsewhere", 1, SnapshotKind::Snapshot)).await.unwrap();
    store.insert_snapshot(&snapshot("c", "o", 2, SnapshotKind::Clone)).await.unwrap();
    store.insert_snapshot(&snapshot("plain", "o", 3, SnapshotKind::Snapshot)).await.unwrap();
    assert_eq!(store.snapshot_users("s").await.unwrap(), ["o"]);
    // The origin keeps its clone snapshot in use, not a plain snapshot.
    assert_eq!(store.snapshot_users("c").await.unwrap(), ["o"]);
    assert!(store.snapshot_users("plain").await.unwrap().is_empty());
    assert!(store.snapshot_users("missing").await.unwrap().is_empty());

    // Running and paused sandboxes made from a snapshot use it; killed do not.
    store.insert_sandbox(&sandbox("a", 2, State::Running, Some("s"))).await.unwrap();
    store.insert_sandbox(&sandbox("b", 3, State::Paused, Some("s"))).await.unwrap();
    store.insert_sandbox(&sandbox("k", 4, State::Killed, Some("s"))).await.unwrap();
    assert_eq!(store.snapshot_users("s").await.unwrap(), ["o", "a", "b"]);
    for (id, t) in [("c2", 6), ("c1", 5)] {
        store.insert_sandbox(&sandbox(id, t, State::Running, Some("c"))).await.unwrap();
    }
    assert_eq!(store.snapshot_users("c").await.unwrap(), ["o", "c1", "c2"]);

    // The origin killed, then its row deleted: only the clones remain.
    store.set_state("o", State::Killed, 10).await.unwrap();
    assert_eq!(store.snapshot_users("c").await.unwrap(), ["c1", "c2"]);
    assert_eq!(store.snapshot_users("s").await.unwrap(), ["a", "b"]);
    assert!(store.delete_sandbox("o").await.unwrap());
    assert_eq!(store.snapshot_users("c").await.unwrap(), ["c1", "c2"]);
    store.set_state("c1", State::Paused, 11).await.unwrap();
    store.set_state("c2", State::Killed, 11).await.unwrap();
    assert_eq!(store.snapshot_users("c").await.unwrap(), ["c1"]);
    store.set_state("c1", State::Killed, 12).await.unwrap();
    assert!(store.snapshot_users("c").await.unwrap().is_empty());

    // A clone origin still alive with all clones gone keeps it in use.
    store.insert_sandbox(&sandbox("o2", 20, State::Paused, None)).await.unwrap();
    store.insert_snapshot(&snapshot("c-o2", "o2", 20, SnapshotKind::Clone)).await.unwrap();
    assert_eq!(store.snapshot_users("c-o2").await.unwrap(), ["o2"]);

    // update_sandbox writes snapshot_id too.
    let mut b = store.get_sandbox("b").await.unwrap().unwrap();
    b.snapshot_id = None;
    store.update_sandbox(&b).await.unwrap();
    assert_eq!(store.snapshot_users("s").await.unwrap(), ["a"]);
    assert_eq!(store.get_sandbox("b").await.unwrap().unwrap().snapshot_id, None);
}

fn build(id: &str, template_id: &str) -> BuildRecord {
    BuildRecord {
        id: id.into(),
        template_id: template_id.into(),
        version: 0,
        status: BuildStatus::Waiting,
        cpu_count: 2,
        memory_mb: 1024,
        disk_mb: 2048,
        request: None,
        node_ref: None,
        checkpoint: None,
        envd_token: None,
        reason: None,
        created_at: 1,
        finished_at: None,
    }
}

async fn templates_and_versions(url: String) {
    let store = Store::open(&url).await.unwrap();
    let t = TemplateRecord { id: "t1".into(), team_id: DEFAULT_TEAM_ID.into(), name: "app".into(), created_at: 1 };
    store.insert_template(&t).await.unwrap();
    let dup = TemplateRecord { id: "t2".into(), team_id: DEFAULT_TEAM_ID.into(), name: "app".into(), created_at: 2 };
    assert!(matches!(store.insert_template(&dup).await, Err(Error::Conflict(_))));
    assert_eq!(store.team(DEFAULT_TEAM_ID).template_by_name("app").await.unwrap(), Some(t.clone()));
    assert_eq!(store.get_template("t1").await.unwrap(), Some(t.clone()));

    // Versions count up per template, also when inserted concurrently.
    assert_eq!(store.insert_build(&build("b1", "t1")).await.unwrap(), 1);
    let (b2, b3) = (build("b2", "t1"), build("b3", "t1"));
    let (a, b) = tokio::join!(store.insert_build(&b2), store.insert_build(&b3));
    let mut got = [a.unwrap(), b.unwrap()];
    got.sort_unstable();
    assert_eq!(got, [2, 3]);
    assert!(matches!(store.insert_build(&build("b1", "t1")).await, Err(Error::Conflict(_))));

    let mut b1 = store.get_build("b1").await.unwrap().unwrap();
    assert_eq!((b1.version, b1.status), (1, BuildStatus::Waiting));
    b1.status = BuildStatus::Ready;
    b1.node_ref = Some("templates/t1-v1".into());
    b1.finished_at = Some(5);
    store.update_build(&b1).await.unwrap();
    assert_eq!(store.get_build("b1").await.unwrap().unwrap(), b1);
    let versions: Vec<u32> = store.builds_of("t1").await.unwrap().iter().map(|b| b.version).collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(store.builds_in_status(BuildStatus::Waiting).await.unwrap().len(), 2);

    // Sandboxes that are not killed keep a version in use.
    let mut s = record("s1", 10);
    s.build_id = Some("b1".into());
    store.insert_sandbox(&s).await.unwrap();
    assert_eq!(store.build_users("b1").await.unwrap(), ["s1"]);
    assert_eq!(store.get_sandbox("s1").await.unwrap().unwrap().build_id.as_deref(), Some("b1"));
    store.set_state("s1", State::Killed, 11).await.unwrap();
    assert!(store.build_users("b1").await.unwrap().is_empty());

    assert!(store.delete_build("b3").await.unwrap());
    assert!(!store.delete_build("b3").await.unwrap());
    assert_eq!(store.list_templates().await.unwrap(), [t]);
    assert!(store.delete_template("t1").await.unwrap());
    assert!(store.builds_of("t1").await.unwrap().is_empty());
    assert!(matches!(store.update_build(&b1).await, Err(Error::NotFound(_))));
}

/// A sandbox of `team`.
fn owned(id: &str, team: &str, started_at: i64) -> SandboxRecord {
    SandboxRecord { team_id: team.into(), ..record(id, started_at) }
}

async fn teams_and_keys(url: String) {
    let store = Store::open(&url).await.unwrap();
    // The default team exists from the migration on, and comes first.
    let default = store.get_team(DEFAULT_TEAM_ID).await.unwrap().expect("default team");
    assert_eq!(default.name, "default");
    let a = store.create_team("  team a ").await.unwrap();
    assert_eq!(a.name, "team a");
    assert_eq!(a.id.len(), 36, "{}", a.id);
    assert!(matches!(store.create_team("team a").await, Err(Error::Conflict(_))));
    for bad in ["", "   ", "tab\there", &"x".repeat(65)] {
        assert!(matches!(store.create_team(bad).await, Err(Error::InvalidArgument(_))), "{bad:?}");
    }
    let b = store.create_team("b").await.unwrap();
    assert_eq!(store.get_team(&a.id).await.unwrap().as_ref(), Some(&a));
    assert_eq!(store.get_team("team a").await.unwrap().as_ref(), Some(&a));
    assert_eq!(store.get_team("nope").await.unwrap(), None);
    let mut names: Vec<String> = store.list_teams().await.unwrap().into_iter().map(|t| t.name).collect();
    // Oldest first; the two new teams may share a millisecond.
    assert_eq!(names.remove(0), "default");
    names.sort();
    assert_eq!(names, ["b", "team a"]);

    // A key carries its team and role through verification.
    let ka = store.create_key(&a.id, "a-member", KeyRole::Member).await.unwrap();
    let kb = store.create_key(&b.id, "b-admin", KeyRole::Admin).await.unwrap();
    let seen = store.verify_key(&ka.secret).await.unwrap().unwrap();
    assert_eq!((seen.team_id.as_str(), seen.role), (a.id.as_str(), KeyRole::Member));
    let seen = store.verify_key(&kb.secret).await.unwrap().unwrap();
    assert_eq!((seen.team_id.as_str(), seen.role), (b.id.as_str(), KeyRole::Admin));
    // Importing keeps the stored key's team and role.
    let imported = store.import_key(&a.id, "imp", "imported-secret-0123", KeyRole::Admin).await.unwrap();
    let again = store.import_key(&b.id, "imp", "imported-secret-0123", KeyRole::Member).await.unwrap();
    assert_eq!((again.team_id.as_str(), again.role), (a.id.as_str(), KeyRole::Admin));
    assert_eq!(imported, again);

    // Listing and revoking through a team see only its keys.
    let ids = |keys: Vec<arbor_store::KeyInfo>| keys.into_iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(ids(store.team(&a.id).list_keys().await.unwrap()), [ka.info.id.clone(), imported.id.clone()]);
    assert_eq!(ids(store.team(&b.id).list_keys().await.unwrap()), std::slice::from_ref(&kb.info.id));
    assert!(store.team(DEFAULT_TEAM_ID).list_keys().await.unwrap().is_empty());
    assert_eq!(store.list_keys().await.unwrap().len(), 3);
    assert!(!store.team(&b.id).revoke_key(&ka.info.id).await.unwrap(), "another team's key");
    assert!(store.verify_key(&ka.secret).await.unwrap().is_some());
    assert!(!store.team(&a.id).revoke_key(&ka.info.prefix).await.unwrap(), "ids only, not prefixes");
    assert!(store.team(&a.id).revoke_key(&ka.info.id).await.unwrap());
    assert!(!store.team(&a.id).revoke_key(&ka.info.id).await.unwrap(), "already revoked");
    assert_eq!(store.verify_key(&ka.secret).await.unwrap(), None);
}

async fn team_scoped_sandboxes(url: String) {
    let store = Store::open(&url).await.unwrap();
    let (a, b) = (store.team("team-a"), store.team("team-b"));
    let mut a1 = owned("a1", "team-a", 30);
    a1.metadata = BTreeMap::from([("k".into(), "v".into())]);
    store.insert_sandbox(&a1).await.unwrap();
    store.insert_sandbox(&owned("a2", "team-a", 20)).await.unwrap();
    let mut b1 = owned("b1", "team-b", 25);
    b1.metadata = a1.metadata.clone();
    b1.cpu_count = 4;
    store.insert_sandbox(&b1).await.unwrap();
    let mut bp = owned("b-paused", "team-b", 10);
    bp.state = State::Paused;
    store.insert_sandbox(&bp).await.unwrap();

    // Another team's id is as missing as a missing one.
    assert_eq!(a.get_sandbox("a1").await.unwrap().as_ref(), Some(&a1));
    assert_eq!(b.get_sandbox("a1").await.unwrap(), None);
    assert_eq!(b.get_sandbox("missing").await.unwrap(), None);
    assert_eq!(store.team(DEFAULT_TEAM_ID).get_sandbox("a1").await.unwrap(), None);
    // The server sees every team.
    assert_eq!(store.get_sandbox("b1").await.unwrap().unwrap().team_id, "team-b");

    // Lists, filters and pages stay within the team.
    let all = ListQuery::default();
    assert_eq!(ids(&a.list_sandboxes(&all).await.unwrap().items), ["a1", "a2"]);
    assert_eq!(ids(&b.list_sandboxes(&all).await.unwrap().items), ["b1", "b-paused"]);
    assert_eq!(ids(&store.list_sandboxes(&all).await.unwrap().items), ["a1", "b1", "a2", "b-paused"]);
    let by_meta = ListQuery { metadata: meta(&[("k", "v")]), ..Default::default() };
    assert_eq!(ids(&b.list_sandboxes(&by_meta).await.unwrap().items), ["b1"]);
    let paused = ListQuery { states: vec![State::Paused], ..Default::default() };
    assert!(a.list_sandboxes(&paused).await.unwrap().items.is_empty());
    let first = a.list_sandboxes(&ListQuery { limit: 1, ..Default::default() }).await.unwrap();
    assert_eq!(ids(&first.items), ["a1"]);
    let rest = ListQuery { limit: 1, next_token: first.next_token, ..Default::default() };
    let second = a.list_sandboxes(&rest).await.unwrap();
    assert_eq!((ids(&second.items), second.next_token), (vec!["a2"], None));

    // Usage counts the team's own sandboxes.
    assert_eq!(a.usage().await.unwrap(), Usage { running: 2, vcpu: 4, memory_mb: 1024, paused: 0 });
    assert_eq!(b.usage().await.unwrap(), Usage { running: 1, vcpu: 4, memory_mb: 512, paused: 1 });
    assert_eq!(store.usage().await.unwrap().running, 3);

    // The team is set at insert; an update does not move the sandbox.
    let mut moved = a1.clone();
    moved.team_id = "team-b".into();
    moved.cpu_count = 1;
    store.update_sandbox(&moved).await.unwrap();
    let got = a.get_sandbox("a1").await.unwrap().expect("still team a's");
    assert_eq!((got.team_id.as_str(), got.cpu_count), ("team-a", 1));
    assert_eq!(b.get_sandbox("a1").await.unwrap(), None);
}

async fn team_scoped_snapshots_metrics(url: String) {
    let store = Store::open(&url).await.unwrap();
    let (a, b) = (store.team("team-a"), store.team("team-b"));
    let mut sa = snapshot("sa", "a1", 1, SnapshotKind::Snapshot);
    sa.team_id = "team-a".into();
    let mut sb = snapshot("sb", "b1", 2, SnapshotKind::Snapshot);
    sb.team_id = "team-b".into();
    store.insert_snapshot(&sa).await.unwrap();
    store.insert_snapshot(&sb).await.unwrap();
    assert_eq!(a.get_snapshot("sa").await.unwrap().as_ref(), Some(&sa));
    assert_eq!(b.get_snapshot("sa").await.unwrap(), None);
    assert_eq!(store.get_snapshot("sa").await.unwrap().unwrap().team_id, "team-a");
    let q = |sandbox: Option<&str>| SnapshotQuery { sandbox_id: sandbox.map(Into::into), ..Default::default() };
    assert_eq!(snap_ids(&a.list_snapshots(&q(None)).await.unwrap().items), ["sa"]);
    assert_eq!(snap_ids(&b.list_snapshots(&q(None)).await.unwrap().items), ["sb"]);
    // Naming another team's origin finds nothing.
    assert!(b.list_snapshots(&q(Some("a1"))).await.unwrap().items.is_empty());
    let named = SnapshotQuery { name: Some("sa".into()), ..Default::default() };
    assert!(b.list_snapshots(&named).await.unwrap().items.is_empty());
    assert_eq!(snap_ids(&a.list_snapshots(&named).await.unwrap().items), ["sa"]);
    assert_eq!(snap_ids(&store.list_snapshots(&q(None)).await.unwrap().items), ["sa", "sb"]);

    // Samples carry their team and outlive the sandbox with it.
    for (team, t) in [("team-a", 1_000), ("team-a", 2_000)] {
        let m = Metric {
            sandbox_id: "a1".into(),
            team_id: team.into(),
            timestamp: t,
            cpu_count: 1,
            cpu_used_pct: 1.5,
            mem_total_mib: 512,
            mem_used_mib: 10,
            disk_total: 1,
            disk_used: 1,
        };
        store.insert_metric(&m).await.unwrap();
    }
    assert_eq!(a.metrics("a1", 0, i64::MAX).await.unwrap().len(), 2);
    assert_eq!(a.metrics("a1", 0, i64::MAX).await.unwrap()[0].team_id, "team-a");
    assert!(b.metrics("a1", 0, i64::MAX).await.unwrap().is_empty());
    assert_eq!(store.metrics("a1", 0, i64::MAX).await.unwrap().len(), 2);
}

async fn team_scoped_templates(url: String) {
    let store = Store::open(&url).await.unwrap();
    let (a, b) = (store.team("team-a"), store.team("team-b"));
    let template = |id: &str, team: &str, created_at| TemplateRecord {
        id: id.into(),
        team_id: team.into(),
        name: "app".into(),
        created_at,
    };
    // The same name in two teams; twice in one team is a conflict.
    let (ta, tb) = (template("ta", "team-a", 1), template("tb", "team-b", 2));
    store.insert_template(&ta).await.unwrap();
    store.insert_template(&tb).await.unwrap();
    assert!(matches!(store.insert_template(&template("ta2", "team-a", 3)).await, Err(Error::Conflict(_))));
    assert_eq!(a.template_by_name("app").await.unwrap().as_ref(), Some(&ta));
    assert_eq!(b.template_by_name("app").await.unwrap().as_ref(), Some(&tb));
    assert_eq!(store.team("team-c").template_by_name("app").await.unwrap(), None);
    assert_eq!(a.get_template("ta").await.unwrap().as_ref(), Some(&ta));
    assert_eq!(b.get_template("ta").await.unwrap(), None);
    assert_eq!(store.get_template("ta").await.unwrap().as_ref(), Some(&ta));
    assert_eq!(a.list_templates().await.unwrap(), std::slice::from_ref(&ta));
    assert_eq!(store.list_templates().await.unwrap(), [ta.clone(), tb.clone()]);

    // A build belongs to its template's team.
    store.insert_build(&build("ba", "ta")).await.unwrap();
    assert!(a.get_build("ba").await.unwrap().is_some());
    assert_eq!(b.get_build("ba").await.unwrap(), None);
    assert_eq!(b.get_build("missing").await.unwrap(), None);
    assert!(store.get_build("ba").await.unwrap().is_some());
}

/// Applies migrations 0001-0003 (as the binary before teams did), writes a
/// row of each kind, then opens the store, which must put them all in the
/// default team and keep the builds tied to their templates.
async fn migration_0004_over_v3(url: String) {
    sqlx::any::install_default_drivers();
    let old = tempfile::tempdir().unwrap();
    for m in ["0001_init.sql", "0002_snapshots.sql", "0003_templates.sql"] {
        let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(m);
        std::fs::copy(&from, old.path().join(m)).unwrap();
    }
    let raw_url = match url.strip_prefix("sqlite:") {
        Some(path) => {
            std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
            format!("sqlite://{path}?mode=rwc")
        }
        None => url.clone(),
    };
    let pool = sqlx::AnyPool::connect(&raw_url).await.unwrap();
    sqlx::migrate::Migrator::new(old.path()).await.unwrap().run(&pool).await.unwrap();
    for sql in [
        "INSERT INTO api_keys (id, name, secret_hash, prefix, created_at) VALUES \
         ('k_gen', 'generated', 'hash-gen', 'arbor_', 1), ('k_ci', 'ci', 'hash-ci', 'arbor_', 2)",
        "INSERT INTO sandboxes (id, template_id, state, node_id, cpu_count, memory_mb, disk_mb, metadata, \
         env_vars, envd_token, secure, allow_internet, auto_pause, auto_resume, started_at, end_at, \
         last_activity_at, envd_version) VALUES ('old', 'base', 'running', 'local', 1, 256, 512, \
         '{}', '{}', 'tok-old', 1, 0, 1, 0, 5, 6, 7, '0.0.9')",
        "INSERT INTO snapshots (id, sandbox_id, kind, state, names, template_id, node_id, cpu_count, memory_mb, \
         disk_mb, env_vars, metadata, envd_version, envd_token, created_at) VALUES ('snap', 'old', 'snapshot', \
         'ready', '[]', 'base', 'local', 1, 256, 512, '{}', '{}', '0.0.9', 'tok', 1)",
        "INSERT INTO metrics (sandbox_id, ts, cpu_count, cpu_used_pct, mem_total_mib, mem_used_mib, disk_total, \
         disk_used) VALUES ('old', 10, 1, 0.5, 256, 1, 1, 1)",
        "INSERT INTO templates (id, name, created_at) VALUES ('tpl', 'app', 1)",
        "INSERT INTO template_builds (id, template_id, version, status, cpu_count, memory_mb, disk_mb, created_at) \
         VALUES ('bld', 'tpl', 1, 'ready', 1, 256, 512, 1)",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = Store::open(&url).await.unwrap();
    let team = store.team(DEFAULT_TEAM_ID);
    let keys: Vec<(String, String, KeyRole)> =
        team.list_keys().await.unwrap().into_iter().map(|k| (k.id, k.team_id, k.role)).collect();
    assert_eq!(
        keys,
        [
            ("k_gen".into(), DEFAULT_TEAM_ID.into(), KeyRole::Admin),
            ("k_ci".into(), DEFAULT_TEAM_ID.into(), KeyRole::Member)
        ],
        "the server's own key becomes the default team's admin"
    );
    assert!(team.get_sandbox("old").await.unwrap().is_some());
    assert!(team.get_snapshot("snap").await.unwrap().is_some());
    assert_eq!(team.metrics("old", 0, 100).await.unwrap().len(), 1);
    let tpl = team.template_by_name("app").await.unwrap().expect("template kept");
    assert_eq!(tpl.team_id, DEFAULT_TEAM_ID);
    assert_eq!(team.get_build("bld").await.unwrap().unwrap().template_id, "tpl");
    assert_eq!(store.builds_of("tpl").await.unwrap().len(), 1);
    // The rebuilt tables keep their constraints: versions count on, names
    // are unique per team, and a build needs its template.
    assert_eq!(store.insert_build(&build("bld2", "tpl")).await.unwrap(), 2);
    let other = TemplateRecord { id: "tpl-b".into(), team_id: "team-b".into(), name: "app".into(), created_at: 2 };
    store.insert_template(&other).await.unwrap();
    let dup = TemplateRecord { id: "tpl-c".into(), ..other.clone() };
    assert!(matches!(store.insert_template(&dup).await, Err(Error::Conflict(_))));
    assert!(store.insert_build(&build("orphan", "no-such-template")).await.is_err());
    assert!(store.delete_template("tpl").await.unwrap());
    assert!(store.get_build("bld").await.unwrap().is_none());
    store.close().await;
    // Reopening finds every migration applied.
    let store = Store::open(&url).await.unwrap();
    assert!(store.get_template("tpl-b").await.unwrap().is_some());
    store.close().await;
}
