"""The built base template (`templates/base` in the node's layer store), checked from the inside.

The layer is never written to: each test runs in a chroot of an overlay whose lower dir is the
layer, as a sandbox sees it. Skipped (with the reason) when the template has not been built (it is
built by scripts/setup.sh as root), when not root, or when overlayfs cannot be mounted here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("ARBOR_DATA_DIR", "/var/lib/arbor"))
REF = DATA_DIR / "refs" / "templates" / "base.json"
# What a login shell inside would have; nothing of the host's environment leaks in.
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def _layer_rootfs() -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root (chroot, overlayfs)")
    if not REF.is_file():
        pytest.skip(f"base template not built ({REF} missing): run scripts/setup.sh as root")
    manifest = json.loads(REF.read_text())
    assert manifest["schema"] == 1
    assert len(manifest["layers"]) == 1
    rootfs = DATA_DIR / "layers" / manifest["layers"][0] / "rootfs"
    assert rootfs.is_dir(), f"{REF} names a layer that is not in the store"
    return rootfs


@pytest.fixture(scope="module")
def layer() -> Path:
    return _layer_rootfs()


@pytest.fixture(scope="module")
def root(layer: Path):
    """The merged overlay (layer below, a temp upper dir) with /proc (ps needs it), unmounted and
    removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="arbor-base-test-"))
    upper, work, merged = tmp / "upper", tmp / "work", tmp / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    opts = f"lowerdir={layer},upperdir={upper},workdir={work}"
    mounted = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], capture_output=True, text=True)
    if mounted.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"cannot mount overlayfs here: {mounted.stderr.strip()}")
    proc = merged / "proc"
    try:
        subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
        yield merged
    finally:
        for target in (proc, merged):
            if os.path.ismount(target) and subprocess.run(["umount", str(target)]).returncode != 0:
                subprocess.run(["umount", "-l", str(target)])
        shutil.rmtree(tmp, ignore_errors=True)


def run(root: Path, script: str, user: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["chroot"]
    if user:
        cmd.append(f"--userspec={user}")
    cmd += [str(root), "/bin/bash", "-lc", script]
    env = dict(ENV, HOME="/home/user") if user else ENV
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{script!r} failed ({done.returncode}): {done.stdout}{done.stderr}"
    return done


def test_tools_run(root: Path):
    out = run(
        root,
        "python3 --version && pip3 --version && node --version && npm --version && git --version"
        " && curl --version && ip -V && ps --version && sudo --version",
    ).stdout
    assert "Python 3.11" in out
    assert "git version" in out


def test_user_account(root: Path):
    entry = run(root, "getent passwd user").stdout.strip().split(":")
    assert entry[2:4] == ["1000", "1000"]
    assert entry[5:7] == ["/home/user", "/bin/bash"]
    assert "sudo" in run(root, "id -nG user").stdout.split()
    home = (root / "home/user").stat()
    assert (home.st_uid, home.st_gid) == (1000, 1000)
    assert run(root, "id -u && echo $HOME && pwd", user="user").stdout.split() == ["1000", "/home/user", "/"]


def test_passwordless_sudo(root: Path):
    run(root, "sudo -n -u user true")
    assert run(root, "sudo -n id -u", user="user:user").stdout.split()[-1] == "0"
    sudoers = root / "etc/sudoers.d/user"
    assert sudoers.stat().st_mode & 0o777 == 0o440


def test_user_can_pip_install_and_write_home(root: Path):
    # No PEP 668 marker: `pip install` goes to ~/.local instead of refusing.
    assert not list((root / "usr/lib").glob("python3*/EXTERNALLY-MANAGED"))
    run(root, "touch ~/x && python3 -m pip --version >/dev/null && node -e 'require(\"fs\")'", user="user")


def test_network_files_leak_nothing_of_the_host(root: Path):
    assert (root / "etc/hostname").read_text() == "sandbox\n"
    hosts = (root / "etc/hosts").read_text()
    assert "127.0.0.1\tlocalhost" in hosts
    assert "nameserver" not in (root / "etc/resolv.conf").read_text()
    mount_point = root / "usr/local/bin/arbor-envd"
    assert mount_point.is_file() and mount_point.stat().st_size == 0


def test_image_is_lean(layer: Path):
    assert not (layer / "usr/share/man").exists() or not any((layer / "usr/share/man").rglob("*.gz"))
    assert not any((layer / "var/lib/apt/lists").glob("*_Packages"))
    assert not any((layer / "var/cache/apt/archives").glob("*.deb"))


def test_layer_still_verifies(layer: Path, root: Path):
    """Runs last in this module: the chroots above wrote only to the overlay's upper dir."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    cli = target / "release" / "arbor-layers"
    if not cli.is_file():
        pytest.skip(f"{cli} not built")
    layer_id = layer.parent.name
    done = subprocess.run([str(cli), "--data-dir", str(DATA_DIR), "verify", layer_id], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
