"""Socket table pieces without root or a kernel: parsing, /proc scanning, memories."""

from __future__ import annotations

import errno
import itertools
import os
import random
import socket
import struct
from pathlib import Path

import pytest

from conntui.model import Endpoint, Holder, Segment, SocketTable
from conntui.sockets import diag, netlink, procfs, route
from conntui.sockets.diag import DiagSocket, RawSock, build_request, parse_msg, to_entry
from conntui.sockets.procfs import HolderScanner, ProcessNames, free_slots, read_stat, read_stat_ppid
from conntui.sockets.source import SocketTableSource

AF4, AF6 = socket.AF_INET, socket.AF_INET6


# -- hand-packed kernel messages (independent of the module's own structs) ------------------


def pack_diag_msg(
    *,
    family: int = AF4,
    state: int = 1,
    src: str = "127.0.0.1",
    sport: int = 0,
    dst: str | None = None,
    dport: int = 0,
    ifindex: int = 0,
    cookie: int = 0,
    rqueue: int = 0,
    wqueue: int = 0,
    uid: int = 0,
    inode: int = 0,
    timer: int = 0,
    expires: int = 0,
    attrs: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
) -> bytes:
    """A ``struct inet_diag_msg`` as the kernel lays it out, plus netlink attributes."""
    if dst is None:
        dst = "0.0.0.0" if family == AF4 else "::"
    msg = bytes([family, state, timer, 0])
    msg += sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    msg += socket.inet_pton(family, src).ljust(16, b"\0")
    msg += socket.inet_pton(family, dst).ljust(16, b"\0")
    msg += struct.pack("=III", ifindex, cookie & 0xFFFFFFFF, cookie >> 32)
    msg += struct.pack("=IIIII", expires, rqueue, wqueue, uid, inode)
    assert len(msg) == 72
    for kind, value in attrs:
        attr = struct.pack("=HH", 4 + len(value), kind) + value
        msg += attr + b"\0" * (-len(attr) % 4)
    return msg


def nlmsg(kind: int, payload: bytes, seq: int, flags: int = 0) -> bytes:
    data = struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0) + payload
    return data + b"\0" * (-len(data) % 4)


MARK = (15, struct.pack("=I", 0))  # INET_DIAG_MARK, sent to root before SKV6ONLY


# -- parse_msg / to_entry --------------------------------------------------------------------


def test_listener_with_accept_queue() -> None:
    msg = pack_diag_msg(state=10, src="127.0.0.1", sport=8080, rqueue=2, wqueue=7, uid=1000, inode=4242)
    raw = parse_msg("tcp", msg)
    assert raw.family == AF4 and raw.state == 10 and raw.state_text == "LISTEN"
    assert (raw.src, raw.sport, raw.dst, raw.dport) == ("127.0.0.1", 8080, "0.0.0.0", 0)
    assert raw.v6only is None
    entry = to_entry(raw)
    assert entry.family == 4 and entry.state == "LISTEN" and entry.is_listener
    assert entry.local == Endpoint("127.0.0.1", 8080) and entry.remote is None
    assert (entry.rx_queue, entry.tx_queue, entry.uid, entry.inode) == (2, 7, 1000, 4242)


def test_cookie_is_u64_from_two_host_order_words() -> None:
    raw = parse_msg("tcp", pack_diag_msg(cookie=0x0000_0055_1122_3344))
    assert raw.cookie == 0x55_1122_3344


def test_ports_are_big_endian_and_ifindex_kept() -> None:
    raw = parse_msg("tcp", pack_diag_msg(sport=0x1234, dst="10.0.0.9", dport=443, ifindex=3))
    assert (raw.sport, raw.dport, raw.ifindex) == (0x1234, 443, 3)
    entry = to_entry(raw)
    assert entry.remote == Endpoint("10.0.0.9", 443) and entry.bound_ifindex == 3


@pytest.mark.parametrize(("value", "expected"), [(b"\x00", False), (b"\x01", True)])
def test_v6only_attribute(value: bytes, expected: bool) -> None:
    msg = pack_diag_msg(
        family=AF6, state=10, src="::", sport=80, attrs=[MARK, (diag.INET_DIAG_SKV6ONLY, value)]
    )
    raw = parse_msg("tcp", msg)
    assert raw.family == AF6 and raw.v6only is expected
    entry = to_entry(raw)
    assert entry.family == 6 and entry.v6only is expected and entry.remote is None


def test_dual_stack_connection_keeps_mapped_addresses() -> None:
    msg = pack_diag_msg(
        family=AF6, state=1, src="::ffff:127.0.0.1", sport=80, dst="::ffff:127.0.0.1", dport=40000, inode=9
    )
    entry = to_entry(parse_msg("tcp", msg))
    assert entry.family == 6
    assert entry.local.addr == "::ffff:127.0.0.1" and entry.local.key_addr == "127.0.0.1"
    assert entry.remote == Endpoint("::ffff:127.0.0.1", 40000)
    assert entry.v6only is False  # not reported for ESTABLISHED


@pytest.mark.parametrize(
    ("proto", "state", "text"),
    [
        ("tcp", 12, "SYN_RECV"),  # request sock (TCP_NEW_SYN_RECV)
        ("tcp", 3, "SYN_RECV"),
        ("tcp", 6, "TIME_WAIT"),
        ("tcp", 7, "CLOSE"),
        ("udp", 7, "UNCONN"),
        ("udp", 1, "ESTABLISHED"),
    ],
)
def test_state_text(proto: str, state: int, text: str) -> None:
    assert to_entry(parse_msg(proto, pack_diag_msg(state=state))).state == text


@pytest.mark.parametrize(
    "msg",
    [
        pack_diag_msg(state=10, sport=8080, rqueue=2, wqueue=7, uid=1000, inode=4242),
        pack_diag_msg(sport=0x1234, dst="10.0.0.9", dport=443, ifindex=3, cookie=0x55_1122_3344, inode=7),
        pack_diag_msg(
            family=AF6, state=10, src="::", sport=80, attrs=[MARK, (diag.INET_DIAG_SKV6ONLY, b"\x01")]
        ),
        pack_diag_msg(
            family=AF6, state=10, src="::", sport=80, attrs=[MARK, (diag.INET_DIAG_SKV6ONLY, b"\x00")]
        ),
        pack_diag_msg(family=AF6, src="::ffff:127.0.0.1", sport=80, dst="::ffff:127.0.0.1", dport=40000),
        pack_diag_msg(state=12, sport=80, dst="127.0.0.1", dport=5555),
        pack_diag_msg(state=6, sport=80, dst="127.0.0.1", dport=5556, timer=3, expires=60000),
        pack_diag_msg(state=7, sport=53, attrs=[(diag.INET_DIAG_SOCKOPT, b"\x70\x00")]),
        pack_diag_msg(state=7, sport=53, attrs=[(diag.INET_DIAG_SOCKOPT, b"\x50\x00"), MARK]),
        pack_diag_msg(state=7, sport=53, attrs=[(diag.INET_DIAG_SOCKOPT, b"")]),  # empty: not transparent
        pack_diag_msg(state=1, sport=5000, dst="127.0.0.1", dport=53) + b"\x08\x00",  # truncated attribute
        pack_diag_msg(state=1, sport=5000, dst="127.0.0.1", dport=0),  # connected to port 0: not a wildcard
        pack_diag_msg(family=AF6, state=99, src="fe80::1", sport=1),  # a state with no name
    ],
)
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_entry_from_msg_is_to_entry_of_parse_msg(msg: bytes, proto: str) -> None:
    """The cold table's one-step entry (issue 18) says exactly what the two steps say."""
    held = (Holder(10, 3, "srv"),)
    former = (Holder(11, 4, "old"),)
    kw = {"former_holders": former, "first_seen": 12.5, "netns": 4026531840}
    assert diag.entry_from_msg(proto, msg) == to_entry(parse_msg(proto, msg))
    assert diag.entry_from_msg(proto, msg, held, **kw) == to_entry(parse_msg(proto, msg), held, **kw)  # type: ignore[arg-type]


def test_entry_from_msg_rejects_a_short_message() -> None:
    with pytest.raises(ValueError, match="too short"):
        diag.entry_from_msg("tcp", bytes(40))


def test_unconnected_udp_has_no_remote_but_connected_does() -> None:
    unconn = to_entry(parse_msg("udp", pack_diag_msg(state=7, sport=53)))
    conn = to_entry(parse_msg("udp", pack_diag_msg(state=1, sport=5000, dst="127.0.0.1", dport=53)))
    assert unconn.proto == "udp" and unconn.remote is None
    assert conn.remote == Endpoint("127.0.0.1", 53)


def test_short_message_is_rejected() -> None:
    with pytest.raises(ValueError):
        parse_msg("tcp", b"\x02\x01" + bytes(60))


def test_malformed_attributes_are_ignored() -> None:
    msg = pack_diag_msg(family=AF6, state=10, src="::") + struct.pack("=HH", 200, 11)  # length past end
    assert parse_msg("tcp", msg).v6only is None


def test_to_entry_carries_holders_memory_and_first_seen() -> None:
    holders = (Holder(10, 3, "nginx"),)
    former = (Holder(11, 4, "curl"),)
    entry = to_entry(
        parse_msg("tcp", pack_diag_msg(inode=5)), holders, former_holders=former, first_seen=12.5
    )
    assert entry.holders == holders and entry.former_holders == former and entry.first_seen == 12.5


# -- requests ---------------------------------------------------------------------------------


def test_dump_request_layout() -> None:
    req = build_request("udp", 6)
    assert len(req) == diag.REQ_SIZE == 56
    family, proto, ext, states = struct.unpack_from("=BBBxI", req)
    assert (family, proto, ext, states) == (AF6, socket.IPPROTO_UDP, 0, 0xFFFFFFFF)
    assert req[8:] == bytes(48)


def test_lookup_request_has_tuple_and_no_cookie() -> None:
    req = build_request("tcp", 4, src="127.0.0.1", sport=8080, dst="10.1.2.3", dport=40000)
    assert struct.unpack_from("!HH", req, 8) == (8080, 40000)
    assert req[12:16] == socket.inet_aton("127.0.0.1") and req[28:32] == socket.inet_aton("10.1.2.3")
    assert struct.unpack_from("=III", req, 44) == (0, 0xFFFFFFFF, 0xFFFFFFFF)


class FakeChannel:
    """Records requests; answers queries with canned inet_diag_msg payloads."""

    def __init__(
        self, answers: list[bytes] | None = None, dumps: dict[tuple[int, int], list[bytes]] | None = None
    ):
        self.answers = answers or []
        self.dumps = dumps or {}
        self.requests: list[bytes] = []

    def query(self, msg_type: int, payload: bytes, want_type: int) -> list[bytes]:
        self.requests.append(payload)
        return self.answers

    def dump(self, msg_type: int, payload: bytes, want_type: int) -> list[bytes]:
        self.requests.append(payload)
        family, proto = payload[0], payload[1]
        return self.dumps.get((proto, family), [])

    def close(self) -> None:
        pass


def test_lookup_exact_orients_udp_the_kernel_way() -> None:
    chan = FakeChannel()
    sock = DiagSocket(channel=chan)  # type: ignore[arg-type]
    sock.lookup_exact("tcp", 4, "127.0.0.1", 80, "127.0.0.2", 5000)
    sock.lookup_exact("udp", 4, "127.0.0.1", 53, "127.0.0.2", 5000)
    tcp_req, udp_req = chan.requests
    # TCP: id.src is the socket's local end.
    assert struct.unpack_from("!HH", tcp_req, 8) == (80, 5000)
    assert tcp_req[12:16] == socket.inet_aton("127.0.0.1")
    # UDP: udp_dump_one looks up a datagram *from* id.src *to* id.dst.
    assert struct.unpack_from("!HH", udp_req, 8) == (5000, 53)
    assert udp_req[12:16] == socket.inet_aton("127.0.0.2")


def test_lookup_exact_parses_answer() -> None:
    answer = pack_diag_msg(state=10, sport=80, inode=7, cookie=99)
    sock = DiagSocket(channel=FakeChannel([answer]))  # type: ignore[arg-type]
    (raw,) = sock.lookup_exact("tcp", 4, "127.0.0.1", 80, "0.0.0.0", 0)
    assert (raw.state, raw.inode, raw.cookie) == (10, 7, 99)


# -- netlink framing ----------------------------------------------------------------------


class FakeNetlinkSocket:
    """A socket whose recv_into hands out prepared datagrams (seq filled in on send)."""

    def __init__(self, datagrams: list[list[tuple[int, bytes, int]]]) -> None:
        self.datagrams = datagrams
        self.sent: list[bytes] = []
        self.closed = False

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)

    def recv_into(self, buf: bytearray, nbytes: int = 0, flags: int = 0) -> int:
        seq = struct.unpack_from("=I", self.sent[-1], 8)[0]
        parts = self.datagrams.pop(0)
        data = b"".join(nlmsg(kind, payload, seq if s is None else s, fl) for kind, payload, fl, s in parts)
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.closed = True


def _chan(datagrams: list[list[tuple[int, bytes, int, int | None]]]) -> netlink.NetlinkChannel:
    return netlink.NetlinkChannel(0, sock=FakeNetlinkSocket(datagrams), bufsize=4096)  # type: ignore[arg-type]


def test_dump_reads_multipart_until_done_and_skips_stale() -> None:
    a, b, c = (pack_diag_msg(sport=p) for p in (1, 2, 3))
    multi = netlink.NLM_F_MULTI
    chan = _chan(
        [
            [(20, a, multi, None), (20, b"stale", multi, 12345), (20, b, multi, None)],
            [(20, c, multi, None), (netlink.NLMSG_DONE, struct.pack("=i", 0), multi, None)],
        ]
    )
    assert chan.dump(20, b"req", 20) == [a, b, c]


def test_dump_error_raises_and_reopens_later() -> None:
    chan = _chan([[(netlink.NLMSG_ERROR, struct.pack("=i", -errno.EPERM) + bytes(16), 0, None)]])
    with pytest.raises(netlink.NetlinkError) as info:
        chan.dump(20, b"req", 20)
    assert info.value.errno == errno.EPERM
    assert chan._sock is None  # closed: a half-read dump never answers the next request


def test_query_enoent_is_empty() -> None:
    chan = _chan([[(netlink.NLMSG_ERROR, struct.pack("=i", -errno.ENOENT) + bytes(16), 0, None)]])
    assert chan.query(20, b"req", 20) == []


def test_query_single_answer() -> None:
    a = pack_diag_msg(sport=7)
    chan = _chan([[(20, a, 0, None)]])
    assert chan.query(20, b"req", 20) == [a]


def test_split_messages_rejects_bad_length() -> None:
    with pytest.raises(netlink.NetlinkError):
        netlink.split_messages(struct.pack("=IHHII", 400, 20, 0, 1, 0))


def test_route_messages() -> None:
    addr = struct.pack("=BBBBI", AF4, 8, 0, 254, 1)
    addr += struct.pack("=HH", 8, route.IFA_ADDRESS) + socket.inet_aton("10.0.0.2")
    addr += struct.pack("=HH", 8, route.IFA_LOCAL) + socket.inet_aton("10.0.0.1")
    assert route.parse_addr_msg(addr) == (1, "10.0.0.1")
    addr6 = struct.pack("=BBBBI", AF6, 128, 0, 254, 1)
    addr6 += struct.pack("=HH", 20, route.IFA_ADDRESS) + socket.inet_pton(AF6, "::1")
    assert route.parse_addr_msg(addr6) == (1, "::1")
    link = struct.pack("=BxHiII", 0, 772, 1, 0, 0) + struct.pack("=HH", 7, route.IFLA_IFNAME) + b"lo\0\0"
    assert route.parse_link_msg(link) == (1, "lo")


# -- fake /proc -------------------------------------------------------------------------------


class FakeProc:
    """A /proc tree: stat, comm, cmdline and fd symlinks (targets need not exist)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(exist_ok=True)
        (root / "self").mkdir(exist_ok=True)  # non-numeric entries are ignored

    def process(self, pid: int, comm: str, starttime: int = 100, cmdline: str = "", ppid: int = 1) -> Path:
        d = self.root / str(pid)
        (d / "fd").mkdir(parents=True, exist_ok=True)
        fields = ["S", str(ppid)] + ["0"] * 17 + [str(starttime)] + ["0"] * 30
        (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + "\n")
        (d / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode() + b"\0")
        return d

    def fd(self, pid: int, fd: int, target: str) -> None:
        link = self.root / str(pid) / "fd" / str(fd)
        if link.is_symlink():
            link.unlink()
        os.symlink(target, link)

    def sock(self, pid: int, fd: int, inode: int) -> None:
        self.fd(pid, fd, f"socket:[{inode}]")

    def close(self, pid: int, fd: int) -> None:
        (self.root / str(pid) / "fd" / str(fd)).unlink()

    def last_pid(self, pid: int) -> None:
        """The kernel's ``ns_last_pid``, which tells whether processes were started."""
        path = self.root / "sys" / "kernel" / "ns_last_pid"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{pid}\n")

    def kill(self, pid: int) -> None:
        d = self.root / str(pid)
        for f in (d / "fd").iterdir():
            f.unlink()
        (d / "fd").rmdir()
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    p = FakeProc(tmp_path / "proc")
    p.process(100, "nginx")
    for fd in (0, 1, 2):
        p.fd(100, fd, "/dev/null")
    p.sock(100, 3, 555)
    p.sock(100, 4, 556)
    p.fd(100, 5, "/dev/null")
    p.fd(100, 6, "pipe:[777]")
    p.process(200, "nginx", starttime=150)  # a fork child sharing the listener
    p.sock(200, 3, 555)
    p.process(300, "kthread")  # no sockets
    return p


def H(pid: int, fd: int, name: str = "nginx") -> Holder:
    return Holder(pid, fd, name)


def test_read_stat_handles_odd_comm(tmp_path: Path) -> None:
    p = FakeProc(tmp_path / "proc")
    p.process(42, "a) (b c", starttime=777)
    assert read_stat(str(p.root), 42) == ("a) (b c", 777)
    assert read_stat(str(p.root), 43) is None


def test_full_scan_finds_every_holder(proc: FakeProc) -> None:
    scanner = HolderScanner(str(proc.root))
    assert scanner.scan() == {555: (H(100, 3), H(200, 3)), 556: (H(100, 4),)}
    assert scanner.last_full and sorted(scanner.socket_pids) == [100, 200]


def test_scan_ignores_vanished_and_unreadable(proc: FakeProc) -> None:
    (proc.root / "400").mkdir()  # a process dir with nothing in it (exited)
    proc.process(500, "ghost")
    (proc.root / "500" / "fd").rmdir()  # fd dir gone
    assert set(HolderScanner(str(proc.root)).scan()) == {555, 556}


def test_incremental_scan_reads_only_new_links(proc: FakeProc) -> None:
    scanner = HolderScanner(str(proc.root))
    first = scanner.scan({555, 556})
    assert scanner.last_full  # nothing known yet
    assert scanner.scan({555, 556}) is first  # nothing changed: the same map, no reads
    assert scanner.last_reads == 0 and not scanner.last_full

    proc.sock(100, 7, 557)  # a new connection
    proc.close(100, 4)  # 556 closed...
    got = scanner.scan({555, 557})  # ...and gone from the kernel
    assert got == {555: (H(100, 3), H(200, 3)), 557: (H(100, 7),)}
    assert scanner.last_reads == 1 and not scanner.last_full


def test_reused_fd_with_a_live_old_socket_falls_back_to_full(proc: FakeProc) -> None:
    scanner = HolderScanner(str(proc.root))
    scanner.scan({555, 556})
    # pid 200 closes its copy of 555 (still held by pid 100) and gets 558 on the same fd:
    proc.sock(200, 3, 558)
    got = scanner.scan({555, 556, 558})
    assert scanner.last_full
    assert got == {555: (H(100, 3),), 556: (H(100, 4),), 558: (H(200, 3),)}


def test_file_fd_taken_by_a_new_socket_needs_no_full_scan(proc: FakeProc) -> None:
    scanner = HolderScanner(str(proc.root))
    scanner.scan({555, 556})
    proc.sock(100, 5, 559)  # fd 5 was /dev/null: the listing shows the same names
    got = scanner.scan({555, 556, 559})
    assert got[559] == (H(100, 5),) and not scanner.last_full
    assert scanner.last_changed == {559}
    assert scanner.last_reads == 5  # pid 100's files (fds 0, 1, 2, 5, 6), not every link


def test_recheck_spares_a_full_scan_for_sockets_closed_meanwhile(proc: FakeProc) -> None:
    scanner = HolderScanner(str(proc.root))
    scanner.scan({555, 556})
    asked: list[set[int]] = []

    def recheck(missing: set[int]) -> set[int]:
        asked.append(set(missing))
        return set()  # the kernel no longer has it: closed between dump and scan

    scanner.scan({555, 556, 560}, recheck=recheck)
    assert asked == [{560}] and not scanner.last_full
    scanner.scan({555, 556, 560}, recheck=lambda missing: missing)  # still there: search
    assert scanner.last_full


def test_links_are_read_again_a_slice_per_scan(proc: FakeProc) -> None:
    scanner = HolderScanner(str(proc.root))
    scanner.scan({555, 556})
    # pid 200 dup2()s the connection over its copy of the listener: same fd names, every
    # socket still alive, so its listing looks unchanged.
    proc.sock(200, 3, 556)
    assert scanner.scan({555, 556})[555] == (H(100, 3), H(200, 3))  # not seen yet
    assert scanner.last_reads == 0
    got = scanner.scan({555, 556}, verify=1.0)  # every link, once
    assert got == {555: (H(100, 3),), 556: (H(100, 4), H(200, 3))}
    assert scanner.last_changed == {555, 556} and not scanner.last_full
    # A share of the links per scan, resuming where the last one stopped.
    links = sum(len(st.fds) for st in scanner._pids.values())
    reads = []
    for _ in range(4):
        scanner.scan({555, 556}, verify=0.3)
        reads.append(scanner.last_reads)
    assert all(0 < r <= int(links * 0.3) + 1 for r in reads)
    assert sum(reads) >= links  # the whole table in a few scans


def test_unheld_inode_does_not_force_full_scans(proc: FakeProc) -> None:
    scanner = HolderScanner(str(proc.root))
    scanner.scan({555, 556, 999})  # 999: held by nobody we can see
    assert scanner.unheld == {999}
    scanner.scan({555, 556, 999})
    assert not scanner.last_full


def test_vanished_process_and_pid_reuse(proc: FakeProc) -> None:
    scanner = HolderScanner(str(proc.root))
    scanner.scan({555, 556})
    proc.kill(200)
    assert scanner.scan({555, 556}) == {555: (H(100, 3),), 556: (H(100, 4),)}
    proc.kill(100)
    proc.process(100, "redis", starttime=999)  # same pid, another process
    proc.sock(100, 3, 600)
    got = scanner.scan({600})
    assert got == {600: (H(100, 3, "redis"),)}


def test_find_holders_stops_when_all_found_but_checks_fork_copies(proc: FakeProc) -> None:
    scanner = HolderScanner(str(proc.root))
    # No scan yet: every process counts as started since. Hinted pid first; 555 is found
    # there, and then only fd 3 of the others is read for a fork copy (pid 100 has one).
    assert scanner.find_holders({555}, hint_pids=[200]) == {555: (H(100, 3), H(200, 3))}
    assert scanner.last_find_pass == "new"
    got = scanner.find_holders({556, 555}, hint_pids=[200])
    assert got == {555: (H(100, 3), H(200, 3)), 556: (H(100, 4),)}
    assert scanner.find_holders({12345}) == {}
    assert scanner.find_holders(set()) == {}


def test_find_holders_reads_new_fds_first_and_all_only_when_deep(proc: FakeProc) -> None:
    scanner = HolderScanner(str(proc.root))
    scanner.scan({555, 556})
    proc.sock(100, 5, 558)  # an fd number that was /dev/null at the last scan
    assert scanner.find_holders({558}, deep=False) == {}  # not new, not hinted, not recent
    assert scanner.find_holders({558}) == {558: (H(100, 5),)}
    assert scanner.last_find_deep
    proc.sock(100, 8, 559)  # a new fd
    assert scanner.find_holders({559}, deep=False) == {559: (H(100, 8),)}
    assert not scanner.last_find_deep
    # pid 100 is where the last searches found sockets: all its links are read next time
    proc.sock(100, 5, 560)
    assert scanner.find_holders({560}, deep=False) == {560: (H(100, 5),)}
    assert scanner.last_find_pass == "hinted" and not scanner.last_find_deep


def test_read_stat_ppid(tmp_path: Path) -> None:
    p = FakeProc(tmp_path / "proc")
    p.process(42, "a) (b", starttime=777, ppid=41)
    assert read_stat_ppid(str(p.root), 42) == ("a) (b", 41, 777)


def test_free_slots_lowest_first() -> None:
    assert free_slots({"0", "1", "2"}) == ((), 3)
    assert free_slots({"3", "0", "6", "1"}) == ((2, 4, 5), 7)
    assert free_slots(set()) == ((), 0)
    # A /proc-sized table in the kernel's (ascending) listing order: a binary search.
    names = [str(i) for i in range(1000) if i not in (5, 700, 701)]
    assert free_slots(set(names), names) == ((5, 700, 701), 1000)
    assert free_slots(set(names), names, limit=2) == ((5, 700), 1000)
    dense = [str(i) for i in range(1000)]
    assert free_slots(set(dense), dense) == ((), 1000)
    # Listed in any other order: sorted instead, same answer.
    shuffled = names[::-1]
    assert free_slots(set(shuffled), shuffled) == ((5, 700, 701), 1000)


def test_probe_reads_only_the_next_fd_of_the_hinted_process(proc: FakeProc) -> None:
    scanner = HolderScanner(str(proc.root))
    scanner.scan({555, 556})
    proc.sock(100, 7, 700)  # accepted after the scan: fds 3-6 were taken, so 7
    assert scanner.find_holders({700}, hint_pids=[100]) == {700: (H(100, 7),)}
    assert scanner.last_find_pass == "probe"
    assert scanner.last_find_listed == 0 and scanner.last_find_reads == 1
    proc.sock(100, 8, 701)  # the next one: fd 7 was read already, fd 8 is read
    assert scanner.find_holders({701}, hint_pids=[100]) == {701: (H(100, 8),)}
    assert scanner.last_find_reads == 1


def test_probe_fills_holes_lowest_first(proc: FakeProc) -> None:
    proc.process(400, "haproxy")
    for fd in (0, 1, 2, 4, 7):
        proc.sock(400, fd, 4000 + fd)
    scanner = HolderScanner(str(proc.root))
    scanner.scan({555, 556, 4000, 4001, 4002, 4004, 4007})
    proc.sock(400, 3, 800)  # the lowest free number
    proc.sock(400, 5, 801)  # then the next
    got = scanner.find_holders({800, 801}, hint_pids=[400])
    assert got == {800: (H(400, 3, "haproxy"),), 801: (H(400, 5, "haproxy"),)}
    assert scanner.last_find_pass == "probe" and scanner.last_find_reads == 2


def test_probe_never_names_a_predicted_fd_that_holds_another_socket(proc: FakeProc) -> None:
    scanner = HolderScanner(str(proc.root))
    scanner.scan({555, 556})
    proc.sock(100, 7, 999)  # where the next fd of pid 100 goes: another socket
    proc.sock(200, 4, 700)  # the one sought is in pid 200
    assert scanner.find_holders({700}, hint_pids=[100]) == {700: (H(200, 4),)}
    assert scanner.find_holders({12345}, hint_pids=[100, 200], deep=False) == {}


def test_probe_reads_fds_of_closed_sockets_first(proc: FakeProc) -> None:
    scanner = HolderScanner(str(proc.root))
    scanner.scan({555, 556})
    proc.sock(100, 4, 702)  # 556 closed, and fd 4 reused by a new connection
    # Not where the kernel would put a new fd given the last scan, and no listing shows it as
    # new: found by reading every link of the hinted process (a small one).
    assert scanner.find_holders({702}, hint_pids=[100], deep=False) == {702: (H(100, 4),)}
    assert scanner.last_find_pass == "hinted" and scanner.last_find_reads > 1
    scanner.note_closed([H(100, 4)])  # the table saw a socket at fd 4 go
    assert scanner.find_holders({702}, hint_pids=[100], deep=False) == {702: (H(100, 4),)}
    assert scanner.last_find_pass == "probe" and scanner.last_find_reads == 1
    scanner.scan({555, 702})  # a scan starts afresh
    assert scanner._freed == {}


def test_links_read_since_the_scan_are_confirmed_not_trusted(proc: FakeProc) -> None:
    scanner = HolderScanner(str(proc.root))
    scanner.scan({555, 556})
    proc.sock(100, 7, 703)
    proc.sock(100, 8, 704)
    assert scanner.find_holders({704}, hint_pids=[100]) == {704: (H(100, 8),)}  # read fd 7 too
    # 703 was seen on the way: read again (one link), not searched for
    assert scanner.find_holders({703}) == {703: (H(100, 7),)}
    assert scanner.last_find_reads == 1 and scanner.last_find_pass == "probe"
    proc.close(100, 7)  # gone since: not reported from memory
    assert scanner.find_holders({703}, deep=False) == {}


def test_new_process_is_read_in_full_before_listing_old_ones(proc: FakeProc) -> None:
    scanner = HolderScanner(str(proc.root))
    scanner.scan({555, 556})
    proc.process(500, "curl", ppid=300)
    proc.sock(500, 5, 705)
    assert scanner.find_holders({705}) == {705: (H(500, 5, "curl"),)}
    assert scanner.last_find_pass == "new" and scanner.last_find_listed == 1


def test_fork_copies_are_holders_too(proc: FakeProc) -> None:
    scanner = HolderScanner(str(proc.root))
    scanner.scan({555, 556})
    # pid 100 accepts after the scan, then forks twice: the children share fd 7.
    proc.sock(100, 7, 706)
    for child in (601, 602):
        proc.process(child, "nginx", starttime=300, ppid=100)
        proc.sock(child, 7, 706)
        proc.sock(child, 3, 555)
    got = scanner.find_holders({706}, hint_pids=[100])
    assert got == {706: (H(100, 7), H(601, 7), H(602, 7))}
    assert scanner.last_find_pass == "probe"
    # Found in a child first (no hint): its parent is read at the same fd.
    proc.sock(100, 8, 707)
    proc.sock(602, 8, 707)
    assert scanner.find_holders({707}) == {707: (H(100, 8), H(602, 8))}


def test_new_pids_listing_waits_for_ns_last_pid(proc: FakeProc) -> None:
    proc.last_pid(300)
    scanner = HolderScanner(str(proc.root))
    scanner.scan({555, 556})
    assert scanner.new_pids() == []
    proc.process(700, "late")  # (as if ns_last_pid had not moved: the listing is reused)
    assert scanner.new_pids() == []
    proc.last_pid(700)
    assert scanner.new_pids() == [700]


def test_uids_order_the_wider_probe(proc: FakeProc, monkeypatch: pytest.MonkeyPatch) -> None:
    scanner = HolderScanner(str(proc.root))
    scanner.scan({555, 556})
    order: list[int] = []
    real = scanner._probe
    monkeypatch.setattr(scanner, "_probe", lambda f, pid, st: (order.append(pid), real(f, pid, st)))
    monkeypatch.setattr(scanner, "_uid", lambda pid, st: {100: 1000, 200: 0}[pid])
    scanner.find_holders({708}, uids={1000}, deep=False)
    assert order == [100, 200]  # same owner first, then the rest newest first
    order.clear()
    scanner.find_holders({708}, deep=False)
    assert order == [200, 100]


def test_module_helpers(proc: FakeProc) -> None:
    assert procfs.scan_holders(str(proc.root))[556] == (H(100, 4),)
    assert procfs.find_holders({556}, proc_root=str(proc.root)) == {556: (H(100, 4),)}
    assert sorted(procfs.socket_fds(str(proc.root), 100)) == [(3, 555), (4, 556)]


def test_name_cache_is_per_start_time(tmp_path: Path) -> None:
    p = FakeProc(tmp_path / "proc")
    p.process(77, "nginx", starttime=10)
    names = ProcessNames(str(p.root))
    assert names.name(77) == "nginx"
    p.process(77, "renamed", starttime=10)  # the same pid exec'd another program: its name follows
    assert names.name(77) == "renamed"
    p.process(77, "postgres", starttime=20)  # pid reused by another process
    assert names.name(77) == "postgres"
    assert names.name(78) is None


def test_long_names_come_from_cmdline(tmp_path: Path) -> None:
    p = FakeProc(tmp_path / "proc")
    p.process(5, "very-long-daemo", cmdline="/usr/sbin/very-long-daemon-name --flag")
    p.process(6, "python3.11-work", cmdline="/usr/bin/python3 x.py")  # argv0 disagrees: keep comm
    names = ProcessNames(str(p.root))
    assert names.name(5) == "very-long-daemon-name"
    assert names.name(6) == "python3.11-work"


# -- SocketTableSource with fakes ---------------------------------------------------------


class FakeDiag:
    def __init__(self) -> None:
        self.msgs: dict[tuple[str, int], list[bytes]] = {}
        self.lookups: dict[tuple[str, str, int, str, int], list[bytes]] = {}
        self.calls: list[tuple[str, str, int, str, int]] = []

    def dump_msgs(self, proto: str, family: int) -> list[bytes]:
        return list(self.msgs.get((proto, family), []))

    def dump(self, proto: str, family: int, states: int) -> list[RawSock]:
        raws = [parse_msg(proto, m) for m in self.msgs.get((proto, family), [])]
        return [r for r in raws if states & (1 << r.state)]

    def lookup_exact(
        self, proto: str, family: int, src: str, sport: int, dst: str, dport: int, *, ifindex: int = 0
    ) -> list[RawSock]:
        key = (proto, src, sport, dst, dport)
        self.calls.append(key)
        return [parse_msg(proto, m) for m in self.lookups.get(key, [])]

    def close(self) -> None:
        pass


class FakeRoute:
    def local_addresses(self) -> set[str]:
        return {"127.0.0.1", "::1", "192.0.2.2"}

    def interface_names(self) -> dict[int, str]:
        return {1: "lo", 2: "eth0"}

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_source(proc: FakeProc, fake: FakeDiag, clock: Clock) -> SocketTableSource:
    return SocketTableSource(
        diag=fake,  # type: ignore[arg-type]
        route=FakeRoute(),  # type: ignore[arg-type]
        scanner=HolderScanner(str(proc.root)),
        clock=clock,
        monotonic=clock,
    )


LISTEN = pack_diag_msg(state=10, sport=80, inode=555, cookie=1, wqueue=128)
CONN = pack_diag_msg(state=1, sport=80, dst="127.0.0.1", dport=40000, inode=556, cookie=2)


def test_refresh_builds_table_with_holders_and_addresses(proc: FakeProc) -> None:
    fake, clock = FakeDiag(), Clock()
    fake.msgs[("tcp", AF4)] = [LISTEN, CONN]
    src = make_source(proc, fake, clock)
    assert len(src.current()) == 0
    table = src.refresh()
    assert src.current() is table and table.taken_at == 1000.0
    listener = table.on_port("tcp", 80)[0]
    assert listener.holders == (H(100, 3), H(200, 3)) and listener.describe() == "nginx[100] fd 3 (+1)"
    (conn,) = table.connected("tcp", "127.0.0.1", 80, "127.0.0.1", 40000)
    assert conn.holders == (H(100, 4),) and conn.first_seen == 1000.0
    assert table.is_local("192.0.2.2") and table.ifname(2) == "eth0"


def test_refresh_reuses_entries_and_keeps_first_seen(proc: FakeProc) -> None:
    fake, clock = FakeDiag(), Clock()
    fake.msgs[("tcp", AF4)] = [LISTEN, CONN]
    src = make_source(proc, fake, clock)
    first = src.refresh()
    clock.now += 5
    # Only the timer fields changed: the very same entry objects come back.
    fake.msgs[("tcp", AF4)] = [LISTEN, pack_diag_msg(**_conn_fields(), timer=2, expires=200)]
    second = src.refresh()
    assert second.taken_at == 1005.0
    assert [a is b for a, b in zip(first.entries, second.entries, strict=True)] == [True, True]
    # A queue change gives a new entry, first_seen stays.
    fake.msgs[("tcp", AF4)] = [LISTEN, pack_diag_msg(**_conn_fields(), rqueue=10)]
    clock.now += 5
    (conn,) = src.refresh().connected("tcp", "127.0.0.1", 80, "127.0.0.1", 40000)
    assert conn.rx_queue == 10 and conn.first_seen == 1000.0


def _conn_fields() -> dict[str, object]:
    return {"state": 1, "sport": 80, "dst": "127.0.0.1", "dport": 40000, "inode": 556, "cookie": 2}


def test_closed_socket_keeps_former_holders_by_cookie(proc: FakeProc) -> None:
    fake, clock = FakeDiag(), Clock()
    fake.msgs[("tcp", AF4)] = [LISTEN, CONN]
    src = make_source(proc, fake, clock)
    src.refresh()
    # close(): fd gone, the kernel shows TIME_WAIT with inode 0 and the same cookie.
    proc.close(100, 4)
    tw = pack_diag_msg(state=6, sport=80, dst="127.0.0.1", dport=40000, inode=0, cookie=2)
    fake.msgs[("tcp", AF4)] = [LISTEN, tw]
    clock.now += 1
    (entry,) = src.refresh().connected("tcp", "127.0.0.1", 80, "127.0.0.1", 40000)
    assert entry.state == "TIME_WAIT" and entry.kernel_owned
    assert entry.former_holders == (H(100, 4),) and entry.first_seen == 1000.0
    clock.now += 30
    (entry,) = src.refresh().connected("tcp", "127.0.0.1", 80, "127.0.0.1", 40000)
    assert entry.former_holders == (H(100, 4),)  # still there while the entry lives
    # Gone from the kernel for longer than former_ttl: forgotten.
    fake.msgs[("tcp", AF4)] = [LISTEN]
    src.refresh()
    clock.now += 61
    src.refresh()
    fake.msgs[("tcp", AF4)] = [LISTEN, tw]
    (entry,) = src.refresh().connected("tcp", "127.0.0.1", 80, "127.0.0.1", 40000)
    assert entry.former_holders == ()


def test_resolve_adds_new_socket_with_holders(proc: FakeProc) -> None:
    fake, clock = FakeDiag(), Clock()
    fake.msgs[("tcp", AF4)] = [LISTEN]
    src = make_source(proc, fake, clock)
    src.refresh()
    # A connection appears after the snapshot; the accepting process is the listener's.
    proc.sock(100, 9, 700)
    child = pack_diag_msg(state=1, sport=80, dst="127.0.0.1", dport=41000, inode=700, cookie=7)
    fake.lookups[("tcp", "127.0.0.1", 80, "127.0.0.1", 41000)] = [child]
    fake.lookups[("tcp", "127.0.0.1", 80, "0.0.0.0", 0)] = [LISTEN]
    seg = Segment(0.0, "lo", "tcp", 4, "127.0.0.1", 41000, "127.0.0.1", 80, flags="A")
    clock.now += 1  # past the scan rate limit
    table = src.resolve(seg)
    assert table is not None and src.current() is table
    (entry,) = table.connected("tcp", "127.0.0.1", 80, "127.0.0.1", 41000)
    assert entry.holders == (H(100, 9),) and entry.first_seen == 1001.0
    # the listener's holders first, at the fds free at the scan: 7, 8, then 9
    assert src.scanner.last_find_pass == "probe" and src.scanner.last_find_listed == 0
    assert len(table.on_port("tcp", 80)) == 1  # the listener was not duplicated
    # receiver, sender, then the listener behind the established child
    assert fake.calls == [
        ("tcp", "127.0.0.1", 80, "127.0.0.1", 41000),
        ("tcp", "127.0.0.1", 41000, "127.0.0.1", 80),
        ("tcp", "127.0.0.1", 80, "0.0.0.0", 0),
    ]
    assert src.resolve(seg) is None  # nothing new the second time


def test_resolve_finds_a_transparent_socket_bound_since_the_table_on_the_tproxy_on_port(
    proc: FakeProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A datagram for a non-local address that a TPROXY rule steers to port 9000: the
    daemon's socket was bound after the last refresh, so the miss must look it up on the
    rule's on-port (the kernel's second look-up), not only on the datagram's own tuple."""
    from conntui.model import TproxyRules
    from conntui.sockets import source as source_mod
    from conntui.sockets.tproxy import parse_iptables_save

    rules = parse_iptables_save(
        "*mangle\n-A PREROUTING -d 203.0.113.0/24 -p udp -j TPROXY --on-port 9000 --tproxy-mark 0x1/0x1\n"
        "-A PREROUTING -d 203.0.113.0/24 -p tcp -j TPROXY --on-port 9001 --tproxy-mark 0x1/0x1\nCOMMIT\n",
        4,
    )
    monkeypatch.setattr(source_mod.tproxy, "rules_for", lambda *a, **k: TproxyRules(tuple(rules)))
    fake, clock = FakeDiag(), Clock()
    src = make_source(proc, fake, clock)
    src.refresh()
    sockopt = [(22, bytes([0x70, 0]))]  # INET_DIAG_SOCKOPT: IP_TRANSPARENT
    proc.sock(100, 7, 900)
    proc.sock(100, 8, 901)
    daemon = pack_diag_msg(state=7, sport=9000, inode=900, cookie=9, src="0.0.0.0", attrs=sockopt)
    listener = pack_diag_msg(state=10, sport=9001, inode=901, cookie=10, src="0.0.0.0", attrs=sockopt)
    # what the kernel's own look-up answers for the on-port with the segment's addresses
    fake.lookups[("udp", "203.0.113.10", 9000, "10.77.0.2", 4444)] = [daemon]
    fake.lookups[("tcp", "203.0.113.10", 9001, "10.77.0.2", 4445)] = [listener]
    fake.msgs[("tcp", AF4)] = []
    clock.now += 1
    dgram = Segment(0.0, "veth0", "udp", 4, "10.77.0.2", 4444, "203.0.113.10", 53)
    table = src.resolve(dgram)
    assert table is not None
    (entry,) = table.on_port("udp", 9000)
    assert entry.transparent and entry.holders == (H(100, 7),)
    syn = Segment(0.0, "veth0", "tcp", 4, "10.77.0.2", 4445, "203.0.113.10", 80, flags="S")
    table = src.resolve(syn)
    assert table is not None
    (entry,) = table.on_port("tcp", 9001)
    assert entry.transparent and entry.state == "LISTEN" and entry.holders == (H(100, 8),)
    # a destination no rule steers is not looked up on any other port
    fake.calls.clear()
    src.resolve(Segment(0.0, "veth0", "udp", 4, "10.77.0.2", 4444, "198.51.100.1", 53))
    assert {c[2] for c in fake.calls} <= {53, 4444}


def test_refresh_keeps_unchanged_entries_and_updates_new_holders(proc: FakeProc) -> None:
    fake, clock = FakeDiag(), Clock()
    fake.msgs[("tcp", AF4)] = [LISTEN, CONN]
    src = make_source(proc, fake, clock)
    first = src.refresh()
    second = src.refresh()  # byte-identical messages, same holders: the very same entries
    assert src.scanner.last_changed == frozenset()
    assert [a is b for a, b in zip(first.entries, second.entries, strict=True)] == [True, True]
    proc.process(250, "nginx", ppid=100)  # a fork: the connection gains a holder, its message does not change
    proc.sock(250, 4, 556)
    third = src.refresh()
    assert third.entries[0] is second.entries[0]
    (conn,) = third.connected("tcp", "127.0.0.1", 80, "127.0.0.1", 40000)
    assert conn.holders == (H(100, 4), H(250, 4)) and conn.first_seen == 1000.0
    proc.close(100, 4)
    (conn,) = src.refresh().connected("tcp", "127.0.0.1", 80, "127.0.0.1", 40000)
    assert conn.holders == (H(250, 4),)


@pytest.mark.parametrize("seed", range(5))
def test_refresh_patches_the_last_table_and_answers_as_a_full_build(proc: FakeProc, seed: int) -> None:
    rng = random.Random(seed)
    fake, clock = FakeDiag(), Clock()
    src = make_source(proc, fake, clock)
    cookies = itertools.count(100)
    socks: dict[int, dict[str, object]] = {1: dict(state=10, sport=80, inode=555, wqueue=128)}
    socks[2] = dict(state=1, sport=80, dst="127.0.0.1", dport=40000, inode=556)
    udp: dict[int, dict[str, object]] = {}
    fds = itertools.count(20)
    derived = 0
    for _ in range(80):
        r = rng.random()
        if r < 0.3:  # a new connection (sometimes held by pid 100, sometimes not yet)
            c = next(cookies)
            inode = 0
            if rng.random() < 0.5:
                inode = 10_000 + c
                proc.sock(100, next(fds), inode)
            socks[c] = dict(state=1, sport=80, dst="127.0.0.1", dport=41000 + c, inode=inode)
        elif r < 0.45 and len(socks) > 2:  # one closes
            del socks[rng.choice([c for c in socks if c > 2])]
        elif r < 0.55:  # timers and queues move
            c = rng.choice(list(socks))
            socks[c] = {**socks[c], "expires": rng.randrange(1, 500), "timer": 1}
        elif r < 0.62:  # the listener's accept queue moves
            socks[1] = {**socks[1], "rqueue": rng.randrange(0, 5)}
        elif r < 0.7:  # a listener on a port that may already have one (order matters there)
            socks[next(cookies)] = dict(state=10, sport=rng.choice([80, 81, 82]))
        elif r < 0.8:  # UDP sockets come and go, some on a shared port
            if udp and rng.random() < 0.4:
                del udp[rng.choice(list(udp))]
            else:
                udp[next(cookies)] = dict(state=7, sport=rng.choice([53, 5353, 6000 + len(udp)]))
        elif r < 0.85:  # a connection changes hands: a fork child holds it too
            proc.process(260, "nginx", ppid=100)
            proc.sock(260, next(fds), 556)
        order = list(socks.items())
        r = rng.random()
        if r < 0.1:  # connections come in another order (cosmetic: the view sorts)
            conns = [x for x in order if x[1]["state"] != 10]
            rng.shuffle(conns)
            shuffled = iter(conns)
            order = [x if x[1]["state"] == 10 else next(shuffled) for x in order]
        elif r < 0.13:  # so do listeners (their order decides the demux's ties): a build
            rng.shuffle(order)
        fake.msgs[("tcp", AF4)] = [pack_diag_msg(cookie=c, **f) for c, f in order]  # type: ignore[arg-type]
        fake.msgs[("udp", AF4)] = [pack_diag_msg(cookie=c, **f) for c, f in udp.items()]  # type: ignore[arg-type]
        clock.now += 0.5
        table = src.refresh()
        derived += int(src.stats["derived"])
        # what a full build of this dump, in the kernel's order, would answer
        dump = [("tcp", c) for c, _ in order] + [("udp", c) for c in udp]
        entries = [table.by_cookie(p, c) for p, c in dump]
        assert all(e is not None for e in entries)
        built = SocketTable([e for e in entries if e is not None])
        assert table._by_tuple == built._by_tuple
        assert table._by_local == built._by_local
        assert table._by_cookie == built._by_cookie
        assert {id(e) for e in table.entries} == {id(e) for e in built.entries}
        assert len(table) == len(dump)
    assert derived > 20  # most refreshes were patches


def test_resolve_reads_the_fd_of_a_connection_seen_to_close_first(proc: FakeProc) -> None:
    fake, clock = FakeDiag(), Clock()
    fake.msgs[("tcp", AF4)] = [LISTEN, CONN]
    src = make_source(proc, fake, clock)
    src.refresh()
    # The connection on fd 4 ends (both FINs seen: the caller prunes), and the next
    # accepted one gets fd 4 again: a number the last scan saw in use.
    proc.sock(100, 4, 710)
    fin = Segment(0.0, "lo", "tcp", 4, "127.0.0.1", 40000, "127.0.0.1", 80, flags="FA")
    table = src.resolve(fin, prune=True)
    assert table is not None and not table.connected("tcp", "127.0.0.1", 80, "127.0.0.1", 40000)
    child = pack_diag_msg(state=1, sport=80, dst="127.0.0.1", dport=41001, inode=710, cookie=11)
    fake.lookups[("tcp", "127.0.0.1", 80, "127.0.0.1", 41001)] = [child]
    fake.lookups[("tcp", "127.0.0.1", 80, "0.0.0.0", 0)] = [LISTEN]
    seg = Segment(0.0, "lo", "tcp", 4, "127.0.0.1", 41001, "127.0.0.1", 80, flags="PA")
    table = src.resolve(seg)  # within min_scan_interval of the scan: no walk over every fd
    assert table is not None
    (entry,) = table.connected("tcp", "127.0.0.1", 80, "127.0.0.1", 41001)
    assert entry.holders == (H(100, 4),)
    assert src.scanner.last_find_pass == "probe" and src.scanner.last_find_reads == 1


def test_resolve_without_findings_returns_none(proc: FakeProc) -> None:
    fake, clock = FakeDiag(), Clock()
    src = make_source(proc, fake, clock)
    src.refresh()
    seg = Segment(0.0, "lo", "udp", 4, "127.0.0.1", 5000, "127.0.0.1", 53)
    assert src.resolve(seg) is None
    assert [c[0] for c in fake.calls] == ["udp", "udp"]  # no listener look-up for UDP


def test_resolve_rate_limits_full_walks(proc: FakeProc) -> None:
    fake, clock = FakeDiag(), Clock()
    src = make_source(proc, fake, clock)
    src.refresh()  # a full walk just now
    proc.process(900, "newproc")  # a new process: its fds are all new, always looked at
    proc.sock(900, 3, 901)
    proc.sock(100, 5, 902)  # a reused fd number (was /dev/null): found only by a full walk
    fake.lookups[("udp", "127.0.0.1", 53, "127.0.0.1", 5000)] = [
        pack_diag_msg(state=7, sport=53, inode=901, cookie=9)
    ]
    fake.lookups[("udp", "127.0.0.1", 54, "127.0.0.1", 5000)] = [
        pack_diag_msg(state=7, sport=54, inode=902, cookie=10)
    ]
    seg53 = Segment(0.0, "lo", "udp", 4, "127.0.0.1", 5000, "127.0.0.1", 53)
    seg54 = Segment(0.0, "lo", "udp", 4, "127.0.0.1", 5000, "127.0.0.1", 54)
    table = src.resolve(seg53)
    assert table is not None and table.on_port("udp", 53)[0].holders == (H(900, 3, "newproc"),)
    table = src.resolve(seg54)  # within 50 ms of the full walk: new fds only
    assert table is not None and table.on_port("udp", 54)[0].holders == ()
    clock.now += 1
    table = src.resolve(seg54)  # later: the full walk is allowed
    assert table is not None and table.on_port("udp", 54)[0].holders == (H(100, 5),)


def test_resolve_does_not_wait_for_a_running_refresh(proc: FakeProc) -> None:
    import threading

    class SlowDump(FakeDiag):
        def __init__(self) -> None:
            super().__init__()
            self.entered = threading.Event()
            self.release = threading.Event()

        def dump_msgs(self, proto: str, family: int) -> list[bytes]:
            self.entered.set()
            assert self.release.wait(10)
            return super().dump_msgs(proto, family)

    slow, clock = SlowDump(), Clock()
    src = make_source(proc, slow, clock)
    slow.lookups[("udp", "127.0.0.1", 53, "127.0.0.1", 5000)] = [pack_diag_msg(state=7, sport=53, cookie=3)]
    refresher = threading.Thread(target=src.refresh)
    refresher.start()
    try:
        assert slow.entered.wait(10)
        table = src.resolve(Segment(0.0, "lo", "udp", 4, "127.0.0.1", 5000, "127.0.0.1", 53))
        assert table is not None and len(table.on_port("udp", 53)) == 1
    finally:
        slow.release.set()
        refresher.join(10)
    assert len(src.current()) == 0  # the refresh's newer (empty) dump replaced it
