//! The pool of per-sandbox host-side address blocks.
//!
//! The pool is cut into /30 blocks; block `n` gives the host end of sandbox `n`'s veth the first
//! usable address and the sandbox's host-visible ("outer") address the second. The lowest free
//! block is always handed out, so a released block is the next one reused.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::{Error, Result};

/// Addresses of one /30 block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    pub(crate) slot: u32,
    pub(crate) net: Ipv4Net,
    pub(crate) host: Ipv4Addr,
    pub(crate) outer: Ipv4Addr,
}

#[derive(Debug)]
pub(crate) struct Pool {
    net: Ipv4Net,
    used: BTreeSet<u32>,
}

impl Pool {
    pub(crate) fn new(net: Ipv4Net) -> Result<Self> {
        if net.prefix_len() > 30 {
            return Err(Error::InvalidConfig(format!("pool {net} is smaller than one /30")));
        }
        Ok(Pool { net: net.trunc(), used: BTreeSet::new() })
    }

    pub(crate) fn capacity(&self) -> u32 {
        1u32 << (30 - self.net.prefix_len())
    }

    /// The block of a slot, or `None` if the slot is outside the pool.
    pub(crate) fn block(&self, slot: u32) -> Option<Block> {
        if slot >= self.capacity() {
            return None;
        }
        let base = u32::from(self.net.network()) + slot * 4;
        let net = Ipv4Net::new(Ipv4Addr::from(base), 30).ok()?;
        Some(Block { slot, net, host: Ipv4Addr::from(base + 1), outer: Ipv4Addr::from(base + 2) })
    }

    /// Takes the lowest free block.
    pub(crate) fn take(&mut self) -> Result<Block> {
        let mut slot = 0;
        for &used in &self.used {
            if used != slot {
                break;
            }
            slot += 1;
        }
        let block = self.block(slot).ok_or(Error::PoolExhausted(self.net))?;
        self.used.insert(slot);
        Ok(block)
    }

    /// Marks a slot as used (adopting a sandbox that survived a restart).
    pub(crate) fn claim(&mut self, slot: u32) -> bool {
        slot < self.capacity() && self.used.insert(slot)
    }

    pub(crate) fn release(&mut self, slot: u32) {
        self.used.remove(&slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_block_is_reused() {
        let mut pool = Pool::new("10.200.0.0/28".parse().unwrap()).unwrap();
        assert_eq!(pool.capacity(), 4);
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert_eq!(a.host, Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(a.outer, Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(b.outer, Ipv4Addr::new(10, 200, 0, 6));
        pool.release(a.slot);
        assert_eq!(pool.take().unwrap(), a);
        pool.take().unwrap();
        pool.take().unwrap();
        assert!(matches!(pool.take(), Err(Error::PoolExhausted(_))));
        assert!(!pool.claim(1));
        assert!(!pool.claim(4));
    }
}
