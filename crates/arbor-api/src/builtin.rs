//! Built-in templates that name a start command (`code-interpreter-v1`):
//! their files come with the node's template store (setup builds them with
//! the Dockerfile builder), and each node takes their memory snapshot itself,
//! on first use. CRIU images belong to one host's kernel and CRIU, so they
//! are made where they are restored rather than shipped with the files.

use crate::{
    app::{gone, App, Source},
    error::{ApiError, ApiResult},
};
use arbor_build::{Base, BuildLog, Job, Progress};
use arbor_node::Template;
use sha2::{Digest, Sha256};
use std::{
    sync::PoisonError,
    time::{Duration, Instant},
};

/// How long a built-in template's start command may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// The id of the snapshot job of `template` with `manifest`: it changes
/// whenever its files or its start command do, so a rebuilt template is
/// snapshotted afresh.
fn job_id(template: &Template, manifest: &arbor_layers::RefManifest) -> String {
    let input = serde_json::json!({
        "layers": manifest.layers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "user": manifest.envd.default_user, "workdir": manifest.envd.default_workdir,
        "env": template.env, "start": template.start_cmd, "ready": template.ready_cmd,
    });
    let digest = hex::encode(Sha256::digest(input.to_string().as_bytes()));
    let name: String =
        template.name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    format!("builtin-{name}-{}", &digest[..12])
}

impl App {
    /// What a sandbox of built-in template `template` starts from: its files
    /// with envd started afresh, or, when it names a start command, the
    /// memory snapshot of that command running (taken now if this node has
    /// none yet; concurrent creates wait for the one snapshot).
    pub async fn builtin_source(&self, template: Template) -> ApiResult<Source> {
        let Some(start) = template.start_cmd.clone() else { return Ok(Source::Template(template)) };
        let manifest = self.node.template_manifest(&template.name)?;
        let id = job_id(&template, &manifest);
        let _held = self.locks.lock(&id).await;
        if let Some((name, saved_token)) = self.builtin_snapshots().get(&id).cloned() {
            return Ok(Source::Checkpoint { name, saved_token });
        }
        let workdir = match manifest.envd.default_workdir.as_str() {
            "" => "/home/user".to_string(),
            w => w.to_string(),
        };
        let job = Job {
            id: id.clone(),
            // No steps, so no uploads to read.
            template_id: String::new(),
            base: Base {
                key: id.clone(),
                layers: manifest.layers.clone(),
                user: manifest.envd.default_user.clone(),
                workdir,
                env: template.env.clone(),
            },
            steps: Vec::new(),
            start_cmd: Some(start),
            ready_cmd: template.ready_cmd.clone(),
            ready_timeout: READY_TIMEOUT,
            force: false,
            cpu_count: template.cpu_count,
            memory_mb: template.memory_mb,
            disk_mb: template.disk_mb,
        };
        // Left by a run of this server that ended before recording it.
        self.node.remove_checkpoint(&format!("template-{id}")).await.or_else(gone)?;
        let began = Instant::now();
        let log = BuildLog::memory();
        let built = self.builder.run(&job, &log, &Progress::default()).await.map_err(|e| {
            let tail: Vec<String> = log.tail(20).into_iter().map(|e| e.message).collect();
            ApiError::internal(
                &format!("starting template {} for its memory snapshot", template.name),
                format!("{e}\n{}", tail.join("\n")),
            )
        })?;
        let Some((name, saved_token)) = built.checkpoint else {
            return Err(ApiError::internal("built-in template snapshot", "no checkpoint was taken"));
        };
        tracing::info!(template = %template.name, checkpoint = %name, ms = began.elapsed().as_millis(), "memory snapshot of a built-in template taken");
        self.builtin_snapshots().insert(id, (name.clone(), saved_token.clone()));
        Ok(Source::Checkpoint { name, saved_token })
    }

    fn builtin_snapshots(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (String, String)>> {
        self.builtin.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
