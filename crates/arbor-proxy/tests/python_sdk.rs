//! The official Python SDK (`novita_sandbox`) through the proxy: commands,
//! streamed output, files, routing by id and by token alone, and the
//! exceptions the proxy's own errors become. Runs when the repository's
//! `.venv` (made by scripts/setup.sh) or `$ARBOR_PYTHON` is there; skipped
//! with a note otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{serve_proxy, Envd, TableResolver};
use std::{path::PathBuf, process::Command, sync::Arc, time::Duration};

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ARBOR_PYTHON") {
        return Some(p.into());
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    venv.is_file().then_some(venv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_through_the_proxy() {
    let Some(python) = python() else {
        eprintln!("skipped: no .venv with the Python SDK (run scripts/setup.sh or set ARBOR_PYTHON)");
        return;
    };
    let envd = Envd::start("tok-alpha").await;
    let resolver = Arc::new(TableResolver::default());
    resolver.add("alpha", "tok-alpha", envd.addr);
    resolver.add("paused", "tok-paused", envd.addr);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    resolver.add("dead", "tok-dead", dead);
    let proxy = serve_proxy(resolver.clone(), Duration::from_millis(200)).await;

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/through_proxy.py");
    let home = envd.home();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("PROXY_URL", format!("http://{proxy}"))
            .env("TOKEN", "tok-alpha")
            .env("HOME_DIR", home)
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(Duration::from_secs(120), out).await.unwrap().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "SDK script failed:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
    assert!(resolver.activity_count("alpha") > 0);
}
