"""A server killed with SIGKILL and started again: running sandboxes are listed and usable (their
processes never stopped), expired ones are gone, and nothing is leaked on the host."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from novita_sandbox.core import Sandbox

from server_harness import INSTANCE, VETH_PREFIX, reap_orphans, start_server


def sandbox_processes() -> list:
    """envd processes started by a sandbox launcher (only they carry --ready-fd)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "--ready-fd" in cmdline:
                found.append(entry)
    return found


def test_restart_after_sigkill_keeps_running_sandboxes_and_leaks_nothing():
    before = set(sandbox_processes())
    server = start_server()
    try:
        opts = server.sdk_opts()
        keep = Sandbox.create(timeout=120, metadata={"role": "keep"}, **opts)
        expire = Sandbox.create(timeout=4, metadata={"role": "expire"}, **opts)
        keep.files.write("/home/user/state.txt", "before the crash\n")
        keep.commands.run("sleep 600 > /dev/null 2>&1 &", background=False)

        server.kill9()
        time.sleep(5)  # `expire` passes its deadline while no server runs
        server.start()

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ids = {s.sandbox_id for s in Sandbox.list(**opts).next_items()}
            if expire.sandbox_id not in ids:
                break
            time.sleep(0.2)
        assert ids == {keep.sandbox_id}, ids
        again = Sandbox.connect(keep.sandbox_id, **opts)
        assert again.files.read("/home/user/state.txt") == "before the crash\n"
        assert again.commands.run("pgrep -x sleep").stdout.strip() != ""
        assert again.commands.run("echo alive").stdout == "alive\n"
        assert again.kill() is True
    finally:
        server.teardown()

    time.sleep(0.5)
    reap_orphans()
    data = server.base / "data"
    leftovers = {
        "processes": sorted(set(sandbox_processes()) - before),
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{INSTANCE}/*") if p.is_dir()],
        "veths": [l for l in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
                  if f": {VETH_PREFIX}" in l],
        "netns pins": list(Path(f"/run/{INSTANCE}").glob("netns/*")),
        "mounts": [l for l in Path("/proc/self/mountinfo").read_text().splitlines()
                   if str(server.base) in l or f"/run/{INSTANCE}" in l],
        "nftables": subprocess.run(["nft", "list", "table", "inet", INSTANCE], capture_output=True).returncode == 0,
        "directories": list((data / "sandboxes").glob("*")) if data.exists() else [],
    }
    assert all(not v for v in leftovers.values()), leftovers
