//! The nftables side: one `inet` table, written in nft's own syntax and applied atomically.
//!
//! Per-sandbox state lives in sets and maps keyed by the host-side interface name plus one
//! regular chain per sandbox (`sb_<slot>`) holding its egress policy, so adding, changing or
//! removing a sandbox is a single small transaction that never touches the base chains.

use std::fmt::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use crate::config::{Config, Policy};
use crate::error::{Error, Result};
use crate::pool::Block;

/// Runs `nft` in the host's network namespace.
#[derive(Debug)]
pub(crate) struct Nft {
    cfg: Config,
    host: Arc<OwnedFd>,
    /// One transaction at a time: concurrent batches against one table could otherwise fail
    /// on the kernel's generation check instead of queueing.
    serial: tokio::sync::Mutex<()>,
}

impl Nft {
    pub(crate) fn new(cfg: Config, host: Arc<OwnedFd>) -> Self {
        Nft { cfg, host, serial: tokio::sync::Mutex::new(()) }
    }

    fn table(&self) -> String {
        format!("inet {}", self.cfg.table)
    }

    /// Host-side name of slot `slot`'s veth.
    pub(crate) fn ifname(&self, slot: u32) -> String {
        format!("{}{slot}", self.cfg.ifname_prefix)
    }

    /// Creates the table and (re)writes its base chains; sets, maps and sandbox chains survive,
    /// so a restarted node keeps its sandboxes' rules.
    pub(crate) async fn ensure_table(&self) -> Result<()> {
        let t = self.table();
        let wild = format!("\"{}*\"", self.cfg.ifname_prefix);
        let inner = self.cfg.inner_addr;
        let pool = self.cfg.pool;
        let mut s = String::new();
        let _ = writeln!(s, "add table {t}");
        let _ = writeln!(s, "add set {t} sandbox_ifs {{ type ifname; }}");
        let _ = writeln!(s, "add map {t} outer_addr {{ type ifname : ipv4_addr; }}");
        let _ = writeln!(s, "add set {t} inner_dst {{ type ipv4_addr . ifname; }}");
        let _ = writeln!(s, "add map {t} egress_policy {{ type ifname : verdict; }}");
        let chains: [(&str, &str, &[String]); 5] = [
            // Before conntrack (-200): the sandbox's fixed address becomes its unique outer
            // address, so everything later (conntrack, routing, rp_filter) sees that one.
            (
                "from_sandbox",
                "type filter hook prerouting priority -310",
                &[
                    format!("iifname {wild} iifname != @sandbox_ifs drop"),
                    "iifname @sandbox_ifs meta nfproto != ipv4 drop".into(),
                    format!("iifname @sandbox_ifs ip saddr != {inner} drop"),
                    "iifname @sandbox_ifs ip saddr set iifname map @outer_addr".into(),
                ],
            ),
            (
                "sandbox_to_host",
                "type filter hook input priority -10",
                &[format!("iifname {wild} ct state established,related accept"), format!("iifname {wild} drop")],
            ),
            (
                "sandbox_forward",
                "type filter hook forward priority -10",
                &[
                    format!("oifname {wild} ct state established,related accept"),
                    format!("oifname {wild} drop"),
                    format!("iifname {wild} ip daddr {{ 169.254.0.0/16, 224.0.0.0/4, 240.0.0.0/4, {pool} }} drop"),
                    "iifname @sandbox_ifs iifname vmap @egress_policy".into(),
                    format!("iifname {wild} drop"),
                ],
            ),
            (
                "sandbox_masquerade",
                "type nat hook postrouting priority 100",
                &[format!("iifname @sandbox_ifs oifname != {wild} masquerade")],
            ),
            // After routing picked the veth, the outer address becomes the fixed inner one;
            // the kernel resolves the neighbour from the rewritten address.
            (
                "to_sandbox",
                "type filter hook postrouting priority 300",
                &[
                    format!("oifname {wild} meta nfproto != ipv4 drop"),
                    format!("ip daddr . oifname @inner_dst ip daddr set {inner}"),
                ],
            ),
        ];
        for (name, base, rules) in chains {
            let _ = writeln!(s, "add chain {t} {name} {{ {base}; policy accept; }}");
            let _ = writeln!(s, "flush chain {t} {name}");
            for rule in rules {
                let _ = writeln!(s, "add rule {t} {name} {rule}");
            }
        }
        self.apply("create table", s).await
    }

    /// Writes a sandbox's policy chain (creating it if needed) and its set and map entries.
    pub(crate) async fn add_sandbox(&self, id: &str, block: &Block, policy: &Policy) -> Result<()> {
        let mut s = self.policy_script(id, block.slot, policy);
        self.elements(&mut s, "add", block);
        self.apply("add sandbox", s).await
    }

    pub(crate) async fn set_policy(&self, id: &str, slot: u32, policy: &Policy) -> Result<()> {
        self.apply("set policy", self.policy_script(id, slot, policy)).await
    }

    pub(crate) async fn remove_sandbox(&self, block: &Block) -> Result<()> {
        let t = self.table();
        let mut s = String::new();
        self.elements(&mut s, "delete", block);
        let _ = writeln!(s, "delete chain {t} sb_{}", block.slot);
        self.apply("remove sandbox", s).await
    }

    /// Makes sets and maps hold exactly the entries of `keep` and deletes every sandbox chain
    /// of a slot not in `keep`.
    pub(crate) async fn resync(&self, keep: &[Block]) -> Result<()> {
        let t = self.table();
        let mut s = String::new();
        let _ = writeln!(s, "flush set {t} sandbox_ifs");
        let _ = writeln!(s, "flush set {t} inner_dst");
        let _ = writeln!(s, "flush map {t} outer_addr");
        let _ = writeln!(s, "flush map {t} egress_policy");
        let chains = self.sandbox_chains().await?;
        for block in keep {
            // A sandbox whose creation was cut short before its rules were written has no
            // chain: it gets a closed one (no egress) rather than a jump to nowhere.
            if !chains.iter().any(|c| *c == format!("sb_{}", block.slot)) {
                s.push_str(&self.policy_script("adopted", block.slot, &Policy::default()));
            }
            self.elements(&mut s, "add", block);
        }
        for chain in chains {
            let slot = chain.strip_prefix("sb_").and_then(|n| n.parse::<u32>().ok());
            if slot.is_some_and(|slot| !keep.iter().any(|b| b.slot == slot)) {
                let _ = writeln!(s, "flush chain {t} {chain}");
                let _ = writeln!(s, "delete chain {t} {chain}");
            }
        }
        self.apply("resync", s).await
    }

    /// Names of the per-sandbox chains currently in the table.
    pub(crate) async fn sandbox_chains(&self) -> Result<Vec<String>> {
        let out = self.run("list table", &["-j", "list", "table", "inet", &self.cfg.table], None).await?;
        // Only chain names are needed; reading them from the untyped JSON keeps this working
        // across nft versions whose JSON carries fields a typed schema may not know.
        let listing: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| Error::Nft { what: "parse listing".into(), detail: e.to_string() })?;
        let objects = listing.get("nftables").and_then(|v| v.as_array()).cloned().unwrap_or_default();
        Ok(objects
            .iter()
            .filter_map(|obj| obj.get("chain")?.get("name")?.as_str())
            .filter(|name| name.starts_with("sb_"))
            .map(str::to_owned)
            .collect())
    }

    fn policy_script(&self, id: &str, slot: u32, policy: &Policy) -> String {
        let t = self.table();
        let chain = format!("sb_{slot}");
        let mut s = String::new();
        let _ = writeln!(s, "add chain {t} {chain} {{ comment \"{id}\"; }}");
        let _ = writeln!(s, "flush chain {t} {chain}");
        // One rule per network: an anonymous set would reject overlapping networks.
        // As in E2B: an allowed destination is reachable even inside a denied
        // range, so `deny_out: [0.0.0.0/0]` plus `allow_out` is an allow-list.
        for net in &policy.allow_out {
            let _ = writeln!(s, "add rule {t} {chain} ip daddr {} accept", net.trunc());
        }
        for net in &policy.deny_out {
            let _ = writeln!(s, "add rule {t} {chain} ip daddr {} drop", net.trunc());
        }
        let verdict = if policy.internet { "accept" } else { "drop" };
        let _ = writeln!(s, "add rule {t} {chain} {verdict}");
        s
    }

    fn elements(&self, s: &mut String, op: &str, block: &Block) {
        let t = self.table();
        let ifname = self.ifname(block.slot);
        let outer = block.outer;
        let (outer_elem, policy_elem) = if op == "add" {
            (format!("\"{ifname}\" : {outer}"), format!("\"{ifname}\" : jump sb_{}", block.slot))
        } else {
            (format!("\"{ifname}\""), format!("\"{ifname}\""))
        };
        let _ = writeln!(s, "{op} element {t} egress_policy {{ {policy_elem} }}");
        let _ = writeln!(s, "{op} element {t} inner_dst {{ {outer} . \"{ifname}\" }}");
        let _ = writeln!(s, "{op} element {t} outer_addr {{ {outer_elem} }}");
        let _ = writeln!(s, "{op} element {t} sandbox_ifs {{ \"{ifname}\" }}");
    }

    async fn apply(&self, what: &str, script: String) -> Result<()> {
        tracing::trace!(what, %script, "nft transaction");
        self.run(what, &["-f", "-"], Some(script)).await.map(|_| ())
    }

    async fn run(&self, what: &str, args: &[&str], stdin: Option<String>) -> Result<Vec<u8>> {
        let _turn = self.serial.lock().await;
        let fail = |detail: String| Error::Nft { what: what.into(), detail };
        let mut cmd = tokio::process::Command::new(&self.cfg.nft);
        cmd.args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let host = Arc::clone(&self.host);
        // SAFETY: the closure runs in the forked child before exec and only makes the setns
        // system call (async-signal-safe); it allocates nothing and touches no locks.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(host.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().map_err(|e| fail(format!("cannot run {}: {e}", self.cfg.nft.display())))?;
        if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(script.as_bytes()).await.map_err(|e| fail(format!("write script: {e}")))?;
        }
        let out = child.wait_with_output().await.map_err(|e| fail(format!("wait: {e}")))?;
        if !out.status.success() {
            return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
        }
        Ok(out.stdout)
    }
}
