//! Percentiles of latency samples (the same nearest-rank rule as
//! `bench/runtime`), and byte sizes.

use std::time::Duration;

/// Latency samples of one measured step.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Adds one sample.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p`-th percentile (nearest rank) in milliseconds, or `None` without samples.
    pub fn pct(&self, p: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        let mut v = self.0.clone();
        v.sort();
        // Nearest rank: the smallest sample with at least p % of all at or below it.
        let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        Some(ms(v[rank.min(v.len()) - 1]))
    }
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `a / b` of two percentiles as `1.23×`, or `–` when either is missing.
pub fn ratio(a: &Samples, b: &Samples, p: f64) -> String {
    match (a.pct(p), b.pct(p)) {
        (Some(a), Some(b)) if b > 0.0 && a / b < 0.1 => format!("{:.3}×", a / b),
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// A percentile cell: `12.3` (ms), or `–`.
pub fn cell(s: &Samples, p: f64) -> String {
    s.pct(p).map_or_else(|| "–".into(), |v| if v < 10.0 { format!("{v:.2}") } else { format!("{v:.1}") })
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// The total size of the regular files under `dir` (an image dir), in bytes.
pub fn dir_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            total += dir_bytes(&e.path())?;
        } else if t.is_file() {
            total += e.metadata()?.len();
        }
    }
    Ok(total)
}
