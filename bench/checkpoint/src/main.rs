//! `arbor-bench-checkpoint`: pause, resume and clone of sandboxes holding
//! 10 MiB, 100 MiB and 1 GiB of memory, with `runc checkpoint` / `runc
//! restore` (Debian's runc driving the CRIU Arbor builds) measured the same
//! way in the same run on the same root file system. Run by hand as root
//! (see bench/README.md); never part of the test suite.
//!
//! Both sides run the same static envd as PID 1; a Python process started
//! through envd holds the memory (random bytes, touched once); the "first
//! command" is `/bin/true` through envd's `process.Process/Start`, answered
//! with its end event.
//!
//! Everything it creates carries the `bench-` prefix or lives in its own
//! dirs and cgroup parent; it removes its leftovers (also a killed run's)
//! when it starts and when it ends, Ctrl-C included.

mod arbor;
mod envd;
mod mem;
mod report;
mod result;
mod runc;
mod stats;

use anyhow::{bail, Context};
use clap::Parser;
use result::Plan;
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

/// Every container and sandbox id of the benchmark starts with this.
pub const PREFIX: &str = "bench-ckpt-";

/// Benchmark of pause, resume and clone against runc checkpoint/restore.
#[derive(Debug, Parser)]
pub struct Args {
    /// Memory sizes held by the sandbox, in MiB.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1024")]
    sizes: Vec<u64>,
    /// Measured pause → resume cycles per side at sizes below 1 GiB.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Measured pause → resume cycles per side at 1 GiB and above.
    #[arg(long, default_value_t = 5)]
    runs_large: usize,
    /// Measured 1-clone and N-clone cycles per side at sizes below 1 GiB.
    #[arg(long, default_value_t = 5)]
    clone_runs: usize,
    /// Measured 1-clone and N-clone cycles per side at 1 GiB and above
    /// (N clones of 1 GiB need N GiB of free memory).
    #[arg(long, default_value_t = 1)]
    clone_runs_large: usize,
    /// Clones in the many-clones cycle.
    #[arg(long, default_value_t = 10)]
    clones: usize,
    /// Unmeasured cycles of each kind first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Seconds of quiet before memory is read.
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
    /// Run the kernel's same-page merging (ksmd, fast) until it settles
    /// before reading the clones' memory, on both sides; the host's KSM
    /// settings are put back right after. Arbor marks restored memory
    /// mergeable; runc does not.
    #[arg(long)]
    ksm: bool,
    /// Run the Arbor side with disk limits, as `arbor server` does by
    /// default: every sandbox and checkpoint a btrfs subvolume (on an image
    /// in the data dir), so copies are O(1) snapshots instead of file copies.
    #[arg(long)]
    disk_limits: bool,
    /// Skip the runc side.
    #[arg(long)]
    no_runc: bool,
    /// Skip the Arbor side.
    #[arg(long)]
    no_arbor: bool,
    /// Do not apt-get install runc when it is missing.
    #[arg(long)]
    no_install: bool,
    /// The CRIU runc is told to use (the one Arbor uses).
    #[arg(long, default_value = "/usr/local/sbin/criu")]
    criu: PathBuf,
    /// The node data dir holding `refs/templates` and `layers`.
    #[arg(long, default_value = "/var/lib/arbor")]
    arbor_dir: PathBuf,
    /// The template both sides start from.
    #[arg(long, default_value = "base")]
    template: String,
    /// The benchmark's own data dir (bundles, images, sandboxes); removed at the end.
    #[arg(long, default_value = "/var/lib/arbor-bench-checkpoint")]
    data_dir: PathBuf,
    /// The static arbor-envd.
    #[arg(long, env = "ARBOR_ENVD_BIN")]
    envd: Option<PathBuf>,
    /// arbor-launch (default: next to this program).
    #[arg(long)]
    launcher: Option<PathBuf>,
}

impl Args {
    fn plan(&self, size_mib: u64) -> Plan {
        let large = size_mib >= 1024;
        Plan {
            size_mib,
            warmup: self.warmup,
            runs: if large { self.runs_large } else { self.runs },
            clone_runs: if large { self.clone_runs_large } else { self.clone_runs },
            clones: self.clones,
            settle: Duration::from_secs(self.settle_secs),
            ksm: self.ksm,
        }
    }
}

/// The template's layer dirs, top first, from `refs/templates/<name>.json`
/// (which lists them bottom first).
fn template_layers(arbor_dir: &Path, name: &str) -> anyhow::Result<Vec<PathBuf>> {
    let path = arbor_dir.join("refs/templates").join(format!("{name}.json"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)?;
    let Some(layers) = json["layers"].as_array() else { bail!("{}: no layers", path.display()) };
    let mut dirs = Vec::new();
    for l in layers.iter().rev() {
        let Some(l) = l.as_str() else { bail!("{}: a layer is not a string", path.display()) };
        dirs.push(arbor_dir.join("layers").join(l).join("rootfs"));
    }
    Ok(dirs)
}

/// Installs Debian's runc (without recommends: its `criu` is not the one used) if missing.
fn ensure_runc(install: bool) -> anyhow::Result<()> {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("runc").is_file()));
    if found {
        return Ok(());
    }
    if !install {
        bail!("runc not installed (apt-get install --no-install-recommends runc, or --no-runc)");
    }
    eprintln!("installing runc with apt-get");
    let st = Command::new("apt-get").args(["install", "-y", "-q", "--no-install-recommends", "runc"]).status()?;
    if !st.success() {
        bail!("apt-get install runc: {st}");
    }
    Ok(())
}

/// The first line of `<bin> --version`-like output.
fn version(bin: &Path, arg: &str) -> String {
    Command::new(bin)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect::<Vec<_>>().join(" ").into()
        })
        .unwrap_or_default()
}

fn header(args: &Args, layers: &[PathBuf]) -> String {
    let cmd: Vec<String> = std::env::args().collect();
    let uname = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or_else(|| "?".into(), |k| format!("{:.1} GiB", k / 1024.0 / 1024.0));
    let cgroup = if Path::new("/sys/fs/cgroup/memory").is_dir() { "v1 (memory controller)" } else { "v2" };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut h = String::new();
    let _ = writeln!(h, "Machine: {cpus} CPUs, {total}, Linux {uname}, cgroup {cgroup}.");
    let _ =
        writeln!(h, "CRIU: {} · runc: {}.", version(&args.criu, "--version"), version(Path::new("runc"), "--version"));
    let _ = writeln!(
        h,
        "Template `{}`: {} layer(s), top {}.",
        args.template,
        layers.len(),
        layers.first().map(|l| l.display().to_string()).unwrap_or_default()
    );
    if args.ksm {
        let _ = writeln!(
            h,
            "`--ksm`: before the clones' memory was read, ksmd ran (pages_to_scan 5000) until merging settled (three \
             full scans, then until a scan merged nothing more); the host's settings were put back after."
        );
    }
    let _ = writeln!(h, "Command: `{}`", cmd.join(" "));
    h
}

/// Sets `stop` on the first SIGINT or SIGTERM.
async fn interrupted(stop: Arc<AtomicBool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("interrupted: cleaning up");
    stop.store(true, Ordering::Relaxed);
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root (namespaces, cgroups, mounts, CRIU)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(args))
}

/// The Arbor series, size by size, into `report`; always cleans up.
async fn arbor_side(
    args: &Args,
    layers: Vec<PathBuf>,
    envd: PathBuf,
    launcher: PathBuf,
    stop: &AtomicBool,
    report: &mut report::Report,
) -> anyhow::Result<()> {
    let d = arbor::driver(args.data_dir.join("arbor"), envd, launcher, args.disk_limits).await?;
    let found = arbor::cleanup(&d).await?;
    if found > 0 {
        eprintln!("removed {found} leftovers of an earlier run");
    }
    let setup = arbor::Setup { layers };
    let mut outcome = Ok(());
    for &size in &args.sizes {
        let p = args.plan(size);
        eprintln!("arbor: {size} MiB: {} pause/resume runs, {} clone runs", p.runs, p.clone_runs);
        let work = arbor::series(&d, &setup, &p, stop);
        let r = tokio::select! {
            r = work => r,
            () = wait_stop(stop) => Err(anyhow::anyhow!("interrupted")),
        };
        match r {
            Ok(r) => {
                report.arbor.insert(size, r);
            }
            Err(e) => {
                outcome = Err(e.context(format!("at {size} MiB")));
                break;
            }
        }
    }
    let cleaned = arbor::cleanup(&d).await;
    // The disk image's mount is the benchmark's too.
    let cleaned = match (cleaned, Arc::try_unwrap(d)) {
        (Ok(n), Ok(d)) if args.disk_limits => d.decommission().await.map(|()| n).map_err(Into::into),
        (other, _) => other,
    };
    let net = arbor::net_config()?;
    // The table and pin dir are the benchmark's own; an empty table left
    // behind would still be a leak.
    let _ = Command::new(&net.nft).args(["delete", "table", "inet", &net.table]).status();
    let _ = std::fs::remove_dir(&net.netns_dir);
    if let Some(parent) = net.netns_dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    for ctrl in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir(ctrl.path().join("arbor-bench-ckpt"));
    }
    cleaned.context("final cleanup")?;
    outcome
}

async fn wait_stop(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let layers = template_layers(&args.arbor_dir, &args.template)?;
    let envd = args.envd.clone().context("--envd or ARBOR_ENVD_BIN: the static arbor-envd")?;
    let stop = Arc::new(AtomicBool::new(false));
    let signals = tokio::spawn(interrupted(Arc::clone(&stop)));
    let mut report = report::Report {
        header: header(&args, &layers),
        load_start: report::loadavg(),
        clones: args.clones,
        ..Default::default()
    };
    std::fs::create_dir_all(&args.data_dir)?;
    let mut outcome = Ok(());

    // runc first: the Arbor driver makes this process a sub-reaper, which
    // would adopt the containers runc restores.
    if !args.no_runc {
        ensure_runc(!args.no_install)?;
        let rc = runc::Runc::new(args.data_dir.join("runc"), layers.clone(), envd.clone(), args.criu.clone())?;
        rc.cleanup()?;
        let plans: Vec<Plan> = args.sizes.iter().map(|&s| args.plan(s)).collect();
        let stop2 = Arc::clone(&stop);
        let (rc, results) = tokio::task::spawn_blocking(move || {
            let mut results = Vec::new();
            for p in plans {
                eprintln!("runc: {} MiB: {} pause/resume runs, {} clone runs", p.size_mib, p.runs, p.clone_runs);
                let r = rc.series(&p, &stop2);
                let failed = r.is_err();
                results.push((p.size_mib, r));
                if failed {
                    break;
                }
            }
            (rc, results)
        })
        .await?;
        for (size, r) in results {
            match r {
                Ok(r) => {
                    report.runc.insert(size, r);
                }
                Err(e) => {
                    report.notes.push(format!("runc at {size} MiB failed: {e:#}"));
                    outcome = Err(e);
                }
            }
        }
        let cleaned = rc.cleanup().and_then(|()| rc.remove());
        if let Err(e) = cleaned {
            report.notes.push(format!("runc cleanup: {e:#}"));
        }
    }

    if !args.no_arbor && !stop.load(Ordering::Relaxed) {
        let launcher = match &args.launcher {
            Some(l) => l.clone(),
            None => std::env::current_exe()?.with_file_name("arbor-launch"),
        };
        let arbor = arbor_side(&args, layers, envd, launcher, &stop, &mut report).await;
        if let Err(e) = arbor {
            report.notes.push(format!("Arbor: {e:#}"));
            outcome = outcome.and(Err(e));
        }
    }

    let _ = std::fs::remove_dir_all(&args.data_dir);
    signals.abort();
    println!("{}", report.render());
    outcome
}
