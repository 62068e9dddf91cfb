//! The peers: `runc run`, `runsc run` and `runsc do` on the same root file
//! system as Arbor (an overlay of the template's layers with a fresh upper
//! dir per container), with the same envd and the same readiness signal.
//!
//! Synchronous on purpose: one container at a time, timed with blocking
//! calls, and run before the Arbor driver makes this process a sub-reaper
//! (the runtimes' own helpers must be reaped by them, not by us).

use crate::stats::Samples;
use anyhow::{bail, Context};
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    poll::{poll, PollFd, PollFlags, PollTimeout},
};
use serde_json::json;
use std::{
    fs::File,
    io::Read,
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

/// How long a container gets to become ready or to go away.
const TIMEOUT: Duration = Duration::from_secs(30);

/// An OCI runtime as the benchmark runs it.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Name in the report.
    pub name: &'static str,
    /// The program.
    pub bin: &'static str,
    /// Global flags (before the subcommand), including `--root`.
    pub global: Vec<String>,
    /// Whether envd's ready descriptor is passed with `--preserve-fds` (runc)
    /// or as the container's stdout through a shell (runsc has no
    /// `--preserve-fds`).
    pub preserve_fds: bool,
}

impl Runtime {
    fn cmd(&self) -> Command {
        let mut c = Command::new(self.bin);
        c.args(&self.global);
        c
    }
}

/// Bundles, state dirs and the spec shared by every container.
#[derive(Debug)]
pub struct Oci {
    dir: PathBuf,
    layers: Vec<PathBuf>,
    envd: PathBuf,
    spec: serde_json::Value,
}

/// Timings of one runtime.
#[derive(Debug, Default)]
pub struct OciResult {
    /// Overlay mount + `run` until envd signals that it listens.
    pub ready: Samples,
    /// `kill <id> KILL` until `run` exits, then unmount and remove the bundle.
    pub destroy: Samples,
    /// Overlay mount + `run` of `/bin/true` until it exits.
    pub true_run: Samples,
}

impl Oci {
    /// Prepares `dir` and the base spec (`runc spec`, adjusted).
    pub fn new(dir: PathBuf, layers: Vec<PathBuf>, envd: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmpl = dir.join("spec");
        std::fs::create_dir_all(&tmpl)?;
        let _ = std::fs::remove_file(tmpl.join("config.json"));
        let st = Command::new("runc").args(["spec", "--bundle"]).arg(&tmpl).status().context("runc spec")?;
        if !st.success() {
            bail!("runc spec: {st}");
        }
        let spec = serde_json::from_slice(&std::fs::read(tmpl.join("config.json"))?)?;
        // OCI runtimes resolve a relative bind source against the bundle, not our cwd.
        let envd = envd.canonicalize().with_context(|| format!("finding {}", envd.display()))?;
        Ok(Self { dir, layers, envd, spec })
    }

    /// The state dir of runtime `name`.
    pub fn state(&self, name: &str) -> PathBuf {
        self.dir.join("state").join(name)
    }

    /// The spec of one container: the template's root, envd bind-mounted
    /// read-only where Arbor puts it, and the limits Arbor's sandboxes get.
    fn config(&self, args: &[&str]) -> serde_json::Value {
        let mut c = self.spec.clone();
        c["root"] = json!({"path": "rootfs", "readonly": false});
        c["hostname"] = json!("oci-bench");
        c["process"]["terminal"] = json!(false);
        c["process"]["args"] = json!(args);
        if let Some(m) = c["mounts"].as_array_mut() {
            m.push(json!({"destination": "/.arbor/envd", "type": "bind",
                          "source": self.envd, "options": ["bind", "ro"]}));
        }
        c["linux"]["resources"]["memory"] = json!({"limit": 512u64 << 20});
        c["linux"]["resources"]["pids"] = json!({"limit": 256});
        c["linux"]["resources"]["cpu"] = json!({"quota": 100_000, "period": 100_000});
        c
    }

    /// A bundle with a freshly mounted overlay root.
    fn bundle(&self, id: &str, config: &[u8]) -> anyhow::Result<PathBuf> {
        let b = self.dir.join("bundles").join(id);
        for d in ["upper", "work", "rootfs"] {
            std::fs::create_dir_all(b.join(d))?;
        }
        let lower: Vec<String> = self.layers.iter().map(|l| l.display().to_string()).collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            b.join("upper").display(),
            b.join("work").display()
        );
        mount(Some("overlay"), &b.join("rootfs"), Some("overlay"), MsFlags::empty(), Some(data.as_str()))
            .context("mounting the overlay")?;
        std::fs::write(b.join("config.json"), config)?;
        Ok(b)
    }

    fn remove_bundle(b: &Path) -> anyhow::Result<()> {
        match umount2(&b.join("rootfs"), MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => bail!("unmounting {}: {e}", b.display()),
        }
        std::fs::remove_dir_all(b).with_context(|| format!("removing {}", b.display()))
    }

    /// `runs` envd starts and `runs` `/bin/true` runs with runtime `rt`,
    /// after `warmup` unmeasured ones of each; stops early when `stop` is set.
    pub fn measure(&self, rt: &Runtime, warmup: usize, runs: usize, stop: &AtomicBool) -> anyhow::Result<OciResult> {
        let envd_args: &[&str] = if rt.preserve_fds {
            &["/.arbor/envd", "--ready-fd", "3"]
        } else {
            &["/bin/sh", "-c", "exec /.arbor/envd --ready-fd 3 3>&1"]
        };
        let envd_cfg = serde_json::to_vec(&self.config(envd_args))?;
        let true_cfg = serde_json::to_vec(&self.config(&["/bin/true"]))?;
        let mut r = OciResult::default();
        for i in 0..warmup + runs {
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let (ready, destroy) = self.envd_cycle(rt, &format!("bench-{}-{i}", rt.name), &envd_cfg)?;
            let t = self.true_cycle(rt, &format!("bench-{}-true-{i}", rt.name), &true_cfg)?;
            if i >= warmup {
                r.ready.push(ready);
                r.destroy.push(destroy);
                r.true_run.push(t);
            }
        }
        Ok(r)
    }

    fn envd_cycle(&self, rt: &Runtime, id: &str, config: &[u8]) -> anyhow::Result<(Duration, Duration)> {
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let log = File::create(self.dir.join(format!("{}.log", rt.name)))?;
        let t0 = Instant::now();
        let b = self.bundle(id, config)?;
        let mut cmd = rt.cmd();
        cmd.arg("run").arg("--bundle").arg(&b).stdin(Stdio::null()).stderr(log);
        if rt.preserve_fds {
            cmd.args(["--preserve-fds", "1"]).stdout(Stdio::null());
            let fd = ready_w.as_raw_fd();
            // SAFETY: between fork and exec only async-signal-safe calls
            // (dup2, fcntl) run; they put the pipe at descriptor 3 without
            // close-on-exec, where runc expects preserved descriptors.
            unsafe {
                cmd.pre_exec(move || {
                    let rc = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(fd, 3) };
                    if rc < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        } else {
            cmd.stdout(Stdio::from(ready_w.try_clone()?));
        }
        let mut child = cmd.arg(id).spawn().with_context(|| format!("starting {}", rt.bin));
        drop(ready_w);
        let outcome = child.as_mut().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|_| wait_byte(ready_r));
        let ready = t0.elapsed();
        // Destroy: SIGKILL to the container's init; the foreground `run`
        // then tears the container down and exits. (`delete --force` on a
        // running container is much slower in both: it polls for the exit,
        // runsc for seconds.)
        let t1 = Instant::now();
        let killed = rt.cmd().args(["kill", id, "KILL"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        if let Ok(child) = &mut child {
            wait_child(child)?;
        }
        Self::remove_bundle(&b)?;
        let destroy = t1.elapsed();
        // Normally a no-op: `run` deleted it already.
        let _ = rt.cmd().args(["delete", "--force", id]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        outcome.with_context(|| format!("{} {id}: envd did not signal readiness", rt.name))?;
        killed.with_context(|| format!("{} kill", rt.bin))?;
        Ok((ready, destroy))
    }

    fn true_cycle(&self, rt: &Runtime, id: &str, config: &[u8]) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let b = self.bundle(id, config)?;
        let st = rt.cmd().arg("run").arg("--bundle").arg(&b).arg(id).stdin(Stdio::null()).status();
        let took = t0.elapsed();
        let _ = rt.cmd().args(["delete", "--force", id]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        Self::remove_bundle(&b)?;
        let st = st.with_context(|| format!("starting {}", rt.bin))?;
        if !st.success() {
            bail!("{} run /bin/true: {st}", rt.name);
        }
        Ok(took)
    }

    /// `runsc do /bin/true` with the template's (single) layer as its root:
    /// gVisor's own quick path, with an in-memory overlay of its own.
    pub fn runsc_do(
        &self,
        global: &[String],
        warmup: usize,
        runs: usize,
        stop: &AtomicBool,
    ) -> anyhow::Result<Samples> {
        let [root] = self.layers.as_slice() else { bail!("runsc do takes one root dir; the template has more layers") };
        let mut s = Samples::default();
        for i in 0..warmup + runs {
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let t0 = Instant::now();
            let st = Command::new("runsc")
                .args(global)
                .args(["do", "-quiet", "-cwd", "/", "-root"])
                .arg(root)
                .arg("/bin/true")
                .stdin(Stdio::null())
                .status()?;
            if !st.success() {
                bail!("runsc do /bin/true: {st}");
            }
            if i >= warmup {
                s.push(t0.elapsed());
            }
        }
        Ok(s)
    }

    /// Deletes every container in the runtimes' state dirs, unmounts and
    /// removes every bundle (not the dir): the leftovers of a run that was interrupted.
    pub fn cleanup(&self, runtimes: &[Runtime]) -> anyhow::Result<()> {
        for rt in runtimes {
            let out = rt.cmd().args(["list", "--quiet"]).stderr(Stdio::null()).output();
            if let Ok(out) = out {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ =
                        rt.cmd().args(["delete", "--force", id]).stdout(Stdio::null()).stderr(Stdio::null()).status();
                }
            }
        }
        let bundles = self.dir.join("bundles");
        if let Ok(entries) = std::fs::read_dir(&bundles) {
            for e in entries.flatten() {
                Self::remove_bundle(&e.path())?;
            }
        }
        for mp in mounts_under(&self.dir)? {
            umount2(&mp, MntFlags::MNT_DETACH).with_context(|| format!("unmounting {}", mp.display()))?;
        }
        Ok(())
    }

    /// Removes the benchmark's OCI dir (after [`Oci::cleanup`]).
    pub fn remove(&self) -> anyhow::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).context("removing the OCI dir"),
            _ => Ok(()),
        }
    }
}

/// Mount points at or below `dir` in this mount namespace, deepest first.
fn mounts_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    Ok(found)
}

/// Waits for one byte on `pipe`; end of file means the writer died first.
fn wait_byte(pipe: OwnedFd) -> anyhow::Result<()> {
    let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(TIMEOUT).unwrap_or(PollTimeout::MAX);
    loop {
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("poll: {e}"),
            Ok(0) => bail!("no readiness within {TIMEOUT:?}"),
            Ok(_) => break,
        }
    }
    let mut byte = [0u8; 1];
    match File::from(pipe).read(&mut byte)? {
        1 => Ok(()),
        _ => bail!("envd exited before it listened"),
    }
}

/// Waits for `child` to exit, killing it after [`TIMEOUT`].
fn wait_child(child: &mut Child) -> anyhow::Result<()> {
    let start = Instant::now();
    while child.try_wait()?.is_none() {
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            child.wait()?;
            bail!("the runtime did not exit within {TIMEOUT:?} of delete -f");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}
