"""Limits that hold for the host as a whole (issue 14, item 4), through the official SDK.

Each sandbox is limited on its own; these tests show that many sandboxes together cannot take the host
down: all of them live under one parent cgroup capped below the host's memory and task ids, and the
node refuses (429) a sandbox whose limits would overcommit the host beyond the configured ratio.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
from novita_sandbox.core import Sandbox

from server_harness import INSTANCE, start_server


def parent_file(name: str) -> Path:
    """`name` (e.g. `pids.max`) of the test server's parent cgroup, v1 controller or unified."""
    controller = name.split(".")[0]
    for path in (Path("/sys/fs/cgroup") / controller / INSTANCE / name, Path("/sys/fs/cgroup/unified") / INSTANCE / name):
        if path.exists():
            return path
    raise AssertionError(f"no {name} for the cgroup parent {INSTANCE}")


def host_memory_mib() -> int:
    """What all sandboxes may use together: MemTotal less a tenth (at least 1 GiB), as the node computes it."""
    total_kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
    total = total_kib >> 10
    return total - max(total // 10, 1024)


@pytest.fixture
def server():
    srv = start_server()
    yield srv
    srv.teardown()


# A thread bomb: threads are the cheapest tasks (a few KiB each), so it reaches the sandbox's task limit
# long before its memory limit, as a fork bomb of small processes would on a host with more memory.
THREAD_BOMB = (
    "nohup python3 -c '\n"
    "import threading, time\n"
    "try:\n"
    "    while True: threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
    "except BaseException:\n"
    "    time.sleep(600)\n"
    "' >/dev/null 2>&1 &"
)


def test_the_parent_cgroup_caps_all_sandboxes_below_the_host(server):
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    threads_max = int(Path("/proc/sys/kernel/threads-max").read_text())
    cap = min(pid_max, threads_max) // 4 * 3
    assert int(parent_file("pids.max").read_text()) == cap
    v1 = Path("/sys/fs/cgroup/memory") / INSTANCE / "memory.limit_in_bytes"
    memory = v1 if v1.exists() else parent_file("memory.max")
    assert int(memory.read_text()) == host_memory_mib() << 20


def test_thread_bombs_in_eight_sandboxes_leave_the_host_and_the_server_alive(server):
    """Eight sandboxes of 4096 tasks each could take all 32768 pids of this host; the parent's cap keeps a
    quarter for the host: it still forks, the server still answers, and the bombs end with the sandboxes."""
    sandboxes = [Sandbox.create(timeout=300, **server.sdk_opts()) for _ in range(8)]
    try:
        for sbx in sandboxes:
            sbx.commands.run(THREAD_BOMB, user="root", timeout=30)
        cap = int(parent_file("pids.max").read_text())
        current = parent_file("pids.current")
        deadline, last, peak = time.monotonic() + 90, -1, 0
        while time.monotonic() < deadline:
            now = int(current.read_text())
            peak = max(peak, now)
            if now == last and now > 8 * 1000:
                break
            last = now
            time.sleep(2)
        assert peak <= cap, f"{peak} tasks in the sandboxes, over the cap of {cap}"
        assert peak > 8 * 1000, f"the bombs did not run: {peak} tasks"
        # The host can still start processes, and the server answers.
        for _ in range(20):
            assert subprocess.run(["true"]).returncode == 0
        started = time.monotonic()
        listed = Sandbox.list(limit=100, **server.sdk_opts()).next_items()
        assert len(listed) >= 8 and time.monotonic() - started < 10
        print(f"8 thread bombs: peak {peak} tasks of a cap of {cap}; host forks fine")
    finally:
        for sbx in sandboxes:
            sbx.kill()
    deadline = time.monotonic() + 30
    while int(parent_file("pids.current").read_text()) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert int(parent_file("pids.current").read_text()) == 0


def test_a_create_that_would_overcommit_memory_gets_429():
    # Room for two default sandboxes (512 MiB of limits each), not three.
    ratio = 1280 / host_memory_mib()
    server = start_server(memory_overcommit=ratio)
    try:
        first = Sandbox.create(timeout=120, **server.sdk_opts())
        second = Sandbox.create(timeout=120, **server.sdk_opts())
        with httpx.Client(base_url=server.url, headers={"X-API-KEY": server.key}, timeout=30) as api:
            refused = api.post("/sandboxes", json={"templateID": "base", "timeout": 60})
            assert refused.status_code == 429, refused.text
            body = refused.json()
            assert body["code"] == 429 and "the node is full" in body["message"], body
            with pytest.raises(Exception, match="node is full"):
                Sandbox.create(timeout=120, **server.sdk_opts())
            # A clone is a sandbox too.
            clone = api.post(f"/sandboxes/{first.sandbox_id}/clone", json={"count": 1, "strict": True})
            assert clone.status_code == 429, clone.text
            # Its claim goes back when a sandbox ends.
            second.kill()
            third = Sandbox.create(timeout=120, **server.sdk_opts())
            assert third.commands.run("echo ok").stdout == "ok\n"
            third.kill()
        first.kill()
    finally:
        server.teardown()
