//! `arbor keys`: API keys, managed directly in the server's store
//! (placeholder body: the real implementation fills it in).

use clap::{Args, Subcommand};

/// Flags of `arbor keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub cmd: KeysCmd,
}

/// `arbor keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Create an API key and print it (shown only once)
    Create {
        /// A name to recognise the key by
        #[arg(long)]
        name: Option<String>,
    },
    /// List API keys (never the secrets)
    List,
    /// Revoke an API key
    Revoke {
        /// The key's id
        id: String,
    },
}

/// Runs an `arbor keys` command.
pub async fn run(_args: KeysArgs) -> anyhow::Result<()> {
    anyhow::bail!("arbor keys: not built yet")
}
