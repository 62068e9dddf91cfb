//! `arbor keys`: API keys, managed directly in the server's store on its
//! host (the REST API has no key management: whoever holds the database
//! holds the keys).

use anyhow::Context;
use arbor_store::Store;
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Flags of `arbor keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The server's data dir (its SQLite database is there).
    #[arg(long, env = "ARBOR_DATA_DIR", default_value = "/var/lib/arbor", global = true)]
    pub data_dir: PathBuf,
    /// Database URL, when the server uses another than its data dir's SQLite.
    #[arg(long, env = "ARBOR_DATABASE", global = true)]
    pub database: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
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
        /// The key's id or display prefix
        id: String,
    },
}

/// Runs an `arbor keys` command.
pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let url = match &args.database {
        Some(url) => url.clone(),
        None => {
            let db = args.data_dir.join("arbor.db");
            anyhow::ensure!(db.exists(), "no Arbor database at {} (is --data-dir right?)", db.display());
            format!("sqlite:{}", db.display())
        }
    };
    let store = Store::open(&url).await.with_context(|| format!("opening {url}"))?;
    match args.cmd {
        KeysCmd::Create { name } => {
            let key = store.create_key(name.as_deref().unwrap_or("cli")).await?;
            if args.json {
                println!("{}", serde_json::json!({"id": key.info.id, "name": key.info.name, "key": key.secret}));
            } else {
                println!("{}", key.secret);
                eprintln!("created key {} ({}); it is shown only now", key.info.id, key.info.name);
            }
        }
        KeysCmd::List => {
            let keys = store.list_keys().await?;
            if args.json {
                let items: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({"id": k.id, "name": k.name, "prefix": k.prefix, "createdAt": k.created_at,
                            "revokedAt": k.revoked_at, "lastUsedAt": k.last_used_at})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(items));
            } else {
                let mut table = comfy_table::Table::new();
                table.load_preset(comfy_table::presets::NOTHING);
                table.set_header(["ID", "NAME", "PREFIX", "CREATED", "LAST USED", "STATE"]);
                let when = |ms: Option<i64>| ms.map_or_else(|| "-".to_string(), arbor_api::app::rfc3339);
                for k in &keys {
                    let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
                    table.add_row([
                        k.id.clone(),
                        k.name.clone(),
                        format!("{}…", k.prefix),
                        when(Some(k.created_at)),
                        when(k.last_used_at),
                        state.to_string(),
                    ]);
                }
                println!("{table}");
            }
        }
        KeysCmd::Revoke { id } => {
            anyhow::ensure!(store.revoke_key(&id).await?, "no active key '{id}'");
            eprintln!("revoked {id} (servers stop accepting it within 10 s)");
        }
    }
    Ok(())
}
