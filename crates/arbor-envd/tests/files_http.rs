//! `/files` and `/init` over real HTTP: the envd router served in-process on
//! 127.0.0.1, with a passwd of its own (`root`, and `user` with UID 1000
//! whose home is a temporary directory). Runs as root, as envd does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use arbor_envd::http::signature;
use reqwest::{multipart, StatusCode};
use serde_json::{json, Value};
use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};
use tokio::io::AsyncReadExt;

mod common;

struct TestEnvd {
    fx: common::Fixture,
    client: reqwest::Client,
}

impl TestEnvd {
    async fn start(token: Option<&str>) -> Self {
        let fx = common::Fixture::start(token, &[("BASE", "1")]).await;
        // No automatic decompression: tests look at the raw encoding.
        let client = reqwest::Client::builder().no_gzip().build().unwrap();
        Self { fx, client }
    }

    fn home(&self) -> PathBuf {
        self.fx.home()
    }

    fn url(&self, path: &str) -> String {
        self.fx.url(path)
    }

    fn get(&self, query: &[(&str, &str)]) -> reqwest::RequestBuilder {
        self.client.get(self.url("/files")).query(query)
    }

    fn post(&self, query: &[(&str, &str)]) -> reqwest::RequestBuilder {
        self.client.post(self.url("/files")).query(query)
    }
}

/// A form as httpx (the Python SDK) sends it: filenames unencoded.
fn form(parts: &[(&str, &[u8])]) -> multipart::Form {
    parts.iter().fold(multipart::Form::new().percent_encode_noop(), |f, (name, data)| {
        f.part("file", multipart::Part::bytes(data.to_vec()).file_name(name.to_string()))
    })
}

async fn json_of(resp: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status);
    resp.json().await.unwrap()
}

/// Asserts a JSON error `{"code": status, "message": ...}` and returns the message.
async fn error_of(resp: reqwest::Response, status: StatusCode) -> String {
    let body = json_of(resp, status).await;
    assert_eq!(body["code"], status.as_u16(), "{body}");
    body["message"].as_str().unwrap().to_string()
}

fn uid_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().uid()
}

async fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    async_compression::tokio::bufread::GzipEncoder::new(data).read_to_end(&mut out).await.unwrap();
    out
}

async fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    async_compression::tokio::bufread::GzipDecoder::new(data).read_to_end(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn multipart_uploads() {
    let e = TestEnvd::start(None).await;
    let home = e.home();

    // One part; `path` wins over the filename; parents are created as the user.
    let resp = e.post(&[("path", "new/dir/a.txt")]).multipart(form(&[("ignored.txt", b"alpha")])).send().await;
    let target = home.join("new/dir/a.txt");
    assert_eq!(
        json_of(resp.unwrap(), StatusCode::OK).await,
        json!([{"name": "a.txt", "type": "file", "path": target.to_str().unwrap()}])
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"alpha");
    assert_eq!(uid_of(&target), 1000);
    assert_eq!(uid_of(&home.join("new/dir")), 1000);
    assert!(!home.join("ignored.txt").exists());

    // Many parts: relative, `~/` and absolute filenames; overwriting.
    let abs = home.join("abs/c.bin");
    let parts: [(&str, &[u8]); 3] =
        [("a.txt", b"one"), ("~/sub/b.txt", b"two"), (abs.to_str().unwrap(), &[0u8, 159, 146, 150])];
    let got = json_of(e.post(&[]).multipart(form(&parts)).send().await.unwrap(), StatusCode::OK).await;
    let paths: Vec<&str> = got.as_array().unwrap().iter().map(|i| i["path"].as_str().unwrap()).collect();
    let expected = [home.join("a.txt"), home.join("sub/b.txt"), abs.clone()];
    assert_eq!(paths, expected.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>());
    for item in got.as_array().unwrap() {
        assert_eq!(item.as_object().unwrap().len(), 3, "exactly name, type, path: {item}");
        assert_eq!(item["type"], "file");
    }
    assert_eq!(std::fs::read(home.join("sub/b.txt")).unwrap(), b"two");
    assert_eq!(std::fs::read(&abs).unwrap(), [0u8, 159, 146, 150]);
    let again = e.post(&[]).multipart(form(&[("a.txt", b"1")])).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(std::fs::read(home.join("a.txt")).unwrap(), b"1");

    // As root: owned by root; relative paths go to root's home.
    let resp = e.post(&[("username", "root")]).multipart(form(&[("r.txt", b"r")])).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(uid_of(&e.fx.tmp().join("root/r.txt")), 0);

    // Empty file.
    let resp = e.post(&[]).multipart(form(&[("empty", b"")])).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(std::fs::read(home.join("empty")).unwrap(), b"");
}

#[tokio::test]
async fn multipart_rejections() {
    let e = TestEnvd::start(None).await;
    let home = e.home();
    // No part named `file`.
    let other = multipart::Form::new().text("other", "x");
    error_of(e.post(&[]).multipart(other).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    // The same destination twice.
    let dup = form(&[("d.txt", b"1"), ("./d.txt", b"2")]);
    error_of(e.post(&[]).multipart(dup).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    // `path` with two parts.
    let two = form(&[("x", b"1"), ("y", b"2")]);
    error_of(e.post(&[("path", "p")]).multipart(two).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    // Onto a directory; under a file.
    std::fs::create_dir(home.join("adir")).unwrap();
    let resp = e.post(&[]).multipart(form(&[("adir", b"x")])).send().await.unwrap();
    assert!(error_of(resp, StatusCode::BAD_REQUEST).await.contains("is a directory"));
    std::fs::write(home.join("afile"), b"").unwrap();
    let resp = e.post(&[]).multipart(form(&[("afile/under", b"x")])).send().await.unwrap();
    error_of(resp, StatusCode::BAD_REQUEST).await;
    // No permission: the user writing into a root-owned directory.
    let locked = e.fx.tmp().join("locked");
    std::fs::create_dir(&locked).unwrap();
    let resp = e.post(&[]).multipart(form(&[(locked.join("f").to_str().unwrap(), b"x")])).send().await.unwrap();
    error_of(resp, StatusCode::FORBIDDEN).await;
    assert!(!locked.join("f").exists());
    // Unknown user.
    let resp = e.post(&[("username", "nobody-here")]).multipart(form(&[("n", b"x")])).send().await.unwrap();
    error_of(resp, StatusCode::UNAUTHORIZED).await;
    // Neither multipart nor octet-stream.
    let resp = e.post(&[("path", "t")]).header("content-type", "text/plain").body("x").send().await.unwrap();
    error_of(resp, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn octet_stream_uploads() {
    let e = TestEnvd::start(None).await;
    let home = e.home();
    let octet = |q: &[(&str, &str)]| e.post(q).header("content-type", "application/octet-stream");

    let resp = octet(&[("path", "raw/r.bin")]).body(vec![7u8; 300_000]).send().await.unwrap();
    let target = home.join("raw/r.bin");
    assert_eq!(
        json_of(resp, StatusCode::OK).await,
        json!([{"name": "r.bin", "type": "file", "path": target.to_str().unwrap()}])
    );
    assert_eq!(std::fs::read(&target).unwrap(), vec![7u8; 300_000]);
    assert_eq!(uid_of(&target), 1000);

    // gzip-encoded body, stored decompressed.
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let resp = octet(&[("path", "a"), ("path", "b")]).body("x").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "duplicate query keys are rejected");
    let resp = octet(&[("path", "gz.bin")]).header("content-encoding", "gzip").body(gzip(&data).await).send().await;
    assert_eq!(resp.unwrap().status(), StatusCode::OK);
    assert_eq!(std::fs::read(home.join("gz.bin")).unwrap(), data);

    // A corrupt gzip body fails mid-upload; the partial file is removed.
    let mut bad = gzip(&data).await;
    let n = bad.len();
    bad[n - 8] ^= 0xff; // CRC
    let resp = octet(&[("path", "bad.bin")]).header("content-encoding", "gzip").body(bad).send().await.unwrap();
    error_of(resp, StatusCode::BAD_REQUEST).await;
    assert!(!home.join("bad.bin").exists());

    // `path` is required; other encodings are refused.
    error_of(octet(&[]).body("x").send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    let resp = octet(&[("path", "z")]).header("content-encoding", "br").body("x").send().await.unwrap();
    error_of(resp, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn downloads() {
    let e = TestEnvd::start(None).await;
    let home = e.home();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 7) as u8).collect();
    std::fs::write(home.join("d.bin"), &data).unwrap();

    let resp = e.get(&[("path", "d.bin")]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "application/octet-stream");
    assert_eq!(h["content-length"], data.len().to_string().as_str());
    assert_eq!(h["content-disposition"], "attachment; filename=\"d.bin\"");
    assert_eq!(resp.bytes().await.unwrap(), data);

    // gzip when accepted: no stale Content-Length, and the bytes round-trip.
    let resp = e.get(&[("path", "d.bin")]).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let len = resp.headers().get("content-length").map(|v| v.to_str().unwrap().parse::<usize>().unwrap());
    let body = resp.bytes().await.unwrap();
    assert!(len.is_none() || len == Some(body.len()), "Content-Length {len:?} for {} gzip bytes", body.len());
    assert!(body.len() < data.len());
    assert_eq!(gunzip(&body).await, data);
    // The same through a client that decompresses by itself.
    let auto = reqwest::Client::new();
    let resp = auto.get(e.url("/files")).query(&[("path", "~/d.bin")]).send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), data);

    // Incompressible data goes out as-is even when gzip is accepted: it
    // would only cost CPU.
    let noise: Vec<u8> = {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    };
    std::fs::write(home.join("noise.bin"), &noise).unwrap();
    let resp = e.get(&[("path", "noise.bin")]).header("accept-encoding", "gzip").send().await.unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
    assert_eq!(resp.headers()["content-length"], noise.len().to_string().as_str());
    assert_eq!(resp.bytes().await.unwrap(), noise);

    // An empty file and a pseudo file with size 0 but content.
    std::fs::write(home.join("empty"), b"").unwrap();
    let resp = e.get(&[("path", "empty")]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = e.get(&[("path", "/proc/self/status"), ("username", "root")]).send().await.unwrap();
    assert!(resp.text().await.unwrap().contains("Pid:"));

    // As root: a root-only file; as the user: forbidden.
    let secret = e.fx.tmp().join("secret");
    std::fs::write(&secret, b"s").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = secret.to_str().unwrap();
    let resp = e.get(&[("path", s), ("username", "root")]).send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), "s");
    error_of(e.get(&[("path", s)]).send().await.unwrap(), StatusCode::FORBIDDEN).await;

    error_of(e.get(&[("path", "missing")]).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    error_of(e.get(&[("path", "~")]).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    error_of(e.get(&[]).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    error_of(e.get(&[("path", "/dev/null")]).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    let resp = e.get(&[("path", "d.bin"), ("username", "nobody-here")]).send().await.unwrap();
    error_of(resp, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn token_and_signed_urls() {
    let e = TestEnvd::start(Some("secret")).await;
    std::fs::write(e.home().join("f.txt"), b"hello").unwrap();
    let sign = |path: &str, op, user: &str, exp: Option<i64>| signature::sign(path, op, user, "secret", exp);
    let read = signature::Operation::Read;
    let write = signature::Operation::Write;

    error_of(e.get(&[("path", "f.txt")]).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    let resp = e.get(&[("path", "f.txt")]).header("x-access-token", "secret").send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), "hello");
    let resp = e.get(&[("path", "f.txt")]).header("x-access-token", "nope").send().await.unwrap();
    error_of(resp, StatusCode::UNAUTHORIZED).await;
    let resp = e.post(&[]).multipart(form(&[("w.txt", b"x")])).send().await.unwrap();
    error_of(resp, StatusCode::UNAUTHORIZED).await;

    // Signed download, with and without a username and an expiration.
    let sig = sign("f.txt", read, "", None);
    let resp = e.get(&[("path", "f.txt"), ("signature", &sig)]).send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), "hello");
    let exp = (signature::unix_now() + 60).to_string();
    let sig = sign("f.txt", read, "user", Some(exp.parse().unwrap()));
    let q = [("path", "f.txt"), ("username", "user"), ("signature", &sig), ("signature_expiration", &exp)];
    assert_eq!(e.get(&q).send().await.unwrap().bytes().await.unwrap(), "hello");

    // Wrong: another path, another user, a read signature used to write.
    let sig = sign("other.txt", read, "", None);
    error_of(e.get(&[("path", "f.txt"), ("signature", &sig)]).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    let sig = sign("f.txt", read, "root", None);
    error_of(e.get(&[("path", "f.txt"), ("signature", &sig)]).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    let sig = sign("w.txt", read, "", None);
    let resp = e.post(&[("path", "w.txt"), ("signature", &sig)]).multipart(form(&[("w.txt", b"x")])).send();
    error_of(resp.await.unwrap(), StatusCode::UNAUTHORIZED).await;

    // Expired: exactly the body the SDK's tests expect.
    let past = (signature::unix_now() - 10_000).to_string();
    let sig = sign("f.txt", read, "user", Some(past.parse().unwrap()));
    let q = [("path", "f.txt"), ("username", "user"), ("signature", &sig), ("signature_expiration", &past)];
    let body = json_of(e.get(&q).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    assert_eq!(body, json!({"code": 401, "message": "signature is already expired"}));

    // Signed upload.
    let sig = sign("w.txt", write, "", None);
    let resp = e.post(&[("path", "w.txt"), ("signature", &sig)]).multipart(form(&[("w.txt", b"up")])).send();
    assert_eq!(resp.await.unwrap().status(), StatusCode::OK);
    assert_eq!(std::fs::read(e.home().join("w.txt")).unwrap(), b"up");
}

#[tokio::test]
async fn init_sets_envs_token_and_defaults() {
    let e = TestEnvd::start(None).await;
    let init = |body: &'static str| e.client.post(e.url("/init")).header("content-type", "application/json").body(body);

    let resp = init(r#"{"envVars": {"A": "x"}, "timestamp": "2024-01-01T00:00:00.5+02:00", "hyperloopIP": "1.2.3.4"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let envs = json_of(e.client.get(e.url("/envs")).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(envs, json!({"A": "x", "BASE": "1"}));
    assert_eq!(init("").send().await.unwrap().status(), StatusCode::NO_CONTENT);
    error_of(init("{not json").send().await.unwrap(), StatusCode::BAD_REQUEST).await;

    // Default user: uploads without a username now go as root.
    assert_eq!(init(r#"{"defaultUser": "root"}"#).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    let resp = e.post(&[]).multipart(form(&[("as-root", b"x")])).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(uid_of(&e.fx.tmp().join("root/as-root")), 0);

    // The token: afterwards required, then rotated.
    assert_eq!(init(r#"{"accessToken": "t1"}"#).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    error_of(e.get(&[("path", "as-root")]).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    error_of(init(r#"{"accessToken": "t2"}"#).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    let resp = init(r#"{"accessToken": "t2"}"#).header("x-access-token", "t1").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = e.get(&[("path", "as-root")]).header("x-access-token", "t2").send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), "x");
}

/// ENOSPC maps to 507 and leaves no partial file. Needs a tmpfs mount.
#[tokio::test]
async fn disk_full() {
    let e = TestEnvd::start(None).await;
    let mnt = e.fx.tmp().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k,mode=0777", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("disk_full: cannot mount a tmpfs here; not checked");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let target = mnt.join("big.bin");
    let resp = e
        .post(&[("path", target.to_str().unwrap())])
        .header("content-type", "application/octet-stream")
        .body(vec![1u8; 4 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    error_of(resp, StatusCode::INSUFFICIENT_STORAGE).await;
    assert!(!target.exists());
}

/// 100 MB each way; run with `--release -- --ignored` to check throughput.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement; run in release"]
async fn throughput() {
    let e = TestEnvd::start(None).await;
    let data: Vec<u8> = (0..100u32 * 1024 * 1024).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mb = data.len() as f64 / 1e6;

    let t = std::time::Instant::now();
    let resp = e.post(&[("path", "big.bin")]).header("content-type", "application/octet-stream").body(data.clone());
    assert_eq!(resp.send().await.unwrap().status(), StatusCode::OK);
    let up = mb / t.elapsed().as_secs_f64();

    let t = std::time::Instant::now();
    let form = multipart::Form::new().part("file", multipart::Part::bytes(data.clone()).file_name("big2.bin"));
    assert_eq!(e.post(&[]).multipart(form).send().await.unwrap().status(), StatusCode::OK);
    let up_multipart = mb / t.elapsed().as_secs_f64();

    let t = std::time::Instant::now();
    let body = e.get(&[("path", "big.bin")]).send().await.unwrap().bytes().await.unwrap();
    let down = mb / t.elapsed().as_secs_f64();
    assert!(body == data);

    let t = std::time::Instant::now();
    let resp = e.get(&[("path", "big.bin")]).header("accept-encoding", "gzip").send().await.unwrap();
    let gz = resp.bytes().await.unwrap();
    let down_gzip = mb / t.elapsed().as_secs_f64();
    eprintln!(
        "MB/s: upload octet {up:.0}, upload multipart {up_multipart:.0}, download {down:.0}, \
         download gzip {down_gzip:.0} ({} bytes)",
        gz.len()
    );
    assert!(up >= 300.0 && up_multipart >= 300.0 && down >= 300.0, "below 300 MB/s");
}
