//! Command-line configuration of the daemon.

use clap::Parser;
use std::{net::SocketAddr, path::PathBuf};

/// The port envd listens on in every sandbox; the SDKs assume it.
pub use arbor_proto::ENVD_PORT;

/// `arbor-envd` command-line options.
#[derive(Debug, Clone, Parser)]
#[command(name = "arbor-envd", version, about = "Arbor's in-sandbox daemon (envd protocol)")]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "ARBOR_ENVD_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], ENVD_PORT)))]
    pub listen: SocketAddr,

    /// Access token every request must carry in `X-Access-Token`. `/init`
    /// can set it later instead; without either, requests are not checked.
    #[arg(long, env = "ARBOR_ENVD_ACCESS_TOKEN", hide_env_values = true)]
    pub access_token: Option<String>,

    /// The user commands and file operations run as when a request names none.
    #[arg(long, env = "ARBOR_ENVD_DEFAULT_USER", default_value = "user")]
    pub default_user: String,

    /// Directory holding `passwd` and `group`.
    #[arg(long, env = "ARBOR_ENVD_ETC_DIR", default_value = "/etc")]
    pub etc_dir: PathBuf,

    /// Environment variables given to every process, as KEY=VALUE
    /// (repeatable; `/init` can add more).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub envs: Vec<(String, String)>,

    /// A descriptor inherited from the sandbox launcher: envd writes one byte
    /// to it and closes it once it listens, so the host knows the sandbox is
    /// ready without polling.
    #[arg(long, env = "ARBOR_ENVD_READY_FD", hide = true)]
    pub ready_fd: Option<i32>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}
