//! A throw-away PostgreSQL cluster for the tests: `initdb` + `pg_ctl` from
//! Debian's `postgresql` package, listening only on a unix socket in a
//! temporary directory, stopped and removed on drop (also when a test
//! panics).

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::Connection;

/// Unix-socket port number; only names the socket file, no TCP listener.
const PORT: u16 = 5432;
/// Database superuser created by initdb.
const USER: &str = "arbor";

pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// Run the server binaries as this user (initdb refuses root).
    run_as: Option<&'static str>,
}

/// The newest `/usr/lib/postgresql/<version>/bin` with initdb and pg_ctl.
fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

impl PgCluster {
    /// Starts a cluster, or returns `None` (with a notice) when PostgreSQL
    /// is not installed.
    pub fn start() -> Option<PgCluster> {
        let Some(bin) = find_bin() else {
            eprintln!(
                "NOTICE: PostgreSQL binaries not found under /usr/lib/postgresql \
                 (Debian package `postgresql`); skipping the PostgreSQL half"
            );
            return None;
        };
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::Builder::new().prefix("arbor-pg-").tempdir_in("/tmp").expect("temp dir");
        let run_as = root.then_some("postgres");
        if let Some(user) = run_as {
            let ok = Command::new("chown").arg(format!("{user}:")).arg(dir.path()).status().expect("chown").success();
            assert!(ok, "chown {user} {}", dir.path().display());
        }
        let cluster = PgCluster { bin, dir, run_as };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &["-D", path_str(&data), "-U", USER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
        );
        let opts = format!("-c listen_addresses='' -k {} -p {PORT} -F", path_str(cluster.dir.path()));
        let log = cluster.dir.path().join("server.log");
        cluster.run("pg_ctl", &["-D", path_str(&data), "-l", path_str(&log), "-o", &opts, "-w", "-t", "60", "start"]);
        Some(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut c = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        // The test's own directory may be unreadable for `postgres`.
        c.current_dir(self.dir.path());
        c
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().expect(tool);
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "{tool} failed: {}\n{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// URL of database `db` over the cluster's unix socket.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@localhost/{db}?host={}&port={PORT}", path_str(self.dir.path()))
    }

    /// Creates an empty database, so each test case starts from nothing.
    pub async fn create_db(&self, db: &str) -> String {
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres")).await.expect("connect to postgres");
        sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut conn).await.expect("create database");
        conn.close().await.expect("close");
        self.url(db)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate: nothing in a test cluster is worth a clean checkpoint.
        let data = self.data();
        let stopped = self.command("pg_ctl").args(["-D", path_str(&data), "-m", "immediate", "-w", "stop"]).output();
        if !matches!(&stopped, Ok(o) if o.status.success()) {
            eprintln!("pg_ctl stop failed: {stopped:?}");
        }
        // The TempDir removes the directory after this.
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}
