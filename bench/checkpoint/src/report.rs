//! The Markdown the results print as: per memory size, runc and Arbor side
//! by side with their ratio, then the targets with met / missed.

use crate::{
    mem::{self, Usage},
    result::{Row, SizeResult},
    stats::{cell, mib, ratio},
};
use std::{collections::BTreeMap, fmt::Write as _};

/// Both sides' results by memory size (MiB).
#[derive(Debug, Default)]
pub struct Report {
    /// Machine, versions, command: written at the start.
    pub header: String,
    /// Load average when the run started.
    pub load_start: String,
    /// runc's results.
    pub runc: BTreeMap<u64, SizeResult>,
    /// Arbor's results.
    pub arbor: BTreeMap<u64, SizeResult>,
    /// Clones in the many-clones cycle.
    pub clones: usize,
    /// What stopped a side early, if anything.
    pub notes: Vec<String>,
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A size as `10 MiB` or `1 GiB`.
pub fn size_name(mib: u64) -> String {
    if mib >= 1024 && mib % 1024 == 0 {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

fn mem_ratio(one: Option<Usage>, many: Option<Usage>, pick: fn(&Usage) -> u64) -> String {
    match (one, many) {
        (Some(o), Some(m)) if pick(&o) > 0 => {
            format!("{} vs {} ({:.2}×)", mib(pick(&m)), mib(pick(&o)), pick(&m) as f64 / pick(&o) as f64)
        }
        _ => "–".into(),
    }
}

/// One of the targets, for the Arbor column (runc shown for scale).
struct Target {
    what: String,
    row: Row,
    size: u64,
    limit_ms: f64,
}

fn targets(sizes: &[u64], clones: usize) -> Vec<Target> {
    let mut t = Vec::new();
    for &s in sizes {
        t.push(Target { what: "pause returns ≤ 30 ms".into(), row: Row::PauseReturns, size: s, limit_ms: 30.0 });
        t.push(Target {
            what: "thaw (resume before release) ≤ 10 ms".into(),
            row: Row::ThawFirst,
            size: s,
            limit_ms: 10.0,
        });
        let durable = 150.0 + 500.0 * s as f64 / 1024.0;
        t.push(Target {
            what: format!("durable image ≤ 0.15 s + 0.5 s/GiB = {durable:.0} ms"),
            row: Row::Durable,
            size: s,
            limit_ms: durable,
        });
    }
    for (s, limit) in [(100, 150.0), (1024, 300.0)] {
        if sizes.contains(&s) {
            t.push(Target {
                what: format!("resume from a released image → first command ≤ {limit:.0} ms"),
                row: Row::RestoreFirst,
                size: s,
                limit_ms: limit,
            });
        }
    }
    if sizes.contains(&100) {
        t.push(Target {
            what: "1 clone of a running sandbox ≤ 200 ms".into(),
            row: Row::Clone1,
            size: 100,
            limit_ms: 200.0,
        });
        if clones == 10 {
            t.push(Target { what: "10 clones ≤ 1 s".into(), row: Row::CloneN, size: 100, limit_ms: 1000.0 });
        }
    }
    t
}

impl Report {
    /// The whole report.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = write!(o, "{}", self.header);
        let _ = writeln!(o, "Load average (1/5/15 min): {} at the start, {} at the end.", self.load_start, loadavg());
        let _ = writeln!(o, "Same-page merging (KSM) on the host: {}.\n", mem::ksm_state());
        let sizes: Vec<u64> = self
            .runc
            .keys()
            .chain(self.arbor.keys())
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let _ = writeln!(o, "| size | measure (ms) | runc does | runc p50 | runc p99 | Arbor p50 | Arbor p99 | Arbor/runc p50 · p99 | n (runc · Arbor) |");
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
        let empty = SizeResult::default();
        for &s in &sizes {
            let r = self.runc.get(&s).unwrap_or(&empty);
            let a = self.arbor.get(&s).unwrap_or(&empty);
            for row in Row::ALL {
                let (rs, as_) = (r.rows.get(&row), a.rows.get(&row));
                if rs.is_none() && as_.is_none() {
                    continue;
                }
                let d = Default::default();
                let (rs, as_) = (rs.unwrap_or(&d), as_.unwrap_or(&d));
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} | {} | {} · {} | {} · {} |",
                    size_name(s),
                    row.label(self.clones),
                    row.runc_means(),
                    cell(rs, 50.0),
                    cell(rs, 99.0),
                    cell(as_, 50.0),
                    cell(as_, 99.0),
                    ratio(as_, rs, 50.0),
                    ratio(as_, rs, 99.0),
                    rs.len(),
                    as_.len(),
                );
            }
            let img = |x: &SizeResult| x.image_median().map_or_else(|| "–".into(), mib);
            let _ = writeln!(
                o,
                "| {} | image size (median) | checkpoint dir | {} | | {} | | | |",
                size_name(s),
                img(r),
                img(a)
            );
            let _ = writeln!(
                o,
                "| {} | memory of {} idle clones vs the origin: cgroup charge | | {} | | {} | | | |",
                size_name(s),
                self.clones,
                mem_ratio(r.mem_one, r.mem_many, |u| u.charged),
                mem_ratio(a.mem_one, a.mem_many, |u| u.charged)
            );
            let _ = writeln!(
                o,
                "| {} | memory of {} idle clones vs the origin: sum of PSS | | {} | | {} | | | |",
                size_name(s),
                self.clones,
                mem_ratio(r.mem_one, r.mem_many, |u| u.pss),
                mem_ratio(a.mem_one, a.mem_many, |u| u.pss)
            );
        }
        let _ = writeln!(o, "\nTargets of issue 5 (met when p50 is within; p99 in brackets):\n");
        let _ = writeln!(o, "| target | size | Arbor p50 (p99) | met | runc p50 (p99), for scale |");
        let _ = writeln!(o, "|---|---|---|---|---|");
        for t in targets(&sizes, self.clones) {
            let get = |m: &BTreeMap<u64, SizeResult>| {
                m.get(&t.size).and_then(|x| x.rows.get(&t.row)).and_then(|s| Some((s.pct(50.0)?, s.pct(99.0)?)))
            };
            let fmt = |v: Option<(f64, f64)>| v.map_or_else(|| "–".into(), |(a, b)| format!("{a:.1} ({b:.1})"));
            let met = match get(&self.arbor) {
                Some((p50, _)) if p50 <= t.limit_ms => "✓ met",
                Some(_) => "✗ missed",
                None => "not measured",
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                t.what,
                size_name(t.size),
                fmt(get(&self.arbor)),
                met,
                fmt(get(&self.runc))
            );
        }
        if sizes.contains(&100) {
            let a = self.arbor.get(&100);
            let m = a.and_then(|a| Some(a.mem_many?.pss as f64 / a.mem_one?.pss.max(1) as f64));
            let (val, met) = match m {
                Some(x) => (format!("{x:.2}×"), if x < 3.0 { "✓ met" } else { "✗ missed" }),
                None => ("–".into(), "not measured"),
            };
            let r = self.runc.get(&100).and_then(|r| Some(r.mem_many?.pss as f64 / r.mem_one?.pss.max(1) as f64));
            let _ = writeln!(
                o,
                "| memory of {} idle clones < 3× one (sum of PSS) | 100 MiB | {val} | {met} | {} |",
                self.clones,
                r.map_or_else(|| "–".into(), |x| format!("{x:.2}×"))
            );
        }
        for n in &self.notes {
            let _ = writeln!(o, "\nNote: {n}");
        }
        o
    }
}
