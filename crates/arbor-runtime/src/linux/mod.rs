//! The Linux namespaces driver.

pub mod caps;
mod dev;
mod harden;
pub mod launch;
mod mounts;
pub mod seccomp;

use crate::{
    driver::{Driver, Sandbox},
    error::{Error, Result},
    spec::{LaunchSpec, SandboxSpec},
};
use arbor_cgroups::{Hierarchy, Limits};
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Parent cgroup of every sandbox.
pub const CGROUP_PARENT: &str = "arbor";
/// envd's port; the driver waits until it listens.
const ENVD_PORT: u16 = 49983;
/// How long envd gets to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Sandboxes as namespaces + cgroups + overlayfs on this host.
#[derive(Debug)]
pub struct LinuxDriver {
    sandboxes: PathBuf,
    envd: PathBuf,
    launcher: PathBuf,
    cgroups: Hierarchy,
}

impl LinuxDriver {
    /// A driver keeping per-sandbox state under `data_dir/sandboxes`, with
    /// the static `envd` binary and the `arbor-launch` helper.
    pub fn new(data_dir: &Path, envd: PathBuf, launcher: PathBuf) -> Result<Self> {
        let sandboxes = data_dir.join("sandboxes");
        std::fs::create_dir_all(&sandboxes).map_err(Error::io("creating", &sandboxes))?;
        for (what, path) in [("envd binary", &envd), ("arbor-launch binary", &launcher)] {
            if !path.is_file() {
                return Err(Error::InvalidSpec(format!("{what} not found at {}", path.display())));
            }
        }
        Ok(Self { sandboxes, envd, launcher, cgroups: Hierarchy::detect()? })
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.sandboxes.join(id)
    }

    fn launch(&self, spec: &SandboxSpec, dir: &Path, cgroup: &arbor_cgroups::Cgroup) -> Result<u32> {
        let mut env = spec.env.clone();
        if let Some(token) = &spec.access_token {
            env.insert("ARBOR_ENVD_ACCESS_TOKEN".into(), token.clone());
        }
        let launch = LaunchSpec {
            layers: spec.layers.clone(),
            upper: dir.join("upper"),
            work: dir.join("work"),
            rootfs: dir.join("rootfs"),
            envd: self.envd.clone(),
            hostname: spec.hostname.clone(),
            env,
            cgroup_procs: cgroup.procs_paths(),
            netns: spec.netns.clone(),
        };
        for d in [&launch.upper, &launch.work, &launch.rootfs] {
            std::fs::create_dir_all(d).map_err(Error::io("creating", d))?;
        }
        let log = dir.join("envd.log");
        let log_file = std::fs::File::create(&log).map_err(Error::io("creating", &log))?;
        let json = serde_json::to_vec(&launch).map_err(|e| Error::InvalidSpec(e.to_string()))?;
        let mut child = Command::new(&self.launcher)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(Error::io("starting", &self.launcher))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&json).map_err(Error::io("writing the spec to", &self.launcher))?;
        }
        let out = child.wait_with_output().map_err(Error::io("waiting for", &self.launcher))?;
        if !out.status.success() {
            let msg = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(Error::Launch(msg.trim().to_string()));
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| Error::Launch(format!("arbor-launch printed no pid: {:?}", out.stdout)))
    }

    fn remove(&self, id: &str) -> Result<()> {
        let cgroup = self.cgroups.open(CGROUP_PARENT, id)?;
        if cgroup.exists() {
            cgroup.destroy()?;
        }
        let dir = self.dir(id);
        // The overlay is mounted only in the sandbox's own mount namespace,
        // which ended with its last process: what is left is plain files.
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &dir)(e)),
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether the network namespace of `pid` has a TCP socket listening on `port`.
fn listening(pid: u32, port: u16) -> bool {
    let want = format!(":{port:04X} ");
    ["tcp", "tcp6"].iter().any(|f| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{f}"))
            .map(|t| t.lines().skip(1).any(|l| l.contains(&want) && l.split_whitespace().nth(3) == Some("0A")))
            .unwrap_or(false)
    })
}

impl Driver for LinuxDriver {
    fn create(&self, spec: &SandboxSpec) -> Result<Sandbox> {
        if !valid_id(&spec.id) {
            return Err(Error::InvalidSpec(format!("id '{}' must be 1-64 of [a-z0-9-]", spec.id)));
        }
        if spec.layers.is_empty() {
            return Err(Error::InvalidSpec("at least one layer is required".into()));
        }
        if !(1..=8).contains(&spec.vcpus) {
            return Err(Error::InvalidSpec(format!("vcpus must be 1..=8, got {}", spec.vcpus)));
        }
        let dir = self.dir(&spec.id);
        std::fs::create_dir(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::AlreadyExists(spec.id.clone()),
            _ => Error::io("creating", &dir)(e),
        })?;
        let limits =
            Limits { cpus: Some(f64::from(spec.vcpus)), memory_mib: Some(spec.memory_mib), pids: Some(spec.pids) };
        let started = self.cgroups.create(CGROUP_PARENT, &spec.id, &limits).map_err(Error::from).and_then(|cg| {
            let pid = self.launch(spec, &dir, &cg)?;
            let deadline = Instant::now() + READY_TIMEOUT;
            while !listening(pid, ENVD_PORT) {
                if Instant::now() > deadline || !Path::new(&format!("/proc/{pid}")).exists() {
                    let log = std::fs::read_to_string(dir.join("envd.log")).unwrap_or_default();
                    return Err(Error::Launch(format!("envd did not start listening: {}", log.trim())));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok(pid)
        });
        match started {
            Ok(init_pid) => Ok(Sandbox { id: spec.id.clone(), init_pid }),
            Err(e) => {
                if let Err(cleanup) = self.remove(&spec.id) {
                    tracing::error!(id = %spec.id, "cleaning up a failed create: {cleanup}");
                }
                Err(e)
            }
        }
    }

    fn destroy(&self, id: &str) -> Result<()> {
        if !valid_id(id) || !self.dir(id).exists() {
            return Err(Error::NotFound(id.to_string()));
        }
        self.remove(id)
    }

    fn list(&self) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.sandboxes).map_err(Error::io("listing", &self.sandboxes))?;
        let mut ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| valid_id(n))
            .collect();
        ids.sort();
        Ok(ids)
    }
}
