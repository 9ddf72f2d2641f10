"""Conntrack look-ups against real NAT in throw-away network namespaces.

Two namespaces joined by a veth pair (10.232.0.1/24 "srv" ↔ 10.232.0.2/24 "cli"): the server
namespace REDIRECTs :8081 to :9000 in PREROUTING. Traffic never leaves the namespaces this
module creates, every wait is bounded, and the namespaces (with their rules and the veth) are
deleted after each test.

Each test also captures the segments with conntui's own AF_PACKET capture inside the
namespace, so the direction rules in ``conntui/sockets/conntrack.py`` are checked against
what a tap really sees, not assumed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from conntui.capture import LiveCapture
from conntui.decode import decode_frame
from conntui.model import PACKET_HOST, PACKET_OUTGOING, FlowKey, Segment
from conntui.sockets.conntrack import (
    CTA_TUPLE_ORIG,
    CTA_TUPLE_REPLY,
    IPS_DST_NAT,
    IPS_SRC_NAT,
    Conntrack,
    local_socket_tuple,
)
from conntui.sockets.netlink import run_in_netns

from .conftest import holder_pairs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, iptables, ctnetlink)"),
]

SRV, CLI = "10.232.0.1", "10.232.0.2"
DIALLED, DAEMON = 8081, 9000
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
AF4 = socket.AF_INET


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=check)


def _nft(chain: str, hook: str, priority: int, rule: str) -> str:
    """The nft script equivalent of one iptables nat rule (table ``ctt``)."""
    body = f"  type nat hook {hook} priority {priority};\n  {rule}\n"
    return f"table ip ctt {{\n chain {chain} {{\n{body} }}\n}}\n"


@dataclass
class Net:
    srv: str  # namespace names
    cli: str
    srv_if: str
    cli_if: str
    made: list[socket.socket] = field(default_factory=list)

    @property
    def srv_path(self) -> str:
        return f"/run/netns/{self.srv}"

    @property
    def cli_path(self) -> str:
        return f"/run/netns/{self.cli}"

    def sock(self, ns_path: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket created inside a namespace (it stays there; usable from any thread)."""
        s = run_in_netns(ns_path, lambda: socket.socket(AF4, kind))
        s.settimeout(5)
        self.made.append(s)
        return s

    def capture(self, ns_path: str, iface: str) -> LiveCapture:
        return run_in_netns(ns_path, lambda: LiveCapture(iface, bufsize=1 << 20))

    def nat(self, ns: str, rule: str, nft: str) -> None:
        """Add an iptables nat rule; fall back on an nft script; skip if neither works."""
        if shutil.which("iptables"):
            done = _run(
                "ip", "netns", "exec", ns, "iptables", "-w", "5", "-t", "nat", *rule.split(), check=False
            )
            if done.returncode == 0:
                return
            why = done.stderr.strip()
        else:
            why = "not installed"
        alt = subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-f", "-"],
            input=nft,
            capture_output=True,
            text=True,
            timeout=20,
        )
        if alt.returncode != 0:
            pytest.skip(
                "cannot install a NAT rule (kernel without conntrack/NAT?): "
                f"iptables: {why}; nft: {alt.stderr.strip()}"
            )


@pytest.fixture
def net() -> Iterator[Net]:
    if shutil.which("ip") is None:
        pytest.skip("ip (iproute2) not installed")
    if shutil.which("iptables") is None and shutil.which("nft") is None:
        pytest.skip("neither iptables nor nft is installed")
    tag = f"{os.getpid() % 100000}{random.randrange(1000):03d}"
    n = Net(srv=f"ctt-s{tag}", cli=f"ctt-c{tag}", srv_if=f"cts{tag}"[:15], cli_if=f"ctc{tag}"[:15])
    try:
        _run("ip", "netns", "add", n.srv)
        _run("ip", "netns", "add", n.cli)
        # Created inside the server namespace with its peer inside the client one: the veth
        # never exists in the caller's namespace.
        _run(
            "ip",
            "-n",
            n.srv,
            "link",
            "add",
            n.srv_if,
            "type",
            "veth",
            "peer",
            "name",
            n.cli_if,
            "netns",
            n.cli,
        )
        for ns, ifname, addr in ((n.srv, n.srv_if, SRV), (n.cli, n.cli_if, CLI)):
            _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
            _run("ip", "-n", ns, "link", "set", ifname, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        n.nat(
            n.srv,
            f"-A PREROUTING -p tcp --dport {DIALLED} -j REDIRECT --to-ports {DAEMON}",
            _nft("pre", "prerouting", -100, f"tcp dport {DIALLED} redirect to :{DAEMON}"),
        )
        n.nat(
            n.srv,
            f"-A PREROUTING -p udp --dport {DIALLED} -j REDIRECT --to-ports {DAEMON}",
            _nft("preu", "prerouting", -100, f"udp dport {DIALLED} redirect to :{DAEMON}"),
        )
        yield n
    finally:
        for s in n.made:
            s.close()
        for ns in (n.srv, n.cli):
            _run("ip", "netns", "del", ns, check=False)


def _segments(cap: LiveCapture, want: Callable[[list[Segment]], bool], timeout: float = 3.0) -> list[Segment]:
    """Captured TCP/UDP segments until ``want(segments)`` holds or ``timeout`` passes."""
    segs: list[Segment] = []
    deadline = time.monotonic() + timeout
    while not want(segs):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for frame in cap.read(min(left, 0.2)):
            seg = decode_frame(frame)
            if seg is not None:
                segs.append(seg)
    return segs


def _with_payload(segs: list[Segment], pkttype: int) -> list[Segment]:
    return [s for s in segs if s.pkttype == pkttype and (s.payload_len or s.proto == "udp")]


def _original_dst(conn: socket.socket) -> tuple[str, int]:
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)  # a struct sockaddr_in
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntoa(raw[4:8]), port


def _tuple(conn: socket.socket) -> tuple[str, int, str, int]:
    local, peer = conn.getsockname(), conn.getpeername()
    return (local[0], local[1], peer[0], peer[1])


def test_redirect_tcp_both_directions(net: Net) -> None:
    cap = net.capture(net.srv_path, net.srv_if)
    try:
        listener = net.sock(net.srv_path)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", DAEMON))
        listener.listen(4)
        client = net.sock(net.cli_path)
        client.connect((SRV, DIALLED))
        conn, _ = listener.accept()
        net.made.append(conn)
        conn.settimeout(5)
        client.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        conn.sendall(b"pong")
        assert client.recv(4) == b"pong"
        cport = client.getsockname()[1]

        segs = _segments(
            cap, lambda s: bool(_with_payload(s, PACKET_HOST) and _with_payload(s, PACKET_OUTGOING))
        )
    finally:
        cap.close()

    # What the tap saw: the dialled port both ways, never the daemon's.
    incoming = _with_payload(segs, PACKET_HOST)
    outgoing = _with_payload(segs, PACKET_OUTGOING)
    assert incoming and outgoing, segs
    in_key, out_key = incoming[0].key, outgoing[0].key
    assert in_key == FlowKey("tcp", CLI, cport, SRV, DIALLED)
    assert out_key == FlowKey("tcp", SRV, DIALLED, CLI, cport)
    assert all(DAEMON not in (s.sport, s.dport) for s in segs)

    with Conntrack(net.srv_path) as ct:
        m_in = ct.lookup(in_key, 4)
        m_out = ct.lookup(out_key, 4)
        m_out_hint = ct.lookup(out_key, AF4, outgoing=True)
        assert m_in is not None, ct.last_error
        assert m_in == m_out == m_out_hint
        # The captured incoming tuple is ORIG; the captured reply is ORIG reversed.
        assert m_in.proto == "tcp"
        assert m_in.original == in_key
        assert m_in.original.reversed() == out_key
        assert m_in.reply == FlowKey("tcp", SRV, DAEMON, CLI, cport)
        assert m_in.nat and m_in.dst_nat and not m_in.src_nat
        assert m_in.status & IPS_DST_NAT and not m_in.status & IPS_SRC_NAT

        # The hash holds both tuples, whichever attribute carries the question...
        assert ct.get(m_in.reply, 4, CTA_TUPLE_ORIG) == m_in
        assert ct.get(m_in.original, 4, CTA_TUPLE_REPLY) == m_in
        assert ct.get(m_in.reply, 4, CTA_TUPLE_REPLY) == m_in
        # ...but not the wire reply: only the reversed second try finds it.
        assert ct.get(out_key, 4, CTA_TUPLE_ORIG) is None
        assert ct.last_error is not None and ct.last_error.errno == errno.ENOENT
        assert ct.get(out_key, 4, CTA_TUPLE_REPLY) is None

    # The local socket, from either captured direction, is the accepted one.
    want = (SRV, DAEMON, CLI, cport)
    assert _tuple(conn) == want
    assert local_socket_tuple(m_in, in_key) == want
    assert local_socket_tuple(m_in, out_key) == want
    is_local = {SRV, "127.0.0.1"}.__contains__
    assert local_socket_tuple(m_in, in_key, is_local=is_local) == want
    assert local_socket_tuple(m_in, out_key, is_local=is_local) == want

    # The daemon's own view agrees: SO_ORIGINAL_DST is ORIG's destination.
    assert _original_dst(conn) == (m_in.original.dst, m_in.original.dport) == (SRV, DIALLED)

    # The client namespace has no rules, so no conntrack entry (and no exception).
    with Conntrack(net.cli_path) as ct_cli:
        assert ct_cli.lookup(in_key, 4) is None
        assert ct_cli.last_error is not None and ct_cli.last_error.errno == errno.ENOENT

    # The conntrack CLI reports the same entry (without it, the test skips: CI fails on that).
    if shutil.which("conntrack") is None:
        pytest.skip("the conntrack CLI is not installed (apt-get install conntrack)")
    shown = _run("ip", "netns", "exec", net.srv, "conntrack", "-L", "-p", "tcp", "--dport", str(DIALLED))
    line = next(x for x in shown.stdout.splitlines() if f"sport={cport}" in x)
    assert f"src={SRV} dst={CLI} sport={DAEMON} dport={cport}" in line


def test_redirect_udp(net: Net) -> None:
    cap = net.capture(net.srv_path, net.srv_if)
    try:
        server = net.sock(net.srv_path, socket.SOCK_DGRAM)
        server.bind(("0.0.0.0", DAEMON))
        client = net.sock(net.cli_path, socket.SOCK_DGRAM)
        client.connect((SRV, DIALLED))
        client.send(b"ping")
        data, peer = server.recvfrom(16)
        assert data == b"ping"
        server.sendto(b"pong", peer)
        assert client.recv(16) == b"pong"  # de-NATed back to :8081, so the connected socket takes it
        cport = client.getsockname()[1]
        segs = _segments(
            cap, lambda s: bool(_with_payload(s, PACKET_HOST) and _with_payload(s, PACKET_OUTGOING))
        )
    finally:
        cap.close()
    in_key = _with_payload(segs, PACKET_HOST)[0].key
    out_key = _with_payload(segs, PACKET_OUTGOING)[0].key
    assert in_key == FlowKey("udp", CLI, cport, SRV, DIALLED)
    assert out_key == in_key.reversed()

    with Conntrack(net.srv_path) as ct:
        m = ct.lookup(in_key, 4)
        assert m is not None, ct.last_error
        assert ct.lookup(out_key, 4) == m
    assert m.proto == "udp" and m.nat
    assert m.reply == FlowKey("udp", SRV, DAEMON, CLI, cport)
    assert local_socket_tuple(m, in_key) == local_socket_tuple(m, out_key) == (SRV, DAEMON, CLI, cport)


def test_snat_locally_opened(net: Net) -> None:
    """The client namespace SNATs its own connection: there the tap sees REPLY⁻¹ going out
    and REPLY coming in, and the local socket is ORIG. The server namespace, behind it, sees
    the translated client port and still finds its own (REDIRECT) entry."""
    sport = 45678
    net.nat(
        net.cli,
        f"-A POSTROUTING -o {net.cli_if} -p tcp --sport {sport} -j SNAT --to-source {CLI}:20000-20099",
        _nft(
            "post", "postrouting", 100, f'oifname "{net.cli_if}" tcp sport {sport} snat to {CLI}:20000-20099'
        ),
    )
    cli_cap = net.capture(net.cli_path, net.cli_if)
    srv_cap = net.capture(net.srv_path, net.srv_if)
    try:
        listener = net.sock(net.srv_path)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", DAEMON))
        listener.listen(4)
        client = net.sock(net.cli_path)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        client.bind((CLI, sport))
        client.connect((SRV, DIALLED))
        conn, _ = listener.accept()
        net.made.append(conn)
        conn.settimeout(5)
        client.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        conn.sendall(b"pong")
        assert client.recv(4) == b"pong"

        def both(s: list[Segment]) -> bool:
            return bool(_with_payload(s, PACKET_HOST) and _with_payload(s, PACKET_OUTGOING))

        cli_segs = _segments(cli_cap, both)
        srv_segs = _segments(srv_cap, both)
    finally:
        cli_cap.close()
        srv_cap.close()

    out_key = _with_payload(cli_segs, PACKET_OUTGOING)[0].key
    in_key = _with_payload(cli_segs, PACKET_HOST)[0].key
    wire_port = out_key.sport
    assert 20000 <= wire_port <= 20099
    assert out_key == FlowKey("tcp", CLI, wire_port, SRV, DIALLED)
    assert in_key == out_key.reversed()

    with Conntrack(net.cli_path) as ct:
        m = ct.lookup(out_key, 4)
        assert m is not None, ct.last_error
        assert ct.lookup(in_key, 4) == m
        assert ct.lookup(out_key, 4, outgoing=True) == m
    assert m.original == FlowKey("tcp", CLI, sport, SRV, DIALLED)
    assert m.reply == in_key  # the captured incoming segment is REPLY as is
    assert m.reply.reversed() == out_key  # the captured outgoing one is REPLY reversed
    assert m.status & IPS_SRC_NAT and not m.status & IPS_DST_NAT
    assert m.src_nat and not m.dst_nat
    want_cli = (CLI, sport, SRV, DIALLED)
    assert _tuple(client) == want_cli
    assert local_socket_tuple(m, out_key) == local_socket_tuple(m, in_key) == want_cli
    cli_local = {CLI}.__contains__
    assert local_socket_tuple(m, out_key, is_local=cli_local) == want_cli

    # The server side of the same connection: its captured incoming tuple has the SNAT'd port.
    srv_in = _with_payload(srv_segs, PACKET_HOST)[0].key
    assert srv_in == out_key
    with Conntrack(net.srv_path) as ct:
        ms = ct.lookup(srv_in, 4)
        assert ms is not None, ct.last_error
    assert ms.reply == FlowKey("tcp", SRV, DAEMON, CLI, wire_port)
    assert local_socket_tuple(ms, srv_in) == _tuple(conn) == (SRV, DAEMON, CLI, wire_port)
    assert _original_dst(conn) == (SRV, DIALLED)


def test_loopback_output_redirect(net: Net) -> None:
    """OUTPUT-chain REDIRECT on ``lo``: both ends are local and both copies of every segment
    carry the egress form (REPLY⁻¹ towards the daemon, ORIG⁻¹ back); each segment maps to
    the socket that receives it."""
    dialled, daemon = 8082, 9001
    net.nat(
        net.srv,
        f"-A OUTPUT -o lo -p tcp --dport {dialled} -j REDIRECT --to-ports {daemon}",
        _nft("out", "output", -100, f'oifname "lo" tcp dport {dialled} redirect to :{daemon}'),
    )
    cap = net.capture(net.srv_path, "lo")
    try:
        listener = net.sock(net.srv_path)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", daemon))
        listener.listen(4)
        client = net.sock(net.srv_path)
        client.connect(("127.0.0.1", dialled))
        conn, _ = listener.accept()
        net.made.append(conn)
        conn.settimeout(5)
        client.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        conn.sendall(b"pong")
        assert client.recv(4) == b"pong"
        cport = client.getsockname()[1]
        segs = _segments(cap, lambda s: len([x for x in s if x.payload_len]) >= 2)
        segs = [s for s in segs if cport in (s.sport, s.dport)]
    finally:
        cap.close()
    forward = [s for s in segs if s.sport == cport]
    backward = [s for s in segs if s.dport == cport]
    # Both directions show their fully translated (egress) form on lo.
    assert forward and all(s.dport == daemon for s in forward)
    assert backward and all(s.sport == dialled for s in backward)
    to_daemon, to_client = forward[0].key, backward[0].key
    assert to_daemon == FlowKey("tcp", "127.0.0.1", cport, "127.0.0.1", daemon)
    assert to_client == FlowKey("tcp", "127.0.0.1", dialled, "127.0.0.1", cport)

    with Conntrack(net.srv_path) as ct:
        m = ct.lookup(to_daemon, 4, outgoing=True)
        assert m is not None, ct.last_error
        assert ct.lookup(to_client, 4, outgoing=True) == m
        assert ct.lookup(to_daemon, 4) == ct.lookup(to_client, 4) == m  # via the fallback
    assert m.original == FlowKey("tcp", "127.0.0.1", cport, "127.0.0.1", dialled)
    assert m.reply == FlowKey("tcp", "127.0.0.1", daemon, "127.0.0.1", cport)
    assert m.reply.reversed() == to_daemon  # REPLY⁻¹
    assert m.original.reversed() == to_client  # ORIG⁻¹
    # Both ends are local: each segment maps to the socket that receives it.
    assert local_socket_tuple(m, to_daemon) == _tuple(conn) == ("127.0.0.1", daemon, "127.0.0.1", cport)
    assert local_socket_tuple(m, to_client) == _tuple(client) == ("127.0.0.1", cport, "127.0.0.1", dialled)
    assert _original_dst(conn) == ("127.0.0.1", dialled)


def test_lookup_cost(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    """Microseconds per look-up: a hit on the first GET, a hit on the reversed second GET,
    and a miss (two GETs)."""
    listener = net.sock(net.srv_path)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", DAEMON))
    listener.listen(4)
    client = net.sock(net.cli_path)
    client.connect((SRV, DIALLED))
    conn, _ = listener.accept()
    net.made.append(conn)
    cport = client.getsockname()[1]
    in_key = FlowKey("tcp", CLI, cport, SRV, DIALLED)
    miss = FlowKey("tcp", CLI, 1, SRV, 2)
    rounds = 3000

    def cost(ct: Conntrack, key: FlowKey, expect: bool) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(rounds):
                found = ct.lookup(key, 4)
            best = min(best, (time.perf_counter() - t0) / rounds * 1e6)
            assert (found is not None) == expect
        return best

    with Conntrack(net.srv_path) as ct:
        hit = cost(ct, in_key, True)
        reversed_hit = cost(ct, in_key.reversed(), True)
        missed = cost(ct, miss, False)
    with capsys.disabled():
        print(
            f"\nconntrack lookup: hit {hit:.1f} µs, hit on the reversed try {reversed_hit:.1f} µs, "
            f"miss {missed:.1f} µs"
        )
    assert hit < 1000  # a sanity bound only; see the printed figures


def test_missing_namespace_raises_but_gone_one_does_not(net: Net) -> None:
    with pytest.raises(FileNotFoundError):
        Conntrack("/run/netns/ctt-does-not-exist")
    ct = Conntrack(net.cli_path)
    try:
        ct.close()
        assert ct.lookup(FlowKey("tcp", CLI, 1, SRV, 2), 4) is None
        assert not ct.available
    finally:
        with contextlib.suppress(OSError):
            ct.close()


def test_conntui_names_both_ends_of_a_loopback_output_redirect(conntui: Any) -> None:
    """conntui itself on ``lo`` with an OUTPUT-chain REDIRECT: every segment's sender and
    receiver are the sockets this test made. The SYN is captured already translated (to
    the daemon's port), while the client's socket (SYN_SENT) holds the dialled port: its
    sender is found through conntrack's original tuple."""
    dialled, daemon = 8084, 9002
    ns = f"fx-redir{os.getpid() % 100000}"
    path = f"/run/netns/{ns}"
    made: list[socket.socket] = []
    _run("ip", "netns", "add", ns)
    try:
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        Net(ns, ns, "", "").nat(
            ns,
            f"-A OUTPUT -o lo -p tcp --dport {dialled} -j REDIRECT --to-ports {daemon}",
            _nft("out", "output", -100, f'oifname "lo" tcp dport {dialled} redirect to :{daemon}'),
        )
        listener = run_in_netns(path, lambda: socket.socket(AF4, socket.SOCK_STREAM))
        made.append(listener)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", daemon))
        listener.listen(4)
        cap = conntui("--headless", "--json", "-N", ns, "-i", "lo", "-p", f"{dialled},{daemon}")
        time.sleep(0.5)  # the first socket table is read
        client = run_in_netns(path, lambda: socket.socket(AF4, socket.SOCK_STREAM))
        made.append(client)
        client.settimeout(5)
        client.connect(("127.0.0.1", dialled))
        conn, _ = listener.accept()
        made.append(conn)
        conn.settimeout(5)
        client.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        conn.sendall(b"pong")
        assert client.recv(4) == b"pong"
        cport = client.getsockname()[1]
        fds = {"client": client.fileno(), "listener": listener.fileno(), "conn": conn.fileno()}
        rows, err, code = cap.stop(settle=1.0)
        assert code == 0, err
    finally:
        for s in made:
            s.close()
        _run("ip", "netns", "del", ns, check=False)
    me = os.getpid()
    mine = [r for r in rows if cport in (r["sport"], r["dport"])]
    summary = "\n".join(
        f"{r['sport']}->{r['dport']} {r['flags']} {r['match']} sender={holder_pairs(r['sender'])} "
        f"receiver={holder_pairs(r['receiver'])}"
        for r in mine
    )
    syns = [r for r in mine if r["flags"] == "S"]
    assert len(syns) == 1, summary
    syn = syns[0]
    assert syn["dport"] == daemon, summary  # captured translated, on its way to the daemon
    assert holder_pairs(syn["receiver"]) == {(me, fds["listener"])}, summary
    assert holder_pairs(syn["sender"]) == {(me, fds["client"])}, summary  # the SYN_SENT socket
    assert any("NAT" in step["what"] or "conntrack" in step["what"] for step in syn["steps"]), syn
    (synack,) = [r for r in mine if r["flags"] == "SA"]
    assert holder_pairs(synack["sender"]) == {(me, fds["listener"])}, summary  # for the listener
    assert holder_pairs(synack["receiver"]) == {(me, fds["client"])}, summary
    data = [r for r in mine if r["payload_len"]]
    assert len(data) == 2, summary
    for r in data:
        ends = (fds["client"], fds["conn"]) if r["sport"] == cport else (fds["conn"], fds["client"])
        assert holder_pairs(r["sender"]) == {(me, ends[0])}, summary
        assert holder_pairs(r["receiver"]) == {(me, ends[1])}, summary
