"""Starts and stops a real `arbor server` for the SDK suites: its own data dir, database, API key, port,
cgroup parent, nftables table and veth prefix (so it never touches a server the machine may run), the
`base` template of the machine's layer store, and its own address pool.

The test process acts as the host's init for the sandboxes a killed server leaves behind: it becomes a
child sub-reaper, so their init processes are re-parented to it, and it reaps them (`reap_orphans`).
"""

from __future__ import annotations

import ctypes
import os
import re
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import httpx

from envd_harness import REPO, envd_binary, free_port

INSTANCE = "arbortest"
VETH_PREFIX = "tst"
POOL = "10.202.0.0/16"
# Random per test run, as strong as a generated key: a fixed key in a repository is a known key.
API_KEY = "arbor_test_" + secrets.token_hex(32)
PR_SET_CHILD_SUBREAPER = 36
# Lifecycle flags every harness server gets, at the server's own defaults so that the suites which do
# not care see a stock server; a suite that tests idle timeouts or retention passes smaller values.
DEFAULT_FLAGS = {"min-idle-timeout": 60, "paused-retention": 30 * 24 * 3600}


def arbor_binary() -> Path:
    """The server under test: $ARBOR_BIN, else the release build of scripts/setup.sh."""
    explicit = os.environ.get("ARBOR_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "release" / "arbor"


def templates_dir() -> Path:
    return Path(os.environ.get("ARBOR_DATA_DIR", "/var/lib/arbor"))


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_CHILD_SUBREAPER")


def reap_orphans() -> int:
    """Reaps dead sandbox inits re-parented to this process; returns how many."""
    me = os.getpid()
    reaped = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" and int(fields[1]) == me:
            try:
                os.waitpid(int(entry), os.WNOHANG)
                reaped += 1
            except ChildProcessError:
                pass
    return reaped


class Server:
    """One `arbor server` process over a data dir that outlives restarts."""

    def __init__(self, base: Path, port: int, flags: Optional[Dict[str, object]] = None):
        self.base = base
        self.port = port
        # Extra `--name value` flags of `arbor server` (names without the dashes), kept across restarts.
        self.flags = {**DEFAULT_FLAGS, **(flags or {})}
        self.url = f"http://127.0.0.1:{port}"
        self.key = API_KEY
        self.proc: Optional[subprocess.Popen] = None
        self.output: List[str] = []

    def start(self, timeout: float = 60) -> None:
        cmd = [
            str(arbor_binary()), "server",
            "--listen", f"127.0.0.1:{self.port}",
            "--data-dir", str(self.base / "data"),
            "--templates-dir", str(templates_dir()),
            "--api-key", self.key,
            "--instance", INSTANCE,
            "--veth-prefix", VETH_PREFIX,
            "--network-pool", POOL,
            "--envd-bin", str(envd_binary()),
        ]
        for name, value in self.flags.items():
            cmd += [f"--{name}", str(value)]
        env = dict(os.environ, ARBOR_LOG=os.environ.get("ARBOR_LOG", "info"))
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        ready = threading.Event()

        def pump(proc: subprocess.Popen) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.output.append(line.rstrip())
                if "serving at" in line:
                    ready.set()

        threading.Thread(target=pump, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("arbor server did not start:\n" + "\n".join(self.output[-40:]))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-KEY": self.key}, timeout=30)

    def sdk_opts(self) -> dict:
        """Keyword arguments pointing the SDK at this server (no environment variables needed)."""
        return {"api_url": self.url, "sandbox_url": self.url, "api_key": self.key, "request_timeout": 30}

    def kill_all(self) -> None:
        """Kills every sandbox through the API."""
        with self.api() as api:
            listed = api.get("/v2/sandboxes", params={"state": "running,paused", "limit": 1000})
            for sbx in listed.json() if listed.status_code == 200 else []:
                api.delete(f"/sandboxes/{sbx['sandboxID']}")

    def teardown(self) -> None:
        """Kills every sandbox, stops the server and removes the node infrastructure it set up (the
        nftables table, the disk image mount, the cgroup parents), so the host is as before."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.kill_all()
            except httpx.HTTPError:
                pass
        self.stop()
        subprocess.run(["nft", "delete", "table", "inet", INSTANCE], capture_output=True)
        subprocess.run(["umount", "-l", str(self.base / "data" / "sandboxes")], capture_output=True)
        for parent in [*Path("/sys/fs/cgroup").glob(f"*/{INSTANCE}"), Path("/sys/fs/cgroup") / INSTANCE]:
            try:
                parent.rmdir()
            except OSError:
                pass
        subprocess.run(["rm", "-rf", f"/run/{INSTANCE}", str(self.base)], capture_output=True)
        reap_orphans()


def start_server(**flags: object) -> Server:
    """A server on a fresh data dir; `flags` are extra `arbor server` flags with underscores for dashes,
    e.g. `start_server(min_idle_timeout=2, max_sandboxes=3)`."""
    become_subreaper()
    base = Path(tempfile.mkdtemp(prefix="arbor-server-"))
    server = Server(base, free_port(), {k.replace("_", "-"): v for k, v in flags.items()})
    server.start()
    return server


# Public URLs as the SDKs use them by default: `https://<port>-<id>.<PUBLIC_DOMAIN>:<tls port>`.
PUBLIC_DOMAIN = "arbor.test"
# The built-in DNS responder's address (any of 127/8; port 53, where resolvers ask).
DNS_IP = "127.0.0.153"


def start_public_server(**flags: object) -> Server:
    """A server as the outside world sees a deployment: a TLS listener with the generated CA for
    `*.<PUBLIC_DOMAIN>` and the built-in DNS answering those names (see `run_public_client`)."""
    tls_port = free_port()
    server = start_server(
        domain=f"{PUBLIC_DOMAIN}:{tls_port}", tls_listen=f"127.0.0.1:{tls_port}", dns=f"{DNS_IP}:53", **flags
    )
    server.tls_port = tls_port  # type: ignore[attr-defined]
    return server


def public_env(server: Server) -> Dict[str, str]:
    """The environment of a client using the SDKs' defaults against `server`: only NOVITA_DOMAIN and
    NOVITA_API_KEY (no NOVITA_*/E2B_* URL, such as the one the session's envd fixture exports), and the
    generated CA trusted by Python and Node.js."""
    ca = str(server.base / "data" / "tls" / "ca.pem")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOVITA_", "E2B_"))}
    env.update(
        NOVITA_DOMAIN=f"{PUBLIC_DOMAIN}:{server.tls_port}",  # type: ignore[attr-defined]
        NOVITA_API_KEY=server.key,
        SSL_CERT_FILE=ca,
        NODE_EXTRA_CA_CERTS=ca,
    )
    return env


def run_public_client(server: Server, argv: List[str], workdir: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs `argv` with `public_env` in a mount namespace of its own whose /etc/resolv.conf names the
    server's DNS responder, so the unmodified SDKs resolve sandbox hosts as they always do (the
    machine's resolver is untouched)."""
    resolv = workdir / "resolv.conf"
    resolv.write_text(f"nameserver {DNS_IP}\n")
    script = f'mount --bind "{resolv}" /etc/resolv.conf && exec "$@"'
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=public_env(server))


def sandbox_ids_in_output(server: Server) -> List[str]:
    return re.findall(r"id=([a-z0-9]{20})", "\n".join(server.output))
