//! [`Network`]: creating, changing and removing sandbox networks.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::config::{check_id, Config, Policy};
use crate::error::{Error, Result};
use crate::link::{self, Inside, ALIAS_PREFIX};
use crate::nft::Nft;
use crate::ns::{self, Pinned};
use crate::pool::{Block, Pool};

/// The network of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxNet {
    /// The sandbox id.
    pub id: String,
    /// The pinned namespace: `setns` the sandbox's first process into it (open it, `setns(fd,
    /// CLONE_NEWNET)`), before creating the sandbox's other namespaces.
    pub netns_path: PathBuf,
    /// The address the host uses to reach the sandbox; unique per sandbox.
    pub host_addr: Ipv4Addr,
    /// The host's own address on the sandbox's veth (the other end of `host_addr`'s /30).
    pub veth_host_addr: Ipv4Addr,
    /// Host-side veth name.
    pub host_ifname: String,
    /// The address the sandbox sees on `eth0`; the same in every sandbox.
    pub inner_addr: Ipv4Addr,
    /// The sandbox's default gateway; the same in every sandbox.
    pub inner_gateway: Ipv4Addr,
    /// The egress policy, or `None` for a sandbox adopted after a restart (its rules were kept
    /// as they were, but this process never learned them).
    pub policy: Option<Policy>,
}

#[derive(Debug)]
struct Entry {
    block: Block,
    policy: Option<Policy>,
}

#[derive(Debug)]
struct State {
    pool: Pool,
    sandboxes: HashMap<String, Entry>,
}

/// The node's sandbox networking, in the network namespace of the thread that called
/// [`Network::new`] (the "host").
///
/// Calls for different sandboxes may run concurrently; calls for the same id must not overlap.
#[derive(Debug)]
pub struct Network {
    cfg: Config,
    host: Arc<OwnedFd>,
    nl: rtnetlink::Handle,
    nl_task: tokio::task::JoinHandle<()>,
    nft: Nft,
    state: Mutex<State>,
}

impl Drop for Network {
    fn drop(&mut self) {
        self.nl_task.abort();
    }
}

impl Network {
    /// Prepares the host: IPv4 forwarding on, the nftables table and its base chains in place.
    /// Sandboxes a previous process left behind with a live namespace are adopted (their rules
    /// stay); [`Network::reconcile`] removes those that are no longer wanted.
    pub async fn new(cfg: Config) -> Result<Network> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.netns_dir)
            .map_err(|e| Error::io(format!("create {}", cfg.netns_dir.display()), e))?;
        let host = Arc::new(ns::current()?);
        let rt = tokio::runtime::Handle::current();
        let (nl, nl_task) = ns::run_in(&host, move || {
            // Forwarding is what lets sandboxes reach the outside; nftables decides who may.
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .map_err(|e| Error::io("enable net.ipv4.ip_forward", e))?;
            link::connect(&rt)
        })
        .await?;
        let nft = Nft::new(cfg.clone(), Arc::clone(&host));
        let pool = Pool::new(cfg.pool)?;
        let net = Network { cfg, host, nl, nl_task, nft, state: Mutex::new(State { pool, sandboxes: HashMap::new() }) };
        net.nft.ensure_table().await?;
        net.adopt().await?;
        Ok(net)
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Where the namespace of sandbox `id` is (or would be) pinned.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.cfg.netns_dir.join(id)
    }

    /// Creates the sandbox's namespace, veth pair, addresses, routes and rules.
    pub async fn create(&self, id: &str, policy: Policy) -> Result<SandboxNet> {
        self.create_notify(id, policy, None).await
    }

    /// [`Network::create`], telling `pinned` as soon as the namespace exists at
    /// [`Network::netns_path`]: the sandbox's first process may join it then and start while the
    /// links and rules are built (no packet crosses the veth before the rules are in place).
    pub async fn create_notify(&self, id: &str, policy: Policy, pinned: Option<Pinned>) -> Result<SandboxNet> {
        check_id(id)?;
        let block = {
            let mut state = self.state.lock().await;
            if state.sandboxes.contains_key(id) {
                return Err(Error::AlreadyExists(id.to_owned()));
            }
            let block = state.pool.take()?;
            state.sandboxes.insert(id.to_owned(), Entry { block, policy: None });
            block
        };
        let path = self.netns_path(id);
        if path.exists() {
            self.forget(id, block).await;
            return Err(Error::AlreadyExists(format!("{id} (stale {}; run reconcile)", path.display())));
        }
        match self.build(id, &path, block, &policy, pinned).await {
            Ok(()) => {
                let mut state = self.state.lock().await;
                if let Some(entry) = state.sandboxes.get_mut(id) {
                    entry.policy = Some(policy.clone());
                }
                Ok(self.describe(id, block, Some(policy)))
            }
            Err(e) => {
                tracing::warn!(id, error = %e, "sandbox network creation failed; undoing");
                // Best effort: what was not built yet is simply absent.
                let _ = self.teardown(id, block).await;
                self.forget(id, block).await;
                Err(e)
            }
        }
    }

    async fn build(&self, id: &str, path: &Path, block: Block, policy: &Policy, pinned: Option<Pinned>) -> Result<()> {
        let ifname = self.nft.ifname(block.slot);
        // A link of that name can only be a leftover nobody reconciled; the slot is ours now.
        link::delete(&self.nl, &ifname).await?;
        let inside =
            Inside { addr: self.cfg.inner_addr, prefix: self.cfg.inner_prefix, gateway: self.cfg.inner_gateway };
        let host = Arc::clone(&self.host);
        let peer = ifname.clone();
        ns::create(path.to_owned(), pinned, move || link::setup_inside(host, peer, inside)).await?;
        let index = link::index(&self.nl, &ifname)
            .await?
            .ok_or_else(|| Error::io(format!("find {ifname}"), std::io::ErrorKind::NotFound))?;
        link::set_alias(&self.nl, index, &format!("{ALIAS_PREFIX}{id}")).await?;
        link::add_addr(&self.nl, index, self.cfg.inner_gateway, 32).await?;
        link::add_addr(&self.nl, index, block.host, 30).await?;
        link::add_host_neighbour(&self.nl, index, self.cfg.inner_addr).await?;
        let sysctl = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
        ns::run_in(&self.host, move || match std::fs::write(&sysctl, "1") {
            Ok(()) => Ok(()),
            // No IPv6 in this kernel: nothing to disable.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("write {sysctl}"), e)),
        })
        .await?;
        // Rules first, links up last: no packet crosses the veth before the rules know it.
        self.nft.add_sandbox(id, &block, policy).await?;
        link::set_up(&self.nl, index).await?;
        let sandbox = Arc::new(ns::open(path)?);
        ns::run_in(&sandbox, move || link::finish_inside(inside)).await?;
        link::wait_oper_up(&self.nl, index, &ifname).await
    }

    /// Replaces a sandbox's egress policy atomically.
    pub async fn set_policy(&self, id: &str, policy: Policy) -> Result<()> {
        let mut state = self.state.lock().await;
        let entry = state.sandboxes.get_mut(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
        self.nft.set_policy(id, entry.block.slot, &policy).await?;
        entry.policy = Some(policy);
        Ok(())
    }

    /// The network of a sandbox.
    pub async fn get(&self, id: &str) -> Option<SandboxNet> {
        let state = self.state.lock().await;
        let entry = state.sandboxes.get(id)?;
        Some(self.describe(id, entry.block, entry.policy.clone()))
    }

    /// Ids of all sandboxes with a network.
    pub async fn ids(&self) -> Vec<String> {
        self.state.lock().await.sandboxes.keys().cloned().collect()
    }

    /// Removes the veth pair, the namespace pin, the rules, and frees the address block.
    pub async fn destroy(&self, id: &str) -> Result<()> {
        let block = {
            let state = self.state.lock().await;
            state.sandboxes.get(id).map(|e| e.block).ok_or_else(|| Error::NotFound(id.to_owned()))?
        };
        let result = self.teardown(id, block).await;
        // The block is reused only once nothing of the old sandbox can be left.
        if result.is_ok() {
            self.forget(id, block).await;
        }
        result
    }

    /// Removes every namespace, veth and rule this layer made for ids not in `keep`, including
    /// leftovers of a crashed predecessor. Returns the ids (or leftover names) removed.
    pub async fn reconcile(&self, keep: &HashSet<String>) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let mut state = self.state.lock().await;
        let gone: Vec<String> = state.sandboxes.keys().filter(|id| !keep.contains(*id)).cloned().collect();
        for id in &gone {
            if let Some(entry) = state.sandboxes.remove(id) {
                state.pool.release(entry.block.slot);
            }
        }
        let live: HashMap<u32, String> = state.sandboxes.iter().map(|(id, e)| (e.block.slot, id.clone())).collect();
        for l in link::list(&self.nl, &self.cfg.ifname_prefix).await? {
            let slot = link::slot_of(&l.name, &self.cfg.ifname_prefix);
            let owner = slot.and_then(|s| live.get(&s));
            let id = l.alias.as_deref().and_then(|a| a.strip_prefix(ALIAS_PREFIX));
            if owner.is_none() || owner.map(String::as_str) != id {
                link::delete(&self.nl, &l.name).await?;
                removed.push(id.map_or_else(|| l.name.clone(), str::to_owned));
            }
        }
        for name in ns::list(&self.cfg.netns_dir)? {
            if !state.sandboxes.contains_key(&name) {
                ns::remove(&self.cfg.netns_dir.join(&name))?;
                if !removed.contains(&name) {
                    removed.push(name);
                }
            }
        }
        let blocks: Vec<Block> = state.sandboxes.values().map(|e| e.block).collect();
        self.nft.resync(&blocks).await?;
        Ok(removed)
    }

    /// Loads sandboxes that survived a restart: a tagged host veth plus a pinned namespace.
    async fn adopt(&self) -> Result<()> {
        let mut state = self.state.lock().await;
        for l in link::list(&self.nl, &self.cfg.ifname_prefix).await? {
            let (Some(slot), Some(id)) = (
                link::slot_of(&l.name, &self.cfg.ifname_prefix),
                l.alias.as_deref().and_then(|a| a.strip_prefix(ALIAS_PREFIX)),
            ) else {
                continue;
            };
            if check_id(id).is_err() || !self.netns_path(id).exists() || state.sandboxes.contains_key(id) {
                continue;
            }
            let Some(block) = state.pool.block(slot) else { continue };
            if state.pool.claim(slot) {
                tracing::info!(id, ifname = %l.name, index = l.index, "adopted sandbox network");
                state.sandboxes.insert(id.to_owned(), Entry { block, policy: None });
            }
        }
        Ok(())
    }

    /// Removes everything of one sandbox, trying every step and reporting the first failure.
    async fn teardown(&self, id: &str, block: Block) -> Result<()> {
        let ifname = self.nft.ifname(block.slot);
        let link = link::delete(&self.nl, &ifname).await;
        let rules = match self.nft.remove_sandbox(&block).await {
            Ok(()) => Ok(()),
            // Part of it was missing (a failed create, or someone edited the table): rebuild
            // the per-sandbox state from what this process knows, without this sandbox.
            Err(_) => {
                let state = self.state.lock().await;
                let keep: Vec<Block> =
                    state.sandboxes.iter().filter(|(other, _)| other.as_str() != id).map(|(_, e)| e.block).collect();
                self.nft.resync(&keep).await
            }
        };
        let pin = ns::remove(&self.netns_path(id));
        link.and(rules).and(pin)
    }

    async fn forget(&self, id: &str, block: Block) {
        let mut state = self.state.lock().await;
        state.sandboxes.remove(id);
        state.pool.release(block.slot);
    }

    fn describe(&self, id: &str, block: Block, policy: Option<Policy>) -> SandboxNet {
        SandboxNet {
            id: id.to_owned(),
            netns_path: self.netns_path(id),
            host_addr: block.outer,
            veth_host_addr: block.host,
            host_ifname: self.nft.ifname(block.slot),
            inner_addr: self.cfg.inner_addr,
            inner_gateway: self.cfg.inner_gateway,
            policy,
        }
    }
}
