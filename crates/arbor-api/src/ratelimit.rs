//! Failed-authentication limits per client address: a token bucket each.
//!
//! Generated keys are 256-bit secrets nobody guesses, but operators may
//! import short ones, and every wrong key costs a store lookup. So an
//! address may try keys in a burst of [`BURST`], then [`REFILL_PER_S`] a
//! second. A valid key gives its token back, so clients with a right key
//! never run dry; a key the cache knows does not take one at all.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Keys an address may try at once.
pub const BURST: f64 = 20.0;
/// Tries an address regains per second.
pub const REFILL_PER_S: f64 = 2.0;
/// Most addresses tracked; past it, buckets that are full again (which carry
/// no state) are dropped, and if none is, all are.
const MAX_TRACKED: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> f64 {
        let gained = now.saturating_duration_since(self.at).as_secs_f64() * REFILL_PER_S;
        (self.tokens + gained).min(BURST)
    }
}

/// The buckets of the addresses that tried keys recently.
#[derive(Debug, Default)]
pub struct FailedAuth {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl FailedAuth {
    /// Takes one try for `ip`, or says how long until it has one again.
    pub fn acquire(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            buckets.retain(|_, b| b.refilled(now) < BURST);
            if buckets.len() >= MAX_TRACKED {
                tracing::warn!("{MAX_TRACKED} addresses failed to authenticate recently; forgetting them");
                buckets.clear();
            }
        }
        let bucket = buckets.entry(ip).or_insert(Bucket { tokens: BURST, at: now });
        let tokens = bucket.refilled(now);
        if tokens < 1.0 {
            *bucket = Bucket { tokens, at: now };
            return Err(Duration::from_secs_f64((1.0 - tokens) / REFILL_PER_S));
        }
        *bucket = Bucket { tokens: tokens - 1.0, at: now };
        Ok(())
    }

    /// Gives back the try a valid key took.
    pub fn refund(&self, ip: IpAddr, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(&ip) {
            *bucket = Bucket { tokens: (bucket.refilled(now) + 1.0).min(BURST), at: now };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate_and_refunds_keep_valid_clients_going() {
        let limits = FailedAuth::default();
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let t0 = Instant::now();
        for _ in 0..20 {
            assert!(limits.acquire(a, t0).is_ok());
        }
        let wait = limits.acquire(a, t0).expect_err("the burst is spent");
        assert_eq!(wait, Duration::from_millis(500));
        // Another address is not affected.
        assert!(limits.acquire(b, t0).is_ok());
        // Half a second later one try is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limits.acquire(a, t1).is_ok());
        assert!(limits.acquire(a, t1).is_err());
        // A valid key's try is given back: it never drains the bucket.
        for _ in 0..100 {
            assert!(limits.acquire(b, t1).is_ok());
            limits.refund(b, t1);
        }
        // Refills stop at the burst.
        let later = t1 + Duration::from_secs(3600);
        for _ in 0..20 {
            assert!(limits.acquire(a, later).is_ok());
        }
        assert!(limits.acquire(a, later).is_err());
    }
}
