"""Pause/resume, auto-pause, auto-resume, idle timeout, clone and snapshots (issue 5), driven by the
official `novita-sandbox` Python SDK in the call forms of the product documents.

Every sandbox that matters here holds state that exists only in memory, started by `start_memory`:
- a Python REPL (`python3 -i`, started through envd with stdin) holding a variable `x` that was sent
  to it over stdin and never written anywhere;
- a shell loop counting in a shell variable (it writes each value out, but a restarted loop would
  start again from 1, and its pid would change);
- a process holding fd 3 on a file that was deleted: its content is reachable only through
  /proc/<pid>/fd/3;
- a TCP server listening on 127.0.0.1:7007 that answers each connection with a secret and the number
  of connections it has served, a number kept only in its memory.
`assert_memory_kept` then proves all four are the same processes with the same memory: the pids,
the REPL's `x`, the counter going on from where it was, the deleted file's content, and the TCP
server's connection count going on by exactly one per probe.
"""

from __future__ import annotations

import ast
import json
import secrets
import shlex
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Callable, List

import pytest

from novita_sandbox.core import Sandbox
from novita_sandbox.core.exceptions import NotFoundException, SandboxException, SandboxNotFoundException
from novita_sandbox.core.sandbox.sandbox_api import SandboxQuery, SandboxState

from server_harness import Server, start_server

MEM = "/home/user/mem"
TCP_PORT = 7007
# The smallest idle timeout the suite's server accepts (`--min-idle-timeout`).
MIN_IDLE = 2

TCP_SERVER = f"""
import os, socket, sys
secret = sys.argv[1]
hits = 0
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", {TCP_PORT}))
srv.listen(8)
with open("tcp.pid", "w") as f:
    f.write(str(os.getpid()))
while True:
    conn, _ = srv.accept()
    hits += 1
    with conn:
        conn.sendall(f"{{secret}} {{hits}}\\n".encode())
"""

HOLDER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.unlink(sys.argv[1])
with open("holder.pid", "w") as f:
    f.write(str(os.getpid()))
while True:
    time.sleep(3600)
"""

COUNTER = f"echo $$ > {MEM}/counter.pid; i=0; while :; do i=$((i+1)); echo $i > {MEM}/counter; sleep 0.1; done"

# Loaded into the REPL with exec: `dump(tag)` writes the tag and repr(x) to repl.out atomically.
REPL_LIB = f"""
import os
def dump(tag):
    with open("{MEM}/repl.tmp", "w") as f:
        f.write(tag + " " + repr(x))
    os.replace("{MEM}/repl.tmp", "{MEM}/repl.out")
"""

PROBE = f"""
import json, os, socket, time
def read(name):
    for _ in range(100):
        try:
            value = open("{MEM}/" + name).read().strip()
            if value:
                return value
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    raise SystemExit(name + " never appeared")
out = {{}}
for name in ("counter", "holder", "tcp"):
    pid = int(read(name + ".pid"))
    out[name + "_pid"] = pid if os.path.exists(f"/proc/{{pid}}") else None
first = int(read("counter"))
time.sleep(0.4)
out["counter"] = [first, int(read("counter"))]
with open(f"/proc/{{out['holder_pid']}}/fd/3") as f:
    out["held"] = f.read()
with socket.create_connection(("127.0.0.1", {TCP_PORT}), timeout=5) as s:
    out["tcp"] = s.makefile().readline().strip()
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Memory:
    """What a sandbox's probe processes hold in memory, as last seen by the test."""

    repl_pid: int
    counter_pid: int
    holder_pid: int
    tcp_pid: int
    counter: int  # the last counter value seen
    hits: int  # connections the TCP server has served
    secret: str  # the TCP server's answer and the deleted file's content
    x: str  # the REPL's variable


def run(sbx: Sandbox, cmd: str, **kw) -> str:
    return sbx.commands.run(cmd, **kw).stdout


def probe(sbx: Sandbox) -> dict:
    return json.loads(run(sbx, f"python3 {MEM}/probe.py"))


def repl_send(sbx: Sandbox, pid: int, line: str) -> None:
    sbx.commands.send_stdin(pid, line + "\n")


def repl_x(sbx: Sandbox, pid: int) -> str:
    """The REPL's `x`, asked through its stdin (envd keeps the pipe, so this works after a restore)."""
    tag = secrets.token_hex(4)
    repl_send(sbx, pid, f"dump({tag!r})")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = run(sbx, f"cat {MEM}/repl.out 2>/dev/null || true")
        if out.startswith(tag + " "):
            return ast.literal_eval(out[len(tag) + 1 :])
        time.sleep(0.05)
    raise AssertionError(f"the REPL (pid {pid}) did not answer")


def start_memory(sbx: Sandbox) -> Memory:
    """Starts the four probes in `sbx` and returns what they hold."""
    secret = secrets.token_hex(12)
    x = "x-" + secrets.token_hex(12)
    sbx.files.write(f"{MEM}/tcp_server.py", TCP_SERVER)
    sbx.files.write(f"{MEM}/holder.py", HOLDER)
    sbx.files.write(f"{MEM}/repl_lib.py", REPL_LIB)
    sbx.files.write(f"{MEM}/probe.py", PROBE)
    sbx.files.write(f"{MEM}/held.txt", secret)
    run(
        sbx,
        f"cd {MEM} && "
        f"(setsid python3 tcp_server.py {secret} </dev/null >/dev/null 2>&1 &) && "
        f"(setsid python3 holder.py held.txt </dev/null >/dev/null 2>&1 &) && "
        f"(setsid sh -c {shlex.quote(COUNTER)} </dev/null >/dev/null 2>&1 &)",
    )
    repl = sbx.commands.run("python3 -q -i -u", background=True, stdin=True, timeout=0, cwd=MEM)
    repl.disconnect()
    repl_send(sbx, repl.pid, f"exec(open({MEM + '/repl_lib.py'!r}).read())")
    repl_send(sbx, repl.pid, f"x = {x!r}")
    assert repl_x(sbx, repl.pid) == x
    deadline = time.monotonic() + 10
    while True:
        seen = probe(sbx)
        if seen["counter"][0] >= 3 or time.monotonic() > deadline:
            break
    assert seen["held"] == secret and all(seen[k] for k in ("counter_pid", "holder_pid", "tcp_pid")), seen
    hits = int(seen["tcp"].split()[1])
    return Memory(repl.pid, seen["counter_pid"], seen["holder_pid"], seen["tcp_pid"], seen["counter"][1], hits,
                  secret, x)


def assert_memory_kept(sbx: Sandbox, before: Memory) -> Memory:
    """Asserts that `sbx` runs the same probe processes with the memory of `before`; returns what they
    hold now (the TCP server has served one more connection, the counter moved on)."""
    seen = probe(sbx)
    pids = {k: seen[k] for k in ("counter_pid", "holder_pid", "tcp_pid")}
    assert pids == {"counter_pid": before.counter_pid, "holder_pid": before.holder_pid,
                    "tcp_pid": before.tcp_pid}, (seen, before)
    first, second = seen["counter"]
    assert first >= before.counter, f"the counter restarted: {first} after {before.counter}"
    assert second > first, f"the counter stopped at {first}"
    assert seen["held"] == before.secret
    assert seen["tcp"] == f"{before.secret} {before.hits + 1}", (seen["tcp"], before.hits)
    assert repl_x(sbx, before.repl_pid) == before.x
    return replace(before, counter=second, hits=before.hits + 1)


def state_of(sbx_id: str, opts: dict) -> str:
    return Sandbox.get_info(sbx_id, **opts).state.value


def wait_for(what: str, cond: Callable[[], bool], timeout: float, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def gone(sbx_id: str, opts: dict) -> bool:
    try:
        Sandbox.get_info(sbx_id, **opts)
        return False
    except NotFoundException:
        return True


def seconds_left(sbx: Sandbox) -> float:
    return (sbx.get_info().end_at - datetime.now(timezone.utc)).total_seconds()


def listed_ids(opts: dict, state: List[SandboxState] | None = None) -> set:
    pages = Sandbox.list(query=SandboxQuery(state=state or [SandboxState.RUNNING, SandboxState.PAUSED]),
                         limit=100, **opts)
    ids = set()
    while pages.has_next:
        ids |= {s.sandbox_id for s in pages.next_items()}
    return ids


def snapshot_ids(opts: dict, **kw) -> List[str]:
    pages = Sandbox.list_snapshots(**kw, **opts)
    found: List[str] = []
    while pages.has_next:
        found += [s.snapshot_id for s in pages.next_items()]
    return found


@pytest.fixture(scope="module")
def server():
    # No pause grace: every pause writes its checkpoint and releases the sandbox at once, so every
    # resume below is a real restore from the images (a resume within the grace is only a thaw; the
    # small server's test covers that).
    srv = start_server(min_idle_timeout=MIN_IDLE, pause_grace=0)
    yield srv
    srv.teardown()


@pytest.fixture(scope="module")
def opts(server: Server) -> dict:
    return server.sdk_opts()


@pytest.fixture
def made(opts):
    """Sandboxes a test creates, killed after it whatever happened."""
    sandboxes: List[Sandbox] = []
    yield sandboxes
    for sbx in sandboxes:
        Sandbox.kill(sbx.sandbox_id, **opts)


def create(made: List[Sandbox], opts: dict, **kw) -> Sandbox:
    sbx = Sandbox.create(**{"timeout": 300, **kw}, **opts)
    made.append(sbx)
    return sbx


def test_pause_and_connect_keep_memory_files_and_timeouts(server: Server, opts, made):
    sbx = create(made, opts, timeout=200)
    mem = start_memory(sbx)
    sbx.files.write("/home/user/kept.txt", "a file from before the pause\n")

    sbx.beta_pause()
    assert state_of(sbx.sandbox_id, opts) == "paused"
    assert sbx.sandbox_id in listed_ids(opts, [SandboxState.PAUSED])
    assert sbx.sandbox_id not in listed_ids(opts, [SandboxState.RUNNING])
    # Pausing a paused sandbox: 409 with an error body, which the SDK takes as "already paused".
    with server.api() as api:
        again = api.post(f"/sandboxes/{sbx.sandbox_id}/pause")
        assert again.status_code == 409 and again.json()["code"] == 409, again.text
    sbx.beta_pause()
    Sandbox.pause(sbx.sandbox_id, **opts)

    # The documented resume: connect() on the same object; its envd token must still work.
    assert sbx.connect() is sbx
    assert state_of(sbx.sandbox_id, opts) == "running"
    assert 290 <= seconds_left(sbx) <= 301, "a resume resets the timeout to 5 minutes"
    mem = assert_memory_kept(sbx, mem)
    assert sbx.files.read("/home/user/kept.txt") == "a file from before the pause\n"

    # The static forms, and a resume with a timeout of its own.
    Sandbox.beta_pause(sbx.sandbox_id, **opts)
    assert state_of(sbx.sandbox_id, opts) == "paused"
    resumed = Sandbox.connect(sbx.sandbox_id, timeout=120, **opts)
    assert resumed.sandbox_id == sbx.sandbox_id
    assert 110 <= seconds_left(resumed) <= 121
    mem = assert_memory_kept(resumed, mem)
    # Connect on a running sandbox is not a resume: the processes simply go on.
    Sandbox.connect(sbx.sandbox_id, **opts)
    assert_memory_kept(sbx, mem)

    # A paused sandbox can be killed; then it is gone for every call.
    sbx.pause()
    assert sbx.kill() is True
    assert gone(sbx.sandbox_id, opts)
    assert sbx.sandbox_id not in listed_ids(opts)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(sbx.sandbox_id, **opts)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.beta_pause(sbx.sandbox_id, **opts)
    assert Sandbox.kill(sbx.sandbox_id, **opts) is False


def assert_clones_diverge(origin_mem: Memory, clones: List[Sandbox]) -> None:
    """Each clone changes a file and its REPL variable; none sees the others' changes."""
    for i, c in enumerate(clones):
        c.files.write("/home/user/branch.txt", f"clone {i}\n")
        c.files.write(f"/home/user/only-{i}.txt", c.sandbox_id)
        repl_send(c, origin_mem.repl_pid, f"x = x + '+{i}'")
    for i, c in enumerate(clones):
        assert c.files.read("/home/user/branch.txt") == f"clone {i}\n"
        others = [j for j in range(len(clones)) if j != i]
        assert not any(c.files.exists(f"/home/user/only-{j}.txt") for j in others)
        assert repl_x(c, origin_mem.repl_pid) == origin_mem.x + f"+{i}"


def test_three_clones_of_a_running_origin(opts, made):
    origin = create(made, opts, timeout=200)
    mem = start_memory(origin)
    origin.files.write("/home/user/base.txt", "baseline\n")

    result = Sandbox.clone(origin.sandbox_id, 3, **opts)
    made.extend(result)
    assert result.count == 3 and len(result) == 3
    assert result.snapshot_template_id
    ids = [c.sandbox_id for c in result]
    assert len(set(ids)) == 3 and origin.sandbox_id not in ids

    assert state_of(origin.sandbox_id, opts) == "running"
    for c in result:
        assert state_of(c.sandbox_id, opts) == "running"
        # A running origin's clones inherit its timeout.
        assert 150 <= seconds_left(c) <= 201
        assert c.files.read("/home/user/base.txt") == "baseline\n"
        assert_memory_kept(c, mem)
    # The origin goes on by itself: its server has served one probe more than at the clone.
    mem = assert_memory_kept(origin, mem)
    assert_clones_diverge(mem, list(result))
    assert not origin.files.exists("/home/user/branch.txt")
    assert_memory_kept(origin, mem)
    assert listed_ids(opts) >= {origin.sandbox_id, *ids}


# A connection inside the sandbox (a client and its echo server on 127.0.0.1) and a file lock, held
# by one process that pings through the connection every 0.1 s and logs each answer; it stops at the
# first failure and never reconnects.
CONNECTED = """
import fcntl, socket, threading, time
lock = open("/home/user/lockfile", "w")
fcntl.flock(lock, fcntl.LOCK_EX)
srv = socket.socket(); srv.bind(("127.0.0.1", 7100)); srv.listen(1)
def echo():
    conn, _ = srv.accept()
    while data := conn.recv(64):
        conn.sendall(data)
threading.Thread(target=echo, daemon=True).start()
client = socket.create_connection(("127.0.0.1", 7100))
n = 0
while True:
    n += 1
    try:
        client.sendall(b"%d" % n)
        line = "ok %d" % n if client.recv(64) == b"%d" % n else "wrong answer"
    except OSError as e:
        line = "failed: %s" % e
    with open("/home/user/connected.log", "w") as f:
        f.write(line)
    if not line.startswith("ok"):
        break
    time.sleep(0.1)
"""


def pings(sbx: Sandbox) -> int:
    """The last ping answered through the connection (fails if the connection broke)."""
    line = run(sbx, "cat /home/user/connected.log").strip()
    assert line.startswith("ok "), line
    return int(line.split()[1])


def assert_connected(sbx: Sandbox) -> None:
    first = pings(sbx)
    time.sleep(0.5)
    assert pings(sbx) > first, "pings go on over the same connection"
    # The lock is still held by the same process.
    assert run(sbx, "flock -n /home/user/lockfile true && echo free || echo held").strip() == "held"


def test_connections_inside_and_file_locks_survive_pause_resume_and_clones(opts, made):
    """As a VM snapshot keeps them: a client and its server in the same sandbox stay connected
    across a pause and in clones (CRIU --tcp-established), and file locks stay held (--file-locks)."""
    sbx = create(made, opts, timeout=200)
    sbx.files.write("/home/user/connected.py", CONNECTED)
    sbx.commands.run("python3 /home/user/connected.py", background=True)
    deadline = time.monotonic() + 10
    while "ok" not in run(sbx, "cat /home/user/connected.log 2>/dev/null || true"):
        assert time.monotonic() < deadline, "the pinger never started"
        time.sleep(0.1)
    assert_connected(sbx)
    sbx.beta_pause()
    sbx.connect()
    assert_connected(sbx)
    clones = Sandbox.clone(sbx.sandbox_id, 2, **opts)
    made.extend(clones)
    for c in clones:
        assert_connected(c)
    assert_connected(sbx)


def test_three_clones_of_a_paused_origin_and_their_snapshot(opts, made):
    origin = create(made, opts)
    mem = start_memory(origin)
    origin.beta_pause()

    result = origin.clone(origin.sandbox_id, count=3, strict=True, **opts)
    made.extend(result)
    assert result.count == 3
    assert state_of(origin.sandbox_id, opts) == "paused", "cloning a paused origin does not start it"
    for c in result:
        assert state_of(c.sandbox_id, opts) == "running"
        assert 290 <= seconds_left(c) <= 301, "a paused origin's clones get 5 minutes"
        assert_memory_kept(c, mem)
    assert_clones_diverge(mem, list(result))

    # The clone's snapshot cannot be deleted while the origin or any clone exists.
    snap = result.snapshot_template_id
    for c in result:
        with pytest.raises(SandboxException):
            Sandbox.delete_snapshot(snap, **opts)
        c.kill()
    with pytest.raises(SandboxException):
        Sandbox.delete_snapshot(snap, **opts)
    # A snapshot of the paused origin leaves it paused and starts sandboxes with its memory.
    paused_snap = Sandbox.create_snapshot(origin.sandbox_id, **opts)
    assert state_of(origin.sandbox_id, opts) == "paused"
    child = create(made, opts, template=paused_snap.snapshot_id)
    assert_memory_kept(child, mem)
    child.kill()
    assert Sandbox.delete_snapshot(paused_snap.snapshot_id, **opts) is True

    # The origin, still paused, resumes with its memory as at the pause.
    origin.connect()
    assert_memory_kept(origin, mem)
    assert not origin.files.exists("/home/user/branch.txt")
    origin.kill()
    assert Sandbox.delete_snapshot(snap, **opts) is True
    assert Sandbox.delete_snapshot(snap, **opts) is False


def test_snapshots_create_list_start_from_and_delete(opts, made):
    origin = create(made, opts)
    mem = start_memory(origin)
    origin.files.write("/home/user/status.txt", "ready\n")
    before = set(snapshot_ids(opts))

    # What the processes hold when the first snapshot is taken (nothing probes them until then).
    at_first = mem
    first = origin.create_snapshot()
    assert state_of(origin.sandbox_id, opts) == "running", "the origin continues after a snapshot"
    mem = assert_memory_kept(origin, mem)
    second = Sandbox.create_snapshot(origin.sandbox_id, **opts)
    assert first.snapshot_id and second.snapshot_id and first.snapshot_id != second.snapshot_id
    mem = assert_memory_kept(origin, mem)

    # Listing: this sandbox's (instance form, one per page), by sandbox id, and all.
    pages = origin.list_snapshots(limit=1)
    seen, count = [], 0
    while pages.has_next:
        page = pages.next_items()
        assert len(page) <= 1
        seen += [s.snapshot_id for s in page]
        count += 1
    assert count >= 2 and sorted(seen) == sorted([first.snapshot_id, second.snapshot_id])
    by_id = snapshot_ids(opts, sandbox_id=origin.sandbox_id, limit=1)
    assert sorted(by_id) == sorted([first.snapshot_id, second.snapshot_id])
    assert set(snapshot_ids(opts)) == before | {first.snapshot_id, second.snapshot_id}

    # A sandbox from the first snapshot has the origin's files and memory as they were then.
    child = create(made, opts, template=first.snapshot_id)
    assert child.sandbox_id != origin.sandbox_id
    assert run(child, "cat /home/user/status.txt") == "ready\n"
    assert_memory_kept(child, at_first)
    child.files.write("/home/user/status.txt", "child\n")
    assert origin.files.read("/home/user/status.txt") == "ready\n"

    # Killing the origin keeps its snapshots; deletion is refused while a sandbox runs from one.
    origin.kill()
    assert set(snapshot_ids(opts)) >= {first.snapshot_id, second.snapshot_id}
    with pytest.raises(SandboxException):
        Sandbox.delete_snapshot(first.snapshot_id, **opts)
    again = create(made, opts, template=first.snapshot_id)
    assert_memory_kept(again, at_first)
    child.kill()
    again.kill()
    assert Sandbox.delete_snapshot(first.snapshot_id, **opts) is True
    assert Sandbox.delete_snapshot(second.snapshot_id, **opts) is True
    assert Sandbox.delete_snapshot(first.snapshot_id, **opts) is False
    assert set(snapshot_ids(opts)) == before
    with pytest.raises(SandboxException):
        Sandbox.create(template=first.snapshot_id, **opts)


def test_auto_pause_on_timeout_keeps_memory_and_stays_on(opts, made):
    sbx = create(made, opts, timeout=60, auto_pause=True)
    mem = start_memory(sbx)
    sbx.set_timeout(3)
    wait_for("the auto-pause", lambda: state_of(sbx.sandbox_id, opts) == "paused", 15)
    assert sbx.sandbox_id in listed_ids(opts, [SandboxState.PAUSED])

    resumed = Sandbox.connect(sbx.sandbox_id, timeout=3, **opts)
    mem = assert_memory_kept(resumed, mem)
    # The resumed sandbox keeps auto-pause: its next timeout pauses it again instead of killing it.
    wait_for("the second auto-pause", lambda: state_of(sbx.sandbox_id, opts) == "paused", 15)
    resumed = Sandbox.connect(sbx.sandbox_id, timeout=60, **opts)
    mem = assert_memory_kept(resumed, mem)

    # Clones do not inherit auto-pause: a clone's timeout kills it.
    clone = Sandbox.clone(sbx.sandbox_id, count=1, strict=True, timeout=5, **opts)[0]
    made.append(clone)
    assert_memory_kept(clone, mem)
    wait_for("the clone's timeout to kill it", lambda: gone(clone.sandbox_id, opts), 15)


def test_auto_resume_by_command_and_by_file_read(opts, made):
    sbx = create(made, opts, metadata={"auto_resume": "true"})
    mem = start_memory(sbx)
    sbx.files.write("/home/user/note.txt", "read me while paused\n")

    sbx.beta_pause()
    assert state_of(sbx.sandbox_id, opts) == "paused"
    # Any operation on the paused sandbox resumes it: here a command ...
    assert run(sbx, "cat /home/user/note.txt") == "read me while paused\n"
    assert state_of(sbx.sandbox_id, opts) == "running"
    assert 290 <= seconds_left(sbx) <= 301
    mem = assert_memory_kept(sbx, mem)

    # ... and here a file read.
    sbx.beta_pause()
    assert state_of(sbx.sandbox_id, opts) == "paused"
    assert sbx.files.read("/home/user/note.txt") == "read me while paused\n"
    assert state_of(sbx.sandbox_id, opts) == "running"
    mem = assert_memory_kept(sbx, mem)

    # Clones inherit auto-resume.
    clone = Sandbox.clone(sbx.sandbox_id, 1, **opts)[0]
    made.append(clone)
    clone.beta_pause()
    assert clone.files.read("/home/user/note.txt") == "read me while paused\n"
    assert state_of(clone.sandbox_id, opts) == "running"
    assert_memory_kept(clone, mem)

    # The lifecycle form (autoResume.enabled in the create body), after an auto-pause.
    life = create(made, opts, timeout=60, lifecycle={"on_timeout": "pause", "auto_resume": True})
    life.files.write("/home/user/life.txt", "lifecycle\n")
    life.set_timeout(3)
    wait_for("the auto-pause", lambda: state_of(life.sandbox_id, opts) == "paused", 15)
    assert life.files.read("/home/user/life.txt") == "lifecycle\n"
    assert state_of(life.sandbox_id, opts) == "running"


def test_without_auto_resume_a_paused_sandbox_is_not_resumed_by_use(opts, made):
    sbx = create(made, opts)
    sbx.beta_pause()
    with pytest.raises(Exception):
        sbx.commands.run("true", request_timeout=10)
    assert state_of(sbx.sandbox_id, opts) == "paused"


def test_idle_timeout(opts, made):
    idle = MIN_IDLE + 1
    busy = create(made, opts, timeout=120, metadata={"idle_timeout": str(idle)})
    quiet = create(made, opts, timeout=120, metadata={"idle_timeout": str(idle)})
    # Operations keep `busy` alive well past its idle timeout ...
    until = time.monotonic() + 2 * idle + 1
    while time.monotonic() < until:
        assert run(busy, "echo ok") == "ok\n"
        busy.files.write("/home/user/tick", str(time.monotonic()))
        time.sleep(0.5)
    assert state_of(busy.sandbox_id, opts) == "running"
    # ... while `quiet`, untouched since its creation, was killed (get_info does not reach a sandbox).
    assert gone(quiet.sandbox_id, opts)
    wait_for("the idle kill", lambda: gone(busy.sandbox_id, opts), idle + 5)

    for bad in [str(MIN_IDLE - 1), "0", "-5", "soon"]:
        with pytest.raises(SandboxException, match="400"):
            Sandbox.create(timeout=30, metadata={"idle_timeout": bad}, **opts)


def test_unknown_and_bad_requests(server: Server, opts, made):
    unknown = "doesnotexist000000000"
    for call in (
        lambda: Sandbox.connect(unknown, **opts),
        lambda: Sandbox.beta_pause(unknown, **opts),
        lambda: Sandbox.clone(unknown, 1, **opts),
        lambda: Sandbox.create_snapshot(unknown, **opts),
    ):
        with pytest.raises(SandboxNotFoundException):
            call()
    assert Sandbox.delete_snapshot("no-such-snapshot", **opts) is False
    assert snapshot_ids(opts, sandbox_id=unknown) == []

    sbx = create(made, opts, timeout=60)
    with server.api() as api:
        for body in [{"count": 0}, {"count": -1}, {"count": "two"}, {"count": 1, "timeout": -5}]:
            res = api.post(f"/sandboxes/{sbx.sandbox_id}/clone", json=body)
            assert res.status_code == 400 and res.json()["code"] == 400, (body, res.status_code, res.text)
        res = api.get("/snapshots", params={"nextToken": "garbage"})
        assert res.status_code == 400 and res.json()["code"] == 400, res.text


@pytest.fixture(scope="module")
def small_server():
    """A server allowing 3 running sandboxes and keeping paused ones for 3 seconds, with the default
    pause grace (a paused sandbox stays frozen in memory for 10 s)."""
    srv = start_server(max_sandboxes=3, paused_retention=3)
    yield srv
    srv.teardown()


def test_strict_clone_failure_leaves_nothing_behind(small_server: Server):
    opts = small_server.sdk_opts()
    origin = Sandbox.create(timeout=120, **opts)
    try:
        mem = start_memory(origin)
        sandboxes, snapshots = listed_ids(opts), set(snapshot_ids(opts))
        # Above the quota, and within it but beyond what is free (one of three runs): all or nothing.
        for count in (4, 3):
            with pytest.raises(SandboxException):
                Sandbox.clone(origin.sandbox_id, count, strict=True, **opts)
            assert listed_ids(opts) == sandboxes
            assert set(snapshot_ids(opts)) == snapshots
        mem = assert_memory_kept(origin, mem)
        # Not strict: what fits.
        partial = Sandbox.clone(origin.sandbox_id, 3, strict=False, **opts)
        assert partial.count == len(partial) == 2
        for c in partial:
            assert_memory_kept(c, mem)
            c.kill()
    finally:
        origin.kill()


def test_paused_sandboxes_expire_after_the_retention(small_server: Server):
    opts = small_server.sdk_opts()
    sbx = Sandbox.create(timeout=120, **opts)
    sbx.beta_pause()
    assert state_of(sbx.sandbox_id, opts) == "paused"
    wait_for("the paused sandbox to expire", lambda: gone(sbx.sandbox_id, opts), 15)
    assert sbx.sandbox_id not in listed_ids(opts)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(sbx.sandbox_id, **opts)


def test_a_quick_resume_within_the_pause_grace(small_server: Server):
    opts = small_server.sdk_opts()
    sbx = Sandbox.create(timeout=120, **opts)
    try:
        mem = start_memory(sbx)
        sbx.beta_pause()
        assert state_of(sbx.sandbox_id, opts) == "paused"
        sbx.connect()
        mem = assert_memory_kept(sbx, mem)
        clone = Sandbox.clone(sbx.sandbox_id, 1, **opts)[0]
        assert_memory_kept(clone, mem)
        clone.kill()
    finally:
        sbx.kill()
