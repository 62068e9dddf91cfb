"""Access token (`X-Access-Token`) and signed file URLs (`download_url` / `upload_url`).

The sandbox objects here carry an envd access token the way `Sandbox.create()` gives them after a real
create (see conftest.sandbox_with_token), so the SDK itself computes the URL signatures.
"""

from __future__ import annotations

import itertools
import os

import httpx
import pytest

from conftest import TOKEN, sandbox_with_token
from novita_sandbox.core import AsyncSandbox, AuthenticationException, Sandbox
from novita_sandbox.core.sandbox.signature import get_signature


_ids = itertools.count()


@pytest.fixture
def twork(token_envd, request):
    path = token_envd.home / f"t{next(_ids):03d}-{request.node.name[:40]}"
    path.mkdir()
    os.chown(path, 1000, 1000)
    return path


def test_token_sandbox_can_do_everything(token_sbx: Sandbox, twork):
    assert token_sbx.commands.run("id -u").stdout == "1000\n"
    token_sbx.files.write(str(twork / "a.txt"), "with token")
    assert token_sbx.files.read(str(twork / "a.txt")) == "with token"
    assert [e.name for e in token_sbx.files.list(str(twork))] == ["a.txt"]
    assert token_sbx.files.exists(str(twork / "a.txt"))
    h = token_sbx.files.watch_dir(str(twork))
    h.get_new_events()
    h.stop()


async def test_token_async_sandbox(token_envd, twork):
    asbx = sandbox_with_token(token_envd.url, TOKEN, cls=AsyncSandbox)
    r = await asbx.commands.run("echo async")
    assert r.stdout == "async\n"


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["no-token", "wrong-token"])
def test_missing_or_wrong_token_is_rejected(token_envd, twork, token):
    bad = sandbox_with_token(token_envd.url, token)
    (twork / "guarded.txt").write_text("guarded")
    with pytest.raises(AuthenticationException):
        bad.commands.run("echo should-not-run")
    with pytest.raises(AuthenticationException):
        bad.commands.list()
    with pytest.raises(AuthenticationException):
        bad.files.read(str(twork / "guarded.txt"))
    with pytest.raises(AuthenticationException):
        bad.files.write(str(twork / "intruder.txt"), "x")
    with pytest.raises(AuthenticationException):
        bad.files.list(str(twork))
    with pytest.raises(AuthenticationException):
        bad.files.watch_dir(str(twork))
    assert not (twork / "intruder.txt").exists()


def test_health_needs_no_token(token_envd):
    bad = sandbox_with_token(token_envd.url, None)
    assert bad.is_running() is True
    assert httpx.get(f"{token_envd.url}/health").status_code == 204


def test_signed_download_url(token_sbx: Sandbox, twork):
    (twork / "dl.txt").write_text("download me")
    url = token_sbx.download_url(str(twork / "dl.txt"))
    assert "signature=v1_" in url
    r = httpx.get(url)  # no X-Access-Token: the signature stands in for it
    assert r.status_code == 200, r.text
    assert r.text == "download me"


def test_signed_download_url_with_expiration(token_sbx: Sandbox, twork):
    (twork / "exp.txt").write_text("soon gone")
    url = token_sbx.download_url(str(twork / "exp.txt"), use_signature_expiration=120)
    assert "signature_expiration=" in url
    assert httpx.get(url).text == "soon gone"


def test_expired_signature_is_rejected(token_envd, twork):
    (twork / "old.txt").write_text("x")
    path = str(twork / "old.txt")
    sig = get_signature(path, "read", None, TOKEN, -60)
    r = httpx.get(
        f"{token_envd.url}/files",
        params={"path": path, "signature": sig["signature"], "signature_expiration": sig["expiration"]},
    )
    assert r.status_code == 401, r.text


def test_tampered_or_misused_signature_is_rejected(token_sbx: Sandbox, token_envd, twork):
    (twork / "t.txt").write_text("x")
    (twork / "other.txt").write_text("other")
    url = token_sbx.download_url(str(twork / "t.txt"))
    # Same signature, another path.
    assert httpx.get(url.replace("t.txt", "other.txt")).status_code == 401
    # A read signature does not allow a write.
    r = httpx.post(url, files={"file": ("t.txt", b"overwritten")})
    assert r.status_code == 401
    assert (twork / "t.txt").read_text() == "x"
    # A signature for the default user does not work for root.
    assert httpx.get(url + "&username=root").status_code == 401
    # No signature and no token.
    assert httpx.get(f"{token_envd.url}/files", params={"path": str(twork / "t.txt")}).status_code == 401


def test_signed_upload_url(token_sbx: Sandbox, twork):
    url = token_sbx.upload_url(str(twork / "up.txt"))
    r = httpx.post(url, files={"file": ("up.txt", b"uploaded via signed url")})
    assert r.status_code == 200, r.text
    assert (twork / "up.txt").read_bytes() == b"uploaded via signed url"
    assert (twork / "up.txt").stat().st_uid == 1000
    assert r.json() == [{"name": "up.txt", "type": "file", "path": str(twork / "up.txt")}]


def test_signed_urls_for_root(token_sbx: Sandbox, twork):
    secret = twork / "root-only.txt"
    secret.write_text("root data")
    os.chmod(secret, 0o600)
    assert httpx.get(token_sbx.download_url(str(secret), user="root")).text == "root data"
    up = token_sbx.upload_url(str(twork / "by-root.txt"), user="root")
    assert httpx.post(up, files={"file": ("x", b"r")}).status_code == 200
    assert (twork / "by-root.txt").stat().st_uid == 0


def test_unsigned_urls_without_token(sbx: Sandbox, work):
    (work / "open.txt").write_text("open")
    url = sbx.download_url(str(work / "open.txt"))
    assert "signature" not in url
    assert httpx.get(url).text == "open"
    up = sbx.upload_url(str(work / "open-up.txt"))
    assert httpx.post(up, files={"file": ("x", b"up")}).status_code == 200
    assert (work / "open-up.txt").read_bytes() == b"up"
