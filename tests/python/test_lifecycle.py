"""The daemon as a process: shutdown takes its children with it; health; the async SDK."""

from __future__ import annotations

import shutil
import signal
import time

import pytest

from conftest import sandbox_with_token
from envd_harness import PtyReader, pid_alive, start_envd, wait_until
from novita_sandbox.core import AsyncSandbox, CommandExitException, PtySize



@pytest.fixture
def own_envd():
    daemon = start_envd()
    yield daemon
    daemon.stop(signal.SIGKILL)
    shutil.rmtree(daemon.base, ignore_errors=True)


def first_line_pid(handle) -> int:
    for out, _, _ in handle:
        if out:
            return int(out.strip())
    raise AssertionError("no output")


def assert_sigterm_ends(daemon, pids):
    assert all(pid_alive(p) for p in pids)
    daemon.proc.send_signal(signal.SIGTERM)
    # envd gives its children a grace period (5 s) before it stops anyway.
    daemon.proc.wait(timeout=15)
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=10), [p for p in pids if pid_alive(p)]


def test_sigterm_terminates_children(own_envd):
    sbx = sandbox_with_token(own_envd.url, None)
    bg = sbx.commands.run("sleep 300 & echo $!; wait", background=True, timeout=0)
    grandchild = first_line_pid(bg)
    root_proc = sbx.commands.run("sleep 300", background=True, user="root", timeout=0)
    detached = sbx.commands.run("sleep 300", background=True, timeout=0)
    detached.disconnect()
    assert_sigterm_ends(own_envd, [bg.pid, grandchild, root_proc.pid, detached.pid])


def test_sigterm_terminates_a_connected_pty(own_envd):
    # An interactive bash ignores SIGTERM, and its stream is still open: envd must still stop.
    sbx = sandbox_with_token(own_envd.url, None)
    pty = sbx.pty.create(PtySize(rows=24, cols=80), timeout=0)
    reader = PtyReader(pty)
    # Only once the shell has read its profile does it ignore SIGTERM; before, SIGTERM kills it.
    sbx.pty.send_stdin(pty.pid, b"echo shell-$((40+2))\n")
    reader.wait_for("shell-42")
    assert_sigterm_ends(own_envd, [pty.pid])


def test_sigterm_with_nothing_running_exits_cleanly(own_envd):
    own_envd.proc.send_signal(signal.SIGTERM)
    assert own_envd.proc.wait(timeout=10) == 0


def test_health(sbx, envd):
    assert sbx.is_running() is True


def test_idle_daemon_is_small(envd):
    # The spec's target is 5 MiB; the bench measures it precisely. Here only a generous bound.
    assert envd.rss_kib() < 32 * 1024


async def test_async_commands(asbx: AsyncSandbox, work):
    out = []
    r = await asbx.commands.run("echo a; echo b >&2", on_stdout=out.append)
    assert r.stdout == "a\n"
    assert r.stderr == "b\n"
    assert "".join(out) == "a\n"
    h = await asbx.commands.run("read x; echo got-$x", background=True, stdin=True)
    await asbx.commands.send_stdin(h.pid, "async\n")
    assert (await h.wait()).stdout == "got-async\n"
    h = await asbx.commands.run("sleep 30", background=True)
    assert await asbx.commands.kill(h.pid) is True
    with pytest.raises(CommandExitException):
        await h.wait()


async def test_async_files(asbx: AsyncSandbox, work):
    await asbx.files.write(str(work / "af.txt"), "async file")
    assert await asbx.files.read(str(work / "af.txt")) == "async file"
    assert await asbx.files.exists(str(work / "af.txt"))
    assert [e.name for e in await asbx.files.list(str(work))] == ["af.txt"]


def test_restart_on_same_world(own_envd):
    """A fresh daemon on the same directories serves what the previous one wrote."""
    sbx = sandbox_with_token(own_envd.url, None)
    sbx.files.write("persist.txt", "still here")
    own_envd.stop()
    second = start_envd(base=own_envd.base)
    try:
        sbx2 = sandbox_with_token(second.url, None)
        assert sbx2.files.read("persist.txt") == "still here"
        t0 = time.monotonic()
        assert sbx2.commands.run("true").exit_code == 0
        assert time.monotonic() - t0 < 5
    finally:
        second.stop()
