//! A real envd router served in-process on 127.0.0.1 with a user database of
//! its own: `root` and `user` (uid 1000), each with a home directory inside a
//! temp dir, so tests run commands and file operations as `user` without
//! touching the host's /etc. Tests run as root, as envd does in a sandbox.
#![allow(dead_code, clippy::unwrap_used)]

use arbor_envd::{config::Config, server, state::Envd};
use std::{
    fs,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// A served envd and the directories it works in.
pub struct Fixture {
    /// Where the router listens.
    pub addr: SocketAddr,
    /// The temp dir holding `etc/`, `home/user` and `root/`.
    pub dir: tempfile::TempDir,
    /// Shared state, for tests that look inside.
    pub envd: Arc<Envd>,
}

/// Whether the tests run as root (checks of uid 1000's rights need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Writes `passwd` and `group` for `root` and `user` under `dir/etc` and
/// creates their homes; returns the etc dir.
pub fn user_db(dir: &Path) -> PathBuf {
    // uid 1000 must be able to walk into its home inside the temp dir.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let (etc, user_home, root_home) = (dir.join("etc"), dir.join("home/user"), dir.join("root"));
    for d in [&etc, &user_home, &root_home] {
        fs::create_dir_all(d).unwrap();
    }
    if is_root() {
        std::os::unix::fs::chown(&user_home, Some(1000), Some(1000)).unwrap();
    }
    fs::write(
        etc.join("passwd"),
        format!(
            "root:x:0:0:root:{}:/bin/bash\nuser:x:1000:1000::{}:/bin/bash\n",
            root_home.display(),
            user_home.display()
        ),
    )
    .unwrap();
    fs::write(etc.join("group"), "root:x:0:\nuser:x:1000:\n").unwrap();
    etc
}

impl Fixture {
    /// Serves envd with `token` (if any) and extra env vars.
    pub async fn start(token: Option<&str>, envs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            access_token: token.map(str::to_string),
            default_user: "user".into(),
            etc_dir: user_db(dir.path()),
            envs: envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ready_fd: None,
        };
        let envd = Arc::new(Envd::new(&config));
        envd.processes.start_reaper().unwrap();
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = server::router(envd.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { addr, dir, envd }
    }

    /// `user`'s home directory.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home/user")
    }

    /// The temp dir everything lives in.
    pub fn tmp(&self) -> &Path {
        self.dir.path()
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}
