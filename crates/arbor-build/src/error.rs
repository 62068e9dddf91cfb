//! Errors of a template build.

/// What can go wrong in a build.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (an unknown step type, missing arguments).
    #[error("{0}")]
    Invalid(String),
    /// A step failed; `step` is its 1-based number, `label` what it was.
    #[error("step {step}{} ({label}) failed: {reason}", line.map(|l| format!(", Dockerfile line {l}")).unwrap_or_default())]
    Step {
        /// 1-based step number.
        step: usize,
        /// The Dockerfile line of the step, when the client said.
        line: Option<u32>,
        /// The step as written (`RUN apt-get install ...`).
        label: String,
        /// Why.
        reason: String,
    },
    /// The start or ready command failed or timed out.
    #[error("start command: {0}")]
    Start(String),
    /// The node (sandboxes, checkpoints) failed.
    #[error(transparent)]
    Node(#[from] arbor_node::Error),
    /// The layer store failed.
    #[error(transparent)]
    Layers(#[from] arbor_layers::Error),
    /// Talking to envd in a build sandbox failed.
    #[error("envd: {0}")]
    Envd(String),
    /// A file-system step on the host failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An [`Error::Io`] maker for `map_err`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// Result with the build's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
