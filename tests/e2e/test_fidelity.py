"""Demux fidelity (issue 4) against the real kernel: the listener the kernel's scoring picks,
TIME_WAIT, "no socket" predictions whose answer never comes, forwarded traffic and a full
accept queue.

Every test first proves what the kernel really did with ground truth of its own (which
``accept()`` returned, an errno, ``ss``, a ``/proc/net`` counter) and only then checks that
conntui's rows say the same: match, pid and fd of what the test opened. A kernel check that
fails raises ``KernelDisagrees`` (never an AssertionError), so an ``xfail`` on a conntui gap
(``raises=AssertionError``) can never hide a changed kernel or a broken setup.

Traffic stays on ``lo`` or inside network namespaces these tests create (prefix ``fid-``),
every wait is bounded and every namespace is deleted afterwards, even on failure.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conntui.sockets.netlink import run_in_netns

from .conftest import HERE, REPO, Actor, Conntui, free_port, holder_pairs

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

Row = dict[str, Any]


class KernelDisagrees(Exception):
    """The kernel did not do what the test set up: a setup or kernel problem, not conntui's."""


def kernel(cond: object, what: str) -> None:
    if not cond:
        raise KernelDisagrees(what)


# --------------------------------------------------------------------------- row helpers


def tcp(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r["proto"] == "tcp"]


def brief(r: Row) -> str:
    """One row as the failure messages (and the lead) need it."""
    rec = r.get("receiver")
    return json.dumps(
        {
            k: r.get(k)
            for k in ("record", "family", "src", "sport", "dst", "dport", "flags", "payload_len", "match")
        }
        | {
            "receiver": rec
            and {
                k: rec.get(k) for k in ("state", "local", "holders", "former_holders", "rx_queue", "tx_queue")
            },
            "listener": r.get("listener") and r["listener"].get("holders"),
            "explain": r.get("explain"),
            "notes": r.get("notes"),
            "steps": [f"{s['what']} → {s['result']}" for s in r.get("steps", [])],
        },
        ensure_ascii=False,
    )


def dump(rows: list[Row]) -> str:
    return "\n" + "\n".join(brief(r) for r in rows)


def one(rows: list[Row], **want: Any) -> Row:
    found = [r for r in rows if all(r.get(k) == v for k, v in want.items())]
    assert len(found) == 1, f"expected one row with {want}, got {len(found)}:{dump(rows)}"
    return found[0]


def said(r: Row) -> str:
    """Everything conntui says about a row: explanation, lookup steps and notes."""
    steps = " ".join(f"{s['what']} {s['result']}" for s in r.get("steps", []))
    return " ".join([r.get("explain", ""), steps, *r.get("notes", [])])


def pids_named(r: Row) -> set[int]:
    """Every pid a row names as receiver, listener or candidate."""
    socks = [r.get("receiver"), r.get("listener"), *(r.get("candidates") or [])]
    return {h["pid"] for s in socks if s for h in s.get("holders", [])}


def dual_free_port() -> int:
    """A port free on ::1 (TCP and UDP) and on 0.0.0.0 (TCP)."""
    for _ in range(100):
        port = free_port("::1")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            continue
        finally:
            s.close()
        return port
    raise RuntimeError("no port free on both families")


def refused(reply: dict[str, Any]) -> bool:
    return reply.get("errno") == 111  # ECONNREFUSED


def ask(actor: Actor, op: str, **kw: Any) -> dict[str, Any]:
    """One actor command whose ``timeout`` reaches the actor (``Actor.__call__`` keeps that
    keyword for itself); errors are returned, not raised."""
    assert actor.proc.stdin is not None
    actor.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
    actor.proc.stdin.flush()
    return actor._read(float(kw.get("timeout", 5)) + 10)


def nothing_to_accept(actor: Actor, fd: int) -> bool:
    """The listener ``fd`` of ``actor`` has no connection waiting (accept times out)."""
    reply = ask(actor, "accept", fd=fd, timeout=0.3)
    return "timed out" in reply.get("error", "")


# --------------------------------------------------------------------------- raw TCP


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_segment(
    src: str, sport: int, dst: str, dport: int, seq: int, ack: int, flags: str, payload: bytes = b""
) -> bytes:
    """A TCP header (no options) plus payload, with its checksum over the IPv4 pseudo-header."""
    bits = sum(bit for ch, bit in zip("FSRPAU", (1, 2, 4, 8, 16, 32), strict=True) if ch in flags)
    header = struct.pack(
        "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, bits, 4096, 0, 0
    )
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst)
    pseudo += struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(header) + len(payload))
    csum = _checksum(pseudo + header + payload)
    return header[:16] + struct.pack("!H", csum) + header[18:] + payload


def inject_tcp(
    ns: str, src: str, sport: int, dst: str, dport: int, seq: int, ack: int, flags: str, payload: bytes
) -> None:
    """Send one hand-built TCP segment to a loopback address from inside namespace ``ns``."""
    assert dst.startswith("127.") and src.startswith("127."), "loopback only"
    raw = run_in_netns(
        f"/run/netns/{ns}", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    )
    try:
        raw.sendto(tcp_segment(src, sport, dst, dport, seq, ack, flags, payload), (dst, 0))
    finally:
        raw.close()


# --------------------------------------------------------------------------- namespaces


class NsActor(Actor):
    """The harness's actor, started inside a network namespace."""

    def __init__(self, ns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(HERE / "actor.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            self.pid = self._read(10)["pid"]
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise


class NsConntui(Conntui):
    """``conntui --headless --json`` capturing inside a network namespace (``ip netns exec``
    execs, so the pid is conntui's own and SIGINT reaches it)."""

    def __init__(self, ns: str, *args: str) -> None:
        self.args = ["ip", "netns", "exec", ns, sys.executable, "-m", "conntui", *args]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        self.stderr_head = b""


def _run(*cmd: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, input=stdin)
    if check and done.returncode != 0:
        raise KernelDisagrees(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done


class Netns:
    """Throw-away namespaces plus the actors and captures living in them; ``close`` stops the
    processes first, then deletes every namespace (their veths, rules and sockets go too)."""

    def __init__(self) -> None:
        self.tag = f"{os.getpid() % 100000}-{random.randrange(10000)}"
        self.names: list[str] = []
        self.actors: list[NsActor] = []
        self.captures: list[NsConntui] = []

    def add(self, role: str) -> str:
        name = f"fid-{self.tag}-{role}"
        self.names.append(name)
        _run("ip", "netns", "add", name)
        _run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def sh(self, ns: str, *cmd: str, check: bool = True, stdin: str | None = None) -> str:
        return _run("ip", "netns", "exec", ns, *cmd, check=check, stdin=stdin).stdout

    def sysctl(self, ns: str, setting: str) -> None:
        self.sh(ns, "sysctl", "-q", "-w", setting)

    def actor(self, ns: str) -> NsActor:
        a = NsActor(ns)
        self.actors.append(a)
        return a

    def conntui(self, ns: str, *args: str) -> NsConntui:
        c = NsConntui(ns, *args)
        self.captures.append(c)  # killed by close() even if it never gets ready
        c._wait_ready()
        return c

    def counters(self, ns: str, path: str) -> dict[str, int]:
        """``/proc/net/netstat`` or ``/proc/net/snmp`` of ``ns``: {"TcpExt.ListenOverflows": n, ...}."""
        lines = self.sh(ns, "cat", path).splitlines()
        out: dict[str, int] = {}
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            head, *keys = names.split()
            _, *vals = values.split()
            for k, v in zip(keys, vals, strict=False):
                out[f"{head[:-1]}.{k}"] = int(v)
        return out

    def ss(self, ns: str, *filt: str) -> str:
        return self.sh(ns, "ss", "-tanH", *filt)

    def veth(self, a: str, a_if: str, b: str, b_if: str) -> None:
        """A veth pair created inside ``a`` with its peer in ``b``: never in the caller's namespace."""
        _run("ip", "-n", a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b)

    def addr(self, ns: str, ifname: str, cidr: str) -> None:
        _run("ip", "-n", ns, "addr", "add", cidr, "dev", ifname)
        _run("ip", "-n", ns, "link", "set", ifname, "up")

    def close(self) -> None:
        for c in self.captures:
            c.kill()
        for a in self.actors:
            a.close()
        for name in self.names:
            _run("ip", "netns", "del", name, check=False)


@pytest.fixture
def netns() -> Iterator[Netns]:
    if shutil.which("ip") is None:
        pytest.skip("ip (iproute2) not installed")
    n = Netns()
    try:
        yield n
    finally:
        n.close()


# =========================================================================== 1. SO_BINDTODEVICE


def _bound_and_plain(conntui: Any, actors: Any, port: int, bound_last: bool) -> dict[str, Any]:
    """Two SO_REUSEPORT listeners on 0.0.0.0:P, one also bound to ``lo`` with SO_BINDTODEVICE
    (compute_score 2+1 against 1+1; separate reuseport groups, as a group shares its device),
    one client connection, accept()ed by whichever listener the kernel gave it to, and 16
    bytes of data on it. Returns who is who and the rows."""
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port))
    plain, bound, client = actors(), actors(), actors()
    if bound_last:
        lp = plain("listen", host="0.0.0.0", port=port, reuseport=True)
        lb = bound("listen", host="0.0.0.0", port=port, reuseport=True, device="lo")
        winner, w_lst, loser, l_lst = bound, lb, plain, lp
    else:
        lb = bound("listen", host="0.0.0.0", port=port, reuseport=True, device="lo")
        lp = plain("listen", host="0.0.0.0", port=port, reuseport=True)
        winner, w_lst, loser, l_lst = plain, lp, bound, lb
    conn = client("connect", host="127.0.0.1", port=port)
    acc = ask(winner, "accept", fd=w_lst["fd"], timeout=3)
    kernel("fd" in acc, f"the {'bound' if bound_last else 'unbound'} listener accepted: {acc}")
    kernel(nothing_to_accept(loser, l_lst["fd"]), "the other listener got nothing")
    client("send", fd=conn["fd"], data="sixteen bytes!!!")
    kernel(
        winner("recv", fd=acc["fd"], n=16)["data"] == "sixteen bytes!!!", "data reached the accepted socket"
    )
    rows, err, code = cap.stop()
    assert code == 0, err
    return {
        "rows": tcp(rows),
        "plain": plain,
        "lp": lp,
        "bound": bound,
        "lb": lb,
        "winner": winner,
        "w_lst": w_lst,
        "client": client,
        "conn": conn,
        "acc": acc,
    }


def test_device_bound_listener_beats_an_unbound_one(conntui, actors, port):
    """The device-bound listener listens last, so it is both the better-scored and the first
    in the bucket: the kernel gives it the SYN, and conntui says why."""
    t = _bound_and_plain(conntui, actors, port, bound_last=True)
    plain, lp, bound, lb = t["plain"], t["lp"], t["bound"], t["lb"]
    syn = one(t["rows"], flags="S", dport=port)
    assert syn["match"] == "listener", dump([syn])
    assert holder_pairs(syn["receiver"]) == {(bound.pid, lb["fd"])}, dump([syn])
    assert syn["receiver"]["local"] == f"0.0.0.0:{port}", dump([syn])
    assert syn["receiver"]["bound_ifindex"] == socket.if_nametoindex("lo"), dump([syn])
    assert plain.pid not in {h["pid"] for c in syn["candidates"] for h in c["holders"]}, dump([syn])
    assert "SO_BINDTODEVICE" in syn["explain"] and "bound to lo" in syn["explain"], dump([syn])
    # the lookup steps name the unbound listener as beaten, with its lower score
    wild = next(s["result"] for s in syn["steps"] if "wildcard" in s["what"])
    assert f"{bound.pid}] fd {lb['fd']} on 0.0.0.0:{port} (score 3)" in wild, dump([syn])
    assert f"beats 0.0.0.0:{port} " in wild and f"{plain.pid}] fd {lp['fd']} (score 2)" in wild, dump([syn])
    assert holder_pairs(syn["sender"]) == {(t["client"].pid, t["conn"]["fd"])}, dump([syn])


def test_connection_accepted_from_a_device_bound_listener_is_found(conntui, actors, port):
    t = _bound_and_plain(conntui, actors, port, bound_last=True)
    data = one(t["rows"], dport=port, payload_len=16)
    assert data["match"] == "established", dump([data])
    assert holder_pairs(data["receiver"]) == {(t["bound"].pid, t["acc"]["fd"])}, dump([data])
    assert holder_pairs(data["sender"]) == {(t["client"].pid, t["conn"]["fd"])}, dump([data])


def test_unbound_reuseport_listener_first_in_bucket_beats_device_bound(conntui, actors, port):
    """The device-bound listener listens first: the unbound one is now at the head of the
    bucket and, being in a reuseport group, returns from the lookup before the better-scored
    device-bound socket is even scored."""
    t = _bound_and_plain(conntui, actors, port, bound_last=False)
    plain, lp = t["plain"], t["lp"]
    syn = one(t["rows"], flags="S", dport=port)
    assert syn["match"] == "listener", dump([syn])
    assert holder_pairs(syn["receiver"]) == {(plain.pid, lp["fd"])}, dump([syn])
    data = one(t["rows"], dport=port, payload_len=16)
    assert holder_pairs(data["receiver"]) == {(plain.pid, t["acc"]["fd"])}, dump([data])


# =========================================================================== 2. IPV6_V6ONLY


def test_v6only_listener_alone_refuses_ipv4(conntui, actors):
    port = dual_free_port()
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port))
    server, client = actors(), actors()
    lst = server("listen", host="::", port=port, v6only=True)
    kernel(refused(client("connect", host="127.0.0.1", port=port)), "IPv4 connect refused")
    conn6 = client("connect", host="::1", port=port)
    kernel("fd" in conn6, f"IPv6 connect works: {conn6}")
    acc6 = server("accept", fd=lst["fd"])
    rows, err, code = cap.stop(settle=1.0)
    assert code == 0, err
    rows = tcp(rows)

    syn4 = one(rows, flags="S", family=4)
    assert syn4["match"] == "none", dump(rows)
    assert syn4["receiver"] is None and syn4["listener"] is None, dump([syn4])
    assert server.pid not in pids_named(syn4), dump([syn4])
    assert "IPV6_V6ONLY" in said(syn4), dump([syn4])
    assert any("answered with a RST" in n for n in syn4["notes"]), dump([syn4])
    rst = next(r for r in rows if r["family"] == 4 and r["sport"] == port and "R" in r["flags"])
    assert rst["record"] in syn4["related"], dump([syn4, rst])

    syn6 = one(rows, flags="S", family=6)
    assert syn6["match"] == "listener", dump([syn6])
    assert holder_pairs(syn6["receiver"]) == {(server.pid, lst["fd"])}, dump([syn6])
    assert acc6["remote"][1] == conn6["local"][1]


def test_v6only_and_ipv4_listeners_split_the_families(conntui, actors):
    port = dual_free_port()
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port))
    s6, s4, c4, c6 = actors(), actors(), actors(), actors()
    l6 = s6("listen", host="::", port=port, v6only=True)
    l4 = s4("listen", host="0.0.0.0", port=port)
    conn4 = c4("connect", host="127.0.0.1", port=port)
    conn6 = c6("connect", host="::1", port=port)
    acc4 = ask(s4, "accept", fd=l4["fd"], timeout=3)
    acc6 = ask(s6, "accept", fd=l6["fd"], timeout=3)
    kernel("fd" in acc4 and "fd" in acc6, f"both accepted: {acc4} {acc6}")
    kernel(
        acc4["remote"] == conn4["local"] and acc6["remote"][1] == conn6["local"][1], "each family to its own"
    )
    c4("send", fd=conn4["fd"], data="four")
    c6("send", fd=conn6["fd"], data="six!!!")
    kernel(s4("recv", fd=acc4["fd"], n=4)["data"] == "four", "v4 data")
    kernel(s6("recv", fd=acc6["fd"], n=6)["data"] == "six!!!", "v6 data")
    rows, err, code = cap.stop()
    assert code == 0, err
    rows = tcp(rows)

    syn4 = one(rows, flags="S", family=4)
    assert syn4["match"] == "listener", dump([syn4])
    assert syn4["receiver"]["local"] == f"0.0.0.0:{port}", dump([syn4])
    assert holder_pairs(syn4["receiver"]) == {(s4.pid, l4["fd"])}, dump([syn4])
    assert s6.pid not in {h["pid"] for c in syn4["candidates"] for h in c["holders"]}, dump([syn4])
    syn6 = one(rows, flags="S", family=6)
    assert syn6["match"] == "listener", dump([syn6])
    assert syn6["receiver"]["local"] == f"[::]:{port}", dump([syn6])
    assert holder_pairs(syn6["receiver"]) == {(s6.pid, l6["fd"])}, dump([syn6])

    d4 = one(rows, family=4, dport=port, payload_len=4)
    assert d4["match"] == "established", dump([d4])
    assert holder_pairs(d4["receiver"]) == {(s4.pid, acc4["fd"])}, dump([d4])
    d6 = one(rows, family=6, dport=port, payload_len=6)
    assert d6["match"] == "established", dump([d6])
    assert holder_pairs(d6["receiver"]) == {(s6.pid, acc6["fd"])}, dump([d6])


# =========================================================================== 3. TIME_WAIT

LO = "127.0.0.1"


def _server_time_wait(
    netns: Netns, late: bytes = b""
) -> tuple[str, int, int, NsConntui, NsActor, NsActor, dict[str, Any], dict[str, Any]]:
    """In a fresh namespace: a connection the server closes first, so the server's end of
    127.0.0.1:P ↔ 127.0.0.1:C is left in TIME_WAIT. The client binds C itself (SO_REUSEADDR)
    so that it can bind it again later. With ``late``, a hand-made segment C → P carrying it
    is injected right after the client's close (the TIME_WAIT entry exists by then: the
    whole close runs in softirq on loopback before close() returns; the checks below prove it).

    ``tcp_rfc1337=1`` in that namespace only: the TIME_WAIT re-ACKs a late segment, the
    closed client port answers that ACK with a RST, and with the default 0 that RST would
    kill the TIME_WAIT entry (RFC 1337 "TIME-WAIT assassination") before the next check.
    """
    ns = netns.add("tw")
    netns.sysctl(ns, "net.ipv4.tcp_rfc1337=1")
    port, cport = 24000 + random.randrange(1000), 26000 + random.randrange(1000)
    cap = netns.conntui(ns, "--headless", "--json", "-i", "lo", "-p", str(port))
    srv, cli = netns.actor(ns), netns.actor(ns)
    lst = srv("listen", host=LO, port=port)
    conn = cli("connect", host=LO, port=port, bind=[LO, cport])
    kernel("fd" in conn, f"first connect: {conn}")
    acc = srv("accept", fd=lst["fd"])
    cli("send", fd=conn["fd"], data="first")
    kernel(srv("recv", fd=acc["fd"], n=5)["data"] == "first", "first data")
    time.sleep(1.2)  # past a periodic refresh: the table has seen both ends with their holders
    srv("close", fd=acc["fd"])  # the server closes first: FIN_WAIT → TIME_WAIT on its side
    kernel(cli("recv", fd=conn["fd"], n=1)["data"] == "", "client saw the server's FIN")
    cli("close", fd=conn["fd"])
    if late:
        inject_tcp(ns, LO, cport, LO, port, random.randrange(1 << 32), 1, "PA", late)
    deadline = time.monotonic() + 3
    while f"{LO}:{port} {LO}:{cport}" not in " ".join(netns.ss(ns, "state", "time-wait").split()):
        kernel(time.monotonic() < deadline, f"no TIME_WAIT: {netns.ss(ns)}")
        time.sleep(0.05)
    kernel(f":{cport} " not in netns.ss(ns, "sport", "=", f":{cport}"), "the client's socket is gone")
    return ns, port, cport, cap, srv, cli, lst, acc


def _late_segment(netns: Netns) -> dict[str, Any]:
    late = b"late segment"
    _, port, cport, cap, srv, cli, _, acc = _server_time_wait(netns, late)
    time.sleep(0.3)
    rows, err, code = cap.stop()
    assert code == 0, err
    rows = tcp(rows)
    seg = one(rows, sport=cport, dport=port, payload_len=len(late))
    before = [r for r in rows if r["record"] < seg["record"]]
    fins = {r["sport"] for r in before if "F" in r["flags"]}
    kernel(fins == {port, cport}, f"the whole close was captured before the late segment: {dump(before)}")
    after = [r for r in rows if r["record"] > seg["record"]]
    # what the kernel did, as captured: the TIME_WAIT re-ACKed, the closed port answered RST
    kernel(after and after[0]["sport"] == port and after[0]["flags"] == "A", f"re-ACK: {dump(after)}")
    rst = [r for r in after if r["sport"] == cport and r["flags"] == "R"]
    kernel(rst, f"the client port, with no socket, answered the re-ACK with a RST: {dump(after)}")
    return {"seg": seg, "reack": after[0], "srv": (srv.pid, acc["fd"]), "cli": (cli.pid, cport)}


def test_late_segment_to_a_closed_four_tuple_finds_the_time_wait_entry(netns):
    t = _late_segment(netns)
    seg, reack = t["seg"], t["reack"]
    rec = seg["receiver"]
    assert rec is not None and rec["state"] == "TIME_WAIT", dump([seg])
    port, cport = seg["dport"], seg["sport"]
    assert rec["local"] == f"{LO}:{port}" and rec["remote"] == f"{LO}:{cport}", dump([seg])
    assert rec["holders"] == [], dump([seg])
    # both ends were seen with their holders before the close: the former one is named
    assert holder_pairs({"holders": rec["former_holders"]}) == {t["srv"]}, dump([seg])
    assert f"[{t['srv'][0]}]" in seg["explain"], dump([seg])
    # the re-ACK is sent by the kernel for the TIME_WAIT entry, no process
    assert reack["sender"] is not None and reack["sender"]["state"] == "TIME_WAIT", dump([reack])
    assert reack["sender"]["holders"] == [], dump([reack])
    assert "TIME_WAIT" in reack["sender_explain"], dump([reack])


def test_late_segment_to_a_closed_four_tuple_is_a_time_wait_match(netns):
    t = _late_segment(netns)
    seg = t["seg"]
    assert seg["match"] == "time_wait", dump([seg])
    assert "TIME_WAIT" in seg["explain"], dump([seg])
    assert "while the connection was open" not in seg["explain"], dump([seg])


def test_time_wait_re_ack_to_a_closed_peer_port_reaches_no_socket(netns):
    t = _late_segment(netns)
    reack, seg = t["reack"], t["seg"]
    cli_pid = t["cli"][0]
    assert cli_pid not in pids_named(reack), dump([reack])
    assert reack["match"] == "none" and reack["receiver"] is None, dump([reack])
    assert cli_pid not in {pid for pid, _ in holder_pairs(seg["sender"])}, dump([seg])


def _reuse_time_wait(netns: Netns) -> dict[str, Any]:
    """The client comes back on the same source port while the server's TIME_WAIT entry for
    that 4-tuple lives: its SYN carries a newer timestamp, so ``tcp_timewait_state_process``
    answers TCP_TW_SYN, the entry is killed and the listener takes the SYN."""
    ns, port, cport, cap, srv, cli, lst, _ = _server_time_wait(netns)
    time.sleep(1.2)  # past a periodic refresh: conntui's table has seen the TIME_WAIT entry
    conn = cli("connect", host=LO, port=port, bind=[LO, cport])
    kernel("fd" in conn, f"the SYN reusing the TIME_WAIT 4-tuple was accepted (TCP_TW_SYN): {conn}")
    acc = srv("accept", fd=lst["fd"])
    kernel(acc["remote"] == [LO, cport], f"accepted the reused tuple: {acc}")
    tw = " ".join(netns.ss(ns, "state", "time-wait").split())
    kernel(f"{LO}:{port} {LO}:{cport}" not in tw, f"TCP_TW_SYN killed the TIME_WAIT: {tw}")
    time.sleep(0.3)
    cli("send", fd=conn["fd"], data="second life")
    kernel(srv("recv", fd=acc["fd"], n=11)["data"] == "second life", "data on the new connection")
    srv("send", fd=acc["fd"], data="welcome back")
    kernel(cli("recv", fd=conn["fd"], n=12)["data"] == "welcome back", "reply on the new connection")
    rows, err, code = cap.stop()
    assert code == 0, err
    rows = tcp(rows)
    syns = [r for r in rows if r["flags"] == "S" and r["sport"] == cport]
    assert len(syns) == 2, dump(rows)
    return {
        "rows": rows,
        "syn": syns[1],
        "port": port,
        "cport": cport,
        "srv": srv,
        "lst": lst,
        "acc": acc,
        "client": (cli.pid, conn["fd"]),
    }


def test_new_syn_reusing_a_time_wait_four_tuple_reaches_the_new_accepted_fd(netns):
    t = _reuse_time_wait(netns)
    rows, syn, port, cport, srv = t["rows"], t["syn"], t["port"], t["cport"], t["srv"]
    # The SYN meets the TIME_WAIT entry first, then the listener takes it: however conntui
    # says it, the listener is the one named, and it is no challenge-ACKed stale SYN.
    assert syn["match"] in ("listener", "time_wait"), dump([syn])
    by_listener = syn["receiver"] if syn["match"] == "listener" else syn["listener"]
    assert holder_pairs(by_listener) == {(srv.pid, t["lst"]["fd"])}, dump([syn])
    assert not any("challenge ACK" in n for n in syn["notes"]), dump([syn])

    data = one(rows, sport=cport, dport=port, payload_len=11)
    assert data["match"] == "established", dump([data])
    assert holder_pairs(data["receiver"]) == {(srv.pid, t["acc"]["fd"])}, dump([data])
    assert holder_pairs(data["sender"]) == {t["client"]}, dump([data])
    back = one(rows, sport=port, dport=cport, payload_len=12)
    assert back["match"] == "established", dump([back])
    assert holder_pairs(back["sender"]) == {(srv.pid, t["acc"]["fd"])}, dump([back])
    assert holder_pairs(back["receiver"]) == {t["client"]}, dump([back])
    synack = [r for r in rows if r["flags"] == "SA" and r["dport"] == cport][-1]
    assert holder_pairs(synack["receiver"]) == {t["client"]}, dump([synack])


def test_new_syn_reusing_a_time_wait_four_tuple_is_explained(netns):
    t = _reuse_time_wait(netns)
    syn = t["syn"]
    assert "TIME_WAIT" in syn["explain"], dump([syn])
    by_listener = syn["receiver"] if syn["match"] == "listener" else syn["listener"]
    assert holder_pairs(by_listener) == {(t["srv"].pid, t["lst"]["fd"])}, dump([syn])


# =========================================================================== 4. none, unanswered


_DROP_ANSWERS_NFT = """table inet fid {
  chain out {
    type filter hook output priority 0;
    tcp flags & rst == rst drop
    icmp type destination-unreachable icmp code port-unreachable drop
  }
}
"""


def _drop_kernel_answers(netns: Netns, ns: str) -> None:
    """Drop every RST and ICMP port unreachable the namespace sends (OUTPUT: before any tap)."""
    if shutil.which("iptables"):
        ipt = ("iptables", "-w", "5", "-A", "OUTPUT")
        netns.sh(ns, *ipt, "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "DROP", check=False)
        netns.sh(ns, *ipt, "-p", "icmp", "--icmp-type", "port-unreachable", "-j", "DROP", check=False)
        rules = netns.sh(ns, "iptables", "-S", "OUTPUT", check=False)
        icmp = "--icmp-type 3/3 -j DROP" in rules or "port-unreachable -j DROP" in rules
        if "RST RST -j DROP" in rules and icmp:
            return
    if shutil.which("nft") is None:
        pytest.skip("neither iptables nor nft can install a filter rule")
    netns.sh(ns, "nft", "-f", "-", stdin=_DROP_ANSWERS_NFT)


def _unanswered(netns: Netns, proto: str) -> tuple[list[Row], NsActor, dict[str, Any]]:
    """In a namespace whose OUTPUT drops every RST and ICMP port unreachable: a SYN (TCP) or
    a datagram (UDP) to a closed port. The kernel answers (its counters say so), the answer
    never reaches the wire. Nothing else is sent: a quiet capture, as on a quiet host."""
    ns = netns.add("fw")
    _drop_kernel_answers(netns, ns)
    port = 23000 + random.randrange(1000)
    cap = netns.conntui(ns, "--headless", "--json", "-i", "lo", "-p", str(port))
    client = netns.actor(ns)
    before = netns.counters(ns, "/proc/net/snmp")
    if proto == "tcp":
        # one SYN, no retransmission (the first comes after the 1 s initial RTO)
        opened = ask(client, "connect", host=LO, port=port, timeout=0.7)
        kernel("timed out" in opened.get("error", ""), f"no RST reached the client: {opened}")
    else:
        opened = client("udp", host=LO)
        client("sendto", fd=opened["fd"], data="anyone there?", to=[LO, port])
    time.sleep(0.2)
    after = netns.counters(ns, "/proc/net/snmp")
    delta = {k: v - before.get(k, 0) for k, v in after.items()}
    if proto == "tcp":
        kernel(delta["Tcp.OutRsts"] >= 1, f"the kernel answered with a RST: {delta}")
    else:
        kernel(delta["Udp.NoPorts"] >= 1, f"the datagram found no socket: {delta}")
        kernel(delta["Icmp.OutDestUnreachs"] >= 1, f"the kernel answered with ICMP: {delta}")
    kernel(delta["Ip.OutDiscards"] >= 1, f"OUTPUT dropped the answer: {delta}")
    time.sleep(0.8)  # well past conntui's 0.4 s verify window and its 0.5 s settle
    rows, err, code = cap.stop(settle=0.2)
    assert code == 0, err
    return [r for r in rows if r["proto"] == proto], client, opened


_QUIET_EXPIRY = (
    "Verifier.expire only runs from Engine.emit with the capture time of the newest "
    "segment (or at exit): when nothing else is captured, a 'none' row is printed after "
    "its 0.5 s settle without the 'no ... came back' note, because capture time never "
    "passes the 0.4 s window (rows still pending at SIGINT do get it)"
)


def test_syn_to_a_closed_port_whose_rst_a_firewall_drops(netns):
    rows, client, _ = _unanswered(netns, "tcp")
    assert not [r for r in rows if "R" in r["flags"]], dump(rows)  # the firewall ate them
    syn = one(rows, flags="S")
    assert syn["match"] == "none" and syn["receiver"] is None, dump([syn])
    assert {pid for pid, _ in holder_pairs(syn["sender"])} <= {client.pid}, dump([syn])
    assert not any("answered with a RST" in n for n in syn["notes"]), dump([syn])
    # the kernel's own record (the tracer runs by default): it dropped the SYN, no socket
    assert syn["kernel"] is not None and syn["kernel"]["verdict"] == "dropped", dump([syn])
    assert syn["kernel"]["reason"] == "NO_SOCKET" and syn["agrees"] is True, dump([syn])


def test_datagram_to_a_closed_port_whose_icmp_a_firewall_drops(netns):
    rows, client, sock = _unanswered(netns, "udp")
    dgram = one(rows, payload_len=13)
    assert dgram["match"] == "none" and dgram["receiver"] is None, dump([dgram])
    assert holder_pairs(dgram["sender"]) == {(client.pid, sock["fd"])}, dump([dgram])
    assert not any(n.startswith("verified") for n in dgram["notes"]), dump([dgram])
    assert dgram["kernel"] is not None and dgram["kernel"]["verdict"] == "dropped", dump([dgram])
    assert dgram["kernel"]["reason"] == "NO_SOCKET" and dgram["agrees"] is True, dump([dgram])


# =========================================================================== 5. forwarding


A_ADDR, R_A, R_B, B_ADDR = "10.233.1.2", "10.233.1.1", "10.233.2.1", "10.233.2.2"


def test_forwarded_traffic_is_not_local_not_the_routers_wildcard_listener(netns):
    """A — R — B: R forwards A's connection to B. R also has a wildcard listener on the same
    port; a capture in R must never blame it. With -N R (R's sockets only) the forwarded
    segments are not_local; by default conntui reads every namespace's sockets and follows
    them to B's server, which really receives them (issue 12). A connection from A to R's own
    address is the control: that one R's listener does take."""
    a, r, b = netns.add("a"), netns.add("r"), netns.add("b")
    t = netns.tag.replace("-", "")[-6:]
    ra, ar, rb, br = f"fra{t}", f"far{t}", f"frb{t}", f"fbr{t}"
    netns.veth(r, ra, a, ar)
    netns.veth(r, rb, b, br)
    netns.addr(a, ar, f"{A_ADDR}/24")
    netns.addr(r, ra, f"{R_A}/24")
    netns.addr(r, rb, f"{R_B}/24")
    netns.addr(b, br, f"{B_ADDR}/24")
    _run("ip", "-n", a, "route", "add", "default", "via", R_A)
    _run("ip", "-n", b, "route", "add", "default", "via", R_B)
    netns.sysctl(r, "net.ipv4.ip_forward=1")
    port = 22000 + random.randrange(1000)

    cap = netns.conntui(r, "-N", r, "--headless", "--json", "-i", "any", "-p", str(port))
    every = netns.conntui(r, "--headless", "--json", "-i", "any", "-p", str(port))
    router, server, client = netns.actor(r), netns.actor(b), netns.actor(a)
    lr = router("listen", host="0.0.0.0", port=port)
    lb = server("listen", host="0.0.0.0", port=port)
    conn = ask(client, "connect", host=B_ADDR, port=port, timeout=3)
    kernel("fd" in conn, f"A reaches B through R: {conn}")
    acc = ask(server, "accept", fd=lb["fd"], timeout=3)
    kernel("fd" in acc, f"B accepted A's connection: {acc}")
    client("send", fd=conn["fd"], data="through the router")
    kernel(server("recv", fd=acc["fd"], n=18)["data"] == "through the router", "B got A's data")
    server("send", fd=acc["fd"], data="and back")
    kernel(client("recv", fd=conn["fd"], n=8)["data"] == "and back", "A got B's reply")
    kernel(nothing_to_accept(router, lr["fd"]), "R's wildcard listener got nothing")
    # the control: A to R's own address
    local = ask(client, "connect", host=R_A, port=port, timeout=3)
    kernel("fd" in local, f"A reaches R's listener: {local}")
    racc = ask(router, "accept", fd=lr["fd"], timeout=3)
    kernel(racc.get("remote") == [A_ADDR, local["local"][1]], f"R accepted the control: {racc}")
    client("close", fd=conn["fd"])
    server("close", fd=acc["fd"])
    rows, err, code = cap.stop()
    assert code == 0, err
    rows = tcp(rows)
    all_rows, err, code = every.stop()
    assert code == 0, err
    all_fwd = [r_ for r_ in tcp(all_rows) if B_ADDR in (r_["src"], r_["dst"])]
    assert all_fwd, dump(all_rows)
    for r_ in all_fwd:
        assert router.pid not in pids_named(r_), dump([r_])
        if r_["dst"] == B_ADDR and r_["flags"] == "S":
            assert r_["match"] == "listener", dump([r_])
            assert holder_pairs(r_["receiver"]) == {(server.pid, lb["fd"])}, dump([r_])
            assert (client.pid, conn["fd"]) in holder_pairs(r_["sender"]), dump([r_])
        if r_["dst"] == B_ADDR and r_["payload_len"] == 18:
            assert holder_pairs(r_["receiver"]) == {(server.pid, acc["fd"])}, dump([r_])
            assert (client.pid, conn["fd"]) in holder_pairs(r_["sender"]), dump([r_])

    fwd = [r_ for r_ in rows if B_ADDR in (r_["src"], r_["dst"])]
    to_b = [r_ for r_ in fwd if r_["dst"] == B_ADDR]
    assert to_b and [r_ for r_ in fwd if r_["src"] == B_ADDR], dump(rows)
    assert {r_["iface"] for r_ in fwd} == {ra, rb}, dump(fwd)  # seen coming in and going out
    assert any(r_["flags"] == "S" for r_ in to_b) and any(r_["payload_len"] == 18 for r_ in to_b), dump(fwd)
    for r_ in fwd:
        assert r_["match"] == "not_local", dump([r_])
        assert r_["receiver"] is None and r_["listener"] is None, dump([r_])
        assert r_["sender"] is None, dump([r_])
        assert router.pid not in pids_named(r_), dump([r_])
        assert not r_["candidates"], dump([r_])

    ctl = one(rows, flags="S", dst=R_A, sport=local["local"][1])
    assert ctl["match"] == "listener", dump([ctl])
    assert holder_pairs(ctl["receiver"]) == {(router.pid, lr["fd"])}, dump([ctl])


# =========================================================================== 6. accept queue overflow


def _overflow(netns: Netns) -> dict[str, Any]:
    """backlog 1: the kernel queues backlog+1 = 2 connections (full means ``sk_ack_backlog >
    sk_max_ack_backlog``) and drops every later SYN (ListenOverflows); each dropped client
    retransmits its SYN after the 1 s initial RTO, and that one is dropped too. The clients
    connect back to back (non-blocking): the 3rd SYN comes milliseconds after the queue filled."""
    ns = netns.add("aq")
    port = 21000 + random.randrange(1000)
    cap = netns.conntui(ns, "--headless", "--json", "-i", "lo", "-p", str(port))
    server = netns.actor(ns)
    lst = server("listen", host=LO, port=port, backlog=1)
    clients = [netns.actor(ns) for _ in range(4)]
    time.sleep(1.2)  # past a periodic refresh: the table has the listener, queue empty
    before = netns.counters(ns, "/proc/net/netstat")
    conns = []
    for c in clients:
        conns.append((c, c("connect_nb", host=LO, port=port)))
        time.sleep(0.005)
    time.sleep(1.6)  # one SYN retransmission
    after = netns.counters(ns, "/proc/net/netstat")
    overflows = after["TcpExt.ListenOverflows"] - before["TcpExt.ListenOverflows"]
    kernel(overflows > 0, "ListenOverflows went up")
    states = {}
    for _, conn in conns:
        line = netns.ss(ns, "sport", "=", f":{conn['local'][1]}").split()
        states[conn["local"][1]] = line[0] if line else "gone"
    kernel(
        sorted(states.values()) == ["ESTAB", "ESTAB", "SYN-SENT", "SYN-SENT"],
        f"2 queued, 2 dropped: {states}",
    )
    queue = netns.ss(ns, "state", "listening", "sport", "=", f":{port}").split()
    kernel(queue[:2] == ["2", "1"], f"listener Recv-Q 2, Send-Q (backlog) 1: {queue}")
    rows, err, code = cap.stop()
    assert code == 0, err
    rows = tcp(rows)
    flows = []
    for c, conn in conns:
        cport = conn["local"][1]
        syns = [r for r in rows if r["flags"] == "S" and r["sport"] == cport]
        assert syns, dump(rows)
        flows.append(
            {
                "client": (c.pid, conn["fd"]),
                "dropped": states[cport] == "SYN-SENT",
                "syns": syns,
                "synacks": [r for r in rows if r["flags"] == "SA" and r["dport"] == cport],
            }
        )
    return {"rows": rows, "flows": flows, "server": (server.pid, lst["fd"]), "overflows": overflows}


def _full(r: Row) -> bool:
    return any("accept queue is full" in n for n in r["notes"])


def _retrans(r: Row) -> bool:
    return any(n.startswith("a retransmission of the SYN") for n in r["notes"])


def test_syns_dropped_by_a_full_accept_queue_are_marked(netns):
    t = _overflow(netns)
    for f in t["flows"]:
        syns = f["syns"]
        for syn in syns:
            assert syn["match"] == "listener", dump([syn])
            assert holder_pairs(syn["receiver"]) == {t["server"]}, dump([syn])
            assert holder_pairs(syn["sender"]) <= {f["client"]}, dump([syn])
        if not f["dropped"]:
            assert len(syns) == 1 and f["synacks"], dump(syns)
            assert not _full(syns[0]) and not _retrans(syns[0]), dump(syns)
            continue
        # dropped: no SYN-ACK ever; the first SYN is marked dropped, or its retransmission is
        assert not f["synacks"], dump(f["synacks"])
        assert len(syns) >= 2, dump(syns)
        assert not _retrans(syns[0]) and all(_retrans(s) for s in syns[1:]), dump(syns)
        assert _full(syns[0]) or _retrans(syns[1]), dump(syns)
        # a retransmission comes a second after the queue filled: the listener's queue
        # length and backlog are known by then, and the drop is said outright
        for syn in syns[1:]:
            assert _full(syn), dump([syn])
            q = syn["receiver"]
            assert (q["rx_queue"], q["tx_queue"]) == (2, 1), dump([syn])
            assert "ListenOverflows" in " ".join(syn["notes"]), dump([syn])


def test_first_syn_dropped_by_a_full_accept_queue_is_marked(netns):
    t = _overflow(netns)
    dropped = [f for f in t["flows"] if f["dropped"]]
    assert len(dropped) == 2
    for f in dropped:
        first = f["syns"][0]
        assert _full(first), dump([first])
        assert (first["receiver"]["rx_queue"], first["receiver"]["tx_queue"]) == (2, 1), dump([first])
