//! `arbor server` (placeholder: the real implementation replaces this file).

use clap::Args;

/// Flags of `arbor server`.
#[derive(Debug, Args)]
pub struct ServerArgs {}

/// Runs the server.
pub async fn run(_args: ServerArgs) -> anyhow::Result<()> {
    anyhow::bail!("arbor server: not built yet")
}
