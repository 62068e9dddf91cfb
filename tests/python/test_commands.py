"""`sandbox.commands` through the official Python SDK against a real arbor-envd."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from envd_harness import pid_alive, wait_until

from novita_sandbox.core import AuthenticationException, CommandExitException, NotFoundException, Sandbox, SandboxException, TimeoutException


def test_run_returns_stdout_and_exit_code(sbx: Sandbox):
    r = sbx.commands.run("echo hello")
    assert r.stdout == "hello\n"
    assert r.stderr == ""
    assert r.exit_code == 0
    assert not r.error


def test_run_callbacks_get_stdout_and_stderr(sbx: Sandbox):
    out, err = [], []
    r = sbx.commands.run("echo to-out; echo to-err >&2; echo more-out", on_stdout=out.append, on_stderr=err.append)
    assert "".join(out) == "to-out\nmore-out\n"
    assert "".join(err) == "to-err\n"
    assert r.stdout == "to-out\nmore-out\n"
    assert r.stderr == "to-err\n"


def test_output_is_streamed_not_buffered(sbx: Sandbox):
    seen = []
    t0 = time.monotonic()
    sbx.commands.run(
        "for i in 1 2 3; do echo line$i; sleep 0.3; done",
        on_stdout=lambda s: seen.append((time.monotonic() - t0, s)),
    )
    total = time.monotonic() - t0
    assert "".join(s for _, s in seen) == "line1\nline2\nline3\n"
    # The first line must arrive long before the command ends.
    assert seen[0][0] < total - 0.4, seen


def test_large_output_arrives_whole(sbx: Sandbox):
    r = sbx.commands.run("head -c 3000000 /dev/zero | tr '\\0' 'x'; echo", timeout=30)
    assert len(r.stdout) == 3000001
    assert set(r.stdout[:-1]) == {"x"}


def test_binary_and_utf8_output(sbx: Sandbox):
    r = sbx.commands.run("printf 'h\\xc3\\xa9llo \\xe2\\x9c\\x93\\n'")
    assert r.stdout == "héllo ✓\n"


def test_nonzero_exit_raises_command_exit_exception(sbx: Sandbox):
    with pytest.raises(CommandExitException) as info:
        sbx.commands.run("echo partial; echo bad >&2; exit 3")
    e = info.value
    assert e.exit_code == 3
    assert e.stdout == "partial\n"
    assert e.stderr == "bad\n"


def test_envs_are_passed(sbx: Sandbox):
    r = sbx.commands.run('echo "$FOO|$BAR"', envs={"FOO": "foo value", "BAR": "a=b"})
    assert r.stdout == "foo value|a=b\n"


def test_default_environment(sbx: Sandbox, envd):
    r = sbx.commands.run('echo "$HOME|$USER|$PATH"')
    home, user, path = r.stdout.rstrip("\n").split("|")
    assert home == str(envd.home)
    assert user == "user"
    assert "/usr/bin" in path.split(":")


def test_cwd_absolute(sbx: Sandbox, work):
    assert sbx.commands.run("pwd", cwd=str(work)).stdout == f"{work}\n"


def test_cwd_relative_resolves_against_home(sbx: Sandbox, envd, work):
    assert sbx.commands.run("pwd", cwd=work.name).stdout == f"{work}\n"


def test_default_cwd_is_home(sbx: Sandbox, envd):
    assert sbx.commands.run("pwd").stdout == f"{envd.home}\n"


def test_bad_cwd_is_an_error(sbx: Sandbox, work):
    missing = work / "does-not-exist"
    with pytest.raises(SandboxException) as info:
        sbx.commands.run("pwd", cwd=str(missing))
    assert not isinstance(info.value, CommandExitException)
    assert "does-not-exist" in str(info.value)


def test_default_user_is_user(sbx: Sandbox):
    assert sbx.commands.run("id -u; id -g").stdout == "1000\n1000\n"


def test_user_root(sbx: Sandbox, envd):
    r = sbx.commands.run('id -u; echo "$HOME"; pwd', user="root")
    assert r.stdout == f"0\n{envd.root_home}\n{envd.root_home}\n"


def test_unknown_user_is_an_error(sbx: Sandbox):
    # Upstream envd answers `unauthenticated` for a user it does not know.
    with pytest.raises(AuthenticationException) as info:
        sbx.commands.run("true", user="nobody-such")
    assert "nobody-such" in str(info.value)


def test_stdin_closed_by_default(sbx: Sandbox):
    # Without stdin=True the command must see EOF at once, not hang.
    r = sbx.commands.run("cat; echo eof", timeout=10)
    assert r.stdout == "eof\n"


def test_background_wait(sbx: Sandbox):
    h = sbx.commands.run("sleep 0.3; echo done", background=True)
    assert h.pid > 0
    r = h.wait()
    assert r.stdout == "done\n"
    assert r.exit_code == 0


def test_background_kill(sbx: Sandbox):
    h = sbx.commands.run("sleep 30", background=True)
    assert pid_alive(h.pid)
    assert h.kill() is True
    with pytest.raises(CommandExitException) as info:
        h.wait()
    assert info.value.exit_code != 0
    assert wait_until(lambda: not pid_alive(h.pid))


def test_kill_by_pid_kills_the_whole_job(sbx: Sandbox):
    # The grandchild (sleep) must die with the shell.
    h = sbx.commands.run("sleep 30 & echo $!; wait", background=True)
    lines = []
    for out, _, _ in h:
        if out:
            lines.append(out)
            break
    child = int("".join(lines).strip())
    assert pid_alive(child)
    assert sbx.commands.kill(h.pid) is True
    assert wait_until(lambda: not pid_alive(child))


def test_kill_unknown_pid_returns_false(sbx: Sandbox):
    assert sbx.commands.kill(999_999_99) is False


def test_send_stdin(sbx: Sandbox):
    h = sbx.commands.run("read a; read b; echo got:$a:$b", background=True, stdin=True)
    sbx.commands.send_stdin(h.pid, "first\n")
    sbx.commands.send_stdin(h.pid, "second\n")
    assert h.wait().stdout == "got:first:second\n"


def test_send_stdin_unknown_pid(sbx: Sandbox):
    with pytest.raises(NotFoundException):
        sbx.commands.send_stdin(999_999_99, "x")


def test_timeout_raises_and_kills_the_process(sbx: Sandbox):
    h = sbx.commands.run("sleep 30", background=True, timeout=1)
    t0 = time.monotonic()
    with pytest.raises(TimeoutException):
        h.wait()
    assert time.monotonic() - t0 < 10
    # Connect-Timeout-Ms is the process's lifetime (protocol notes §4.8).
    assert wait_until(lambda: not pid_alive(h.pid)), "process outlived its timeout"
    # Listed until its output is drained (up to ~100 ms after the exit), then gone.
    assert wait_until(lambda: h.pid not in [p.pid for p in sbx.commands.list()])


def test_foreground_timeout(sbx: Sandbox):
    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 30", timeout=1)


def test_list_shows_running_commands(sbx: Sandbox, work):
    h = sbx.commands.run("sleep 30", background=True, envs={"MARK": "listed"}, cwd=str(work))
    try:
        procs = {p.pid: p for p in sbx.commands.list()}
        assert h.pid in procs
        p = procs[h.pid]
        assert p.cmd == "/bin/bash"
        assert p.args == ["-l", "-c", "sleep 30"]
        assert p.envs.get("MARK") == "listed"
        assert p.cwd == str(work)
    finally:
        h.kill()
    assert wait_until(lambda: h.pid not in [p.pid for p in sbx.commands.list()])


def test_connect_by_pid_gets_later_output(sbx: Sandbox):
    h = sbx.commands.run("sleep 0.5; echo later; exit 4", background=True)
    h.disconnect()
    h2 = sbx.commands.connect(h.pid)
    assert h2.pid == h.pid
    with pytest.raises(CommandExitException) as info:
        h2.wait()
    assert info.value.exit_code == 4
    assert "later\n" in info.value.stdout


def test_connect_unknown_pid(sbx: Sandbox):
    with pytest.raises(NotFoundException):
        sbx.commands.connect(999_999_99)


def test_process_survives_its_stream_being_closed(sbx: Sandbox, work):
    marker = work / "survived"
    h = sbx.commands.run(f"sleep 1; touch {marker}; sleep 30", background=True)
    h.disconnect()
    assert wait_until(lambda: marker.exists(), timeout=10), "background process died with its stream"
    assert h.pid in [p.pid for p in sbx.commands.list()]
    assert sbx.commands.kill(h.pid) is True


def test_two_listeners_see_the_same_output(sbx: Sandbox):
    h = sbx.commands.run("sleep 0.5; echo shared", background=True)
    h2 = sbx.commands.connect(h.pid)
    results = {}
    t = threading.Thread(target=lambda: results.setdefault("second", h2.wait()))
    t.start()
    results["first"] = h.wait()
    t.join(10)
    assert results["first"].stdout == "shared\n"
    assert results["second"].stdout == "shared\n"


def test_concurrent_runs(sbx: Sandbox):
    def one(i: int) -> str:
        return sbx.commands.run(f"echo {i}; sleep 0.2").stdout

    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(one, range(16)))
    assert outs == [f"{i}\n" for i in range(16)]


def test_exit_immediately(sbx: Sandbox):
    # A process that exits before the stream is even set up must still produce start + end.
    for _ in range(20):
        assert sbx.commands.run("true").exit_code == 0


def test_login_shell_reads_profile(sbx: Sandbox, envd, work):
    # `bash -l` sources ~/.bash_profile: proves the SDK's login shell runs with the right HOME.
    profile = envd.home / ".bash_profile"
    profile.write_text("export FROM_PROFILE=yes\n")
    os.chown(profile, 1000, 1000)
    try:
        assert sbx.commands.run("echo $FROM_PROFILE").stdout == "yes\n"
    finally:
        profile.unlink()


def test_detached_grandchild_outlives_the_command(sbx: Sandbox):
    # The usual way to start a server from an agent: the command returns at once, the server stays.
    t0 = time.monotonic()
    r = sbx.commands.run("sleep 30 >/dev/null 2>&1 & echo $!", timeout=20)
    assert time.monotonic() - t0 < 5, "run waited for a detached child"
    child = int(r.stdout)
    try:
        time.sleep(0.3)
        assert pid_alive(child), "detached child was killed when its parent command ended"
    finally:
        os.kill(child, 9)


def test_stdin_reaches_the_process_in_order(sbx: Sandbox):
    # Many writes split mid-line; `head` ends the input itself (the Python SDK cannot close stdin).
    h = sbx.commands.run("head -n 2000 | md5sum", background=True, stdin=True)
    lines = "".join(f"line {i}\n" for i in range(2000))
    for i in range(0, len(lines), 997):
        sbx.commands.send_stdin(h.pid, lines[i : i + 997])
    assert h.wait().stdout.split()[0] == hashlib.md5(lines.encode()).hexdigest()
