"""`arbor server` driven by the official `novita-sandbox` Python SDK, unmodified: the REST API
(protocol notes §2–§3), lifecycle, and envd traffic through the server's proxy."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import httpx
import pytest

from novita_sandbox.core import Sandbox
from novita_sandbox.core.exceptions import AuthenticationException, NotFoundException
from novita_sandbox.core.sandbox.sandbox_api import SandboxQuery, SandboxState

from server_harness import Server, start_server


@pytest.fixture(scope="module")
def server():
    srv = start_server()
    yield srv
    srv.teardown()


@pytest.fixture
def opts(server: Server) -> dict:
    return server.sdk_opts()


def test_create_runs_commands_and_files_through_the_proxy(opts):
    sbx = Sandbox.create(timeout=120, metadata={"suite": "server"}, envs={"GREETING": "hello"}, **opts)
    try:
        assert sbx.is_running()
        out = sbx.commands.run("echo $GREETING from $(whoami) on $(hostname)")
        assert out.stdout.strip() == f"hello from user on sbx-{sbx.sandbox_id}"
        sbx.files.write("/home/user/notes.txt", "through the proxy\n")
        assert sbx.files.read("/home/user/notes.txt") == "through the proxy\n"
        # A sandbox object from connect(id): Python then sends only X-Access-Token, no id header.
        again = Sandbox.connect(sbx.sandbox_id, **opts)
        assert again.commands.run("cat /home/user/notes.txt").stdout == "through the proxy\n"
        assert again.files.exists("/home/user/notes.txt")
    finally:
        assert sbx.kill() is True
    assert Sandbox.kill(sbx.sandbox_id, **opts) is False
    assert not sbx.is_running()


def test_get_info_fields(opts):
    before = datetime.now(timezone.utc)
    sbx = Sandbox.create(timeout=90, metadata={"k": "v"}, **opts)
    try:
        info = sbx.get_info()
        assert info.sandbox_id == sbx.sandbox_id
        assert info.template_id == "base"
        assert info.metadata == {"k": "v"}
        assert info.state == SandboxState.RUNNING
        assert info.cpu_count >= 1 and info.memory_mb >= 64
        assert abs((info.started_at - before).total_seconds()) < 30
        assert 80 <= (info.end_at - info.started_at).total_seconds() <= 91
        assert info.envd_version >= "0.5.7"
    finally:
        sbx.kill()


def test_list_filters_by_state_and_metadata_and_pages(opts):
    tag = f"list-{time.monotonic_ns()}"
    tricky = {"a b": "c&d=e", "tag": tag}
    made = [Sandbox.create(timeout=120, metadata=tricky if i == 0 else {"tag": tag}, **opts) for i in range(3)]
    try:
        found = Sandbox.list(query=SandboxQuery(metadata={"tag": tag}), **opts).next_items()
        assert {s.sandbox_id for s in found} == {s.sandbox_id for s in made}
        only = Sandbox.list(query=SandboxQuery(metadata=tricky, state=[SandboxState.RUNNING]), **opts).next_items()
        assert [s.sandbox_id for s in only] == [made[0].sandbox_id]
        assert only[0].metadata == tricky
        paused = Sandbox.list(query=SandboxQuery(metadata={"tag": tag}, state=[SandboxState.PAUSED]), **opts)
        assert paused.next_items() == []
        pages = Sandbox.list(query=SandboxQuery(metadata={"tag": tag}), limit=1, **opts)
        seen = []
        while pages.has_next:
            items = pages.next_items()
            assert len(items) <= 1
            seen.extend(s.sandbox_id for s in items)
        assert sorted(seen) == sorted(s.sandbox_id for s in made)
    finally:
        for s in made:
            s.kill()


def test_set_timeout_connect_and_a_timeout_that_kills(opts):
    sbx = Sandbox.create(timeout=3, **opts)
    short = Sandbox.create(timeout=3, **opts)
    try:
        sbx.set_timeout(60)
        end = sbx.get_info().end_at
        assert 55 <= (end - datetime.now(timezone.utc)).total_seconds() <= 61
        # connect never shortens a running sandbox's deadline.
        Sandbox.connect(sbx.sandbox_id, timeout=10, **opts)
        assert sbx.get_info().end_at == end
        time.sleep(4.5)
        assert not short.is_running()
        with pytest.raises(NotFoundException):
            short.get_info()
        assert sbx.is_running()
    finally:
        sbx.kill()


def test_metrics_after_a_few_seconds(opts):
    sbx = Sandbox.create(timeout=60, **opts)
    try:
        sbx.commands.run("python3 -c 'x = bytearray(20 << 20); import time; time.sleep(3)'")
        metrics = sbx.get_metrics()
        assert len(metrics) >= 2
        last = metrics[-1]
        assert last.cpu_count >= 1
        assert last.mem_total > 0 and 0 < last.mem_used <= last.mem_total
        assert 0 <= last.cpu_used_pct <= 100
    finally:
        sbx.kill()


def test_wrong_key_and_unknown_sandbox(server: Server, opts):
    with pytest.raises(AuthenticationException):
        Sandbox.create(**dict(opts, api_key="not-a-key"))
    with pytest.raises(NotFoundException):
        Sandbox.connect("doesnotexist000000000", **opts)
    with pytest.raises(NotFoundException):
        Sandbox.get_info("doesnotexist000000000", **opts)
    assert Sandbox.kill("doesnotexist000000000", **opts) is False


def test_bad_input_answers_json_errors(server: Server):
    with server.api() as api:
        for method, path, body in [
            ("POST", "/sandboxes", {"templateID": "no-such-template"}),
            ("POST", "/sandboxes", {"timeout": -1}),
            ("POST", "/sandboxes", {"timeout": 10**6}),
            ("POST", "/sandboxes", {"metadata": {"idle_timeout": "5"}}),
            ("POST", "/sandboxes", {"network": {"denyOut": ["not-a-cidr"]}}),
            ("GET", "/v2/sandboxes?limit=5000", None),
            ("GET", "/v2/sandboxes?state=sleeping", None),
            ("GET", "/v2/sandboxes?nextToken=garbage", None),
            ("POST", "/sandboxes/xyz/timeout", {"timeout": "soon"}),
            ("GET", "/no/such/route", None),
        ]:
            res = api.request(method, path, json=body)
            assert 400 <= res.status_code < 500, (path, body, res.status_code, res.text)
            err = res.json()
            assert err["code"] == res.status_code and err["message"], (path, err)
        raw = api.post("/sandboxes", content=b"{not json", headers={"content-type": "application/json"})
        assert raw.status_code == 400 and raw.json()["code"] == 400
    unauth = httpx.get(f"{server.url}/v2/sandboxes")
    assert unauth.status_code == 401 and unauth.json() == {"code": 401, "message": "missing X-API-KEY header"}
    assert httpx.get(f"{server.url}/openapi.json").json()["info"]["title"] == "Arbor API"
