"""Ctrl-C in the middle of a backlog: the closing counters add up to what was sent.

A flood of UDP datagrams into a socket that never reads (the kernel drops them there, so the
tracer reports the drops and every row is judged against them: the capture falls behind).
When the flood has ended, with conntui still behind, SIGINT stops it. tcpdump's rule: the
packets the kernel put in the capture socket are either read ("segments captured"), dropped
by the kernel before conntui could read them, or still unread in the ring when it ended;
captured + dropped + unread must equal the datagrams sent, all of which reached the ring
before the signal. (conntui had left the ring's backlog out of every counter.)
"""

from __future__ import annotations

import re
import socket
import time

import pytest

pytestmark = pytest.mark.root

N = 150_000


def _count(err: str, what: str) -> int:
    m = re.search(rf"^(\d+) {what}", err, re.M)
    return int(m.group(1)) if m else 0


def test_ctrl_c_during_a_backlog_accounts_for_every_packet(conntui, port) -> None:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # never read: the kernel drops
    sink.bind(("127.0.0.1", port))
    # the BPF filter (in the kernel) keeps only the flood in the capture socket
    cap = conntui("--headless", "-q", "-i", "lo", f"udp and port {port}")
    time.sleep(20.0 if b"still attaching" in cap.stderr_head else 1.0)
    src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    src.connect(("127.0.0.1", port))
    t0 = time.monotonic()
    for _ in range(N):
        src.send(b"0123456789abcdef")
    sent_in = time.monotonic() - t0
    _, err, code = cap.stop(settle=0.0)  # at once: the capture is still behind
    assert code == 0, err
    captured = _count(err, "segments captured")
    dropped = _count(err, "packets dropped by kernel")
    unread = _count(err, "packets received but not read")
    assert captured > 0, err
    assert captured + dropped + unread == N, (captured, dropped, unread, f"{N} sent in {sent_in:.2f} s", err)
    sink.close()
    src.close()
