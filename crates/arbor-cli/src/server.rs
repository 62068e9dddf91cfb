//! `arbor server`: the REST API, the envd proxy and this host's node in one
//! process, on one port.

use anyhow::{bail, Context};
use arbor_api::{config::default_public_api_url, lifecycle, ApiConfig, App};
use arbor_node::{Node, NodeConfig};
use arbor_store::Store;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

mod edge;

/// Flags of `arbor server` (each also an `ARBOR_*` environment variable).
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address of the one HTTP port for the REST API and the envd proxy.
    #[arg(long, env = "ARBOR_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Where state lives: the SQLite database, sandboxes, the generated key.
    #[arg(long, env = "ARBOR_DATA_DIR", default_value = "/var/lib/arbor")]
    pub data_dir: PathBuf,
    /// Database URL: `sqlite:PATH` or `postgres://...` (default: SQLite in the data dir).
    #[arg(long, env = "ARBOR_DATABASE")]
    pub database: Option<String>,
    /// The API key to accept; without it one is generated on first start, stored and printed.
    #[arg(long, env = "ARBOR_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The `domain` returned to SDKs (sandbox URLs are `<port>-<id>.<domain>`).
    #[arg(long, env = "ARBOR_DOMAIN", default_value = "localhost")]
    pub domain: String,
    /// Where clients reach the API (`https://api.example.com`): the base of
    /// the template upload URLs handed out (default: `http://` + `--listen`,
    /// 127.0.0.1 for a wildcard address).
    #[arg(long, env = "ARBOR_PUBLIC_API_URL", value_parser = arbor_api::config::public_api_url)]
    pub public_api_url: Option<String>,
    /// Where templates are (default: the data dir).
    #[arg(long, env = "ARBOR_TEMPLATES_DIR")]
    pub templates_dir: Option<PathBuf>,
    /// The static arbor-envd binary (default: found next to this binary).
    #[arg(long, env = "ARBOR_ENVD_BIN")]
    pub envd_bin: Option<PathBuf>,
    /// Longest sandbox lifetime in seconds; timeouts cannot pass it.
    #[arg(long, env = "ARBOR_MAX_LIFETIME", default_value_t = 3600)]
    pub max_lifetime: u64,
    /// Seconds a paused sandbox stays resident (frozen) after its checkpoint
    /// is written; a resume within them is a thaw. 0 releases at once.
    #[arg(long, env = "ARBOR_PAUSE_GRACE", default_value_t = 10)]
    pub pause_grace: u64,
    /// How long a paused sandbox is kept, in seconds (default 30 days); after
    /// that it is deleted and resuming it answers 404.
    #[arg(long, env = "ARBOR_PAUSED_RETENTION", default_value_t = 30 * 24 * 3600)]
    pub paused_retention: u64,
    /// The smallest `idle_timeout` metadata value create accepts, in seconds.
    #[arg(long, env = "ARBOR_MIN_IDLE_TIMEOUT", default_value_t = 60)]
    pub min_idle_timeout: u64,
    /// Most sandboxes running at once.
    #[arg(long, env = "ARBOR_MAX_SANDBOXES", default_value_t = 1000)]
    pub max_sandboxes: u64,
    /// How far the memory limits of all sandboxes together may exceed the
    /// memory they may use (the host's, less a reserve): a create, resume or
    /// clone beyond it is refused with 429.
    #[arg(long, env = "ARBOR_MEMORY_OVERCOMMIT", default_value_t = 4.0)]
    pub memory_overcommit: f64,
    /// The same for task (process and thread) limits.
    #[arg(long, env = "ARBOR_PIDS_OVERCOMMIT", default_value_t = 16.0)]
    pub pids_overcommit: f64,
    /// Free space (MiB) the data disk keeps: below it no sandbox starts (507).
    #[arg(long, env = "ARBOR_DISK_RESERVE_MB", default_value_t = 1024)]
    pub disk_reserve_mb: u64,
    /// Address pool of sandbox networks (one /30 each).
    #[arg(long, env = "ARBOR_NETWORK_POOL", default_value = "10.200.0.0/16")]
    pub network_pool: arbor_net::Ipv4Net,
    /// Names this node's host resources: its cgroup parent, nftables table and
    /// `/run/<instance>` directory. Two servers on one host need two names.
    #[arg(long, env = "ARBOR_INSTANCE", default_value = "arbor", value_parser = instance_name)]
    pub instance: String,
    /// Prefix of host-side veth names (1-7 lowercase letters; unique per instance).
    #[arg(long, env = "ARBOR_VETH_PREFIX", default_value = "arb")]
    pub veth_prefix: String,
    /// No disk limits (no btrfs image is mounted over `<data>/sandboxes`).
    #[arg(long, env = "ARBOR_NO_DISK_LIMITS")]
    pub no_disk_limits: bool,
    /// Address of a TLS listener serving the same as `--listen` (HTTP/1.1 and
    /// HTTP/2), with a certificate for `*.<domain>`; off when not given.
    #[arg(long, env = "ARBOR_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for the TLS listener (default: one issued by a
    /// local CA that Arbor keeps in `<data-dir>/tls`).
    #[arg(long, env = "ARBOR_TLS_CERT", requires_all = ["tls_key", "tls_listen"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "ARBOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Address (UDP and TCP) of a DNS responder answering `<domain>` and
    /// `*.<domain>` with this server's address; off when not given.
    #[arg(long, env = "ARBOR_DNS")]
    pub dns: Option<SocketAddr>,
    /// The IPv4 address DNS answers with (default: the address of
    /// `--tls-listen`, else of `--listen`; 127.0.0.1 for a wildcard address).
    #[arg(long, env = "ARBOR_DNS_ANSWER", requires = "dns")]
    pub dns_answer: Option<std::net::Ipv4Addr>,
    /// Seconds a client has to send a request's headers (and a new
    /// connection its first request) before the connection is closed.
    #[arg(long, env = "ARBOR_HTTP_HEADER_TIMEOUT", value_name = "SECONDS",
          default_value_t = arbor_tls::HEADER_READ_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_timeout: u64,
    /// Seconds a connection with no request in flight stays open (keep above
    /// the idle timeout of a load balancer in front). Open requests and
    /// streams are never timed out.
    #[arg(long, env = "ARBOR_HTTP_IDLE_TIMEOUT", value_name = "SECONDS",
          default_value_t = arbor_tls::IDLE_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub http_idle_timeout: u64,
    /// Seconds a client of `--tls-listen` has to finish its TLS handshake.
    #[arg(long, env = "ARBOR_TLS_HANDSHAKE_TIMEOUT", value_name = "SECONDS",
          default_value_t = arbor_tls::HANDSHAKE_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_handshake_timeout: u64,
}

impl ServerArgs {
    /// The timeouts of both listeners.
    fn timeouts(&self) -> arbor_tls::Timeouts {
        arbor_tls::Timeouts {
            header_read: Duration::from_secs(self.http_header_timeout),
            idle: Duration::from_secs(self.http_idle_timeout),
            handshake: Duration::from_secs(self.tls_handshake_timeout),
        }
    }
}

fn instance_name(s: &str) -> Result<String, String> {
    let ok =
        !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' must be 1-32 of [a-z0-9_]"))
    }
}

/// The first existing path of `candidates`.
fn find(what: &str, candidates: &[PathBuf]) -> anyhow::Result<PathBuf> {
    candidates.iter().find(|p| p.is_file()).cloned().with_context(|| {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        format!("{what} not found (tried {}); run scripts/setup.sh", tried.join(", "))
    })
}

fn helper_paths(args: &ServerArgs) -> anyhow::Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let envd = match &args.envd_bin {
        Some(p) => p.clone(),
        None => find(
            "arbor-envd",
            // The static build first: a `cargo build` also leaves a dynamic
            // envd next to this binary, which only runs in glibc root file systems.
            &[
                dir.join("../x86_64-unknown-linux-gnu/release/arbor-envd"),
                PathBuf::from("/usr/local/lib/arbor/arbor-envd"),
                dir.join("arbor-envd"),
            ],
        )?,
    };
    let launcher = match std::env::var_os("ARBOR_LAUNCH_BIN") {
        Some(p) => PathBuf::from(p),
        None => find("arbor-launch", &[dir.join("arbor-launch"), PathBuf::from("/usr/local/lib/arbor/arbor-launch")])?,
    };
    Ok((envd, launcher))
}

/// The key to print: the operator's, a new one, or the one generated earlier.
async fn api_key(store: &Store, args: &ServerArgs) -> anyhow::Result<String> {
    let file = args.data_dir.join("api-key");
    if let Some(key) = &args.api_key {
        if key.len() < 8 {
            bail!("--api-key must be at least 8 characters");
        }
        store.import_key(arbor_store::DEFAULT_TEAM_ID, "operator", key, arbor_store::KeyRole::Admin).await?;
        return Ok(key.clone());
    }
    if let Ok(saved) = std::fs::read_to_string(&file) {
        let saved = saved.trim().to_string();
        if store.verify_key(&saved).await?.is_some() {
            return Ok(saved);
        }
    }
    // The server's own key is the default team's admin key.
    let new = store.create_key(arbor_store::DEFAULT_TEAM_ID, "generated", arbor_store::KeyRole::Admin).await?;
    write_secret(&file, &new.secret)?;
    Ok(new.secret)
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{secret}").with_context(|| format!("writing {}", path.display()))
}

/// Runs the server until SIGINT or SIGTERM. Sandboxes keep running across a
/// restart; the next start serves them again.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ARBOR_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,netlink_packet_route=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if !nix::unistd::geteuid().is_root() {
        bail!("arbor server needs root (namespaces, cgroups, networking)");
    }
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    // Before the node starts: a bad certificate or a taken port ends the start at once.
    let edge = edge::Edge::bind(&args, args.listen).await?;
    let url = match &args.database {
        Some(url) => url.clone(),
        None => format!("sqlite:{}", args.data_dir.join("arbor.db").display()),
    };
    let store = Store::open(&url).await.with_context(|| format!("opening the database {url}"))?;
    let key = api_key(&store, &args).await?;
    let (envd_bin, launcher_bin) = helper_paths(&args)?;
    let node = Node::new(NodeConfig {
        data_dir: args.data_dir.clone(),
        layers_dir: args.templates_dir.clone().unwrap_or_else(|| args.data_dir.clone()),
        envd_bin,
        launcher_bin,
        network: arbor_net::Config {
            pool: args.network_pool,
            table: args.instance.clone(),
            ifname_prefix: args.veth_prefix.clone(),
            netns_dir: PathBuf::from("/run").join(&args.instance).join("netns"),
            ..arbor_net::Config::default()
        },
        disk: (!args.no_disk_limits).then(arbor_disk::Config::default),
        cgroup_parent: args.instance.clone(),
        capacity: arbor_node::CapacityConfig {
            memory_overcommit: args.memory_overcommit,
            pids_overcommit: args.pids_overcommit,
            disk_reserve_mib: args.disk_reserve_mb,
        },
    })
    .await
    .context("starting the node")?;
    let cfg = ApiConfig {
        domain: args.domain.clone(),
        public_api_url: args.public_api_url.clone().unwrap_or_else(|| default_public_api_url(args.listen)),
        max_lifetime: Duration::from_secs(args.max_lifetime),
        max_sandboxes: args.max_sandboxes,
        paused_retention: Duration::from_secs(args.paused_retention),
        pause_grace: Duration::from_secs(args.pause_grace),
        min_idle_timeout: Duration::from_secs(args.min_idle_timeout),
        ..ApiConfig::default()
    };
    let app = App::new(cfg, store, node);
    let (kept, dropped) = lifecycle::recover(&app).await.context("recovering sandboxes")?;
    lifecycle::spawn(&app);
    let router = arbor_api::router(Arc::clone(&app), arbor_api::proxy::router(Arc::clone(&app)));
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    print_banner(addr, &key, kept, dropped, &edge.banner(&args.domain));
    let timeouts = args.timeouts();
    let plain = {
        let router = router.clone();
        async move { arbor_tls::serve_plain(listener, router, timeouts, shutdown()).await.context("serving") }
    };
    tokio::try_join!(plain, edge.serve(router, timeouts, shutdown))?;
    tracing::info!("stopped; sandboxes keep running until the next start");
    Ok(())
}

fn print_banner(addr: SocketAddr, key: &str, kept: usize, dropped: usize, edge: &[String]) {
    let url = format!("http://{addr}");
    println!("Arbor is serving at {url}");
    println!("API key: {key}");
    if kept + dropped > 0 {
        println!("Sandboxes from before the restart: {kept} running again, {dropped} gone");
    }
    println!();
    println!("Point the SDKs at it:");
    println!("  export NOVITA_API_URL={url}");
    println!("  export NOVITA_SANDBOX_URL={url}");
    println!("  export NOVITA_API_KEY={key}");
    println!("(for the e2b SDK: E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY the same way)");
    if !edge.is_empty() {
        println!();
        for line in edge {
            println!("{line}");
        }
    }
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
