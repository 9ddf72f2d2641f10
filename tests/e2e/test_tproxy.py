"""TPROXY end to end: a transparent daemon takes UDP datagrams and TCP connections for an
address that is not its host's, steered by iptables' TPROXY target; conntui, capturing in
the daemon's namespace, must name the daemon's own fds (not ``not_local``).

Two namespaces on a veth pair. The client routes 203.0.113.0/24 through the daemon's
namespace, which has the issue's set-up: ``iptables -t mangle -A PREROUTING -p udp -j
TPROXY --on-port 9000 --tproxy-mark 1`` (and TCP to 9001), ``ip rule add fwmark 1 lookup
100``, ``ip route add local 0.0.0.0/0 dev lo table 100``. The daemon (this file's
``DAEMON``) sets IP_TRANSPARENT, reads each datagram's original destination with
IP_RECVORIGDSTADDR and each connection's with getsockname(), and reports its pid, fds and
socket inodes (read from its own /proc/self/fd): the ground truth.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from typing import Any

import pytest

from .conftest import Conntui
from .test_fidelity import Netns, NsConntui, netns  # noqa: F401  (the fixture)

pytestmark = pytest.mark.root

ORIG = "203.0.113.10"
UDP_PORTS = (53, 5353, 40000)
TCP_PORTS = (80, 443)
D_ADDR, C_ADDR = "10.213.0.1", "10.213.0.2"

DAEMON = r"""
import json, os, select, socket, struct, sys, time
IP_TRANSPARENT, IP_RECVORIGDSTADDR = 19, 20
def ino(fd):
    return int(os.readlink(f"/proc/self/fd/{fd}")[8:-1])
def out(**kw):
    print(json.dumps(kw), flush=True)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
u.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
u.bind(("0.0.0.0", 9000))
t = socket.socket()
t.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
t.bind(("0.0.0.0", 9001))
t.listen(16)
out(pid=os.getpid(), udp_fd=u.fileno(), udp_inode=ino(u.fileno()),
    tcp_fd=t.fileno(), tcp_inode=ino(t.fileno()))
conns = {}
end = time.monotonic() + 40
while time.monotonic() < end:
    r, _, _ = select.select([u, t, *conns], [], [], 0.5)
    for s in r:
        if s is u:
            data, anc, _, peer = u.recvmsg(2048, 64)
            orig = None
            for level, kind, raw in anc:
                if level == socket.SOL_IP and kind == IP_RECVORIGDSTADDR:
                    port, addr = struct.unpack_from("!H4s", raw, 2)
                    orig = f"{socket.inet_ntoa(addr)}:{port}"
            out(udp=data.decode(), peer=f"{peer[0]}:{peer[1]}", orig=orig, fd=u.fileno())
        elif s is t:
            c, peer = t.accept()
            conns[c] = peer
            la = c.getsockname()
            out(accept=c.fileno(), inode=ino(c.fileno()), peer=f"{peer[0]}:{peer[1]}",
                orig=f"{la[0]}:{la[1]}")
        else:
            data = s.recv(2048)
            if not data:
                conns.pop(s)
                s.close()
                continue
            out(data=data.decode(), fd=s.fileno(), peer="%s:%d" % conns[s])
            s.sendall(b"orig " + ("%s:%d" % s.getsockname()).encode())
"""

CLIENT = r"""
import json, socket, sys, time
orig, udp_ports, tcp_ports = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = []
for i in range(2):
    for p in udp_ports:
        u.sendto(f"dgram {p} {i}".encode(), (orig, int(p)))
        sent.append([u.getsockname()[1], int(p)])
        time.sleep(0.05)
keep = []
conns = []
for p in tcp_ports:
    c = socket.create_connection((orig, int(p)), timeout=5)
    c.sendall(f"hello {p}".encode())
    answer = c.recv(100).decode()
    conns.append([c.getsockname()[1], int(p), answer])
    keep.append(c)
    time.sleep(0.05)
print(json.dumps({"udp_sport": u.getsockname()[1], "sent": sent, "conns": conns}), flush=True)
time.sleep(3)  # the connections stay open while conntui looks
"""


def _setup(net: Netns) -> tuple[str, str]:
    d, c = net.add("tpd"), net.add("tpc")
    net.veth(d, "l13d", c, "l13c")
    net.addr(d, "l13d", f"{D_ADDR}/24")
    net.addr(c, "l13c", f"{C_ADDR}/24")
    net.sh(c, "ip", "route", "add", "203.0.113.0/24", "via", D_ADDR)
    for proto, port in (("udp", 9000), ("tcp", 9001)):
        net.sh(
            d, "iptables", "-w", "5", "-t", "mangle", "-A", "PREROUTING", "-d", "203.0.113.0/24",
            "-p", proto, "-j", "TPROXY", "--on-port", str(port), "--tproxy-mark", "1",
        )  # fmt: skip
    net.sh(d, "ip", "rule", "add", "fwmark", "1", "lookup", "100")
    net.sh(d, "ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
    return d, c


def _read_json(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """The daemon's next JSON line; its stdout is unbuffered (``bufsize=0``), so a line
    select() has seen is never read ahead into a buffer that select() cannot see."""
    assert proc.stdout is not None
    r, _, _ = select.select([proc.stdout], [], [], timeout)
    if not r:
        raise TimeoutError("no answer")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("exited")
    return dict(json.loads(line))


def _holders(sock: dict[str, Any] | None) -> set[tuple[int, int]]:
    return {(h["pid"], h["fd"]) for h in (sock or {}).get("holders", [])}


def test_tproxy_udp_and_tcp_name_the_transparent_daemon(netns: Netns) -> None:  # noqa: F811
    d, c = _setup(netns)
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", d, sys.executable, "-c", DAEMON], stdout=subprocess.PIPE, bufsize=0
    )
    try:
        hello = _read_json(daemon, 10)
        pid = hello["pid"]
        # started after the daemon: conntui's first table has its sockets and the rules (a
        # socket made later waits for the next refresh, which lags on a loaded machine)
        cap: Conntui = netns.conntui(d, "--headless", "--json", "-i", "l13d")
        time.sleep(0.5)
        client = subprocess.run(
            [
                "ip", "netns", "exec", c, sys.executable, "-c", CLIENT, ORIG,
                ",".join(map(str, UDP_PORTS)), ",".join(map(str, TCP_PORTS)),
            ],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        sent = json.loads(client.stdout)
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 5
        want = len(sent["sent"]) + 2 * len(sent["conns"])  # datagrams, accepts, data
        while len(events) < want and time.monotonic() < deadline:
            events.append(_read_json(daemon, deadline - time.monotonic()))
        rows, err, _ = cap.stop(settle=1.0)
    finally:
        daemon.kill()
        daemon.wait()

    # The kernel side, from the daemon itself: every datagram and connection arrived, with
    # the original destination (per datagram / per connection).
    got = [e for e in events if "udp" in e]
    assert sorted(e["orig"] for e in got) == sorted(f"{ORIG}:{p}" for _, p in sent["sent"])
    accepts = {e["peer"]: e for e in events if "accept" in e}
    assert sorted(a["orig"] for a in accepts.values()) == sorted(f"{ORIG}:{p}" for p in TCP_PORTS)
    assert all(answer.startswith(f"orig {ORIG}:") for _, _, answer in sent["conns"])

    incoming = [r for r in rows if r["dst"] == ORIG and r["direction"] == "in"]
    udp = [r for r in incoming if r["proto"] == "udp"]
    syns = [r for r in incoming if r["proto"] == "tcp" and r["flags"] == "S"]
    data = [r for r in incoming if r["proto"] == "tcp" and r["payload_len"] > 0]
    assert len(udp) == len(sent["sent"]), err
    assert len(syns) == len(TCP_PORTS) and len(data) == len(TCP_PORTS), err
    bad = [r for r in incoming if r["match"] in ("not_local", "none")]
    assert not bad, [(r["proto"], r["dport"], r["flags"], r["match"], r["explain"]) for r in bad]
    for r in udp:
        assert r["match"] == "udp_unconnected", r["explain"]
        assert (pid, hello["udp_fd"]) in _holders(r["receiver"]), r
        assert r["receiver"]["inode"] == hello["udp_inode"]
        assert "TPROXY" in r["explain"] and "IP_RECVORIGDSTADDR" in r["explain"]
    for r in syns:
        assert r["match"] == "listener", r["explain"]
        assert (pid, hello["tcp_fd"]) in _holders(r["receiver"]), r
        assert r["receiver"]["inode"] == hello["tcp_inode"]
        assert "TPROXY" in r["explain"] and "getsockname()" in r["explain"]
    for r in data:
        acc = accepts[f"{r['src']}:{r['sport']}"]
        assert r["match"] == "established", r["explain"]
        assert (pid, acc["accept"]) in _holders(r["receiver"]), r
        assert r["receiver"]["inode"] == acc["inode"]
        assert r["receiver"]["local"] == f"{ORIG}:{r['dport']}"
        assert "TPROXY" in r["explain"]


def test_tproxy_daemon_started_after_conntui_is_named_from_its_first_datagram(netns: Netns) -> None:  # noqa: F811
    """The daemon binds after conntui's table was read, and the client sends at once: the
    first datagram and SYN miss the table, and the miss must find the transparent sockets
    on the rules' on-ports (the kernel's second look-up), not call the kernel's drop."""
    d, c = _setup(netns)
    cap: NsConntui = netns.conntui(d, "--headless", "--json", "-i", "l13d")
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", d, sys.executable, "-c", DAEMON], stdout=subprocess.PIPE, bufsize=0
    )
    try:
        hello = _read_json(daemon, 10)
        pid = hello["pid"]
        client = subprocess.run(
            ["ip", "netns", "exec", c, sys.executable, "-c", CLIENT, ORIG, "53", "80"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        sent = json.loads(client.stdout)
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 5
        while len(events) < len(sent["sent"]) + 2 and time.monotonic() < deadline:
            try:
                events.append(_read_json(daemon, deadline - time.monotonic()))
            except TimeoutError:
                break
        rows, err, _ = cap.stop(settle=1.0)
    finally:
        daemon.kill()
        daemon.wait()
    assert len(events) == len(sent["sent"]) + 2, (events, sent)
    assert sorted(e["orig"] for e in events if "udp" in e) == [f"{ORIG}:53"] * len(sent["sent"])
    incoming = [r for r in rows if r["dst"] == ORIG and r["direction"] == "in"]
    udp = [r for r in incoming if r["proto"] == "udp"]
    syns = [r for r in incoming if r["proto"] == "tcp" and r["flags"] == "S"]
    assert len(udp) == len(sent["sent"]) and len(syns) == 1, err
    for r in udp:
        assert r["match"] == "udp_unconnected", r["explain"]
        assert (pid, hello["udp_fd"]) in _holders(r["receiver"]), r
    assert syns[0]["match"] == "listener", (syns[0]["explain"], syns[0].get("steps"), syns[0].get("notes"))
    assert (pid, hello["tcp_fd"]) in _holders(syns[0]["receiver"]), syns[0]
    assert all("TPROXY" in r["explain"] for r in udp + syns)


def test_tproxy_rule_without_a_transparent_socket_says_the_kernel_drops(netns: Netns) -> None:  # noqa: F811
    d, c = _setup(netns)
    # a plain (not transparent) socket on the on-port: TPROXY finds it and drops anyway
    plain = subprocess.Popen(
        [
            "ip", "netns", "exec", d, sys.executable, "-c",
            "import socket,time;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
            "s.bind(('0.0.0.0',9000));print(1,flush=True);time.sleep(20)",
        ],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert plain.stdout is not None and plain.stdout.readline().strip() == "1"
        cap: NsConntui = netns.conntui(d, "--headless", "--json", "-i", "l13d")  # its table has it
        time.sleep(0.5)
        netns.sh(
            c, sys.executable, "-c",
            f"import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.sendto(b'x',('{ORIG}',53))",
        )  # fmt: skip
        time.sleep(0.3)
        snmp = netns.counters(d, "/proc/net/snmp")
        rows, err, _ = cap.stop(settle=1.0)
    finally:
        plain.kill()
        plain.wait()
    assert snmp.get("Udp.InDatagrams", 0) == 0  # the kernel delivered nothing
    udp = [r for r in rows if r["dst"] == ORIG and r["proto"] == "udp"]
    assert len(udp) == 1, err
    assert udp[0]["match"] == "none" and "drops" in udp[0]["explain"], udp[0]["explain"]
    assert "IP_TRANSPARENT" in udp[0]["explain"]


# --------------------------------------------------------------------------- BPF sk_lookup


def _load_sk_lookup(netns_path: str) -> tuple[int, int, int]:
    """A do-nothing sk_lookup program (returns SK_PASS) linked to a namespace, through raw
    bpf(2): (program fd, link fd, program id). Closing both fds detaches it."""
    import ctypes
    import ctypes.util
    import os
    import struct

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

    def bpf(cmd: int, attr: bytes) -> int:
        buf = ctypes.create_string_buffer(attr, 128)
        ret = int(libc.syscall(321, cmd, buf, 128))
        if ret < 0:
            raise OSError(ctypes.get_errno(), "bpf")
        return ret

    insns = struct.pack("<BBhi", 0xB7, 0, 0, 1) + struct.pack("<BBhi", 0x95, 0, 0, 0)  # r0 = 1; exit
    code, lic = ctypes.create_string_buffer(insns), ctypes.create_string_buffer(b"GPL")
    attr = struct.pack("=IIQQIIQII16sII", 30, 2, ctypes.addressof(code), ctypes.addressof(lic), 0, 0, 0, 0, 0,
                       b"lab13_pass", 0, 36)  # fmt: skip
    prog = bpf(5, attr)  # BPF_PROG_LOAD, BPF_PROG_TYPE_SK_LOOKUP, expected BPF_SK_LOOKUP
    ns = os.open(netns_path, os.O_RDONLY)
    try:
        link = bpf(28, struct.pack("=IIII", prog, ns, 36, 0))  # BPF_LINK_CREATE
    finally:
        os.close(ns)
    info = ctypes.create_string_buffer(256)
    bpf(15, struct.pack("=IIQ", prog, 256, ctypes.addressof(info)))  # BPF_OBJ_GET_INFO_BY_FD
    return prog, link, struct.unpack_from("=I", info.raw, 4)[0]


def test_sk_lookup_program_is_named_and_the_answer_is_a_prediction(netns: Netns) -> None:  # noqa: F811
    import os

    from conntui.sockets.bpf import sk_lookup_for

    ns = netns.add("skl")
    prog, link, prog_id = _load_sk_lookup(f"/run/netns/{ns}")
    try:
        assert f"program id {prog_id} 'lab13_pass'" in " ".join(sk_lookup_for(f"/run/netns/{ns}").programs)
        assert not any(f"id {prog_id} " in p for p in sk_lookup_for().programs)  # not on ours
        cap = netns.conntui(ns, "--headless", "--json", "-i", "lo", "-p", "7777")
        srv = netns.actor(ns)
        lst = srv("listen", host="127.0.0.1", port=7777)
        time.sleep(1.2)
        cli = netns.actor(ns)
        cli("connect", host="127.0.0.1", port=7777)
        rows, err, _ = cap.stop(settle=1.0)
    finally:
        os.close(link)
        os.close(prog)
    syn = [r for r in rows if r["flags"] == "S" and r["dport"] == 7777 and r["direction"] == "in"]
    assert len(syn) == 1, err
    assert syn[0]["match"] == "listener" and (srv.pid, lst["fd"]) in _holders(syn[0]["receiver"])
    assert "sk_lookup" in syn[0]["explain"] and f"program id {prog_id}" in syn[0]["explain"]
