//! `arbor template` against the HTTP fixture (see `common/templates.rs`):
//! what the CLI sends, uploads and prints; the build itself is the server's
//! and is tested against a real server in tests/python.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{arbor, Api};
use serde_json::{json, Value};
use std::io::Read;

fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::write(dir.path().join("app/main.py"), "print('hi')\n").unwrap();
    std::fs::write(dir.path().join("app/debug.log"), "noise").unwrap();
    std::fs::write(dir.path().join(".dockerignore"), "**/*.log\n").unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    dir
}

fn tar_paths(gz: &[u8]) -> Vec<String> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut out = Vec::new();
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut body = String::new();
        e.read_to_string(&mut body).unwrap();
        out.push(format!("{}={body}", e.path().unwrap().display()));
    }
    out
}

const DOCKERFILE: &str = "FROM base\n\
ENV PORT=8080\n\
WORKDIR /srv\n\
COPY --chown=user:user app/ ./app/\n\
RUN pip install flask\n\
USER user\n\
CMD [\"python3\", \"-m\", \"http.server\", \"8080\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_uploads_missing_files_and_follows_to_ready() {
    let api = Api::start(false).await;
    let ctx = context(DOCKERFILE);
    let dir = ctx.path().to_str().unwrap();
    let r = arbor(&api.url(), &["template", "build", dir, "--name", "app", "--cpu-count", "2", "--ready-cmd", "true"])
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    let out: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(out[0], "building app:2 (templateID tpl1, buildID bld1, version 2)");
    assert_eq!(out[1], "follow it from another terminal: arbor template logs tpl1 bld1 --follow");
    assert!(out[2].starts_with("uploading app/ (2 entries, "), "{out:?}");
    assert!(r.stdout.contains("step 1/5: ENV PORT\n"), "{}", r.stdout);
    assert!(r.stdout.contains("step 3: \"COPY\" \"app/\"\n"), "{}", r.stdout);
    assert!(out.last().unwrap().starts_with("built app:2 in "), "{out:?}");

    let seen = api.seen();
    let calls: Vec<String> = seen.iter().map(|s| format!("{} {}", s.method, s.path)).collect();
    assert_eq!(calls[0], "POST /v3/templates");
    assert_eq!(seen[0].body, Some(json!({"name": "app", "cpuCount": 2})));
    assert!(calls[1].starts_with("GET /templates/tpl1/files/"));
    assert!(calls[2].starts_with("PUT /upload/"));
    assert_eq!(calls[3], "POST /v2/templates/tpl1/builds/bld1");
    assert!(calls[4..].iter().all(|c| c == "GET /templates/tpl1/builds/bld1/status"));
    let offsets: Vec<&str> = seen[4..].iter().map(|s| s.query.as_deref().unwrap()).collect();
    assert_eq!(offsets.first(), Some(&"logsOffset=0"));
    let nums: Vec<usize> = offsets.iter().map(|o| o["logsOffset=".len()..].parse().unwrap()).collect();
    assert!(nums.windows(2).all(|w| w[0] <= w[1]) && nums.last() > Some(&0), "{offsets:?}");

    let body = seen[3].body.clone().unwrap();
    let hash = body["steps"][2]["filesHash"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 64);
    assert_eq!(
        body,
        json!({"fromTemplate": "base", "startCmd": "python3 -m http.server 8080", "readyCmd": "true", "steps": [
            {"type": "ENV", "args": ["PORT", "8080"], "line": 2},
            {"type": "WORKDIR", "args": ["/srv"], "line": 3},
            {"type": "COPY", "args": ["app/", "/srv/app/", "user:user", ""], "line": 4, "filesHash": hash},
            {"type": "RUN", "args": ["pip install flask"], "line": 5},
            {"type": "USER", "args": ["user"], "line": 6},
        ]})
    );
    let uploads = api.state.lock().unwrap().templates.uploads.clone();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].0, hash);
    assert_eq!(tar_paths(&uploads[0].1), ["app=", "app/main.py=print('hi')\n"], ".dockerignore leaves debug.log out");

    // The same files again: the server has them, nothing is uploaded.
    let r = arbor(&api.url(), &["template", "build", dir, "-n", "app", "--start-cmd", "srv", "--no-cache"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains("uploading"), "{}", r.stdout);
    let seen = api.seen();
    assert_eq!(seen.iter().filter(|s| s.method == "PUT").count(), 1);
    let body = seen.iter().rev().find(|s| s.path.starts_with("/v2/")).unwrap().body.clone().unwrap();
    assert_eq!((body["startCmd"].as_str(), body["force"].as_bool()), (Some("srv"), Some(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_names_its_dockerfile_line() {
    let api = Api::start(false).await;
    let ctx = context("FROM base\n\n# the failing one\nRUN echo start && \\\n    exit 3\nRUN echo never\n");
    let r = arbor(&api.url(), &["template", "build", ctx.path().to_str().unwrap(), "-n", "bad"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stderr, "error: build failed: Dockerfile:4: command exited with 3\n");
    // A second terminal following the same build sees the failure too.
    let r = arbor(&api.url(), &["template", "logs", "tpl1", "bld1", "--follow"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stderr, "error: build failed: step 1: command exited with 3\n");
    assert!(r.stdout.starts_with("step 1: \"RUN\""), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_errors_stop_before_any_request() {
    let api = Api::start(false).await;
    let ctx = context("FROM base\nRUN true\nNOPE x\n");
    let dir = ctx.path().to_str().unwrap();
    let r = arbor(&api.url(), &["template", "build", dir, "-n", "x"]).await;
    assert_eq!((r.code, r.stderr.as_str()), (1, "error: Dockerfile:3: unknown instruction NOPE\n"));
    std::fs::write(ctx.path().join("other.Dockerfile"), "FROM base\nLABEL a=b\nCOPY nothere /x\n").unwrap();
    let file = ctx.path().join("other.Dockerfile");
    let r = arbor(&api.url(), &["template", "build", dir, "-n", "x", "-f", file.to_str().unwrap()]).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        "Dockerfile:2: warning: LABEL is ignored: Arbor templates have no image metadata, ports or volumes\n\
         error: Dockerfile:3: no files in the build context match \"nothere\"\n"
    );
    let r = arbor(&api.url(), &["template", "build", dir, "-n", "x", "--build-arg", "novalue"]).await;
    assert_eq!((r.code, r.stderr.as_str()), (1, "error: --build-arg expects KEY=VALUE, got 'novalue'\n"));
    assert!(api.seen().is_empty(), "{:?}", api.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_info_delete() {
    let api = Api::start(false).await;
    let r = arbor(&api.url(), &["template", "list"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.starts_with("NAME  VERSION  TEMPLATE ID  STATUS  CPU  MEM       VERSIONS  UPDATED\napp   2"),
        "{}",
        r.stdout
    );
    let r = arbor(&api.url(), &["template", "ls", "--json"]).await;
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["templateID"], "tpl1");
    let r = arbor(&api.url(), &["template", "info", "app:1"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("bld1      ready   2    1024 MiB  4       0       2026-11-25 11:30:00Z  python3 -m http.server"),
        "{}",
        r.stdout
    );
    assert_eq!(api.seen().last().unwrap().path, "/templates/app%3A1");
    let r = arbor(&api.url(), &["template", "info", "nope"]).await;
    assert_eq!((r.code, r.stderr.as_str()), (1, "error: template nope not found (404)\n"));
    let r = arbor(&api.url(), &["template", "delete", "app:2", "app:1"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "deleted app:2\n");
    assert_eq!(
        r.stderr,
        "error: cannot delete app:1: version 1 of app is used by 1 sandbox (409); kill (or delete) the sandboxes that use it first\n"
    );
}
