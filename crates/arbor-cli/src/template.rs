//! `arbor template ...`: build templates from a Dockerfile (parsed here,
//! built on the server), follow builds, list, show and delete templates.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::follow::{failure_message, follow, Outcome};
use crate::opts::{print_json, println, GlobalOpts};
use crate::output;
use crate::query::parse_pairs;
use arbor_dockerfile::{BuildContext, ParseOptions, Plan, RequestOptions, Upload};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `arbor template ...`
#[derive(Debug, Args)]
pub struct TemplateArgs {
    #[command(flatten)]
    opts: GlobalOpts,
    #[command(subcommand)]
    cmd: TemplateCmd,
}

#[derive(Debug, Subcommand)]
enum TemplateCmd {
    /// Build a new version of a template from a Dockerfile and follow the build
    Build(BuildArgs),
    /// Show a build's logs; with --follow, until it ends (works from any terminal)
    Logs {
        /// Template id
        template_id: String,
        /// Build id
        build_id: String,
        /// Keep polling until the build is ready or failed
        #[arg(short, long)]
        follow: bool,
    },
    /// List templates (their latest version)
    #[command(visible_alias = "ls")]
    List,
    /// Show a template and its versions
    Info {
        /// NAME, NAME:VERSION, template id or build id
        template: String,
    },
    /// Delete templates or versions (refused while sandboxes use them)
    #[command(visible_alias = "rm")]
    Delete {
        /// NAME (all versions), NAME:VERSION, template id or build id
        #[arg(required = true)]
        templates: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// Build context: COPY sources are relative to it
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The Dockerfile [default: DIR/Dockerfile, else DIR/e2b.Dockerfile or DIR/novita.Dockerfile]
    #[arg(short = 'f', long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Template name; building an existing name makes a new version
    #[arg(short, long)]
    name: String,
    /// Default vCPUs of sandboxes made from it (1-8)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=8))]
    cpu_count: Option<u32>,
    /// Default memory of sandboxes made from it, in MiB
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(64..))]
    memory_mb: Option<u32>,
    /// Command started in the template before it is snapshotted (overrides CMD/ENTRYPOINT)
    #[arg(long, value_name = "CMD")]
    start_cmd: Option<String>,
    /// Command that must exit 0 before the template is snapshotted
    #[arg(long, value_name = "CMD")]
    ready_cmd: Option<String>,
    /// Value of an ARG (repeatable)
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    build_args: Vec<String>,
    /// Rebuild every step instead of reusing cached layers
    #[arg(long)]
    no_cache: bool,
}

/// Dockerfile names looked for in the context, in order.
const DOCKERFILES: [&str; 3] = ["Dockerfile", "e2b.Dockerfile", "novita.Dockerfile"];

/// Runs an `arbor template` command; returns the process exit code.
pub async fn run(args: TemplateArgs) -> Result<i32> {
    let opts = args.opts;
    let json = opts.json;
    match args.cmd {
        TemplateCmd::Build(a) => {
            // Everything local is checked before the server is asked anything.
            let (mut plan, ctx) = prepare(&a)?;
            let uploads = plan.hash_files(&ctx).map_err(|e| Error::Usage(e.to_string()))?;
            let client = Client::new(&opts.settings()?)?;
            build(&client, &a, &plan, &ctx, &uploads, json).await
        }
        TemplateCmd::Logs { template_id, build_id, follow: keep } => {
            let client = Client::new(&opts.settings()?)?;
            let status = if keep {
                match follow(&client, &template_id, &build_id, json).await? {
                    Outcome::Ready(s) | Outcome::Failed(s) => s,
                }
            } else {
                let status = client.template_build_status(&template_id, &build_id, 0).await?;
                for line in status.get("logs").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
                {
                    if json {
                        eprintln!("{line}");
                    } else {
                        println(line)?;
                    }
                }
                status
            };
            report_status(&status, None, json)
        }
        TemplateCmd::List => {
            let client = Client::new(&opts.settings()?)?;
            let items = client.list_templates().await?;
            if json {
                print_json(&Value::Array(items))?;
            } else {
                println(&output::template_table(&items))?;
            }
            Ok(0)
        }
        TemplateCmd::Info { template } => {
            let client = Client::new(&opts.settings()?)?;
            let info = client.template_info(&template).await?;
            if json {
                print_json(&info)?;
            } else {
                println(&output::template_detail(&info))?;
            }
            Ok(0)
        }
        TemplateCmd::Delete { templates } => {
            let client = Client::new(&opts.settings()?)?;
            for t in templates {
                match client.delete_template(&t).await {
                    Ok(()) if !json => println(&format!("deleted {t}"))?,
                    Ok(()) => {}
                    Err(Error::Api { status: 409, message, .. }) => {
                        let hint = "; kill (or delete) the sandboxes that use it first".to_string();
                        return Err(Error::Api { status: 409, message: format!("cannot delete {t}: {message}"), hint });
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(0)
        }
    }
}

/// Finds and parses the Dockerfile and opens the context.
fn prepare(a: &BuildArgs) -> Result<(Plan, BuildContext)> {
    let file = match &a.file {
        Some(f) => f.clone(),
        None => dockerfile_in(&a.dir).ok_or_else(|| {
            let names = DOCKERFILES.join(", ");
            Error::Usage(format!("no Dockerfile in {} (looked for {names}); use -f FILE", a.dir.display()))
        })?,
    };
    let text =
        std::fs::read_to_string(&file).map_err(|e| Error::Usage(format!("cannot read {}: {e}", file.display())))?;
    let build_args = parse_pairs("--build-arg", &a.build_args)?;
    let plan = arbor_dockerfile::parse(&text, &ParseOptions { build_args }).map_err(|e| Error::Usage(e.to_string()))?;
    for w in &plan.warnings {
        eprintln!("{w}");
    }
    let ctx = BuildContext::open(&a.dir).map_err(|e| Error::Usage(e.to_string()))?;
    Ok((plan, ctx))
}

/// Creates the build, uploads what the server lacks, starts and follows it.
async fn build(
    client: &Client,
    a: &BuildArgs,
    plan: &Plan,
    ctx: &BuildContext,
    uploads: &[Upload],
    json: bool,
) -> Result<i32> {
    let started = Instant::now();
    let nb = client.create_template_build(&a.name, a.cpu_count, a.memory_mb).await?;
    let (tid, bid) = (nb.template_id.as_str(), nb.build_id.as_str());
    let head = format!("building {}:{} (templateID {tid}, buildID {bid}, version {})", a.name, nb.version, nb.version);
    let hint = format!("follow it from another terminal: arbor template logs {tid} {bid} --follow");
    if json {
        eprintln!("{head}\n{hint}");
    } else {
        println(&format!("{head}\n{hint}"))?;
    }
    for up in uploads {
        upload(client, tid, up, ctx, json).await?;
    }
    let opts = RequestOptions { start_cmd: a.start_cmd.clone(), ready_cmd: a.ready_cmd.clone(), force: a.no_cache };
    client.start_template_build(tid, bid, &plan.build_request(&opts)).await?;
    let outcome = tokio::select! {
        outcome = follow(client, tid, bid, json) => outcome?,
        () = ctrl_c() => {
            eprintln!("stopped following; the build goes on: arbor template logs {tid} {bid} --follow");
            return Ok(130);
        }
    };
    let status = match &outcome {
        Outcome::Ready(s) | Outcome::Failed(s) => s,
    };
    if matches!(outcome, Outcome::Ready(_)) && !json {
        println(&format!("built {}:{} in {:.1} s", a.name, nb.version, started.elapsed().as_secs_f64()))?;
    }
    report_status(status, Some(plan), json)
}

async fn upload(client: &Client, tid: &str, up: &Upload, ctx: &BuildContext, json: bool) -> Result<()> {
    let Some(url) = client.template_files_url(tid, &up.hash).await? else { return Ok(()) };
    let tar = ctx.tar_gz(&up.files).map_err(|e| Error::Usage(format!("Dockerfile:{}: {e}", up.line)))?;
    let text = format!("uploading {} ({} entries, {} bytes)", up.src, up.files.len(), tar.len());
    if json {
        eprintln!("{text}");
    } else {
        println(&text)?;
    }
    client.upload_files(&url, tar).await
}

/// Prints the end of a build (JSON or, on failure, the reason) and gives the exit code.
fn report_status(status: &Value, plan: Option<&Plan>, json: bool) -> Result<i32> {
    if json {
        print_json(status)?;
    }
    match status.get("status").and_then(Value::as_str) {
        Some("error") => {
            eprintln!("error: build failed: {}", failure_message(status, plan));
            Ok(1)
        }
        Some("ready") => Ok(0),
        Some(other) if !json => {
            println(&format!("build is {other}"))?;
            Ok(0)
        }
        _ => Ok(0),
    }
}

/// Completes on Ctrl-C; never, if the handler cannot be installed.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The Dockerfile a build of `dir` uses when `-f` is not given.
pub fn dockerfile_in(dir: &Path) -> Option<PathBuf> {
    DOCKERFILES.iter().map(|n| dir.join(n)).find(|p| p.is_file())
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
        Template(TemplateArgs),
    }

    fn parse(args: &[&str]) -> std::result::Result<TemplateArgs, clap::Error> {
        let mut argv = vec!["arbor", "template"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| match c.cmd {
            Top::Template(t) => t,
        })
    }

    #[test]
    fn build_flags() {
        let a = parse(&[
            "build",
            "ctx",
            "-f",
            "x.Dockerfile",
            "--name",
            "app",
            "--cpu-count",
            "2",
            "--memory-mb",
            "1024",
            "--start-cmd",
            "srv",
            "--ready-cmd",
            "curl -f x",
            "--build-arg",
            "A=1",
            "--build-arg",
            "B=2",
            "--no-cache",
        ])
        .unwrap();
        let TemplateCmd::Build(b) = a.cmd else { panic!("not build") };
        assert_eq!(b.dir, PathBuf::from("ctx"));
        assert_eq!(b.file, Some(PathBuf::from("x.Dockerfile")));
        assert_eq!((b.name.as_str(), b.cpu_count, b.memory_mb), ("app", Some(2), Some(1024)));
        assert_eq!((b.start_cmd.as_deref(), b.ready_cmd.as_deref()), (Some("srv"), Some("curl -f x")));
        assert_eq!(b.build_args, ["A=1", "B=2"]);
        assert!(b.no_cache);
        let TemplateCmd::Build(b) = parse(&["build", "-n", "app"]).unwrap().cmd else { panic!("not build") };
        assert_eq!((b.dir, b.file, b.cpu_count, b.no_cache), (PathBuf::from("."), None, None, false));
    }

    #[test]
    fn build_flag_limits() {
        assert!(parse(&["build"]).is_err(), "--name is required");
        assert!(parse(&["build", "-n", "a", "--cpu-count", "0"]).is_err());
        assert!(parse(&["build", "-n", "a", "--cpu-count", "9"]).is_err());
        assert!(parse(&["build", "-n", "a", "--cpu-count", "8"]).is_ok());
        assert!(parse(&["build", "-n", "a", "--memory-mb", "10"]).is_err());
    }

    #[test]
    fn other_verbs() {
        assert!(matches!(parse(&["ls", "--json"]).unwrap().cmd, TemplateCmd::List));
        assert!(parse(&["ls", "--json"]).unwrap().opts.json);
        assert!(
            matches!(parse(&["info", "app:2"]).unwrap().cmd, TemplateCmd::Info { ref template } if template == "app:2")
        );
        assert!(
            matches!(parse(&["rm", "a", "b:1"]).unwrap().cmd, TemplateCmd::Delete { ref templates } if templates.len() == 2)
        );
        assert!(parse(&["delete"]).is_err());
        assert!(matches!(parse(&["logs", "t", "b", "-f"]).unwrap().cmd, TemplateCmd::Logs { follow: true, .. }));
        assert!(parse(&["logs", "t"]).is_err());
    }

    #[test]
    fn dockerfile_lookup_and_local_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(dockerfile_in(dir.path()), None);
        std::fs::write(dir.path().join("e2b.Dockerfile"), "FROM base\nCOPY missing /x\n").unwrap();
        assert_eq!(dockerfile_in(dir.path()), Some(dir.path().join("e2b.Dockerfile")));
        let d = dir.path().to_str().unwrap();
        let TemplateCmd::Build(b) = parse(&["build", d, "-n", "x"]).unwrap().cmd else { panic!("not build") };
        let (mut plan, ctx) = prepare(&b).unwrap();
        let e = plan.hash_files(&ctx).unwrap_err().to_string();
        assert_eq!(e, "Dockerfile:2: no files in the build context match \"missing\"");
        std::fs::write(dir.path().join("Dockerfile"), "FROM base\nNOPE\n").unwrap();
        assert_eq!(prepare(&b).unwrap_err().to_string(), "Dockerfile:2: unknown instruction NOPE");
    }
}
