//! `arbor-bench-runtime`: how fast Arbor's Linux driver creates and destroys
//! sandboxes of the base template, what an idle one costs the host, how many
//! it holds at once, and the same start measured with `runc` and `runsc` on
//! the same root file system. Run by hand as root (see bench/README.md);
//! never part of the test suite.
//!
//! Everything it creates carries the `bench-` prefix or lives in its own
//! dirs, pool, nftables table and veth prefix; it removes its leftovers
//! (also a killed run's) when it starts and when it ends, Ctrl-C included.
//!
//! Crates: the workspace's runtime, network and cgroup crates; `clap` for
//! flags, `tokio` for the async driver, `nix` for mounts, poll and setns.

mod arbor;
mod mem;
mod oci;
mod probe;
mod report;
mod stats;

use anyhow::{bail, Context};
use clap::Parser;
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

/// Benchmark of the sandbox runtime against runc and runsc.
#[derive(Debug, Parser)]
struct Args {
    /// Sequential create → destroy cycles per mode (loopback-only, networked).
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Unmeasured cycles before each measured series.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Pause before each sequential cycle, in ms (0: back to back).
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// Sandboxes created at once in the concurrent series.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Batches in the concurrent series.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Idle sandboxes the ramp goes up to (0: no ramp).
    #[arg(long, default_value_t = 600)]
    max_sandboxes: usize,
    /// Memory is measured every this many sandboxes on the ramp.
    #[arg(long, default_value_t = 100)]
    step: usize,
    /// Ramp with loopback-only sandboxes instead of networked ones.
    #[arg(long)]
    ramp_loopback: bool,
    /// Give each networked sandbox on the ramp permanent neighbour entries
    /// (tests the remedy for the host neighbour-table overflow).
    #[arg(long)]
    static_neigh: bool,
    /// runc / runsc cycles (0: no peers).
    #[arg(long, default_value_t = 50)]
    oci_runs: usize,
    /// Extra global runsc flags, e.g. `--platform=kvm` (repeatable).
    #[arg(long = "runsc-flag", allow_hyphen_values = true)]
    runsc_flags: Vec<String>,
    /// Do not apt-get install runc / runsc when missing.
    #[arg(long)]
    no_install: bool,
    /// The node data dir holding `refs/templates` and `layers`.
    #[arg(long, default_value = "/var/lib/arbor")]
    arbor_dir: PathBuf,
    /// The template to start.
    #[arg(long, default_value = "base")]
    template: String,
    /// The benchmark's own data dir (sandbox dirs, OCI bundles); removed at the end.
    #[arg(long, default_value = "/var/lib/arbor-bench")]
    data_dir: PathBuf,
    /// The static arbor-envd.
    #[arg(long, env = "ARBOR_ENVD_BIN")]
    envd: Option<PathBuf>,
    /// arbor-launch (default: next to this program).
    #[arg(long)]
    launcher: Option<PathBuf>,
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

/// Installs Debian's runc and runsc if they are missing.
fn ensure_peers(install: bool) -> anyhow::Result<()> {
    let missing: Vec<&str> = ["runc", "runsc"].into_iter().filter(|b| which(b).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !install {
        bail!("{} not installed (apt-get install {0}, or --oci-runs 0)", missing.join(" "));
    }
    eprintln!("installing {} with apt-get", missing.join(" "));
    let st = Command::new("apt-get").args(["install", "-y", "-q"]).args(&missing).status()?;
    if !st.success() {
        bail!("apt-get install {}: {st}", missing.join(" "));
    }
    Ok(())
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(bin)).find(|p| p.is_file())
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
        bail!("needs root (namespaces, cgroups, mounts, nftables)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let layers = template_layers(&args.arbor_dir, &args.template)?;
    let envd = args.envd.clone().context("--envd or ARBOR_ENVD_BIN: the static arbor-envd")?;
    let launcher = match &args.launcher {
        Some(l) => l.clone(),
        None => std::env::current_exe()?.with_file_name("arbor-launch"),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let signals = tokio::spawn(interrupted(Arc::clone(&stop)));
    let mut report = report::Report::new(&args, &layers);

    // The peers first: the driver makes this process a sub-reaper, which
    // would leave the runtimes' orphaned helpers for us to reap.
    if args.oci_runs > 0 {
        ensure_peers(!args.no_install)?;
        let (layers, envd, dir, stop) = (layers.clone(), envd.clone(), args.data_dir.join("oci"), Arc::clone(&stop));
        let (runs, warmup, flags) = (args.oci_runs, args.warmup.min(5), args.runsc_flags.clone());
        let peers = tokio::task::spawn_blocking(move || peers(dir, layers, envd, flags, warmup, runs, &stop)).await?;
        report.peers = Some(peers?);
    }
    if stop.load(Ordering::Relaxed) {
        return report.print_partial();
    }

    let driver = arbor::driver(args.data_dir.join("arbor"), envd, launcher).await?;
    let found = arbor::cleanup(&driver).await?;
    if found > 0 {
        eprintln!("removed {found} leftovers of an earlier run");
    }
    let tmpl = arbor::Template { layers };
    let outcome = {
        let work = report::arbor_phases(&driver, &tmpl, &args, &mut report.arbor);
        tokio::select! {
            r = work => r,
            () = wait_stop(&stop) => Err(anyhow::anyhow!("interrupted")),
        }
    };
    let cleaned = arbor::cleanup(&driver).await;
    drop(driver);
    let net = arbor::net_config()?;
    // The table and pin dir are the benchmark's own; an empty table left
    // behind would still be a leak.
    let _ = Command::new(&net.nft).args(["delete", "table", "inet", &net.table]).status();
    let _ = std::fs::remove_dir(&net.netns_dir);
    if let Some(parent) = net.netns_dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    let _ = std::fs::remove_dir_all(&args.data_dir);
    signals.abort();
    report.print();
    cleaned.context("final cleanup")?;
    outcome
}

async fn wait_stop(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// runc and runsc, one after the other, always cleaned up.
fn peers(
    dir: PathBuf,
    layers: Vec<PathBuf>,
    envd: PathBuf,
    runsc_flags: Vec<String>,
    warmup: usize,
    runs: usize,
    stop: &AtomicBool,
) -> anyhow::Result<report::Peers> {
    let oci = oci::Oci::new(dir, layers, envd)?;
    let root = |name: &str| format!("--root={}", oci.state(name).display());
    let runc = oci::Runtime { name: "runc", bin: "runc", global: vec![root("runc")], preserve_fds: true };
    let mut global = vec![root("runsc"), "--network=none".to_string()];
    global.extend(runsc_flags);
    let runsc = oci::Runtime { name: "runsc", bin: "runsc", global, preserve_fds: false };
    let all = [runc.clone(), runsc.clone()];
    oci.cleanup(&all)?;
    let measured = (|| -> anyhow::Result<report::Peers> {
        eprintln!("runc: {runs} runs");
        let runc = oci.measure(&runc, warmup, runs, stop)?;
        eprintln!("runsc: {runs} runs");
        let runsc = oci.measure(&runsc, warmup, runs, stop)?;
        let runsc_do = oci.runsc_do(&all[1].global, warmup, runs, stop)?;
        Ok(report::Peers { runc, runsc, runsc_do })
    })();
    let cleaned = oci.cleanup(&all).and_then(|()| oci.remove());
    let peers = measured?;
    cleaned?;
    Ok(peers)
}
