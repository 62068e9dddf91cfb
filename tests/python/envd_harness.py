"""Starts and stops a real `arbor-envd` for the SDK suites and the bench, plus small test helpers.

Each daemon gets its own world: a temporary directory holding `etc/passwd` and `etc/group` (given to
envd with `--etc-dir`), a home for `user` (uid 1000) and a home for root. The tests run as root on the
host, so root's home is a temporary directory too: nothing a test does lands in the real /root.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import httpx

REPO = Path(__file__).resolve().parents[2]
USER_UID = 1000
USER_GID = 1000
# A supplementary group of `user`, to check that processes and file operations carry it.
DEVS_GID = 1500


def envd_binary() -> Path:
    """The daemon under test: $ARBOR_ENVD_BIN, else the static release build of scripts/setup.sh."""
    explicit = os.environ.get("ARBOR_ENVD_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "x86_64-unknown-linux-gnu" / "release" / "arbor-envd"


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_world(base: Path) -> None:
    """Writes passwd/group and creates both homes under `base`."""
    os.chmod(base, 0o755)  # uid 1000 must be able to reach its home through here
    etc = base / "etc"
    etc.mkdir()
    home = base / "home" / "user"
    home.mkdir(parents=True)
    root_home = base / "root"
    root_home.mkdir(mode=0o700)
    (etc / "passwd").write_text(
        f"root:x:0:0:root:{root_home}:/bin/bash\n"
        f"user:x:{USER_UID}:{USER_GID}:Sandbox user:{home}:/bin/bash\n"
    )
    (etc / "group").write_text(f"root:x:0:\nuser:x:{USER_GID}:\ndevs:x:{DEVS_GID}:user\n")
    os.chmod(base / "home", 0o755)
    os.chown(home, USER_UID, USER_GID)
    os.chmod(home, 0o750)


@dataclass
class Envd:
    """A running arbor-envd and the world it serves."""

    base: Path
    port: int
    proc: subprocess.Popen
    token: Optional[str]
    log_path: Path
    _log: object = field(repr=False, default=None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def home(self) -> Path:
        """Home of `user` (uid 1000), the default user."""
        return self.base / "home" / "user"

    @property
    def root_home(self) -> Path:
        return self.base / "root"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def anon_kib(self) -> int:
        """Private (anonymous) resident memory of the daemon: what each sandbox's envd costs on its own,
        since the text pages of the one binary are shared page cache across all sandboxes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
        raise RuntimeError("no RssAnon in /proc/<pid>/status")

    def rss_kib(self) -> int:
        """Resident set size of the daemon, from /proc/<pid>/status."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS line")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Signals the daemon and waits for it; kills it if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode


def start_envd(
    token: Optional[str] = None,
    extra_args: Optional[List[str]] = None,
    base: Optional[Path] = None,
) -> Envd:
    """Starts envd on a free loopback port and waits until /health answers."""
    binary = envd_binary()
    if not binary.is_file():
        raise RuntimeError(f"{binary} not found: run scripts/setup.sh --no-start first")
    if base is None:
        base = Path(tempfile.mkdtemp(prefix="arbor-envd-"))
        make_world(base)
    last_error: Optional[str] = None
    # Another process may take the port between free_port() and bind: retry a few times.
    for _ in range(3):
        port = free_port()
        args = [str(binary), "--listen", f"127.0.0.1:{port}", "--etc-dir", str(base / "etc")]
        if token is not None:
            args += ["--access-token", token]
        args += extra_args or []
        log_path = base / f"envd-{port}.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        envd = Envd(base=base, port=port, proc=proc, token=token, log_path=log_path, _log=log)
        if _wait_healthy(envd):
            return envd
        envd.stop(signal.SIGKILL)
        last_error = envd.log()
    raise RuntimeError(f"arbor-envd did not become healthy:\n{last_error}")


def _wait_healthy(envd: Envd, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if envd.proc.poll() is not None:
            return False
        try:
            r = httpx.get(f"{envd.url}/health", timeout=1)
            if r.status_code < 300:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    return False


def pid_alive(pid: int) -> bool:
    """Whether a process exists on this host (envd runs here, so its children do too)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        # Gone before the open, or between the open and the read.
        return False
    return state != "Z"


def wait_until(cond, timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return cond()


def give_to_user(path: Path) -> None:
    """Hands a tree the test made as root (the host side) to `user`, so the daemon's user may change it."""
    for p in [path, *path.rglob("*")]:
        os.lchown(p, USER_UID, USER_GID)


class PtyReader:
    """Collects a pty's output on a thread so a test can wait for text to appear."""

    def __init__(self, handle):
        self.handle = handle
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.result = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.result = self.handle.wait(on_pty=self._on_pty)
        except Exception as e:  # the end of the stream is part of what tests check
            self.error = e

    def _on_pty(self, data: bytes):
        with self.lock:
            self.buf += data

    def text(self) -> str:
        with self.lock:
            return self.buf.decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = 10) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.text())
            if m:
                return m
            time.sleep(0.02)
        raise AssertionError(f"{pattern!r} not seen in pty output: {self.text()[-2000:]!r}")

    def join(self, timeout: float = 10):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "pty stream did not end"
