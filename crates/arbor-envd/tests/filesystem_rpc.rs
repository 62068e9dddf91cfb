//! The `filesystem.Filesystem` service over real HTTP: the router runs in
//! process on 127.0.0.1 with its own passwd (root, and `user` whose home is
//! a temp dir), and the calls are the JSON Connect calls the SDKs make.
//!
//! Run as root (as in a sandbox), requests for `user` really run with uid
//! 1000's rights; the checks that depend on that are skipped otherwise.
// Helpers outside `#[test]` functions are test code too: a failure should panic.
#![allow(clippy::unwrap_used)]

use arbor_proto::connect::{EnvelopeDecoder, FLAG_END_STREAM};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::{
    fs,
    net::SocketAddr,
    os::unix::fs::{symlink, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

const TOKEN: &str = "test-token";
/// `Authorization` value selecting root (`base64("root:")`).
const AS_ROOT: &str = "Basic cm9vdDo=";

mod common;
use common::is_root;

struct Sandbox {
    _fx: common::Fixture,
    tmp: PathBuf,
    home: PathBuf,
    addr: SocketAddr,
}

fn chown_user(path: &Path) {
    if is_root() {
        std::os::unix::fs::lchown(path, Some(1000), Some(1000)).unwrap();
    }
}

async fn start() -> Sandbox {
    let fx = common::Fixture::start(Some(TOKEN), &[]).await;
    let (tmp, home, addr) = (fx.tmp().to_path_buf(), fx.home(), fx.addr);
    Sandbox { _fx: fx, tmp, home, addr }
}

impl Sandbox {
    async fn post(
        &self,
        method: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> http::Response<Incoming> {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let mut req = Request::post(format!("/filesystem.Filesystem/{method}"))
            .header("host", self.addr.to_string())
            .header("content-type", content_type)
            .header("connect-protocol-version", "1");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        sender.send_request(req.body(Full::new(body)).unwrap()).await.unwrap()
    }

    /// A unary call as `user` (None: no Authorization header, the default).
    async fn call_as(&self, user: Option<&str>, method: &str, msg: Value) -> (StatusCode, Value) {
        let mut headers = vec![("x-access-token", TOKEN)];
        if let Some(auth) = user {
            headers.push(("authorization", auth));
        }
        let resp = self.post(method, "application/json", &headers, Bytes::from(msg.to_string())).await;
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn call(&self, method: &str, msg: Value) -> (StatusCode, Value) {
        self.call_as(None, method, msg).await
    }

    /// Opens a server stream and returns a frame reader.
    async fn stream(&self, method: &str, msg: Value, headers: &[(&str, &str)]) -> Frames {
        let mut all = vec![("x-access-token", TOKEN)];
        all.extend_from_slice(headers);
        let payload = msg.to_string();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(payload.as_bytes());
        let resp = self.post(method, "application/connect+json", &all, Bytes::from(framed)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/connect+json");
        Frames { body: resp.into_body(), dec: EnvelopeDecoder::default(), last: None }
    }
}

struct Frames {
    body: Incoming,
    dec: EnvelopeDecoder,
    last: Option<(String, String)>,
}

impl Frames {
    /// The next frame: (end-stream?, JSON), or None once the body ends.
    async fn next(&mut self) -> Option<(bool, Value)> {
        loop {
            if let Some(env) = self.dec.next_envelope().unwrap() {
                return Some((env.flags & FLAG_END_STREAM != 0, serde_json::from_slice(&env.payload).unwrap()));
            }
            let frame = self.body.frame().await?.unwrap();
            if let Ok(data) = frame.into_data() {
                self.dec.push(&data);
            }
        }
    }

    /// The next filesystem event `(name, type)`, skipping keepalives and
    /// repeats (the kernel may report one write as several modifications).
    async fn event(&mut self) -> (String, String) {
        loop {
            let (end, msg) = tokio::time::timeout(Duration::from_secs(5), self.next()).await.unwrap().unwrap();
            assert!(!end, "stream ended early: {msg}");
            if let Some(fs) = msg.get("filesystem") {
                let event = (fs["name"].as_str().unwrap().to_string(), fs["type"].as_str().unwrap().to_string());
                if self.last.as_ref() != Some(&event) {
                    self.last = Some(event.clone());
                    return event;
                }
            }
        }
    }
}

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or("")
}

/// Open inotify instances of this process; the tests that count them hold
/// `INOTIFY` so they do not see each other's.
fn inotify_fds() -> usize {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_string_lossy() == "anon_inode:inotify")
        .count()
}
static INOTIFY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn wait_for_inotify(count: usize) {
    for _ in 0..100 {
        if inotify_fds() == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("inotify instances: {} (expected {count})", inotify_fds());
}

#[tokio::test]
async fn make_stat_list_move_remove() {
    let sb = start().await;
    let home = sb.home.display().to_string();

    let (st, body) = sb.call("MakeDir", json!({"path": "~/a/b/c"})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let entry = &body["entry"];
    assert_eq!(entry["path"], format!("{home}/a/b/c"));
    assert_eq!((entry["name"].as_str(), entry["type"].as_str()), (Some("c"), Some("FILE_TYPE_DIRECTORY")));
    if is_root() {
        assert_eq!((entry["owner"].as_str(), entry["group"].as_str()), (Some("user"), Some("user")));
    }
    let (st, body) = sb.call("MakeDir", json!({"path": "a/b"})).await;
    assert_eq!((st, code(&body)), (StatusCode::CONFLICT, "already_exists"));

    let file = sb.home.join("a/f.txt");
    fs::write(&file, "hello").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    chown_user(&file);
    let (st, body) = sb.call("MakeDir", json!({"path": "a/f.txt"})).await;
    assert_eq!((st, code(&body)), (StatusCode::BAD_REQUEST, "invalid_argument"));

    let (st, body) = sb.call("Stat", json!({"path": "a/f.txt"})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let e = &body["entry"];
    assert_eq!(e["type"], "FILE_TYPE_FILE");
    assert_eq!(e["path"], format!("{home}/a/f.txt"));
    assert_eq!(e["size"], "5");
    assert_eq!(e["mode"], 0o644);
    assert_eq!(e["permissions"], "-rw-r--r--");
    let mtime: pbjson_types::Timestamp = serde_json::from_value(e["modifiedTime"].clone()).unwrap();
    let want = fs::metadata(&file).unwrap().modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap();
    assert_eq!((mtime.seconds, mtime.nanos), (i64::try_from(want.as_secs()).unwrap(), want.subsec_nanos() as i32));
    assert!(e.get("symlinkTarget").is_none());
    let (st, body) = sb.call("Stat", json!({"path": "nope"})).await;
    assert_eq!((st, code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    symlink(sb.home.join("a"), sb.home.join("link")).unwrap();
    let (_, body) = sb.call("Stat", json!({"path": "~/link"})).await;
    assert_eq!(body["entry"]["type"], "FILE_TYPE_DIRECTORY");
    assert_eq!(body["entry"]["symlinkTarget"], format!("{home}/a"));
    assert_eq!(body["entry"]["isSymlink"], true);

    let names = |body: &Value| -> Vec<String> {
        body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().strip_prefix(&format!("{home}/")).unwrap().to_string())
            .collect()
    };
    let (st, body) = sb.call("ListDir", json!({"path": home})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(names(&body), ["a", "link"]);
    let (_, body) = sb.call("ListDir", json!({"path": "~", "depth": 3})).await;
    assert_eq!(names(&body), ["a", "a/b", "a/b/c", "a/f.txt", "link"]);
    let (st, body) = sb.call("ListDir", json!({"path": "a/f.txt"})).await;
    assert_eq!((st, code(&body)), (StatusCode::BAD_REQUEST, "invalid_argument"));
    let (st, body) = sb.call("ListDir", json!({"path": "nope"})).await;
    assert_eq!((st, code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    let (st, body) = sb.call("Move", json!({"source": "a/f.txt", "destination": "x/y/g.txt"})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["entry"]["path"], format!("{home}/x/y/g.txt"));
    assert_eq!(body["entry"]["size"], "5");
    assert!(!file.exists());
    let (st, body) = sb.call("Move", json!({"source": "a/f.txt", "destination": "z/f.txt"})).await;
    assert_eq!((st, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    assert!(!sb.home.join("z").exists(), "a failed move must not leave directories behind");

    let (st, body) = sb.call("Remove", json!({"path": "link"})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(sb.home.join("a/b/c").is_dir(), "removing a symlink must keep its target");
    let (st, _) = sb.call("Remove", json!({"path": "x"})).await;
    assert_eq!(st, StatusCode::OK);
    assert!(!sb.home.join("x").exists());
    let (st, body) = sb.call("Remove", json!({"path": "x"})).await;
    assert_eq!((st, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test]
async fn users_permissions_and_errors() {
    let sb = start().await;
    let secret = sb.tmp.join("secret");
    fs::create_dir(&secret).unwrap();
    fs::write(secret.join("f"), "x").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o700)).unwrap();
    let path = secret.display().to_string();

    let (st, body) = sb.call_as(Some(AS_ROOT), "ListDir", json!({"path": path})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    if is_root() {
        for method in ["ListDir", "Stat"] {
            let (st, body) = sb.call(method, json!({"path": format!("{path}/f")})).await;
            assert_eq!((st, code(&body)), (StatusCode::FORBIDDEN, "permission_denied"), "{method}: {body}");
        }
        let (st, body) = sb.call("MakeDir", json!({"path": format!("{path}/d")})).await;
        assert_eq!(code(&body), "permission_denied", "{st} {body}");
        // Made as root, owned by root.
        let (_, body) = sb.call_as(Some(AS_ROOT), "MakeDir", json!({"path": format!("{path}/d")})).await;
        assert_eq!(body["entry"]["owner"], "root");
    }

    // base64("ghost:")
    let (st, body) = sb.call_as(Some("Basic Z2hvc3Q6"), "Stat", json!({"path": "/"})).await;
    assert_eq!((st, code(&body)), (StatusCode::UNAUTHORIZED, "unauthenticated"));
    let (st, body) = sb.call("Frobnicate", json!({})).await;
    assert_eq!((st, code(&body)), (StatusCode::NOT_FOUND, "unimplemented"));
    let resp = sb.post("Stat", "application/json", &[], Bytes::from("{}")).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "the access token is required");
    let (st, body) = sb.call("Stat", json!({"path": 7})).await;
    assert_eq!((st, code(&body)), (StatusCode::BAD_REQUEST, "invalid_argument"));
}

#[tokio::test]
async fn watch_dir_streams_events_and_releases_the_watch() {
    let _serial = INOTIFY.lock().await;
    let sb = start().await;
    let dir = sb.home.join("w");
    fs::create_dir(&dir).unwrap();
    chown_user(&dir);
    let baseline = inotify_fds();

    let mut frames = sb
        .stream(
            "WatchDir",
            json!({"path": "~/w", "recursive": true}),
            &[("connect-timeout-ms", "4000"), ("keepalive-ping-interval", "1")],
        )
        .await;
    assert_eq!(frames.next().await.unwrap(), (false, json!({"start": {}})));
    assert_eq!(inotify_fds(), baseline + 1);

    let ev = |name: &str, kind: &str| (name.to_string(), format!("EVENT_TYPE_{kind}"));
    fs::create_dir(dir.join("sub")).unwrap();
    assert_eq!(frames.event().await, ev("sub", "CREATE"));
    // Give notify a moment to add the new subdirectory's watch.
    tokio::time::sleep(Duration::from_millis(100)).await;
    fs::File::create(dir.join("sub/new.txt")).unwrap();
    assert_eq!(frames.event().await, ev("sub/new.txt", "CREATE"));
    fs::write(dir.join("sub/new.txt"), "data").unwrap();
    assert_eq!(frames.event().await, ev("sub/new.txt", "WRITE"));
    fs::set_permissions(dir.join("sub/new.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(frames.event().await, ev("sub/new.txt", "CHMOD"));
    fs::rename(dir.join("sub/new.txt"), dir.join("moved.txt")).unwrap();
    assert_eq!(frames.event().await, ev("sub/new.txt", "RENAME"));
    assert_eq!(frames.event().await, ev("moved.txt", "CREATE"));
    fs::remove_file(dir.join("moved.txt")).unwrap();
    assert_eq!(frames.event().await, ev("moved.txt", "REMOVE"));

    // Quiet for over a second: a keepalive, then the deadline's end frame.
    let mut saw_keepalive = false;
    let end = loop {
        let (end, msg) = frames.next().await.unwrap();
        if end {
            break msg;
        }
        assert_eq!(msg, json!({"keepalive": {}}));
        saw_keepalive = true;
    };
    assert!(saw_keepalive);
    assert_eq!(end["error"]["code"], "deadline_exceeded");
    assert!(frames.next().await.is_none(), "nothing after the end-stream frame");
    drop(frames);
    wait_for_inotify(baseline).await;

    // A client that goes away releases the watch too.
    let mut frames = sb.stream("WatchDir", json!({"path": "~/w"}), &[]).await;
    assert_eq!(frames.next().await.unwrap(), (false, json!({"start": {}})));
    assert_eq!(inotify_fds(), baseline + 1);
    drop(frames);
    wait_for_inotify(baseline).await;

    // Errors come as a lone end-stream frame.
    fs::write(sb.home.join("plain"), "").unwrap();
    for (path, want) in [("~/missing", "not_found"), ("~/plain", "invalid_argument")] {
        let mut frames = sb.stream("WatchDir", json!({"path": path}), &[]).await;
        let (end, msg) = frames.next().await.unwrap();
        assert!(end, "{msg}");
        assert_eq!(msg["error"]["code"], want, "{path}: {msg}");
    }
}

#[tokio::test]
async fn watch_dir_attaches_entries() {
    let _serial = INOTIFY.lock().await;
    let sb = start().await;
    let baseline = inotify_fds();
    let mut frames = sb.stream("WatchDir", json!({"path": "~", "includeEntry": true}), &[]).await;
    assert_eq!(frames.next().await.unwrap(), (false, json!({"start": {}})));
    fs::write(sb.home.join("e.txt"), "12345").unwrap();
    let (end, msg) = frames.next().await.unwrap();
    assert!(!end);
    let entry = &msg["filesystem"]["entry"];
    assert_eq!((entry["name"].as_str(), entry["type"].as_str()), (Some("e.txt"), Some("FILE_TYPE_FILE")));
    // notify closes its inotify descriptor on its own thread: wait, so the
    // next test holding INOTIFY starts from a settled count.
    drop(frames);
    wait_for_inotify(baseline).await;
}

#[tokio::test]
async fn polling_watchers() {
    let _serial = INOTIFY.lock().await;
    let sb = start().await;
    let baseline = inotify_fds();
    let (st, body) = sb.call("CreateWatcher", json!({"path": "~", "recursive": false})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let id = body["watcherId"].as_str().unwrap().to_string();
    assert_eq!(inotify_fds(), baseline + 1);

    fs::write(sb.home.join("p.txt"), "x").unwrap();
    fs::remove_file(sb.home.join("p.txt")).unwrap();
    let mut seen = Vec::new();
    for _ in 0..50 {
        let (st, body) = sb.call("GetWatcherEvents", json!({"watcherId": id})).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        for e in body["events"].as_array().into_iter().flatten() {
            let event = format!("{} {}", e["name"].as_str().unwrap(), e["type"].as_str().unwrap());
            // The kernel may report one write as several modifications.
            if seen.last() != Some(&event) {
                seen.push(event);
            }
        }
        if seen.iter().any(|s| s.ends_with("REMOVE")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, ["p.txt EVENT_TYPE_CREATE", "p.txt EVENT_TYPE_WRITE", "p.txt EVENT_TYPE_REMOVE"]);
    let (_, body) = sb.call("GetWatcherEvents", json!({"watcherId": id})).await;
    assert_eq!(body, json!({}), "events are handed out once");

    let (st, _) = sb.call("RemoveWatcher", json!({"watcherId": id})).await;
    assert_eq!(st, StatusCode::OK);
    wait_for_inotify(baseline).await;
    for method in ["GetWatcherEvents", "RemoveWatcher"] {
        let (st, body) = sb.call(method, json!({"watcherId": id})).await;
        assert_eq!((st, code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{method}");
    }
    let (st, body) = sb.call("CreateWatcher", json!({"path": "~/missing"})).await;
    assert_eq!((st, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    fs::write(sb.home.join("file"), "").unwrap();
    let (st, body) = sb.call("CreateWatcher", json!({"path": "~/file"})).await;
    assert_eq!((st, code(&body)), (StatusCode::BAD_REQUEST, "invalid_argument"));
    assert_eq!(inotify_fds(), baseline);
}
