//! The Arbor series in order, and the Markdown the results print as.

use crate::{
    arbor::{self, Breakdown, Cycle, Ramp, Template},
    mem::mib,
    oci::OciResult,
    stats::{ratio, Samples},
    Args,
};
use arbor_runtime::linux::LinuxDriver;
use std::{fmt::Write as _, path::PathBuf, sync::Arc};

/// The peers' results.
#[derive(Debug)]
pub struct Peers {
    /// `runc run`.
    pub runc: OciResult,
    /// `runsc run`.
    pub runsc: OciResult,
    /// `runsc do /bin/true`.
    pub runsc_do: Samples,
}

/// Arbor's results; a series is `None` if it did not run (to completion).
#[derive(Debug, Default)]
pub struct ArborResults {
    seq_lo: Option<Cycle>,
    seq_net: Option<Cycle>,
    par_lo: Option<Cycle>,
    par_net: Option<Cycle>,
    steps: Option<Breakdown>,
    ramp: Option<Ramp>,
    ramp_net: bool,
    static_neigh: bool,
}

/// Runs the Arbor series one after the other into `out`.
pub async fn arbor_phases(
    d: &Arc<LinuxDriver>,
    t: &Template,
    args: &Args,
    out: &mut ArborResults,
) -> anyhow::Result<()> {
    let pause = std::time::Duration::from_millis(args.pause_ms);
    eprintln!("arbor: {} sequential runs, loopback-only", args.runs);
    out.seq_lo = Some(arbor::sequential(d, t, false, args.warmup, args.runs, pause).await?);
    eprintln!("arbor: {} sequential runs, networked", args.runs);
    out.seq_net = Some(arbor::sequential(d, t, true, args.warmup, args.runs, pause).await?);
    eprintln!("arbor: {} runs of the cgroup and network steps alone", args.runs.min(50));
    out.steps = Some(arbor::breakdown(d, args.runs.min(50)).await?);
    if args.concurrency > 1 && args.rounds > 0 {
        eprintln!("arbor: {} × {} concurrent", args.rounds, args.concurrency);
        out.par_lo = Some(arbor::concurrent(d, t, false, args.concurrency, args.rounds).await?);
        out.par_net = Some(arbor::concurrent(d, t, true, args.concurrency, args.rounds).await?);
    }
    if args.max_sandboxes > 0 {
        out.ramp_net = !args.ramp_loopback;
        out.static_neigh = args.static_neigh;
        eprintln!("arbor: ramp to {} idle sandboxes", args.max_sandboxes);
        out.ramp =
            Some(arbor::ramp(d, t, out.ramp_net, args.max_sandboxes, args.step.max(1), args.static_neigh).await?);
    }
    Ok(())
}

/// Everything the run measured, and how it was run.
#[derive(Debug)]
pub struct Report {
    header: String,
    /// The peers, if measured.
    pub peers: Option<Peers>,
    /// Arbor's series.
    pub arbor: ArborResults,
}

impl Report {
    /// A report of a run with `args` on the template made of `layers`.
    pub fn new(args: &Args, layers: &[PathBuf]) -> Self {
        let cmd: Vec<String> = std::env::args().collect();
        let uname = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
            .map_or_else(|| "?".into(), |k| format!("{:.1} GiB", k / 1024.0 / 1024.0));
        let cgroups = arbor_cgroups::Hierarchy::detect().map(|h| format!("{:?}", h.version())).unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mut h = String::new();
        let _ = writeln!(h, "Machine: {cpus} CPUs, {total}, Linux {uname}, cgroup {cgroups}.");
        let _ = writeln!(
            h,
            "Template `{}`: {} layer(s), top {}.",
            args.template,
            layers.len(),
            layers.first().map(|l| l.display().to_string()).unwrap_or_default()
        );
        let _ = writeln!(h, "Command: `{}`", cmd.join(" "));
        let _ = writeln!(h, "Load average at the start: {}.", loadavg());
        Self { header: h, peers: None, arbor: ArborResults::default() }
    }

    /// Prints what an interrupted run measured.
    pub fn print_partial(&self) -> anyhow::Result<()> {
        self.print();
        anyhow::bail!("interrupted")
    }

    /// Prints the Markdown to stdout.
    pub fn print(&self) {
        println!("{}", self.render());
    }

    fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "{}Load average at the end: {}.\n", self.header, loadavg());
        let _ = writeln!(o, "| measure | result |\n|---|---|");
        let mut row = |k: &str, v: String| {
            let _ = writeln!(o, "| {k} | {v} |");
        };
        let a = &self.arbor;
        for (label, c) in [("loopback-only", &a.seq_lo), ("networked", &a.seq_net)] {
            if let Some(c) = c {
                row(&format!("Arbor create → envd ready, {label}, sequential"), c.create.summary());
                row(&format!("Arbor create → first `/health` answer, {label}"), c.first_answer.summary());
                row(&format!("Arbor destroy, {label}"), c.destroy.summary());
            }
        }
        for (label, c) in [("loopback-only", &a.par_lo), ("networked", &a.par_net)] {
            if let Some(c) = c {
                let width = c.create.len() / c.batch.len().max(1);
                row(&format!("Arbor create → envd ready, {label}, {width} at once"), c.create.summary());
                row(&format!("Arbor destroy, {label}, {width} at once"), c.destroy.summary());
                row(&format!("Arbor batch of {width}: create all + destroy all (wall)"), c.batch.summary());
            }
        }
        if let Some(b) = &a.steps {
            row("step alone: cgroup create with limits", b.cgroup_create.summary());
            row("step alone: cgroup destroy with one process in it", b.cgroup_destroy.summary());
            row("step alone: network create (netns, veth, addresses, nftables, link up)", b.net_create.summary());
            row("step alone: network destroy", b.net_destroy.summary());
        }
        if let Some(p) = &self.peers {
            row("runc run → envd ready (overlay mount included)", p.runc.ready.summary());
            row("runc kill KILL → `run` exited, overlay unmounted, bundle removed", p.runc.destroy.summary());
            row("runc run `/bin/true` → exit", p.runc.true_run.summary());
            row("runsc run → envd ready (overlay mount included)", p.runsc.ready.summary());
            row("runsc kill KILL → `run` exited, overlay unmounted, bundle removed", p.runsc.destroy.summary());
            row("runsc run `/bin/true` → exit", p.runsc.true_run.summary());
            row("runsc do `/bin/true` → exit", p.runsc_do.summary());
            for (label, c) in [("loopback-only", &a.seq_lo), ("networked", &a.seq_net)] {
                let Some(c) = c else { continue };
                for (peer, r) in [("runc", &p.runc), ("runsc", &p.runsc)] {
                    row(
                        &format!("ratio Arbor ({label}) / {peer}, start → envd ready"),
                        format!("p50 {} · p99 {}", ratio(&c.create, &r.ready, 50.0), ratio(&c.create, &r.ready, 99.0)),
                    );
                }
                row(
                    &format!("ratio Arbor ({label}) / runc, destroy"),
                    format!(
                        "p50 {} · p99 {}",
                        ratio(&c.destroy, &p.runc.destroy, 50.0),
                        ratio(&c.destroy, &p.runc.destroy, 99.0)
                    ),
                );
            }
        }
        if let Some(r) = &a.ramp {
            let kind = match (a.ramp_net, a.static_neigh) {
                (false, _) => "loopback-only",
                (true, false) => "networked",
                (true, true) => "networked (permanent neighbour entries)",
            };
            row(
                &format!("idle {kind} sandboxes held at once"),
                format!(
                    "{} · `/health` answered: {} at the first try, {} more at a second, {} more only inside \
                     their own namespace · host neighbour-table overflows meanwhile: {}{}",
                    r.held,
                    r.answered,
                    r.answered_retry,
                    r.answered_inside,
                    r.neigh_overflows,
                    r.stopped.as_deref().map(|s| format!(" · stopped: {s}")).unwrap_or_default()
                ),
            );
            row("Arbor create along the ramp (host filling up)", r.create.summary());
            row("Arbor destroy of the ramp's sandboxes, one by one", r.destroy.summary());
        }
        if let Some(r) = &a.ramp {
            let _ = writeln!(o, "\nHost memory per idle sandbox (KiB totals divided by the count; MiB):\n");
            let _ = writeln!(o, "| idle sandboxes | MemAvailable drop | kernel (slab + stacks + page tables) | cgroup charge (anon · file) | envd RSS · PSS · private |");
            let _ = writeln!(o, "|---|---|---|---|---|");
            for p in &r.points {
                let n = p.count.max(1) as f64;
                let _ = writeln!(
                    o,
                    "| {} | {:.2} | {:.2} | {:.2} ({:.2} · {:.2}) | {:.2} · {:.2} · {:.2} |",
                    p.count,
                    mib(p.available_drop as f64 / n),
                    mib(p.kernel_growth as f64 / n),
                    mib(p.cgroup.usage as f64 / n),
                    mib(p.cgroup.anon as f64 / n),
                    mib(p.cgroup.file as f64 / n),
                    mib(p.envd.rss as f64),
                    mib(p.envd.pss as f64),
                    mib(p.envd.private as f64),
                );
            }
        }
        o
    }
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages: how busy the shared machine was.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
