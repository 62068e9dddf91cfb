"""Fixtures: a real arbor-envd per session (and per module where a test needs its own), and SDK
sandboxes pointed at it.

The unauthenticated sandbox comes from `Sandbox.create(debug=True)` with NOVITA_SANDBOX_URL set: debug
mode makes no control-plane call (protocol notes §1.3). A sandbox that carries an envd access token
cannot come from debug mode (it has none), so `sandbox_with_token` builds one the way `Sandbox._create`
does after a real create: the constructor with `envd_access_token` plus the `X-Access-Token` header in
the connection config.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest
from packaging.version import Version

from envd_harness import USER_GID, USER_UID, Envd, start_envd
from novita_sandbox.core import AsyncSandbox, Sandbox
from novita_sandbox.core.connection_config import ConnectionConfig

# Short enough that a daemon bug fails a test instead of stalling the suite for a minute.
REQUEST_TIMEOUT = 15
TOKEN = "arbor-test-token-3f9c1b"
# The version a real control plane would report (protocol notes §4.7: unlocks every SDK feature).
ENVD_VERSION = Version("0.5.7")


@pytest.fixture(scope="session")
def envd():
    """The shared daemon: no access token, default user `user`."""
    daemon = start_envd()
    os.environ["NOVITA_SANDBOX_URL"] = daemon.url
    yield daemon
    os.environ.pop("NOVITA_SANDBOX_URL", None)
    daemon.stop()
    shutil.rmtree(daemon.base, ignore_errors=True)


@pytest.fixture(scope="session")
def sbx(envd: Envd) -> Sandbox:
    return Sandbox.create(debug=True, request_timeout=REQUEST_TIMEOUT)


@pytest.fixture
async def asbx(envd: Envd) -> AsyncSandbox:
    # Per test: the async transport belongs to the test's event loop.
    return await AsyncSandbox.create(debug=True, request_timeout=REQUEST_TIMEOUT)


@pytest.fixture(scope="module")
def token_envd():
    """A daemon started with --access-token."""
    daemon = start_envd(token=TOKEN)
    yield daemon
    daemon.stop()
    shutil.rmtree(daemon.base, ignore_errors=True)


def sandbox_with_token(url: str, token: str | None, cls=Sandbox):
    """A sandbox object as `Sandbox.create()` returns it for a secure sandbox, without a control plane."""
    headers = {"Novita-Sandbox-Id": "arbor-test", "Novita-Sandbox-Port": "49983"}
    if token is not None:
        headers["X-Access-Token"] = token
    config = ConnectionConfig(
        sandbox_url=url,
        debug=True,
        request_timeout=REQUEST_TIMEOUT,
        extra_sandbox_headers=headers,
    )
    return cls(
        sandbox_id="arbor-test",
        sandbox_domain=None,
        envd_version=ENVD_VERSION,
        envd_access_token=token,
        traffic_access_token=None,
        connection_config=config,
    )


@pytest.fixture(scope="module")
def token_sbx(token_envd: Envd) -> Sandbox:
    return sandbox_with_token(token_envd.url, TOKEN)


_dir_ids = itertools.count()


@pytest.fixture
def work(envd: Envd, request) -> Path:
    """A fresh directory in user's home, owned by user, unique to the test."""
    name = f"{next(_dir_ids):03d}-{request.node.name[:40]}".replace("[", "_").replace("]", "_")
    path = envd.home / name
    path.mkdir()
    os.chown(path, USER_UID, USER_GID)
    return path
