"""tproxy: one transparent daemon takes UDP and TCP for an address that is not its host's."""

from __future__ import annotations

from ..checks import Check, Result, Row, kernel, received_by, split_ep
from ..runner import Lab, Scenario

ORIG = "203.0.113.10"  # TEST-NET-3: no host has it; the client routes it through the server
NET = "203.0.113.0/24"
UDP_ON, TCP_ON, REDIRECT_ON = 9000, 9001, 9100
UDP_PORTS = (53, 5353, 40000)
TCP_PORTS = (80, 443)
REDIRECTED = 8080
MARK = "1"

NARRATIVE = f"""\
tproxy: a transparent proxy takes traffic for addresses that are not its host's

Two hosts on a veth pair. The client routes {NET} through the server, which has no such
address. In the server's namespace:
  iptables -t mangle -A PREROUTING -d {NET} -p udp -j TPROXY --on-port {UDP_ON} --tproxy-mark {MARK}
  iptables -t mangle -A PREROUTING -d {NET} -p tcp -j TPROXY --on-port {TCP_ON} --tproxy-mark {MARK}
  ip rule add fwmark {MARK} lookup 100; ip route add local 0.0.0.0/0 dev lo table 100
One daemon holds a UDP socket on 0.0.0.0:{UDP_ON} and a TCP listener on 0.0.0.0:{TCP_ON}, both with
IP_TRANSPARENT. TPROXY does not rewrite the packet (unlike REDIRECT/DNAT): it hands it to the
transparent socket directly, and the mark routes it to this host instead of forwarding it.

So the original destination stays in the packet, and the daemon reads it:
  * UDP, per datagram: recvmsg() with IP_RECVORIGDSTADDR gives each datagram's destination
    ({ORIG}:{UDP_PORTS[0]}, :{UDP_PORTS[1]}, :{UDP_PORTS[2]} all arrive on the one socket);
  * TCP, per connection: the accepted socket's local address IS the original destination
    (getsockname() gives {ORIG}:{TCP_PORTS[0]}), and later segments find that socket by their own
    4-tuple in the established hash.
Side by side, REDIRECT: TCP to the server's own port {REDIRECTED} is rewritten by NAT to {REDIRECT_ON};
that daemon's socket says {REDIRECT_ON} and it needs getsockopt(SO_ORIGINAL_DST) (TCP only) to learn
{REDIRECTED}.

Watch for:
  * datagrams to {ORIG} on any port: udp_unconnected to the daemon's one fd, "TPROXY" and
    IP_RECVORIGDSTADDR in the explanation (not "not_local");
  * SYNs to {ORIG}:{TCP_PORTS[0]}/{TCP_PORTS[1]}: the transparent listener on {TCP_ON};
    the data after it: the accepted fd, whose local address is {ORIG}:{TCP_PORTS[0]};
  * the daemon's replies, sent from {ORIG} (not an address of this host);
  * the REDIRECT connection to :{REDIRECTED}: conntrack names the fd on {REDIRECT_ON}.
"""


def _rules(lab: Lab) -> None:
    for proto, port in (("udp", UDP_ON), ("tcp", TCP_ON)):
        lab.sh(
            "server", "iptables", "-w", "5", "-t", "mangle", "-A", "PREROUTING", "-d", NET, "-p", proto,
            "-j", "TPROXY", "--on-port", str(port), "--tproxy-mark", MARK,
        )  # fmt: skip
    lab.sh("server", "ip", "rule", "add", "fwmark", MARK, "lookup", "100")
    lab.sh("server", "ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
    lab.sh(
        "server", "iptables", "-w", "5", "-t", "nat", "-A", "PREROUTING", "-p", "tcp",
        "--dport", str(REDIRECTED), "-j", "REDIRECT", "--to-ports", str(REDIRECT_ON),
    )  # fmt: skip
    lab.sh("client", "ip", "route", "add", NET, "via", lab.server_addr)
    lab.event("rules", tproxy_udp=UDP_ON, tproxy_tcp=TCP_ON, redirect=[REDIRECTED, REDIRECT_ON])
    lab.say(f"TPROXY udp → :{UDP_ON}, tcp → :{TCP_ON} for {NET}; REDIRECT :{REDIRECTED} → :{REDIRECT_ON}")


def setup(lab: Lab) -> None:
    """The rules and the daemons, before conntui starts: its first table has them."""
    _rules(lab)
    daemon = lab.actor("tproxyd", "server")
    u = daemon("udp", host="0.0.0.0", port=UDP_ON, transparent=True)
    lab.event("udp_bound", role="daemon", pid=daemon.pid, fd=u["fd"], local=u["local"])
    lst = daemon("listen", host="0.0.0.0", port=TCP_ON, transparent=True)
    lab.event("listen", role="daemon", pid=daemon.pid, fd=lst["fd"], local=lst["local"])
    nat = lab.actor("natd", "server")
    nlst = nat("listen", host="0.0.0.0", port=REDIRECT_ON)
    lab.event("listen", role="natd", pid=nat.pid, fd=nlst["fd"], local=nlst["local"])
    lab.say(f"tproxyd pid {daemon.pid}: udp fd {u['fd']}, listener fd {lst['fd']}; natd pid {nat.pid}")
    lab.state.update(daemon=daemon, u=u, lst=lst, nat=nat, nlst=nlst)


def traffic(lab: Lab) -> None:
    daemon, u, lst = lab.state["daemon"], lab.state["u"], lab.state["lst"]
    nat, nlst = lab.state["nat"], lab.state["nlst"]
    client = lab.actor("client", "client")
    cu = client("udp", host="0.0.0.0", port=0)
    lab.event("udp_bound", role="client", pid=client.pid, fd=cu["fd"], local=cu.get("local"))
    lab.pause(0.5)
    sent = []
    for port in UDP_PORTS:
        client("sendto", fd=cu["fd"], data=f"datagram for {ORIG}:{port}", to=[ORIG, port])
        sent.append(port)
        lab.pause(0.05)
    got = daemon("recv_all", fd=u["fd"], idle=0.5, timeout=3)["received"]
    for g in got:
        lab.event(
            "datagram", role="daemon", pid=daemon.pid, fd=u["fd"], peer=g.get("peer"), orig=g.get("orig")
        )
        lab.say(f"daemon fd {u['fd']} got a datagram; IP_RECVORIGDSTADDR says {g.get('orig')}")
    lab.event("udp_sent", ports=sent)
    for port in TCP_PORTS:
        con = client("connect", host=ORIG, port=port)
        lab.event("connect", role="client", pid=client.pid, fd=con["fd"], local=con["local"], dialled=port)
        acc = daemon("accept", fd=lst["fd"])
        lab.event(
            "accept", role="daemon", pid=daemon.pid, fd=acc["fd"], local=acc["local"], remote=acc["remote"]
        )
        lab.say(f"daemon accepted fd {acc['fd']}: getsockname() = {acc['local']} (the original destination)")
        client("send", fd=con["fd"], data=f"hello {port}")
        daemon("recv", fd=acc["fd"], n=len(f"hello {port}"))
        daemon("send", fd=acc["fd"], data=f"you dialled {acc['local']}")
        client("recv", fd=con["fd"], any=True, timeout=2)
        lab.pause(0.1)
    con = client("connect", host=lab.server_addr, port=REDIRECTED)
    lab.event("connect", role="client", pid=client.pid, fd=con["fd"], local=con["local"], dialled=REDIRECTED)
    acc = nat("accept", fd=nlst["fd"], original_dst=True)
    lab.event(
        "accept",
        role="natd",
        pid=nat.pid,
        fd=acc["fd"],
        local=acc["local"],
        remote=acc["remote"],
        original_dst=acc.get("original_dst"),
    )
    lab.say(
        f"natd fd {acc['fd']}: getsockname() = {acc['local']}, SO_ORIGINAL_DST = {acc.get('original_dst')}"
    )
    client("send", fd=con["fd"], data="hello redirect")
    nat("recv", fd=acc["fd"], n=len("hello redirect"))
    lab.pause(0.5)


def _to_orig(res: Result, proto: str) -> list[Row]:
    return [r for r in res.segments(proto=proto, dst=ORIG) if r.get("direction") != "out"]


def expect(res: Result) -> list[Check]:
    checks: list[Check] = []
    u = res.one("udp_bound", role="daemon")
    got = res.truth("datagram")
    origs = sorted(g.get("orig") or "" for g in got)
    checks.append(
        kernel(
            "every datagram reached the one transparent socket, each with its own original destination",
            origs == sorted(f"{ORIG}:{p}" for p in UDP_PORTS),
            f"IP_RECVORIGDSTADDR: {origs}",
        )
    )
    dgrams = _to_orig(res, "udp")
    checks.append(
        received_by(
            f"datagrams to {ORIG}: the daemon's fd {u['fd']} (TPROXY)",
            dgrams,
            u["pid"],
            u["fd"],
            ["udp_unconnected"],
            what="datagram",
        )
    )
    checks.append(
        Check(
            "their explanation names TPROXY and IP_RECVORIGDSTADDR",
            bool(dgrams)
            and all("TPROXY" in r["explain"] and "IP_RECVORIGDSTADDR" in r["explain"] for r in dgrams),
            dgrams[0]["explain"] if dgrams else "no datagram rows",
        )
    )
    lst = res.one("listen", role="daemon")
    for port in TCP_PORTS:
        con = res.one("connect", dialled=port)
        acc = next((a for a in res.truth("accept", role="daemon") if a["remote"] == con["local"]), None)
        if acc is None:
            checks.append(kernel(f"{port}: the daemon accepted the connection", False, "no accept event"))
            continue
        checks.append(
            kernel(
                f"{port}: the accepted socket's local address is the original destination",
                acc["local"] == f"{ORIG}:{port}",
                f"getsockname() = {acc['local']}",
            )
        )
        c_addr, c_port = split_ep(con["local"])
        up = dict(src=c_addr, sport=c_port, dst=ORIG, dport=port)
        checks.append(
            received_by(
                f"{port}: SYN → the transparent listener fd {lst['fd']}",
                res.segments(**up, flags="S"),  # type: ignore[arg-type]
                lst["pid"],
                lst["fd"],
                ["listener"],
                what="SYN",
            )
        )
        checks.append(
            received_by(
                f"{port}: data → the accepted fd {acc['fd']}",
                res.segments(**up, data=True),  # type: ignore[arg-type]
                acc["pid"],
                acc["fd"],
                ["established"],
                what="data segment",
            )
        )
    bad = [r for r in _to_orig(res, "udp") + _to_orig(res, "tcp") if r["match"] in ("not_local", "none")]
    checks.append(
        Check(
            f"no segment to {ORIG} called not_local or none",
            not bad,
            f"{len(bad)} such; first: {bad[0]['explain']}" if bad else "none",
        )
    )
    nacc = res.one("accept", role="natd")
    checks.append(
        kernel(
            f"REDIRECT: the socket says :{REDIRECT_ON}, SO_ORIGINAL_DST says :{REDIRECTED}",
            nacc["local"].endswith(f":{REDIRECT_ON}")
            and str(nacc.get("original_dst")).endswith(f":{REDIRECTED}"),
            f"getsockname() {nacc['local']}, SO_ORIGINAL_DST {nacc.get('original_dst')}",
        )
    )
    ncon = res.one("connect", dialled=REDIRECTED)
    c_addr, c_port = split_ep(ncon["local"])
    checks.append(
        received_by(
            f"REDIRECT: data to :{REDIRECTED} → natd's fd {nacc['fd']} (through conntrack)",
            res.segments(src=c_addr, sport=c_port, dport=REDIRECTED, data=True),
            nacc["pid"],
            nacc["fd"],
            ["established"],
            what="data segment",
        )
    )
    return checks


SCENARIO = Scenario(
    name="tproxy",
    summary="TPROXY: a transparent daemon takes UDP and TCP for a non-local address (vs REDIRECT)",
    narrative=NARRATIVE,
    traffic=traffic,
    expect=expect,
    two_hosts=True,
    setup=setup,
)
