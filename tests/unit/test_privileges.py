"""privileges.py and the way export files are created (``capfile.private.create_private_file``):
what a refused capture says, who owns a file written under sudo, and that a symbolic link,
an existing file, a hard link or a FIFO at the target path is never written through."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conntui.capfile.errors import ExportError, ExportExists
from conntui.capfile.reader import read_capture
from conntui.capfile.writers import open_writer
from conntui.model import Frame
from conntui.privileges import (
    CAP_NET_ADMIN,
    CAP_NET_RAW,
    capture_denied_message,
    effective_capabilities,
    invoking_user,
    missing_capture_capabilities,
)

FRAME = Frame(1.0, bytes.fromhex("4500001400010000400600007f0000017f000001"), 101, "lo", 1, 0, 0x0800)


def status_file(tmp_path: Path, capeff: str) -> str:
    path = tmp_path / "status"
    path.write_text(
        f"Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t{capeff}\nCapBnd:\t000001ffffffffff\n"
    )
    return str(path)


def test_effective_capabilities_are_read_from_proc(tmp_path: Path) -> None:
    assert effective_capabilities(status_file(tmp_path, "000001ffffffffff")) == 0x1FFFFFFFFFF
    assert effective_capabilities(str(tmp_path / "missing")) is None
    assert isinstance(effective_capabilities(), int)  # this process's own


def test_missing_capabilities_are_named() -> None:
    raw, admin = 1 << CAP_NET_RAW, 1 << CAP_NET_ADMIN
    assert missing_capture_capabilities(raw | admin) == []
    assert missing_capture_capabilities(admin) == ["CAP_NET_RAW"]
    assert missing_capture_capabilities(0) == ["CAP_NET_RAW", "CAP_NET_ADMIN"]


def test_the_refusal_says_what_is_missing_and_how_to_run_it() -> None:
    line = capture_denied_message(["CAP_NET_RAW", "CAP_NET_ADMIN"])
    assert "\n" not in line
    assert "needs root" in line and "lacks CAP_NET_RAW and CAP_NET_ADMIN" in line
    assert "sudo conntui" in line and "-r needs no privileges" in line
    assert "lacks" not in capture_denied_message([])  # capabilities unknown: no guess


def test_invoking_user_comes_from_sudo_only_when_root() -> None:
    env = {"SUDO_UID": "1000", "SUDO_GID": "1001"}
    assert invoking_user(env, euid=0) == (1000, 1001)
    assert invoking_user({"SUDO_UID": "1000"}, euid=0) == (1000, -1)
    assert invoking_user(env, euid=1000) is None  # not root: nothing to hand over
    assert invoking_user({}, euid=0) is None
    assert invoking_user({"SUDO_UID": "0"}, euid=0) is None  # sudo from root
    for bad in ("", "-1", "1000; rm -rf /", "\uff11\uff10\uff10\uff10", "9" * 40, "1e3"):
        assert invoking_user({"SUDO_UID": bad}, euid=0) is None


# --------------------------------------------------------------------------- export files


@pytest.mark.parametrize("name", ["x.pcapng", "x.pcap"])
def test_new_file_is_private_whatever_the_umask(tmp_path: Path, name: str) -> None:
    old = os.umask(0)
    try:
        with open_writer(tmp_path / name) as w:
            w.write(FRAME)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert sum(1 for _ in read_capture(tmp_path / name)) == 1


def test_an_existing_file_is_kept_unless_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "old.pcapng"
    path.write_text("older capture")
    with pytest.raises(ExportExists) as e:
        open_writer(path)
    assert isinstance(e.value, ExportError)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert path.read_text() == "older capture"
    link = tmp_path / "hard-link"
    os.link(path, link)
    inode = path.stat().st_ino
    with open_writer(path, overwrite=True) as w:
        w.write(FRAME)
    assert path.stat().st_ino != inode  # a new file: the hard link keeps the old content
    assert link.read_text() == "older capture"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_symbolic_link_is_never_followed(tmp_path: Path, overwrite: bool) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "x.pcapng"
    link.symlink_to(victim)
    dangling = tmp_path / "y.pcapng"
    dangling.symlink_to(tmp_path / "would-be-created")
    for target in (link, dangling):
        with pytest.raises(ExportError, match="symbolic link"):
            open_writer(target, overwrite=overwrite)
    assert victim.read_text() == "precious"
    assert link.is_symlink() and dangling.is_symlink()
    assert not (tmp_path / "would-be-created").exists()


def test_only_regular_files_are_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ExportError, match="not a regular file"):
        open_writer(fifo, overwrite=True)  # never blocks opening a FIFO either
    with pytest.raises(ExportError):
        open_writer(tmp_path, overwrite=True)  # a directory


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_file_written_under_sudo_belongs_to_the_invoking_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUDO_UID", "65534")
    monkeypatch.setenv("SUDO_GID", "65534")
    open_writer(tmp_path / "theirs.pcapng").close()
    st = (tmp_path / "theirs.pcapng").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o600)
    monkeypatch.delenv("SUDO_UID")
    open_writer(tmp_path / "roots.pcapng").close()
    assert (tmp_path / "roots.pcapng").stat().st_uid == 0
