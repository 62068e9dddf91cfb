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
