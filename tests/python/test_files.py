"""`sandbox.files` through the official Python SDK against a real arbor-envd."""

from __future__ import annotations

import io
import os
import stat
from datetime import datetime, timedelta

import pytest

from envd_harness import DEVS_GID, give_to_user
from novita_sandbox.core import FileNotFoundException, InvalidArgumentException, Sandbox, SandboxException
from novita_sandbox.core.sandbox.filesystem.filesystem import FileType, WriteEntry


# --- read / write ---------------------------------------------------------------------------------


def test_write_then_read_text(sbx: Sandbox, work):
    path = str(work / "hello.txt")
    info = sbx.files.write(path, "hello wörld\n")
    assert info.name == "hello.txt"
    assert info.path == path
    assert info.type == "file"
    assert sbx.files.read(path) == "hello wörld\n"
    assert (work / "hello.txt").read_text() == "hello wörld\n"


def test_write_then_read_bytes(sbx: Sandbox, work):
    data = bytes(range(256)) * 64
    path = str(work / "blob.bin")
    sbx.files.write(path, data)
    got = sbx.files.read(path, format="bytes")
    assert isinstance(got, bytearray)
    assert bytes(got) == data


def test_read_stream(sbx: Sandbox, work):
    data = os.urandom(3 * 1024 * 1024 + 17)
    (work / "big.bin").write_bytes(data)
    chunks = list(sbx.files.read(str(work / "big.bin"), format="stream"))
    assert b"".join(chunks) == data


def test_write_from_file_object(sbx: Sandbox, work):
    sbx.files.write(str(work / "from-io.bin"), io.BytesIO(b"\x00\x01io"))
    sbx.files.write(str(work / "from-textio.txt"), io.StringIO("text io"))
    assert (work / "from-io.bin").read_bytes() == b"\x00\x01io"
    assert (work / "from-textio.txt").read_text() == "text io"


def test_empty_file_round_trip(sbx: Sandbox, work):
    sbx.files.write(str(work / "empty"), b"")
    assert (work / "empty").stat().st_size == 0
    assert sbx.files.read(str(work / "empty")) == ""


def test_write_overwrites_and_truncates(sbx: Sandbox, work):
    path = str(work / "over.txt")
    sbx.files.write(path, "a much longer first version")
    sbx.files.write(path, "short")
    assert sbx.files.read(path) == "short"


def test_write_creates_parent_directories(sbx: Sandbox, work):
    path = work / "a" / "b" / "c" / "deep.txt"
    sbx.files.write(str(path), "deep")
    assert path.read_text() == "deep"
    # Created directories belong to the user too.
    assert (work / "a").stat().st_uid == 1000
    assert (work / "a" / "b" / "c").stat().st_uid == 1000


def test_written_files_belong_to_the_user(sbx: Sandbox, work):
    sbx.files.write(str(work / "mine.txt"), "x")
    st = (work / "mine.txt").stat()
    assert (st.st_uid, st.st_gid) == (1000, 1000)


def test_write_as_root(sbx: Sandbox, envd, work):
    sbx.files.write(str(work / "roots.txt"), "r", user="root")
    assert (work / "roots.txt").stat().st_uid == 0
    # root's relative paths resolve against root's home
    info = sbx.files.write("root-rel.txt", "r", user="root")
    assert info.path == str(envd.root_home / "root-rel.txt")
    assert (envd.root_home / "root-rel.txt").read_text() == "r"


def test_relative_path_resolves_against_home(sbx: Sandbox, envd, work):
    info = sbx.files.write(f"{work.name}/rel.txt", "rel")
    assert info.path == str(work / "rel.txt")
    assert sbx.files.read(f"{work.name}/rel.txt") == "rel"


def test_tilde_path(sbx: Sandbox, envd, work):
    sbx.files.write(f"~/{work.name}/tilde.txt", "t")
    assert (work / "tilde.txt").read_text() == "t"


def test_write_files_batch(sbx: Sandbox, work):
    infos = sbx.files.write_files(
        [
            WriteEntry(path=str(work / "one.txt"), data="1"),
            WriteEntry(path=str(work / "sub" / "two.bin"), data=b"\x02"),
            WriteEntry(path=str(work / "three.txt"), data=io.BytesIO(b"3")),
        ]
    )
    assert [i.path for i in infos] == [str(work / "one.txt"), str(work / "sub" / "two.bin"), str(work / "three.txt")]
    assert [i.name for i in infos] == ["one.txt", "two.bin", "three.txt"]
    assert (work / "one.txt").read_text() == "1"
    assert (work / "sub" / "two.bin").read_bytes() == b"\x02"
    assert (work / "three.txt").read_text() == "3"


def test_write_octet_stream(sbx: Sandbox, work):
    data = os.urandom(100_000)
    info = sbx.files.write(str(work / "octet.bin"), data, use_octet_stream=True)
    assert info.path == str(work / "octet.bin")
    assert (work / "octet.bin").read_bytes() == data


def test_write_octet_stream_gzip(sbx: Sandbox, work):
    data = b"compressible " * 10_000
    sbx.files.write(str(work / "gz.bin"), data, use_octet_stream=True, gzip=True)
    assert (work / "gz.bin").read_bytes() == data


def test_read_gzip(sbx: Sandbox, work):
    data = "zip me " * 10_000
    (work / "plain.txt").write_text(data)
    assert sbx.files.read(str(work / "plain.txt"), gzip=True) == data


def test_read_missing_file(sbx: Sandbox, work):
    with pytest.raises(FileNotFoundException):
        sbx.files.read(str(work / "nope.txt"))


def test_read_a_directory_is_an_error(sbx: Sandbox, work):
    with pytest.raises(SandboxException) as info:
        sbx.files.read(str(work))
    assert not isinstance(info.value, FileNotFoundException)


def test_read_without_permission(sbx: Sandbox, work):
    secret = work / "secret.txt"
    secret.write_text("top secret")
    os.chown(secret, 0, 0)
    os.chmod(secret, 0o600)
    with pytest.raises(SandboxException) as info:
        sbx.files.read(str(secret))
    assert "top secret" not in str(info.value)
    assert sbx.files.read(str(secret), user="root") == "top secret"


def test_write_without_permission(sbx: Sandbox, work):
    locked = work / "locked"
    locked.mkdir()
    os.chmod(locked, 0o755)  # owned by root: user cannot create entries in it
    with pytest.raises(SandboxException):
        sbx.files.write(str(locked / "x.txt"), "x")
    assert not (locked / "x.txt").exists()


# --- list / stat ----------------------------------------------------------------------------------


def make_tree(work):
    (work / "d1" / "d2" / "d3").mkdir(parents=True)
    (work / "f0.txt").write_text("0")
    (work / "d1" / "f1.txt").write_text("11")
    (work / "d1" / "d2" / "f2.txt").write_text("222")
    (work / "d1" / "d2" / "d3" / "f3.txt").write_text("3333")


def test_list_depth_1(sbx: Sandbox, work):
    make_tree(work)
    entries = sbx.files.list(str(work))
    by_name = {e.name: e for e in entries}
    assert set(by_name) == {"d1", "f0.txt"}
    assert by_name["d1"].type == FileType.DIR
    assert by_name["f0.txt"].type == FileType.FILE
    assert by_name["f0.txt"].path == str(work / "f0.txt")
    assert by_name["f0.txt"].size == 1


def test_list_depth_2_and_3(sbx: Sandbox, work):
    make_tree(work)
    paths2 = {e.path for e in sbx.files.list(str(work), depth=2)}
    assert paths2 == {str(work / p) for p in ["d1", "f0.txt", "d1/d2", "d1/f1.txt"]}
    paths3 = {e.path for e in sbx.files.list(str(work), depth=3)}
    assert paths3 == paths2 | {str(work / p) for p in ["d1/d2/d3", "d1/d2/f2.txt"]}


def test_list_depth_below_one_is_rejected_by_the_sdk(sbx: Sandbox, work):
    with pytest.raises(InvalidArgumentException):
        sbx.files.list(str(work), depth=0)


def test_list_missing_dir(sbx: Sandbox, work):
    with pytest.raises(FileNotFoundException):
        sbx.files.list(str(work / "nope"))


def test_list_a_file_is_an_error(sbx: Sandbox, work):
    (work / "f").write_text("x")
    with pytest.raises(SandboxException):
        sbx.files.list(str(work / "f"))


def test_list_reports_symlinks_with_target_type(sbx: Sandbox, work):
    (work / "target.txt").write_text("t")
    os.symlink(work / "target.txt", work / "link.txt")
    entries = {e.name: e for e in sbx.files.list(str(work))}
    # The novita SDKs drop entries of unknown type, so a symlink must come with its target's type.
    assert entries["link.txt"].type == FileType.FILE
    assert entries["link.txt"].symlink_target == str(work / "target.txt")
    assert entries["target.txt"].symlink_target is None


def test_exists(sbx: Sandbox, work):
    (work / "here.txt").write_text("x")
    assert sbx.files.exists(str(work / "here.txt")) is True
    assert sbx.files.exists(str(work)) is True
    assert sbx.files.exists(str(work / "not-here.txt")) is False


def test_get_info_file(sbx: Sandbox, work):
    p = work / "info.txt"
    p.write_text("12345")
    os.chown(p, 1000, 1000)
    os.chmod(p, 0o640)
    info = sbx.files.get_info(str(p))
    assert info.name == "info.txt"
    assert info.path == str(p)
    assert info.type == FileType.FILE
    assert info.size == 5
    assert stat.S_IMODE(info.mode) == 0o640
    assert info.permissions == "-rw-r-----"
    assert info.owner == "user"
    assert info.group == "user"
    assert abs(info.modified_time - datetime.utcfromtimestamp(p.stat().st_mtime)) < timedelta(seconds=2)
    assert info.symlink_target is None


def test_get_info_dir(sbx: Sandbox, work):
    info = sbx.files.get_info(str(work))
    assert info.type == FileType.DIR
    assert info.name == work.name
    assert info.permissions.startswith("d")


def test_get_info_root_owned(sbx: Sandbox, envd):
    info = sbx.files.get_info(str(envd.base / "etc"), user="root")
    assert info.owner == "root"
    assert info.group == "root"


def test_get_info_missing(sbx: Sandbox, work):
    with pytest.raises(FileNotFoundException):
        sbx.files.get_info(str(work / "missing"))


# --- make_dir / rename / remove -------------------------------------------------------------------


def test_make_dir_true_then_false(sbx: Sandbox, work):
    path = work / "newdir"
    assert sbx.files.make_dir(str(path)) is True
    assert path.is_dir()
    assert path.stat().st_uid == 1000
    assert sbx.files.make_dir(str(path)) is False


def test_make_dir_creates_parents(sbx: Sandbox, work):
    assert sbx.files.make_dir(str(work / "p" / "q" / "r")) is True
    assert (work / "p" / "q" / "r").is_dir()


def test_make_dir_over_a_file_is_an_error(sbx: Sandbox, work):
    (work / "plainfile").write_text("x")
    # Not False either: that would claim the directory exists.
    with pytest.raises(SandboxException):
        sbx.files.make_dir(str(work / "plainfile" / "sub"))


def test_rename(sbx: Sandbox, work):
    (work / "old.txt").write_text("moved")
    give_to_user(work)
    info = sbx.files.rename(str(work / "old.txt"), str(work / "new.txt"))
    assert info.path == str(work / "new.txt")
    assert info.name == "new.txt"
    assert info.type == FileType.FILE
    assert not (work / "old.txt").exists()
    assert (work / "new.txt").read_text() == "moved"


def test_rename_directory(sbx: Sandbox, work):
    (work / "dold").mkdir()
    (work / "dold" / "inner").write_text("i")
    give_to_user(work)
    info = sbx.files.rename(str(work / "dold"), str(work / "dnew"))
    assert info.type == FileType.DIR
    assert (work / "dnew" / "inner").read_text() == "i"


def test_rename_missing(sbx: Sandbox, work):
    with pytest.raises(FileNotFoundException):
        sbx.files.rename(str(work / "ghost"), str(work / "ghost2"))


def test_remove_file_and_dir(sbx: Sandbox, work):
    (work / "rm.txt").write_text("x")
    (work / "rmdir" / "sub").mkdir(parents=True)
    (work / "rmdir" / "sub" / "f").write_text("x")
    give_to_user(work)
    sbx.files.remove(str(work / "rm.txt"))
    sbx.files.remove(str(work / "rmdir"))
    assert not (work / "rm.txt").exists()
    assert not (work / "rmdir").exists()


def test_remove_without_permission(sbx: Sandbox, work):
    locked = work / "locked"
    locked.mkdir()
    (locked / "keep.txt").write_text("keep")
    os.chmod(locked, 0o755)  # root-owned
    with pytest.raises(SandboxException):
        sbx.files.remove(str(locked / "keep.txt"))
    assert (locked / "keep.txt").exists()


@pytest.mark.parametrize("name", ["with space.txt", "percent%20sign.txt", "hash#q?mark&amp=.txt", "ünïcödé ✓.txt", "+plus;semi,comma.txt"])
def test_names_that_need_url_encoding(sbx: Sandbox, work, name):
    path = str(work / name)
    info = sbx.files.write(path, name)
    assert info.path == path
    assert info.name == name
    assert (work / name).read_text() == name
    assert sbx.files.read(path) == name
    assert [e.name for e in sbx.files.list(str(work))] == [name]
    assert sbx.files.get_info(path).name == name


# --- the user's credentials are the kernel's to check ----------------------------------------------


def root_only(path, text="root only"):
    path.write_text(text)
    os.chown(path, 0, 0)
    os.chmod(path, 0o600)
    return path


def test_symlink_to_a_root_file_does_not_escalate(sbx: Sandbox, work):
    target = root_only(work.parent.parent.parent / f"{work.name}-root-file")
    os.symlink(target, work / "innocent.txt")
    os.lchown(work / "innocent.txt", 1000, 1000)
    with pytest.raises(SandboxException):
        sbx.files.read(str(work / "innocent.txt"))
    with pytest.raises(SandboxException):
        sbx.files.write(str(work / "innocent.txt"), "overwritten by user")
    assert target.read_text() == "root only"
    target.unlink()


def test_user_cannot_list_or_watch_a_private_dir(sbx: Sandbox, work):
    private = work / "private"
    private.mkdir(mode=0o700)
    (private / "x").write_text("x")
    with pytest.raises(SandboxException) as info:
        sbx.files.list(str(private))
    assert not isinstance(info.value, FileNotFoundException)
    with pytest.raises(SandboxException):
        sbx.files.watch_dir(str(private))
    assert [e.name for e in sbx.files.list(str(private), user="root")] == ["x"]


def test_user_cannot_create_in_or_move_into_a_root_dir(sbx: Sandbox, work):
    rootdir = work / "rootdir"
    rootdir.mkdir(mode=0o755)
    (work / "mine.txt").write_text("m")
    give_to_user(work / "mine.txt")
    with pytest.raises(SandboxException):
        sbx.files.make_dir(str(rootdir / "sub"))
    with pytest.raises(SandboxException):
        sbx.files.rename(str(work / "mine.txt"), str(rootdir / "mine.txt"))
    assert (work / "mine.txt").exists()
    assert sbx.files.make_dir(str(rootdir / "sub"), user="root") is True


def test_supplementary_groups_apply_to_files_and_processes(sbx: Sandbox, work):
    shared = work / "team.txt"
    shared.write_text("for devs")
    os.chown(shared, 0, DEVS_GID)
    os.chmod(shared, 0o640)
    assert sbx.files.read(str(shared)) == "for devs"
    assert sbx.commands.run(f"cat {shared}").stdout == "for devs"
    assert str(DEVS_GID) in sbx.commands.run("id -G").stdout.split()
