//! `arbor config`: show and edit the config file.

use crate::config::{self, mask};
use crate::error::Result;
use crate::opts::{print_json, println, GlobalOpts};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

/// `arbor config ...`
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    opts: GlobalOpts,
    #[command(subcommand)]
    cmd: ConfigCmd,
}

/// A key of the config file.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
enum Key {
    /// Base URL of the Arbor API.
    ApiUrl,
    /// API key.
    ApiKey,
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Show the effective settings and where each comes from (the key masked)
    Show,
    /// Set a value in the config file
    Set {
        /// api_url or api_key
        key: Key,
        /// The value
        value: String,
    },
    /// Remove a value from the config file
    Unset {
        /// api_url or api_key
        key: Key,
    },
    /// Print the config file's path
    Path,
}

/// Runs an `arbor config` command.
pub fn run(args: ConfigArgs) -> Result<()> {
    let opts = &args.opts;
    match args.cmd {
        ConfigCmd::Show => {
            let s = opts.settings()?;
            let path = opts.config_path().map(|p| p.display().to_string()).unwrap_or_else(|_| "-".into());
            let key = s.api_key.as_deref().map(mask);
            if opts.json {
                return print_json(&json!({"configFile": path, "apiUrl": s.api_url, "apiKey": key}));
            }
            println(&format!("config file  {path}"))?;
            println(&format!("api_url      {}  ({})", s.api_url, s.api_url_source))?;
            match key {
                Some(k) => println(&format!("api_key      {k}  ({})", s.api_key_source)),
                None => println("api_key      (not set)"),
            }?;
        }
        ConfigCmd::Set { key, value } => {
            let path = opts.config_path()?;
            let mut file = config::load(&path)?;
            match key {
                Key::ApiUrl => file.api_url = Some(value.trim_end_matches('/').to_string()),
                Key::ApiKey => file.api_key = Some(value),
            }
            config::save(&path, &file)?;
            if !opts.json {
                println(&format!("saved to {}", path.display()))?;
            }
        }
        ConfigCmd::Unset { key } => {
            let path = opts.config_path()?;
            let mut file = config::load(&path)?;
            match key {
                Key::ApiUrl => file.api_url = None,
                Key::ApiKey => file.api_key = None,
            }
            config::save(&path, &file)?;
        }
        ConfigCmd::Path => println(&opts.config_path()?.display().to_string())?,
    }
    Ok(())
}
