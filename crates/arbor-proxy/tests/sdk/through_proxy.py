"""Drives the official novita_sandbox Python SDK through the envd proxy.

Run by tests/python_sdk.rs with PROXY_URL, TOKEN and HOME_DIR set. The sandbox
objects are built as Sandbox.create()/connect() would build them, without a
control plane: `alpha` is reached by id header (create) or by token only
(connect), `nope` is unknown, `dead` has no envd, `paused` is paused without
auto-resume (502, as a sandbox that is not running).
"""

import os
import time

from packaging.version import Version

from novita_sandbox.core import Sandbox
from novita_sandbox.core.connection_config import ConnectionConfig
from novita_sandbox.core.exceptions import TimeoutException

URL = os.environ["PROXY_URL"]
TOKEN = os.environ["TOKEN"]
HOME = os.environ["HOME_DIR"]


def sandbox(sandbox_id, token, send_id=True):
    headers = {"X-Access-Token": token}
    if send_id:
        headers.update({"Novita-Sandbox-Id": sandbox_id, "Novita-Sandbox-Port": "49983"})
    config = ConnectionConfig(sandbox_url=URL, debug=True, request_timeout=15, extra_sandbox_headers=headers)
    return Sandbox(
        sandbox_id=sandbox_id,
        sandbox_domain=None,
        envd_version=Version("0.5.7"),
        envd_access_token=token,
        traffic_access_token=None,
        connection_config=config,
    )


def expect(exc_type, fn, needle):
    try:
        fn()
    except exc_type as e:
        assert needle in str(e), f"{exc_type.__name__} without {needle!r}: {e}"
        return type(e).__name__
    raise AssertionError(f"no {exc_type.__name__}")


for sbx in [sandbox("alpha", TOKEN), sandbox("alpha", TOKEN, send_id=False)]:
    r = sbx.commands.run("echo hello; echo err >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("hello\n", "err\n", 0), r

    # Output arrives while the command runs.
    seen = []
    t0 = time.monotonic()
    sbx.commands.run("for i in 1 2 3; do echo $i; sleep 0.4; done", on_stdout=lambda s: seen.append(time.monotonic() - t0))
    assert len(seen) == 3 and seen[2] - seen[0] > 0.6, seen

    data = os.urandom(5 << 20)
    path = f"{HOME}/sdk.bin"
    sbx.files.write(path, data)
    assert sbx.files.read(path, format="bytes") == data
    assert [e.name for e in sbx.files.list(HOME) if e.name == "sdk.bin"] == ["sdk.bin"]
    sbx.files.remove(path)

kinds = []
nope = sandbox("nope", "tok-nope")
# An unknown sandbox reads as one that timed out (as with upstream E2B), not
# as a missing file.
kinds.append(expect(TimeoutException, lambda: nope.commands.run("true"), "sandbox nope not found"))
kinds.append(expect(TimeoutException, lambda: nope.files.read("/etc/hostname"), "sandbox nope not found"))
kinds.append(expect(TimeoutException, lambda: nope.files.list("/"), "sandbox nope not found"))
kinds.append(expect(TimeoutException, lambda: sandbox("x", "tok-nobody", send_id=False).files.list("/"), "access token"))
dead = sandbox("dead", "tok-dead")
kinds.append(expect(TimeoutException, lambda: dead.commands.run("true"), "sandbox dead is not reachable"))
kinds.append(expect(TimeoutException, lambda: dead.files.read("/etc/hostname"), "sandbox dead is not reachable"))
kinds.append(expect(TimeoutException, lambda: dead.files.list("/"), "sandbox dead is not reachable"))
paused = sandbox("paused", "tok-paused")
kinds.append(expect(TimeoutException, lambda: paused.commands.run("true"), "sandbox paused is paused"))
kinds.append(expect(TimeoutException, lambda: paused.files.read("/etc/hostname"), "sandbox paused is paused"))
# `is_running()` reads 502 from /health as "not running" (any other error raises).
assert paused.is_running() is False and nope.is_running() is False and dead.is_running() is False
assert sandbox("alpha", TOKEN).is_running() is True
print("ok", kinds)
