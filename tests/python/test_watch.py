"""Directory watching: the sync SDK polls (CreateWatcher/GetWatcherEvents/RemoveWatcher), the async
SDK streams (WatchDir)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from novita_sandbox.core import AsyncSandbox, FileNotFoundException, Sandbox, SandboxException, TimeoutException
from novita_sandbox.core.sandbox.filesystem.watch_handle import FilesystemEventType as T


def poll_events(handle, want: set, timeout: float = 5.0) -> set:
    """Polls until every (name, type) in `want` was seen; returns all that was seen."""
    seen = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen |= {(e.name, e.type) for e in handle.get_new_events()}
        if want <= seen:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"missing events {want - seen}; saw {seen}")


def test_sync_watch_create_write_remove(sbx: Sandbox, work):
    h = sbx.files.watch_dir(str(work))
    try:
        sbx.files.write(str(work / "w.txt"), "one")
        poll_events(h, {("w.txt", T.CREATE), ("w.txt", T.WRITE)})
        (work / "w.txt").write_text("two")
        poll_events(h, {("w.txt", T.WRITE)})
        os.chmod(work / "w.txt", 0o600)
        poll_events(h, {("w.txt", T.CHMOD)})
        os.rename(work / "w.txt", work / "w2.txt")
        poll_events(h, {("w.txt", T.RENAME), ("w2.txt", T.CREATE)})
        sbx.files.remove(str(work / "w2.txt"))
        poll_events(h, {("w2.txt", T.REMOVE)})
    finally:
        h.stop()


def test_sync_watch_events_are_not_repeated(sbx: Sandbox, work):
    h = sbx.files.watch_dir(str(work))
    try:
        (work / "once.txt").write_text("x")
        poll_events(h, {("once.txt", T.CREATE)})
        time.sleep(0.2)
        assert ("once.txt", T.CREATE) not in {(e.name, e.type) for e in h.get_new_events()}
    finally:
        h.stop()


def test_sync_watch_not_recursive_by_default(sbx: Sandbox, work):
    (work / "sub").mkdir()
    h = sbx.files.watch_dir(str(work))
    try:
        (work / "sub" / "inner.txt").write_text("x")
        (work / "top.txt").write_text("x")
        seen = poll_events(h, {("top.txt", T.CREATE)})
        time.sleep(0.2)
        seen |= {(e.name, e.type) for e in h.get_new_events()}
        assert not any("inner.txt" in name for name, _ in seen), seen
    finally:
        h.stop()


def test_sync_watch_recursive(sbx: Sandbox, work):
    (work / "sub").mkdir()
    h = sbx.files.watch_dir(str(work), recursive=True)
    try:
        (work / "sub" / "inner.txt").write_text("x")
        poll_events(h, {("sub/inner.txt", T.CREATE)})
        # A directory created after the watch started is watched too.
        (work / "later").mkdir()
        poll_events(h, {("later", T.CREATE)})
        time.sleep(0.1)
        (work / "later" / "deep.txt").write_text("x")
        poll_events(h, {("later/deep.txt", T.CREATE)})
    finally:
        h.stop()


def test_sync_watch_stop(sbx: Sandbox, work):
    h = sbx.files.watch_dir(str(work))
    h.stop()
    with pytest.raises(SandboxException):
        h.get_new_events()


def test_sync_watch_missing_dir(sbx: Sandbox, work):
    with pytest.raises(FileNotFoundException):
        sbx.files.watch_dir(str(work / "nope"))


def test_sync_watch_a_file_is_an_error(sbx: Sandbox, work):
    (work / "f.txt").write_text("x")
    with pytest.raises(SandboxException):
        sbx.files.watch_dir(str(work / "f.txt"))


async def wait_for(events: list, want: set, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if want <= {(e.name, e.type) for e in events}:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"missing events {want - {(e.name, e.type) for e in events}}; saw {events}")


async def test_async_watch_streams_events(asbx: AsyncSandbox, work):
    events = []
    h = await asbx.files.watch_dir(str(work), on_event=events.append, timeout=30)
    try:
        await asbx.files.write(str(work / "a.txt"), "a")
        await wait_for(events, {("a.txt", T.CREATE)})
        await asbx.files.make_dir(str(work / "adir"))
        await wait_for(events, {("adir", T.CREATE)})
        await asbx.files.remove(str(work / "a.txt"))
        await wait_for(events, {("a.txt", T.REMOVE)})
    finally:
        await h.stop()


async def test_async_watch_recursive(asbx: AsyncSandbox, work):
    (work / "s").mkdir()
    events = []
    h = await asbx.files.watch_dir(str(work), on_event=events.append, recursive=True, timeout=30)
    try:
        (work / "s" / "x.txt").write_text("x")
        await wait_for(events, {("s/x.txt", T.CREATE)})
    finally:
        await h.stop()


async def test_async_watch_ends_with_timeout(asbx: AsyncSandbox, work):
    exits = []
    await asbx.files.watch_dir(str(work), on_event=lambda e: None, on_exit=exits.append, timeout=1)
    deadline = time.monotonic() + 10
    while not exits and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert exits, "watch stream did not end after its timeout"
    assert isinstance(exits[0], TimeoutException), exits


async def test_async_watch_missing_dir(asbx: AsyncSandbox, work):
    with pytest.raises(FileNotFoundException):
        await asbx.files.watch_dir(str(work / "nope"), on_event=lambda e: None)
