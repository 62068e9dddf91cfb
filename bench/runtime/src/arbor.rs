//! The Arbor side: sandboxes through `LinuxDriver`, timed.

use crate::{
    mem::{CgroupMem, MemInfo, ProcMem},
    probe::{self, Target},
    stats::Samples,
};
use anyhow::Context;
use arbor_runtime::{
    linux::{Config, LinuxDriver, CGROUP_PARENT},
    Driver, Sandbox, SandboxSpec,
};
use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

/// Every sandbox of the benchmark has an id starting with this: the cleanup
/// touches nothing else in the shared `arbor` cgroup parent.
pub const PREFIX: &str = "bench-";

/// The benchmark's own network settings: pool, table, veth prefix and pin
/// dir that no test or node uses. The prefix does not start with `arb`,
/// so no `arb*` wildcard rule of another table matches its veths.
pub fn net_config() -> anyhow::Result<arbor_net::Config> {
    Ok(arbor_net::Config {
        pool: "10.201.0.0/16".parse()?,
        netns_dir: PathBuf::from("/run/arbor-bench/netns"),
        ifname_prefix: "bnch".into(),
        table: "arborbench".into(),
        ..arbor_net::Config::default()
    })
}

/// What a sandbox of the benchmark is made of.
#[derive(Debug, Clone)]
pub struct Template {
    /// Layers, top first.
    pub layers: Vec<PathBuf>,
}

impl Template {
    /// A sandbox spec on this template: 1 vCPU, 512 MiB, 256 pids, with or
    /// without a network (internet off).
    pub fn spec(&self, id: &str, network: bool) -> SandboxSpec {
        SandboxSpec {
            id: id.to_string(),
            layers: self.layers.clone(),
            hostname: id.to_string(),
            env: BTreeMap::new(),
            access_token: None,
            vcpus: 1,
            memory_mib: 512,
            pids: 256,
            disk_mib: None,
            network: network.then(arbor_net::Policy::default),
        }
    }
}

/// Makes the driver; it becomes this process's sub-reaper.
pub async fn driver(data_dir: PathBuf, envd: PathBuf, launcher: PathBuf) -> anyhow::Result<Arc<LinuxDriver>> {
    let cfg = Config { data_dir, envd, launcher, network: Some(net_config()?), disk: None };
    Ok(Arc::new(LinuxDriver::new(cfg).await.context("starting the driver")?))
}

/// Removes every trace of benchmark sandboxes, ours or a killed run's:
/// dirs, cgroups (and their processes), namespaces, veths and rules. Not
/// `Driver::reconcile`, which would also remove the sandboxes of tests and
/// nodes that share the `arbor` cgroup parent. Returns how many it found.
pub async fn cleanup(driver: &LinuxDriver) -> anyhow::Result<usize> {
    let mut found = 0;
    let mut first_err = None;
    for id in driver.list().await? {
        found += 1;
        if let Err(e) = driver.destroy(&id).await {
            first_err.get_or_insert(anyhow::anyhow!("destroying {id}: {e}"));
        }
    }
    let cgroups = arbor_cgroups::Hierarchy::detect()?;
    for name in cgroups.list(CGROUP_PARENT)?.into_iter().filter(|n| n.starts_with(PREFIX)) {
        found += 1;
        if let Err(e) = cgroups.open(CGROUP_PARENT, &name).and_then(|cg| cg.destroy()) {
            first_err.get_or_insert(anyhow::anyhow!("removing cgroup {name}: {e}"));
        }
    }
    if let Some(net) = driver.network() {
        found += net.reconcile(&HashSet::new()).await?.len();
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(found),
    }
}

/// Where the host reaches a sandbox's envd.
fn target(sb: &Sandbox) -> Target {
    sb.host_addr.map_or(Target::Netns(sb.init_pid), Target::Addr)
}

/// Asks envd for `/health` off the async threads.
async fn health(sb: &Sandbox) -> anyhow::Result<()> {
    let t = target(sb);
    tokio::task::spawn_blocking(move || probe::health(t)).await?
}

/// Timings of create → destroy cycles.
#[derive(Debug, Default)]
pub struct Cycle {
    /// `Driver::create`, which returns once envd signals that it listens.
    pub create: Samples,
    /// create plus the first answered `GET /health`.
    pub first_answer: Samples,
    /// `Driver::destroy`.
    pub destroy: Samples,
    /// Wall time of each concurrent batch (create all, then destroy all).
    pub batch: Samples,
}

/// `runs` sequential create → health → destroy cycles after `warmup` unmeasured ones.
/// `pause` between cycles keeps the kernel's deferred work of one destroy
/// (namespace cleanup) out of the next create.
pub async fn sequential(
    d: &LinuxDriver,
    t: &Template,
    net: bool,
    warmup: usize,
    runs: usize,
    pause: Duration,
) -> anyhow::Result<Cycle> {
    let mut c = Cycle::default();
    for i in 0..warmup + runs {
        tokio::time::sleep(pause).await;
        let id = format!("{PREFIX}seq-{}-{i}", if net { "net" } else { "lo" });
        let t0 = Instant::now();
        let sb = d.create(&t.spec(&id, net)).await.with_context(|| format!("creating {id}"))?;
        let t1 = Instant::now();
        let answered = health(&sb).await;
        let t2 = Instant::now();
        d.destroy(&id).await.with_context(|| format!("destroying {id}"))?;
        let t3 = Instant::now();
        answered.with_context(|| format!("{id} did not answer"))?;
        if i >= warmup {
            c.create.push(t1 - t0);
            c.first_answer.push(t2 - t0);
            c.destroy.push(t3 - t2);
        }
    }
    Ok(c)
}

/// `rounds` batches of `width` creates at once (each followed by a health
/// check), then the batch destroyed at once.
pub async fn concurrent(
    d: &Arc<LinuxDriver>,
    t: &Template,
    net: bool,
    width: usize,
    rounds: usize,
) -> anyhow::Result<Cycle> {
    let mut c = Cycle::default();
    for r in 0..rounds {
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..width {
            let (d, spec) = (Arc::clone(d), t.spec(&format!("{PREFIX}par-{r}-{i}"), net));
            set.spawn(async move {
                let t0 = Instant::now();
                let sb = d.create(&spec).await.with_context(|| format!("creating {}", spec.id));
                let t1 = Instant::now();
                let answered = match &sb {
                    Ok(sb) => health(sb).await,
                    Err(_) => Ok(()),
                };
                (spec.id, sb, answered, t1 - t0, t0.elapsed())
            });
        }
        let mut ids = Vec::new();
        let mut first_err = None;
        while let Some(joined) = set.join_next().await {
            let (id, sb, answered, create, first) = joined?;
            match sb.and_then(|_| answered.with_context(|| format!("{id} did not answer"))) {
                Ok(()) => {
                    c.create.push(create);
                    c.first_answer.push(first);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
            ids.push(id);
        }
        let mut set = tokio::task::JoinSet::new();
        for id in ids {
            let d = Arc::clone(d);
            set.spawn(async move {
                let t0 = Instant::now();
                let r = d.destroy(&id).await;
                (id, r, t0.elapsed())
            });
        }
        while let Some(joined) = set.join_next().await {
            let (id, r, took) = joined?;
            match r {
                Ok(()) => c.destroy.push(took),
                // A create that failed left nothing to destroy.
                Err(arbor_runtime::Error::NotFound(_)) => {}
                Err(e) => {
                    first_err.get_or_insert(anyhow::anyhow!("destroying {id}: {e}"));
                }
            }
        }
        c.batch.push(start.elapsed());
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    Ok(c)
}

/// Host memory with `count` idle sandboxes, relative to none.
#[derive(Debug, Clone, Copy)]
pub struct MemPoint {
    /// Sandboxes alive.
    pub count: usize,
    /// Drop of `MemAvailable` since the baseline, KiB.
    pub available_drop: i64,
    /// Growth of kernel memory (slab, stacks, page tables), KiB.
    pub kernel_growth: i64,
    /// Sum over the sandboxes' memory cgroups.
    pub cgroup: CgroupMem,
    /// Mean envd memory.
    pub envd: ProcMem,
}

/// What the ramp found.
#[derive(Debug, Default)]
pub struct Ramp {
    /// Memory at every checkpoint.
    pub points: Vec<MemPoint>,
    /// Sandboxes held at once at the top.
    pub held: usize,
    /// How many of those answered `/health` at the first try (via their
    /// host address when networked).
    pub answered: usize,
    /// How many more answered a second, lone try.
    pub answered_retry: usize,
    /// How many of the rest answered inside their own network namespace.
    pub answered_inside: usize,
    /// Host neighbour-table overflows (`table_fulls`) during the check.
    pub neigh_overflows: u64,
    /// Why the ramp stopped below its target, if it did.
    pub stopped: Option<String>,
    /// `Driver::create` along the ramp (latency as the host fills up).
    pub create: Samples,
    /// `Driver::destroy` of all of them, one after the other.
    pub destroy: Samples,
}

async fn mem_point(count: usize, base: MemInfo, sandboxes: &[Sandbox], settle: Duration) -> anyhow::Result<MemPoint> {
    // envd's blocking threads exit after 0.5 s idle; let the sandboxes go quiet.
    tokio::time::sleep(settle).await;
    let now = MemInfo::read()?;
    let mut cg = CgroupMem::default();
    let mut envd = ProcMem::default();
    for sb in sandboxes {
        let m = CgroupMem::read(&sb.id);
        (cg.usage, cg.anon, cg.file) = (cg.usage + m.usage, cg.anon + m.anon, cg.file + m.file);
        let p = ProcMem::read(sb.init_pid).unwrap_or_default();
        (envd.rss, envd.pss, envd.private) = (envd.rss + p.rss, envd.pss + p.pss, envd.private + p.private);
    }
    let n = i64::try_from(sandboxes.len().max(1))?;
    envd = ProcMem { rss: envd.rss / n, pss: envd.pss / n, private: envd.private / n };
    Ok(MemPoint {
        count,
        available_drop: base.available - now.available,
        kernel_growth: now.kernel - base.kernel,
        cgroup: cg,
        envd,
    })
}

/// Creates idle sandboxes one after the other up to `max`, measuring memory
/// every `step`; checks that every one answers; destroys them all.
///
/// With `static_neigh`, each networked sandbox gets permanent neighbour
/// entries (see [`static_neigh`]).
pub async fn ramp(
    d: &LinuxDriver,
    t: &Template,
    net: bool,
    max: usize,
    step: usize,
    static_neigh: bool,
) -> anyhow::Result<Ramp> {
    let settle = Duration::from_secs(3);
    let mut r = Ramp::default();
    tokio::time::sleep(settle).await;
    let base = MemInfo::read()?;
    let mut alive: Vec<Sandbox> = Vec::new();
    let outcome = async {
        for i in 0..max {
            let id = format!("{PREFIX}idle-{i}");
            let t0 = Instant::now();
            match d.create(&t.spec(&id, net)).await {
                Ok(sb) => {
                    r.create.push(t0.elapsed());
                    alive.push(sb);
                    if net && static_neigh {
                        self::static_neigh(d, &id).await.with_context(|| format!("neighbours of {id}"))?;
                    }
                }
                Err(e) => {
                    r.stopped = Some(format!("create #{} failed: {e}", i + 1));
                    break;
                }
            }
            if alive.len() % step == 0 {
                r.points.push(mem_point(alive.len(), base, &alive, settle).await?);
                eprintln!("  {} idle sandboxes", alive.len());
            }
        }
        if alive.len() % step != 0 {
            r.points.push(mem_point(alive.len(), base, &alive, settle).await?);
        }
        r.held = alive.len();
        let overflows = crate::mem::neigh_table_fulls();
        let mut failed = Vec::new();
        for chunk in alive.chunks(16) {
            let checks: Vec<_> = chunk
                .iter()
                .map(|sb| {
                    let t = target(sb);
                    tokio::task::spawn_blocking(move || probe::health(t))
                })
                .collect();
            for (sb, check) in chunk.iter().zip(checks) {
                match check.await.map_err(anyhow::Error::from).and_then(|r| r) {
                    Ok(()) => r.answered += 1,
                    Err(e) => {
                        eprintln!("  {} did not answer: {e:#}", sb.id);
                        failed.push(sb);
                    }
                }
            }
        }
        // A second chance one at a time, then envd asked inside its own
        // namespace: tells a dead envd from a host path that failed.
        for sb in failed {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if health(sb).await.is_ok() {
                r.answered_retry += 1;
                continue;
            }
            let inside = Target::Netns(sb.init_pid);
            if tokio::task::spawn_blocking(move || probe::health(inside)).await?.is_ok() {
                r.answered_inside += 1;
            }
        }
        r.neigh_overflows = crate::mem::neigh_table_fulls() - overflows;
        anyhow::Ok(())
    }
    .await;
    let mut first_err = outcome.err();
    for sb in &alive {
        let t0 = Instant::now();
        match d.destroy(&sb.id).await {
            Ok(()) => r.destroy.push(t0.elapsed()),
            Err(e) => {
                first_err.get_or_insert(anyhow::anyhow!("destroying {}: {e}", sb.id));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(r),
    }
}

/// The host-side steps of create and destroy, each measured alone.
#[derive(Debug, Default)]
pub struct Breakdown {
    /// `Hierarchy::create` of a sandbox cgroup with limits.
    pub cgroup_create: Samples,
    /// `Cgroup::destroy` of that cgroup with one process in it (the kill path).
    pub cgroup_destroy: Samples,
    /// `Network::create`: namespace, veth, addresses, rules, link up.
    pub net_create: Samples,
    /// `Network::destroy`.
    pub net_destroy: Samples,
}

/// `runs` rounds of the cgroup and network steps on their own.
pub async fn breakdown(d: &LinuxDriver, runs: usize) -> anyhow::Result<Breakdown> {
    let cgroups = arbor_cgroups::Hierarchy::detect()?;
    let limits = arbor_cgroups::Limits { cpus: Some(1.0), memory_mib: Some(512), pids: Some(256) };
    let mut b = Breakdown::default();
    for i in 0..runs {
        let id = format!("{PREFIX}step-{i}");
        let t0 = Instant::now();
        let cg = cgroups.create(CGROUP_PARENT, &id, &limits)?;
        b.cgroup_create.push(t0.elapsed());
        let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().context("starting sleep")?;
        let added = cg.add_process(sleeper.id());
        let t0 = Instant::now();
        let destroyed = cg.destroy();
        let took = t0.elapsed();
        // Killed by the destroy, or now if it never joined.
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        added?;
        destroyed?;
        b.cgroup_destroy.push(took);
        if let Some(net) = d.network() {
            let t0 = Instant::now();
            net.create(&id, arbor_net::Policy::default()).await?;
            b.net_create.push(t0.elapsed());
            let t0 = Instant::now();
            net.destroy(&id).await?;
            b.net_destroy.push(t0.elapsed());
        }
    }
    Ok(b)
}

/// Adds the two neighbour entries a networked sandbox's traffic needs as
/// permanent ones: its address on the host veth, and the gateway inside.
/// Permanent entries do not count against the host-wide neighbour-table
/// limits; this tests that remedy from outside `arbor-net`. They go with
/// the veth.
async fn static_neigh(d: &LinuxDriver, id: &str) -> anyhow::Result<()> {
    let net = d.network().context("no networking")?.get(id).await.context("no network for the sandbox")?;
    let host_mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", net.host_ifname))?;
    let ns = format!("--net={}", net.netns_path.display());
    let out = tokio::process::Command::new("nsenter").args([&ns, "ip", "-o", "link", "show", "eth0"]).output().await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let inner_mac = text.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).context("no MAC on eth0")?;
    let (inner, gateway) = (net.inner_addr.to_string(), net.inner_gateway.to_string());
    let host = ["neigh", "replace", &inner, "lladdr", inner_mac, "dev", &net.host_ifname, "nud", "permanent"];
    let inside =
        [&ns, "ip", "neigh", "replace", &gateway, "lladdr", host_mac.trim(), "dev", "eth0", "nud", "permanent"];
    for (prog, args) in [("ip", &host[..]), ("nsenter", &inside[..])] {
        let st = tokio::process::Command::new(prog).args(args).status().await?;
        if !st.success() {
            anyhow::bail!("{prog} {}: {st}", args.join(" "));
        }
    }
    Ok(())
}
