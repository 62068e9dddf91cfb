//! Errors of the network layer.

use std::io;

/// What can go wrong while wiring a sandbox's network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A sandbox id is not usable as a file and interface alias name.
    #[error("invalid sandbox id {0:?}: use 1-64 characters from [A-Za-z0-9._-], not starting with '.'")]
    InvalidId(String),
    /// The configuration is inconsistent.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// A sandbox with this id already has a network.
    #[error("sandbox {0} already has a network")]
    AlreadyExists(String),
    /// No network is known for this sandbox id.
    #[error("sandbox {0} has no network")]
    NotFound(String),
    /// Every address block of the pool is in use.
    #[error("address pool {0} is exhausted")]
    PoolExhausted(ipnet::Ipv4Net),
    /// A netlink request failed.
    #[error("{what}: {source}")]
    Netlink {
        /// The operation that failed.
        what: String,
        /// The netlink error.
        #[source]
        source: rtnetlink::Error,
    },
    /// `nft` rejected a transaction or could not be run.
    #[error("nft {what}: {detail}")]
    Nft {
        /// The operation that failed.
        what: String,
        /// `nft`'s error output, or why it could not run.
        detail: String,
    },
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The operation that failed.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io { what: what.into(), source: source.into() }
    }

    pub(crate) fn netlink(what: impl Into<String>, source: rtnetlink::Error) -> Self {
        Error::Netlink { what: what.into(), source }
    }

    /// The errno behind a failed netlink request, if the kernel sent one.
    pub(crate) fn netlink_errno(&self) -> Option<i32> {
        match self {
            Error::Netlink { source: rtnetlink::Error::NetlinkError(msg), .. } => Some(msg.raw_code().abs()),
            _ => None,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
