"""Frozen data for the TUI tests: hand-built frames and a hand-built socket table.

Everything is fixed (pids, fds, names, timestamps, the clock), so pilots and SVG snapshots
see the same screen on every run. The engine is the real one; its ListSource is drained
synchronously before the app starts, so no capture thread races a snapshot.
"""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from conntui.capture import ListSource
from conntui.engine import Engine, StaticTables
from conntui.model import Endpoint, Frame, Holder, SocketEntry, SocketTable
from conntui.session import Session

T0 = 1764100000.0  # 2025-11-25 19:46:40 UTC
CLOCK = T0 + 2.0
HOSTILE = "[bold red]evil[/]\x1b[31m"
LINKTYPE_RAW = 101

SERVER = Holder(4242, 4, "pyserver")
LISTENER_FD = Holder(4242, 3, "pyserver")
CURL = Holder(5151, 5, "curl")
WGET = Holder(6161, 3, "wget")
EVIL = Holder(6666, 7, HOSTILE)
DIG = Holder(7070, 9, "dig")
REDIS = Holder(3131, 6, "redis-server")
REDIS_CLI = Holder(3232, 3, "redis-cli")
NGINX_MASTER = Holder(1000, 6, "nginx")
NGINX_WORKER = Holder(1001, 6, "nginx")
NGINX_CONN = Holder(1001, 11, "nginx")
BROWSER = Holder(2020, 40, "firefox")


def ep(addr: str, port: int) -> Endpoint:
    return Endpoint(addr, port)


def sock(
    proto: str,
    state: str,
    local: Endpoint,
    remote: Endpoint | None = None,
    holders: tuple[Holder, ...] = (),
    inode: int = 0,
    **kw: object,
) -> SocketEntry:
    return SocketEntry(
        proto=proto,
        family=6 if ":" in local.addr else 4,
        state=state,
        local=local,
        remote=remote,
        inode=inode,
        holders=holders,
        **kw,  # type: ignore[arg-type]
    )


def socket_table() -> SocketTable:
    lo = "127.0.0.1"
    entries = [
        sock("tcp", "LISTEN", ep("0.0.0.0", 8080), None, (LISTENER_FD,), 9001, tx_queue=128, rx_queue=1),
        sock("tcp", "ESTABLISHED", ep(lo, 8080), ep(lo, 51000), (SERVER,), 9002),
        sock("tcp", "ESTABLISHED", ep(lo, 51000), ep(lo, 8080), (CURL,), 9003),
        # wget's connection is still in pyserver's accept queue: no inode, no holder
        sock("tcp", "ESTABLISHED", ep(lo, 8080), ep(lo, 51002), (), 0),
        sock("tcp", "ESTABLISHED", ep(lo, 51002), ep(lo, 8080), (WGET,), 9004),
        sock("tcp", "TIME_WAIT", ep(lo, 8080), ep(lo, 50990), (), 0),
        # nginx: a listener shared across fork (master and worker hold it)
        sock("tcp", "LISTEN", ep("0.0.0.0", 80), None, (NGINX_MASTER, NGINX_WORKER), 9010, tx_queue=511),
        sock("tcp", "ESTABLISHED", ep(lo, 80), ep(lo, 52000), (NGINX_CONN,), 9011),
        sock("tcp", "ESTABLISHED", ep(lo, 52000), ep(lo, 80), (BROWSER,), 9012),
        # redis: dual-stack [::]:6379, reached over ::1
        sock("tcp", "LISTEN", ep("::", 6379), None, (REDIS,), 9020, tx_queue=511),
        sock(
            "tcp", "ESTABLISHED", ep("::1", 6379), ep("::1", 53000), (Holder(3131, 8, "redis-server"),), 9021
        ),
        sock("tcp", "ESTABLISHED", ep("::1", 53000), ep("::1", 6379), (REDIS_CLI,), 9022),
        # UDP: a hostile-named server, and a connected client
        sock("udp", "UNCONN", ep("0.0.0.0", 5353), None, (EVIL,), 9030),
        sock("udp", "ESTABLISHED", ep(lo, 40000), ep(lo, 5353), (DIG,), 9031),
    ]
    return SocketTable(entries, taken_at=T0, local_addrs=("127.0.0.1", "::1"), ifnames={1: "lo"})


def _frame(i: int, pkt: object) -> Frame:
    data = bytes(pkt)  # type: ignore[call-overload]
    return Frame(
        ts=T0 + i * 0.0125, data=data, linktype=LINKTYPE_RAW, iface="lo", ifindex=1, wire_len=len(data)
    )


def frames() -> list[Frame]:
    lo = "127.0.0.1"

    def tcp(sport: int, dport: int, flags: str, seq: int, ack: int = 0, load: bytes = b"") -> object:
        pkt = IP(src=lo, dst=lo) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=65495)
        return pkt / Raw(load) if load else pkt

    def tcp6(sport: int, dport: int, flags: str, seq: int, ack: int = 0, load: bytes = b"") -> object:
        pkt = IPv6(src="::1", dst="::1") / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)
        return pkt / Raw(load) if load else pkt

    pkts = [
        # curl → pyserver :8080 (the table already has the accepted connection)
        tcp(51000, 8080, "S", 1000),
        tcp(8080, 51000, "SA", 5000, 1001),
        tcp(51000, 8080, "A", 1001, 5001),
        tcp(51000, 8080, "PA", 1001, 5001, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        tcp(8080, 51000, "A", 5001, 1037),
        tcp(8080, 51000, "PA", 5001, 1037, b"HTTP/1.0 200 OK\r\n\r\nhello"),
        # wget's data reaches the child still in the accept queue
        tcp(51002, 8080, "PA", 7001, 9001, b"GET /wget HTTP/1.1\r\n\r\n"),
        # browser ↔ nginx worker
        tcp(52000, 80, "PA", 300, 400, b"GET /index.html HTTP/1.1\r\n\r\n"),
        tcp(80, 52000, "PA", 400, 330, b"HTTP/1.1 304 Not Modified\r\n\r\n"),
        # a late ACK to a TIME_WAIT remain
        tcp(50990, 8080, "A", 42, 43),
        # a SYN to a closed port, and the kernel's RST
        tcp(51500, 9999, "S", 777),
        tcp(9999, 51500, "RA", 0, 778),
        # dig ↔ the hostile-named UDP server
        IP(src=lo, dst=lo) / UDP(sport=40000, dport=5353) / Raw(b"\x12\x34query\x1b[2J" + "\u202e".encode()),
        IP(src=lo, dst=lo) / UDP(sport=5353, dport=40000) / Raw(b"answer"),
        # redis over IPv6 loopback
        tcp6(53000, 6379, "PA", 10, 20, b"*1\r\n$4\r\nPING\r\n"),
        tcp6(6379, 53000, "PA", 20, 24, b"+PONG\r\n"),
        # curl closes
        tcp(51000, 8080, "FA", 1037, 5026),
        tcp(8080, 51000, "FA", 5026, 1038),
        tcp(51000, 8080, "A", 1038, 5027),
    ]
    return [_frame(i, p) for i, p in enumerate(pkts)]


def make_engine(extra: list[Frame] | None = None) -> Engine:
    """A real engine over the frozen frames and table, already drained into its session."""
    engine = Engine(
        ListSource(frames() + (extra or []), "test frames"), StaticTables(socket_table()), Session()
    )
    engine.run()
    return engine


def fixed_clock() -> float:
    return CLOCK
