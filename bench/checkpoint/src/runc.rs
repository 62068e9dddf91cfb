//! The peer: Debian's runc driving the CRIU Arbor builds (`runc --criu`),
//! on the same root file system (an overlay of the template's layers with a
//! private upper dir per container), with the same envd as PID 1 and the
//! same memory filler, measured the same way.
//!
//! Synchronous on purpose: timed with blocking calls, and run before the
//! Arbor driver makes this process a sub-reaper (runc and CRIU must reap
//! their own helpers, and restored containers are reparented to whoever is
//! the nearest sub-reaper).

use crate::{
    envd::{self, Target},
    mem,
    result::{Plan, Row, SizeResult},
    stats::dir_bytes,
    PREFIX,
};
use anyhow::{bail, Context};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde_json::json;
use std::{
    os::fd::{AsRawFd, FromRawFd},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

/// The cgroup (in every controller) that holds the containers' cgroups.
const CGROUP_PARENT: &str = "arbor-bench-runc";
/// How long one runc command may take (a 1 GiB restore needs a few seconds).
const RUNC_TIMEOUT: Duration = Duration::from_secs(120);
/// How long envd in a fresh container gets to listen.
const UP_WITHIN: Duration = Duration::from_secs(30);

/// The runc side: its dirs, the base spec, and the CRIU it is told to use.
#[derive(Debug)]
pub struct Runc {
    dir: PathBuf,
    layers: Vec<PathBuf>,
    envd: PathBuf,
    criu: PathBuf,
    spec: serde_json::Value,
    /// Numbers the stderr files of concurrent runc calls.
    calls: AtomicUsize,
}

/// A running container.
#[derive(Debug)]
struct Container {
    id: String,
    bundle: PathBuf,
    pid: u32,
}

impl Runc {
    /// Prepares `dir`: the base spec from `runc spec`, and CRIU's options file.
    pub fn new(dir: PathBuf, layers: Vec<PathBuf>, envd: PathBuf, criu: PathBuf) -> anyhow::Result<Self> {
        let tmpl = dir.join("spec");
        std::fs::create_dir_all(&tmpl).with_context(|| format!("creating {}", tmpl.display()))?;
        let _ = std::fs::remove_file(tmpl.join("config.json"));
        let st = Command::new("runc").args(["spec", "--bundle"]).arg(&tmpl).status().context("runc spec")?;
        if !st.success() {
            bail!("runc spec: {st}");
        }
        let spec = serde_json::from_slice(&std::fs::read(tmpl.join("config.json"))?)?;
        // The same options Arbor gives CRIU for the network: this host has no
        // iptables-restore, which CRIU's default network lock runs. runc has
        // no flag for it, and CRIU 4.1.1 crashes (NULL argv in
        // parse_options) on `network-lock` in the options file runc hands it
        // over RPC (`org.criu.config`); CRIU reads CRIU_CONFIG_FILE itself.
        std::fs::write(dir.join("criu.conf"), "network-lock skip\n")?;
        let envd = envd.canonicalize().with_context(|| format!("finding {}", envd.display()))?;
        Ok(Self { dir, layers, envd, criu, spec, calls: AtomicUsize::new(0) })
    }

    fn runc(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(self.dir.join("state")).arg("--criu").arg(&self.criu);
        c.env("CRIU_CONFIG_FILE", self.dir.join("criu.conf"));
        c.stdin(Stdio::null()).stdout(Stdio::null());
        c
    }

    /// Runs `runc <args> <extra>`; fails with runc's log. The log goes to a
    /// file of runc's own (`--log`) and stdio is `/dev/null`: a container
    /// started with `--detach` inherits runc's stdio, which must neither be a
    /// pipe (held open while it runs) nor a host file (CRIU cannot dump a
    /// descriptor of a file outside the container).
    fn runc_ok(&self, args: &[&str], extra: &[&Path]) -> anyhow::Result<()> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let log_path = self.dir.join(format!("runc-{n}.log"));
        let mut child = self
            .runc()
            .arg("--log")
            .arg(&log_path)
            .args(args)
            .args(extra)
            .stderr(Stdio::null())
            .spawn()
            .context("starting runc")?;
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if start.elapsed() > RUNC_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                bail!("runc {} did not finish within {RUNC_TIMEOUT:?}", args.join(" "));
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
        let _ = std::fs::remove_file(&log_path);
        if !status.success() {
            bail!("runc {}: {status}: {}", args.join(" "), stderr.trim());
        }
        Ok(())
    }

    /// The spec of one container: its own network namespace prepared by the
    /// benchmark (see [`new_netns`]), the template's root, envd bind-mounted
    /// read-only where Arbor puts it as PID 1, the capabilities a process
    /// supervisor needs (Docker's default set), a memory limit the filler
    /// fits in, and a cgroup of our own.
    fn config(&self, id: &str, size_mib: u64, netns: &Path) -> anyhow::Result<Vec<u8>> {
        let mut c = self.spec.clone();
        if let Some(ns) = c["linux"]["namespaces"].as_array_mut() {
            for n in ns.iter_mut().filter(|n| n["type"] == "network") {
                n["path"] = json!(netns);
            }
        }
        c["root"] = json!({"path": "rootfs", "readonly": false});
        c["hostname"] = json!("runc-bench");
        c["process"]["terminal"] = json!(false);
        c["process"]["args"] = json!(["/.arbor/envd"]);
        let caps = json!([
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE"
        ]);
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set] = caps.clone();
        }
        if let Some(m) = c["mounts"].as_array_mut() {
            m.push(json!({"destination": "/.arbor/envd", "type": "bind",
                          "source": self.envd, "options": ["bind", "ro"]}));
        }
        c["linux"]["cgroupsPath"] = json!(format!("/{CGROUP_PARENT}/{id}"));
        c["linux"]["resources"]["memory"] = json!({"limit": (size_mib + 512) << 20});
        c["linux"]["resources"]["pids"] = json!({"limit": 256});
        c["linux"]["resources"]["cpu"] = json!({"quota": 100_000, "period": 100_000});
        Ok(serde_json::to_vec_pretty(&c)?)
    }

    /// A bundle with a freshly mounted overlay root and a new network
    /// namespace; its upper dir starts as a copy of `upper_from` (a clone) or empty.
    fn bundle(&self, id: &str, size_mib: u64, upper_from: Option<&Path>) -> anyhow::Result<PathBuf> {
        let b = self.dir.join("bundles").join(id);
        for d in ["work", "rootfs"] {
            std::fs::create_dir_all(b.join(d))?;
        }
        match upper_from {
            Some(src) => {
                let st = Command::new("cp").arg("-a").arg(src).arg(b.join("upper")).status()?;
                if !st.success() {
                    bail!("copying {}: {st}", src.display());
                }
            }
            None => std::fs::create_dir_all(b.join("upper"))?,
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
        new_netns(&b.join("netns"))?;
        std::fs::write(b.join("config.json"), self.config(id, size_mib, &b.join("netns"))?)?;
        Ok(b)
    }

    fn remove_bundle(b: &Path) -> anyhow::Result<()> {
        for m in ["rootfs", "netns"] {
            match umount2(&b.join(m), MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => bail!("unmounting {}/{m}: {e}", b.display()),
            }
        }
        std::fs::remove_dir_all(b).with_context(|| format!("removing {}", b.display()))
    }

    /// Starts a container with envd as PID 1 and waits until envd answers.
    fn start(&self, id: &str, size_mib: u64) -> anyhow::Result<Container> {
        let bundle = self.bundle(id, size_mib, None)?;
        let pidfile = bundle.join("pid");
        self.runc_ok(&["run", "--detach", "--bundle"], &[&bundle, Path::new("--pid-file"), &pidfile, Path::new(id)])?;
        let pid = read_pid(&pidfile)?;
        envd::wait_health(Target::Netns(pid), UP_WITHIN)?;
        Ok(Container { id: id.into(), bundle, pid })
    }

    /// `runc checkpoint` of `c` into `images`; returns how long it took.
    fn checkpoint(&self, c: &Container, images: &Path, leave_running: bool) -> anyhow::Result<Duration> {
        let work = images.with_extension("work");
        std::fs::create_dir_all(&work)?;
        let mut args = vec!["checkpoint"];
        if leave_running {
            args.push("--leave-running");
        }
        args.extend(["--image-path"]);
        let t0 = Instant::now();
        self.runc_ok(&args, &[images, Path::new("--work-path"), &work, Path::new(&c.id)])
            .with_context(|| format!("CRIU's log: {}", work.join("dump.log").display()))?;
        Ok(t0.elapsed())
    }

    /// `runc restore --detach` of `images` as container `id` in `bundle`;
    /// returns the container once runc returned, and how long that took.
    fn restore(&self, id: &str, bundle: &Path, images: &Path) -> anyhow::Result<(Container, Duration)> {
        let work = bundle.join("restore-work");
        std::fs::create_dir_all(&work)?;
        let pidfile = bundle.join("pid");
        let _ = std::fs::remove_file(&pidfile);
        let t0 = Instant::now();
        self.runc_ok(
            &["restore", "--detach", "--image-path"],
            &[
                images,
                Path::new("--work-path"),
                &work,
                Path::new("--bundle"),
                bundle,
                Path::new("--pid-file"),
                &pidfile,
                Path::new(id),
            ],
        )
        .with_context(|| format!("CRIU's log: {}", work.join("restore.log").display()))?;
        let took = t0.elapsed();
        let pid = read_pid(&pidfile)?;
        Ok((Container { id: id.into(), bundle: bundle.to_path_buf(), pid }, took))
    }

    fn destroy(&self, c: &Container) -> anyhow::Result<()> {
        self.runc_ok(&["delete", "--force", &c.id], &[])?;
        Self::remove_bundle(&c.bundle)
    }

    /// All series at one memory size, on one container that is filled once.
    pub fn series(&self, p: &Plan, stop: &AtomicBool) -> anyhow::Result<SizeResult> {
        let id = format!("{PREFIX}runc-{}", p.size_mib);
        let mut c = self.start(&id, p.size_mib)?;
        let out = self.series_on(&mut c, p, stop);
        // The origin is gone if a checkpoint failed half-way; delete is then a no-op.
        let _ = self.runc_ok(&["delete", "--force", &c.id], &[]);
        Self::remove_bundle(&c.bundle)?;
        out
    }

    fn series_on(&self, c: &mut Container, p: &Plan, stop: &AtomicBool) -> anyhow::Result<SizeResult> {
        envd::fill(Target::Netns(c.pid), p.size_mib)?;
        let mut r = SizeResult::default();
        let images = self.dir.join("images");
        let target = |c: &Container| Target::Netns(c.pid);
        for i in 0..p.warmup + p.runs {
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            // Freeze and thaw with the memory kept: the cgroup freezer.
            let t0 = Instant::now();
            self.runc_ok(&["pause", &c.id], &[])?;
            let freeze = t0.elapsed();
            let t1 = Instant::now();
            self.runc_ok(&["resume", &c.id], &[])?;
            envd::first_command(target(c)).context("first command after runc resume")?;
            let thaw = t1.elapsed();
            // Pause with the memory written out, and restore.
            let img = images.join(format!("pause-{i}"));
            std::fs::create_dir_all(&img)?;
            let dump = self.checkpoint(c, &img, false)?;
            let bytes = dir_bytes(&img)?;
            let t2 = Instant::now();
            let (restored, restore) = self.restore(&c.id, &c.bundle, &img)?;
            *c = restored;
            envd::first_command(target(c)).context("first command after restore")?;
            let first = t2.elapsed();
            remove_images(&img)?;
            if i >= p.warmup {
                r.push(Row::Freeze, freeze);
                r.push(Row::ThawFirst, thaw);
                r.push(Row::PauseReturns, dump);
                r.push(Row::Durable, dump);
                r.push(Row::Restore, restore);
                r.push(Row::RestoreFirst, first);
                r.image_bytes.push(bytes);
            }
        }
        let cg = mem::memory_dir(&format!("{CGROUP_PARENT}/{}", c.id));
        for i in 0..p.warmup + p.clone_runs {
            for (n, count) in [(1, 1), (2, p.clones)] {
                if stop.load(Ordering::Relaxed) {
                    bail!("interrupted");
                }
                let last = i + 1 == p.warmup + p.clone_runs && count > 1;
                if last {
                    r.mem_one = Some(mem::settled(std::slice::from_ref(&cg), p.settle, false)?);
                }
                let img = images.join(format!("clone-{i}-{n}"));
                std::fs::create_dir_all(&img)?;
                let t0 = Instant::now();
                let cloned = self.clone_n(c, &img, p.size_mib, i, count);
                let took = t0.elapsed();
                let (clones, suspend) = match cloned {
                    Ok(v) => v,
                    Err((e, clones)) => {
                        self.destroy_all(&clones);
                        return Err(e);
                    }
                };
                if last {
                    let dirs: Vec<PathBuf> =
                        clones.iter().map(|k| mem::memory_dir(&format!("{CGROUP_PARENT}/{}", k.id))).collect();
                    match mem::settled(&dirs, p.settle, p.ksm) {
                        Ok(u) => r.mem_many = Some(u),
                        Err(e) => {
                            self.destroy_all(&clones);
                            return Err(e);
                        }
                    }
                }
                self.destroy_all(&clones);
                remove_images(&img)?;
                if i >= p.warmup {
                    r.push(Row::CloneSuspend, suspend);
                    r.push(if count == 1 { Row::Clone1 } else { Row::CloneN }, took);
                }
            }
        }
        Ok(r)
    }

    /// Checkpoints `c` with `--leave-running` and restores `count` clones of
    /// it at once, each into a copy of its upper dir, until every clone
    /// answered its first command. Returns the clones (also those made before
    /// a failure, for the caller to remove) and how long `c` was frozen.
    #[allow(clippy::type_complexity)]
    fn clone_n(
        &self,
        c: &Container,
        img: &Path,
        size_mib: u64,
        round: usize,
        count: usize,
    ) -> Result<(Vec<Container>, Duration), (anyhow::Error, Vec<Container>)> {
        let suspend = self.checkpoint(c, img, true).map_err(|e| (e, Vec::new()))?;
        let upper = c.bundle.join("upper");
        let results: Vec<anyhow::Result<Container>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..count)
                .map(|k| {
                    let upper = &upper;
                    s.spawn(move || -> anyhow::Result<Container> {
                        let id = format!("{}-clone-{round}-{k}", c.id);
                        let b = self.bundle(&id, size_mib, Some(upper))?;
                        let (clone, _) = match self.restore(&id, &b, img) {
                            Ok(v) => v,
                            Err(e) => {
                                let _ = Self::remove_bundle(&b);
                                return Err(e);
                            }
                        };
                        envd::first_command(Target::Netns(clone.pid))
                            .map(|()| clone)
                            .with_context(|| format!("first command in clone {id}"))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a clone thread panicked"))))
                .collect()
        });
        let mut clones = Vec::new();
        let mut first_err = None;
        for r in results {
            match r {
                Ok(k) => clones.push(k),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err((e, clones)),
            None => Ok((clones, suspend)),
        }
    }

    fn destroy_all(&self, cs: &[Container]) {
        for c in cs {
            if let Err(e) = self.destroy(c) {
                eprintln!("removing {}: {e:#}", c.id);
            }
        }
    }

    /// Deletes every container in our state dir, unmounts and removes every
    /// bundle and image, and removes our cgroup parents: the leftovers of an
    /// interrupted run, or of this one.
    pub fn cleanup(&self) -> anyhow::Result<()> {
        let out = self.runc().args(["list", "--quiet"]).stdout(Stdio::piped()).stderr(Stdio::null()).output();
        if let Ok(out) = out {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.runc_ok(&["delete", "--force", id], &[]);
            }
        }
        for mp in mounts_under(&self.dir)? {
            umount2(&mp, MntFlags::MNT_DETACH).with_context(|| format!("unmounting {}", mp.display()))?;
        }
        for d in ["bundles", "images"] {
            match std::fs::remove_dir_all(self.dir.join(d)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
            for ctrl in ctrls.flatten() {
                let parent = ctrl.path().join(CGROUP_PARENT);
                if parent.is_dir() {
                    // Children first: runc delete removed its own; a killed
                    // run's may be left, empty once their tasks are gone.
                    if let Ok(kids) = std::fs::read_dir(&parent) {
                        for k in kids.flatten().filter(|k| k.path().is_dir()) {
                            let _ = std::fs::remove_dir(k.path());
                        }
                    }
                    let _ = std::fs::remove_dir(&parent);
                }
            }
        }
        Ok(())
    }

    /// Removes the runc dir (after [`Runc::cleanup`]).
    pub fn remove(&self) -> anyhow::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).context("removing the runc dir"),
            _ => Ok(()),
        }
    }
}

/// A new network namespace with `lo` up, pinned by a bind mount at `pin`.
///
/// The container joins it (its spec names the path), so runc declares it
/// external to CRIU and hands it back on restore, as Arbor does with the
/// namespaces of its network layer. Left to runc, the namespace would be
/// created empty on restore: runc sets CRIU's `--empty-ns net` and does not
/// bring `lo` up again (checkpoint-restore/criu#590), so nothing inside
/// would answer on 127.0.0.1.
fn new_netns(pin: &Path) -> anyhow::Result<()> {
    std::fs::File::create(pin).with_context(|| format!("creating {}", pin.display()))?;
    let pin = pin.to_path_buf();
    // A thread of its own: unshare(CLONE_NEWNET) changes only the calling
    // thread, which ends right after.
    std::thread::spawn(move || -> anyhow::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare(net)")?;
        lo_up()?;
        mount(Some("/proc/thread-self/ns/net"), &pin, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("pinning the netns at {}", pin.display()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the netns thread panicked"))?
}

/// Sets `lo` up in the calling thread's network namespace.
fn lo_up() -> anyhow::Result<()> {
    // SAFETY: a plain socket(2) call; the descriptor is owned right below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write an ifreq, which
    // ifr is, on a valid socket; the flags member is the one they use.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS lo");
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCSIFFLAGS lo");
        }
    }
    Ok(())
}

fn read_pid(file: &Path) -> anyhow::Result<u32> {
    let s = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    s.trim().parse().with_context(|| format!("{}: not a pid: {s:?}", file.display()))
}

/// Removes an image dir and its CRIU work dir.
fn remove_images(img: &Path) -> anyhow::Result<()> {
    std::fs::remove_dir_all(img)?;
    let _ = std::fs::remove_dir_all(img.with_extension("work"));
    Ok(())
}

/// Mount points at or below `dir` in this mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
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
