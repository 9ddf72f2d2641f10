"""Give up privileges for good: capabilities, no_new_privs, a seccomp filter, Landlock.

Called once by the process that parses packets, after everything privileged is set up
(:func:`confine`), while it has a single thread: capabilities, no_new_privs and Landlock
are per thread (threads started later inherit them), so a thread started before would keep
root's powers. :func:`confine` refuses to run with other threads alive.

* **Capabilities**: the bounding set is emptied, the securebits locked (``NOROOT``,
  ``NO_SETUID_FIXUP``, ``KEEP_CAPS`` off: uid 0 regains nothing through ``execve`` or
  ``setuid``), the ambient set cleared and ``capset`` clears effective, permitted and
  inheritable. The process stays uid 0, so it may still signal its own root children
  (bpftrace) and read what root's file modes allow; that is why writes are limited by
  Landlock below.
* **no_new_privs**: no setuid binary or file capability can give anything back.
* **seccomp** (a 30-instruction classic BPF filter, checked against the architecture):
  ``socket(AF_INET/AF_INET6)``, ``connect``, ``execve``/``execveat``, ``ptrace``,
  ``process_vm_readv/writev``, ``io_uring_setup`` (its ops could open and connect sockets),
  ``unshare``/``setns`` and ``clone`` with ``CLONE_NEWUSER`` fail with ``EPERM``;
  ``clone3`` fails with ``ENOSYS`` (its flags are in memory a filter cannot read; glibc
  then uses ``clone``). Other architectures' system calls (x32, i386 on x86_64) fail too.
  Written by hand rather than through libseccomp: the filter is small, the Python binding
  of libseccomp is a Debian package a virtualenv does not see, and every instruction is
  tested (``tests/unit/test_sandbox.py``).
* **Landlock** (Linux 5.13+, when the kernel has it enabled): file-system writes — writing,
  truncating, creating, removing, renaming, linking, executing — only to the paths given
  (the ``-w`` file, ``/dev/null``). Reading stays allowed. Where Landlock is
  missing, :func:`confine` says so in its result; the rest still applies.

Stdlib (ctypes) only. x86_64 and aarch64.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Confinement", "confine", "landlock_abi", "seccomp_program", "status_fields"]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int

PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1

# securebits: NOROOT, NO_SETUID_FIXUP and KEEP_CAPS, each with its lock bit (only the
# locks for KEEP_CAPS: the bit itself stays 0)
SECURE_BITS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5)

_LINUX_CAPABILITY_VERSION_3 = 0x20080522

CLONE_NEWUSER = 0x10000000

# seccomp return values
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000

# classic BPF opcodes
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

# struct seccomp_data: nr at 0, arch at 4, args[0] at 16 (low word first: little endian)
_NR, _ARCH, _ARG0 = 0, 4, 16


@dataclass(frozen=True)
class _Arch:
    audit: int
    socket: int
    connect: int
    execve: int
    execveat: int
    ptrace: int
    process_vm: tuple[int, int]
    unshare: int
    setns: int
    clone: int
    clone3: int = 435
    io_uring_setup: int = 425
    landlock: tuple[int, int, int] = (444, 445, 446)
    seccomp: int = 0
    x32_bit: int = 0  # syscall numbers at or above this are another ABI's


ARCHES = {
    "x86_64": _Arch(
        audit=0xC000003E,
        socket=41,
        connect=42,
        execve=59,
        execveat=322,
        ptrace=101,
        process_vm=(310, 311),
        unshare=272,
        setns=308,
        clone=56,
        seccomp=317,
        x32_bit=0x40000000,
    ),
    "aarch64": _Arch(
        audit=0xC00000B7,
        socket=198,
        connect=203,
        execve=221,
        execveat=281,
        ptrace=117,
        process_vm=(270, 271),
        unshare=97,
        setns=268,
        clone=220,
        seccomp=277,
    ),
}


def _arch() -> _Arch:
    machine = platform.machine()
    arch = ARCHES.get(machine)
    if arch is None:
        raise OSError(errno.ENOSYS, f"no seccomp filter for {machine}")
    return arch


def seccomp_program(arch: _Arch | None = None) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions."""
    a = arch or _arch()
    deny = SECCOMP_RET_ERRNO | errno.EPERM
    prog: list[tuple[int, int, int, int]] = []

    def ins(code: int, jt: int, jf: int, k: int) -> None:
        prog.append((code, jt, jf, k))

    refused = [a.connect, a.execve, a.execveat, a.ptrace, *a.process_vm, a.io_uring_setup, a.unshare, a.setns]
    # 0: the architecture must be ours (an i386 int 0x80 call on x86_64 is another table)
    ins(_LD_W_ABS, 0, 0, _ARCH)
    ins(_JEQ_K, 1, 0, a.audit)
    ins(_RET_K, 0, 0, deny)
    ins(_LD_W_ABS, 0, 0, _NR)
    if a.x32_bit:
        ins(_JGE_K, 0, 1, a.x32_bit)
        ins(_RET_K, 0, 0, deny)
    for nr in refused:
        ins(_JEQ_K, 0, 1, nr)
        ins(_RET_K, 0, 0, deny)
    ins(_JEQ_K, 0, 1, a.clone3)
    ins(_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS)
    # socket(): the family is args[0]
    ins(_JEQ_K, 0, 5, a.socket)
    ins(_LD_W_ABS, 0, 0, _ARG0)
    ins(_JEQ_K, 2, 0, 2)  # AF_INET
    ins(_JEQ_K, 1, 0, 10)  # AF_INET6
    ins(_RET_K, 0, 0, SECCOMP_RET_ALLOW)
    ins(_RET_K, 0, 0, deny)
    # clone(): the flags are args[0] on both architectures
    ins(_JEQ_K, 0, 3, a.clone)
    ins(_LD_W_ABS, 0, 0, _ARG0)
    ins(_JSET_K, 0, 1, CLONE_NEWUSER)
    ins(_RET_K, 0, 0, deny)
    ins(_RET_K, 0, 0, SECCOMP_RET_ALLOW)
    return prog


def _install_seccomp(arch: _Arch) -> None:
    prog = seccomp_program(arch)
    raw = b"".join(struct.pack("=HBBI", *i) for i in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = ctypes.create_string_buffer(struct.pack("=HxxxxxxQ", len(prog), ctypes.addressof(buf)), 16)
    # every thread (there is one: confine checks), and no_new_privs is already set
    rc = _libc.syscall(arch.seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, fprog)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {os.strerror(err)}")


def _prctl(option: int, arg: int = 0, what: str = "") -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({what or option}): {os.strerror(err)}")


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 63


def drop_capabilities() -> None:
    """Empty every capability set of the calling thread, and lock the door behind."""
    for cap in range(_last_cap() + 1):
        if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            err = ctypes.get_errno()
            if err != errno.EINVAL:  # EINVAL: a capability this kernel does not know
                raise OSError(err, f"dropping capability {cap} from the bounding set: {os.strerror(err)}")
    _prctl(PR_SET_SECUREBITS, SECURE_BITS, "PR_SET_SECUREBITS")
    # PR_CAP_AMBIENT needs Linux 4.3; EINVAL before that means there is no ambient set
    if _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        if err != errno.EINVAL:
            raise OSError(err, f"clearing the ambient capabilities: {os.strerror(err)}")
    header = ctypes.create_string_buffer(struct.pack("=Ii", _LINUX_CAPABILITY_VERSION_3, 0), 8)
    data = ctypes.create_string_buffer(bytes(24), 24)  # two {effective, permitted, inheritable}
    if _libc.capset(header, data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


# -- Landlock --------------------------------------------------------------------------------

LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
_LL_EXECUTE = 1 << 0
_LL_WRITE_FILE = 1 << 1
_LL_REMOVE_DIR = 1 << 4
_LL_REMOVE_FILE = 1 << 5
_LL_MAKE_ALL = sum(1 << b for b in range(6, 13))  # char, dir, reg, sock, fifo, block, sym
_LL_REFER = 1 << 13  # ABI 2
_LL_TRUNCATE = 1 << 14  # ABI 3
O_PATH = 0o10000000


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when it has none (too old, or not enabled)."""
    try:
        arch = _arch()
    except OSError:
        return 0
    rc = _libc.syscall(arch.landlock[0], None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    return int(rc) if rc > 0 else 0


def _landlock(arch: _Arch, abi: int, writable: Iterable[str]) -> list[str]:
    """Allow writes only to ``writable`` (files or directories); returns the paths that
    could not be opened (they stay unwritable)."""
    handled = _LL_EXECUTE | _LL_WRITE_FILE | _LL_REMOVE_DIR | _LL_REMOVE_FILE | _LL_MAKE_ALL
    if abi >= 2:
        handled |= _LL_REFER
    if abi >= 3:
        handled |= _LL_TRUNCATE
    create, add, restrict = arch.landlock
    attr = ctypes.create_string_buffer(struct.pack("=Q", handled), 8)
    ruleset = int(_libc.syscall(create, attr, 8, 0))
    if ruleset < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    missing: list[str] = []
    try:
        for path in writable:
            try:
                fd = os.open(path, O_PATH | os.O_CLOEXEC)
            except OSError:
                missing.append(path)
                continue
            try:
                is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
                allowed = handled & ~_LL_EXECUTE if is_dir else _LL_WRITE_FILE | (handled & _LL_TRUNCATE)
                rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, fd), 12)
                if _libc.syscall(add, ruleset, LANDLOCK_RULE_PATH_BENEATH, rule, 0) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"landlock_add_rule({path}): {os.strerror(err)}")
            finally:
                os.close(fd)
        if _libc.syscall(restrict, ruleset, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(ruleset)
    return missing


@dataclass(frozen=True)
class Confinement:
    """What :func:`confine` did."""

    landlock_abi: int  # 0: the kernel has no Landlock, writes are not limited
    writable: tuple[str, ...]  # the paths writes are limited to (with Landlock)


def confine(writable: Iterable[str] = ()) -> Confinement:
    """Drop every capability, set no_new_privs, limit writes (Landlock) and install the
    seccomp filter, in that order, for good. OSError if any step fails (the caller must
    not go on as if confined)."""
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if others:
        raise OSError(errno.EBUSY, f"cannot confine with other threads running ({', '.join(others)})")
    arch = _arch()
    drop_capabilities()
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
    paths = tuple(dict.fromkeys(p for p in (*writable, os.devnull) if p))
    abi = landlock_abi()
    if abi:
        _landlock(arch, abi, paths)
    _install_seccomp(arch)
    return Confinement(abi, paths if abi else ())


def status_fields(pid: int | str = "self", task: int | None = None) -> dict[str, str]:
    """``CapEff``, ``CapPrm``, ``NoNewPrivs``, ``Seccomp``... from ``/proc/PID/status``."""
    path = f"/proc/{pid}/status" if task is None else f"/proc/{pid}/task/{task}/status"
    out: dict[str, str] = {}
    with open(path, encoding="ascii", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out
