"""Who may wake a paused sandbox through the proxy (issue 14, item 6), against a real server with the
official Python SDK: a request without the sandbox's credential (envd's access token for envd, the
traffic token for ports of a sandbox that has one) neither resumes a paused auto-resume sandbox nor
learns that it exists (its answer is byte for byte that of an unknown id, but for the id); with the
credential it resumes as before. A paused sandbox without auto-resume reads as not running
(`is_running()` is False)."""

from __future__ import annotations

import time
from typing import List

import httpx
import pytest

from novita_sandbox.core import Sandbox
from novita_sandbox.core.exceptions import TimeoutException
from server_harness import Server, start_server

# An id of the shape the server makes (20 lowercase alphanumerics) that no sandbox has.
UNKNOWN = "zz0unknown0sandbox00"


@pytest.fixture(scope="module")
def server():
    # No pause grace: a pause releases the sandbox at once, so a resume is a real restore.
    srv = start_server(pause_grace=0)
    yield srv
    srv.teardown()


@pytest.fixture
def made(server: Server):
    sandboxes: List[Sandbox] = []
    yield sandboxes
    for sbx in sandboxes:
        Sandbox.kill(sbx.sandbox_id, **server.sdk_opts())


def create(server: Server, made: List[Sandbox], **kw) -> Sandbox:
    sbx = Sandbox.create(timeout=300, **kw, **server.sdk_opts())
    made.append(sbx)
    return sbx


def state_of(server: Server, sbx: Sandbox) -> str:
    return Sandbox.get_info(sbx.sandbox_id, **server.sdk_opts()).state.value


def envd_requests(sandbox_id: str, server: Server) -> dict:
    """The ways a request reaches envd, by name: (method, path, headers, body)."""
    port = server.port
    connect = {"Content-Type": "application/json", "Connect-Protocol-Version": "1"}
    return {
        "health by e2b headers": ("GET", "/health", {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": "49983"}, None),
        "health by novita header": ("GET", "/health", {"Novita-Sandbox-Id": sandbox_id}, None),
        "health by host": ("GET", "/health", {"Host": f"49983-{sandbox_id}.localhost:{port}"}, None),
        "files by host": ("GET", "/files?path=/etc/hostname", {"Host": f"49983-{sandbox_id}.localhost:{port}"}, None),
        "rpc by header": ("POST", "/process.Process/List", {"Novita-Sandbox-Id": sandbox_id, **connect}, b"{}"),
    }


def send(server: Server, method: str, path: str, headers: dict, body) -> httpx.Response:
    return httpx.request(method, f"{server.url}{path}", headers=headers, content=body, timeout=30)


def answer(resp: httpx.Response, sandbox_id: str) -> tuple:
    """What a client learns from an answer, with the id it asked for blanked out."""
    return resp.status_code, resp.headers.get("content-type"), resp.text.replace(sandbox_id, "<id>")


def assert_like_unknown(server: Server, sandbox_id: str, extra: dict) -> None:
    for name, (method, path, headers, body) in envd_requests(sandbox_id, server).items():
        got = send(server, method, path, {**headers, **extra}, body)
        unknown_req = envd_requests(UNKNOWN, server)[name]
        unknown = send(server, unknown_req[0], unknown_req[1], {**unknown_req[2], **extra}, unknown_req[3])
        assert answer(got, sandbox_id) == answer(unknown, UNKNOWN), name
        assert got.status_code == 502, (name, got.status_code, got.text)


def test_without_the_token_a_paused_auto_resume_sandbox_stays_paused_and_looks_unknown(server, made):
    sbx = create(server, made, metadata={"auto_resume": "true"})
    sbx.files.write("/home/user/kept.txt", "kept\n")
    sbx.beta_pause()
    assert state_of(server, sbx) == "paused"
    started = time.monotonic()
    # No token, and a token of another sandbox.
    other = create(server, made)
    for extra in ({}, {"X-Access-Token": "not-the-token"}, {"X-Access-Token": other._envd_access_token}):
        assert_like_unknown(server, sbx.sandbox_id, extra)
    # The traffic token header is not envd's credential.
    assert_like_unknown(server, sbx.sandbox_id, {"E2B-Traffic-Access-Token": sbx._envd_access_token})
    assert time.monotonic() - started < 10, "refusals are answered at once, nothing waits for a resume"
    assert state_of(server, sbx) == "paused"

    # With the token (the SDK sends it on every envd call) the sandbox resumes, as before.
    assert sbx.is_running() is True
    assert state_of(server, sbx) == "running"
    assert sbx.files.read("/home/user/kept.txt") == "kept\n"
    # A running sandbox is envd's to answer: its own 401 without the token (/health is open in envd).
    res = send(server, "GET", "/files?path=/etc/hostname", {"Novita-Sandbox-Id": sbx.sandbox_id}, None)
    assert res.status_code == 401, res.text


def test_a_signed_download_url_resumes_a_paused_auto_resume_sandbox(server, made):
    sbx = create(server, made, metadata={"auto_resume": "true"})
    sbx.files.write("/home/user/signed.txt", "signed\n")
    url = sbx.download_url("/home/user/signed.txt", use_signature_expiration=120)
    assert "signature=" in url, url
    sbx.beta_pause()
    # The SDK joins it to NOVITA_SANDBOX_URL; a browser would reach envd by its public URL, as here.
    path = httpx.URL(url).raw_path.decode()
    host = {"Host": f"49983-{sbx.sandbox_id}.localhost:{server.port}"}
    tampered = path.replace("signature=v1_", "signature=v1_x")
    assert send(server, "GET", tampered, host, None).status_code == 502
    assert state_of(server, sbx) == "paused"
    res = send(server, "GET", path, host, None)
    assert res.status_code == 200 and res.text == "signed\n", res.text
    assert state_of(server, sbx) == "running"


def test_a_paused_sandbox_without_auto_resume_is_not_running(server, made):
    sbx = create(server, made)
    sbx.beta_pause()
    # With its token: "not running" (502), which the SDK reads as is_running() False; the message says why.
    assert sbx.is_running() is False
    with pytest.raises(TimeoutException, match="is paused; connect to resume it"):
        sbx.commands.run("true", request_timeout=10)
    # Without it: the answer of an unknown id.
    assert_like_unknown(server, sbx.sandbox_id, {})
    assert state_of(server, sbx) == "paused"
    sbx.connect()
    assert sbx.is_running() is True


def test_ports_of_a_sandbox_with_a_traffic_token_wake_it_only_with_the_token(server, made):
    sbx = create(server, made, metadata={"auto_resume": "true"}, network={"allow_public_traffic": False})
    token = sbx.traffic_access_token
    assert token
    sbx.files.write("/tmp/www/index.html", "woken\n")
    sbx.commands.run("cd /tmp/www && python3 -m http.server 8000", background=True)
    host = f"8000-{sbx.sandbox_id}.localhost:{server.port}"
    deadline = time.monotonic() + 30
    while send(server, "GET", "/", {"Host": host, "E2B-Traffic-Access-Token": token}, None).status_code != 200:
        assert time.monotonic() < deadline, "the web server never answered"
        time.sleep(0.1)
    sbx.beta_pause()
    unknown_host = f"8000-{UNKNOWN}.localhost:{server.port}"
    for extra in ({}, {"E2B-Traffic-Access-Token": "wrong"}, {"X-Access-Token": sbx._envd_access_token}):
        got = send(server, "GET", "/", {"Host": host, **extra}, None)
        unknown = send(server, "GET", "/", {"Host": unknown_host, **extra}, None)
        assert answer(got, sbx.sandbox_id) == answer(unknown, UNKNOWN), extra
        assert got.status_code == 404, got.text
    assert state_of(server, sbx) == "paused"
    # With the traffic token the request is held while the sandbox resumes, then answered.
    res = send(server, "GET", "/", {"Host": host, "E2B-Traffic-Access-Token": token}, None)
    assert res.status_code == 200 and res.text == "woken\n", res.text
    assert state_of(server, sbx) == "running"


def test_ports_of_a_public_sandbox_wake_it_without_credentials(server, made):
    """E2B's rule: traffic to a paused auto-resume sandbox resumes it. A port of a sandbox that allows
    public traffic is public, so any request to it is such traffic."""
    sbx = create(server, made, metadata={"auto_resume": "true"})
    sbx.files.write("/tmp/www/index.html", "public\n")
    sbx.commands.run("cd /tmp/www && python3 -m http.server 8000", background=True)
    host = f"8000-{sbx.sandbox_id}.localhost:{server.port}"
    deadline = time.monotonic() + 30
    while send(server, "GET", "/", {"Host": host}, None).status_code != 200:
        assert time.monotonic() < deadline, "the web server never answered"
        time.sleep(0.1)
    sbx.beta_pause()
    # envd's port of the same sandbox still needs the token ...
    assert_like_unknown(server, sbx.sandbox_id, {})
    assert state_of(server, sbx) == "paused"
    # ... while its public port wakes it.
    res = send(server, "GET", "/", {"Host": host}, None)
    assert res.status_code == 200 and res.text == "public\n", res.text
    assert state_of(server, sbx) == "running"
