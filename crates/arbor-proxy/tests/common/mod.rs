//! Test fixtures: a real `arbor-envd` process on loopback, a resolver that
//! maps ids and tokens to it, and the proxy served by axum on 127.0.0.1:0.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use arbor_proxy::{Access, Lookup, Proxy, ProxyError, Resolver, Target};
use std::{
    collections::HashMap,
    fs,
    net::{SocketAddr, TcpListener},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The envd binary: `$ARBOR_ENVD_BIN`, else the one cargo built next to this
/// test (`cargo test --workspace` builds it), else the static release build.
pub fn envd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ARBOR_ENVD_BIN") {
        return p.into();
    }
    // target/<profile>/deps/<test> -> target/<profile>/arbor-envd
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let candidates = [
        profile_dir.join("arbor-envd"),
        profile_dir.join("../debug/arbor-envd"),
        profile_dir.join("../x86_64-unknown-linux-gnu/release/arbor-envd"),
    ];
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("no arbor-envd binary near {}: run `cargo build -p arbor-envd` or set ARBOR_ENVD_BIN", exe.display())
    })
}

/// A running envd process; killed on drop.
pub struct Envd {
    pub addr: SocketAddr,
    pub token: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Envd {
    /// Starts envd with access token `token`, waiting until it answers.
    pub async fn start(token: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let etc = user_db(dir.path());
        // Ask the kernel for a free port, then hand it to envd.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(envd_bin())
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--etc-dir")
            .arg(&etc)
            .arg("--access-token")
            .arg(token)
            .env("ARBOR_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let envd = Self { addr, token: token.into(), dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        loop {
            let url = format!("http://{addr}/health");
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "envd did not come up on {addr}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        envd
    }

    /// `user`'s home directory.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home/user")
    }

    /// Kills envd (as when its sandbox dies).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// envd's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(&format!("/proc/{}/status", self.child.id()))
    }
}

impl Drop for Envd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of a `/proc/<pid>/status` file, in KiB.
pub fn rss_kib(status: &str) -> u64 {
    let text = fs::read_to_string(status).unwrap();
    let line = text.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Writes `passwd`/`group` with `root` and `user` (uid 1000) homed in `dir`.
fn user_db(dir: &Path) -> PathBuf {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let (etc, user_home, root_home) = (dir.join("etc"), dir.join("home/user"), dir.join("root"));
    for d in [&etc, &user_home, &root_home] {
        fs::create_dir_all(d).unwrap();
    }
    if nix_is_root() {
        std::os::unix::fs::chown(&user_home, Some(1000), Some(1000)).unwrap();
    }
    let passwd = format!(
        "root:x:0:0:root:{}:/bin/bash\nuser:x:1000:1000::{}:/bin/bash\n",
        root_home.display(),
        user_home.display()
    );
    fs::write(etc.join("passwd"), passwd).unwrap();
    fs::write(etc.join("group"), "root:x:0:\nuser:x:1000:\n").unwrap();
    etc
}

fn nix_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
}

/// A resolver over a fixed table, counting `activity()` calls per sandbox.
#[derive(Default)]
pub struct TableResolver {
    /// id -> (token, envd address)
    pub sandboxes: Mutex<HashMap<String, (String, SocketAddr)>>,
    pub activity: Mutex<HashMap<String, usize>>,
    pub lookups: Mutex<Vec<String>>,
}

impl TableResolver {
    pub fn add(&self, id: &str, token: &str, addr: SocketAddr) {
        self.sandboxes.lock().unwrap().insert(id.into(), (token.into(), addr));
    }

    pub fn activity_count(&self, id: &str) -> usize {
        self.activity.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl Resolver for TableResolver {
    async fn resolve(&self, lookup: Lookup<'_>, access: &Access<'_>) -> Result<Target, ProxyError> {
        self.lookups.lock().unwrap().push(format!("{lookup:?}"));
        let table = self.sandboxes.lock().unwrap();
        let found = match lookup {
            Lookup::Id(id) => table.get_key_value(id).ok_or_else(|| ProxyError::NotFound(id.into()))?,
            Lookup::Token(t) => table.iter().find(|(_, (tok, _))| tok == t).ok_or(ProxyError::UnknownToken)?,
        };
        // As the control plane does: a paused sandbox is only named to a
        // request with its credentials.
        if found.0 == "paused" {
            return Err(if access.allows(&found.1 .0, None, arbor_proxy::unix_now()) {
                ProxyError::Paused("paused".into())
            } else {
                ProxyError::NotFound("paused".into())
            });
        }
        Ok(Target::new(found.0.clone(), found.1 .1))
    }

    fn activity(&self, sandbox_id: &str) {
        *self.activity.lock().unwrap().entry(sandbox_id.into()).or_default() += 1;
    }
}

/// Serves the proxy on 127.0.0.1:0 (TCP_NODELAY on accepted sockets).
pub async fn serve_proxy(resolver: Arc<TableResolver>, activity_every: Duration) -> SocketAddr {
    use axum::serve::ListenerExt;
    let proxy = Arc::new(Proxy::new(resolver).with_activity_interval(activity_every));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, proxy.router()).await });
    addr
}

/// Splits Connect envelopes out of a streamed body: (flags, payload).
pub fn envelopes(buf: &mut Vec<u8>) -> Vec<(u8, serde_json::Value)> {
    let mut out = Vec::new();
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            break;
        }
        let flags = buf[0];
        let payload: serde_json::Value = serde_json::from_slice(&buf[5..5 + len]).unwrap();
        buf.drain(..5 + len);
        out.push((flags, payload));
    }
    out
}

/// One enveloped JSON message.
pub fn envelope(msg: &serde_json::Value) -> Vec<u8> {
    let payload = serde_json::to_vec(msg).unwrap();
    let mut out = vec![0u8];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The access token of sandbox `alpha` in [`setup`].
pub const TOKEN: &str = "tok-alpha";

/// envd with sandbox `alpha` (token [`TOKEN`]), `paused` (token `tok-paused`;
/// not found without it, paused with it)
/// and `dead` (nothing listens) in the resolver, and the proxy serving them.
pub async fn setup(activity_every: Duration) -> (Envd, Arc<TableResolver>, SocketAddr) {
    let envd = Envd::start(TOKEN).await;
    let resolver = Arc::new(TableResolver::default());
    resolver.add("alpha", TOKEN, envd.addr);
    resolver.add("paused", "tok-paused", envd.addr);
    // Nothing listens there: bind, read the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    resolver.add("dead", "tok-dead", dead);
    let proxy = serve_proxy(resolver.clone(), activity_every).await;
    (envd, resolver, proxy)
}

/// `http://<addr><path>`.
pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}
