//! The crate's error type.

use std::path::PathBuf;

/// Why a Dockerfile cannot be turned into a build, or a build context packed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A problem with one instruction; shown as `Dockerfile:<line>: <message>`
    /// like Docker's own messages, so editors can jump to it.
    #[error("Dockerfile:{line}: {message}")]
    Line {
        /// 1-based line of the instruction's first line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A problem with the file as a whole (no FROM, empty file...).
    #[error("Dockerfile: {0}")]
    File(String),
    /// A bad `.dockerignore` pattern.
    #[error(".dockerignore: bad pattern {pattern:?}: {reason}")]
    Ignore {
        /// The pattern as written.
        pattern: String,
        /// Why it was refused.
        reason: String,
    },
    /// Reading the build context failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An error naming a Dockerfile line.
    pub fn line(line: usize, message: impl Into<String>) -> Self {
        Self::Line { line, message: message.into() }
    }

    /// The Dockerfile line this error names, if it names one.
    pub fn line_number(&self) -> Option<usize> {
        match self {
            Self::Line { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
