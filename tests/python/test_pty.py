"""`sandbox.pty` through the official Python SDK against a real arbor-envd."""

from __future__ import annotations

import re
import time

import pytest

from envd_harness import PtyReader
from novita_sandbox.connect import Code, ConnectException
from novita_sandbox.core import CommandExitException, PtySize, Sandbox


def test_pty_stty_size_and_resize(sbx: Sandbox):
    h = sbx.pty.create(PtySize(rows=24, cols=80), timeout=30)
    reader = PtyReader(h)
    try:
        sbx.pty.send_stdin(h.pid, b"stty size; echo mark-1\n")
        reader.wait_for(r"24 80\r?\n(.*\r?\n)?mark-1")
        sbx.pty.resize(h.pid, PtySize(rows=40, cols=132))
        sbx.pty.send_stdin(h.pid, b"stty size; echo mark-2\n")
        reader.wait_for(r"40 132\r?\n(.*\r?\n)?mark-2")
    finally:
        sbx.pty.kill(h.pid)
    reader.join()


def test_pty_is_a_terminal_with_term_set(sbx: Sandbox):
    h = sbx.pty.create(PtySize(rows=24, cols=80), timeout=30)
    reader = PtyReader(h)
    sbx.pty.send_stdin(h.pid, b'tty; echo "term=$TERM"; [ -t 0 ] && echo stdin-is-tty\n')
    reader.wait_for(r"/dev/pts/\d+")
    reader.wait_for(r"term=xterm-256color")
    reader.wait_for(r"stdin-is-tty")
    sbx.pty.send_stdin(h.pid, b"exit 0\n")
    reader.join()
    assert reader.error is None, reader.error
    assert reader.result.exit_code == 0


def test_pty_exit_code(sbx: Sandbox):
    h = sbx.pty.create(PtySize(rows=24, cols=80), timeout=30)
    reader = PtyReader(h)
    sbx.pty.send_stdin(h.pid, b"exit 7\n")
    reader.join()
    assert isinstance(reader.error, CommandExitException)
    assert reader.error.exit_code == 7


def test_pty_kill(sbx: Sandbox):
    h = sbx.pty.create(PtySize(rows=24, cols=80), timeout=30)
    reader = PtyReader(h)
    sbx.pty.send_stdin(h.pid, b"echo ready\n")
    reader.wait_for("ready")
    assert sbx.pty.kill(h.pid) is True
    reader.join()
    assert isinstance(reader.error, CommandExitException)
    assert sbx.pty.kill(h.pid) is False


def test_pty_user_root_and_cwd(sbx: Sandbox, envd, work):
    h = sbx.pty.create(PtySize(rows=24, cols=80), user="root", cwd=str(work), envs={"PTYVAR": "v1"}, timeout=30)
    reader = PtyReader(h)
    sbx.pty.send_stdin(h.pid, b'echo "uid=$(id -u) pwd=$(pwd) var=$PTYVAR"\n')
    reader.wait_for(rf"uid=0 pwd={re.escape(str(work))} var=v1")
    sbx.pty.kill(h.pid)
    reader.join()


def test_pty_default_user(sbx: Sandbox):
    h = sbx.pty.create(PtySize(rows=24, cols=80), timeout=30)
    reader = PtyReader(h)
    sbx.pty.send_stdin(h.pid, b'echo "uid=$(id -u)"\n')
    reader.wait_for(r"uid=1000")
    sbx.pty.kill(h.pid)
    reader.join()


def test_pty_connect_after_disconnect(sbx: Sandbox):
    h = sbx.pty.create(PtySize(rows=24, cols=80), timeout=30)
    h.disconnect()
    h2 = sbx.pty.connect(h.pid, timeout=30)
    reader = PtyReader(h2)
    sbx.pty.send_stdin(h.pid, b"echo reconnected\n")
    reader.wait_for("reconnected")
    sbx.pty.kill(h.pid)
    reader.join()


def test_pty_listed(sbx: Sandbox):
    h = sbx.pty.create(PtySize(rows=24, cols=80), timeout=30)
    try:
        p = {p.pid: p for p in sbx.commands.list()}[h.pid]
        assert p.cmd == "/bin/bash"
        assert p.args == ["-i", "-l"]
        assert p.envs.get("TERM") == "xterm-256color"
    finally:
        sbx.pty.kill(h.pid)


def test_pty_input_as_raw_bytes(sbx: Sandbox):
    # Ctrl-C (0x03) interrupts the foreground job, as in a real terminal.
    h = sbx.pty.create(PtySize(rows=24, cols=80), timeout=30)
    reader = PtyReader(h)
    sbx.pty.send_stdin(h.pid, b"sleep 30; echo after-sleep-$((6*7))\n")
    time.sleep(0.5)
    sbx.pty.send_stdin(h.pid, b"\x03")
    sbx.pty.send_stdin(h.pid, b"echo interrupted-$((6*7))\n")
    reader.wait_for("interrupted-42", timeout=5)
    assert "after-sleep-42" not in reader.text()
    sbx.pty.kill(h.pid)
    reader.join()


def test_pty_resize_unknown_pid(sbx: Sandbox):
    # The SDK does not map errors of resize: the raw Connect error surfaces.
    with pytest.raises(ConnectException) as info:
        sbx.pty.resize(999_999_99, PtySize(rows=10, cols=10))
    assert info.value.status == Code.not_found
