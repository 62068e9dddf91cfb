//! The node: sandboxes of this host, from templates of this host.

use crate::{
    capacity::{self, Capacity, CapacityConfig, Claim},
    error::{Error, Result},
    template::{self, Template},
};
use arbor_layers::LayerStore;
use arbor_runtime::{
    linux::{Config, LinuxDriver},
    Driver, SandboxSpec, Status,
};
use std::{
    collections::{BTreeMap, HashSet},
    net::Ipv4Addr,
    path::PathBuf,
};

/// Tasks a sandbox may run at once (processes and threads).
const PIDS_LIMIT: u64 = 4096;

/// Where a node keeps its state and finds its helpers.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Sandbox state (`<data_dir>/sandboxes`).
    pub data_dir: PathBuf,
    /// The layer store holding templates (usually the same data dir).
    pub layers_dir: PathBuf,
    /// The static envd binary.
    pub envd_bin: PathBuf,
    /// The `arbor-launch` helper.
    pub launcher_bin: PathBuf,
    /// Sandbox networking.
    pub network: arbor_net::Config,
    /// Disk limits; `None` leaves sandbox disks unlimited.
    pub disk: Option<arbor_disk::Config>,
    /// The cgroup all of this node's sandboxes live under.
    pub cgroup_parent: String,
    /// How far admission control may overcommit the host.
    pub capacity: CapacityConfig,
}

/// What the control plane asks a node to start.
#[derive(Debug, Clone)]
pub struct StartSpec {
    /// Sandbox id.
    pub id: String,
    /// vCPUs (1–8).
    pub cpu_count: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Disk in MiB.
    pub disk_mb: u64,
    /// Environment variables of every process.
    pub env_vars: BTreeMap<String, String>,
    /// envd's access token.
    pub access_token: String,
    /// Egress policy.
    pub policy: arbor_net::Policy,
}

/// A sandbox the node started.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    /// Where the host reaches it (envd on port 49983).
    pub host_addr: Ipv4Addr,
    /// Its PID 1 on the host.
    pub init_pid: u32,
}

/// The node agent of this host.
#[derive(Debug)]
pub struct Node {
    pub(crate) driver: LinuxDriver,
    layers: LayerStore,
    disk_limits: bool,
    pub(crate) capacity: Capacity,
}

impl Node {
    /// Opens the layer store and brings up the runtime (network, disk
    /// limits). Call [`Node::reconcile`] before serving.
    pub async fn new(cfg: NodeConfig) -> Result<Node> {
        let layers = LayerStore::open(&cfg.layers_dir)?;
        let disk_limits = cfg.disk.is_some();
        let envd = crate::envd::pin(&cfg.data_dir, &cfg.envd_bin)?;
        enable_ksm();
        let driver = LinuxDriver::new(Config {
            data_dir: cfg.data_dir.clone(),
            envd,
            launcher: cfg.launcher_bin,
            network: Some(cfg.network),
            disk: cfg.disk,
        })
        .await?
        .with_cgroup_parent(&cfg.cgroup_parent);
        let (memory_mib, pids) = capacity::host_limits()?;
        driver.limit_all(memory_mib, pids)?;
        tracing::info!(memory_mib, pids, "all sandboxes together are capped at this");
        let disks = vec![driver.sandboxes_dir().to_path_buf(), cfg.data_dir];
        let capacity = Capacity::new(memory_mib, pids, cfg.capacity, disks);
        Ok(Node { driver, layers, disk_limits, capacity })
    }

    /// Template `name`, as this node has it.
    pub fn template(&self, name: &str) -> Result<Template> {
        template::load(&self.layers, name)
    }

    /// Starts a sandbox from `template`.
    pub async fn start(&self, template: &Template, mut spec: StartSpec) -> Result<Started> {
        for (k, v) in &template.env {
            spec.env_vars.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let token = spec.access_token.clone();
        let sandbox = self.sandbox_spec(spec, template.layers.clone());
        let claim = self.claim(&sandbox)?;
        let started = started(self.driver.create(&sandbox).await?)?;
        // envd starts with the defaults of `base`; a built template may name others.
        if template.default_user != "user" || template.default_workdir.is_some() {
            let body = serde_json::json!({
                "defaultUser": template.default_user,
                "defaultWorkdir": template.default_workdir.clone().unwrap_or_default(),
            });
            if let Err(e) = crate::persist::init_envd(started.host_addr, &token, body.to_string()).await {
                let _ = self.driver.destroy(&sandbox.id).await;
                return Err(e);
            }
        }
        claim.keep();
        Ok(started)
    }

    /// Admits sandbox `sandbox` (see [`crate::capacity`]); the claim goes
    /// back when the guard drops unless it is kept.
    pub(crate) fn claim(&self, sandbox: &SandboxSpec) -> Result<ClaimGuard<'_>> {
        let claim = Claim { memory_mib: sandbox.memory_mib, pids: sandbox.pids };
        self.capacity.admit(&sandbox.id, claim)?;
        Ok(ClaimGuard { capacity: &self.capacity, id: sandbox.id.clone(), keep: false })
    }

    /// The stored reference of template `name`: its layers (as ids), envd
    /// defaults and labels.
    pub fn template_manifest(&self, name: &str) -> Result<arbor_layers::RefManifest> {
        template::manifest(&self.layers, name)
    }

    /// Records template `name` (a build's result) for [`Node::template`].
    pub fn save_template(&self, name: &str, manifest: &arbor_layers::RefManifest) -> Result<()> {
        Ok(self.layers.set_ref(&template::reference(name), manifest)?)
    }

    /// Forgets template `name`; its layers stay in the store.
    pub fn remove_template(&self, name: &str) -> Result<()> {
        Ok(self.layers.remove_ref(&template::reference(name))?)
    }

    /// The layer store templates come from.
    pub fn layers(&self) -> &LayerStore {
        &self.layers
    }

    /// Copies what sandbox `id` changed of its template to `dst` (overlayfs
    /// upper-dir form); freeze it first. See [`Driver::export_changes`].
    pub async fn export_changes(&self, id: &str, dst: &std::path::Path) -> Result<()> {
        Ok(self.driver.export_changes(id, dst).await?)
    }

    /// The runtime's spec of sandbox `spec` on `layers`.
    pub(crate) fn sandbox_spec(&self, spec: StartSpec, layers: Vec<PathBuf>) -> SandboxSpec {
        SandboxSpec {
            hostname: hostname(&spec.id),
            id: spec.id,
            layers,
            env: spec.env_vars,
            access_token: Some(spec.access_token),
            vcpus: spec.cpu_count,
            memory_mib: spec.memory_mb,
            pids: PIDS_LIMIT,
            disk_mib: self.disk_limits.then_some(spec.disk_mb),
            network: Some(spec.policy),
        }
    }

    /// Stops a sandbox and removes all it used.
    pub async fn stop(&self, id: &str) -> Result<()> {
        let stopped = self.driver.destroy(id).await;
        if stopped.is_ok() || matches!(stopped, Err(arbor_runtime::Error::NotFound(_))) {
            self.capacity.release(id);
        }
        Ok(stopped?)
    }

    /// Whether a sandbox runs, and its resource use.
    pub async fn status(&self, id: &str) -> Result<Status> {
        Ok(self.driver.status(id).await?)
    }

    /// Ids of the sandboxes on this host.
    pub async fn sandboxes(&self) -> Result<Vec<String>> {
        Ok(self.driver.list().await?)
    }

    /// Removes whatever is on this host that is not in `keep`, and counts
    /// what is left against the host's capacity.
    pub async fn reconcile(&self, keep: &HashSet<String>) -> Result<Vec<String>> {
        let removed = self.driver.reconcile(keep).await?;
        let mut claims = std::collections::HashMap::new();
        for id in self.driver.list().await? {
            let (memory, pids) = self.driver.limits_of(&id).unwrap_or((None, None));
            let claim = Claim { memory_mib: memory.unwrap_or(0), pids: pids.unwrap_or(PIDS_LIMIT) };
            claims.insert(id, claim);
        }
        self.capacity.reset(claims);
        Ok(removed)
    }

    /// Replaces a running sandbox's egress policy.
    pub async fn set_policy(&self, id: &str, policy: arbor_net::Policy) -> Result<()> {
        let net = self.driver.network().ok_or_else(|| Error::Invalid("this node has no networking".into()))?;
        Ok(net.set_policy(id, policy).await?)
    }
}

/// A claim on the node's capacity that goes back on drop (a start that
/// failed) unless kept.
pub(crate) struct ClaimGuard<'a> {
    capacity: &'a Capacity,
    id: String,
    keep: bool,
}

impl ClaimGuard<'_> {
    /// The sandbox started: its claim stays until it stops.
    pub(crate) fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if !self.keep {
            self.capacity.release(&self.id);
        }
    }
}

/// What the control plane needs of a sandbox the runtime started.
pub(crate) fn started(sandbox: arbor_runtime::Sandbox) -> Result<Started> {
    let host_addr =
        sandbox.host_addr.ok_or_else(|| Error::Invalid(format!("sandbox {} started without a network", sandbox.id)))?;
    Ok(Started { host_addr, init_pid: sandbox.init_pid })
}

/// KSM's switch: restored sandboxes mark their memory mergeable, so clones
/// of one checkpoint share identical pages once it runs.
const KSM_RUN: &str = "/sys/kernel/mm/ksm/run";

/// Starts KSM (a host-wide setting, which only affects memory marked
/// mergeable) unless the host turned it off for good (`2` = unmerge) or has
/// none; best effort.
fn enable_ksm() {
    match std::fs::read_to_string(KSM_RUN).map(|v| v.trim().to_string()) {
        Ok(v) if v == "0" => {
            if let Err(e) = std::fs::write(KSM_RUN, "1") {
                tracing::warn!("starting KSM (clones will not share memory): {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::info!("no KSM on this host ({e}); clones will not share memory"),
    }
}

/// The hostname inside a sandbox: short, and telling which sandbox it is.
/// The hostname of sandbox `id` (also what the runtime writes into its `/etc`).
pub fn hostname(id: &str) -> String {
    let short: String = id.chars().take(20).collect();
    format!("sbx-{short}")
}
