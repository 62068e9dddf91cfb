//! The builder: each file-changing step runs in a fresh build sandbox on
//! the layers so far; what it changed becomes one more layer, cached by the
//! step's key. ENV and USER only change the state later steps see.

use crate::{
    cache::{chain, Cache},
    changes, copy,
    envd::{Command, Envd},
    error::{Error, Result},
    log::{BuildLog, Level},
    request::{RawStep, RegistryAuth, Step},
    uploads::{Stored, Uploads},
};
use arbor_dockerfile::resolve_path;
use arbor_layers::{LayerId, LayerStore};
use arbor_node::{Node, StartSpec, Template};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

/// Where envd sits in every sandbox (`arbor_runtime::ENVD_PATH`); its
/// `untar` does a COPY's unpacking.
const ENVD_IN_SANDBOX: &str = "/.arbor/envd";

/// How often the ready command is tried.
const READY_INTERVAL: Duration = Duration::from_millis(300);
/// Without a ready command, the start command counts as ready once it ran this long.
const READY_WITHOUT_CHECK: Duration = Duration::from_secs(1);

/// What a build starts from.
#[derive(Debug, Clone)]
pub struct Base {
    /// Identifies the base for the step cache (its layers, or an image digest).
    pub key: String,
    /// Its layers, bottom first.
    pub layers: Vec<LayerId>,
    /// The user its commands run as.
    pub user: String,
    /// Their working directory.
    pub workdir: String,
    /// Their environment.
    pub env: BTreeMap<String, String>,
}

/// One build to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// The build's id (names its sandboxes and checkpoint).
    pub id: String,
    /// The template being built: its COPY steps read its own uploads only.
    pub template_id: String,
    /// Where it starts.
    pub base: Base,
    /// Its steps.
    pub steps: Vec<RawStep>,
    /// A command to start and keep running in the template's memory snapshot.
    pub start_cmd: Option<String>,
    /// Exits 0 once the start command is ready.
    pub ready_cmd: Option<String>,
    /// How long the start command may take to become ready.
    pub ready_timeout: Duration,
    /// Ignore the cache.
    pub force: bool,
    /// Resources of the build sandboxes (and defaults of the template's).
    pub cpu_count: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Disk in MiB.
    pub disk_mb: u64,
}

/// What a build made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The template's layers, bottom first.
    pub layers: Vec<LayerId>,
    /// Its default user.
    pub user: String,
    /// Its default working directory.
    pub workdir: String,
    /// Its environment.
    pub env: BTreeMap<String, String>,
    /// The memory snapshot with the start command running: (checkpoint, the
    /// envd token it holds).
    pub checkpoint: Option<(String, String)>,
}

/// How far a build is, for status polls.
#[derive(Debug, Default)]
pub struct Progress {
    total: AtomicUsize,
    done: AtomicUsize,
    current: Mutex<Option<String>>,
}

impl Progress {
    /// (steps done, steps in all, the current one).
    pub fn get(&self) -> (usize, usize, Option<String>) {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner).clone();
        (self.done.load(Ordering::Relaxed), self.total.load(Ordering::Relaxed), current)
    }

    fn set(&self, done: usize, current: Option<String>) {
        self.done.store(done, Ordering::Relaxed);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = current;
    }
}

/// The state between steps.
#[derive(Debug, Clone)]
struct State {
    key: String,
    layers: Vec<LayerId>,
    user: String,
    workdir: String,
    env: BTreeMap<String, String>,
}

/// Runs builds on a node.
#[derive(Debug, Clone)]
pub struct Builder {
    node: Arc<Node>,
    cache: Cache,
    uploads: Uploads,
}

/// A running build sandbox.
struct Sandbox {
    id: String,
    envd: Envd,
    lower: Vec<PathBuf>,
}

pub(crate) fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Error::Invalid(format!("random source: {e}")))?;
    Ok(hex::encode(buf))
}

impl Builder {
    /// A builder on `node`, caching under `cache_dir`, reading uploaded
    /// COPY files from `files_dir` (see [`Uploads`]).
    pub fn new(node: Arc<Node>, cache_dir: &Path, files_dir: &Path) -> Builder {
        Builder { node, cache: Cache::new(cache_dir), uploads: Uploads::new(files_dir) }
    }

    /// The uploaded COPY files, per template.
    pub fn uploads(&self) -> &Uploads {
        &self.uploads
    }

    fn store(&self) -> &LayerStore {
        self.node.layers()
    }

    /// The base of a build `FROM` an OCI image: pulled from its registry
    /// into one layer, once per image digest.
    pub async fn image_base(&self, reference: &str, auth: Option<&RegistryAuth>, log: &BuildLog) -> Result<Base> {
        let host = reference.split('/').next().unwrap_or_default();
        if !reference.contains('/') || !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(Error::Invalid(format!(
                "FROM {reference}: name the registry (host[:port]/repository:tag); the only built-in image is debian:bookworm"
            )));
        }
        let opts = arbor_oci::PullOptions {
            username: auth.and_then(|a| a.username.clone()),
            password: auth.and_then(|a| a.password.clone()),
            insecure: None,
        };
        let bad = |e: arbor_oci::Error| Error::Invalid(format!("FROM {reference}: {e}"));
        let (digest, config) = arbor_oci::resolve(reference, &opts).await.map_err(bad)?;
        let key = format!("oci:{digest}");
        let layers = match self.cache.get(&key, self.store()) {
            Some(layers) => {
                log.info(None, &format!("image {reference} ({digest}) cached"));
                layers
            }
            None => {
                log.info(None, &format!("pulling {reference} ({digest})"));
                let dest = self.store().tmp_dir().join(format!("oci-{}", random_hex(8)?));
                if let Err(e) = arbor_oci::pull(reference, &opts, &dest).await {
                    let _ = std::fs::remove_dir_all(&dest);
                    return Err(bad(e));
                }
                let layers: Vec<LayerId> = self.import_tree(dest, None).await?.into_iter().collect();
                self.cache.put(&key, &layers)?;
                layers
            }
        };
        let mut env: BTreeMap<String, String> = config.env.into_iter().collect();
        env.entry("PATH".into())
            .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        Ok(Base {
            key,
            layers,
            user: config.user.unwrap_or_else(|| "root".into()),
            workdir: config.workdir.unwrap_or_else(|| "/".into()),
            env,
        })
    }

    /// The base of a build `FROM` a snapshot (node checkpoint `name` of a
    /// sandbox `origin`): the snapshot's layers plus, as one more layer,
    /// the files its sandbox had changed; the processes are not part of it.
    /// `user`, `workdir` and `env` are the snapshot's template's.
    pub async fn snapshot_base(&self, name: &str, origin: &str, mut base: Base, log: &BuildLog) -> Result<Base> {
        let key = format!("snapshot:{name}");
        base.key = key.clone();
        if let Some(layers) = self.cache.get(&key, self.store()) {
            log.info(None, &format!("snapshot {name} cached"));
            base.layers = layers;
            return Ok(base);
        }
        log.info(None, &format!("taking the files of snapshot {name}"));
        let tree = self.store().tmp_dir().join(format!("snapshot-{}", random_hex(8)?));
        let mut layers = self.node.checkpoint_changes(name, &tree).await?;
        let lower = self.store().lower_dirs(&layers)?;
        layers.extend(self.import_tree(tree, Some((lower, arbor_node::hostname(origin)))).await?);
        self.cache.put(&key, &layers)?;
        base.layers = layers;
        Ok(base)
    }

    /// Runs `job`, logging to `log` and reporting to `progress`.
    pub async fn run(&self, job: &Job, log: &BuildLog, progress: &Progress) -> Result<Built> {
        let steps: Vec<(Step, &RawStep)> =
            job.steps.iter().map(|raw| raw.parse().map(|s| (s, raw))).collect::<Result<_>>()?;
        let total = steps.len() + usize::from(job.start_cmd.is_some());
        progress.total.store(total, Ordering::Relaxed);
        let b = &job.base;
        // Steps run as root in `/` unless they say otherwise, as in a
        // Dockerfile; the template keeps its base's user and working
        // directory unless a USER or WORKDIR step changed them.
        let mut state = State {
            key: b.key.clone(),
            layers: b.layers.clone(),
            user: "root".into(),
            workdir: "/".into(),
            env: b.env.clone(),
        };
        let mut force = job.force;
        let started = Instant::now();
        for (i, (step, raw)) in steps.iter().enumerate() {
            let n = i + 1;
            let label = raw.label();
            progress.set(i, Some(label.clone()));
            log.info(Some(n), &format!("[{n}/{total}] {label}"));
            force |= raw.force.unwrap_or(false);
            let t = Instant::now();
            let at_line = |reason: String| Error::Step { step: n, line: raw.line, label: label.clone(), reason };
            self.step(job, &mut state, n, step, force, log).await.map_err(|e| match e {
                Error::Step { .. } => e,
                other => at_line(other.to_string()),
            })?;
            log.add(Level::Debug, Some(n), &format!("step {n} done in {:.2?}", t.elapsed()));
        }
        if !steps.iter().any(|(s, _)| matches!(s, Step::User(_))) {
            state.user = b.user.clone();
        }
        if !steps.iter().any(|(s, _)| matches!(s, Step::Workdir(_))) {
            state.workdir = b.workdir.clone();
        }
        let checkpoint = match &job.start_cmd {
            Some(cmd) => {
                progress.set(steps.len(), Some(format!("START {cmd}")));
                log.info(None, &format!("[{total}/{total}] starting {cmd:?} for the memory snapshot"));
                Some(self.snapshot_start(job, &state, cmd, log).await?)
            }
            None => None,
        };
        progress.set(total, None);
        log.info(None, &format!("built in {:.2?}: {} layers", started.elapsed(), state.layers.len()));
        Ok(Built { layers: state.layers, user: state.user, workdir: state.workdir, env: state.env, checkpoint })
    }

    async fn step(
        &self,
        job: &Job,
        state: &mut State,
        n: usize,
        step: &Step,
        force: bool,
        log: &BuildLog,
    ) -> Result<()> {
        let mut key_input = serde_json::json!({
            "step": format!("{step:?}"),
            // A file step depends on who runs it, where and with what.
            "user": state.user, "workdir": state.workdir, "env": state.env,
        });
        // The client's files hash proves nothing about the bytes it names
        // (and another template may name the same hash): the cache keys on
        // the digest of the tar this template uploaded.
        let upload = match step {
            Step::Copy { src, files_hash, .. } => {
                let stored = self.uploads.get(&job.template_id, files_hash)?.ok_or_else(|| {
                    Error::Invalid(format!("the files of COPY {src} ({files_hash}) were never uploaded"))
                })?;
                key_input["files_sha256"] = stored.tar_sha256.clone().into();
                Some(stored)
            }
            _ => None,
        };
        let key = chain(&state.key, &key_input);
        match step {
            Step::Env(pairs) => state.env.extend(pairs.iter().cloned()),
            Step::User(user) => state.user = user.clone(),
            Step::Workdir(dir) => state.workdir = resolve_path(&state.workdir, dir),
            Step::Run { .. } | Step::Copy { .. } => {}
        }
        state.key = key.clone();
        if !step.touches_files() {
            return Ok(());
        }
        if !force {
            if let Some(layers) = self.cache.get(&key, self.store()) {
                log.info(Some(n), "cached");
                state.layers = layers;
                return Ok(());
            }
        }
        let sandbox = self.boot(job, state, n).await?;
        let ran = self.step_in(&sandbox, state, n, step, upload.as_ref(), log).await;
        let layer = match ran {
            Ok(()) => self.commit(&sandbox).await?,
            Err(e) => {
                self.discard(&sandbox.id).await;
                return Err(e);
            }
        };
        if let Some(layer) = layer {
            state.layers.push(layer);
        }
        self.cache.put(&key, &state.layers)
    }

    async fn step_in(
        &self,
        sb: &Sandbox,
        state: &State,
        n: usize,
        step: &Step,
        upload: Option<&Stored>,
        log: &BuildLog,
    ) -> Result<()> {
        match step {
            Step::Run { command, user } => {
                let user = user.as_deref().unwrap_or(&state.user);
                let argv = vec!["/bin/sh".into(), "-c".into(), command.clone()];
                self.exec(sb, argv, user, &state.workdir, &state.env, n, log).await
            }
            Step::Workdir(_) => {
                let argv = vec!["mkdir".into(), "-p".into(), state.workdir.clone()];
                self.exec(sb, argv, "root", "/", &state.env, n, log).await?;
                if state.user != "root" {
                    // As BuildKit does: the directory belongs to the current user.
                    let argv = vec!["chown".into(), state.user.clone(), state.workdir.clone()];
                    self.exec(sb, argv, "root", "/", &state.env, n, log).await?;
                }
                Ok(())
            }
            Step::Copy { src, dest, owner, mode, files_hash } => {
                let upload = upload.cloned().ok_or_else(|| {
                    Error::Invalid(format!("the files of COPY {src} ({files_hash}) were never uploaded"))
                })?;
                let scratch = self.store().tmp_dir().join(format!("copy-{}", sb.id));
                let _ = std::fs::remove_dir_all(&scratch);
                std::fs::create_dir_all(&scratch).map_err(Error::io(format!("creating {}", scratch.display())))?;
                let dest = resolve_path(&state.workdir, dest) + if dest.ends_with('/') { "/" } else { "" };
                let payload = {
                    let (src, scratch2) = (src.clone(), scratch.clone());
                    tokio::task::spawn_blocking(move || {
                        upload.verify()?;
                        copy::payload(&upload.tar, &src, &dest, &scratch2)
                    })
                    .await
                    .map_err(|e| Error::Invalid(e.to_string()))?
                };
                let _ = std::fs::remove_dir_all(&scratch);
                let payload = payload?;
                let in_sandbox = format!("/tmp/.arbor-copy-{n}.tar");
                sb.envd.upload(&in_sandbox, payload.tar).await?;
                let mut argv = vec![ENVD_IN_SANDBOX.to_string(), "untar".into(), in_sandbox, payload.dest];
                argv.extend(["--owner".into(), owner.clone().unwrap_or_default()]);
                argv.extend(["--mode".into(), mode.clone().unwrap_or_default()]);
                self.exec(sb, argv, "root", "/", &BTreeMap::new(), n, log).await
            }
            Step::Env(_) | Step::User(_) => Ok(()),
        }
    }

    /// Runs a command in the build sandbox, its output into the log; an
    /// exit code other than 0 fails the step.
    #[allow(clippy::too_many_arguments)]
    async fn exec(
        &self,
        sb: &Sandbox,
        argv: Vec<String>,
        user: &str,
        cwd: &str,
        env: &BTreeMap<String, String>,
        n: usize,
        log: &BuildLog,
    ) -> Result<()> {
        let mut pending = Vec::new();
        let cmd = Command { argv, user, cwd, env };
        let exit = sb
            .envd
            .run(&cmd, |chunk| {
                pending.extend_from_slice(chunk);
                if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                    log.info(Some(n), &String::from_utf8_lossy(&pending[..end]));
                    pending.drain(..=end);
                }
            })
            .await?;
        if !pending.is_empty() {
            log.info(Some(n), &String::from_utf8_lossy(&pending));
        }
        if exit.code != 0 {
            return Err(Error::Invalid(format!("exited with code {} ({})", exit.code, exit.status)));
        }
        Ok(())
    }

    /// Starts a build sandbox on the state's layers.
    async fn boot(&self, job: &Job, state: &State, n: usize) -> Result<Sandbox> {
        let id = format!("b-{}-{n}", job.id.to_lowercase());
        let lower = self.store().lower_dirs(&state.layers)?;
        let template = Template {
            name: format!("build {}", job.id),
            layers: lower.clone(),
            default_user: state.user.clone(),
            default_workdir: Some(state.workdir.clone()),
            env: state.env.clone(),
            cpu_count: job.cpu_count,
            memory_mb: job.memory_mb,
            disk_mb: job.disk_mb,
            start_cmd: None,
            ready_cmd: None,
        };
        let token = random_hex(16)?;
        let spec = StartSpec {
            id: id.clone(),
            cpu_count: job.cpu_count,
            memory_mb: job.memory_mb,
            disk_mb: job.disk_mb,
            env_vars: BTreeMap::new(),
            access_token: token.clone(),
            policy: arbor_net::Policy { internet: true, allow_out: Vec::new(), deny_out: Vec::new() },
        };
        // A sandbox left by an earlier attempt of the same build.
        let _ = self.node.stop(&id).await;
        let started = self.node.start(&template, spec).await?;
        Ok(Sandbox { id, envd: Envd::new(started.host_addr, &token), lower })
    }

    /// Freezes the sandbox, takes its changes as a layer (`None` when there
    /// are none) and removes it.
    async fn commit(&self, sb: &Sandbox) -> Result<Option<LayerId>> {
        let tree = self.store().tmp_dir().join(format!("changes-{}", sb.id));
        let _ = std::fs::remove_dir_all(&tree);
        let exported = async {
            self.node.freeze(&sb.id).await?;
            self.node.export_changes(&sb.id, &tree).await?;
            Ok::<_, Error>(())
        }
        .await;
        self.discard(&sb.id).await;
        exported?;
        self.import_tree(tree, Some((sb.lower.clone(), arbor_node::hostname(&sb.id)))).await
    }

    /// Imports `tree` as a layer on a blocking thread; `tree` is gone
    /// afterwards either way. With `exported_from` (the lower dirs and
    /// hostname of the sandbox that exported it) the tree is a sandbox's
    /// changes: it is cleaned first, and `None` when nothing is left.
    async fn import_tree(
        &self,
        tree: PathBuf,
        exported_from: Option<(Vec<PathBuf>, String)>,
    ) -> Result<Option<LayerId>> {
        let store = self.store().clone();
        tokio::task::spawn_blocking(move || {
            let left = match &exported_from {
                Some((lower, hostname)) => changes::clean(&tree, lower, hostname),
                None => Ok(true),
            };
            let result = match left {
                Ok(true) => store.import_dir(&tree).map(Some).map_err(Error::from),
                Ok(false) => Ok(None),
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_dir_all(&tree);
            result
        })
        .await
        .map_err(|e| Error::Invalid(e.to_string()))?
    }

    async fn discard(&self, id: &str) {
        if let Err(e) = self.node.stop(id).await {
            if !e.is_not_found() {
                tracing::error!(id, "removing a build sandbox: {e}");
            }
        }
    }

    /// Starts the template's start command in a sandbox of the finished
    /// layers, waits until it is ready and saves the sandbox's memory.
    async fn snapshot_start(&self, job: &Job, state: &State, cmd: &str, log: &BuildLog) -> Result<(String, String)> {
        let sb = self.boot(job, state, 0).await?;
        let ready = self.wait_ready(job, &sb, state, cmd, log).await;
        if let Err(e) = ready {
            self.discard(&sb.id).await;
            return Err(e);
        }
        let name = format!("template-{}", job.id.to_lowercase());
        let saved = async {
            self.node.freeze(&sb.id).await?;
            self.node.checkpoint_frozen(&sb.id, &name).await?;
            Ok::<_, Error>(())
        }
        .await;
        self.discard(&sb.id).await;
        saved.map_err(|e| Error::Start(format!("saving the memory snapshot: {e}")))?;
        log.add(Level::Debug, None, &format!("memory snapshot {name} of {} layers", state.layers.len()));
        Ok((name, sb.envd.token().to_string()))
    }

    async fn wait_ready(&self, job: &Job, sb: &Sandbox, state: &State, cmd: &str, log: &BuildLog) -> Result<()> {
        let envd = sb.envd.clone();
        let (user, cwd, env) = (state.user.clone(), state.workdir.clone(), state.env.clone());
        let start_log = log.clone();
        let argv = vec!["/bin/sh".to_string(), "-c".to_string(), cmd.to_string()];
        let mut start = tokio::spawn(async move {
            let cmd = Command { argv, user: &user, cwd: &cwd, env: &env };
            envd.run(&cmd, |chunk| start_log.info(None, &String::from_utf8_lossy(chunk))).await
        });
        let began = Instant::now();
        let result = loop {
            if start.is_finished() {
                let ended = match (&mut start).await {
                    Ok(Ok(exit)) => format!("exited with code {} before it was ready", exit.code),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                break Err(Error::Start(ended));
            }
            let ready = match &job.ready_cmd {
                None => began.elapsed() >= READY_WITHOUT_CHECK,
                Some(check) => {
                    let argv = vec!["/bin/sh".into(), "-c".into(), check.clone()];
                    let cmd = Command { argv, user: &state.user, cwd: &state.workdir, env: &state.env };
                    sb.envd.run(&cmd, |_| {}).await.is_ok_and(|exit| exit.code == 0)
                }
            };
            if ready {
                log.info(None, &format!("ready after {:.2?}", began.elapsed()));
                break Ok(());
            }
            if began.elapsed() > job.ready_timeout {
                let what = job.ready_cmd.as_deref().unwrap_or("(none)");
                break Err(Error::Start(format!(
                    "not ready after {:?}: the ready command {what:?} never exited 0",
                    job.ready_timeout
                )));
            }
            tokio::time::sleep(READY_INTERVAL).await;
        };
        // envd keeps the process when its stream goes; the snapshot must not
        // hold a connection to the build host.
        start.abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        result
    }
}
