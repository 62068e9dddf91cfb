//! `arbor keys` and `arbor teams`: API keys and the teams they belong to,
//! managed directly in the server's store on its host (whoever holds the
//! database holds the keys). The REST API offers the same to admin keys
//! (`/admin/teams`).

use anyhow::Context;
use arbor_store::{KeyRole, Store, TeamRecord, DEFAULT_TEAM_ID};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Where the server's store is, for both commands.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The server's data dir (its SQLite database is there).
    #[arg(long, env = "ARBOR_DATA_DIR", default_value = "/var/lib/arbor", global = true)]
    pub data_dir: PathBuf,
    /// Database URL, when the server uses another than its data dir's SQLite.
    #[arg(long, env = "ARBOR_DATABASE", global = true)]
    pub database: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Flags of `arbor keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub store: StoreArgs,
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
        /// The team (id or name) the key acts for
        #[arg(long, default_value = DEFAULT_TEAM_ID)]
        team: String,
        /// Let the key manage teams and keys through the API too
        #[arg(long)]
        admin: bool,
    },
    /// List API keys (never the secrets)
    List {
        /// Only this team's keys (id or name)
        #[arg(long)]
        team: Option<String>,
    },
    /// Revoke an API key
    Revoke {
        /// The key's id or display prefix
        id: String,
    },
}

/// Flags of `arbor teams`.
#[derive(Debug, Args)]
pub struct TeamsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub cmd: TeamsCmd,
}

/// `arbor teams` subcommands.
#[derive(Debug, Subcommand)]
pub enum TeamsCmd {
    /// Create a team and print its id (give it keys with `arbor keys create --team`)
    Create {
        /// Its unique name
        name: String,
    },
    /// List teams
    List,
}

async fn open(args: &StoreArgs) -> anyhow::Result<Store> {
    let url = match &args.database {
        Some(url) => url.clone(),
        None => {
            let db = args.data_dir.join("arbor.db");
            anyhow::ensure!(db.exists(), "no Arbor database at {} (is --data-dir right?)", db.display());
            format!("sqlite:{}", db.display())
        }
    };
    Store::open(&url).await.with_context(|| format!("opening {url}"))
}

async fn team(store: &Store, id_or_name: &str) -> anyhow::Result<TeamRecord> {
    store.get_team(id_or_name).await?.with_context(|| format!("no team '{id_or_name}' (see arbor teams list)"))
}

fn when(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_string(), arbor_api::app::rfc3339)
}

fn table(header: &[&str]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(header.iter().copied());
    table
}

/// Runs an `arbor keys` command.
pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let store = open(&args.store).await?;
    let json = args.store.json;
    match args.cmd {
        KeysCmd::Create { name, team: team_arg, admin } => {
            let t = team(&store, &team_arg).await?;
            let role = if admin { KeyRole::Admin } else { KeyRole::Member };
            let key = store.create_key(&t.id, name.as_deref().unwrap_or("cli"), role).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": key.info.id, "name": key.info.name, "teamID": t.id, "admin": admin,
                        "key": key.secret})
                );
            } else {
                println!("{}", key.secret);
                let kind = if admin { "admin key" } else { "key" };
                eprintln!(
                    "created {kind} {} ({}) of team {}; it is shown only now",
                    key.info.id, key.info.name, t.name
                );
            }
        }
        KeysCmd::List { team: team_arg } => {
            let keys = match &team_arg {
                Some(x) => store.team(&team(&store, x).await?.id).list_keys().await?,
                None => store.list_keys().await?,
            };
            if json {
                let items: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({"id": k.id, "name": k.name, "teamID": k.team_id,
                            "admin": k.role == KeyRole::Admin, "prefix": k.prefix, "createdAt": k.created_at,
                            "revokedAt": k.revoked_at, "lastUsedAt": k.last_used_at})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(items));
            } else {
                let names: std::collections::HashMap<String, String> =
                    store.list_teams().await?.into_iter().map(|t| (t.id, t.name)).collect();
                let mut table = table(&["ID", "NAME", "TEAM", "ROLE", "PREFIX", "CREATED", "LAST USED", "STATE"]);
                for k in &keys {
                    let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
                    let role = if k.role == KeyRole::Admin { "admin" } else { "member" };
                    table.add_row([
                        k.id.clone(),
                        k.name.clone(),
                        names.get(&k.team_id).cloned().unwrap_or_else(|| k.team_id.clone()),
                        role.to_string(),
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

/// Runs an `arbor teams` command.
pub async fn run_teams(args: TeamsArgs) -> anyhow::Result<()> {
    let store = open(&args.store).await?;
    match args.cmd {
        TeamsCmd::Create { name } => {
            let t = store.create_team(&name).await.map_err(|e| match e {
                arbor_store::Error::Conflict(_) => anyhow::anyhow!("a team named '{}' exists", name.trim()),
                other => other.into(),
            })?;
            if args.store.json {
                println!("{}", serde_json::json!({"teamID": t.id, "name": t.name, "createdAt": t.created_at}));
            } else {
                println!("{}", t.id);
                eprintln!("created team {}; give it a key with: arbor keys create --team {}", t.name, t.id);
            }
        }
        TeamsCmd::List => {
            let teams = store.list_teams().await?;
            if args.store.json {
                let items: Vec<_> = teams
                    .iter()
                    .map(|t| serde_json::json!({"teamID": t.id, "name": t.name, "createdAt": t.created_at}))
                    .collect();
                println!("{}", serde_json::Value::Array(items));
            } else {
                let mut table = table(&["ID", "NAME", "CREATED"]);
                for t in &teams {
                    table.add_row([t.id.clone(), t.name.clone(), when(Some(t.created_at))]);
                }
                println!("{table}");
            }
        }
    }
    Ok(())
}
