"""established-routing: many clients, one server port, one accepted fd per client."""

from __future__ import annotations

from typing import Any

from ..checks import Check, Result, received_by, sent_by, split_ep
from ..runner import Lab, Scenario

PORT = 8080
CLIENTS = 3

NARRATIVE = f"""\
established-routing: how segments to the same port reach different fds

One server listens on port {PORT}; {CLIENTS} client processes connect to it. Every data
segment from every client has the same destination, {PORT}. The server does not sort them
itself: the kernel looks the full 4-tuple (source address and port, destination address
and port) up in its established hash, and each client's tuple names a different socket,
the one accept() returned for that client.

Watch for:
  * one SYN per client, each to the listener;
  * each client's data: "established", delivered to its own accepted fd, although the
    destination port is the same for all;
  * the server's answers going back to each client's own fd.
"""


def traffic(lab: Lab) -> None:
    host = lab.server_addr
    server = lab.actor("server", "server")
    lst = server("listen", host=host, port=PORT)
    lab.event("listen", role="server", pid=server.pid, fd=lst["fd"], local=lst["local"])
    lab.say(f"server pid {server.pid} listens on {lst['local']} (fd {lst['fd']})")
    lab.pause(0.2)
    clients = []
    for i in range(CLIENTS):
        c = lab.actor(f"client-{i + 1}", "client")
        con = c("connect", host=host, port=PORT)
        lab.event(
            "connect",
            role=f"client-{i + 1}",
            pid=c.pid,
            fd=con["fd"],
            local=con["local"],
            remote=con["remote"],
        )
        acc = server("accept", fd=lst["fd"])
        lab.event(
            "accept",
            role="server",
            client=f"client-{i + 1}",
            pid=server.pid,
            fd=acc["fd"],
            remote=acc["remote"],
        )
        lab.say(f"client-{i + 1} pid {c.pid} from {con['local']} ↔ server fd {acc['fd']}")
        clients.append((c, con, acc))
        lab.pause(0.1)
    lab.pause(0.2)
    for rnd in range(2):
        for i, (c, con, acc) in enumerate(clients):
            msg = f"round {rnd} from client-{i + 1}"
            c("send", fd=con["fd"], data=msg)
            got = server("recv", fd=acc["fd"], n=len(msg))
            lab.event("recv", role="server", pid=server.pid, fd=acc["fd"], data=got["data"])
            server("send", fd=acc["fd"], data=f"ack {msg}")
            c("recv", fd=con["fd"], n=len(msg) + 4)
            lab.pause(0.05)
    lab.pause(0.2)
    for c, con, acc in clients:
        c("close", fd=con["fd"])
        server("close", fd=acc["fd"])


def expect(res: Result) -> list[Check]:
    lst = res.one("listen", role="server")
    srv_addr, port = split_ep(lst["local"])
    checks: list[Check] = []
    fds = set()
    for i in range(CLIENTS):
        role = f"client-{i + 1}"
        con = res.one("connect", role=role)
        acc = res.one("accept", client=role)
        fds.add(acc["fd"])
        c_addr, c_port = split_ep(con["local"])
        up: dict[str, Any] = dict(src=c_addr, sport=c_port, dst=srv_addr, dport=port)
        down: dict[str, Any] = dict(src=srv_addr, sport=port, dst=c_addr, dport=c_port)
        syn = res.segments(**up, flags="S")
        checks.append(
            received_by(f"{role}: SYN to the listener", syn, lst["pid"], lst["fd"], ["listener"], what="SYN")
        )
        data = res.segments(**up, data=True)
        checks.append(
            received_by(
                f"{role}: data to its own accepted fd {acc['fd']}",
                data,
                acc["pid"],
                acc["fd"],
                ["established"],
                what="data segment",
            )
        )
        checks.append(
            sent_by(
                f"{role}: data sent by its fd {con['fd']}", data, con["pid"], con["fd"], what="data segment"
            )
        )
        back = res.segments(**down, data=True)
        checks.append(
            received_by(
                f"{role}: answers to its fd {con['fd']}",
                back,
                con["pid"],
                con["fd"],
                ["established"],
                what="data segment",
            )
        )
    checks.append(
        Check(
            "one accepted fd per client",
            len(fds) == CLIENTS,
            f"accepted fds {sorted(fds)} for {CLIENTS} clients",
            about="kernel",
        )
    )
    return checks


SCENARIO = Scenario(
    name="established-routing",
    summary="several clients to one server port: each client's segments reach its own accepted fd",
    narrative=NARRATIVE,
    traffic=traffic,
    expect=expect,
)
