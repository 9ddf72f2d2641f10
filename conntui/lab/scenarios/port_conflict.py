"""port-conflict: EADDRINUSE, SO_REUSEPORT groups, and a specific address over the wildcard."""

from __future__ import annotations

from typing import Any

from ..checks import Check, Result, brief, holders, kernel, received_by, split_ep
from ..runner import Lab, Scenario

PLAIN_PORT = 8080
GROUP_PORT = 8081
SPECIFIC_PORT = 8082
SPECIFIC_ADDR = "127.0.0.2"
CONNECTIONS = 12

NARRATIVE = f"""\
port-conflict: who may listen on a port that is already taken

1. Server A listens on 0.0.0.0:{PLAIN_PORT}. Server B tries the same: bind() fails with
   EADDRINUSE (errno 98). Binding {SPECIFIC_ADDR}:{PLAIN_PORT} fails too, because the
   wildcard already covers every local address. SO_REUSEADDR does not help a second
   listener: it only lets a new socket bind over TIME_WAIT remains.
2. On port {GROUP_PORT} both servers set SO_REUSEPORT before bind(): both listen, as one
   reuseport group. For each SYN the kernel picks one member by a hash of the 4-tuple, so
   {CONNECTIONS} connections spread over the two processes; neither has to accept() for the
   other.
3. On port {SPECIFIC_PORT} server A listens on the wildcard 0.0.0.0 and server B on
   {SPECIFIC_ADDR} (both with SO_REUSEPORT, which Linux requires for that pair). They are
   not one group: the kernel looks up the exact address first, so a SYN to {SPECIFIC_ADDR}
   goes to B and a SYN to 127.0.0.1 falls back to A's wildcard.

Watch for:
  * the errno B reports (a lab event; no segment is sent: bind() fails locally);
  * SYNs to port {GROUP_PORT}: the listener conntui names, and the candidates of the group;
    then each connection's data going to the fd of the process that accepted it;
  * SYNs to {SPECIFIC_ADDR}:{SPECIFIC_PORT} going to B, to 127.0.0.1:{SPECIFIC_PORT} going to A.
"""


def _listen(
    lab: Lab, server: Any, name: str, host: str, port: int, reuseport: bool, part: str
) -> dict[str, Any]:
    got: dict[str, Any] = server("listen", host=host, port=port, reuseport=reuseport, allow_error=True)
    if "error" in got:
        lab.event(
            "bind_failed",
            part=part,
            server=name,
            pid=server.pid,
            local=f"{host}:{port}",
            reuseport=reuseport,
            errno=got["errno"],
            errname=got["errname"],
            error=got["error"],
        )
        lab.say(f"server {name}: listen on {host}:{port} failed: {got['errname']} ({got['error']})")
    else:
        lab.event(
            "listen",
            part=part,
            server=name,
            pid=server.pid,
            fd=got["fd"],
            local=got["local"],
            reuseport=reuseport,
        )
        lab.say(
            f"server {name} pid {server.pid} listens on {got['local']} "
            f"(fd {got['fd']}{', SO_REUSEPORT' if reuseport else ''})"
        )
    return got


def _accept_all(lab: Lab, part: str, servers: list[tuple[str, Any, dict[str, Any]]]) -> None:
    for name, server, lst in servers:
        got = server("accept_all", fd=lst["fd"], idle=0.3, timeout=3)
        for acc in got["accepted"]:
            lab.event(
                "accept",
                part=part,
                server=name,
                pid=server.pid,
                fd=acc["fd"],
                local=acc["local"],
                remote=acc["remote"],
            )
        lab.say(f"server {name} accepted {len(got['accepted'])} connection(s) on {lst['local']}")


def traffic(lab: Lab) -> None:
    a = lab.actor("server-a", "server")
    b = lab.actor("server-b", "server")
    # 1. a plain second listener
    _listen(lab, a, "a", "0.0.0.0", PLAIN_PORT, False, "plain")
    _listen(lab, b, "b", "0.0.0.0", PLAIN_PORT, False, "plain")
    _listen(lab, b, "b", SPECIFIC_ADDR, PLAIN_PORT, False, "plain")
    lab.pause(0.2)

    # 2. a reuseport group
    la = _listen(lab, a, "a", "0.0.0.0", GROUP_PORT, True, "group")
    lb = _listen(lab, b, "b", "0.0.0.0", GROUP_PORT, True, "group")
    client = lab.actor("client", "client")
    conns = []
    for _ in range(CONNECTIONS):
        con = client("connect", host="127.0.0.1", port=GROUP_PORT)
        lab.event(
            "connect", part="group", pid=client.pid, fd=con["fd"], local=con["local"], remote=con["remote"]
        )
        conns.append(con)
        lab.pause(0.02)
    _accept_all(lab, "group", [("a", a, la), ("b", b, lb)])
    for con in conns:
        client("send", fd=con["fd"], data=f"hello from {con['local']}")
    lab.pause(0.3)
    for con in conns:
        client("close", fd=con["fd"])

    # 3. specific address vs wildcard
    wa = _listen(lab, a, "a", "0.0.0.0", SPECIFIC_PORT, True, "specific")
    wb = _listen(lab, b, "b", SPECIFIC_ADDR, SPECIFIC_PORT, True, "specific")
    for host in (SPECIFIC_ADDR, "127.0.0.1"):
        con = client("connect", host=host, port=SPECIFIC_PORT)
        lab.event(
            "connect", part="specific", pid=client.pid, fd=con["fd"], local=con["local"], remote=con["remote"]
        )
    _accept_all(lab, "specific", [("a", a, wa), ("b", b, wb)])
    lab.pause(0.3)


def expect(res: Result) -> list[Check]:
    checks: list[Check] = []
    failed = res.truth("bind_failed", part="plain")
    checks.append(
        kernel(
            "a second listener on the port fails with EADDRINUSE",
            len(failed) == 2 and all(f["errname"] == "EADDRINUSE" and f["errno"] == 98 for f in failed),
            "; ".join(f"{f['local']}: {f['errname']} (errno {f['errno']})" for f in failed)
            or "no failure seen",
        )
    )
    # -- the reuseport group
    group = {e["server"]: e for e in res.truth("listen", part="group")}
    members = {(e["pid"], e["fd"]) for e in group.values()}
    accepted = res.truth("accept", part="group")
    by_server = {name: [e for e in accepted if e["server"] == name] for name in ("a", "b")}
    checks.append(
        kernel(
            "both members of the SO_REUSEPORT group listen and get connections",
            len(group) == 2 and all(by_server.values()) and len(accepted) == CONNECTIONS,
            f"a accepted {len(by_server['a'])}, b accepted {len(by_server['b'])} of {CONNECTIONS}",
        )
    )
    in_group, resolved, data_ok, listed = [], [], [], []
    for acc in accepted:
        addr, port = split_ep(acc["remote"])
        dst, dport = split_ep(acc["local"])
        syn = res.segments(src=addr, sport=port, dst=dst, dport=dport, flags="S")
        in_group += [r for r in syn if r["match"] == "listener" and holders(r.get("receiver")) & members]
        # every member of the group, shown as a candidate for this SYN
        listed += [
            bool(syn)
            and all(members <= set().union(*(holders(c) for c in r.get("candidates") or [{}])) for r in syn)
        ]
        # the listener of the process that accept()ed this connection
        owner = (acc["pid"], int(group[acc["server"]]["fd"]))
        resolved.append(bool(syn) and all(owner in holders(r.get("receiver")) for r in syn))
        data = res.segments(src=addr, sport=port, dst=dst, dport=dport, data=True)
        data_ok.append(received_by("data", data, acc["pid"], acc["fd"], ["established"]))
    checks.append(
        Check(
            "every SYN to the group goes to one of its members",
            len(in_group) >= len(accepted) > 0,
            f"{len(in_group)} SYNs to a member, {len(accepted)} connections",
        )
    )
    checks.append(
        Check(
            "each SYN lists both group members as candidates",
            bool(listed) and all(listed),
            f"{sum(listed)} of {len(listed)} SYNs listed both members",
        )
    )
    checks.append(
        Check(
            "each SYN is resolved to the member that accepted it",
            bool(resolved) and all(resolved),
            f"{sum(resolved)} of {len(resolved)} SYNs named the member whose process accepted the connection",
        )
    )
    bad = [c for c in data_ok if not c.ok]
    checks.append(
        Check(
            "each connection's data goes to the accepting process's fd",
            bool(data_ok) and not bad,
            bad[0].detail if bad else f"{len(data_ok)} connections",
        )
    )
    # -- specific vs wildcard
    spec = {e["server"]: e for e in res.truth("listen", part="specific")}
    for target, name in ((SPECIFIC_ADDR, "b"), ("127.0.0.1", "a")):
        con = next(
            (e for e in res.truth("connect", part="specific") if split_ep(e["remote"])[0] == target), None
        )
        lst = spec.get(name)
        if con is None or lst is None:
            checks.append(
                Check(f"SYN to {target}:{SPECIFIC_PORT} goes to server {name}", False, "missing ground truth")
            )
            continue
        c_addr, c_port = split_ep(con["local"])
        syn = res.segments(src=c_addr, sport=c_port, dst=target, dport=SPECIFIC_PORT, flags="S")
        checks.append(
            received_by(
                f"SYN to {target}:{SPECIFIC_PORT} goes to server {name} ({lst['local']})",
                syn,
                lst["pid"],
                lst["fd"],
                ["listener"],
                what="SYN",
            )
        )
        taker: dict[str, Any] | None = next(
            (e for e in res.truth("accept", part="specific") if e["remote"] == con["local"]), None
        )
        checks.append(
            kernel(
                f"server {name} accepted the connection to {target}",
                taker is not None and taker["server"] == name,
                f"accepted by {taker['server'] if taker else 'nobody'}"
                + (f"; {brief(syn[0])}" if syn else ""),
            )
        )
    return checks


SCENARIO = Scenario(
    name="port-conflict",
    summary="a second listener fails with EADDRINUSE; SO_REUSEPORT shares a port; specific beats wildcard",
    narrative=NARRATIVE,
    traffic=traffic,
    expect=expect,
    # the member that took each SYN is known once its process accept()s: give the printed
    # rows time to carry that resolution
    conntui_args=("--settle", "3"),
)
