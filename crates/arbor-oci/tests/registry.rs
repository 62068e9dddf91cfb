//! Pulls from a real registry (Debian's `docker-registry`) on loopback, into which each test pushes an
//! image it builds itself with `umoci` and `skopeo`. Needs root (owners, device nodes).

#![allow(clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arbor_oci::{pull, resolve, Error, PullOptions};

const TOOLS: &[&str] = &["/usr/bin/docker-registry", "/usr/bin/skopeo", "/usr/bin/umoci"];

/// Whether the tools and privileges are there; prints why not, so a skip is never silent.
fn can_run() -> bool {
    let missing: Vec<_> = TOOLS.iter().filter(|t| !Path::new(t).exists()).collect();
    if !missing.is_empty() {
        eprintln!("SKIP: missing {missing:?} (scripts/setup.sh installs docker-registry, skopeo, umoci)");
        return false;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root (image owners and device nodes)");
        return false;
    }
    true
}

/// A `docker-registry serve` on 127.0.0.1 with its storage in a temp dir; killed on drop.
struct Registry {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

/// bcrypt of "secret" (made once with Python's crypt module), for the registry's htpasswd file.
const HTPASSWD: &str = "arbor:$2b$04$Z6Kn5L5nDEybIc/S2aIfleUvQUMfh0do7d.z/7.Al5wNMLuKN7BPe\n";

impl Registry {
    fn start() -> Registry {
        Self::start_with(false)
    }

    /// `with_auth`: HTTP basic auth, user `arbor`, password `secret`.
    fn start_with(with_auth: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        // Ask the kernel for a free port, then hand it to the registry (a tiny race, acceptable in tests).
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("config.yml");
        let auth = if with_auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, HTPASSWD).unwrap();
            format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", htpasswd.display())
        } else {
            String::new()
        };
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n{auth}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let reg = Registry { child: Some(child), port, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds `<work>/img:t`, three layers:
/// 1. (umoci repack) bin/busybox, data/f (1000:1001 0640, xattr user.arbor=yes), data/hl (hard link to
///    f), data/sl -> ../bin/busybox, data/suid (04755), dev/null1 (char 1:3), etc/gone, etc/opq/{old,keep}
/// 2. (umoci repack) deletes etc/gone and etc/opq/old (whiteouts), adds etc/opq/new
/// 3. (umoci raw add-layer) etc/opq made opaque, with etc/opq/fresh
///
/// and config env FOO=bar, workdir /data, user 1000:1001, entrypoint /bin/busybox, cmd sh.
fn build_image(work: &Path) -> PathBuf {
    let img = work.join("img");
    let bundle = work.join("bundle");
    let r = bundle.join("rootfs");
    run(Command::new("umoci").arg("init").arg("--layout").arg(&img));
    run(Command::new("umoci").args(["new", "--image"]).arg(format!("{}:t", img.display())));
    let image = format!("{}:t", img.display());
    run(Command::new("umoci").args(["unpack", "--image", &image]).arg(&bundle));

    for d in ["bin", "data", "dev", "etc/opq"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    // Any file will do; busybox when present so the image is even runnable.
    let payload = ["/usr/bin/busybox", "/bin/busybox", "/bin/sh"].iter().find(|p| Path::new(p).exists()).unwrap();
    std::fs::copy(payload, r.join("bin/busybox")).unwrap();
    std::fs::write(r.join("data/f"), "hello\n").unwrap();
    xattr::set(r.join("data/f"), "user.arbor", b"yes").unwrap();
    std::os::unix::fs::chown(r.join("data/f"), Some(1000), Some(1001)).unwrap();
    set_mode(&r.join("data/f"), 0o640);
    std::fs::hard_link(r.join("data/f"), r.join("data/hl")).unwrap();
    std::os::unix::fs::symlink("../bin/busybox", r.join("data/sl")).unwrap();
    std::fs::write(r.join("data/suid"), "x").unwrap();
    set_mode(&r.join("data/suid"), 0o4755);
    run(Command::new("mknod").arg(r.join("dev/null1")).args(["c", "1", "3"]));
    std::fs::write(r.join("etc/gone"), "a").unwrap();
    std::fs::write(r.join("etc/opq/old"), "b").unwrap();
    std::fs::write(r.join("etc/opq/keep"), "c").unwrap();
    run(Command::new("umoci").args(["repack", "--refresh-bundle", "--image", &image]).arg(&bundle));

    std::fs::remove_file(r.join("etc/gone")).unwrap();
    std::fs::remove_file(r.join("etc/opq/old")).unwrap();
    std::fs::write(r.join("etc/opq/new"), "d").unwrap();
    run(Command::new("umoci").args(["repack", "--image", &image]).arg(&bundle));

    // umoci writes one whiteout per deleted file, never an opaque marker: hand-made layer for that.
    let l3 = work.join("l3");
    std::fs::create_dir_all(l3.join("etc/opq")).unwrap();
    std::fs::write(l3.join("etc/opq/.wh..wh..opq"), "").unwrap();
    std::fs::write(l3.join("etc/opq/fresh"), "e").unwrap();
    let l3_tar = work.join("l3.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&l3)
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
        .arg(&l3_tar)
        .arg("etc"));
    run(Command::new("umoci").args(["raw", "add-layer", "--image", &image]).arg(&l3_tar));

    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.env",
        "FOO=bar",
        "--config.workingdir",
        "/data",
        "--config.user",
        "1000:1001",
        "--config.entrypoint",
        "/bin/busybox",
        "--config.cmd",
        "sh",
    ]));
    img
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Pushes to `test/<repo>:t`; one repository per compression, since skopeo reuses blobs already in
/// the target repository instead of recompressing them.
fn push(img: &Path, reg: &Registry, repo: &str, extra: &[&str]) {
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .args(extra)
        .arg(format!("oci:{}:t", img.display()))
        .arg(format!("docker://{}/test/{repo}:t", reg.host())));
}

fn check_tree(root: &Path) {
    let meta = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap();

    let f = meta("data/f");
    assert_eq!(std::fs::read_to_string(root.join("data/f")).unwrap(), "hello\n");
    assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1000, 1001, 0o640));
    assert_eq!(xattr::get(root.join("data/f"), "user.arbor").unwrap().as_deref(), Some(&b"yes"[..]));
    let hl = meta("data/hl");
    assert_eq!((hl.ino(), f.nlink()), (f.ino(), 2), "data/hl is a hard link of data/f");
    assert!(meta("data/sl").file_type().is_symlink());
    assert_eq!(std::fs::read_link(root.join("data/sl")).unwrap(), Path::new("../bin/busybox"));
    assert_eq!(meta("data/suid").mode() & 0o7777, 0o4755);
    assert_eq!(meta("bin/busybox").mode() & 0o7777, 0o755);
    let dev = meta("dev/null1");
    assert!(dev.file_type().is_char_device());
    assert_eq!(dev.rdev(), libc::makedev(1, 3));

    assert!(!root.join("etc/gone").exists(), "whiteout .wh.gone applied");
    let mut opq: Vec<String> = std::fs::read_dir(root.join("etc/opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    opq.sort();
    assert_eq!(opq, ["fresh"], "opaque dir keeps only the upper layer's entries");
    let whiteouts: Vec<_> = walk(root)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".wh.")))
        .collect();
    assert!(whiteouts.is_empty(), "whiteout files written: {whiteouts:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[tokio::test]
async fn pull_applies_layers_whiteouts_and_config() {
    if !can_run() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path());
    let reg = Registry::start();
    // zstd first: skopeo would otherwise mount the gzip blobs it just pushed instead of recompressing.
    push(&img, &reg, "zst", &["--dest-compress-format", "zstd"]);
    push(&img, &reg, "gz", &[]);
    for (tag, media_type) in [("gz", "tar+gzip"), ("zst", "tar+zstd")] {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/test/{tag}:t", reg.host()))
            .output()
            .unwrap();
        let manifest = String::from_utf8_lossy(&out.stdout);
        assert!(manifest.contains(media_type), "{tag}: {manifest}");
    }

    for tag in ["gz", "zst"] {
        let reference = format!("{}/test/{tag}:t", reg.host());
        let opts = PullOptions::default();
        let (digest, config) = resolve(&reference, &opts).await.unwrap();
        assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
        assert!(config.env.contains(&("FOO".into(), "bar".into())), "{:?}", config.env);
        assert_eq!(config.workdir.as_deref(), Some("/data"));
        assert_eq!(config.user.as_deref(), Some("1000:1001"));
        assert_eq!(config.entrypoint, ["/bin/busybox"]);
        assert_eq!(config.cmd, ["sh"]);

        let dest = work.path().join(format!("root-{tag}"));
        let image = pull(&reference, &opts, &dest).await.unwrap();
        assert_eq!(image.digest, digest);
        assert_eq!(image.config, config);
        check_tree(&dest);

        // The same image by digest.
        let by_digest = format!("{}/test/{tag}@{digest}", reg.host());
        assert_eq!(resolve(&by_digest, &opts).await.unwrap().0, digest);
    }
}

#[tokio::test]
async fn unknown_image_or_tag_is_not_found() {
    if !can_run() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path());
    let reg = Registry::start();
    push(&img, &reg, "img", &[]);
    let opts = PullOptions::default();
    for reference in [format!("{}/test/img:nope", reg.host()), format!("{}/test/other:t", reg.host())] {
        match resolve(&reference, &opts).await {
            Err(e @ Error::NotFound { .. }) => eprintln!("{e}"),
            other => panic!("{reference}: expected NotFound, got {other:?}"),
        }
    }
    let dest = work.path().join("root");
    let err = pull(&format!("{}/test/img:nope", reg.host()), &opts, &dest).await;
    assert!(matches!(err, Err(Error::NotFound { .. })), "{err:?}");
    assert!(!dest.exists(), "nothing unpacked for a missing image");
}

#[tokio::test]
async fn registry_down_is_unreachable() {
    if !can_run() {
        return;
    }
    let mut reg = Registry::start();
    let reference = format!("{}/test/img:t", reg.host());
    reg.stop();
    match resolve(&reference, &PullOptions::default()).await {
        Err(e @ Error::Unreachable { .. }) => eprintln!("{e}"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn credentials_are_required_and_used() {
    if !can_run() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path());
    let reg = Registry::start_with(true);
    push(&img, &reg, "img", &["--dest-creds", "arbor:secret"]);
    let reference = format!("{}/test/img:t", reg.host());

    let creds = |password: &str| PullOptions {
        username: Some("arbor".into()),
        password: Some(password.into()),
        insecure: None,
    };
    for opts in [PullOptions::default(), creds("wrong")] {
        match resolve(&reference, &opts).await {
            Err(e @ Error::AuthRequired { .. }) => eprintln!("{e}"),
            other => panic!("expected AuthRequired, got {other:?}"),
        }
    }
    let image = pull(&reference, &creds("secret"), &work.path().join("root")).await.unwrap();
    assert_eq!(image.config.cmd, ["sh"]);
    check_tree(&work.path().join("root"));
}

#[tokio::test]
async fn corrupted_layer_is_a_digest_mismatch() {
    if !can_run() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path());
    let reg = Registry::start();
    push(&img, &reg, "img", &[]);
    // The largest blob in the registry's storage is the busybox layer: flip one byte in its middle.
    let blob = walk(&reg.dir.path().join("data"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "data"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();

    let reference = format!("{}/test/img:t", reg.host());
    let dest = work.path().join("root");
    match pull(&reference, &PullOptions::default(), &dest).await {
        Err(e @ Error::DigestMismatch { .. }) => eprintln!("{e}"),
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert!(!dest.join("bin/busybox").exists(), "corrupted layer not applied");
}

/// Adds to the layout an OCI index tagged `tag` whose entries all point at the manifest of `t`, one per
/// `(os, architecture)`; returns the digest of that manifest.
fn add_index(img: &Path, tag: &str, platforms: &[(&str, &str)]) -> String {
    use sha2::Digest;
    let layout_index = img.join("index.json");
    let mut layout: serde_json::Value = serde_json::from_slice(&std::fs::read(&layout_index).unwrap()).unwrap();
    let manifests = layout["manifests"].as_array_mut().unwrap();
    let target =
        manifests.iter().find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "t").unwrap().clone();
    let entries: Vec<_> = platforms
        .iter()
        .map(|(os, arch)| {
            serde_json::json!({
                "mediaType": target["mediaType"], "digest": target["digest"], "size": target["size"],
                "platform": { "os": os, "architecture": arch },
            })
        })
        .collect();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    let hex: String = sha2::Sha256::digest(&index).iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(img.join("blobs/sha256").join(&hex), &index).unwrap();
    manifests.push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": format!("sha256:{hex}"),
        "size": index.len(),
        "annotations": { "org.opencontainers.image.ref.name": tag },
    }));
    std::fs::write(&layout_index, serde_json::to_vec(&layout).unwrap()).unwrap();
    target["digest"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn index_resolves_to_linux_amd64() {
    if !can_run() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path());
    let manifest = add_index(&img, "multi", &[("linux", "arm64"), ("linux", "amd64")]);
    add_index(&img, "armonly", &[("linux", "arm64")]);
    let reg = Registry::start();
    for tag in ["multi", "armonly"] {
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", img.display()))
            .arg(format!("docker://{}/test/{tag}:t", reg.host())));
    }
    let opts = PullOptions::default();
    let (digest, _) = resolve(&format!("{}/test/multi:t", reg.host()), &opts).await.unwrap();
    assert_eq!(digest, manifest, "the platform manifest's digest, not the index's");
    match resolve(&format!("{}/test/armonly:t", reg.host()), &opts).await {
        Err(e @ Error::NoPlatform { .. }) => eprintln!("{e}"),
        other => panic!("expected NoPlatform, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_references_are_refused() {
    let err = resolve("127.0.0.1:1/UPPER/case:t", &PullOptions::default()).await;
    assert!(matches!(err, Err(Error::InvalidReference { .. })), "{err:?}");
}
