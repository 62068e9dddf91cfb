//! The build request, as the SDKs' `Template.build()` and `arbor template
//! build` send it (`TemplateBuildStartV2`), checked into typed steps.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// `POST /v2/templates/{id}/builds/{buildID}`'s body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildRequest {
    /// An Arbor template (`name`, `name:version`, id) or snapshot to build on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_template: Option<String>,
    /// An image: `debian:bookworm` (Arbor's own Debian) or a registry reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    /// Credentials for `from_image`'s registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image_registry: Option<RegistryAuth>,
    /// A process every sandbox of the template starts with, already running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_cmd: Option<String>,
    /// Exits 0 once the start command is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_cmd: Option<String>,
    /// Ignore the cache for every step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// The steps, in order.
    #[serde(default)]
    pub steps: Vec<RawStep>,
}

/// Registry credentials (`{"type": "registry", "username", "password"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAuth {
    /// Only `registry` is supported.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password or token.
    #[serde(default)]
    pub password: Option<String>,
}

/// One step as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawStep {
    /// `RUN`, `COPY`, `ENV`, `WORKDIR`, `USER`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its arguments (see [`Step`]).
    #[serde(default)]
    pub args: Vec<String>,
    /// Rebuild this step and the ones after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// Hash of a COPY's files (the uploaded tar's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_hash: Option<String>,
    /// The Dockerfile line it came from (Arbor's CLI sends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

/// A checked step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `sh -c command`, as `user` or the current one.
    Run {
        /// The command line.
        command: String,
        /// Overrides the current user for this step.
        user: Option<String>,
    },
    /// Files of the build context (uploaded as `files_hash`) to `dest`.
    Copy {
        /// Source path or glob, relative to the context.
        src: String,
        /// Destination; a trailing `/` means "into this directory".
        dest: String,
        /// `user[:group]` owning the copied files.
        owner: Option<String>,
        /// Octal mode of the copied files.
        mode: Option<String>,
        /// The uploaded tar.
        files_hash: String,
    },
    /// Environment variables of later steps and of the template's sandboxes.
    Env(Vec<(String, String)>),
    /// Working directory of later steps and of the template's sandboxes.
    Workdir(String),
    /// User of later steps and the template's default user.
    User(String),
}

impl Step {
    /// Whether the step changes files (and so runs in a build sandbox).
    pub fn touches_files(&self) -> bool {
        matches!(self, Step::Run { .. } | Step::Copy { .. } | Step::Workdir(_))
    }
}

impl RawStep {
    /// The step as a person reads it: `RUN apt-get update`.
    pub fn label(&self) -> String {
        let mut label = format!("{} {}", self.kind.to_uppercase(), self.args.join(" "));
        label.truncate(label.trim_end().len());
        if label.len() > 120 {
            let mut cut = 117;
            while !label.is_char_boundary(cut) {
                cut -= 1;
            }
            label.truncate(cut);
            label.push_str("...");
        }
        label
    }

    /// Checks the step.
    pub fn parse(&self) -> Result<Step> {
        let bad = |why: &str| Error::Invalid(format!("{}: {why}", self.label()));
        let arg = |i: usize| self.args.get(i).map(String::as_str).filter(|a| !a.is_empty()).map(str::to_string);
        match self.kind.to_uppercase().as_str() {
            "RUN" => {
                let command = arg(0).ok_or_else(|| bad("needs a command"))?;
                Ok(Step::Run { command, user: arg(1) })
            }
            "COPY" | "ADD" => {
                let (src, dest) = match (arg(0), arg(1)) {
                    (Some(s), Some(d)) => (s, d),
                    _ => return Err(bad("needs a source and a destination")),
                };
                let files_hash = self.files_hash.clone().ok_or_else(|| bad("has no filesHash"))?;
                if files_hash.is_empty() || !files_hash.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(bad("filesHash must be alphanumeric"));
                }
                if let Some(m) = arg(3) {
                    u32::from_str_radix(&m, 8).map_err(|_| bad("mode is not octal"))?;
                }
                Ok(Step::Copy { src, dest, owner: arg(2), mode: arg(3), files_hash })
            }
            "ENV" | "ARG" => {
                if !self.args.len().is_multiple_of(2) || self.args.is_empty() {
                    return Err(bad("needs key value pairs"));
                }
                let pairs: Vec<(String, String)> =
                    self.args.chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect();
                if pairs.iter().any(|(k, _)| k.is_empty() || k.contains('=')) {
                    return Err(bad("a variable name is empty or has '='"));
                }
                Ok(Step::Env(pairs))
            }
            "WORKDIR" => Ok(Step::Workdir(arg(0).ok_or_else(|| bad("needs a path"))?)),
            "USER" => Ok(Step::User(arg(0).ok_or_else(|| bad("needs a user"))?)),
            other => Err(bad(&format!("unsupported step type {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: &str, args: &[&str]) -> RawStep {
        RawStep { kind: kind.into(), args: args.iter().map(|a| a.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn steps_parse_and_refuse() {
        assert_eq!(raw("RUN", &["echo hi"]).parse().unwrap(), Step::Run { command: "echo hi".into(), user: None });
        assert_eq!(
            raw("RUN", &["id", "root"]).parse().unwrap(),
            Step::Run { command: "id".into(), user: Some("root".into()) }
        );
        assert_eq!(
            raw("ENV", &["A", "1", "B", ""]).parse().unwrap(),
            Step::Env(vec![("A".into(), "1".into()), ("B".into(), "".into())])
        );
        assert!(raw("ENV", &["A"]).parse().is_err());
        assert!(raw("RUN", &[]).parse().is_err());
        assert!(raw("FROB", &["x"]).parse().unwrap_err().to_string().contains("unsupported step type"));
        let mut copy = raw("COPY", &["app", "/srv/", "user:user", "755"]);
        assert!(copy.parse().is_err(), "no files hash");
        copy.files_hash = Some("abc123".into());
        assert!(matches!(copy.parse().unwrap(), Step::Copy { owner: Some(_), mode: Some(_), .. }));
        copy.args[3] = "9z".into();
        assert!(copy.parse().is_err());
        copy.args[3] = String::new();
        copy.files_hash = Some("../x".into());
        assert!(copy.parse().is_err());
    }

    #[test]
    fn request_json_is_the_sdks() {
        let req: BuildRequest = serde_json::from_str(
            r#"{"fromTemplate":"base","startCmd":"srv","readyCmd":"curl x","force":false,
                "steps":[{"type":"COPY","args":["a","/b","",""],"force":false,"filesHash":"ff"},
                         {"type":"RUN","args":["x"],"line":7}]}"#,
        )
        .unwrap();
        assert_eq!(req.from_template.as_deref(), Some("base"));
        assert_eq!(req.steps[0].files_hash.as_deref(), Some("ff"));
        assert_eq!(req.steps[1].line, Some(7));
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(raw("run", &["apt-get", "update"]).label(), "RUN apt-get update");
        assert!(raw("RUN", &[&"x".repeat(500)]).label().len() <= 120);
    }
}
