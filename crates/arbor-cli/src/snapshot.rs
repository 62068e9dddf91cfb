//! `arbor snapshot ...`: the snapshots of sandboxes (made with `arbor
//! sandbox snapshot` or by a clone).

use crate::client::Client;
use crate::error::Result;
use crate::opts::{print_json, println, GlobalOpts};
use clap::{Args, Subcommand};
use serde_json::Value;

/// `arbor snapshot ...`
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    opts: GlobalOpts,
    #[command(subcommand)]
    cmd: SnapshotCmd,
}

#[derive(Debug, Subcommand)]
enum SnapshotCmd {
    /// List snapshots, oldest first
    #[command(visible_alias = "ls")]
    List {
        /// Only the snapshots of this sandbox
        #[arg(short, long)]
        sandbox: Option<String>,
    },
    /// Delete snapshots (refused while sandboxes made from them exist)
    #[command(visible_alias = "rm")]
    Delete {
        /// Snapshot ids
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// Runs an `arbor snapshot` command; returns the process exit code.
pub async fn run(args: SnapshotArgs) -> Result<i32> {
    let client = Client::new(&args.opts.settings()?)?;
    match args.cmd {
        SnapshotCmd::List { sandbox } => {
            let items = client.list_snapshots(sandbox.as_deref()).await?;
            if args.opts.json {
                print_json(&Value::Array(items))?;
            } else {
                for item in &items {
                    let id = item.get("snapshotID").and_then(Value::as_str).unwrap_or_default();
                    let names: Vec<&str> = item
                        .get("names")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    println(&format!("{id}\t{}", names.join(",")))?;
                }
            }
        }
        SnapshotCmd::Delete { ids } => {
            for id in ids {
                client.delete_snapshot(&id).await?;
                if !args.opts.json {
                    println(&format!("deleted {id}"))?;
                }
            }
        }
    }
    Ok(0)
}
