"""The server killed with SIGKILL in the middle of a pause, a clone and a snapshot, then started again on
the same data dir: every sandbox the API lists is whole, running (a command works) or paused (connect
resumes it, then a command works), with the memory its origin had; every snapshot listed starts a
sandbox; and once all is killed and deleted, nothing is left on the host.

Each case fires the operation through the SDK from a thread and kills the server 0, 30, 100 or 300 ms
later, so that the kill lands before, during and (for the fast ones) after the checkpoint.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from novita_sandbox.core import Sandbox
from novita_sandbox.core.sandbox.sandbox_api import SandboxQuery, SandboxState

from server_harness import INSTANCE, VETH_PREFIX, Server, reap_orphans, start_server
from test_persistence import Memory, assert_memory_kept, snapshot_ids, start_memory
from test_server_restart import sandbox_processes

DELAYS_MS = [0, 30, 100, 300]

OPERATIONS: Dict[str, Callable[[str, dict], object]] = {
    "pause": lambda sid, opts: Sandbox.beta_pause(sid, **opts),
    "clone": lambda sid, opts: Sandbox.clone(sid, 2, strict=True, **opts),
    "snapshot": lambda sid, opts: Sandbox.create_snapshot(sid, **opts),
}


def ours(pid: str) -> bool:
    """Whether `pid` descends from this test process: the servers it starts, their sandboxes and CRIU
    runs, and whatever a killed server left (this process is their sub-reaper). Other people's
    sandboxes on the same machine are not."""
    me = os.getpid()
    while pid not in ("0", "1"):
        try:
            pid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        except OSError:
            return False
        if int(pid) == me:
            return True
    return False


def describe(pid: str) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        cgroup = Path(f"/proc/{pid}/cgroup").read_text().strip().splitlines()[-1]
    except OSError:
        return f"{pid} (gone)"
    return f"{pid} {cmd[:60]} in {cgroup}"


def criu_processes() -> List[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "criu":
                    found.append(entry)
            except OSError:
                pass
    return found


def leftovers(server: Server, processes_before: set) -> dict:
    """Host resources of sandboxes that should no longer exist (empty values when nothing leaked)."""
    reap_orphans()
    data = server.base / "data"
    return {
        "processes": [describe(p) for p in sorted(set(sandbox_processes()) - processes_before) if ours(p)],
        "criu": [describe(p) for p in criu_processes() if ours(p)],
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{INSTANCE}/*") if p.is_dir()]
        + [str(p) for p in Path("/sys/fs/cgroup").glob(f"{INSTANCE}/*") if p.is_dir()],
        "veths": [line for line in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
                  .splitlines() if f": {VETH_PREFIX}" in line],
        "netns pins": [str(p) for p in Path(f"/run/{INSTANCE}").glob("netns/*")],
        "sandbox mounts": [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                           if str(data / "sandboxes") + "/" in line],
        "sandbox dirs": [str(p) for p in (data / "sandboxes").glob("*")] if (data / "sandboxes").exists() else [],
    }


def wait_clean(server: Server, processes_before: set, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(server, processes_before)
        if not any(left.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"leaked: {left}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def crash_server():
    before = set(sandbox_processes())
    srv = start_server()
    srv.processes_before = before  # type: ignore[attr-defined]
    yield srv
    srv.teardown()


def server_log(server: Server) -> str:
    """The server's log lines about sandboxes, for a failure's report (colours and netlink noise out)."""
    plain = (re.sub(r"\x1b\[[0-9;]*m", "", line) for line in server.output)
    return "\n".join([line for line in plain if "netlink_packet_route" not in line][-60:])


def kill_during(server: Server, op: str, sandbox_id: str, delay_ms: int) -> None:
    opts = dict(server.sdk_opts(), request_timeout=20)
    outcome: list = []

    def fire() -> None:
        try:
            outcome.append(OPERATIONS[op](sandbox_id, opts))
        except Exception as e:  # the server dies under it: any error is expected
            outcome.append(e)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    time.sleep(delay_ms / 1000)
    server.kill9()
    thread.join(30)
    assert not thread.is_alive(), f"the {op} call hangs after the server died"


def assert_whole(opts: dict, sandbox_id: str, mem: Memory) -> None:
    """A listed sandbox is running or paused, usable, and has its origin's memory."""
    info = Sandbox.get_info(sandbox_id, **opts)
    assert info.state in (SandboxState.RUNNING, SandboxState.PAUSED), info.state
    sbx = Sandbox.connect(sandbox_id, timeout=120, **opts)
    assert Sandbox.get_info(sandbox_id, **opts).state == SandboxState.RUNNING
    # Short timeouts: a sandbox left frozen or without envd must fail the test, not stall it.
    assert sbx.commands.run("echo whole", timeout=10, request_timeout=10).stdout == "whole\n", info.state
    assert_memory_kept(sbx, mem)


def listed(opts: dict) -> set:
    query = SandboxQuery(state=[SandboxState.RUNNING, SandboxState.PAUSED])
    return {s.sandbox_id for s in Sandbox.list(query=query, limit=1000, **opts).next_items()}


@pytest.mark.parametrize("delay_ms", DELAYS_MS)
@pytest.mark.parametrize("op", list(OPERATIONS))
def test_sigkill_during_operation_leaves_every_sandbox_whole(crash_server: Server, op: str, delay_ms: int):
    server = crash_server
    opts = server.sdk_opts()
    assert listed(opts) == set(), "an earlier case left sandboxes"
    snaps_before = set(snapshot_ids(opts))
    origin = Sandbox.create(timeout=300, metadata={"crash": f"{op}-{delay_ms}"}, **opts)
    try:
        mem = start_memory(origin)
        kill_during(server, op, origin.sandbox_id, delay_ms)
        server.output.append(f"---- test: killed during {op} after {delay_ms} ms; restarting ----")
        server.start()

        found = listed(opts)
        assert origin.sandbox_id in found, "the origin was lost"
        # The origin and any clone the crashed call made.
        for sid in sorted(found):
            assert_whole(opts, sid, mem)

        # A snapshot (of the crashed snapshot or clone call) that is listed must start sandboxes.
        for snap in sorted(set(snapshot_ids(opts)) - snaps_before):
            child = Sandbox.create(template=snap, timeout=60, **opts)
            assert child.commands.run("echo from-snapshot", timeout=10, request_timeout=10).stdout == "from-snapshot\n"
            assert_memory_kept(child, mem)
            child.kill()
    except BaseException:
        print(server_log(server))
        raise
    finally:
        if server.proc is None:
            server.start()
        server.kill_all()
        for snap in set(snapshot_ids(opts)) - snaps_before:
            Sandbox.delete_snapshot(snap, **opts)
    assert set(snapshot_ids(opts)) == snaps_before
    wait_clean(server, server.processes_before)  # type: ignore[attr-defined]


def test_nothing_left_after_teardown(crash_server: Server):
    before = crash_server.processes_before  # type: ignore[attr-defined]
    crash_server.teardown()
    time.sleep(0.5)
    left = leftovers(crash_server, before)
    left["nftables"] = subprocess.run(["nft", "list", "table", "inet", INSTANCE], capture_output=True).returncode == 0
    left["mounts"] = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                      if str(crash_server.base) in line or f"/run/{INSTANCE}" in line]
    left["data"] = crash_server.base.exists()
    assert not any(left.values()), left
