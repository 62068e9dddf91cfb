"""Templates from a Dockerfile, end to end: `arbor template build` against a real server (real build
sandboxes), sandboxes made from the result with the official Python SDK, the step cache, versions,
start commands in the memory snapshot, build errors, and `FROM` an image in a local registry."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from envd_harness import free_port
from novita_sandbox.core import Sandbox
from server_harness import INSTANCE, arbor_binary, start_server


@pytest.fixture(scope="module")
def server():
    srv = start_server()
    yield srv
    srv.teardown()


def arbor(server, *args, check=True, timeout=600):
    env = dict(os.environ, ARBOR_API_URL=server.url, ARBOR_API_KEY=server.key, XDG_CONFIG_HOME=str(server.base))
    res = subprocess.run([str(arbor_binary()), *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert res.returncode == 0, (args, res.stdout, res.stderr)
    return res


def context(files: dict) -> Path:
    d = Path(tempfile.mkdtemp(prefix="arbor-tpl-"))
    for name, body in files.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body)
    return d


def build(server, ctx: Path, name: str, *extra, check=True):
    t = time.monotonic()
    res = arbor(server, "template", "build", str(ctx), "--name", name, *extra, check=check)
    return res, time.monotonic() - t


def build_sandboxes_left() -> list:
    """Build sandboxes (ids `b-...`) still on the node: their cgroups, mounts and network namespaces."""
    roots = [Path("/sys/fs/cgroup") / INSTANCE, *Path("/sys/fs/cgroup").glob(f"*/{INSTANCE}")]
    left = [p.name for r in roots if r.is_dir() for p in r.iterdir() if p.is_dir() and p.name.startswith("b-")]
    netns = Path("/run") / INSTANCE / "netns"
    left += [p.name for p in netns.glob("b-*")] if netns.is_dir() else []
    left += [line.split()[1] for line in open("/proc/mounts") if "/sandboxes/b-" in line]
    return left


def test_dockerfile_build_use_cache_versions(server):
    marker = uuid.uuid4().hex
    ctx = context(
        {
            "Dockerfile": f"""# a multi-step template
FROM base
ARG GREETING=hello
ENV APP_HOME=/srv/app \\
    GREETING=${{GREETING}}
RUN echo {marker} > /etc/build-marker
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends jq >/dev/null
RUN pip install --no-cache-dir --quiet humanize
COPY --chown=user:user app/ /srv/app/
WORKDIR /srv/app
USER user
""",
            "app/main.py": "print('from the template')\n",
            "app/data/x.txt": "x\n",
            ".dockerignore": "app/secret.txt\n",
            "app/secret.txt": "never copied\n",
        }
    )
    name = f"tpl-{marker[:8]}"
    res, first = build(server, ctx, name)
    assert "ready" in (res.stdout + res.stderr)

    opts = server.sdk_opts()
    sbx = Sandbox.create(template=name, timeout=120, **opts)
    try:
        out = sbx.commands.run("whoami; pwd; echo $APP_HOME $GREETING; jq --version; cat /etc/build-marker")
        lines = out.stdout.split()
        assert lines[:4] == ["user", "/srv/app", "/srv/app", "hello"], out.stdout
        assert lines[4].startswith("jq-") and lines[5] == marker, out.stdout
        assert sbx.files.read("/srv/app/main.py") == "print('from the template')\n"
        owner = sbx.commands.run("stat -c %U:%G /srv/app/main.py /srv/app/data/x.txt").stdout.split()
        assert owner == ["user:user", "user:user"]
        assert not sbx.files.exists("/srv/app/secret.txt")
        assert sbx.commands.run("python3 main.py").stdout == "from the template\n"
        assert sbx.commands.run("python3 -c 'import humanize; print(humanize.intcomma(1234))'").stdout == "1,234\n"
    except Exception:
        sbx.kill()
        raise

    # An unchanged rebuild takes everything from the cache: a new version, at least 10x faster.
    res, second = build(server, ctx, name)
    assert "cached" in res.stdout + res.stderr
    assert second * 10 <= first, (first, second)
    info = arbor(server, "template", "info", name, "--json").stdout
    assert '"version": 2' in info or '"version":2' in info, info

    # Version 1 is in use by the sandbox: refused; version 2 is not.
    res = arbor(server, "template", "delete", f"{name}:1", check=False)
    assert res.returncode != 0 and "in use" in res.stderr, res.stderr
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": server.key}) as api:
        r = api.delete(f"/templates/{name}:1")
        assert r.status_code == 409 and r.json()["code"] == 409
    # name:1 still starts sandboxes; the sandbox keeps running on version 1.
    v1 = Sandbox.create(template=f"{name}:1", timeout=60, **opts)
    v1.kill()
    assert sbx.commands.run("cat /etc/build-marker").stdout.strip() == marker
    arbor(server, "template", "delete", f"{name}:2")
    sbx.kill()
    arbor(server, "template", "delete", name)
    assert name not in arbor(server, "template", "list", "--json").stdout
    shutil.rmtree(ctx)


def test_start_command_runs_in_the_snapshot(server):
    marker = uuid.uuid4().hex[:8]
    ctx = context(
        {
            "Dockerfile": f"""FROM base
RUN mkdir -p /srv/www && echo page-{marker} > /srv/www/index.html
WORKDIR /srv/www
CMD ["python3", "-m", "http.server", "8000"]
""",
        }
    )
    name = f"srv-{marker}"
    build(server, ctx, name, "--ready-cmd", "curl -sf http://127.0.0.1:8000/ >/dev/null")
    sbx = Sandbox.create(template=name, timeout=120, **server.sdk_opts())
    try:
        # Answering at once: the server was started at build time, not now.
        out = sbx.commands.run("curl -sf http://127.0.0.1:8000/index.html")
        assert out.stdout.strip() == f"page-{marker}"
        procs = sbx.commands.run("ps -eo pid,args | grep '[h]ttp.server'").stdout
        assert "http.server 8000" in procs, procs
    finally:
        sbx.kill()
    arbor(server, "template", "delete", name)
    shutil.rmtree(ctx)


def test_build_error_names_the_line_and_leaves_nothing(server):
    ctx = context({"Dockerfile": "FROM base\nRUN echo fine\nRUN echo about to fail && exit 7\nRUN echo never\n"})
    name = f"bad-{uuid.uuid4().hex[:8]}"
    res, _ = build(server, ctx, name, check=False)
    assert res.returncode != 0
    assert "line 3" in res.stderr or "Dockerfile:3" in res.stderr, res.stderr
    assert "about to fail" in res.stdout + res.stderr
    # Any terminal can read (or follow) the same build's log.
    ids = re.search(r"templateID (\w+), buildID (\w+)", res.stdout + res.stderr)
    assert ids, res.stdout + res.stderr
    logs = arbor(server, "template", "logs", ids[1], ids[2], check=False)
    assert "about to fail" in logs.stdout + logs.stderr, logs
    assert build_sandboxes_left() == []
    with pytest.raises(Exception):
        Sandbox.create(template=name, timeout=30, **server.sdk_opts())
    # A parse error names its line before anything reaches the server.
    bad = context({"Dockerfile": "FROM base\nRUN true\nFROBNICATE now\n"})
    res = arbor(server, "template", "build", str(bad), "--name", name, check=False)
    assert res.returncode != 0 and "3" in res.stderr and "FROBNICATE" in res.stderr.upper(), res.stderr
    arbor(server, "template", "delete", name, check=False)
    shutil.rmtree(ctx)
    shutil.rmtree(bad)


@pytest.fixture()
def registry():
    """Debian's docker-registry on a loopback port, with its storage in a temp dir."""
    binary = shutil.which("docker-registry")
    if not binary or not shutil.which("umoci") or not shutil.which("skopeo"):
        pytest.skip("docker-registry, umoci and skopeo are installed by scripts/setup.sh")
    d = Path(tempfile.mkdtemp(prefix="arbor-registry-"))
    port = free_port()
    (d / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen([binary, "serve", str(d / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield d, f"127.0.0.1:{port}"
    proc.kill()
    proc.wait()
    shutil.rmtree(d)


def test_from_an_image_in_a_local_registry(server, registry):
    work, host = registry
    # An image of our own: busybox as its shell, a file, an ENV in its config.
    layout = work / "layout"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:v1"], check=True)
    bundle = work / "bundle"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:v1", str(bundle)], check=True)
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy("/usr/bin/busybox", rootfs / "bin/busybox")
    for tool in ["sh", "cat", "echo", "ls", "mkdir", "id", "env", "chown", "rm", "whoami", "pwd"]:
        (rootfs / "bin" / tool).symlink_to("busybox")
    # The SDK runs commands with `/bin/bash -l -c`; busybox's sh understands that.
    (rootfs / "bin/bash").write_text('#!/bin/sh\nexec /bin/sh "$@"\n')
    (rootfs / "bin/bash").chmod(0o755)
    (rootfs / "etc").mkdir()
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    (rootfs / "etc/group").write_text("root:x:0:\nuser:x:1000:\n")
    (rootfs / "etc/from-image").write_text("oci\n")
    subprocess.run(["umoci", "repack", "--image", f"{layout}:v1", str(bundle)], check=True)
    subprocess.run(["umoci", "config", "--image", f"{layout}:v1", "--config.env", "IMAGE_VAR=from-config"], check=True)
    subprocess.run(
        ["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{host}/arbor/test:v1"],
        check=True,
        capture_output=True,
    )
    ctx = context({"Dockerfile": f"FROM {host}/arbor/test:v1\nRUN echo built > /etc/built\n", "x": ""})
    name = f"oci-{uuid.uuid4().hex[:8]}"
    build(server, ctx, name)
    sbx = Sandbox.create(template=name, timeout=60, **server.sdk_opts())
    try:
        out = sbx.commands.run("cat /etc/from-image /etc/built; echo $IMAGE_VAR", user="root")
        assert out.stdout.split() == ["oci", "built", "from-config"], out.stdout
    finally:
        sbx.kill()
    arbor(server, "template", "delete", name)
    shutil.rmtree(ctx)


def test_fuse_mount_in_a_template_sandbox(server):
    """A template with a FUSE client (as the product documents show with s3fs): bindfs needs no network."""
    ctx = context({"Dockerfile": "FROM base\nRUN apt-get update -qq && apt-get install -y -qq --no-install-recommends fuse3 bindfs >/dev/null\n"})
    name = f"fuse-{uuid.uuid4().hex[:8]}"
    build(server, ctx, name)
    sbx = Sandbox.create(template=name, timeout=120, **server.sdk_opts())
    try:
        out = sbx.commands.run(
            "mkdir -p /srv/src /mnt/view && echo through-fuse > /srv/src/f && bindfs /srv/src /mnt/view"
            " && cat /mnt/view/f && grep -c ' /mnt/view fuse' /proc/mounts && fusermount3 -u /mnt/view"
            " && ! grep -q /mnt/view /proc/mounts && echo unmounted",
            user="root",
        )
        assert out.stdout.split() == ["through-fuse", "1", "unmounted"], out.stdout
        # The unprivileged user mounts through Debian's setuid fusermount3.
        out = sbx.commands.run(
            "mkdir -p ~/src ~/view && echo mine > ~/src/f && bindfs --no-allow-other ~/src ~/view"
            " && cat ~/view/f && fusermount3 -u ~/view && echo done"
        )
        assert out.stdout.split() == ["mine", "done"], out.stdout
        # Only FUSE: any other mount is refused, even for root.
        res = sbx.commands.run("mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && echo mounted || echo refused", user="root")
        assert res.stdout.strip().endswith("refused"), res.stdout
    finally:
        sbx.kill()
    arbor(server, "template", "delete", name)
    shutil.rmtree(ctx)


def test_the_sdks_own_template_builder(server, tmp_path):
    """`Template.build()` of the official SDK (steps, file upload, status polling) works unmodified."""
    from novita_sandbox.core import Template

    (tmp_path / "hello.txt").write_text("hello sdk\n")
    name = f"sdk-{uuid.uuid4().hex[:8]}"
    template = (
        Template(file_context_path=str(tmp_path))
        .from_template("base")
        .copy("hello.txt", "/opt/hello.txt")
        .run_cmd("echo built-by-sdk > /opt/marker")
        .set_envs({"SDK_VAR": "yes"})
    )
    logs = []
    opts = {k: v for k, v in server.sdk_opts().items() if k in ("api_url", "api_key")}
    info = Template.build(template, alias=name, on_build_logs=lambda e: logs.append(e.message), **opts)
    assert info.template_id and any("ready" in m for m in logs), logs
    sbx = Sandbox.create(template=name, timeout=60, **server.sdk_opts())
    try:
        out = sbx.commands.run("cat /opt/hello.txt /opt/marker; echo $SDK_VAR")
        assert out.stdout.split("\n")[:3] == ["hello sdk", "built-by-sdk", "yes"], out.stdout
    finally:
        sbx.kill()
    # `force_upload` makes the SDK send present files again: the same tar is no error (never replaced).
    forced = Template(file_context_path=str(tmp_path)).from_template("base").copy(
        "hello.txt", "/opt/hello.txt", force_upload=True
    )
    logs.clear()
    Template.build(forced, alias=name, on_build_logs=lambda e: logs.append(e.message), **opts)
    assert any("Uploaded 'hello.txt'" in m for m in logs), logs
    # The upload URL is its own (signed, expiring) credential: without it, or altered, no upload.
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": server.key}) as api:
        link = api.get(f"/templates/{info.template_id}/files/{'0' * 64}").json()
        assert link["present"] is False and "signature=" in link["url"]
        assert httpx.put(link["url"].split("?")[0], content=b"x").status_code == 401
        assert httpx.put(link["url"][:-1] + ("0" if link["url"][-1] != "0" else "1"), content=b"x").status_code == 403
    arbor(server, "template", "delete", name)



def tar_gz(entries: dict) -> bytes:
    """A gzip tar: `{name: text}` for files, `{name: ("->", target)}` for symlinks, `{name: ("chr",)}`
    for the host's /dev/null as a device node."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, body in entries.items():
            info = tarfile.TarInfo(name)
            if isinstance(body, tuple) and body[0] == "->":
                info.type, info.linkname = tarfile.SYMTYPE, body[1]
                tar.addfile(info)
            elif isinstance(body, tuple):
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
                tar.addfile(info)
            else:
                data = body.encode()
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def raw_build(api, template: dict, steps: list) -> dict:
    """Starts `steps` on `template` (a `POST /v3/templates` answer) and waits for the end."""
    tid, bid = template["templateID"], template["buildID"]
    r = api.post(f"/v2/templates/{tid}/builds/{bid}", json={"fromTemplate": "base", "steps": steps})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 300
    while True:
        status = api.get(f"/templates/{tid}/builds/{bid}/status").json()
        if status["status"] in ("ready", "error"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.3)


def copy_step(src: str, dest: str, files_hash: str) -> dict:
    return {"type": "COPY", "args": [src, dest, "", ""], "filesHash": files_hash}


def test_uploads_belong_to_their_template(server):
    """COPY uploads are per template and never replaced: another template (another client) can neither
    see, overwrite nor build from a template's files, nor reuse its cached COPY layer by naming the
    same hash; the upload URL ignores a forged `Host`."""
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": server.key}, timeout=30) as api:

        def new() -> dict:
            return api.post("/v3/templates", json={"name": f"up-{uuid.uuid4().hex[:8]}"}).json()

        def files(t: dict, h: str, **kw) -> dict:
            return api.get(f"/templates/{t['templateID']}/files/{h}", **kw).json()

        a, b = new(), new()
        shared, only_a = uuid.uuid4().hex, uuid.uuid4().hex

        link_a = files(a, shared, headers={"Host": "evil.example", "X-Forwarded-Proto": "https"})
        assert link_a["present"] is False
        assert link_a["url"].startswith(f"{server.url}/templates/{a['templateID']}/files/{shared}?"), link_a
        mine = tar_gz({"f.txt": "from A"})
        assert httpx.put(link_a["url"], content=mine).status_code == 201
        assert files(a, shared)["present"] is True
        # The same tar again (the SDKs' forceUpload) changes nothing; another tar is refused.
        assert httpx.put(link_a["url"], content=tar_gz({"f.txt": "from A"})).status_code == 201
        r = httpx.put(link_a["url"], content=tar_gz({"f.txt": "evil"}))
        assert r.status_code == 409 and r.json()["code"] == 409 and "never replaced" in r.json()["message"], r.text

        # B does not see A's upload; A's signed URL does not work for B; B's own upload is its own.
        link_b = files(b, shared)
        assert link_b["present"] is False
        forged = link_a["url"].replace(a["templateID"], b["templateID"])
        assert httpx.put(forged, content=tar_gz({"f.txt": "evil"})).status_code == 403
        assert httpx.put(link_b["url"], content=tar_gz({"f.txt": "from B"})).status_code == 201
        assert httpx.put(files(a, only_a)["url"], content=tar_gz({"g.txt": "only A"})).status_code == 201

        # The same COPY step, the same hash: each template builds from its own files, no shared cache.
        built_a = raw_build(api, a, [copy_step("f.txt", "/opt/f.txt", shared)])
        built_b = raw_build(api, b, [copy_step("f.txt", "/opt/f.txt", shared)])
        assert built_a["status"] == built_b["status"] == "ready", (built_a, built_b)
        for t, want in ((a, "from A"), (b, "from B")):
            sbx = Sandbox.create(template=t["names"][0], timeout=60, **server.sdk_opts())
            try:
                assert sbx.files.read("/opt/f.txt") == want
            finally:
                sbx.kill()
        # B cannot build from A's other upload by naming its hash.
        again = api.post("/v3/templates", json={"name": b["names"][0]}).json()
        failed = raw_build(api, again, [copy_step("g.txt", "/opt/g.txt", only_a)])
        assert failed["status"] == "error" and "never uploaded" in failed["reason"]["message"], failed
        for t in (a, b):
            assert api.delete(f"/templates/{t['names'][0]}").status_code == 204


def test_copy_never_reads_the_host(server):
    """A context whose links lead out of it (`link -> /`, `up -> ../..`) or holding a device node fails
    the build with a message naming the source; nothing of the host's reaches the template."""
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": server.key}, timeout=30) as api:
        cases = [
            ({"link": ("->", "/")}, "link/etc/passwd", "the symlink link -> / points outside the build context"),
            ({"up": ("->", "../.."), "ok.txt": "ok"}, "up/*", "the symlink up -> ../.. points outside"),
            ({"ok.txt": "ok"}, "../../../../etc/passwd", "the source is outside the build context"),
            ({"dev/null": ("chr",)}, "dev", 'entry "dev/null" is a device node'),
        ]
        for entries, src, why in cases:
            t = api.post("/v3/templates", json={"name": f"esc-{uuid.uuid4().hex[:8]}"}).json()
            h = uuid.uuid4().hex
            link = api.get(f"/templates/{t['templateID']}/files/{h}").json()
            assert httpx.put(link["url"], content=tar_gz(entries)).status_code == 201
            status = raw_build(api, t, [copy_step(src, "/opt/x", h)])
            assert status["status"] == "error" and why in status["reason"]["message"], (src, status)
            assert api.delete(f"/templates/{t['names'][0]}").status_code == 204


def test_sigkill_during_a_build_leaves_nothing(server):
    """The server killed mid-step: after its restart the build is failed, its sandbox gone."""
    from server_harness import reap_orphans

    ctx = context({"Dockerfile": "FROM base\nRUN echo started && sleep 60\n"})
    name = f"crash-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, ARBOR_API_URL=server.url, ARBOR_API_KEY=server.key, XDG_CONFIG_HOME=str(server.base))
    follower = subprocess.Popen(
        [str(arbor_binary()), "template", "build", str(ctx), "--name", name],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    deadline = time.monotonic() + 60
    while not build_sandboxes_left():
        assert time.monotonic() < deadline, "the build sandbox never appeared"
        time.sleep(0.1)
    time.sleep(0.5)
    server.kill9()
    follower.kill()
    follower.wait()
    server.start()
    assert build_sandboxes_left() == []
    reap_orphans()
    with httpx.Client(base_url=server.url, headers={"X-API-KEY": server.key}) as api:
        info = api.get(f"/templates/{name}").json()
        build_info = info["builds"][0]
        assert build_info["status"] == "error" and "interrupted" in build_info["reason"], build_info
        status = api.get(f"/templates/{info['templateID']}/builds/{build_info['buildID']}/status").json()
        assert any("started" in e["message"] for e in status["logEntries"]), status
        assert api.delete(f"/templates/{name}").status_code == 204
    shutil.rmtree(ctx)


def test_from_a_snapshot(server):
    """`FROM <snapshotID>`: the snapshot's files (not its processes) are the base."""
    opts = server.sdk_opts()
    origin = Sandbox.create(timeout=120, **opts)
    try:
        origin.files.write("/home/user/state.txt", "kept\n")
        snap = origin.create_snapshot()
    finally:
        origin.kill()
    ctx = context({"Dockerfile": f"FROM {snap.snapshot_id}\nRUN cp /home/user/state.txt /etc/from-snapshot\n"})
    name = f"snap-{uuid.uuid4().hex[:8]}"
    build(server, ctx, name)
    sbx = Sandbox.create(template=name, timeout=60, **opts)
    try:
        out = sbx.commands.run("cat /etc/from-snapshot /home/user/state.txt; whoami")
        assert out.stdout.split() == ["kept", "kept", "user"], out.stdout
    finally:
        sbx.kill()
    arbor(server, "template", "delete", name)
    assert Sandbox.delete_snapshot(snap.snapshot_id, **opts) is True
    shutil.rmtree(ctx)
