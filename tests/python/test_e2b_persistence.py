"""Pause, resume, fork and snapshots through the upstream `e2b` SDK, which speaks its own forms of them:
`/v2/sandboxes/{id}/connect`, `/sandboxes/{id}/fork` (one result per fork) and snapshot `name` filters."""

from __future__ import annotations

import pytest

from server_harness import start_server

e2b = pytest.importorskip("e2b")

# A process whose only trace of the value is its own memory; it writes its pid where a command can find it.
HOLDER = "python3 -c \"import os, time; v = 'kept'; open('/tmp/holder', 'w').write(str(os.getpid())); time.sleep(600)\""
ALIVE = "kill -0 $(cat /tmp/holder) && echo alive"


@pytest.fixture(scope="module")
def server():
    srv = start_server(pause_grace=0)
    yield srv
    srv.teardown()


@pytest.fixture(autouse=True)
def e2b_env(server, monkeypatch):
    monkeypatch.setenv("E2B_API_URL", server.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", server.url)
    monkeypatch.setenv("E2B_API_KEY", server.key)


def test_e2b_pause_connect_fork_snapshot():
    sbx = e2b.Sandbox.create(timeout=120)
    made = [sbx]
    try:
        sbx.commands.run(HOLDER, background=True)
        sbx.commands.run("for i in $(seq 50); do [ -s /tmp/holder ] && break; sleep 0.1; done")
        sbx.pause()
        assert e2b.Sandbox.get_info(sbx.sandbox_id).state.value == "paused"
        resumed = e2b.Sandbox.connect(sbx.sandbox_id, timeout=120)
        assert resumed.commands.run(ALIVE).stdout == "alive\n"

        forks = resumed.fork(count=2)
        assert len(forks) == 2 and all(isinstance(f, e2b.Sandbox) for f in forks), forks
        made += forks
        for fork in forks:
            assert fork.sandbox_id != sbx.sandbox_id
            assert fork.commands.run(ALIVE).stdout == "alive\n"

        snap = resumed.create_snapshot(name="e2b-snap")
        assert snap.snapshot_id and "e2b-snap" in snap.names
        listed = e2b.Sandbox.list_snapshots(name="e2b-snap").next_items()
        assert [s.snapshot_id for s in listed] == [snap.snapshot_id]
        child = e2b.Sandbox.create(template=snap.snapshot_id, timeout=60)
        made.append(child)
        assert child.commands.run(ALIVE).stdout == "alive\n"
        with pytest.raises(e2b.SandboxException):
            resumed.create_snapshot(mode="filesystem")
    finally:
        for s in made:
            e2b.Sandbox.kill(s.sandbox_id)
