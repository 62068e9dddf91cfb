//! Configuration of the network layer and per-sandbox policies.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::error::{Error, Result};

/// Node-wide network settings. [`Config::default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Host-side addresses: one /30 per sandbox (host end `.1`, sandbox's outer address `.2`).
    pub pool: Ipv4Net,
    /// The address every sandbox has on its `eth0`, identical in all sandboxes.
    pub inner_addr: Ipv4Addr,
    /// The sandbox's default gateway; the host end of every veth also carries it (as a /32).
    pub inner_gateway: Ipv4Addr,
    /// Prefix length of `inner_addr` on `eth0`; the gateway must be inside that subnet.
    pub inner_prefix: u8,
    /// Where namespaces are pinned, one file per sandbox id.
    pub netns_dir: PathBuf,
    /// Host-side veth names are this prefix plus the pool slot number; at most 7 characters.
    pub ifname_prefix: String,
    /// Name of the nftables table (family `inet`).
    pub table: String,
    /// The `nft` program.
    pub nft: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pool: Ipv4Net::new(Ipv4Addr::new(10, 200, 0, 0), 16).unwrap_or_default(),
            inner_addr: Ipv4Addr::new(169, 254, 0, 21),
            inner_gateway: Ipv4Addr::new(169, 254, 0, 22),
            inner_prefix: 30,
            netns_dir: PathBuf::from("/run/arbor/netns"),
            ifname_prefix: "arb".into(),
            table: "arbor".into(),
            nft: PathBuf::from("nft"),
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        let prefix = &self.ifname_prefix;
        if prefix.is_empty() || prefix.len() > 7 || !prefix.bytes().all(|b| b.is_ascii_lowercase()) {
            return bad(format!("ifname_prefix {prefix:?} must be 1-7 lowercase ASCII letters"));
        }
        if self.table.is_empty() || !self.table.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return bad(format!("table name {:?} must be alphanumeric", self.table));
        }
        let inner = Ipv4Net::new(self.inner_addr, self.inner_prefix)
            .map_err(|e| Error::InvalidConfig(format!("inner prefix: {e}")))?;
        if !inner.contains(&self.inner_gateway) || self.inner_gateway == self.inner_addr {
            return bad(format!("gateway {} must be another address in {inner}", self.inner_gateway));
        }
        if self.pool.contains(&self.inner_addr) || inner.contains(&self.pool.network()) {
            return bad(format!("pool {} overlaps the inner subnet {inner}", self.pool));
        }
        Ok(())
    }
}

/// What a sandbox may reach beyond itself. The host and other sandboxes are never reachable.
///
/// Order of evaluation (E2B's): `allow_out` accepts, then `deny_out` drops, then `internet`
/// decides; so `deny_out: [0.0.0.0/0]` with an `allow_out` list is an allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Egress to any other destination (masqueraded behind the host's address).
    pub internet: bool,
    /// Destinations reachable even when `internet` is off.
    pub allow_out: Vec<Ipv4Net>,
    /// Destinations never reachable, even when allowed otherwise.
    pub deny_out: Vec<Ipv4Net>,
}

/// Checks a sandbox id: it names a file and an nftables comment, so keep it plain.
pub(crate) fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_refused() {
        Config::default().validate().unwrap();
        let c = Config { inner_gateway: Ipv4Addr::new(169, 254, 0, 30), ..Config::default() };
        assert!(c.validate().is_err());
        let c = Config { ifname_prefix: "toolongname".into(), ..Config::default() };
        assert!(c.validate().is_err());
        let c = Config { pool: "169.254.0.0/24".parse().unwrap(), ..Config::default() };
        assert!(c.validate().is_err());
        for id in ["sb-1", "a.b_c", "X9"] {
            check_id(id).unwrap();
        }
        for id in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_id(id).is_err(), "{id:?}");
        }
    }
}
