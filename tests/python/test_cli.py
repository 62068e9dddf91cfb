"""The `arbor` CLI against a real server: spawn, list, info, exec, timeout, metrics, kill, errors."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from server_harness import arbor_binary, start_server


@pytest.fixture(scope="module")
def server():
    srv = start_server()
    yield srv
    srv.teardown()


def arbor(server, *args, check=True):
    env = dict(os.environ, ARBOR_API_URL=server.url, ARBOR_API_KEY=server.key, XDG_CONFIG_HOME=str(server.base))
    res = subprocess.run([str(arbor_binary()), *args], capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert res.returncode == 0, (args, res.stdout, res.stderr)
    return res


def test_spawn_list_exec_kill(server):
    sid = arbor(server, "sandbox", "spawn", "base", "--timeout", "120", "-m", "owner=cli test").stdout.strip()
    assert len(sid) == 20, sid
    listed = json.loads(arbor(server, "sandbox", "list", "--json", "-m", "owner=cli test").stdout)
    assert [s["sandboxID"] for s in listed] == [sid]
    table = arbor(server, "sandbox", "list").stdout
    assert sid in table
    info = json.loads(arbor(server, "sandbox", "info", sid, "--json").stdout)
    assert info["state"] == "running" and info["metadata"] == {"owner": "cli test"}
    out = arbor(server, "sandbox", "exec", sid, "--", "echo", "out;", "echo", "err", ">&2;", "exit", "3", check=False)
    assert (out.returncode, out.stdout, out.stderr) == (3, "out\n", "err\n")
    arbor(server, "sandbox", "timeout", sid, "600")
    assert json.loads(arbor(server, "sandbox", "metrics", sid, "--json").stdout)
    arbor(server, "sandbox", "kill", sid)
    gone = arbor(server, "sandbox", "info", sid, check=False)
    assert gone.returncode == 1 and "not found" in gone.stderr and gone.stderr.startswith("error:")


def test_wrong_key_and_unreachable_server(server):
    env = dict(os.environ, ARBOR_API_URL=server.url, ARBOR_API_KEY="wrong", XDG_CONFIG_HOME=str(server.base))
    res = subprocess.run([str(arbor_binary()), "sandbox", "list"], capture_output=True, text=True, env=env)
    assert res.returncode == 1 and "401" in res.stderr, res.stderr
    env["ARBOR_API_URL"] = "http://127.0.0.1:9"
    res = subprocess.run([str(arbor_binary()), "sandbox", "list"], capture_output=True, text=True, env=env)
    assert res.returncode == 1 and "cannot reach" in res.stderr, res.stderr


def test_pause_connect_clone_snapshot(server):
    sid = arbor(server, "sandbox", "spawn", "base", "--timeout", "120").stdout.strip()
    # A value only the sandbox's memory holds: a shell variable of a waiting process.
    arbor(server, "sandbox", "exec", sid, "--", "nohup bash -c 'v=kept; read -t 600 < /dev/zero; echo $v' >/dev/null 2>&1 & echo $! > /tmp/pid")
    arbor(server, "sandbox", "pause", sid)
    assert json.loads(arbor(server, "sandbox", "info", sid, "--json").stdout)["state"] == "paused"
    again = arbor(server, "sandbox", "pause", sid, check=False)
    assert again.returncode == 1 and "already paused" in again.stderr, again.stderr
    assert arbor(server, "sandbox", "connect", sid).stdout.strip() == sid
    alive = "kill -0 $(cat /tmp/pid) && echo alive"
    assert arbor(server, "sandbox", "exec", sid, "--", alive).stdout == "alive\n"

    clones = arbor(server, "sandbox", "clone", sid, "-n", "2").stdout.split()
    assert len(clones) == 2 and sid not in clones
    for clone in clones:
        assert arbor(server, "sandbox", "exec", clone, "--", alive).stdout == "alive\n"
    snap = arbor(server, "sandbox", "snapshot", sid, "--name", "cli-snap").stdout.strip()
    listed = arbor(server, "snapshot", "list", "--sandbox", sid).stdout
    assert f"{snap}\tcli-snap" in listed, listed
    child = arbor(server, "sandbox", "spawn", snap, "--timeout", "60").stdout.strip()
    assert arbor(server, "sandbox", "exec", child, "--", alive).stdout == "alive\n"
    refused = arbor(server, "snapshot", "delete", snap, check=False)
    assert refused.returncode == 1 and "in use" in refused.stderr, refused.stderr
    arbor(server, "sandbox", "kill", child, *clones)
    arbor(server, "snapshot", "delete", snap)
    assert snap not in arbor(server, "snapshot", "list").stdout
    arbor(server, "sandbox", "kill", sid)
