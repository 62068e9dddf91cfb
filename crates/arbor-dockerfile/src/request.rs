//! The plan as the server's build request (template-api.md §3), the COPY
//! uploads it needs, and the way back from a failed step to its line.

use crate::context::{BuildContext, ContextFile};
use crate::error::{Error, Result};
use crate::plan::{Base, Plan, StepKind};
use serde_json::{json, Map, Value};

/// Settings of the build request that do not come from the Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// Replaces the CMD/ENTRYPOINT start command.
    pub start_cmd: Option<String>,
    /// Command that must exit 0 before the template is snapshotted.
    pub ready_cmd: Option<String>,
    /// Rebuild every step, ignoring the layer cache.
    pub force: bool,
}

/// Files of the context that one or more COPY steps need on the server.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Their `filesHash`.
    pub hash: String,
    /// The COPY source.
    pub src: String,
    /// The line of the (first) COPY that needs them.
    pub line: usize,
    /// The files, in tar order.
    pub files: Vec<ContextFile>,
}

impl Plan {
    /// Computes `filesHash` of every COPY step from the context and returns
    /// the distinct uploads, in step order. Errors name the COPY's line.
    pub fn hash_files(&mut self, ctx: &BuildContext) -> Result<Vec<Upload>> {
        let mut uploads: Vec<Upload> = Vec::new();
        for step in self.steps.iter_mut().filter(|s| s.kind == StepKind::Copy) {
            let (src, dest) = (step.args[0].clone(), step.args[1].clone());
            let files = ctx.select(&src).map_err(|e| Error::line(step.line, e))?;
            let hash = ctx.files_hash(&src, &dest, &files)?;
            if !uploads.iter().any(|u| u.hash == hash) {
                uploads.push(Upload { hash: hash.clone(), src, line: step.line, files });
            }
            step.files_hash = Some(hash);
        }
        Ok(uploads)
    }

    /// The start command the build uses: `--start-cmd`, else CMD/ENTRYPOINT.
    pub fn effective_start_cmd<'a>(&'a self, opts: &'a RequestOptions) -> Option<&'a str> {
        opts.start_cmd.as_deref().or(self.start_cmd.as_ref().map(|s| s.command.as_str()))
    }

    /// The body of `POST /v2/templates/{id}/builds/{buildID}`.
    pub fn build_request(&self, opts: &RequestOptions) -> Value {
        let mut body = Map::new();
        match &self.base {
            Base::Template(t) => body.insert("fromTemplate".into(), json!(t)),
            Base::Image(i) => body.insert("fromImage".into(), json!(i)),
        };
        if let Some(cmd) = self.effective_start_cmd(opts) {
            body.insert("startCmd".into(), json!(cmd));
        }
        if let Some(ready) = &opts.ready_cmd {
            body.insert("readyCmd".into(), json!(ready));
        }
        if opts.force {
            body.insert("force".into(), json!(true));
        }
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                let mut step = json!({ "type": s.kind.as_str(), "args": s.args, "line": s.line });
                if let Some(hash) = &s.files_hash {
                    step["filesHash"] = json!(hash);
                }
                step
            })
            .collect();
        body.insert("steps".into(), Value::Array(steps));
        Value::Object(body)
    }

    /// The Dockerfile line of a step as the server names it in a failure:
    /// `base` (the FROM), `finalize` (start/ready command) or the 1-based
    /// step number.
    pub fn line_of_step(&self, step: &str) -> Option<usize> {
        match step {
            "base" => Some(self.base_line),
            "finalize" => self.start_cmd.as_ref().map(|s| s.line),
            n => {
                let n: usize = n.trim().parse().ok()?;
                self.steps.get(n.checked_sub(1)?).map(|s| s.line)
            }
        }
    }
}
