"""A ``SO_REUSEPORT`` group whose member is chosen by a BPF program, not by the kernel's hash.

Two processes each hold one listener of the group; the first attaches a classic BPF program
(``SO_ATTACH_REUSEPORT_CBPF``, ``ret #1``) that sends every connection to the second member.
Such a program cannot be seen from outside (sock_diag does not report it), so conntui must not
claim that the hash chose: the kernel's record (the process that accept()ed) names the member,
and the wording leaves room for a program. A loaded ``BPF_PROG_TYPE_SK_REUSEPORT`` program can
be seen, through ``bpf(2)``: conntui lists it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from typing import Any

import pytest

from conntui.sockets import bpf

pytestmark = pytest.mark.root

MEMBER = r"""
import ctypes, json, os, select, socket, struct, sys, time
port, steer = int(sys.argv[1]), sys.argv[2] == "steer"
def ino(fd):
    return int(os.readlink(f"/proc/self/fd/{fd}")[8:-1])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
print(json.dumps({"pid": os.getpid(), "fd": s.fileno(), "inode": ino(s.fileno())}), flush=True)
if steer:
    sys.stdin.readline()  # the other member has joined the group
    insn = ctypes.create_string_buffer(struct.pack("=HBBI", 0x06, 0, 0, 1))  # BPF_RET|BPF_K 1
    prog = struct.pack("=HxxxxxxQ", 1, ctypes.addressof(insn))
    s.setsockopt(socket.SOL_SOCKET, 51, prog)  # SO_ATTACH_REUSEPORT_CBPF: always member 1
    print(json.dumps({"steered": True}), flush=True)
end = time.monotonic() + 30
conns = []
while time.monotonic() < end:
    r, _, _ = select.select([s, *conns], [], [], 0.2)
    for x in r:
        if x is s:
            c, peer = s.accept()
            conns.append(c)
            print(json.dumps({"accept": c.fileno(), "peer": peer[1]}), flush=True)
        else:
            if not x.recv(100):
                conns.remove(x)
                x.close()
"""


def _line(proc: subprocess.Popen[bytes], timeout: float = 10) -> dict[str, Any]:
    assert proc.stdout is not None
    r, _, _ = select.select([proc.stdout], [], [], timeout)
    if not r:
        raise TimeoutError("no answer")
    return dict(json.loads(proc.stdout.readline()))


def _member(port: int, steer: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", MEMBER, str(port), "steer" if steer else "plain"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
    )  # fmt: skip


def _holders(sock: dict[str, Any] | None) -> set[tuple[int, int]]:
    return {(h["pid"], h["fd"]) for h in (sock or {}).get("holders", [])}


def test_a_bpf_program_steers_the_group_and_conntui_does_not_claim_the_hash(conntui, port) -> None:
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port))
    a = _member(port, True)
    procs = [a]
    try:
        ma = _line(a)  # bound first: member 0 of the group
        b = _member(port, False)
        procs.append(b)
        mb = _line(b)  # member 1, where the program sends everything
        assert a.stdin is not None
        a.stdin.write(b"go\n")
        assert _line(a) == {"steered": True}
        clients = []
        for i in range(4):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            c.sendall(b"hello %d" % i)
            clients.append(c)
            time.sleep(0.05)
        taken = {}
        deadline = time.monotonic() + 5
        while len(taken) < 4 and time.monotonic() < deadline:
            for who, proc in (("a", a), ("b", b)):
                assert proc.stdout is not None
                if select.select([proc.stdout], [], [], 0.05)[0]:
                    taken[_line(proc)["peer"]] = who
        ports = sorted(c.getsockname()[1] for c in clients)
        for c in clients:
            c.close()
        rows, err, _ = cap.stop(settle=1.5)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    # the kernel's own doing, seen by the members: the program sent all four to member 1 (b)
    assert sorted(taken) == ports and set(taken.values()) == {"b"}, taken
    syns = [r for r in rows if r["flags"] == "S" and r["dport"] == port]
    assert sorted(r["sport"] for r in syns) == ports, err
    for r in syns:
        assert r["match"] == "listener", r["explain"]
        assert _holders(r["receiver"]) == {(mb["pid"], mb["fd"])}, (r["receiver"], r.get("notes"))
        said = " ".join([r["explain"], *r.get("notes", [])])
        assert "BPF" in said, said
        assert "hash gave" not in said and "hashes the 4-tuple to pick one)" not in said, said
    assert (ma["pid"], ma["fd"]) not in {h for r in rows for h in _holders(r.get("receiver"))}


def _load_sk_reuseport() -> int:
    """A do-nothing ``BPF_PROG_TYPE_SK_REUSEPORT`` program loaded through raw bpf(2): its fd."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    insns = struct.pack("<BBhi", 0xB7, 0, 0, 1) + struct.pack("<BBhi", 0x95, 0, 0, 0)  # r0 = 1; exit
    code, lic = ctypes.create_string_buffer(insns), ctypes.create_string_buffer(b"GPL")
    attr = struct.pack("=IIQQIIQII16sII", 21, 2, ctypes.addressof(code), ctypes.addressof(lic), 0, 0, 0, 0, 0,
                       b"e2e_reuseport", 0, 0)  # fmt: skip
    buf = ctypes.create_string_buffer(attr, 128)
    fd = int(libc.syscall(321, 5, buf, 128))  # BPF_PROG_LOAD
    if fd < 0:
        raise OSError(ctypes.get_errno(), "bpf(BPF_PROG_LOAD)")
    return fd


def test_a_loaded_sk_reuseport_program_is_listed() -> None:
    before = bpf.read_reuseport()
    assert not before.error, before.error
    fd = _load_sk_reuseport()
    try:
        now = bpf.read_reuseport()
        named = [p for p in now.reuseport if "e2e_reuseport" in p]
        assert len(named) == 1, now
    finally:
        os.close(fd)
    time.sleep(0.1)  # the program is freed after an RCU grace period
    assert not [p for p in bpf.read_reuseport().reuseport if "e2e_reuseport" in p]
