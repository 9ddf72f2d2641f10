"""conntui.tracer without bpftrace: parsing its output, the bounded memory, look-ups, joins."""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

import pytest

from conntui.model import Holder
from conntui.tracer import (
    MARKER_BASE,
    Event,
    Marker,
    SocketTracer,
    TraceMemory,
    TraceRecord,
    build_script,
    parse_event,
    parse_line,
)

CLOCK = 1_000_000.0  # the clock offset the tests use: mono + CLOCK = epoch seconds


def v4(addr: str) -> int:
    """An IPv4 address as bpftrace prints a __be32 (%u of the raw 32-bit value)."""
    return int(struct.unpack("=I", socket.inet_aton(addr))[0])


def v6(addr: str) -> list[int]:
    return list(struct.unpack("=4I", socket.inet_pton(socket.AF_INET6, addr)))


def be16(port: int) -> int:
    return socket.htons(port)


def event_text(
    kind: str = "A",
    *,
    pid: int = 100,
    tid: int = 101,
    fd: int = 7,
    ret: int = 7,
    sk: int = 0xFFFF888012345678,
    inode: int = 4242,
    protocol: int = 6,
    family: int = 2,
    laddr: str = "127.0.0.1",
    lport: int = 8080,
    raddr: str = "127.0.0.1",
    rport: int = 50000,
    nsecs: int = 5_000_000_000,
    comm: str = "server",
) -> str:
    if family != socket.AF_INET6:
        sa4, da4, sa6, da6 = v4(laddr), v4(raddr), [0] * 4, [0] * 4
    else:
        sa4, da4, sa6, da6 = v4("127.0.0.6"), v4("127.0.0.6"), v6(laddr), v6(raddr)
    nums = [pid, tid, fd, ret, sk, inode, protocol, family, lport, be16(rport), sa4, da4, *sa6, *da6, nsecs]
    return " ".join(["E1", kind, *map(str, nums), comm])


def line(data: str) -> bytes:
    """One printf as ``bpftrace -f json`` writes it."""
    return (json.dumps({"type": "printf", "data": data}) + "\n").encode()


def tracer(**kw: Any) -> SocketTracer:
    return SocketTracer(our_pid=4321, clock_offset=CLOCK, full_names=False, **kw)


# -- parsing ---------------------------------------------------------------------------------


def test_parse_v4_accept() -> None:
    ev = parse_event(event_text())
    assert ev == Event(
        "A", 100, 101, 7, 7, 0xFFFF888012345678, 4242, 6, 2, 8080, 50000,
        "127.0.0.1", "127.0.0.1", 5.0, "server",
    )  # fmt: skip


def test_parse_v6_and_v4_mapped() -> None:
    ev = parse_event(event_text(family=10, laddr="::1", raddr="fe80::1:2"))
    assert ev is not None and (ev.laddr, ev.raddr) == ("::1", "fe80::1:2")
    ev = parse_event(event_text(family=10, laddr="::ffff:127.0.0.1", raddr="::ffff:10.0.0.2"))
    assert ev is not None and (ev.laddr, ev.raddr) == ("::ffff:127.0.0.1", "::ffff:10.0.0.2")


@pytest.mark.parametrize(
    "comm",
    ["a b  c", "x\ny", 'q"uo\\te', "E1 A 1 2 3", "", " ", "émoji☃", "\x00\x01"],
)
def test_comm_is_taken_whole(comm: str) -> None:
    """comm comes last and is anything a process set with prctl(PR_SET_NAME)."""
    ev = parse_event(event_text(comm=comm))
    assert ev is not None and ev.comm == comm and ev.lport == 8080
    parsed = parse_line(line(event_text(comm=comm)))
    assert isinstance(parsed, Event) and parsed.comm == comm


@pytest.mark.parametrize(
    "data",
    [
        "",
        "E1",
        "E1 A",
        "E2 A " + " ".join(["1"] * 21) + " comm",
        "E1 Z " + " ".join(["1"] * 21) + " comm",  # unknown kind
        "E1 A " + " ".join(["1"] * 20) + " comm",  # a field short: comm taken as a number
        "E1 A " + " ".join(["x"] * 21) + " comm",
        event_text(family=1),  # AF_UNIX: not ours
        event_text().replace(" 8080 ", " 80-80 "),
        "E1 A " + " ".join(["9" * 400] * 21) + " comm",  # absurd numbers
    ],
)
def test_parse_event_rejects_malformed(data: str) -> None:
    assert parse_event(data) is None


def test_parse_line_kinds() -> None:
    assert parse_line(b'{"type": "attached_probes", "data": {"probes": 17}}\n') == ("probes", 17)
    assert parse_line('{"type": "lost_events", "data": {"events": 3}}') == ("lost", 3)
    assert parse_line(line("M1 4321 7")) == Marker(4321, 7)
    assert parse_line(line("M1 4321")) is None
    assert parse_line(line("M1 43x21 7")) is None
    assert parse_line(line("hello")) is None
    junk = [b"", b"\n", b"not json", b"[1, 2]", b'"str"', b'{"type": "map", "data": {"@u": {}}}']
    junk += [b'{"type": "printf", "data": 5}', b"\xff\xfe{"]
    junk += [b'{"type": "lost_events", "data": {"events": "x"}}']
    for j in junk:
        assert parse_line(j) is None, j


# -- the memory ------------------------------------------------------------------------------


def rec(
    lport: int,
    *,
    proto: str = "tcp",
    laddr: str = "127.0.0.1",
    raddr: str = "127.0.0.1",
    rport: int = 9000,
    pid: int = 1,
    fd: int = 3,
    t: float = 0.0,
    sk: int = 0,
    kind: str = "connect",
    family: int = 4,
) -> TraceRecord:
    return TraceRecord(kind, proto, family, laddr, lport, raddr, rport, pid, pid, fd, "p", 0, t, sk or lport)


def test_memory_bounded_by_size() -> None:
    mem = TraceMemory(max_keys=100, ttl=1e9)
    for i in range(1000):
        mem.add(rec(10000 + i, t=float(i)))
    assert len(mem) == 100 and mem.evicted == 900
    assert mem.lookup("tcp", "127.0.0.1", 10000, "127.0.0.1", 9000) is None  # the oldest went
    assert mem.lookup("tcp", "127.0.0.1", 10999, "127.0.0.1", 9000) == Holder(1, 3, "p")


def test_memory_bounded_by_age() -> None:
    mem = TraceMemory(ttl=60.0)
    mem.add(rec(1, t=0.0))
    mem.add(rec(2, t=30.0))
    mem.add(rec(3, t=61.0))  # the first one is now older than 60 s
    assert mem.lookup("tcp", "127.0.0.1", 1, "127.0.0.1", 9000) is None
    assert mem.lookup("tcp", "127.0.0.1", 2, "127.0.0.1", 9000) is not None
    mem.expire(100.0)
    assert len(mem) == 1 and mem.lookup("tcp", "127.0.0.1", 3, "127.0.0.1", 9000) is not None
    mem.add(rec(1, t=200.0))
    assert len(mem) == 1


def test_memory_keeps_a_few_records_per_tuple() -> None:
    mem = TraceMemory(per_key=3, grace=2.0)
    for i in range(5):  # the same tuple reused by five sockets, 10 s apart
        mem.add(rec(5000, pid=100 + i, t=10.0 * i, sk=i + 1))
    got = mem.records("tcp", "127.0.0.1", 5000, "127.0.0.1", 9000)
    assert [r.pid for r in got] == [104, 103, 102]
    assert mem.lookup("tcp", "127.0.0.1", 5000, "127.0.0.1", 9000) == Holder(104, 3, "p")
    # at a time: the newest record made no later than at + grace
    assert mem.lookup("tcp", "127.0.0.1", 5000, "127.0.0.1", 9000, at=25.0) == Holder(102, 3, "p")
    assert mem.lookup("tcp", "127.0.0.1", 5000, "127.0.0.1", 9000, at=29.0) == Holder(103, 3, "p")
    assert mem.lookup("tcp", "127.0.0.1", 5000, "127.0.0.1", 9000, at=5.0) is None  # too old to know


def test_udp_port_reused_a_moment_later_is_not_mistaken() -> None:
    """UDP sends are recorded as they happen: a socket that got the same ephemeral port
    0.3 s later is another one (TCP's connect/accept get the longer grace instead)."""
    mem = TraceMemory(grace=2.0, slack=0.05)
    kw: dict[str, Any] = {"proto": "udp", "laddr": "0.0.0.0", "raddr": "", "rport": 0, "kind": "send"}
    mem.add(rec(40000, pid=1, t=10.0, sk=1, **kw))
    mem.add(rec(40000, pid=2, t=10.3, sk=2, **kw))
    assert mem.lookup("udp", "127.0.0.1", 40000, "127.0.0.1", 53, at=10.0005) == Holder(1, 3, "p")
    assert mem.lookup("udp", "127.0.0.1", 40000, "127.0.0.1", 53, at=10.3001) == Holder(2, 3, "p")
    assert mem.lookup("udp", "127.0.0.1", 40000, "127.0.0.1", 53, at=9.0) is None
    # a newer local-only record beats an older exact one: the port changed hands
    mem.add(rec(41000, proto="udp", pid=3, t=20.0, sk=3))
    mem.add(rec(41000, pid=4, t=25.0, sk=4, **kw))
    assert mem.lookup("udp", "127.0.0.1", 41000, "127.0.0.1", 9000, at=25.01) == Holder(4, 3, "p")
    assert mem.lookup("udp", "127.0.0.1", 41000, "127.0.0.1", 9000, at=21.0) == Holder(3, 3, "p")
    # TCP: accept() up to ``grace`` after the segment still counts
    mem.add(rec(8080, kind="accept", pid=5, t=30.0, sk=5))
    assert mem.lookup("tcp", "127.0.0.1", 8080, "127.0.0.1", 9000, at=28.5) == Holder(5, 3, "p")
    assert mem.lookup("tcp", "127.0.0.1", 8080, "127.0.0.1", 9000, at=27.5) is None


def test_memory_same_socket_reported_twice_is_one_record() -> None:
    mem = TraceMemory()
    mem.add(rec(5000, t=1.0, sk=77))
    mem.add(rec(5000, t=2.0, sk=77))  # e.g. connect() called again: EISCONN
    got = mem.records("tcp", "127.0.0.1", 5000, "127.0.0.1", 9000)
    assert len(got) == 1 and got[0].t == 2.0


def test_lookup_v4_mapped_both_ways() -> None:
    mem = TraceMemory()
    # a dual-stack server socket shows its IPv4 peers v4-mapped
    mem.add(rec(8080, laddr="::ffff:127.0.0.1", raddr="::ffff:127.0.0.2", rport=40000, family=6, pid=7))
    assert mem.lookup("tcp", "127.0.0.1", 8080, "127.0.0.2", 40000) == Holder(7, 3, "p")
    assert mem.lookup("tcp", "::ffff:127.0.0.1", 8080, "::ffff:127.0.0.2", 40000) == Holder(7, 3, "p")
    # and a plain IPv4 record is found with v4-mapped addresses
    mem.add(rec(9090, laddr="127.0.0.1", raddr="127.0.0.2", rport=40001, pid=8))
    assert mem.lookup("tcp", "::ffff:127.0.0.1", 9090, "::ffff:127.0.0.2", 40001) == Holder(8, 3, "p")
    assert mem.lookup("tcp", "127.0.0.1", 9090, "127.0.0.3", 40001) is None
    assert mem.lookup("udp", "127.0.0.1", 9090, "127.0.0.2", 40001) is None


def test_udp_falls_back_to_the_local_port() -> None:
    mem = TraceMemory()
    mem.add(rec(5353, proto="udp", laddr="0.0.0.0", raddr="", rport=0, kind="send", pid=1))
    mem.add(rec(6000, proto="udp", laddr="127.0.0.1", raddr="", rport=0, kind="bind", pid=2))
    mem.add(rec(7000, proto="udp", laddr="::", raddr="", rport=0, kind="bind", pid=3, family=6))
    mem.add(rec(7000, proto="udp", laddr="127.0.0.1", raddr="127.0.0.9", rport=53, pid=4))
    assert mem.lookup("udp", "127.0.0.1", 5353, "127.0.0.9", 53) == Holder(1, 3, "p")
    assert mem.lookup("udp", "127.0.0.1", 6000, "127.0.0.9", 53) == Holder(2, 3, "p")
    assert mem.lookup("udp", "127.0.0.2", 6000, "127.0.0.9", 53) is None  # bound elsewhere
    assert mem.lookup("udp", "127.0.0.1", 7000, "127.0.0.8", 53) == Holder(3, 3, "p")  # [::] dual stack
    assert mem.lookup("udp", "127.0.0.1", 7000, "127.0.0.9", 53) == Holder(4, 3, "p")  # exact first
    # TCP has no such fallback: a tuple is a connection
    mem.add(rec(8000, proto="tcp", laddr="0.0.0.0", raddr="", rport=0, kind="bind"))
    assert mem.lookup("tcp", "127.0.0.1", 8000, "127.0.0.9", 53) is None


# -- the tracer's handling of its output -----------------------------------------------------


def test_feed_records_accept_and_connect() -> None:
    t = tracer()
    t.feed_line(line(event_text("A", pid=10, fd=5, lport=8080, rport=50000, comm="srv")))
    t.feed_line(line(event_text("C", pid=20, fd=3, ret=-115, lport=50000, rport=8080, comm="cli")))
    assert t.lookup("tcp", "127.0.0.1", 8080, "127.0.0.1", 50000) == Holder(10, 5, "srv")
    assert t.lookup("tcp", "127.0.0.1", 50000, "127.0.0.1", 8080) == Holder(20, 3, "cli")
    r = t.lookup_record("tcp", "127.0.0.1", 8080, "127.0.0.1", 50000)
    assert r is not None and r.kind == "accept" and r.t == CLOCK + 5.0 and r.inode == 4242
    assert t.stats["events"] == 2 and t.stats["records"] == 2


def test_feed_udp_bind_send_connect() -> None:
    t = tracer()
    t.feed_line(line(event_text("B", protocol=17, laddr="0.0.0.0", raddr="0.0.0.0", lport=5000, rport=0)))
    t.feed_line(
        line(event_text("S", protocol=17, pid=2, fd=4, laddr="0.0.0.0", raddr="0.0.0.0", lport=5001, rport=0))
    )
    t.feed_line(line(event_text("C", protocol=17, pid=3, fd=5, lport=5002, rport=5000)))
    assert t.lookup("udp", "127.0.0.1", 5000, "127.0.0.1", 5001) == Holder(100, 7, "server")
    assert t.lookup("udp", "127.0.0.1", 5001, "127.0.0.1", 5000) == Holder(2, 4, "server")
    assert t.lookup("udp", "127.0.0.1", 5002, "127.0.0.1", 5000) == Holder(3, 5, "server")
    r = t.lookup_record("udp", "127.0.0.1", 5001, "127.0.0.1", 5000)
    assert r is not None and r.kind == "send" and r.raddr == "" and r.rport == 0


@pytest.mark.parametrize("x_first", [True, False])
def test_refused_connect_joins_by_socket_address(x_first: bool) -> None:
    """connect() returns with the port already released; the SYN_SENT → CLOSE event (any
    task's context) has it: they meet on the struct sock's address, in either order."""
    t = tracer()
    c = line(event_text("C", pid=20, fd=3, ret=-111, sk=0xAB, laddr="0.0.0.0", lport=0, rport=0, comm="cli"))
    x = line(event_text("X", pid=999, fd=-1, ret=0, sk=0xAB, inode=0, lport=41000, rport=1, comm="swapper/1"))
    other = line(event_text("X", pid=999, fd=-1, sk=0xCD, lport=41001, rport=1))
    for item in (other, x, c) if x_first else (c, other, x):
        t.feed_line(item)
    assert t.lookup("tcp", "127.0.0.1", 41000, "127.0.0.1", 1) == Holder(20, 3, "cli")
    assert t.lookup("tcp", "127.0.0.1", 41001, "127.0.0.1", 1) is None  # no holder ever known
    assert not t._pending_connect and len(t._refused) == 1


def test_events_without_a_port_or_protocol_are_dropped() -> None:
    t = tracer()
    t.feed_line(line(event_text("A", protocol=132)))  # SCTP
    t.feed_line(line(event_text("S", protocol=17, lport=0)))
    assert len(t.memory) == 0


def test_markers_make_it_ready_only_for_our_pid() -> None:
    t = tracer()
    t.feed_line(line("M1 1 3"))
    assert not t.ready.is_set()
    t.feed_line(line("M1 4321 3"))
    assert t.ready.is_set() and t._marker_seen == 3
    t.feed_line(b'{"type": "lost_events", "data": {"events": 5}}')
    t.feed_line(b"garbage")
    assert t.stats["lost"] == 5 and t.stats["unparsed"] == 1


def test_lookup_is_thread_safe() -> None:
    import threading

    t = tracer(memory=TraceMemory(max_keys=500))
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for i in range(20000):
                if stop.is_set():
                    break
                t.lookup("tcp", "127.0.0.1", 10000 + i % 2000, "127.0.0.1", 8080)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    th = threading.Thread(target=reader)
    th.start()
    for i in range(5000):
        t.feed_line(line(event_text("C", lport=10000 + i % 2000, rport=8080, nsecs=i * 1000)))
    stop.set()
    th.join(30)
    assert not errors and len(t.memory) <= 500


# -- starting, and the program -----------------------------------------------------------------


def test_start_never_raises_without_bpftrace() -> None:
    assert SocketTracer.start(bpftrace="/nonexistent/bpftrace") is None
    assert "not installed" in SocketTracer.why_not
    assert SocketTracer.unavailable(bpftrace="/nonexistent/bpftrace")


def test_start_without_root_or_btf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert SocketTracer.start(bpftrace="/bin/true") is None
    assert "root" in SocketTracer.why_not
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr("conntui.tracer.BTF_PATH", "/nonexistent/vmlinux")
    assert SocketTracer.start(bpftrace="/bin/true") is None
    assert "BTF" in SocketTracer.why_not or "pid namespace" in SocketTracer.why_not


def test_start_reports_bpftrace_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A "bpftrace" that exits at once: start(wait=...) gives None and its last words."""
    monkeypatch.setattr("conntui.tracer.SocketTracer.unavailable", staticmethod(lambda *a, **k: ""))
    fake = "/bin/sh"  # sh -f json -e SCRIPT: fails to open "json", exits with an error
    assert SocketTracer.start(bpftrace=fake, wait=5.0) is None
    assert SocketTracer.why_not.startswith("bpftrace exited"), SocketTracer.why_not


def test_sync_and_close_without_a_process() -> None:
    t = tracer()
    assert not t.sync(0.01)
    assert not t.alive
    t.close()
    t.close()


def test_build_script_substitutes_everything() -> None:
    script = build_script(4321, 4026531840)
    assert "@PID@" not in script and "@NETNS@" not in script and "@PRINTF@" not in script
    assert "pid == 4321" in script and "ns.inum == 4026531840" in script
    assert f"args->pid >= {MARKER_BASE}" in script
    for probe in (
        "sys_exit_accept4",
        "sys_exit_connect",
        "sys_exit_bind",
        "inet_sock_set_state",
        "sys_exit_sendto",
    ):
        assert f":{probe}" in script
    # every printf has as many arguments as its format asks for
    for stmt in script.split("printf(")[1:]:
        fmt, _, rest = stmt.partition('",')
        args = rest.split(");", 1)[0]
        assert fmt.count("%") == args.count(",") + 1, stmt[:80]
    assert script.count("{") == script.count("}")
    no_udp = build_script(4321, 4026531840, udp_sends=False)
    assert "sys_enter_sendto" not in no_udp and "@useen" not in no_udp


def test_former_entry_for_a_vanished_socket() -> None:
    r = rec(50000, laddr="::ffff:127.0.0.1", raddr="::ffff:127.0.0.1", rport=8080, family=6, pid=9, t=12.5)
    e = r.former_entry()
    assert (e.proto, e.family, e.state) == ("tcp", 6, "CLOSE")
    assert str(e.local) == "[::ffff:127.0.0.1]:50000" and e.remote is not None and e.remote.port == 8080
    assert e.holders == () and e.former_holders == (Holder(9, 3, "p"),) and e.inode == 0
    assert e.first_seen == 12.5 and e.describe() == "kernel"
    u = rec(5353, proto="udp", laddr="0.0.0.0", raddr="", rport=0, kind="send").former_entry("UNCONN")
    assert u.remote is None and u.state == "UNCONN"


def test_refused_join_needs_the_same_socket() -> None:
    """A stale SYN_SENT → CLOSE event (a timed-out connect long ago at the same struct sock
    address) is not joined with a later refused connect's record."""
    t = tracer()
    t.feed_line(line(event_text("X", sk=0xAB, lport=41000, rport=1, nsecs=1_000_000_000)))
    c = event_text("C", pid=20, fd=3, ret=-111, sk=0xAB, lport=0, rport=0, nsecs=9_000_000_000)
    t.feed_line(line(c))
    assert len(t.memory) == 0 and len(t._pending_connect) == 1
    # its own event, right after: joined
    t.feed_line(line(event_text("X", sk=0xAB, lport=42000, rport=2, nsecs=9_000_100_000)))
    assert t.lookup("tcp", "127.0.0.1", 42000, "127.0.0.1", 2) == Holder(20, 3, "server")
    # a non-blocking connect still knows its destination port: it must match
    t.feed_line(line(event_text("X", sk=0xCD, lport=43000, rport=7, nsecs=10_000_000_000)))
    t.feed_line(line(event_text("C", sk=0xCD, ret=-115, lport=0, rport=8, nsecs=10_000_000_100)))
    assert t.lookup("tcp", "127.0.0.1", 43000, "127.0.0.1", 7) is None
