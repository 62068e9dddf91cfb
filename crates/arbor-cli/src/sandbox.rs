//! `arbor sandbox ...`: the user's verbs, each one REST call (or a few).

use crate::client::Client;
use crate::error::{Error, Result};
use crate::exec::{exec, ExecRequest};
use crate::opts::{print_json, println, GlobalOpts};
use crate::output;
use crate::query::{parse_pairs, ListQuery};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// `arbor sandbox ...`
#[derive(Debug, Args)]
pub struct SandboxArgs {
    #[command(flatten)]
    opts: GlobalOpts,
    #[command(subcommand)]
    cmd: SandboxCmd,
}

#[derive(Debug, Subcommand)]
enum SandboxCmd {
    /// Start a sandbox from a template and print its id
    #[command(visible_alias = "create")]
    Spawn(SpawnArgs),
    /// List sandboxes
    #[command(visible_alias = "ls")]
    List {
        /// Only these states (comma-separated): running, paused
        #[arg(short, long, value_delimiter = ',', value_name = "STATE")]
        state: Vec<String>,
        /// Only sandboxes with this metadata (repeatable; all must match)
        #[arg(short, long, value_name = "KEY=VALUE")]
        metadata: Vec<String>,
        /// Return at most N sandboxes (one page); without it every page is fetched
        #[arg(short, long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Show one sandbox
    Info {
        /// Sandbox id
        id: String,
    },
    /// Kill sandboxes
    #[command(visible_alias = "shutdown")]
    Kill {
        /// Sandbox ids
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Kill every running sandbox (narrowed by --metadata)
        #[arg(short, long)]
        all: bool,
        /// With --all: only sandboxes with this metadata (repeatable)
        #[arg(short, long, value_name = "KEY=VALUE", requires = "all")]
        metadata: Vec<String>,
    },
    /// Set a sandbox's remaining lifetime: it ends SECONDS from now
    Timeout {
        /// Sandbox id
        id: String,
        /// Seconds from now
        seconds: u64,
    },
    /// Show a sandbox's CPU and memory samples
    Metrics {
        /// Sandbox id
        id: String,
        /// Only samples at or after this unix time (seconds)
        #[arg(long)]
        start: Option<u64>,
        /// Only samples at or before this unix time (seconds)
        #[arg(long)]
        end: Option<u64>,
    },
    /// Resume a paused sandbox, or extend a running one to at least --timeout
    Connect {
        /// Sandbox id
        id: String,
        /// Lifetime in seconds from now
        #[arg(short, long, default_value_t = 300)]
        timeout: u64,
    },
    /// Run a command in a sandbox, streaming its output; exits with its exit code
    Exec(ExecArgs),
    /// Pause a sandbox with its memory; `connect` resumes it
    Pause {
        /// Sandbox ids
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Start running copies of a sandbox (memory and files); prints their ids
    Clone {
        /// Sandbox id
        id: String,
        /// How many clones
        #[arg(short = 'n', long, default_value_t = 1)]
        count: u64,
        /// All or nothing
        #[arg(long)]
        strict: bool,
        /// Lifetime of the clones in seconds (default: the origin's remaining time, or 300)
        #[arg(short, long)]
        timeout: Option<u64>,
    },
    /// Save a sandbox (memory and files) as a snapshot; prints its id, usable as a template
    Snapshot {
        /// Sandbox id
        id: String,
        /// A name for it
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Args)]
struct SpawnArgs {
    /// Template id or alias
    #[arg(default_value = "base")]
    template: String,
    /// Lifetime in seconds; the sandbox is killed afterwards
    #[arg(short, long, default_value_t = 300)]
    timeout: u64,
    /// Metadata to attach (repeatable)
    #[arg(short, long, value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// Environment variable for processes in the sandbox (repeatable)
    #[arg(short, long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// vCPUs (default: the template's)
    #[arg(long, value_name = "N")]
    cpu: Option<u32>,
    /// Memory in MiB (default: the template's)
    #[arg(long, value_name = "N")]
    memory_mb: Option<u32>,
    /// Pause instead of kill when the timeout passes
    #[arg(long)]
    auto_pause: bool,
    /// Deny the sandbox access to the internet
    #[arg(long)]
    no_internet: bool,
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// Sandbox id
    id: String,
    /// OS user to run as (default: envd's default user)
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory (default: the user's home)
    #[arg(short = 'w', long)]
    cwd: Option<String>,
    /// Environment variable for the command (repeatable)
    #[arg(short, long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The command; several words are joined with spaces and run by `bash -l -c`, like ssh
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// The `NewSandbox` body of `POST /sandboxes`, with the fields the Python SDK
/// always sends; `cpuCount`/`memoryMB` only when asked for.
fn new_sandbox_body(a: &SpawnArgs) -> Result<Value> {
    let mut body = json!({
        "templateID": a.template,
        "timeout": a.timeout,
        "metadata": parse_pairs("--metadata", &a.metadata)?,
        "envVars": parse_pairs("--env", &a.env)?,
        "secure": true,
        "allow_internet_access": !a.no_internet,
        "autoPause": a.auto_pause,
    });
    if let Some(cpu) = a.cpu {
        body["cpuCount"] = json!(cpu);
    }
    if let Some(mb) = a.memory_mb {
        body["memoryMB"] = json!(mb);
    }
    Ok(body)
}

/// Runs an `arbor sandbox` command; returns the process exit code.
pub async fn run(args: SandboxArgs) -> Result<i32> {
    let opts = args.opts;
    let client = Client::new(&opts.settings()?)?;
    let json = opts.json;
    match args.cmd {
        SandboxCmd::Spawn(a) => {
            let created = client.create(&new_sandbox_body(&a)?).await?;
            if json {
                print_json(&created)?;
            } else {
                println(created.get("sandboxID").and_then(Value::as_str).unwrap_or_default())?;
            }
        }
        SandboxCmd::List { state, metadata, limit } => {
            let query = ListQuery { state, metadata: parse_pairs("--metadata", &metadata)?, limit };
            let items = client.list(&query).await?;
            if json {
                print_json(&Value::Array(items))?;
            } else {
                println(&output::sandbox_table(&items))?;
            }
        }
        SandboxCmd::Info { id } => {
            let info = client.info(&id).await?;
            if json {
                print_json(&info)?;
            } else {
                println(&output::detail_table(&info))?;
            }
        }
        SandboxCmd::Kill { ids, all, metadata } => return kill(&client, ids, all, &metadata, json).await,
        SandboxCmd::Timeout { id, seconds } => {
            client.set_timeout(&id, seconds).await?;
            if !json {
                println(&format!("{id} now ends in {seconds} s"))?;
            }
        }
        SandboxCmd::Metrics { id, start, end } => {
            let metrics = client.metrics(&id, start, end).await?;
            if json {
                print_json(&metrics)?;
            } else {
                let items = metrics.as_array().cloned().unwrap_or_default();
                println(&output::metrics_table(&items))?;
            }
        }
        SandboxCmd::Connect { id, timeout } => {
            let sandbox = client.connect(&id, timeout).await?;
            if json {
                print_json(&sandbox)?;
            } else {
                println(sandbox.get("sandboxID").and_then(Value::as_str).unwrap_or(&id))?;
            }
        }
        SandboxCmd::Pause { ids } => {
            for id in ids {
                client.pause(&id).await?;
                if !json {
                    println(&format!("paused {id}"))?;
                }
            }
        }
        SandboxCmd::Clone { id, count, strict, timeout } => {
            let answer = client.clone_sandbox(&id, count, strict, timeout).await?;
            if json {
                print_json(&answer)?;
            } else {
                for clone in answer.get("sandboxes").and_then(Value::as_array).into_iter().flatten() {
                    println(clone.get("sandboxID").and_then(Value::as_str).unwrap_or_default())?;
                }
            }
        }
        SandboxCmd::Snapshot { id, name } => {
            let snap = client.create_snapshot(&id, name.as_deref()).await?;
            if json {
                print_json(&snap)?;
            } else {
                println(snap.get("snapshotID").and_then(Value::as_str).unwrap_or_default())?;
            }
        }
        SandboxCmd::Exec(a) => {
            let req = ExecRequest {
                command: a.command.join(" "),
                user: a.user,
                cwd: a.cwd,
                envs: parse_pairs("--env", &a.env)?,
            };
            let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
            return exec(&client, &a.id, &req, &mut out, &mut err, ctrl_c()).await;
        }
    }
    Ok(0)
}

/// Completes on Ctrl-C; never, if the handler cannot be installed.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Kills the given sandboxes (or every running one), going on past failures;
/// each failure is reported on stderr and makes the exit code 1.
async fn kill(client: &Client, ids: Vec<String>, all: bool, metadata: &[String], json: bool) -> Result<i32> {
    let ids = if all {
        let query =
            ListQuery { state: vec!["running".into()], metadata: parse_pairs("--metadata", metadata)?, limit: None };
        let listed = client.list(&query).await?;
        listed.iter().filter_map(|v| v.get("sandboxID").and_then(Value::as_str).map(str::to_string)).collect()
    } else {
        ids
    };
    let (mut killed, mut failed) = (Vec::new(), false);
    for id in ids {
        match client.kill(&id).await {
            Ok(()) => {
                if !json {
                    println(&format!("killed {id}"))?;
                }
                killed.push(id);
            }
            // The server being gone fails every later call the same way.
            Err(e @ Error::Unreachable { .. }) => return Err(e),
            Err(e) => {
                eprintln!("error: {id}: {e}");
                failed = true;
            }
        }
    }
    if json {
        print_json(&json!(killed))?;
    } else if all && killed.is_empty() && !failed {
        println("no running sandboxes")?;
    }
    Ok(i32::from(failed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Top,
    }
    #[derive(Debug, Subcommand)]
    enum Top {
        Sandbox(SandboxArgs),
    }

    fn parse(args: &[&str]) -> std::result::Result<SandboxArgs, clap::Error> {
        let mut argv = vec!["arbor", "sandbox"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| match c.cmd {
            Top::Sandbox(s) => s,
        })
    }

    #[test]
    fn spawn_body_matches_the_sdk_shape() {
        let a = parse(&["spawn", "py", "-t", "60", "-m", "a=b", "--env", "K=V=W", "--cpu", "2", "--json"]).unwrap();
        assert!(a.opts.json);
        let SandboxCmd::Spawn(s) = a.cmd else { panic!("not spawn") };
        assert_eq!(
            new_sandbox_body(&s).unwrap(),
            json!({"templateID":"py","timeout":60,"metadata":{"a":"b"},"envVars":{"K":"V=W"},"secure":true,
                   "allow_internet_access":true,"autoPause":false,"cpuCount":2})
        );
        let SandboxCmd::Spawn(s) = parse(&["spawn"]).unwrap().cmd else { panic!("not spawn") };
        assert_eq!(new_sandbox_body(&s).unwrap()["templateID"], "base");
        assert_eq!(new_sandbox_body(&s).unwrap()["timeout"], 300);
    }

    #[test]
    fn verbs_and_aliases_parse() {
        assert!(
            matches!(parse(&["shutdown", "a", "b"]).unwrap().cmd, SandboxCmd::Kill { ref ids, all: false, .. } if ids.len() == 2)
        );
        assert!(matches!(parse(&["kill", "--all"]).unwrap().cmd, SandboxCmd::Kill { all: true, .. }));
        assert!(parse(&["kill"]).is_err());
        assert!(parse(&["kill", "a", "--all"]).is_err());
        let a = parse(&["list", "--state", "running,paused", "-m", "k=v", "--limit", "5"]).unwrap();
        assert!(matches!(a.cmd, SandboxCmd::List { ref state, limit: Some(5), .. } if state.len() == 2));
        let a = parse(&["exec", "sbx", "-u", "root", "--", "ls", "-la", "/"]).unwrap();
        assert!(
            matches!(a.cmd, SandboxCmd::Exec(ref e) if e.command == ["ls", "-la", "/"] && e.user.as_deref() == Some("root"))
        );
        assert!(parse(&["exec", "sbx"]).is_err());
        assert!(parse(&["--api-url", "http://x", "info", "id"]).unwrap().opts.api_url.is_some());
        assert!(parse(&["info", "id", "--api-key", "k"]).unwrap().opts.api_key.is_some());
    }
}
