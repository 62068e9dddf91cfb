//! Percentiles of latency samples, and the table rows they print as.

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

    /// `p50 … · p90 … · p99 … · max … (n=…)`, or `no samples`.
    pub fn summary(&self) -> String {
        match (self.pct(50.0), self.pct(90.0), self.pct(99.0), self.pct(100.0)) {
            (Some(p50), Some(p90), Some(p99), Some(max)) => {
                format!("p50 {p50:.2} ms · p90 {p90:.2} · p99 {p99:.2} · max {max:.2} (n={})", self.len())
            }
            _ => "no samples".into(),
        }
    }
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `a / b` of two p50s as `1.23×`, or `–` when either is missing.
pub fn ratio(a: &Samples, b: &Samples, p: f64) -> String {
    match (a.pct(p), b.pct(p)) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}
