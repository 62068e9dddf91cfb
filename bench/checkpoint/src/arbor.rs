//! The Arbor side: `Driver::checkpoint` / `Driver::restore` of the Linux
//! driver (the code the node runs), on a sandbox filled like the runc
//! container and probed the same way.
//!
//! The driver gets its own data dir, cgroup parent, address pool, nftables
//! table and veth prefix, so `Driver::reconcile` cleans up exactly the
//! benchmark's sandboxes and nothing of a node or test suite beside it.

use crate::{
    envd::{self, Target},
    mem,
    result::{Plan, Row, SizeResult},
    PREFIX,
};
use anyhow::{bail, Context};
use arbor_runtime::{
    linux::{Config, LinuxDriver},
    After, Driver, Sandbox, SandboxSpec,
};
use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// The sandboxes' parent cgroup: the benchmark's own.
const CGROUP_PARENT: &str = "arbor-bench-ckpt";

/// The benchmark's own network settings: pool, table, veth prefix and pin
/// dir that no test, node or other benchmark uses. The prefix does not start
/// with `arb`, so no `arb*` wildcard rule of another table matches its veths.
pub fn net_config() -> anyhow::Result<arbor_net::Config> {
    Ok(arbor_net::Config {
        pool: "10.205.0.0/16".parse()?,
        netns_dir: PathBuf::from("/run/arbor-bench-ckpt/netns"),
        ifname_prefix: "bnck".into(),
        table: "arborbenchck".into(),
        ..arbor_net::Config::default()
    })
}

/// The driver, on the benchmark's data dir; it becomes this process's sub-reaper.
pub async fn driver(
    data_dir: PathBuf,
    envd: PathBuf,
    launcher: PathBuf,
    disk_limits: bool,
) -> anyhow::Result<Arc<LinuxDriver>> {
    let disk = disk_limits.then(arbor_disk::Config::default);
    let cfg = Config { data_dir, envd, launcher, network: Some(net_config()?), disk };
    let d = LinuxDriver::new(cfg).await.context("starting the driver")?.with_cgroup_parent(CGROUP_PARENT);
    Ok(Arc::new(d))
}

/// Removes every sandbox and checkpoint of the benchmark (ours or a killed
/// run's) and its network table; returns how many there were.
pub async fn cleanup(d: &LinuxDriver) -> anyhow::Result<usize> {
    let mut found = d.reconcile(&HashSet::new()).await?.len();
    for name in d.checkpoints().await? {
        d.remove_checkpoint(&name).await?;
        found += 1;
    }
    Ok(found)
}

/// How the sandboxes are made.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Template layers, top first.
    pub layers: Vec<PathBuf>,
}

impl Setup {
    /// A spec with the runc container's limits: 1 vCPU, the filled size +
    /// 512 MiB, 256 pids; networked with the internet off (the driver
    /// restores only sandboxes with a network: the restore is handed a
    /// prepared network namespace).
    fn spec(&self, id: &str, size_mib: u64) -> SandboxSpec {
        SandboxSpec {
            id: id.to_string(),
            layers: self.layers.clone(),
            hostname: id.to_string(),
            env: BTreeMap::new(),
            access_token: None,
            vcpus: 1,
            memory_mib: size_mib + 512,
            pids: 256,
            disk_mib: None,
            network: Some(arbor_net::Policy::default()),
        }
    }
}

/// Where the host reaches a sandbox's envd.
fn target(sb: &Sandbox) -> Target {
    sb.host_addr.map_or(Target::Netns(sb.init_pid), Target::Addr)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// All series at one memory size, on one sandbox that is filled once.
pub async fn series(d: &Arc<LinuxDriver>, s: &Setup, p: &Plan, stop: &AtomicBool) -> anyhow::Result<SizeResult> {
    let id = format!("{PREFIX}{}", p.size_mib);
    let sb = d.create(&s.spec(&id, p.size_mib)).await.with_context(|| format!("creating {id}"))?;
    let out = series_on(d, s, sb, p, stop).await;
    // Gone already if a pause failed half-way.
    let _ = d.destroy(&id).await;
    out
}

async fn series_on(
    d: &Arc<LinuxDriver>,
    s: &Setup,
    mut sb: Sandbox,
    p: &Plan,
    stop: &AtomicBool,
) -> anyhow::Result<SizeResult> {
    let (t, size) = (target(&sb), p.size_mib);
    blocking(move || envd::fill(t, size)).await?;
    let spec = s.spec(&sb.id, p.size_mib);
    let mut r = SizeResult::default();
    for i in 0..p.warmup + p.runs {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        // A quick pause and resume, as the node does it: the pause answers
        // once the sandbox is frozen; a resume before the memory was
        // released is a thaw.
        let t0 = Instant::now();
        d.freeze(&sb.id).await.context("pause (freeze)")?;
        let freeze = t0.elapsed();
        let t1 = Instant::now();
        d.thaw(&sb.id).await.context("quick resume (thaw)")?;
        let t = target(&sb);
        blocking(move || envd::first_command(t)).await.context("first command after thaw")?;
        let thaw = t1.elapsed();
        // A pause that lasts: frozen, the durable checkpoint written right
        // after (the node's background half), the memory released (the
        // node does that after its grace period), then a resume from the image.
        let name = format!("{PREFIX}pause-{}-{i}", p.size_mib);
        let t2 = Instant::now();
        d.freeze(&sb.id).await.context("pause (freeze)")?;
        let ck =
            d.checkpoint(&sb.id, &name, After::Frozen).await.context("pause (checkpoint of the frozen sandbox)")?;
        let durable = t2.elapsed();
        d.destroy(&sb.id).await.context("releasing the paused sandbox")?;
        let t3 = Instant::now();
        sb = d.restore(&spec, &name).await.context("resume (restore)")?;
        let restore = t3.elapsed();
        let t = target(&sb);
        blocking(move || envd::first_command(t)).await.context("first command after resume")?;
        let first = t3.elapsed();
        d.remove_checkpoint(&name).await?;
        if i >= p.warmup {
            r.push(Row::PauseReturns, freeze);
            r.push(Row::Freeze, freeze);
            r.push(Row::ThawFirst, thaw);
            r.push(Row::Durable, durable);
            r.push(Row::Restore, restore);
            r.push(Row::RestoreFirst, first);
            r.image_bytes.push(ck.image_bytes);
        }
    }
    let cg = mem::memory_dir(&format!("{CGROUP_PARENT}/{}", sb.id));
    for i in 0..p.warmup + p.clone_runs {
        for count in [1, p.clones] {
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let last = i + 1 == p.warmup + p.clone_runs && count > 1;
            if last {
                let (cg, settle) = (cg.clone(), p.settle);
                r.mem_one = Some(blocking(move || mem::settled(&[cg], settle, false)).await?);
            }
            let name = format!("{PREFIX}clone-{}-{i}-{count}", p.size_mib);
            let ids: Vec<String> = (0..count).map(|k| format!("{}-c{i}-{k}", sb.id)).collect();
            let t0 = Instant::now();
            let cloned = clone_n(d, s, &sb, &name, p.size_mib, &ids).await;
            let took = t0.elapsed();
            let outcome = match cloned {
                Ok(stopped_ms) => {
                    if i >= p.warmup {
                        r.push(Row::CloneSuspend, Duration::from_millis(stopped_ms));
                        r.push(if count == 1 { Row::Clone1 } else { Row::CloneN }, took);
                    }
                    if last {
                        let dirs: Vec<PathBuf> =
                            ids.iter().map(|id| mem::memory_dir(&format!("{CGROUP_PARENT}/{id}"))).collect();
                        let (settle, ksm) = (p.settle, p.ksm);
                        match blocking(move || mem::settled(&dirs, settle, ksm)).await {
                            Ok(u) => {
                                r.mem_many = Some(u);
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    } else {
                        Ok(())
                    }
                }
                Err(e) => Err(e),
            };
            for id in &ids {
                let _ = d.destroy(id).await;
            }
            let _ = d.remove_checkpoint(&name).await;
            outcome?;
        }
    }
    Ok(r)
}

/// Checkpoints `sb` and lets it run on, then restores `count` clones of it at
/// once as `ids`, each until it answered its first
/// command. Returns how long the origin was stopped, in ms.
async fn clone_n(
    d: &Arc<LinuxDriver>,
    s: &Setup,
    sb: &Sandbox,
    name: &str,
    size_mib: u64,
    ids: &[String],
) -> anyhow::Result<u64> {
    let ck = d.checkpoint(&sb.id, name, After::Continue).await.context("clone: checkpoint of the origin")?;
    let mut set = tokio::task::JoinSet::new();
    for id in ids {
        let (d, spec, name) = (Arc::clone(d), s.spec(id, size_mib), name.to_string());
        set.spawn(async move {
            let clone = d.restore(&spec, &name).await.with_context(|| format!("restoring clone {}", spec.id))?;
            let t = target(&clone);
            blocking(move || envd::first_command(t)).await.with_context(|| format!("first command in {}", spec.id))
        });
    }
    let mut first_err = None;
    while let Some(done) = set.join_next().await {
        if let Err(e) = done.map_err(anyhow::Error::from).and_then(|r| r) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(ck.stopped_ms),
    }
}
