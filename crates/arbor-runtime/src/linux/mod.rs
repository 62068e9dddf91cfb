//! The Linux namespaces driver.

pub mod caps;
mod checkpoint;
mod criu;
mod dev;
mod fuse;
mod handoff;
mod harden;
pub mod launch;
mod mountinfo;
mod mounts;
mod reap;
mod reconcile;
pub mod restore;
pub mod seccomp;
mod start;

use crate::{
    checkpoint::{After, Checkpoint},
    driver::{Driver, Sandbox, Status},
    error::{Error, Result},
    spec::{LaunchSpec, RestoreSpec, SandboxSpec},
};
use arbor_cgroups::{Hierarchy, Limits};
use arbor_disk::Quotas;
use arbor_net::Network;
use checkpoint::SandboxMeta;
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

/// Parent cgroup of every sandbox, unless [`LinuxDriver::with_cgroup_parent`] says otherwise.
pub const CGROUP_PARENT: &str = "arbor";
/// How long a killed init process gets to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the Linux driver keeps its state and finds its helpers.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's data dir; sandboxes live in `<data_dir>/sandboxes/<id>`.
    pub data_dir: PathBuf,
    /// The static `arbor-envd` binary, bind-mounted into every sandbox.
    pub envd: PathBuf,
    /// The `arbor-launch` helper.
    pub launcher: PathBuf,
    /// Sandbox networking; `None` gives every sandbox only loopback (and
    /// refuses specs that ask for a network).
    pub network: Option<arbor_net::Config>,
    /// Disk limits (each sandbox dir a quota-limited btrfs subvolume, on a
    /// loop-mounted image where the host has no btrfs); `None` refuses specs
    /// with a disk limit.
    pub disk: Option<arbor_disk::Config>,
}

/// Sandboxes as namespaces + cgroups + overlayfs on this host.
#[derive(Debug)]
pub struct LinuxDriver {
    sandboxes: PathBuf,
    /// Checkpoints' memory images and metadata (`<data_dir>/checkpoints`).
    checkpoints: PathBuf,
    envd: PathBuf,
    launcher: PathBuf,
    cgroups: Hierarchy,
    cgroup_parent: String,
    net: Option<Network>,
    quotas: Option<Arc<Quotas>>,
    /// CRIU, for checkpoints; `None` where it is not installed.
    criu: Option<PathBuf>,
}

/// How a sandbox's processes come to be.
#[derive(Clone, Copy)]
pub(super) enum Boot<'a> {
    /// envd starts afresh.
    Fresh,
    /// The processes of a checkpoint are restored.
    Restore(&'a Checkpoint),
}

impl LinuxDriver {
    /// A driver for this host. It makes the calling process the sub-reaper
    /// of the sandboxes' init processes (see the `reap` module), so it is
    /// meant to live in the node's long-running process.
    pub async fn new(cfg: Config) -> Result<Self> {
        let sandboxes = cfg.data_dir.join("sandboxes");
        let checkpoints = cfg.data_dir.join("checkpoints");
        for dir in [&sandboxes, &checkpoints] {
            std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        }
        for (what, path) in [("envd binary", &cfg.envd), ("arbor-launch binary", &cfg.launcher)] {
            if !path.is_file() {
                return Err(Error::InvalidSpec(format!("{what} not found at {}", path.display())));
            }
        }
        reap::become_subreaper()?;
        let net = match cfg.network {
            Some(net) => Some(Network::new(net).await?),
            None => None,
        };
        let quotas = match cfg.disk {
            Some(disk) => Some(Arc::new(Quotas::open(&sandboxes, &disk)?)),
            None => None,
        };
        Ok(Self {
            sandboxes,
            checkpoints,
            envd: cfg.envd,
            launcher: cfg.launcher,
            cgroups: Hierarchy::detect()?,
            cgroup_parent: CGROUP_PARENT.into(),
            net,
            quotas,
            criu: criu::find(),
        })
    }

    /// Puts sandbox cgroups under `parent` instead of [`CGROUP_PARENT`], so
    /// two nodes on one host (a test server beside a real one) never
    /// reconcile each other's sandboxes away.
    pub fn with_cgroup_parent(mut self, parent: &str) -> Self {
        self.cgroup_parent = parent.to_string();
        self
    }

    /// Caps all sandboxes of this driver together at `memory_mib` and
    /// `pids` tasks, on their parent cgroup: whatever their own limits add
    /// up to, the host keeps the rest.
    pub fn limit_all(&self, memory_mib: u64, pids: u64) -> Result<()> {
        let limits = Limits { cpus: None, memory_mib: Some(memory_mib), pids: Some(pids) };
        Ok(self.cgroups.limit_parent(&self.cgroup_parent, &limits)?)
    }

    /// The memory (MiB) and task limits sandbox `id` runs with.
    pub fn limits_of(&self, id: &str) -> Result<(Option<u64>, Option<u64>)> {
        let limits = self.cgroups.open(&self.cgroup_parent, id)?.limits()?;
        Ok((limits.memory_mib, limits.pids))
    }

    /// Where sandboxes' directories live (a quota-limited file system of
    /// their own where the node limits disks).
    pub fn sandboxes_dir(&self) -> &Path {
        &self.sandboxes
    }

    /// Removes every sandbox and, where the driver mounted one, unmounts the
    /// disk image: for tests and for taking a node out of service (a node
    /// that merely restarts keeps the mount).
    pub async fn decommission(self) -> Result<()> {
        self.reconcile(&HashSet::new()).await?;
        match self.quotas.map(Arc::try_unwrap) {
            Some(Ok(quotas)) => Ok(quotas.teardown()?),
            Some(Err(_)) => Err(Error::Task("unmounting the disk image", "it is still in use".into())),
            None => Ok(()),
        }
    }

    /// The network layer, for policy changes of running sandboxes.
    pub fn network(&self) -> Option<&Network> {
        self.net.as_ref()
    }

    /// Where checkpoint `name`'s copy of the sandbox's directory is kept
    /// (its `upper` holds the files as they were): for tools and tests.
    pub fn checkpoint_path(&self, name: &str) -> PathBuf {
        self.checkpoint_fs(name)
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.sandboxes.join(id)
    }

    async fn start(&self, spec: &SandboxSpec, dir: &Path, boot: Boot<'_>) -> Result<Sandbox> {
        let limits =
            Limits { cpus: Some(f64::from(spec.vcpus)), memory_mib: Some(spec.memory_mib), pids: Some(spec.pids) };
        let cgroup = self.cgroups.create(&self.cgroup_parent, &spec.id, &limits)?;
        let net = match (&spec.network, &self.net) {
            (Some(_), Some(net)) => Some(net),
            (Some(_), None) => return Err(Error::InvalidSpec("this node has no sandbox networking".into())),
            (None, _) => None,
        };
        let (upper, work, rootfs) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
        for d in [&upper, &work, &rootfs] {
            std::fs::create_dir_all(d).map_err(Error::io("creating", d))?;
        }
        let envd = match boot {
            Boot::Fresh => self.envd.clone(),
            Boot::Restore(checkpoint) => checkpoint.envd.clone(),
        };
        SandboxMeta { layers: spec.layers.clone(), hostname: spec.hostname.clone(), envd: envd.clone() }.write(dir)?;
        let log = dir.join("launch.log");
        let netns = net.map(|n| n.netns_path(&spec.id));
        let launched = async {
            match (boot, &netns) {
                (Boot::Fresh, _) => {
                    let launch = LaunchSpec {
                        layers: spec.layers.clone(),
                        upper: upper.clone(),
                        work: work.clone(),
                        rootfs: rootfs.clone(),
                        envd,
                        hostname: spec.hostname.clone(),
                        env: spec.env.clone(),
                        access_token: spec.access_token.clone(),
                        cgroup_procs: cgroup.procs_paths(),
                        netns: netns.clone(),
                        resolv_conf: host_resolv_conf(),
                    };
                    start::start(&self.launcher, None, &launch, &log).await
                }
                (Boot::Restore(checkpoint), Some(netns)) => {
                    let restore = RestoreSpec {
                        layers: spec.layers.clone(),
                        upper: upper.clone(),
                        work: work.clone(),
                        rootfs: rootfs.clone(),
                        images: self.checkpoint_dir(&checkpoint.name).join(checkpoint::IMAGES),
                        pidfile: dir.join(INIT_PID),
                        criu: self.criu.clone().ok_or(Error::NoCriu)?,
                        externals: checkpoint.externals.clone(),
                        cgroup_procs: cgroup.procs_paths(),
                        netns: netns.clone(),
                    };
                    start::start(&self.launcher, Some("restore"), &restore, &log).await
                }
                (Boot::Restore(_), None) => Err(Error::InvalidSpec("a restored sandbox needs a network".into())),
            }
        };
        // The launcher starts as soon as the network namespace exists, while
        // its links and rules are built: the two take about as long.
        let ((init_pid, listener), host_addr) = match (net, &spec.network) {
            (Some(net), Some(policy)) => {
                let (pinned, joinable) = tokio::sync::oneshot::channel();
                let network = net.create_notify(&spec.id, policy.clone(), Some(pinned));
                let launched = async {
                    // No namespace means the network failed first; its error says why.
                    joinable.await.map_err(|_| Error::Launch("no network namespace".into()))?;
                    launched.await
                };
                let (network, launched) = tokio::join!(network, launched);
                let network = network?;
                (launched?, Some(network.host_addr))
            }
            _ => (launched.await?, None),
        };
        let pid_file = dir.join(INIT_PID);
        std::fs::write(&pid_file, init_pid.to_string()).map_err(Error::io("writing", &pid_file))?;
        if let Some(listener) = listener {
            fuse::supervise(&spec.id, listener);
        }
        if let Boot::Restore(checkpoint) = boot {
            if checkpoint.hostname != spec.hostname {
                launch::rename_host(init_pid, &spec.hostname)?;
            }
        }
        Ok(Sandbox { id: spec.id.clone(), init_pid, host_addr })
    }

    /// [`Error::NotFound`] unless sandbox `id` exists on this host.
    fn must_exist(&self, id: &str) -> Result<()> {
        if valid_id(id) && self.dir(id).exists() {
            Ok(())
        } else {
            Err(Error::NotFound(id.to_string()))
        }
    }

    /// Freezes or thaws sandbox `id`. A freeze (the first half of a pause)
    /// is refused while the sandbox holds FUSE mounts, which no checkpoint
    /// can save (docs/fuse.md): checked before, and again once frozen, when
    /// no new mount can appear.
    async fn freezer(&self, id: &str, freeze: bool) -> Result<()> {
        self.must_exist(id)?;
        let init_pid = self.init_pid(id);
        if let (true, Some(pid)) = (freeze, init_pid) {
            mountinfo::refuse_fuse(pid)?;
        }
        let cgroup = self.cgroups.open(&self.cgroup_parent, id)?;
        tokio::task::spawn_blocking(move || -> Result<()> {
            if !freeze {
                return Ok(cgroup.thaw()?);
            }
            let was_frozen = cgroup.is_frozen()?;
            cgroup.freeze()?;
            match init_pid.map_or(Ok(()), mountinfo::refuse_fuse) {
                Err(e) if !was_frozen => {
                    cgroup.thaw()?;
                    Err(e)
                }
                other => other,
            }
        })
        .await
        .map_err(|e| Error::Task("the freezer", e.to_string()))?
    }

    /// Starts the sandbox in `dir`; a failure leaves nothing behind.
    pub(super) async fn boot(&self, spec: &SandboxSpec, dir: &Path, boot: Boot<'_>) -> Result<Sandbox> {
        match self.start(spec, dir, boot).await {
            Ok(sandbox) => Ok(sandbox),
            Err(e) => {
                if let Err(cleanup) = self.remove(&spec.id).await {
                    tracing::error!(id = %spec.id, "cleaning up a failed start: {cleanup}");
                }
                Err(e)
            }
        }
    }

    /// The sandbox's directory: a quota-limited subvolume where the node
    /// limits disks, else a plain directory.
    fn make_dir(&self, spec: &SandboxSpec, dir: &Path) -> Result<()> {
        if dir.exists() {
            return Err(Error::AlreadyExists(spec.id.clone()));
        }
        match (&self.quotas, spec.disk_mib) {
            (Some(quotas), mib) => {
                quotas.limit(dir, mib.map_or(u64::MAX, |m| m.saturating_mul(1 << 20)))?;
                Ok(())
            }
            (None, Some(_)) => Err(Error::InvalidSpec("this node has no disk limits".into())),
            (None, None) => std::fs::create_dir(dir).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Error::AlreadyExists(spec.id.clone()),
                _ => Error::io("creating", dir)(e),
            }),
        }
    }

    fn init_pid(&self, id: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir(id).join(INIT_PID)).ok()?.trim().parse().ok()
    }

    /// Removes everything of sandbox `id` that exists, trying every step and
    /// returning the first failure.
    async fn remove(&self, id: &str) -> Result<()> {
        let cgroup = self.cgroups.open(&self.cgroup_parent, id)?;
        let init_pid = self.init_pid(id);
        let dir = self.dir(id);
        let killed = async {
            tokio::task::spawn_blocking(move || -> Result<()> {
                // Killing the cgroup ends envd and everything it started; the
                // overlay and every other mount lived only in the sandbox's
                // mount namespace, which ends with its last process.
                let result = if cgroup.exists() { cgroup.destroy().map_err(Error::from) } else { Ok(()) };
                if let Some(pid) = init_pid {
                    reap::reap(pid, REAP_TIMEOUT);
                }
                result
            })
            .await
            .map_err(|e| Error::Task("killing the sandbox", e.to_string()))?
        };
        let network = async {
            match &self.net {
                Some(net) => match net.destroy(id).await {
                    Err(arbor_net::Error::NotFound(_)) => Ok(()),
                    other => other.map_err(Error::from),
                },
                None => Ok(()),
            }
        };
        // The two are independent and take about as long: the kernel's
        // network lock for the veth, the cgroup emptying for the processes.
        let (killed, network) = tokio::join!(killed, network);
        // Only once nothing runs in it may the directory go.
        let quotas = self.quotas.clone();
        let files = match killed {
            Ok(()) => tokio::task::spawn_blocking(move || remove_dir(quotas.as_deref(), &dir))
                .await
                .map_err(|e| Error::Task("removing the sandbox dir", e.to_string()))?,
            Err(_) => Ok(()),
        };
        killed.and(network).and(files)
    }
}

/// Removes a sandbox's directory: a subvolume in one call, or (a plain
/// directory, e.g. left by a node without disk limits) file by file.
pub(super) fn remove_dir(quotas: Option<&Quotas>, dir: &Path) -> Result<()> {
    if let Some(quotas) = quotas {
        match quotas.release(dir) {
            Err(arbor_disk::Error::NotLimited(_)) => {}
            other => return Ok(other?),
        }
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("removing", dir)(e)),
        _ => Ok(()),
    }
}

/// What `arbor-launch` reports on its stdout (a unix socket of the
/// driver's): envd's host pid and, for a fresh sandbox, the listener of its
/// seccomp filter.
pub fn report(
    stdout: std::os::fd::BorrowedFd<'_>,
    pid: u32,
    listener: Option<std::os::fd::BorrowedFd<'_>>,
) -> Result<()> {
    handoff::send(stdout, pid.to_string().as_bytes(), listener)
}

/// The file in a sandbox's dir holding its init's host pid.
pub(super) const INIT_PID: &str = "init.pid";

/// Refuses a spec no sandbox can be made from.
/// What a new sandbox's `/etc/resolv.conf` says: the host's name servers
/// (systemd-resolved's upstream ones when the host itself asks 127.0.0.53).
pub fn host_resolv_conf() -> Option<String> {
    ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|text| launch::sandbox_resolv_conf(&text))
}

/// Copies an upper dir to `dst` (which must not exist), sharing blocks
/// where the file system can.
async fn copy_upper(upper: &Path, dst: &Path) -> Result<()> {
    let out = tokio::process::Command::new("cp")
        .args(["-a", "--reflink=auto", "--no-target-directory"])
        .arg(upper)
        .arg(dst)
        .output()
        .await
        .map_err(Error::io("running cp for", dst))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(dst);
        return Err(Error::Checkpoint(format!(
            "copying {}: {}",
            upper.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn validate(spec: &SandboxSpec) -> Result<()> {
    if !valid_id(&spec.id) {
        return Err(Error::InvalidSpec(format!("id '{}' must be 1-64 of [a-z0-9-]", spec.id)));
    }
    if spec.layers.is_empty() {
        return Err(Error::InvalidSpec("at least one layer is required".into()));
    }
    if !(1..=8).contains(&spec.vcpus) {
        return Err(Error::InvalidSpec(format!("vcpus must be 1..=8, got {}", spec.vcpus)));
    }
    if spec.memory_mib < 16 {
        return Err(Error::InvalidSpec(format!("memory must be at least 16 MiB, got {}", spec.memory_mib)));
    }
    Ok(())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[async_trait::async_trait]
impl Driver for LinuxDriver {
    async fn create(&self, spec: &SandboxSpec) -> Result<Sandbox> {
        validate(spec)?;
        let dir = self.dir(&spec.id);
        self.make_dir(spec, &dir)?;
        self.boot(spec, &dir, Boot::Fresh).await
    }

    async fn freeze(&self, id: &str) -> Result<()> {
        self.freezer(id, true).await
    }

    async fn thaw(&self, id: &str) -> Result<()> {
        self.freezer(id, false).await
    }

    async fn checkpoint(&self, id: &str, name: &str, after: After) -> Result<Checkpoint> {
        self.take_checkpoint(id, name, after).await
    }

    async fn restore(&self, spec: &SandboxSpec, name: &str) -> Result<Sandbox> {
        validate(spec)?;
        self.restore_sandbox(spec, name).await
    }

    async fn checkpoint_info(&self, name: &str) -> Result<Checkpoint> {
        self.load_checkpoint(name)
    }

    async fn copy_checkpoint(&self, from: &str, to: &str) -> Result<Checkpoint> {
        self.copy_checkpoint_impl(from, to).await
    }

    async fn remove_checkpoint(&self, name: &str) -> Result<()> {
        self.remove_checkpoint_impl(name).await
    }

    async fn checkpoints(&self) -> Result<Vec<String>> {
        self.checkpoint_names(true)
    }

    async fn export_changes(&self, id: &str, dst: &Path) -> Result<()> {
        self.must_exist(id)?;
        copy_upper(&self.dir(id).join("upper"), dst).await
    }

    async fn export_checkpoint_changes(&self, name: &str, dst: &Path) -> Result<()> {
        self.load_checkpoint(name)?;
        copy_upper(&self.checkpoint_fs(name).join("upper"), dst).await
    }

    async fn destroy(&self, id: &str) -> Result<()> {
        self.must_exist(id)?;
        self.remove(id).await
    }

    async fn status(&self, id: &str) -> Result<Status> {
        self.must_exist(id)?;
        let running = self.init_pid(id).is_some_and(reap::alive);
        let cgroup = self.cgroups.open(&self.cgroup_parent, id)?;
        let disk_bytes = match &self.quotas {
            // A plain directory (made before the node limited disks) has no figure.
            Some(quotas) => quotas.usage(&self.dir(id)).ok().map(|u| u.bytes),
            None => None,
        };
        if !cgroup.exists() {
            return Ok(Status { running, disk_bytes, ..Status::default() });
        }
        let stats = cgroup.stats()?;
        Ok(Status {
            running,
            oom_kills: stats.oom_kills,
            cpu_usage_ns: stats.cpu_usage_ns,
            memory_bytes: stats.memory_current,
            tasks: stats.pids_current,
            disk_bytes,
        })
    }

    async fn list(&self) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.sandboxes).map_err(Error::io("listing", &self.sandboxes))?;
        let mut ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| valid_id(n))
            .collect();
        ids.sort();
        Ok(ids)
    }

    async fn reconcile(&self, keep: &HashSet<String>) -> Result<Vec<String>> {
        reconcile::run(self, keep).await
    }
}
