//! The daemon's shared state.

use crate::{
    auth::Auth,
    config::Config,
    error::Result,
    filesystem::watch::Watchers,
    process::Processes,
    users::{User, UserDb},
};
use std::{collections::HashMap, path::PathBuf, sync::RwLock};

/// Settings `/init` may change after start.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// User for requests that name none.
    pub user: String,
    /// Working directory for processes that give none (else the user's home).
    pub workdir: Option<PathBuf>,
    /// Environment variables for every process.
    pub envs: HashMap<String, String>,
}

/// Everything request handlers share.
#[derive(Debug)]
pub struct Envd {
    /// User and group database.
    pub users: UserDb,
    /// Access-token check.
    pub auth: Auth,
    /// Defaults that `/init` can update.
    pub defaults: RwLock<Defaults>,
    /// Processes started through the process service.
    pub processes: Processes,
    /// Polling watchers of the filesystem service.
    pub watchers: Watchers,
}

impl Envd {
    /// Builds the state from the command line.
    pub fn new(config: &Config) -> Self {
        Self {
            users: UserDb::new(&config.etc_dir),
            auth: Auth::new(config.access_token.clone()),
            defaults: RwLock::new(Defaults {
                user: config.default_user.clone(),
                workdir: None,
                envs: config.envs.iter().cloned().collect(),
            }),
            processes: Processes::default(),
            watchers: Watchers::default(),
        }
    }

    /// A snapshot of the current defaults.
    pub fn defaults(&self) -> Defaults {
        match self.defaults.read() {
            Ok(d) => d.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The user an RPC request runs as: named by its `Authorization: Basic`
    /// header, else the default user.
    pub fn request_user(&self, headers: &http::HeaderMap) -> Result<User> {
        let name = crate::auth::basic_user(headers)?;
        self.user(name.as_deref())
    }

    /// Resolves the user a request runs as: `name`, or the default user.
    pub fn user(&self, name: Option<&str>) -> Result<User> {
        match name {
            Some(n) if !n.is_empty() => self.users.user(n),
            _ => self.users.user(&self.defaults().user),
        }
    }
}
