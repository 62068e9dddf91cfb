"""The upstream `e2b` Python SDK against the same daemon: it speaks the same envd protocol with its own
client stack (protobuf JSON codec with unknown fields ignored, `E2b-Sandbox-*` headers)."""

from __future__ import annotations

import os

import pytest

e2b = pytest.importorskip("e2b")


@pytest.fixture
def e2b_sbx(envd):
    os.environ["E2B_SANDBOX_URL"] = envd.url
    try:
        yield e2b.Sandbox.create(debug=True, request_timeout=15)
    finally:
        os.environ.pop("E2B_SANDBOX_URL", None)


def test_e2b_commands(e2b_sbx):
    seen = []
    result = e2b_sbx.commands.run("echo out; echo err >&2; id -u", on_stdout=seen.append)
    assert result.exit_code == 0
    assert result.stdout == "out\n1000\n"
    assert result.stderr == "err\n"
    assert "".join(seen) == "out\n1000\n"
    with pytest.raises(e2b.CommandExitException) as info:
        e2b_sbx.commands.run("exit 7")
    assert info.value.exit_code == 7


def test_e2b_background_and_kill(e2b_sbx):
    handle = e2b_sbx.commands.run("sleep 30", background=True)
    assert handle.pid in [p.pid for p in e2b_sbx.commands.list()]
    assert e2b_sbx.commands.kill(handle.pid)
    with pytest.raises(e2b.CommandExitException):
        handle.wait()


def test_e2b_files(e2b_sbx):
    e2b_sbx.files.write("e2b/hello.txt", "from e2b\n")
    assert e2b_sbx.files.read("e2b/hello.txt") == "from e2b\n"
    names = [entry.name for entry in e2b_sbx.files.list("e2b")]
    assert names == ["hello.txt"]
    assert e2b_sbx.files.exists("e2b/hello.txt")
    e2b_sbx.files.remove("e2b")
    assert not e2b_sbx.files.exists("e2b/hello.txt")
    with pytest.raises(e2b.NotFoundException):
        e2b_sbx.files.read("e2b/missing.txt")
