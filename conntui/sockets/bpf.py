"""BPF programs that override the kernel's socket look-up, as far as they can be seen.

A ``BPF_PROG_TYPE_SK_LOOKUP`` program attached to a network namespace (a ``BPF_LINK_TYPE_NETNS``
link with attach type ``BPF_SK_LOOKUP``) runs before the listener look-up (TCP) and the
unconnected-socket look-up (UDP) and may hand the segment to any socket (``bpf_sk_assign``):
the socket table alone then only predicts. Links are public: ``BPF_LINK_GET_NEXT_ID`` walks
them, ``BPF_OBJ_GET_INFO_BY_FD`` says which namespace (by inode) each is attached to.

A ``SO_REUSEPORT`` group's own program (``SO_ATTACH_REUSEPORT_CBPF``/``EBPF``), which picks
the member instead of the hash, is not visible on the group: sock_diag does not report it and
there is no getsockopt for it. What can be seen is that a ``BPF_PROG_TYPE_SK_REUSEPORT``
program is loaded on the host (``BPF_PROG_GET_NEXT_ID`` walks every loaded program); a classic
program is converted inside the kernel and never gets an id, so it stays invisible. The demux
therefore always words the hash's choice as "unless a program picks" and names loaded ones.

Raw ``bpf(2)`` through ctypes (Debian has no pip-installable libbpf binding); every failure
(no CAP_SYS_ADMIN, old kernel) is reported as a reason, never raised.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import struct
import threading
import time
from collections.abc import Callable, Iterator

from ..model import SkLookup

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 0)  # __NR_bpf
BPF_PROG_GET_NEXT_ID = 11
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_LINK_GET_FD_BY_ID = 30
BPF_LINK_GET_NEXT_ID = 31
BPF_LINK_TYPE_NETNS = 5
BPF_SK_LOOKUP = 36  # enum bpf_attach_type
BPF_PROG_TYPE_SK_REUSEPORT = 21
TTL = 5.0

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_cache: dict[int, tuple[float, SkLookup]] = {}
_lock = threading.Lock()


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    if not _SYS_BPF:
        raise OSError(0, f"bpf(2) syscall number unknown on {platform.machine()}")
    ret = int(_libc.syscall(_SYS_BPF, cmd, attr, len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _info(fd: int, size: int) -> bytes:
    buf = ctypes.create_string_buffer(size)
    attr = ctypes.create_string_buffer(struct.pack("=IIQ", fd, size, ctypes.addressof(buf)), 128)
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return buf.raw


def _prog_info(prog_id: int) -> tuple[int, str] | None:
    """(program type, name) of a loaded program; None when it is gone."""
    try:
        fd = _bpf(BPF_PROG_GET_FD_BY_ID, ctypes.create_string_buffer(struct.pack("=I", prog_id), 128))
    except OSError:
        return None
    try:
        info = _info(fd, 256)
    finally:
        os.close(fd)
    return struct.unpack_from("=I", info, 0)[0], info[64:80].split(b"\0", 1)[0].decode(errors="replace")


def _prog_name(prog_id: int) -> str:
    got = _prog_info(prog_id)
    return got[1] if got is not None else ""


def _ids(next_cmd: int) -> Iterator[int]:
    """Every id ``BPF_PROG_GET_NEXT_ID`` / ``BPF_LINK_GET_NEXT_ID`` walks to (ENOENT ends it)."""
    cur = 0
    for _ in range(100000):
        attr = ctypes.create_string_buffer(struct.pack("=I", cur), 128)
        try:
            _bpf(next_cmd, attr)
        except FileNotFoundError:  # ENOENT: no more
            return
        cur = struct.unpack_from("=I", attr.raw, 4)[0]
        yield cur


def read_reuseport() -> SkLookup:
    """The ``sk_reuseport`` programs loaded on the host (``reuseport``), as "program id N 'name'"."""
    progs: list[str] = []
    try:
        for prog_id in _ids(BPF_PROG_GET_NEXT_ID):
            got = _prog_info(prog_id)
            if got is not None and got[0] == BPF_PROG_TYPE_SK_REUSEPORT:
                progs.append(f"sk_reuseport program id {prog_id}{f' {got[1]!r}' if got[1] else ''}")
    except OSError as exc:
        return SkLookup((), f"BPF programs could not be listed: {exc.strerror or exc}")
    return SkLookup(reuseport=tuple(progs))


# Set by conntui.privsep once capabilities are gone (listing BPF links needs CAP_SYS_ADMIN)
_privileged_read: Callable[[int], SkLookup] | None = None


def set_privileged_read(read: Callable[[int], SkLookup] | None) -> None:
    global _privileged_read
    _privileged_read = read


def read_sk_lookup(netns_ino: int) -> SkLookup:
    """The sk_lookup programs attached to the namespace with inode ``netns_ino``."""
    if _privileged_read is not None:
        return _privileged_read(netns_ino)
    progs: list[str] = []
    try:
        for link_id in _ids(BPF_LINK_GET_NEXT_ID):
            try:
                fd = _bpf(BPF_LINK_GET_FD_BY_ID, ctypes.create_string_buffer(struct.pack("=I", link_id), 128))
            except OSError:
                continue  # gone meanwhile
            try:
                info = _info(fd, 64)
            finally:
                os.close(fd)
            kind, lid, prog_id = struct.unpack_from("=III", info, 0)
            ino, attach = struct.unpack_from("=II", info, 16)
            if kind == BPF_LINK_TYPE_NETNS and attach == BPF_SK_LOOKUP and ino == netns_ino:
                name = _prog_name(prog_id)
                progs.append(f"program id {prog_id}{f' {name!r}' if name else ''} (link {lid})")
    except OSError as exc:
        return SkLookup((), f"BPF links could not be listed: {exc.strerror or exc}")
    return SkLookup(tuple(progs), "")


def sk_lookup_for(netns_path: str | None = None, *, now: float | None = None) -> SkLookup:
    """:func:`read_sk_lookup` for the namespace at ``netns_path`` (None: ours), at most ``TTL`` old."""
    t = time.monotonic() if now is None else now
    try:
        ino = os.stat(netns_path or "/proc/self/ns/net").st_ino
    except OSError as exc:
        return SkLookup((), f"namespace unreadable: {exc.strerror or exc}")
    with _lock:
        hit = _cache.get(ino)
        if hit is not None and t - hit[0] < TTL:
            return hit[1]
    found = read_sk_lookup(ino)
    if _privileged_read is None:  # confined (privsep): bpf(2) is the helper's; not listed then
        reuseport = read_reuseport()
        found = SkLookup(found.programs, found.error or reuseport.error, reuseport.reuseport)
    with _lock:
        _cache[ino] = (t, found)
    return found
