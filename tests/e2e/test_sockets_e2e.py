"""The socket table against real kernel sockets that a child process opens on loopback.

Every assertion compares what the table says with what the child reports it created
(pids, fd numbers, ports). Needs root (sock_diag sees other processes' inodes, /proc/*/fd of
other users, network namespaces).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from conntui.model import Endpoint, Holder, Segment, SocketEntry, SocketTable
from conntui.sockets import DiagSocket, RouteInfo, SocketTableSource, dump, lookup_exact, parse_msg

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

LO = "127.0.0.1"
MAPPED = "::ffff:127.0.0.1"

# The child: opens sockets, prints one JSON line describing them, then obeys commands
# ("tw", "new", "fork-new", "quit") read from stdin, answering each with one JSON line.
CHILD = r"""
import json, os, socket, sys, time

def out(**kw):
    print(json.dumps(kw), flush=True)

LO = "127.0.0.1"
# A UDP socket shared across fork(): created first, so the forked child inherits only it.
shared = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
shared.bind((LO, 0))
r, w = os.pipe()
fork_pid = os.fork()
if fork_pid == 0:
    os.close(w)
    os.read(r, 1)  # until the parent goes away
    os._exit(0)
os.close(r)

# A listener with backlog 7 that never accepts, and two clients in its accept queue.
backlog = socket.socket(); backlog.bind((LO, 0)); backlog.listen(7)
queued = [socket.create_connection(backlog.getsockname()) for _ in range(2)]

# A listener with one accepted connection.
server = socket.socket(); server.bind((LO, 0)); server.listen(8)
client = socket.create_connection(server.getsockname())
accepted, _ = server.accept()

# A dual-stack [::] listener, an IPv4 client and the accepted (v4-mapped) connection.
dual = socket.socket(socket.AF_INET6)
dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
dual.bind(("::", 0)); dual.listen(5)
client4 = socket.create_connection((LO, dual.getsockname()[1]))
accepted6, _ = dual.accept()

# A connection that will be closed on command to leave a TIME_WAIT entry.
tw_client = socket.create_connection(server.getsockname())
tw_server, _ = server.accept()

# UDP: unconnected, and connected to the unconnected one.
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((LO, 0))
udpc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udpc.bind((LO, 0)); udpc.connect(udp.getsockname())

def port(s):
    return s.getsockname()[1]

out(
    pid=os.getpid(), fork_pid=fork_pid,
    shared_fd=shared.fileno(), shared_port=port(shared),
    backlog_port=port(backlog), backlog_fd=backlog.fileno(),
    queued_ports=[port(s) for s in queued], queued_fds=[s.fileno() for s in queued],
    server_port=port(server), server_fd=server.fileno(),
    client_port=port(client), client_fd=client.fileno(), accepted_fd=accepted.fileno(),
    dual_port=port(dual), dual_fd=dual.fileno(),
    client4_port=port(client4), client4_fd=client4.fileno(), accepted6_fd=accepted6.fileno(),
    tw_port=port(tw_client), tw_fd=tw_client.fileno(),
    udp_port=port(udp), udp_fd=udp.fileno(), udpc_port=port(udpc), udpc_fd=udpc.fileno(),
)
keep = []
forks = []  # (pid, write end of the pipe it waits on)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "tw":
        tw_client.close()  # active close: this end goes FIN_WAIT2, then TIME_WAIT
        time.sleep(0.05)
        tw_server.close()
        time.sleep(0.05)
        out(done="tw")
    elif cmd == "new":
        c = socket.create_connection(server.getsockname())
        a, _ = server.accept()
        keep += [c, a]
        out(client_port=port(c), client_fd=c.fileno(), accepted_fd=a.fileno())
    elif cmd == "fork-new":  # a new connection, then a fork: both processes hold both ends
        c = socket.create_connection(server.getsockname())
        a, _ = server.accept()
        keep += [c, a]
        r2, w2 = os.pipe()
        kid = os.fork()
        if kid == 0:
            os.close(w2)
            os.read(r2, 1)  # until the parent lets go
            os._exit(0)
        os.close(r2)
        forks.append((kid, w2))
        out(client_port=port(c), client_fd=c.fileno(), accepted_fd=a.fileno(), fork_pid=kid)
    elif cmd == "quit":
        break
for kid, w2 in forks:
    os.close(w2)
    os.waitpid(kid, 0)
os.close(w)
os.waitpid(fork_pid, 0)
"""

NETNS_CHILD = r"""
import json, os, socket, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
L = socket.socket(); L.bind(("127.0.0.1", 0)); L.listen(4)
c = socket.create_connection(L.getsockname())
a, _ = L.accept()
print(json.dumps(dict(pid=os.getpid(), port=L.getsockname()[1], listen_fd=L.fileno(),
                      client_port=c.getsockname()[1], client_fd=c.fileno(), accepted_fd=a.fileno())),
      flush=True)
sys.stdin.read()
"""


class Child:
    """A subprocess speaking one JSON line per answer."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def recv(self, timeout: float = 15.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("child did not answer")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"child exited with {self.proc.wait()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, cmd: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.recv()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def child() -> Iterator[tuple[Child, dict[str, Any]]]:
    c = Child([sys.executable, "-c", CHILD])
    try:
        yield c, c.recv()
    finally:
        c.close()


@pytest.fixture
def source() -> Iterator[SocketTableSource]:
    with SocketTableSource() as src:
        yield src


def one(entries: list[SocketEntry]) -> SocketEntry:
    assert len(entries) == 1, entries
    return entries[0]


def listener(table: SocketTable, port: int) -> SocketEntry:
    return one([e for e in table.on_port("tcp", port) if e.is_listener])


def holders(entry: SocketEntry) -> set[tuple[int, int]]:
    return {(h.pid, h.fd) for h in entry.holders}


def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def test_listener_accept_queue_and_unaccepted_children(child: tuple[Child, dict[str, Any]], source) -> None:
    _, info = child
    table = source.refresh()
    lst = listener(table, info["backlog_port"])
    assert lst.family == 4 and lst.local == Endpoint(LO, info["backlog_port"]) and lst.remote is None
    assert lst.rx_queue == 2  # accept-queue length
    assert lst.tx_queue == 7  # backlog
    assert holders(lst) == {(info["pid"], info["backlog_fd"])}
    for cport, cfd in zip(info["queued_ports"], info["queued_fds"], strict=True):
        kid = one(table.connected("tcp", LO, info["backlog_port"], LO, cport))
        assert kid.state == "ESTABLISHED" and kid.inode == 0 and kid.holders == () and kid.kernel_owned
        cli = one(table.connected("tcp", LO, cport, LO, info["backlog_port"]))
        assert holders(cli) == {(info["pid"], cfd)}


def test_accepted_connection_holder_is_exact_fd(child: tuple[Child, dict[str, Any]], source) -> None:
    _, info = child
    table = source.refresh()
    acc = one(table.connected("tcp", LO, info["server_port"], LO, info["client_port"]))
    assert acc.state == "ESTABLISHED" and acc.inode != 0 and acc.uid == 0
    assert acc.holders == (Holder(info["pid"], info["accepted_fd"], comm(info["pid"])),)
    cli = one(table.connected("tcp", LO, info["client_port"], LO, info["server_port"]))
    assert holders(cli) == {(info["pid"], info["client_fd"])}
    assert acc.cookie and cli.cookie and acc.cookie != cli.cookie
    assert acc.first_seen == table.taken_at


def test_socket_shared_across_fork_has_two_holders(child: tuple[Child, dict[str, Any]], source) -> None:
    _, info = child
    table = source.refresh()
    shared = one(table.on_port("udp", info["shared_port"]))
    assert holders(shared) == {(info["pid"], info["shared_fd"]), (info["fork_pid"], info["shared_fd"])}
    psutil_pids = {
        c.pid for c in psutil.net_connections("udp") if c.laddr and c.laddr.port == info["shared_port"]
    }
    assert len(psutil_pids) == 1  # what psutil would have shown: one of the two


def test_dual_stack_listener_and_mapped_connection(child: tuple[Child, dict[str, Any]], source) -> None:
    _, info = child
    table = source.refresh()
    lst = listener(table, info["dual_port"])
    assert lst.family == 6 and lst.local == Endpoint("::", info["dual_port"]) and lst.v6only is False
    acc = one(table.connected("tcp", LO, info["dual_port"], LO, info["client4_port"]))
    assert acc.family == 6
    assert acc.local == Endpoint(MAPPED, info["dual_port"])
    assert acc.remote == Endpoint(MAPPED, info["client4_port"])
    assert holders(acc) == {(info["pid"], info["accepted6_fd"])}
    cli = one(table.connected("tcp", LO, info["client4_port"], LO, info["dual_port"]))
    assert cli.family == 4 and holders(cli) == {(info["pid"], info["client4_fd"])}


def test_udp_unconnected_and_connected(child: tuple[Child, dict[str, Any]], source) -> None:
    _, info = child
    table = source.refresh()
    unconn = one(table.on_port("udp", info["udp_port"]))
    assert unconn.state == "UNCONN" and unconn.remote is None
    assert holders(unconn) == {(info["pid"], info["udp_fd"])}
    conn = one(table.on_port("udp", info["udpc_port"]))
    assert conn.state == "ESTABLISHED" and conn.remote == Endpoint(LO, info["udp_port"])
    assert holders(conn) == {(info["pid"], info["udpc_fd"])}


def test_time_wait_keeps_cookie_and_former_holders(child: tuple[Child, dict[str, Any]], source) -> None:
    proc, info = child
    before = one(source.refresh().connected("tcp", LO, info["tw_port"], LO, info["server_port"]))
    assert holders(before) == {(info["pid"], info["tw_fd"])}
    proc.ask("tw")
    tw = one(source.refresh().connected("tcp", LO, info["tw_port"], LO, info["server_port"]))
    assert tw.state == "TIME_WAIT" and tw.inode == 0 and tw.holders == ()
    assert tw.cookie == before.cookie  # inet_twsk_alloc copies sk_cookie
    assert {(h.pid, h.fd) for h in tw.former_holders} == {(info["pid"], info["tw_fd"])}
    assert tw.first_seen == before.first_seen


def test_lookup_exact_listener_child_and_dual_stack(child: tuple[Child, dict[str, Any]], source) -> None:
    _, info = child
    table = source.refresh()
    # A SYN from a port nobody uses: the established hash misses, the listener answers.
    (syn,) = lookup_exact("tcp", 4, LO, info["server_port"], LO, 1)
    assert syn.state_text == "LISTEN" and syn.inode == listener(table, info["server_port"]).inode
    # An established tuple: the accepted socket itself.
    (est,) = lookup_exact("tcp", 4, LO, info["server_port"], LO, info["client_port"])
    acc = one(table.connected("tcp", LO, info["server_port"], LO, info["client_port"]))
    assert est.state_text == "ESTABLISHED" and est.inode == acc.inode and est.cookie == acc.cookie
    # An unaccepted child: found in the established hash, inode 0.
    (kid,) = lookup_exact("tcp", 4, LO, info["backlog_port"], LO, info["queued_ports"][0])
    assert kid.inode == 0 and kid.state_text == "ESTABLISHED"
    # An IPv4 tuple reaches the AF_INET6 dual-stack socket without a v4-mapped retry.
    (dual,) = lookup_exact("tcp", 4, LO, info["dual_port"], LO, info["client4_port"])
    assert dual.family == socket.AF_INET6 and dual.src == MAPPED
    (dual_l,) = lookup_exact("tcp", 4, LO, info["dual_port"], LO, 1)
    assert dual_l.family == socket.AF_INET6 and dual_l.state_text == "LISTEN" and dual_l.v6only is False
    # UDP: the kernel's own look-up, unconnected and connected.
    (u,) = lookup_exact("udp", 4, LO, info["udp_port"], LO, 9)
    assert u.state_text == "UNCONN" and u.sport == info["udp_port"]
    (uc,) = lookup_exact("udp", 4, LO, info["udpc_port"], LO, info["udp_port"])
    assert uc.state_text == "ESTABLISHED"
    assert lookup_exact("udp", 4, LO, info["udpc_port"], LO, 9) == []  # connected elsewhere
    assert lookup_exact("tcp", 4, LO, 1, LO, 2) == []


def test_lookup_msg_finds_a_dumped_socket_again(child: tuple[Child, dict[str, Any]]) -> None:
    _, info = child
    with DiagSocket() as d:
        for proto, port, state in (("tcp", info["server_port"], 10), ("udp", info["udpc_port"], 1)):
            (msg,) = [
                m for m in d.dump_msgs(proto, 4) if int.from_bytes(m[4:6], "big") == port and m[1] == state
            ]
            raw = d.lookup_msg(proto, msg)
            assert raw is not None and raw == parse_msg(proto, msg)
            gone = msg[:44] + b"\xfe" * 8 + msg[52:]  # another cookie: the kernel says ENOENT
            assert d.lookup_msg(proto, gone) is None


def test_dump_sees_request_and_listener(child: tuple[Child, dict[str, Any]]) -> None:
    _, info = child
    socks = dump("tcp", 4)
    lst = [s for s in socks if s.sport == info["backlog_port"] and s.state_text == "LISTEN"]
    assert len(lst) == 1 and lst[0].rqueue == 2 and lst[0].wqueue == 7
    assert any(s.family == socket.AF_INET6 and s.sport == info["dual_port"] for s in dump("tcp", 6))


def test_resolve_finds_new_connection_and_holders(child: tuple[Child, dict[str, Any]], source) -> None:
    proc, info = child
    source.refresh()
    new = proc.ask("new")
    seg = Segment(time.time(), "lo", "tcp", 4, LO, new["client_port"], LO, info["server_port"], flags="A")
    assert not source.current().connected("tcp", LO, info["server_port"], LO, new["client_port"])
    time.sleep(source.min_scan_interval)
    table = source.resolve(seg)
    assert table is not None and source.current() is table
    acc = one(table.connected("tcp", LO, info["server_port"], LO, new["client_port"]))
    assert holders(acc) == {(info["pid"], new["accepted_fd"])}
    cli = one(table.connected("tcp", LO, new["client_port"], LO, info["server_port"]))
    assert holders(cli) == {(info["pid"], new["client_fd"])}
    assert len([e for e in table.on_port("tcp", info["server_port"]) if e.is_listener]) == 1
    assert source.resolve(seg) is None


def test_connection_accepted_after_the_snapshot_is_found_at_the_next_fds(
    child: tuple[Child, dict[str, Any]], source
) -> None:
    proc, info = child
    source.refresh()
    new = proc.ask("new")
    seg = Segment(time.time(), "lo", "tcp", 4, LO, new["client_port"], LO, info["server_port"], flags="PA")
    table = source.resolve(seg)
    assert table is not None
    acc = one(table.connected("tcp", LO, info["server_port"], LO, new["client_port"]))
    assert acc.holders == (Holder(info["pid"], new["accepted_fd"], comm(info["pid"])),)
    cli = one(table.connected("tcp", LO, new["client_port"], LO, info["server_port"]))
    assert holders(cli) == {(info["pid"], new["client_fd"])}
    # Found where the kernel puts new fds, in the listener's process: no fd directory listed.
    assert source.scanner.last_find_pass == "probe" and source.scanner.last_find_listed == 0


def test_new_connection_shared_across_fork_lists_both_processes(
    child: tuple[Child, dict[str, Any]], source
) -> None:
    proc, info = child
    source.refresh()
    new = proc.ask("fork-new")
    seg = Segment(time.time(), "lo", "tcp", 4, LO, new["client_port"], LO, info["server_port"], flags="PA")
    table = source.resolve(seg)
    assert table is not None
    acc = one(table.connected("tcp", LO, info["server_port"], LO, new["client_port"]))
    assert holders(acc) == {(info["pid"], new["accepted_fd"]), (new["fork_pid"], new["accepted_fd"])}
    cli = one(table.connected("tcp", LO, new["client_port"], LO, info["server_port"]))
    assert holders(cli) == {(info["pid"], new["client_fd"]), (new["fork_pid"], new["client_fd"])}
    # The next full snapshot agrees.
    table = source.refresh()
    acc = one(table.connected("tcp", LO, info["server_port"], LO, new["client_port"]))
    assert holders(acc) == {(info["pid"], new["accepted_fd"]), (new["fork_pid"], new["accepted_fd"])}


def test_lookup_cost_is_microseconds(child: tuple[Child, dict[str, Any]]) -> None:
    _, info = child
    with DiagSocket() as d:
        n = 2000
        t = time.perf_counter()
        for _ in range(n):
            d.lookup_exact("tcp", 4, LO, info["server_port"], LO, info["client_port"])
        per = (time.perf_counter() - t) / n
    assert per < 500e-6  # typically 5-15 µs; generous for loaded CI machines


def test_route_info_matches_psutil_and_if_nameindex() -> None:
    with RouteInfo() as r:
        addrs, names = r.local_addresses(), r.interface_names()
    expected = {
        a.address.split("%")[0]
        for per_if in psutil.net_if_addrs().values()
        for a in per_if
        if a.family in (socket.AF_INET, socket.AF_INET6)
    }
    assert addrs == expected
    assert names == dict(socket.if_nameindex())


@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None, reason="needs unshare, ip")
def test_source_in_another_netns() -> None:
    c = Child(["unshare", "-n", sys.executable, "-c", NETNS_CHILD])
    try:
        info = c.recv()
        with SocketTableSource.for_pid(info["pid"]) as src:
            table = src.refresh()
            assert table.ifnames == {1: "lo"}
            assert "127.0.0.1" in table.local_addrs
            # Only the child's sockets: nothing from the test's own namespace.
            assert len(table) == 3
            lst = listener(table, info["port"])
            assert holders(lst) == {(info["pid"], info["listen_fd"])}
            acc = one(table.connected("tcp", LO, info["port"], LO, info["client_port"]))
            assert holders(acc) == {(info["pid"], info["accepted_fd"])}
            (raw,) = src.diag.lookup_exact("tcp", 4, LO, info["port"], LO, 1)
            assert raw.inode == lst.inode
        # The test's own namespace does not have that listener.
        assert all(r.inode != lst.inode for r in lookup_exact("tcp", 4, LO, info["port"], LO, 1))
    finally:
        c.close()


ORACLE_CHILD = r"""
import json, os, socket, sys
lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(4)
c = socket.create_connection(lst.getsockname()); a, _ = lst.accept()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
print(json.dumps({"pid": os.getpid()}), flush=True)
sys.stdin.readline()
"""


def test_the_table_agrees_with_psutil_on_a_childs_sockets() -> None:
    """psutil as an independent oracle: every inet socket it lists for the child (address,
    peer, state, fd) is in conntui's table with the same holder."""
    child = subprocess.Popen(
        [sys.executable, "-c", ORACLE_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        pid = json.loads(child.stdout.readline())["pid"]
        theirs = [c for c in psutil.Process(pid).net_connections(kind="inet") if c.fd >= 0]
        assert len(theirs) == 4, theirs  # listener, client, accepted, UDP
        table = SocketTableSource().refresh()
        for c in theirs:
            proto = "tcp" if c.type == socket.SOCK_STREAM else "udp"
            mine = [
                e
                for e in table.entries
                if e.proto == proto
                and e.local == Endpoint(c.laddr.ip, c.laddr.port)
                and (e.remote is None) == (not c.raddr)
                and (not c.raddr or e.remote == Endpoint(c.raddr.ip, c.raddr.port))
            ]
            assert len(mine) == 1, (c, mine)
            assert Holder(pid, c.fd, mine[0].holders[0].process) in mine[0].holders, (c, mine[0])
            if proto == "tcp":
                assert mine[0].state == c.status.replace("NONE", "UNCONN"), (c, mine[0])
    finally:
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(5)
