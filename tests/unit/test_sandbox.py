"""``privsep.sandbox.confine``: what a confined process keeps and what the kernel refuses it.

Each check runs ``confine`` in a forked child (it is for good) and reads the result from
the child's ``/proc/self/status`` and from the errors real system calls return. Needs root
(the drop of a capability one does not hold proves nothing), as CI runs it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conntui.privsep import sandbox


def _in_confined_child(
    body: Callable[[], dict[str, Any]], writable: list[str] | None = None
) -> dict[str, Any]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out: dict[str, Any] = {"confinement": sandbox.confine(writable or []).__dict__}
            out.update(body())
        except BaseException as exc:  # reported to the parent, never raised in the fork
            out = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    result: dict[str, Any] = json.loads(data)
    assert "error" not in result, result
    return result


def _errno_of(fn: Callable[[], object]) -> int:
    try:
        fn()
    except OSError as exc:
        return exc.errno or -1
    return 0


def test_the_confined_process_has_no_capability_no_new_privs_and_a_filter() -> None:
    assert os.geteuid() == 0, "run as root (CI does): dropping what one does not hold proves nothing"

    def body() -> dict[str, Any]:
        return {"self": sandbox.status_fields(), "uid": os.getuid()}

    got = _in_confined_child(body)
    st = got["self"]
    for field in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
        assert int(st[field], 16) == 0, (field, st[field])
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2"
    assert got["uid"] == 0  # still root by uid: only its powers are gone


def test_inet_sockets_connect_exec_and_ptrace_are_refused_unix_netlink_and_threads_are_not() -> None:
    import ctypes
    import errno

    def body() -> dict[str, Any]:
        libc = ctypes.CDLL(None, use_errno=True)

        def ptrace() -> None:
            if libc.ptrace(16, os.getppid(), 0, 0) != 0:  # PTRACE_ATTACH
                raise OSError(ctypes.get_errno(), "ptrace")

        def connect_unix() -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect("/nonexistent/socket")

        ran: list[bool] = []
        t = threading.Thread(target=lambda: ran.append(True))
        t.start()
        t.join()
        a, b = socket.socketpair()  # asyncio's self-pipe: must keep working
        a.close()
        b.close()
        return {
            "inet": _errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
            "inet6": _errno_of(lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)),
            "unix": _errno_of(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()),
            "netlink": _errno_of(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()),
            "connect": _errno_of(connect_unix),
            "exec": _errno_of(lambda: subprocess.run(["/bin/true"], check=False)),
            "ptrace": _errno_of(ptrace),
            "thread": ran == [True],
            "fork": _errno_of(lambda: os.waitpid(_fork_exit(), 0)),
            "packet": _errno_of(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)),
        }

    got = _in_confined_child(body)
    assert got["inet"] == got["inet6"] == errno.EPERM
    assert got["connect"] == errno.EPERM  # even to a unix path: conntui connects nowhere
    assert got["exec"] == errno.EPERM
    assert got["ptrace"] == errno.EPERM
    assert got["packet"] == errno.EPERM  # no CAP_NET_RAW any more
    assert got["unix"] == got["netlink"] == got["fork"] == 0
    assert got["thread"] is True


def _fork_exit() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return pid


def test_writes_go_only_where_they_were_allowed(tmp_path: Path) -> None:
    import errno

    allowed = tmp_path / "session.pcapng"
    allowed.write_bytes(b"")
    spool = tmp_path / "spool"
    spool.mkdir()
    outside = tmp_path / "elsewhere"
    abi = sandbox.landlock_abi()

    def body() -> dict[str, Any]:
        def write(path: Path) -> None:
            with open(path, "ab") as f:
                f.write(b"x")

        return {
            "allowed": _errno_of(lambda: write(allowed)),
            "in_spool": _errno_of(lambda: write(spool / "chunk")),
            "outside": _errno_of(lambda: write(outside)),
            "devnull": _errno_of(lambda: write(Path(os.devnull))),
            "read": _errno_of(lambda: Path("/etc/hostname").read_bytes()),
        }

    got = _in_confined_child(body, [str(allowed), str(spool)])
    assert got["allowed"] == got["in_spool"] == got["devnull"] == got["read"] == 0
    if abi:
        assert got["confinement"]["landlock_abi"] == abi
        assert got["outside"] == errno.EACCES
        assert not outside.exists()
    else:  # said, not hidden: the caller reports writes as unlimited
        assert got["confinement"]["landlock_abi"] == 0
        assert got["outside"] == 0


def test_confine_refuses_to_run_beside_another_thread() -> None:
    import errno

    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="bystander", daemon=True)
    t.start()
    try:
        with pytest.raises(OSError) as got:
            sandbox.confine()
        assert got.value.errno == errno.EBUSY and "bystander" in str(got.value)
    finally:
        stop.set()
        t.join()
    assert sandbox.status_fields()["Seccomp"] == "0"  # nothing was applied to this process


@pytest.mark.parametrize("arch", sorted(sandbox.ARCHES))
def test_every_jump_of_the_filter_lands_inside_it(arch: str) -> None:
    prog = sandbox.seccomp_program(sandbox.ARCHES[arch])
    assert len(prog) < 64
    for i, (code, jt, jf, _k) in enumerate(prog):
        if code & 0x07 == 0x05:  # BPF_JMP
            assert i + 1 + max(jt, jf) < len(prog)
    assert prog[-1][0] == 0x06  # ends with a return


def test_a_detached_spool_works_for_a_confined_process_and_leaves_nothing(tmp_path: Path) -> None:
    """The TUI's spool is unlinked before the drop: Landlock then needs no rule for it (and
    could not let conntui remove it at the end)."""
    from conntui.capfile.spool import PcapngSpool
    from conntui.model import Attribution, Match
    from conntui.session import Session

    from .test_session import real_frame

    spool = PcapngSpool(str(tmp_path))
    spool.detach()
    assert os.listdir(tmp_path) == []

    def body() -> dict[str, Any]:
        from conntui.decode import decode_frame

        s = Session(window=2, spool=spool)
        for i in range(6):
            f = real_frame(i)
            s.append(f, decode_frame(f), Attribution(Match.UNKNOWN, explain=f"row {i}"))
        back = [r.attribution.explain for r in s.all_records()]
        s.close()
        return {"back": back, "spooled": spool.count}

    got = _in_confined_child(body)
    assert got["spooled"] == 4
    assert got["back"] == [f"row {i}" for i in range(6)]
    assert os.listdir(tmp_path) == []
