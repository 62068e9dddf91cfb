//! `arbor-layers`: the layer store from the command line, for scripts (the base-template build)
//! and for operators. Every subcommand is a thin wrapper over [`arbor_layers::LayerStore`].

mod apt;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use arbor_layers::{now_rfc3339, EnvdConfig, Error, LayerId, LayerStore, RefManifest, REF_SCHEMA};
use clap::{Parser, Subcommand};

/// Exit status of `check-ref` when the reference is missing or does not verify: the caller
/// should (re)build, as opposed to status 1, a real error.
const EXIT_STALE: u8 = 3;

#[derive(Debug, Parser)]
#[command(name = "arbor-layers", version, about = "Content-addressed layer store of an Arbor node")]
struct Cli {
    /// The node's data dir.
    #[arg(long, env = "ARBOR_DATA_DIR", default_value = "/var/lib/arbor", global = true)]
    data_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Move a directory tree into the store (it must be on the store's filesystem); print its id.
    Import { dir: PathBuf },
    /// Re-hash a layer and fail if it changed.
    Verify { id: LayerId },
    /// Print the root of a layer's tree (an overlayfs lower dir).
    Path { id: LayerId },
    /// Print every layer id.
    List,
    /// Remove a layer no reference names.
    Remove { id: LayerId },
    /// Print a reference as JSON.
    GetRef { name: String },
    /// Create or replace a reference.
    SetRef {
        name: String,
        /// A layer, bottom first; repeat for more.
        #[arg(long = "layer", required = true)]
        layers: Vec<LayerId>,
        #[arg(long, default_value = concat!(">=", env!("CARGO_PKG_VERSION")))]
        envd_version_req: String,
        #[arg(long, default_value = "/usr/local/bin/arbor-envd")]
        envd_mount_point: String,
        #[arg(long, default_value = "user")]
        default_user: String,
        #[arg(long, default_value = "/home/user")]
        default_workdir: String,
        /// KEY=VALUE; repeat for more.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Create or replace reference `to` as a copy of `from` with some labels added or replaced
    /// (publishes a built template under another name).
    CopyRef {
        from: String,
        to: String,
        /// KEY=VALUE; repeat for more.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Delete a reference.
    RemoveRef { name: String },
    /// Exit 0 if the reference exists and all its layers verify, 3 if not (so: rebuild).
    CheckRef { name: String },
    /// Remove what crashed imports left in the store's tmp dir.
    CleanTmp,
    /// Print a sources.list for a Debian suite, from the Debian mirrors this machine's apt uses.
    AptSources {
        #[arg(long)]
        suite: String,
        #[arg(long, default_value = "/etc/apt")]
        apt_dir: PathBuf,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    Ok((k.to_owned(), v.to_owned()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("arbor-layers: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if let Cmd::AptSources { suite, apt_dir } = &cli.cmd {
        let sources = apt::read_sources(apt_dir).map_err(|e| format!("reading {}: {e}", apt_dir.display()))?;
        let mirrors = apt::debian_mirrors(&sources).ok_or_else(|| {
            format!("no Debian mirror (a 'main' component of a Debian suite) in {}", apt_dir.display())
        })?;
        print!("{}", apt::render(&mirrors, suite));
        return Ok(ExitCode::SUCCESS);
    }
    let store = LayerStore::open(&cli.data_dir)?;
    match cli.cmd {
        Cmd::Import { dir } => println!("{}", store.import_dir(&dir)?),
        Cmd::Verify { id } => store.verify(&id)?,
        Cmd::Path { id } => println!("{}", store.path(&id)?.display()),
        Cmd::List => store.list()?.iter().for_each(|id| println!("{id}")),
        Cmd::Remove { id } => store.remove(&id)?,
        Cmd::GetRef { name } => println!("{}", serde_json::to_string_pretty(&store.get_ref(&name)?)?),
        Cmd::SetRef { name, layers, envd_version_req, envd_mount_point, default_user, default_workdir, labels } => {
            let manifest = RefManifest {
                schema: REF_SCHEMA,
                layers,
                created: now_rfc3339(),
                envd: EnvdConfig {
                    version_req: envd_version_req,
                    mount_point: envd_mount_point,
                    default_user,
                    default_workdir,
                },
                labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
            };
            store.set_ref(&name, &manifest)?;
        }
        Cmd::CopyRef { from, to, labels } => {
            let mut manifest = store.get_ref(&from)?;
            manifest.created = now_rfc3339();
            manifest.labels.extend(labels);
            store.set_ref(&to, &manifest)?;
        }
        Cmd::RemoveRef { name } => store.remove_ref(&name)?,
        Cmd::CheckRef { name } => return check_ref(&store, &name),
        Cmd::CleanTmp => println!("{} removed", store.clean_stale_tmp()?),
        Cmd::AptSources { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn check_ref(store: &LayerStore, name: &str) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let stale = |why: String| {
        eprintln!("arbor-layers: {why}");
        Ok(ExitCode::from(EXIT_STALE))
    };
    let manifest = match store.get_ref(name) {
        Ok(m) => m,
        Err(e @ (Error::RefNotFound(_) | Error::Manifest { .. } | Error::Schema { .. })) => {
            return stale(e.to_string())
        }
        Err(e) => return Err(e.into()),
    };
    for id in &manifest.layers {
        match store.verify(id) {
            Ok(()) => {}
            Err(e @ (Error::LayerNotFound(_) | Error::Tampered { .. })) => return stale(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ExitCode::SUCCESS)
}
