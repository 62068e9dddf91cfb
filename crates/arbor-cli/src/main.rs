//! `arbor`: the Arbor server and the command-line client in one binary.

mod keys;
mod server;

use arbor_cli::{config_cmd, sandbox, snapshot, template};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Arbor: self-hosted sandboxes for AI agents.
#[derive(Debug, Parser)]
#[command(name = "arbor", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the Arbor server: REST API, envd proxy and the local node
    // Boxed: the server has many more flags than any other command.
    Server(Box<server::ServerArgs>),
    /// Create, list, inspect, kill, pause, clone, snapshot and run commands in sandboxes
    #[command(visible_alias = "sbx")]
    Sandbox(sandbox::SandboxArgs),
    /// List and delete snapshots of sandboxes
    Snapshot(snapshot::SnapshotArgs),
    /// Build templates from a Dockerfile; list, inspect and delete them
    #[command(visible_alias = "tpl")]
    Template(template::TemplateArgs),
    /// Manage API keys (on the server's host, directly in its store)
    Keys(keys::KeysArgs),
    /// Manage teams, the tenants API keys belong to (on the server's host)
    Teams(keys::TeamsArgs),
    /// Show or edit the CLI's config file
    Config(config_cmd::ConfigArgs),
}

/// Exit code of a failed `arbor` command (a command run by `exec` reports its own).
const FAILURE: u8 = 1;

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(FAILURE))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<i32, String> = match cli.cmd {
        Cmd::Server(args) => server::run(*args).await.map(|()| 0).map_err(|e| format!("{e:#}")),
        Cmd::Keys(args) => keys::run(args).await.map(|()| 0).map_err(|e| format!("{e:#}")),
        Cmd::Teams(args) => keys::run_teams(args).await.map(|()| 0).map_err(|e| format!("{e:#}")),
        Cmd::Sandbox(args) => sandbox::run(args).await.map_err(|e| e.to_string()),
        Cmd::Snapshot(args) => snapshot::run(args).await.map_err(|e| e.to_string()),
        Cmd::Template(args) => template::run(args).await.map_err(|e| e.to_string()),
        Cmd::Config(args) => config_cmd::run(args).map(|()| 0).map_err(|e| e.to_string()),
    };
    match result {
        Ok(code) => exit(code),
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(FAILURE)
        }
    }
}
