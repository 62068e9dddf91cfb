//! Node errors.

/// What a node operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No template of that name on this node.
    #[error("template '{0}' not found")]
    TemplateNotFound(String),
    /// The template's files are unusable.
    #[error("template '{name}': {reason}")]
    BadTemplate {
        /// The template.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A request the node cannot honour (bad limits, unknown id, ...).
    #[error("{0}")]
    Invalid(String),
    /// The node cannot take the sandbox: its memory or tasks would
    /// overcommit the host beyond the configured ratios (a 429: try later).
    #[error("{0}")]
    Exhausted(String),
    /// The node's data disk is below its reserve (a 507).
    #[error("{0}")]
    NoSpace(String),
    /// The layer store failed.
    #[error(transparent)]
    Layers(#[from] arbor_layers::Error),
    /// The runtime failed.
    #[error(transparent)]
    Runtime(#[from] arbor_runtime::Error),
    /// The network layer failed.
    #[error(transparent)]
    Net(#[from] arbor_net::Error),
}

impl Error {
    /// Whether the sandbox or checkpoint the call named does not exist (an
    /// answer callers that clean up treat as done).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Runtime(arbor_runtime::Error::NotFound(_)))
    }
}

/// Result alias for the node.
pub type Result<T, E = Error> = std::result::Result<T, E>;
