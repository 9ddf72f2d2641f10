"""accept-queue: connections that wait with no fd, then get one; overflow drops SYNs."""

from __future__ import annotations

from typing import Any

from ..checks import Check, Result, brief, holders, kernel, received_by, split_ep
from ..runner import Lab, Scenario

PORT = 8080
BACKLOG = 1  # the queue holds backlog + 1 connections (full means "more than backlog")
QUEUED = BACKLOG + 1  # clients that complete the handshake before any accept()

NARRATIVE = f"""\
accept-queue: connected, but nobody has called accept() yet

The server listens on port {PORT} with listen(fd, {BACKLOG}) and then does not call
accept() for a while. The kernel still completes the handshake for the first {QUEUED}
clients (the queue is full only when it holds more than the backlog): each connection is a
real socket, in the established hash, but it has no fd yet: it waits in the listener's
accept queue. Data a client sends now is queued on that child socket. One more client's
SYN finds the queue full: the kernel drops it silently (ListenOverflows and ListenDrops
count it) and the client's TCP retransmits it after 1 s, then 3 s. When the server finally
accepts, each queued connection gets an fd, and the retransmitted SYN gets in.

Watch for:
  * the early data: match "accept_queue", a receiver with no holder, and the listener
    named with its queue length and backlog;
  * the late client's first SYN(s) to a full queue (conntui warns that it may be dropped),
    then its retransmission, which gets a SYN-ACK;
  * after accept(): the same connections now "established", to the new fds;
  * the kernel's counters, read in the namespace: ListenOverflows / ListenDrops.
"""


def _early(i: int) -> str:
    return f"early data from client-{i} (nobody accepted yet)"


def _late(i: int) -> str:
    return f"client-{i} again, after accept()"


COUNTERS = ("TcpExt.ListenOverflows", "TcpExt.ListenDrops")


def traffic(lab: Lab) -> None:
    host = lab.server_addr
    before = lab.counters("server")
    server = lab.actor("slow-server", "server")
    lst = server("listen", host=host, port=PORT, backlog=BACKLOG)
    lab.event("listen", role="server", pid=server.pid, fd=lst["fd"], local=lst["local"], backlog=BACKLOG)
    lab.say(
        f"server pid {server.pid} listens on {lst['local']} (fd {lst['fd']}, backlog {BACKLOG}) "
        "and does not accept()"
    )
    lab.pause(0.3)
    clients = []
    for i in range(1, QUEUED + 1):
        c = lab.actor(f"client-{i}", "client")
        con = c("connect", host=host, port=PORT)
        lab.event("connect", role=f"client-{i}", pid=c.pid, fd=con["fd"], local=con["local"])
        c("send", fd=con["fd"], data=_early(i))
        lab.event("sent_early", role=f"client-{i}", data=_early(i))
        lab.say(
            f"client-{i} pid {c.pid} connected from {con['local']} and sent data; "
            "it waits in the accept queue"
        )
        clients.append((i, c, con))
        lab.pause(0.2)
    # Give conntui a refresh of the table (once a second) so it sees the full queue.
    lab.pause(1.2)
    late_i = QUEUED + 1
    late = lab.actor(f"client-{late_i}", "client")
    con = late("connect", host=host, port=PORT, wait=False)
    lab.event("connect_started", role=f"client-{late_i}", pid=late.pid, fd=con["fd"], local=con["local"])
    lab.say(
        f"client-{late_i} pid {late.pid} sends a SYN from {con['local']}: "
        "the queue is full, the kernel drops it"
    )
    lab.pause(0.5)
    lab.counter_delta(before, "server", COUNTERS)
    for i, c, ccon in clients:
        acc = server("accept", fd=lst["fd"])
        lab.event(
            "accept", role="server", client=f"client-{i}", pid=server.pid, fd=acc["fd"], remote=acc["remote"]
        )
        got = server("recv", fd=acc["fd"], n=len(_early(i)))
        lab.event("recv", role="server", client=f"client-{i}", fd=acc["fd"], data=got["data"])
        lab.say(f"accept() → fd {acc['fd']} for client-{i}; it reads the data that waited: {got['data']!r}")
        lab.pause(0.1)
        c("send", fd=ccon["fd"], data=_late(i))
        server("recv", fd=acc["fd"], n=len(_late(i)))
        lab.pause(0.2)
    done = late("wait_connected", fd=con["fd"], timeout=6)
    lab.event("connected", role=f"client-{late_i}", connected=done["connected"])
    acc = server("accept", fd=lst["fd"], timeout=6)
    lab.event(
        "accept", role="server", client=f"client-{late_i}", pid=server.pid, fd=acc["fd"], remote=acc["remote"]
    )
    lab.say(f"client-{late_i}'s retransmitted SYN got in; accept() → fd {acc['fd']}")
    lab.pause(0.2)
    late("send", fd=con["fd"], data=_late(late_i))
    server("recv", fd=acc["fd"], n=len(_late(late_i)))
    lab.pause(0.2)
    delta = lab.counter_delta(before, "server", COUNTERS)
    lab.say(f"kernel counters in the namespace: {delta}")


def expect(res: Result) -> list[Check]:
    lst = res.one("listen", role="server")
    srv_addr, port = split_ep(lst["local"])
    counters = res.truth("counters")
    delta = counters[-1]["delta"] if counters else {}
    overflows = delta.get("TcpExt.ListenOverflows", 0)
    drops = delta.get("TcpExt.ListenDrops", 0)
    checks = [
        kernel(
            "the full queue overflowed",
            overflows >= 1 and drops >= overflows,
            f"ListenOverflows +{overflows}, ListenDrops +{drops}",
        )
    ]
    for i in range(1, QUEUED + 1):
        role = f"client-{i}"
        con = res.one("connect", role=role)
        acc = res.one("accept", client=role)
        c_addr, c_port = split_ep(con["local"])
        up: dict[str, Any] = dict(src=c_addr, sport=c_port, dst=srv_addr, dport=port)
        early = res.segments(**up, payload_len=len(_early(i)))
        ok = bool(early) and all(
            r["match"] == "accept_queue" and not holders(r.get("receiver")) for r in early
        )
        checks.append(
            Check(
                f"{role}: data before accept() waits on a child socket with no fd",
                ok,
                brief(early[0]) if early else "conntui printed no such segment",
            )
        )
        named = [r for r in early if (lst["pid"], lst["fd"]) in holders(r.get("listener"))]
        checks.append(
            Check(
                f"{role}: the listener (pid {lst['pid']} fd {lst['fd']}) is named",
                bool(early) and len(named) == len(early),
                (early[0].get("explain") or "") if early else "no segment",
            )
        )
        late = res.segments(**up, payload_len=len(_late(i)))
        checks.append(
            received_by(
                f"{role}: data after accept() goes to fd {acc['fd']}",
                late,
                acc["pid"],
                acc["fd"],
                ["established"],
                what="data segment",
            )
        )
    late_role = f"client-{QUEUED + 1}"
    start = res.one("connect_started", role=late_role)
    c_addr, c_port = split_ep(start["local"])
    syns = sorted(
        res.segments(src=c_addr, sport=c_port, dst=srv_addr, dport=port, flags="S"), key=lambda r: r["ts"]
    )
    synacks = res.segments(src=srv_addr, sport=port, dst=c_addr, dport=c_port, flags="SA")
    # The SYN that got in is the last one before the first SYN-ACK; the ones before it
    # found the queue full.
    first_sa = min((r["ts"] for r in synacks), default=float("inf"))
    before_sa = [r for r in syns if r["ts"] <= first_sa]
    admitted, dropped = before_sa[-1:], before_sa[:-1]
    checks.append(
        kernel(
            f"{late_role}: its first SYN got no answer and was retransmitted",
            len(syns) >= 2 and bool(dropped) and bool(synacks),
            f"{len(syns)} SYNs, {len(dropped)} unanswered before the one that got a SYN-ACK",
        )
    )
    warned = [r for r in dropped if "full" in r.get("explain", "") or "drop" in r.get("explain", "")]
    checks.append(
        Check(
            f"{late_role}: the SYN to the full queue is marked as (maybe) dropped",
            bool(dropped) and len(warned) == len(dropped),
            (dropped[0].get("explain") or "") if dropped else "no dropped SYN seen",
        )
    )
    checks.append(
        received_by(
            f"{late_role}: the SYN that gets in goes to the listener",
            admitted[-1:],
            lst["pid"],
            lst["fd"],
            ["listener"],
            what="SYN",
        )
    )
    acc = res.one("accept", client=late_role)
    late_data = res.segments(src=c_addr, sport=c_port, dst=srv_addr, dport=port, data=True)
    checks.append(
        received_by(
            f"{late_role}: its data goes to fd {acc['fd']}",
            late_data,
            acc["pid"],
            acc["fd"],
            ["established"],
            what="data segment",
        )
    )
    return checks


SCENARIO = Scenario(
    name="accept-queue",
    summary="a slow accept(): connections wait in the queue with no fd, then get one; overflow drops SYNs",
    narrative=NARRATIVE,
    traffic=traffic,
    expect=expect,
)
