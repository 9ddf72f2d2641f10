"""udp-demux: one unconnected socket hears every peer; a connected one hears only its own."""

from __future__ import annotations

from typing import Any

from ..checks import Check, Result, brief, holders, kernel
from ..runner import Lab, Scenario

OPEN_PORT = 5300  # the unconnected server
CONN_PORT = 5301  # the connected socket (and later a catch-all beside it)
PEERS = 3

NARRATIVE = f"""\
udp-demux: who gets a datagram when there is no connection

UDP has no handshake and no accept(): one socket can receive from anyone. A server binds
0.0.0.0:{OPEN_PORT} and never connects: datagrams from {PEERS} peers all land on that one fd
("udp_unconnected"); recvfrom() tells it who sent each.

A second program binds 127.0.0.1:{CONN_PORT} and connect()s to peer-1. connect() on UDP sends
nothing; it fixes the remote end, and from then on the kernel gives that socket only
datagrams from peer-1's address and port ("udp_connected", the highest score). When
peer-2 sends to port {CONN_PORT}, the connected socket does not match it: with no other socket
on the port the kernel drops the datagram, counts Udp NoPorts and answers with an ICMP
port unreachable. Then a catch-all socket binds 0.0.0.0:{CONN_PORT} beside it (SO_REUSEADDR on
both): peer-2's datagrams now go to the catch-all, while peer-1's still go to the
connected socket.

Watch for:
  * datagrams to {OPEN_PORT} from every peer: the same receiver fd, "udp_unconnected";
  * peer-1 → {CONN_PORT}: "udp_connected", the connected fd;
  * peer-2 → {CONN_PORT} before the catch-all exists: "none" (and Udp NoPorts in the namespace);
  * peer-2 → {CONN_PORT} afterwards: the catch-all fd, although the connected socket is bound
    to the more specific address.
"""


def _msg(phase: str, peer: int, port: int, k: int) -> str:
    return f"{phase}: peer-{peer} to {port} #{k}"


def traffic(lab: Lab) -> None:
    host = lab.server_addr
    server = lab.actor("udp-server", "server")
    u = server("udp", host="0.0.0.0", port=OPEN_PORT)
    lab.event("bind", role="unconnected", pid=server.pid, fd=u["fd"], local=u["local"])
    lab.say(f"udp-server pid {server.pid}: fd {u['fd']} bound to {u['local']}, not connected")
    peers: list[tuple[Any, dict[str, Any]]] = []
    for i in range(1, PEERS + 1):
        p = lab.actor(f"peer-{i}", "client")
        s = p("udp", host=lab.client_addr, port=0)
        lab.event("bind", role=f"peer-{i}", pid=p.pid, fd=s["fd"], local=s["local"])
        peers.append((p, s))

    def send(phase: str, i: int, port: int, count: int = 2) -> None:
        p, s = peers[i - 1]
        for k in range(count):
            data = _msg(phase, i, port, k)
            p("sendto", fd=s["fd"], data=data, to=[host, port])
            lab.event(
                "sent", phase=phase, peer=i, pid=p.pid, fd=s["fd"], local=s["local"], port=port, data=data
            )
            lab.pause(0.02)

    def collect(role: str, actor: Any, fd: int) -> None:
        got = actor("recv_all", fd=fd, idle=0.3, timeout=3)
        datas = [g.get("data") for g in got["received"] if "data" in g]
        lab.event("received", role=role, pid=actor.pid, fd=fd, data=datas)
        lab.say(f"{role} fd {fd} received {len(datas)} datagram(s): {datas}")

    # 1. one unconnected socket, many peers
    for i in range(1, PEERS + 1):
        send("open", i, OPEN_PORT)
    collect("unconnected", server, u["fd"])

    # 2. a connected socket: only its peer gets through
    conn_prog = lab.actor("udp-connected", "server")
    peer1 = peers[0][1]["local"]
    p1_addr, _, p1_port = peer1.rpartition(":")
    c = conn_prog("udp", host=host, port=CONN_PORT, reuseaddr=True, connect=[p1_addr, int(p1_port)])
    lab.event("bind", role="connected", pid=conn_prog.pid, fd=c["fd"], local=c["local"], remote=c["remote"])
    lab.say(
        f"udp-connected pid {conn_prog.pid}: fd {c['fd']} bound to {c['local']}, connected to {c['remote']}"
    )
    before = lab.counters("server")
    send("connected", 1, CONN_PORT)
    send("nobody", 2, CONN_PORT)
    lab.pause(0.2)
    lab.counter_delta(before, "server", ("Udp.NoPorts", "Icmp.OutDestUnreachs"))
    collect("connected", conn_prog, c["fd"])

    # 3. a catch-all beside the connected socket
    catch = lab.actor("udp-catchall", "server")
    w = catch("udp", host="0.0.0.0", port=CONN_PORT, reuseaddr=True)
    lab.event("bind", role="catchall", pid=catch.pid, fd=w["fd"], local=w["local"])
    lab.say(f"udp-catchall pid {catch.pid}: fd {w['fd']} bound to {w['local']}")
    send("catchall", 2, CONN_PORT)
    send("connected-again", 1, CONN_PORT)
    collect("catchall", catch, w["fd"])
    collect("connected", conn_prog, c["fd"])


def expect(res: Result) -> list[Check]:
    truth: dict[str, tuple[str, int, int]] = {}
    for rcv in res.truth("received"):
        for data in rcv["data"]:
            truth[data] = (rcv["role"], rcv["pid"], rcv["fd"])
    checks: list[Check] = []
    senders = {s["peer"] for s in res.truth("sent", phase="open") if s["data"] in truth}
    checks.append(
        kernel(
            f"the unconnected socket heard all {PEERS} peers",
            senders == set(range(1, PEERS + 1))
            and all(truth[s["data"]][0] == "unconnected" for s in res.truth("sent", phase="open")),
            f"heard peers {sorted(senders)}",
        )
    )
    nobody = res.truth("sent", phase="nobody")
    delta = res.one("counters")["delta"]
    checks.append(
        kernel(
            "peer-2's datagrams to the connected socket's port reached nobody (NoPorts)",
            bool(nobody)
            and not any(s["data"] in truth for s in nobody)
            and delta.get("Udp.NoPorts", 0) >= len(nobody),
            f"counters: {delta}",
        )
    )
    conn_heard = {d for r in res.truth("received", role="connected") for d in r["data"]}
    checks.append(
        kernel(
            "the connected socket heard only peer-1",
            bool(conn_heard) and all(d.split(": ", 1)[1].startswith("peer-1 ") for d in conn_heard),
            f"{sorted(conn_heard)}",
        )
    )
    wanted = {
        "open": "udp_unconnected",
        "connected": "udp_connected",
        "nobody": "none",
        "catchall": "udp_unconnected",
        "connected-again": "udp_connected",
    }
    for phase, match in wanted.items():
        sent = res.truth("sent", phase=phase)
        bad: list[str] = []
        seen: set[int] = set()
        for s in sent:
            addr, _, port = s["local"].rpartition(":")
            rows = res.segments(
                proto="udp", src=addr, sport=int(port), dport=s["port"], payload_len=len(s["data"])
            )
            want = truth.get(s["data"])
            for r in rows:
                seen.add(id(r))
                got = holders(r.get("receiver"))
                if (
                    r["match"] != match
                    or (want is not None and (want[1], want[2]) not in got)
                    or (want is None and got)
                ):
                    bad.append(
                        f"{brief(r)} (really: {want[0] + ' fd ' + str(want[2]) if want else 'nobody'})"
                    )
        who = f"{truth[sent[0]['data']][0]} socket" if sent and sent[0]["data"] in truth else "nobody"
        checks.append(
            Check(
                f"{phase}: datagrams → {who} ({match})",
                len(seen) >= len(sent) > 0 and not bad,
                bad[0] if bad else f"{len(seen)} datagram(s), each to the socket that really received it",
            )
        )
    return checks


SCENARIO = Scenario(
    name="udp-demux",
    summary="one unconnected UDP socket hears many peers; a connected one only its peer; others go elsewhere",
    narrative=NARRATIVE,
    traffic=traffic,
    expect=expect,
)
