"""The helper's request protocol: what it serves, and everything it refuses.

The parser is checked alone, then a real helper (``Helper.serve_forever`` in a thread, over
a real ``SOCK_SEQPACKET`` pair) is sent malformed, oversized and out-of-range datagrams:
each is refused with its errno and a reason, and the helper goes on serving.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from conntui.model import FlowKey
from conntui.privsep import protocol as P
from conntui.privsep.client import HelperClient, HelperGone
from conntui.privsep.helper import Helper
from conntui.sockets.conntrack import CTA_TUPLE_ORIG, _request
from conntui.sockets.netlink import NLMSG_HDR


def _ct(seq: int = 7) -> bytes:
    return _request(FlowKey("tcp", "10.0.0.1", 1234, "10.0.0.2", 80), socket.AF_INET, 6, CTA_TUPLE_ORIG, seq)


# -- the parser -----------------------------------------------------------------------------


def test_well_formed_requests_parse() -> None:
    assert P.parse_request(P.encode(P.OP_PING), False).op == P.OP_PING
    assert P.parse_request(P.encode(P.OP_BYE), False).op == P.OP_BYE
    assert P.parse_request(P.encode(P.OP_NETNS_LIST), False).op == P.OP_NETNS_LIST
    assert P.parse_request(P.open_netns_request(7), False).pid == 7
    assert P.parse_request(P.fds_request(42), False).pid == 42
    req = P.parse_request(P.inodes_request(42, [0, 1, 1000]), False)
    assert (req.pid, req.fds) == (42, (0, 1, 1000))
    assert P.parse_request(P.netlink_request(P.NETLINK_SOCK_DIAG), True).protocol == P.NETLINK_SOCK_DIAG
    assert P.parse_request(P.rules_request(P.RULES_NFT), False).kind == P.RULES_NFT
    assert P.parse_request(P.rules_request(P.RULES_NFT), True).has_fd
    assert P.parse_request(P.sk_lookup_request(4026531840), False).inode == 4026531840
    P.check_conntrack(_ct())


@pytest.mark.parametrize(
    ("data", "has_fd", "code"),
    [
        (b"", False, errno.EINVAL),  # no header
        (b"\x01", False, errno.EINVAL),
        (struct.pack("=HH", 99, 0), False, errno.EINVAL),  # unknown op
        (struct.pack("=HH", P.OP_PING, 1), False, errno.EINVAL),  # reserved field set
        (P.encode(P.OP_PING, b"x"), False, errno.EINVAL),  # a body where none belongs
        (P.encode(P.OP_PING) + b"\0" * P.MAX_REQUEST, False, errno.E2BIG),  # oversized
        (P.fds_request(0), False, errno.ERANGE),  # pid 0
        (P.fds_request(P.PID_MAX), False, errno.ERANGE),  # beyond pid_max
        (P.encode(P.OP_FDS, b"\1\0\0"), False, errno.EINVAL),  # short pid
        (P.encode(P.OP_FDS, struct.pack("=II", 1, 2)), False, errno.EINVAL),  # long
        (P.encode(P.OP_INODES, struct.pack("=I", 1)), False, errno.EINVAL),  # no fd asked
        (P.encode(P.OP_INODES, struct.pack("=I", 1) + b"\0\0"), False, errno.EINVAL),
        (P.encode(P.OP_INODES, struct.pack("=II", 1, 1 << 31)), False, errno.ERANGE),  # fd
        (P.access_request(1 << 30), False, errno.ERANGE),
        (P.netlink_request(12), True, errno.EPERM),  # netfilter: only through channels
        (P.netlink_request(P.NETLINK_ROUTE), False, errno.EBADF),  # no namespace sent
        (P.fds_request(1), True, errno.EBADF),  # a descriptor nobody asked for
        (P.encode(P.OP_PING), True, errno.EBADF),
        (P.rules_request(3), False, errno.ERANGE),  # no such command
        (P.encode(P.OP_RULES, b"\0"), False, errno.EINVAL),
        (P.sk_lookup_request(0), False, errno.ERANGE),
        (P.sk_lookup_request(1 << 32), False, errno.ERANGE),
        (P.encode(P.OP_CONNTRACK, b"\0"), False, errno.EINVAL),
        (P.encode(P.OP_BYE, b"\0"), False, errno.EINVAL),
        (P.encode(P.OP_NETNS_LIST), True, errno.EBADF),
        (P.open_netns_request(0), False, errno.ERANGE),
        (P.encode(P.OP_FDS_MANY), False, errno.EINVAL),  # no pid
        (P.fds_many_request([1, 0]), False, errno.ERANGE),
        (P.encode(P.OP_FDS_MANY, b"\1\0\0\0\2"), False, errno.EINVAL),
    ],
)
def test_malformed_oversized_and_out_of_range_requests_are_refused(
    data: bytes, has_fd: bool, code: int
) -> None:
    with pytest.raises(P.Refused) as got:
        P.parse_request(data, has_fd)
    assert got.value.errno == code
    assert str(got.value)


def test_only_a_single_conntrack_get_is_forwarded() -> None:
    good = _ct()
    length, kind, flags, seq, port = P.NLMSG.unpack_from(good)
    cases = {
        "dump": P.NLMSG.pack(length, kind, flags | P.NLM_F_DUMP, seq, port) + good[16:],
        "new (a write)": P.NLMSG.pack(length, (1 << 8) | 0, flags, seq, port) + good[16:],
        "delete": P.NLMSG.pack(length, (1 << 8) | 2, flags, seq, port) + good[16:],
        "not a request": P.NLMSG.pack(length, kind, 0, seq, port) + good[16:],
        "length lies": P.NLMSG.pack(length + 4, kind, flags, seq, port) + good[16:],
        "truncated": good[:18],
        "oversized": P.NLMSG.pack(600, kind, flags, seq, port) + good[16:] + b"\0" * (600 - length),
        "bad family": good[:16] + bytes((7,)) + good[17:],
    }
    for what, msg in cases.items():
        with pytest.raises(P.Refused):
            P.check_conntrack(msg)
        assert what


def test_replies_are_chunked_and_bounded() -> None:
    body = bytes(range(256)) * 1000
    chunks = P.reply_chunks(0, body)
    assert all(len(c) <= P.CHUNK for c in chunks)
    status, length = P.REPLY_HEADER.unpack_from(chunks[0])
    assert (status, length) == (0, len(body))
    assert b"".join([chunks[0][P.REPLY_HEADER.size :], *chunks[1:]]) == body
    status, _ = P.REPLY_HEADER.unpack_from(P.reply_chunks(0, b"\0" * (P.MAX_REPLY + 1))[0])
    assert status == errno.E2BIG


# -- a real helper over a real socket pair ---------------------------------------------------


@pytest.fixture
def helper() -> Iterator[tuple[HelperClient, Helper]]:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = Helper(theirs)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    client = HelperClient(mine, os.getpid())
    client._closing = True  # the helper is a thread here: nothing to reap
    yield client, server
    mine.close()
    t.join(5)
    theirs.close()
    assert not t.is_alive()


def _raw(client: HelperClient, data: bytes, fds: list[int] | None = None) -> tuple[int, bytes]:
    """Send a raw datagram; the reply's status and body."""
    if fds:
        rights = struct.pack(f"={len(fds)}i", *fds)
        client.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
    else:
        client.sock.send(data)
    reply, anc, _, _ = client.sock.recvmsg(P.CHUNK, socket.CMSG_SPACE(4))
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            for (fd,) in struct.iter_unpack("=i", payload[: len(payload) // 4 * 4]):
                os.close(fd)
    status, _length = P.REPLY_HEADER.unpack_from(reply)
    return status, reply[P.REPLY_HEADER.size :]


def test_the_helper_answers_what_proc_says(helper: tuple[HelperClient, Helper]) -> None:
    client, _ = helper
    assert client.ping()
    a, b = socket.socketpair()
    try:
        listed = client.fds(os.getpid())
        assert a.fileno() in listed and b.fileno() in listed
        inodes = client.inodes(os.getpid(), [a.fileno(), b.fileno()])
        assert inodes == [os.fstat(a.fileno()).st_ino, os.fstat(b.fileno()).st_ino]
        # a file that is not a socket reads as 0; a closed fd as -EBADF... -ENOENT
        with open(os.devnull) as f:
            assert client.inodes(os.getpid(), [f.fileno()]) == [0]
        closed = max(listed) + 100
        assert client.inodes(os.getpid(), [closed]) == [-errno.ENOENT]
        client.access(os.getpid())
        many = client.fds_many([os.getpid(), P.PID_MAX - 1, os.getpid()])
        assert a.fileno() in many[os.getpid()] and many[P.PID_MAX - 1] == errno.ENOENT  # type: ignore[operator]
        with pytest.raises(OSError) as gone:
            client.fds(P.PID_MAX - 1)  # no such process
        assert gone.value.errno == errno.ENOENT
        # more fds than one request holds: the client splits, the order is kept
        many = [a.fileno()] * (P.MAX_FDS_PER_REQUEST * 2 + 5)
        assert client.inodes(os.getpid(), many) == [os.fstat(a.fileno()).st_ino] * len(many)
    finally:
        a.close()
        b.close()


def test_the_helper_refuses_bad_datagrams_and_goes_on(helper: tuple[HelperClient, Helper]) -> None:
    client, server = helper
    bad = [
        (b"", None),
        (struct.pack("=HH", 77, 0), None),
        (P.fds_request(0), None),
        (P.encode(P.OP_PING) + b"\0" * (P.MAX_REQUEST + 10), None),  # oversized: E2BIG
        (P.netlink_request(P.NETLINK_ROUTE), None),  # no namespace
    ]
    codes = []
    for data, _ in bad:
        if data == b"":
            continue  # an empty datagram is indistinguishable from EOF on SEQPACKET
        status, why = _raw(client, data)
        codes.append(status)
        assert why  # a reason
    assert codes == [errno.EINVAL, errno.ERANGE, errno.E2BIG, errno.EBADF]
    # a descriptor that is not a namespace, and two descriptors at once
    r, w = os.pipe()
    try:
        assert _raw(client, P.netlink_request(P.NETLINK_ROUTE), [r])[0] == errno.EBADF
        assert _raw(client, P.netlink_request(P.NETLINK_ROUTE), [r, w])[0] in (errno.EBADF, errno.E2BIG)
    finally:
        os.close(r)
        os.close(w)
    assert server.refused == 6
    assert client.ping()  # still serving


def test_a_netlink_socket_is_made_in_the_namespace_sent(helper: tuple[HelperClient, Helper]) -> None:
    client, _ = helper
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        sock = client.netlink(P.NETLINK_SOCK_DIAG, fd)
    finally:
        os.close(fd)
    with sock:
        assert sock.family == socket.AF_NETLINK and sock.proto == P.NETLINK_SOCK_DIAG


def test_a_conntrack_channel_forwards_only_gets(helper: tuple[HelperClient, Helper]) -> None:
    client, _ = helper
    channel = client.conntrack()
    with channel:
        good = _ct(seq=9)
        length, kind, flags, _seq, port = P.NLMSG.unpack_from(good)
        dump = P.NLMSG.pack(length, kind, flags | P.NLM_F_DUMP, 11, port) + good[16:]
        channel.send(dump)
        reply = channel.recv(1 << 16)
        _len, rkind, _, rseq, _ = NLMSG_HDR.unpack_from(reply)
        assert (rkind, rseq) == (2, 11)  # NLMSG_ERROR for that request
        assert struct.unpack_from("=i", reply, 16)[0] == -errno.EPERM


def test_a_reply_larger_than_a_datagram_is_reassembled_and_a_lying_one_ends_the_helper() -> None:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    body = os.urandom(3 * P.CHUNK + 17)

    def serve() -> None:
        theirs.recv(P.MAX_REQUEST)
        for c in P.reply_chunks(0, body):
            theirs.send(c)
        theirs.recv(P.MAX_REQUEST)
        theirs.send(P.REPLY_HEADER.pack(0, P.MAX_REPLY + 1))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = HelperClient(mine, 0)
    lost: list[str] = []
    client.on_lost = lost.append
    assert client.request(P.encode(P.OP_PING))[0] == body
    with pytest.raises(HelperGone):
        client.request(P.encode(P.OP_PING))
    assert len(lost) == 1 and "reply of" in lost[0]
    with pytest.raises(HelperGone):  # and stays gone
        client.ping()
    t.join(5)
    mine.close()
    theirs.close()


def test_namespaces_are_listed_and_opened_by_pid(helper: tuple[HelperClient, Helper]) -> None:
    client, _ = helper
    own = os.stat("/proc/self/ns/net").st_ino
    assert client.netns_list()[os.getpid()] == own
    fd = client.open_netns(os.getpid())
    try:
        assert os.fstat(fd).st_ino == own
    finally:
        os.close(fd)
    for pid in (0, P.PID_MAX):
        with pytest.raises(OSError) as got:
            client.open_netns(pid)
        assert got.value.errno == errno.ERANGE
    with pytest.raises(OSError) as gone:
        client.open_netns(P.PID_MAX - 1)
    assert gone.value.errno == errno.ENOENT


def test_with_the_helper_gone_holder_searches_find_nothing_and_raise_nothing() -> None:
    """The capture thread's look-ups must not crash when the helper dies (its watcher ends
    the session): every read through it is then 'not found'."""
    from conntui import privsep
    from conntui.sockets import procfs

    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.close()  # the helper, gone
    client = HelperClient(mine, 0)
    lost: list[str] = []
    client.on_lost = lost.append
    a, b = socket.socketpair()
    try:
        procfs.set_fd_reader(privsep._fd_reader(client))  # type: ignore[arg-type]
        scanner = procfs.HolderScanner("/proc")
        wanted = os.fstat(a.fileno()).st_ino
        assert scanner.find_holders({wanted}, [os.getpid()]) == {}
        assert scanner.denied_for(os.getuid()) == ()
        assert len(lost) == 1
    finally:
        procfs.set_fd_reader(None)
        a.close()
        b.close()
        mine.close()
