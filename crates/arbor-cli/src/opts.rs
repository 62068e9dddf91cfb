//! Options shared by the user commands (`sandbox`, `config`).

use crate::config::{self, FileConfig, Overrides, Settings};
use crate::error::{Error, Result};
use clap::Args;
use std::path::PathBuf;

/// Where the server is and how to print. Global within each user command, so
/// `arbor sandbox list --json` and `arbor sandbox --json list` both work.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalOpts {
    /// Base URL of the Arbor API [env: ARBOR_API_URL] [default: http://127.0.0.1:3000]
    #[arg(long, global = true, value_name = "URL")]
    pub api_url: Option<String>,
    /// API key sent as X-API-KEY [env: ARBOR_API_KEY]
    #[arg(long, global = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Config file [env: ARBOR_CONFIG] [default: ~/.config/arbor/config.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the API's JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl GlobalOpts {
    /// The config file path (flag, `ARBOR_CONFIG`, XDG/HOME default).
    pub fn config_path(&self) -> Result<PathBuf> {
        let explicit = self.config.clone().or_else(|| env("ARBOR_CONFIG").filter(|s| !s.is_empty()).map(PathBuf::from));
        config::config_path(explicit.as_deref(), &env)
            .ok_or_else(|| Error::Usage("cannot locate the config file: set HOME, XDG_CONFIG_HOME or --config".into()))
    }

    /// The config file's contents (empty if there is none, or no HOME at all).
    pub fn file_config(&self) -> Result<FileConfig> {
        match self.config_path() {
            Ok(path) => config::load(&path),
            Err(_) => Ok(FileConfig::default()),
        }
    }

    /// Effective settings after applying flags, environment and file.
    pub fn settings(&self) -> Result<Settings> {
        let flags = Overrides { api_url: self.api_url.clone(), api_key: self.api_key.clone() };
        Ok(config::resolve(&self.file_config()?, &env, &flags))
    }
}

/// Writes `text` and a newline to stdout; a closed pipe is not an error.
pub fn println(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(Error::Output),
    }
}

/// Pretty-prints JSON to stdout.
pub fn print_json(v: &serde_json::Value) -> Result<()> {
    println(&serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()))
}
