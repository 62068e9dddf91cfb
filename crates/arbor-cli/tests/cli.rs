//! The `arbor` binary against an HTTP fixture answering the documented API
//! shapes (see `common`). `exec` is tested in `exec.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{arbor, arbor_env, Api};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_sends_the_sdk_body_and_prints_the_id() {
    let api = Api::start(false).await;
    let r = arbor(&api.url(), &["sandbox", "spawn", "py", "-t", "60", "-m", "a=b", "-e", "K=V", "--memory-mb", "256"])
        .await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "sbx3\n"), "{r:?}");
    let seen = api.seen();
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/sandboxes"));
    assert_eq!(
        seen[0].body,
        Some(json!({"templateID":"py","timeout":60,"metadata":{"a":"b"},"envVars":{"K":"V"},"secure":true,
                    "allow_internet_access":true,"autoPause":false,"memoryMB":256}))
    );
    let r = arbor(&api.url(), &["sandbox", "spawn", "--json"]).await;
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!((v["sandboxID"].as_str(), v["templateID"].as_str()), (Some("sbx4"), Some("base")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_follows_next_tokens_and_encodes_filters() {
    let api = Api::start(false).await;
    let r = arbor(&api.url(), &["sandbox", "list", "--json"]).await;
    let items: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(items.len(), 3, "two pages of 2 + 1: {r:?}");
    let queries: Vec<Option<String>> = api.seen().iter().map(|s| s.query.clone()).collect();
    assert_eq!(queries, vec![None, Some("nextToken=2".into())]);

    let r = arbor(&api.url(), &["sandbox", "ls", "-s", "running", "-m", "a b=c&d=e", "--limit", "1"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "--limit is one page: {r:?}");
    assert!(lines[0].starts_with("SANDBOX ID  TEMPLATE  STARTED"), "{lines:?}");
    assert!(lines[1].starts_with("sbx-a       base      2026-11-25 11:00:00Z"), "{lines:?}");
    let last = api.seen().pop().unwrap();
    assert_eq!(last.query.as_deref(), Some("metadata=a%252520b%3Dc%252526d%25253De&state=running&limit=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_metrics_timeout_connect() {
    let api = Api::start(false).await;
    let r = arbor(&api.url(), &["sandbox", "info", "sbx-c"]).await;
    assert!(r.stdout.contains("METADATA      a b=c&d=e"), "{r:?}");
    let r = arbor(&api.url(), &["sandbox", "info", "sbx-c", "--json"]).await;
    assert_eq!(serde_json::from_str::<Value>(&r.stdout).unwrap()["state"], "running");
    let r = arbor(&api.url(), &["sandbox", "metrics", "sbx-a", "--start", "5"]).await;
    assert!(r.stdout.lines().nth(1).unwrap().starts_with("2026-11-25 11:00:02Z  1    2.5    30"), "{r:?}");
    let r = arbor(&api.url(), &["sandbox", "timeout", "sbx-a", "30"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = arbor(&api.url(), &["sandbox", "connect", "sbx-b", "-t", "90"]).await;
    assert_eq!(r.stdout, "sbx-b\n");
    let bodies: Vec<(String, Option<String>, Option<Value>)> =
        api.seen().into_iter().skip(2).map(|s| (s.path, s.query, s.body)).collect();
    assert_eq!(
        bodies,
        vec![
            ("/sandboxes/sbx-a/metrics".into(), Some("start=5".into()), None),
            ("/sandboxes/sbx-a/timeout".into(), None, Some(json!({"timeout": 30}))),
            ("/sandboxes/sbx-b/connect".into(), None, Some(json!({"timeout": 90}))),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_reports_each_id_and_all_kills_running_ones() {
    let api = Api::start(false).await;
    let r = arbor(&api.url(), &["sandbox", "shutdown", "sbx-a", "nope"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "killed sbx-a\n");
    assert_eq!(r.stderr, "error: nope: sandbox nope not found (404)\n");
    let r = arbor(&api.url(), &["sandbox", "kill", "--all", "--json"]).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "[\n  \"sbx-c\"\n]\n"), "{r:?}");
    assert_eq!(api.ids(), vec!["sbx-b"], "the paused one stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line_with_a_failure_code() {
    let api = Api::start(false).await;
    let r = arbor(&api.url(), &["sandbox", "info", "xyz"]).await;
    assert_eq!((r.code, r.stderr.as_str(), r.stdout.as_str()), (1, "error: sandbox xyz not found (404)\n", ""));
    let r = arbor_env(&api.url(), None, &["sandbox", "list"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("error: invalid API key (401); no API key is set"), "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1);

    // A port nobody listens on: bind one and drop it.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{free}");
    let r = arbor(&url, &["sandbox", "list"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with(&format!("error: cannot reach Arbor at {url}: ")), "{r:?}");
    assert!(r.stderr.trim_end().ends_with("is 'arbor server' running?"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_is_used_and_shown_masked() {
    let api = Api::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("arbor/config.toml");
    let cfg = cfg.to_str().unwrap();
    let run = |args: Vec<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_arbor"));
        cmd.args(args).env_remove("ARBOR_API_URL").env_remove("ARBOR_API_KEY").env("ARBOR_CONFIG", cfg);
        cmd.output().unwrap()
    };
    let url = api.url();
    assert!(run(vec!["config", "set", "api_url", &url]).status.success());
    assert!(run(vec!["config", "set", "api_key", common::KEY]).status.success());
    let out = run(vec!["sandbox", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap().len(), 3);
    let shown = String::from_utf8(run(vec!["config", "show"]).stdout).unwrap();
    assert!(shown.contains(&format!("api_url      {url}  (config file)")), "{shown}");
    assert!(shown.contains("api_key      ********  (config file)"), "{shown}");
    // A flag beats the file.
    let out = run(vec!["sandbox", "list", "--api-key", "wrong"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "error: invalid API key (401); check the API key\n");
}
