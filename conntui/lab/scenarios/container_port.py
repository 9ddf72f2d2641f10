"""container-port: a published port, DNAT into a "container" namespace, two clients."""

from __future__ import annotations

import os

from ..checks import Check, Result, Row, brief, holders, kernel, received_by, sent_by, split_ep
from ..netns import NETNS_DIR, LabError
from ..runner import Lab, Scenario

PUBLISHED = 18080  # the host's published port
CTR_PORT = 80  # where the server in the container listens
BRIDGE_ADDR = "10.231.1.1"  # the host's end of the container's veth
CTR_ADDR = "10.231.1.2"  # the container's address
HOST_IFACE = "veth-ctr"  # the host's end (in the server namespace)
CTR_IFACE = "eth0"  # the container's end
TABLE = "conntui_lab_dnat"

NARRATIVE = f"""\
container-port: a published port, DNAT into a container, and who really gets the packet

Three network namespaces. "server" plays the host (conntui runs there and captures on every
interface, -i any); "ctr" plays a container: its own namespace, reached over a veth pair
(host {BRIDGE_ADDR} <-> container {CTR_ADDR}), as podman or Docker wire one; "client" is a
second machine on the host's other veth. The container's web server listens on
{CTR_ADDR}:{CTR_PORT}. The host publishes it as port {PUBLISHED}: a DNAT rule (PREROUTING for
packets from outside, OUTPUT for the host's own) rewrites 10.231.0.1:{PUBLISHED} to
{CTR_ADDR}:{CTR_PORT}. Like podman's conmon or docker-proxy, a host process holds a listener on
0.0.0.0:{PUBLISHED} to reserve the port: it never receives a packet, DNAT sends them all on.

Two clients dial the host's address, 10.231.0.1:{PUBLISHED}: one on the host itself, one in the
client namespace. Each connection's chain is:

  dialled address  ->  DNAT (conntrack)  ->  the namespace that owns {CTR_ADDR}  ->  the
  socket there (the listener for the SYN, the accepted one after)  ->  the process holding it

Watch for:
  * the client namespace's segments twice: on the host's veth-srv as dialled
    (10.231.0.1:{PUBLISHED}) and on {HOST_IFACE} after DNAT ({CTR_ADDR}:{CTR_PORT}); both rows name the
    container's server, the second's note says it is the same segment again;
  * the host client's segments only after DNAT (OUTPUT rewrote them before any interface);
  * the explanation: the dialled address, conntrack's rewrite, the namespace (net:[N]), the
    socket, the process; never the port-reservation listener on the host, though it holds
    0.0.0.0:{PUBLISHED};
  * in the socket view: a level per namespace, the container's :{CTR_PORT} listener with its
    connections under it, the host's reservation with none.
"""


def _dnat(lab: Lab) -> str:
    """The published port's DNAT in the host namespace (nft, else iptables); which did."""
    match = ["ip", "daddr", lab.server_addr, "tcp", "dport", str(PUBLISHED)]
    to = ["dnat", "to", f"{CTR_ADDR}:{CTR_PORT}"]
    try:
        lab.sh("server", "nft", "add", "table", "ip", TABLE)
        for chain, hook in (("pre", "prerouting"), ("out", "output")):
            spec = f"{{ type nat hook {hook} priority -100 ; }}"
            lab.sh("server", "nft", "add", "chain", "ip", TABLE, chain, spec)
            lab.sh("server", "nft", "add", "rule", "ip", TABLE, chain, *match, *to)
        return "nft"
    except LabError:
        lab.sh("server", "nft", "delete", "table", "ip", TABLE, check=False)
    for chain in ("PREROUTING", "OUTPUT"):
        lab.sh(
            "server", "iptables", "-w", "5", "-t", "nat", "-A", chain, "-d", lab.server_addr, "-p", "tcp",
            "--dport", str(PUBLISHED), "-j", "DNAT", "--to-destination", f"{CTR_ADDR}:{CTR_PORT}",
        )  # fmt: skip
    return "iptables"


def setup(lab: Lab) -> None:
    """The container, the DNAT, the server and the port reservation, before conntui starts
    (its first tables have them)."""
    topo = lab.topo
    ctr = topo.add_namespace(topo.extra("ctr"))
    topo.link(topo.server, HOST_IFACE, BRIDGE_ADDR, ctr, CTR_IFACE, CTR_ADDR)
    lab.sh("ctr", "ip", "route", "add", "default", "via", BRIDGE_ADDR)
    lab.sh("server", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    tool = _dnat(lab)
    inode = os.stat(os.path.join(NETNS_DIR, ctr)).st_ino
    lab.event(
        "container",
        netns=ctr,
        netns_inode=inode,
        addr=CTR_ADDR,
        published=f"{lab.server_addr}:{PUBLISHED}",
        dnat=tool,
    )
    lab.say(
        f"container namespace {ctr} (net:[{inode}]) at {CTR_ADDR}; {tool}: "
        f"{lab.server_addr}:{PUBLISHED} DNAT to {CTR_ADDR}:{CTR_PORT} (PREROUTING and OUTPUT)"
    )
    web = lab.actor("web", "ctr")
    lst = web("listen", host="0.0.0.0", port=CTR_PORT)
    lab.event("listen", role="web", pid=web.pid, fd=lst["fd"], local=lst["local"], netns_inode=inode)
    holder = lab.actor("portholder", "server")
    res = holder("listen", host="0.0.0.0", port=PUBLISHED)
    lab.event("listen", role="reservation", pid=holder.pid, fd=res["fd"], local=res["local"])
    lab.say(
        f"web pid {web.pid} listens on {lst['local']} (fd {lst['fd']}) in the container; "
        f"portholder pid {holder.pid} holds {res['local']} (fd {res['fd']}) on the host and never accepts"
    )
    lab.state.update(web=web, lst=lst)


def traffic(lab: Lab) -> None:
    web, lst = lab.state["web"], lab.state["lst"]
    lab.pause(0.2)
    for role, host in (("host", "server"), ("remote", "client")):
        client = lab.actor(f"{role}-client", host)
        con = client("connect", host=lab.server_addr, port=PUBLISHED)
        lab.event(
            "connect", role=role, pid=client.pid, fd=con["fd"], local=con["local"], remote=con["remote"]
        )
        acc = web("accept", fd=lst["fd"])
        lab.event("accept", role=role, pid=web.pid, fd=acc["fd"], local=acc["local"], remote=acc["remote"])
        lab.say(
            f"{role} client {con['local']} dialled {con['remote']}; in the container web's fd {acc['fd']} "
            f"is {acc['local']} <- {acc['remote']}"
        )
        lab.pause(0.1)
        msg = f"GET / from the {role} client"
        client("send", fd=con["fd"], data=msg)
        web("recv", fd=acc["fd"], n=len(msg))
        web("send", fd=acc["fd"], data=f"served by the container to {acc['remote']}")
        got = client("recv", fd=con["fd"], any=True, timeout=2)
        lab.event("client_got", role=role, data=got["data"])
        lab.pause(0.1)
    ct = lab.sh("server", "conntrack", "-L", "-p", "tcp", check=False)
    lines = [ln for ln in ct.stdout.splitlines() if f"dport={PUBLISHED}" in ln]
    if lines:
        lab.event("conntrack", entries=lines)
        for ln in lines:
            lab.say(f"conntrack: {ln}")
    lab.pause(0.2)


def _of_connection(res: Result, addr: str, port: int) -> tuple[list[Row], list[Row]]:
    """The rows the client at ``addr:port`` sent, and those sent to it (any copy, before or
    after DNAT)."""
    return res.segments(src=addr, sport=port), res.segments(dst=addr, dport=port)


def expect(res: Result) -> list[Check]:
    ctr = res.one("container")
    inode = ctr["netns_inode"]
    lst = res.one("listen", role="web")
    reservation = res.one("listen", role="reservation")
    trap = (reservation["pid"], reservation["fd"])
    checks: list[Check] = []
    for role in ("host", "remote"):
        con = res.one("connect", role=role)
        acc = res.one("accept", role=role)
        c_addr, c_port = split_ep(con["local"])
        checks.append(
            kernel(
                f"{role}: dialled {ctr['published']}, the container accepted on {CTR_ADDR}:{CTR_PORT}",
                con["remote"] == ctr["published"] and acc["local"] == f"{CTR_ADDR}:{CTR_PORT}",
                f"dialled {con['remote']}, accepted {acc['local']} <- {acc['remote']}",
            )
        )
        up, down = _of_connection(res, c_addr, c_port)
        syn = [r for r in up if r["flags"] == "S"]
        checks.append(
            received_by(
                f"{role}: SYN attributed to web's listener in the container",
                syn,
                lst["pid"],
                lst["fd"],
                ["listener"],
                what="SYN",
            )
        )
        data = [r for r in up if r["payload_len"] > 0]
        checks.append(
            received_by(
                f"{role}: data attributed to web's fd {acc['fd']}",
                data,
                acc["pid"],
                acc["fd"],
                ["established"],
                what="data segment",
            )
        )
        back = [r for r in down if r["payload_len"] > 0]
        checks.append(
            sent_by(
                f"{role}: the answer shown as sent by web's fd {acc['fd']}",
                back,
                acc["pid"],
                acc["fd"],
                what="data segment",
            )
        )
        rows = up + down
        elsewhere = [r for r in up if (r.get("receiver") or {}).get("netns") != inode]
        checks.append(
            Check(
                f"{role}: the receiving sockets are in the container's namespace net:[{inode}]",
                bool(up) and not elsewhere,
                f"{len(elsewhere)} of {len(up)} elsewhere; first: {brief(elsewhere[0])}, netns "
                f"{(elsewhere[0].get('receiver') or {}).get('netns')}"
                if elsewhere
                else f"{len(up)} segment(s), every receiver in net:[{inode}]",
            )
        )
        named = [
            r for r in rows if any(trap in holders(r.get(k)) for k in ("receiver", "sender", "listener"))
        ]
        checks.append(
            Check(
                f"{role}: no row names the host's port reservation (pid {trap[0]} fd {trap[1]})",
                bool(rows) and not named,
                f"{len(named)} of {len(rows)} do; first: {brief(named[0])}"
                if named
                else f"{len(rows)} segment(s), none",
            )
        )
        unnamed = [r for r in rows if r["match"] in ("none", "unknown")]
        checks.append(
            Check(
                f"{role}: no segment of the connection is none or unknown",
                bool(rows) and not unnamed,
                f"{len(unnamed)} of {len(rows)}; first: {brief(unnamed[0])}: {unnamed[0].get('explain')}"
                if unnamed
                else f"{len(rows)} segment(s)",
            )
        )
    return checks


SCENARIO = Scenario(
    name="container-port",
    summary="a published port: DNAT into a container's namespace; host and remote clients",
    narrative=NARRATIVE,
    traffic=traffic,
    expect=expect,
    two_hosts=True,
    conntui_args=("-i", "any"),
    setup=setup,
)
