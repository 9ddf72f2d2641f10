"""The kernel tracer (conntui.tracer) against real short-lived connections on loopback.

Separate processes open connections that live well under a millisecond (connect, send 1 KB,
close) and report their pids, fds and ports; the tracer must name the right (pid, fd) for
both ends of every one of them. Needs root and bpftrace (CI installs it); skipped only when
bpftrace is missing or tracefs cannot be mounted.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conntui.model import Holder
from conntui.tracer import SocketTracer, _mount_tracefs, _tracefs_ready

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

LO = "127.0.0.1"

# The workload: every loop is bounded, every socket has a timeout, traffic is loopback only.
WORKLOAD = r"""
import json, os, socket, sys, threading, time

def out(**kw):
    print(json.dumps(kw), flush=True)

def fam(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET

def set_comm(name):
    with open("/proc/self/comm", "w") as f:
        f.write(name)

def comm():
    with open("/proc/self/comm") as f:
        return f.read()[:-1]  # the kernel adds one newline

mode = sys.argv[1]
PAYLOAD = b"x" * 1024

if mode == "tcp-server":
    addr, n = sys.argv[2], int(sys.argv[3])
    ls = socket.socket(fam(addr))
    if fam(addr) == socket.AF_INET6:
        ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    ls.bind((addr, 0))
    ls.listen(1024)
    ls.settimeout(20)
    out(pid=os.getpid(), comm=comm(), port=ls.getsockname()[1])
    accepted = []
    for _ in range(n):
        a, peer = ls.accept()
        a.settimeout(5)
        fd = a.fileno()
        got = 0
        for _ in range(100):
            chunk = a.recv(65536)
            if not chunk:
                break
            got += len(chunk)
        a.close()
        accepted.append({"fd": fd, "peer": list(peer[:2]), "bytes": got})
    out(accepted=accepted)

elif mode == "tcp-client":
    addr, port, n, name = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    set_comm(name)
    conns = []
    for _ in range(n):
        t0 = time.perf_counter()
        c = socket.socket(fam(addr))
        c.settimeout(5)
        c.connect((addr, port))
        fd, local = c.fileno(), c.getsockname()[:2]
        c.sendall(PAYLOAD)
        c.close()
        life = time.perf_counter() - t0
        conns.append({"fd": fd, "local": list(local), "life": life, "t": time.time()})
    out(pid=os.getpid(), comm=comm(), conns=conns)

elif mode == "refused":
    port = int(sys.argv[2])
    c = socket.socket()
    c.settimeout(5)
    fd = c.fileno()
    try:
        c.connect(("127.0.0.1", port))
        err = 0
    except OSError as e:
        err = e.errno
    c.close()
    out(pid=os.getpid(), comm=comm(), fd=fd, errno=err)

elif mode == "udp-server":
    n = int(sys.argv[2])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    out(pid=os.getpid(), comm=comm(), port=s.getsockname()[1], fd=s.fileno())
    got = 0
    try:
        for _ in range(n):
            s.recvfrom(65536)
            got += 1
    except OSError:
        pass
    out(received=got)

elif mode == "udp-client":
    port, n = int(sys.argv[2]), int(sys.argv[3])
    flows = []
    for i in range(n):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        connected = i % 2 == 1
        if connected:
            c.connect(("127.0.0.1", port))
            c.send(PAYLOAD)
        else:
            c.sendto(PAYLOAD, ("127.0.0.1", port))
        flows.append(
            {"fd": c.fileno(), "local": list(c.getsockname()[:2]), "connected": connected, "t": time.time()}
        )
        c.close()
    out(pid=os.getpid(), comm=comm(), flows=flows)

elif mode == "bench-tcp":
    n = int(sys.argv[2])
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0  # connections/s; 0: as fast as it goes
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1024)
    ls.settimeout(10)
    port = ls.getsockname()[1]
    def serve():
        for _ in range(n):
            try:
                a, _ = ls.accept()
            except OSError:
                return
            a.settimeout(5)
            try:
                while a.recv(65536):
                    pass
            except OSError:
                pass
            a.close()
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    t0 = time.perf_counter()
    for i in range(n):
        if rate:
            time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.sendall(PAYLOAD)
        c.close()
    th.join(20)
    out(rate=n / (time.perf_counter() - t0))

elif mode == "bench-udp":
    n = int(sys.argv[2])
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind(("127.0.0.1", 0))
    dest = r.getsockname()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"y" * 16
    t0 = time.perf_counter()
    for _ in range(n):
        s.sendto(payload, dest)
    out(rate=n / (time.perf_counter() - t0))
"""


class Proc:
    """One workload process; ``line()`` reads its next JSON line."""

    def __init__(self, *args: object) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-c", WORKLOAD, *map(str, args)],
            stdout=subprocess.PIPE,
            text=True,
        )

    def line(self, timeout: float = 30) -> dict[str, Any]:
        assert self.p.stdout is not None
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not r:
            raise TimeoutError("workload did not answer")
        text = self.p.stdout.readline()
        if not text:
            raise RuntimeError(f"workload exited ({self.p.wait(5)})")
        reply: dict[str, Any] = json.loads(text)
        return reply

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(10)
        if self.p.stdout is not None:
            self.p.stdout.close()


def run(*args: object, timeout: float = 60) -> dict[str, Any]:
    proc = Proc(*args)
    try:
        return proc.line(timeout)
    finally:
        proc.close()


def _skip_unless_possible() -> None:
    if shutil.which("bpftrace") is None:
        pytest.skip("bpftrace is not installed (apt-get install bpftrace)")
    if not _tracefs_ready():
        _mount_tracefs()
    if not _tracefs_ready():
        pytest.skip("tracefs cannot be mounted at /sys/kernel/tracing")


def _start() -> SocketTracer:
    _skip_unless_possible()
    tracer = SocketTracer.start(wait=60)
    assert tracer is not None, SocketTracer.why_not
    assert tracer.ready.is_set()
    return tracer


@pytest.fixture
def tracer() -> Iterator[SocketTracer]:
    t = _start()
    try:
        yield t
    finally:
        t.close()
        assert t.proc is not None and t.proc.poll() is not None


COMM = 'c li"ent\\\n'  # spaces, a quote, a backslash, a newline: bpftrace's JSON escapes them


@pytest.mark.parametrize(
    ("server_addr", "client_addr"),
    [(LO, LO), ("::", LO), ("::1", "::1")],
    ids=["ipv4", "dual-stack-v4-mapped", "ipv6"],
)
def test_short_lived_tcp_both_ends(tracer: SocketTracer, server_addr: str, client_addr: str) -> None:
    n = 100
    server = Proc("tcp-server", server_addr, n)
    try:
        hello = server.line()
        sport = hello["port"]
        client = run("tcp-client", client_addr, sport, n, COMM)
        accepted = server.line()["accepted"]
    finally:
        server.close()
    assert client["comm"] == COMM
    assert len(client["conns"]) == n and len(accepted) == n
    assert all(a["bytes"] == 1024 for a in accepted)
    assert tracer.sync(5.0)

    lives = sorted(c["life"] for c in client["conns"])
    by_peer_port = {a["peer"][1]: a for a in accepted}
    misses = []
    for c in client["conns"]:
        laddr, lport = c["local"]
        raddr = client_addr
        # at= the flow's time: another process may reuse the port once this one closed it
        got_client = tracer.lookup("tcp", laddr, lport, raddr, sport, at=c["t"])
        want_client = Holder(client["pid"], c["fd"], client["comm"])
        # The server's view: local = the address the client connected to; a dual-stack
        # server sees it v4-mapped, the look-up takes it plain.
        srv = by_peer_port[lport]
        got_server = tracer.lookup("tcp", raddr, sport, laddr, lport, at=c["t"])
        want_server = Holder(hello["pid"], srv["fd"], hello["comm"])
        if got_client != want_client or got_server != want_server:
            misses.append((lport, got_client, want_client, got_server, want_server))
    print(
        f"\n{server_addr}/{client_addr}: {n} connections, client-side life median "
        f"{lives[n // 2] * 1e3:.3f} ms, max {lives[-1] * 1e3:.3f} ms; misses: {len(misses)}; "
        f"tracer stats {dict(tracer.stats)}"
    )
    assert not misses, misses[:5]
    assert lives[n // 2] < 0.001  # the median connection lived under a millisecond
    # The dual-stack server's records keep the socket's own (v4-mapped) view.
    first_addr, first_port = client["conns"][0]["local"]
    rec = tracer.lookup_record("tcp", client_addr, sport, first_addr, first_port)
    assert rec is not None and rec.kind == "accept" and rec.inode > 0
    if server_addr == "::":
        assert rec.family == 6 and rec.laddr == "::ffff:127.0.0.1"


def test_refused_connect_keeps_its_port(tracer: SocketTracer) -> None:
    probe = socket.socket()
    probe.bind((LO, 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    got = run("refused", port)
    assert got["errno"] == 111  # ECONNREFUSED
    assert tracer.sync(5.0)
    recs = [
        r
        for recs in list(tracer.memory._mem.values())
        for r in recs
        if r.pid == got["pid"] and r.rport == port
    ]
    assert len(recs) == 1, recs
    rec = recs[0]
    assert rec.kind == "connect" and rec.fd == got["fd"] and rec.lport > 0 and rec.raddr == LO
    assert tracer.lookup("tcp", LO, rec.lport, LO, port) == Holder(got["pid"], got["fd"], got["comm"])


def test_short_lived_udp_both_ends(tracer: SocketTracer) -> None:
    n = 40
    server = Proc("udp-server", n)
    try:
        hello = server.line()
        sport = hello["port"]
        client = run("udp-client", sport, n)
        assert server.line()["received"] == n
    finally:
        server.close()
    assert tracer.sync(5.0)
    misses = []
    for f in client["flows"]:
        lport = f["local"][1]
        got = tracer.lookup("udp", LO, lport, LO, sport, at=f["t"])
        if got != Holder(client["pid"], f["fd"], client["comm"]):
            misses.append(("client", f, got))
        rec = tracer.lookup_record("udp", LO, lport, LO, sport, at=f["t"])
        assert rec is None or rec.kind == ("connect" if f["connected"] else "send")
        srv = tracer.lookup("udp", LO, sport, LO, lport, at=f["t"])
        if srv != Holder(hello["pid"], hello["fd"], hello["comm"]):
            misses.append(("server", f, srv))
    assert not misses, misses[:5]


def test_network_namespace(tracer: SocketTracer) -> None:
    """A tracer for another namespace sees its connections; the host's tracer does not."""
    holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        ns = f"/proc/{holder.pid}/ns/net"
        deadline = time.monotonic() + 10
        while os.stat(ns).st_ino == os.stat("/proc/self/ns/net").st_ino:
            assert time.monotonic() < deadline, "unshare did not make a namespace"
            time.sleep(0.02)
        subprocess.run(["nsenter", f"--net={ns}", "ip", "link", "set", "lo", "up"], check=True, timeout=10)
        inner = SocketTracer.start(ns, wait=60)
        assert inner is not None, SocketTracer.why_not
        try:
            n = 20
            enter = ["nsenter", f"--net={ns}", sys.executable, "-c", WORKLOAD]
            server = subprocess.Popen([*enter, "tcp-server", LO, str(n)], stdout=subprocess.PIPE, text=True)
            try:
                assert server.stdout is not None
                hello = json.loads(server.stdout.readline())
                out = subprocess.run(
                    [*enter, "tcp-client", LO, str(hello["port"]), str(n), "nsclient"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=True,
                )
                client = json.loads(out.stdout)
                server.stdout.readline()
            finally:
                server.kill()
                server.wait(10)
                if server.stdout is not None:
                    server.stdout.close()
            assert inner.sync(5.0) and tracer.sync(5.0)
            for c in client["conns"]:
                lport = c["local"][1]
                got = inner.lookup("tcp", LO, lport, LO, hello["port"], at=c["t"])
                assert got == Holder(client["pid"], c["fd"], "nsclient")
                assert tracer.lookup("tcp", LO, lport, LO, hello["port"], at=c["t"]) is None
        finally:
            inner.close()
    finally:
        holder.kill()
        holder.wait(10)


def test_closes_with_its_parent() -> None:
    """bpftrace ends with the process that started it, even one killed with SIGKILL."""
    _skip_unless_possible()
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from conntui.tracer import SocketTracer;"
        "t = SocketTracer.start(wait=60);"
        "print(t.proc.pid if t else -1, flush=True); time.sleep(60)"
    )
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parent = subprocess.Popen([sys.executable, "-c", code, repo], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        bpf_pid = int(parent.stdout.readline() or -1)
        assert bpf_pid > 0
        assert os.getpgid(bpf_pid) == bpf_pid  # its own process group
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(bpf_pid, 0)
            except ProcessLookupError:
                break
            with contextlib.suppress(ChildProcessError):  # reparented: not ours to reap
                os.waitpid(bpf_pid, os.WNOHANG)
            time.sleep(0.1)
        else:
            os.killpg(bpf_pid, signal.SIGKILL)
            pytest.fail("bpftrace outlived its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()


def test_overhead() -> None:
    """Connections/s and UDP datagrams/s with and without the tracer (printed, not judged)."""
    _skip_unless_possible()
    n_tcp, n_udp = 2000, 100_000
    base_tcp = max(run("bench-tcp", n_tcp)["rate"] for _ in range(3))
    base_udp = max(run("bench-udp", n_udp)["rate"] for _ in range(3))
    t = _start()
    try:
        traced_tcp = max(run("bench-tcp", n_tcp)["rate"] for _ in range(3))
        traced_udp = max(run("bench-udp", n_udp)["rate"] for _ in range(3))
        assert t.sync(5.0)
        stats = dict(t.stats)
    finally:
        t.close()
    # A connect-heavy host: 2,000 connections/s for 2 s, with the kernel's record on (every
    # state change, drop and reset): nothing may be lost there.
    t = _start()
    try:
        paced = run("bench-tcp", 4000, 2000)["rate"]
        assert t.sync(5.0)
        paced_stats = dict(t.stats)
    finally:
        t.close()
    print(
        f"\ntracer overhead: TCP connect+1KB+close {base_tcp:,.0f}/s → {traced_tcp:,.0f}/s "
        f"({traced_tcp / base_tcp:.0%}); UDP sendto {base_udp:,.0f}/s → {traced_udp:,.0f}/s "
        f"({traced_udp / base_udp:.0%}); {stats}; paced {paced:,.0f}/s: {paced_stats}"
    )
    # At full speed (over 10,000 connections/s) bpftrace may fall behind: it says how many
    # events it lost, and the rows of those moments say the record is incomplete.
    assert paced_stats.get("lost", 0) == 0
    assert traced_tcp > 0.1 * base_tcp and traced_udp > 0.1 * base_udp  # nothing pathological
