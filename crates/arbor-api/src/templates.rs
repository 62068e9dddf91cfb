//! Templates as the control plane runs them: names and versions in the
//! store, builds on the node's builder, and what a new sandbox of a
//! template starts from.

use crate::{
    app::{gone, now_ms, App, Source},
    error::{ApiError, ApiResult},
};
use arbor_build::{Base, BuildLog, BuildRequest, Built, Job, Level, Progress};
use arbor_layers::{EnvdConfig, RefManifest, REF_SCHEMA};
use arbor_store::{BuildRecord, BuildStatus, SnapshotState, TeamScope, TemplateRecord};
use axum::http::StatusCode;
use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

/// How long a start command may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// The Debian image Arbor builds itself (`base`'s file system, Docker's defaults).
const DEBIAN_ALIASES: &[&str] = &["debian:bookworm", "debian:12", "debian"];

/// A build's live state: its log and how far it is.
#[derive(Debug)]
pub struct Running {
    /// Its log.
    pub log: BuildLog,
    /// Its progress.
    pub progress: Progress,
}

/// The builds this server knows the logs of.
#[derive(Debug)]
pub struct Builds {
    dir: PathBuf,
    live: Mutex<HashMap<String, Arc<Running>>>,
}

impl Builds {
    /// Logs kept in `dir` (`<build id>.log`).
    pub fn new(dir: PathBuf) -> Builds {
        Builds { dir, live: Mutex::default() }
    }

    /// The state of build `id`: live, or its log read back from disk.
    pub fn get(&self, id: &str) -> Arc<Running> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = &self.dir;
        Arc::clone(live.entry(id.to_string()).or_insert_with(|| {
            let _ = std::fs::create_dir_all(dir);
            Arc::new(Running { log: BuildLog::open(&dir.join(format!("{id}.log"))), progress: Progress::default() })
        }))
    }

    /// Forgets build `id` and deletes its log.
    pub fn remove(&self, id: &str) {
        self.live.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
        let _ = std::fs::remove_file(self.dir.join(format!("{id}.log")));
    }
}

/// A template name: what a user may call a template.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with(['.', '-'])
}

/// How the layer-store references of builds start; they share the node's
/// template namespace with the built-in templates but are not built-in.
const BUILD_REF_PREFIX: &str = "build-";

/// The layer-store reference holding a build's result.
fn node_ref(build_id: &str) -> String {
    format!("{BUILD_REF_PREFIX}{}", build_id.to_lowercase())
}

impl App {
    /// Built-in template `name` (`base`, `code-interpreter-v1`, whatever the
    /// node's template store holds but a build's result): every team's to
    /// use, no team's to delete or rebuild.
    pub fn builtin_template(&self, name: &str) -> arbor_node::Result<arbor_node::Template> {
        if name.starts_with(BUILD_REF_PREFIX) {
            return Err(arbor_node::Error::TemplateNotFound(name.to_string()));
        }
        self.node.template(name)
    }

    /// The team's template with id `x`, else the one it named `x`.
    pub async fn template_by_id_or_name(&self, team: TeamScope<'_>, x: &str) -> ApiResult<Option<TemplateRecord>> {
        match team.get_template(x).await? {
            Some(t) => Ok(Some(t)),
            None => Ok(team.template_by_name(x).await?),
        }
    }

    /// Version `version` of template `t`, if it exists (in any status).
    async fn version_of(&self, t: &TemplateRecord, version: u32) -> ApiResult<Option<BuildRecord>> {
        Ok(self.store.builds_of(&t.id).await?.into_iter().find(|b| b.version == version))
    }

    /// A built template of `team` by `name`, `name:version`, template id or
    /// build id: the template and the version (the latest ready one unless
    /// named). `None` when the team has nothing called that.
    pub async fn resolve_template(
        &self,
        team: TeamScope<'_>,
        x: &str,
    ) -> ApiResult<Option<(TemplateRecord, BuildRecord)>> {
        let not_ready = |what: String| ApiError::new(StatusCode::NOT_FOUND, format!("{what} has no ready version"));
        if let Some((name, version)) = x.rsplit_once(':') {
            let Some(t) = team.template_by_name(name).await? else { return Ok(None) };
            let Ok(version) = version.parse::<u32>() else {
                return Err(ApiError::bad_request(format!("'{x}': the version after ':' must be a number")));
            };
            return match self.version_of(&t, version).await? {
                Some(b) if b.status == BuildStatus::Ready => Ok(Some((t, b))),
                Some(b) => Err(ApiError::new(StatusCode::NOT_FOUND, format!("{x} is not ready (it is {})", b.status))),
                None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("template {name} has no version {version}"))),
            };
        }
        if let Some(t) = self.template_by_id_or_name(team, x).await? {
            let latest = self.store.builds_of(&t.id).await?.into_iter().rev().find(|b| b.status == BuildStatus::Ready);
            return match latest {
                Some(b) => Ok(Some((t, b))),
                None => Err(not_ready(format!("template {}", t.name))),
            };
        }
        if let Some(b) = team.get_build(x).await? {
            if b.status != BuildStatus::Ready {
                return Err(not_ready(format!("build {x}")));
            }
            if let Some(t) = team.get_template(&b.template_id).await? {
                return Ok(Some((t, b)));
            }
        }
        Ok(None)
    }

    /// What a sandbox of build `b` starts from.
    pub fn build_source(&self, b: &BuildRecord) -> ApiResult<Source> {
        match (&b.checkpoint, &b.envd_token, &b.node_ref) {
            (Some(name), Some(token), _) => Ok(Source::Checkpoint { name: name.clone(), saved_token: token.clone() }),
            (_, _, Some(node_ref)) => Ok(Source::Template(self.node.template(node_ref)?)),
            _ => Err(ApiError::internal("a ready build without a result", b.id.clone())),
        }
    }

    /// The base of a build request of `team`: its `FROM` is a built-in
    /// template, an image, or one of the team's templates and snapshots.
    async fn build_base(&self, team: TeamScope<'_>, req: &BuildRequest, log: &BuildLog) -> ApiResult<Base> {
        if let Some(image) = req.from_image.as_deref().filter(|i| !i.is_empty()) {
            if DEBIAN_ALIASES.contains(&image) {
                let mut base = self.ref_base("base", "base")?;
                base.key = format!("image:{image}:{}", base.key);
                base.user = "root".into();
                base.workdir = "/".into();
                return Ok(base);
            }
            return Ok(self.builder.image_base(image, req.from_image_registry.as_ref(), log).await?);
        }
        let from = req.from_template.as_deref().filter(|t| !t.is_empty()).unwrap_or("base");
        if let Some((t, b)) = self.resolve_template(team, from).await? {
            let node_ref = b.node_ref.clone().unwrap_or_default();
            return self.ref_base(&node_ref, &format!("{}:{}", t.name, b.version));
        }
        match self.builtin_template(from) {
            Ok(_) => self.ref_base(from, from),
            Err(arbor_node::Error::TemplateNotFound(_)) => {
                let snapshot = team.get_snapshot(from).await?.filter(|s| s.state == SnapshotState::Ready);
                let Some(snap) = snapshot else {
                    return Err(ApiError::bad_request(format!("FROM {from}: no such template or snapshot")));
                };
                // The snapshot's template gives the user, workdir and environment.
                let mut base = match self.resolve_template(team, &snap.template_id).await? {
                    Some((_, b)) => self.ref_base(b.node_ref.as_deref().unwrap_or_default(), &snap.template_id)?,
                    None => self
                        .ref_base(&snap.template_id, &snap.template_id)
                        .or_else(|_| self.ref_base("base", "base"))?,
                };
                base.env.extend(snap.env_vars.clone());
                Ok(self.builder.snapshot_base(&snap.id, &snap.sandbox_id, base, log).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The base made of a layer-store template reference.
    fn ref_base(&self, reference: &str, what: &str) -> ApiResult<Base> {
        let m = self
            .node
            .template_manifest(reference)
            .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, format!("template {what}: {e}")))?;
        let env = arbor_node::template_env(reference, &m).unwrap_or_default();
        let key = m.layers.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let workdir =
            if m.envd.default_workdir.is_empty() { "/home/user".into() } else { m.envd.default_workdir.clone() };
        Ok(Base { key: format!("layers:{key}"), layers: m.layers, user: m.envd.default_user, workdir, env })
    }

    /// Starts build `b` of `template` with `req`, in the background.
    pub async fn start_build(
        self: &Arc<Self>,
        mut b: BuildRecord,
        template: TemplateRecord,
        req: BuildRequest,
    ) -> ApiResult<()> {
        for step in &req.steps {
            step.parse().map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        b.status = BuildStatus::Building;
        b.request = Some(serde_json::to_string(&req).map_err(|e| ApiError::internal("encoding the request", e))?);
        self.store.update_build(&b).await?;
        let app = Arc::clone(self);
        tokio::spawn(async move {
            let running = app.builds.get(&b.id);
            running.log.info(None, &format!("building {} version {} ({})", template.name, b.version, b.id));
            let outcome = app.run_build(&b, &template, &req, &running).await;
            app.finish_build(b, outcome, &running).await;
        });
        Ok(())
    }

    async fn run_build(
        &self,
        b: &BuildRecord,
        template: &TemplateRecord,
        req: &BuildRequest,
        running: &Running,
    ) -> ApiResult<Built> {
        let base = self.build_base(self.store.team(&template.team_id), req, &running.log).await?;
        let job = Job {
            id: b.id.clone(),
            template_id: b.template_id.clone(),
            base,
            steps: req.steps.clone(),
            start_cmd: req.start_cmd.clone().filter(|c| !c.trim().is_empty()),
            ready_cmd: req.ready_cmd.clone().filter(|c| !c.trim().is_empty()),
            ready_timeout: READY_TIMEOUT,
            force: req.force.unwrap_or(false),
            cpu_count: b.cpu_count,
            memory_mb: b.memory_mb,
            disk_mb: b.disk_mb,
        };
        let built = self.builder.run(&job, &running.log, &running.progress).await?;
        let labels = BTreeMap::from([
            ("cpu_count".to_string(), b.cpu_count.to_string()),
            ("memory_mb".to_string(), b.memory_mb.to_string()),
            ("disk_mb".to_string(), b.disk_mb.to_string()),
            (arbor_node::ENV_LABEL.to_string(), serde_json::to_string(&built.env).unwrap_or_else(|_| "{}".into())),
            ("builder".to_string(), format!("arbor-build {}", b.id)),
        ]);
        let manifest = RefManifest {
            schema: REF_SCHEMA,
            layers: built.layers.clone(),
            created: crate::app::rfc3339(now_ms()),
            envd: EnvdConfig {
                version_req: ">=0.1.0".into(),
                mount_point: "/.arbor/envd".into(),
                default_user: built.user.clone(),
                default_workdir: built.workdir.clone(),
            },
            labels,
        };
        if let Err(e) = self.node.save_template(&node_ref(&b.id), &manifest) {
            if let Some((name, _)) = &built.checkpoint {
                let _ = self.node.remove_checkpoint(name).await;
            }
            return Err(ApiError::internal("recording the template", e));
        }
        Ok(built)
    }

    async fn finish_build(&self, mut b: BuildRecord, outcome: ApiResult<Built>, running: &Running) {
        b.finished_at = Some(now_ms());
        match outcome {
            Ok(built) => {
                b.status = BuildStatus::Ready;
                b.node_ref = Some(node_ref(&b.id));
                if let Some((name, token)) = built.checkpoint {
                    b.checkpoint = Some(name);
                    b.envd_token = Some(token);
                }
                running.log.info(None, &format!("template version {} is ready", b.version));
            }
            Err(e) => {
                b.status = BuildStatus::Error;
                b.reason = Some(e.message.clone());
                running.log.add(Level::Error, None, &format!("build failed: {}", e.message));
            }
        }
        if let Err(e) = self.store.update_build(&b).await {
            // Deleted while it ran: what it made goes too.
            tracing::warn!(build = %b.id, "recording the build's end: {e}");
            self.remove_build_result(&b).await;
        }
    }

    /// Removes what a build left on the node (its reference and checkpoint).
    async fn remove_build_result(&self, b: &BuildRecord) {
        if let Some(name) = &b.checkpoint {
            if let Err(e) = self.node.remove_checkpoint(name).await.or_else(gone) {
                tracing::error!(build = %b.id, "removing its checkpoint: {e}");
            }
        }
        let _ = self.node.remove_template(&node_ref(&b.id));
    }

    /// Deletes `x` of `team`: a whole template (by id or name) or one version
    /// (`name:version` or build id). 409 while sandboxes use a version.
    pub async fn delete_template_or_version(self: &Arc<Self>, team: TeamScope<'_>, x: &str) -> ApiResult<()> {
        let (template, builds) = if let Some((name, version)) = x.rsplit_once(':') {
            let t = team.template_by_name(name).await?;
            let t = t.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("template {name} not found")))?;
            let version: u32 = version.parse().map_err(|_| ApiError::bad_request("the version must be a number"))?;
            let b = self.version_of(&t, version).await?;
            let b = b.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("{x} not found")))?;
            (t, vec![b])
        } else if let Some(b) = team.get_build(x).await? {
            let t = team.get_template(&b.template_id).await?;
            (t.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("{x} not found")))?, vec![b])
        } else {
            let t = self.template_by_id_or_name(team, x).await?;
            let t = t.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("template {x} not found")))?;
            let builds = self.store.builds_of(&t.id).await?;
            (t, builds)
        };
        let locks: Vec<_> = {
            let mut held = Vec::new();
            for b in &builds {
                held.push(self.locks.lock(&b.id).await);
            }
            held
        };
        for b in &builds {
            let users = self.store.build_users(&b.id).await?;
            if !users.is_empty() {
                return Err(ApiError::in_use(&format!("{}:{}", template.name, b.version), &users));
            }
            if b.status == BuildStatus::Building {
                return Err(ApiError::conflict(format!("{}:{} is still building", template.name, b.version)));
            }
        }
        for b in &builds {
            self.remove_build_result(b).await;
            self.store.delete_build(&b.id).await?;
            self.builds.remove(&b.id);
        }
        if self.store.builds_of(&template.id).await?.is_empty() {
            self.store.delete_template(&template.id).await?;
            // Its uploads are its own: nothing else may read them.
            if let Err(e) = self.builder.uploads().remove_template(&template.id) {
                tracing::warn!(template = %template.id, "removing the uploaded files: {e}");
            }
        }
        drop(locks);
        Ok(())
    }

    /// After a restart: builds that were running failed; checkpoints of
    /// ready ones are kept (returned, for the stray-checkpoint sweep).
    pub async fn recover_builds(&self) -> arbor_store::Result<Vec<String>> {
        for mut b in self.store.builds_in_status(BuildStatus::Building).await? {
            tracing::warn!(build = %b.id, "build interrupted by a restart");
            b.status = BuildStatus::Error;
            b.reason = Some("interrupted: the server restarted during the build".into());
            b.finished_at = Some(now_ms());
            self.builds.get(&b.id).log.add(Level::Error, None, "build interrupted: the server restarted");
            self.store.update_build(&b).await?;
        }
        let ready = self.store.builds_in_status(BuildStatus::Ready).await?;
        Ok(ready.into_iter().filter_map(|b| b.checkpoint).collect())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        for ok in ["app", "my-app_2", "a.b"] {
            assert!(super::valid_name(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:1", "a b", &"x".repeat(65)] {
            assert!(!super::valid_name(bad), "{bad}");
        }
    }
}
