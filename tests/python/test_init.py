"""`POST /init` (the node agent's call, upstream envd's body) seen through what the SDK then gets."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from conftest import sandbox_with_token
from envd_harness import start_envd
from novita_sandbox.core import AuthenticationException


@pytest.fixture
def fresh():
    """/init changes daemon-wide state: every test gets its own daemon."""
    daemon = start_envd()
    yield daemon
    daemon.stop()
    shutil.rmtree(daemon.base, ignore_errors=True)


def init(daemon, body: dict, token: str | None = None) -> httpx.Response:
    headers = {"X-Access-Token": token} if token else {}
    return httpx.post(f"{daemon.url}/init", json=body, headers=headers, timeout=10)


def test_env_vars_reach_processes(fresh):
    assert init(fresh, {"envVars": {"INIT_VAR": "from init", "SECOND": "2"}}).status_code == 204
    sbx = sandbox_with_token(fresh.url, None)
    assert sbx.commands.run('echo "$INIT_VAR|$SECOND"').stdout == "from init|2\n"
    # Per-command envs still win.
    assert sbx.commands.run("echo $SECOND", envs={"SECOND": "mine"}).stdout == "mine\n"
    assert httpx.get(f"{fresh.url}/envs").json()["INIT_VAR"] == "from init"


def test_access_token_set_then_required(fresh):
    assert init(fresh, {"accessToken": "late-token"}).status_code == 204
    with pytest.raises(AuthenticationException):
        sandbox_with_token(fresh.url, None).commands.run("true")
    good = sandbox_with_token(fresh.url, "late-token")
    assert good.commands.run("echo in").stdout == "in\n"
    good.files.write("signed.txt", "s")
    assert httpx.get(good.download_url("signed.txt")).text == "s"
    # Only the token's holder may init again.
    assert init(fresh, {"accessToken": "hijack"}).status_code == 401
    assert init(fresh, {"accessToken": "rotated"}, token="late-token").status_code == 204
    with pytest.raises(AuthenticationException):
        good.commands.run("true")
    assert sandbox_with_token(fresh.url, "rotated").commands.run("true").exit_code == 0


def test_empty_access_token_removes_it(fresh):
    init(fresh, {"accessToken": "t1"})
    assert init(fresh, {"accessToken": ""}, token="t1").status_code == 204
    assert sandbox_with_token(fresh.url, None).commands.run("true").exit_code == 0


def test_default_user_and_workdir(fresh):
    workdir = fresh.base / "wd"
    workdir.mkdir()
    os.chmod(workdir, 0o755)
    assert init(fresh, {"defaultUser": "root", "defaultWorkdir": str(workdir)}).status_code == 204
    sbx = sandbox_with_token(fresh.url, None)
    assert sbx.commands.run("id -u; pwd").stdout == f"0\n{workdir}\n"
    # An explicit user still wins over the default.
    assert sbx.commands.run("id -u", user="user").stdout == "1000\n"


def test_empty_body_and_unknown_keys_are_fine(fresh):
    assert httpx.post(f"{fresh.url}/init", timeout=10).status_code == 204
    assert init(fresh, {"hyperloopIP": "127.0.0.1", "volumeMounts": []}).status_code == 204


def test_bad_json_is_400(fresh):
    r = httpx.post(f"{fresh.url}/init", content=b"{nope", headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400
    assert r.json()["code"] == 400
