"""redirect: NAT REDIRECT of several ports to one daemon, which recovers the dialled port."""

from __future__ import annotations

from typing import Any

from ..checks import Check, Result, kernel, received_by, sent_by, split_ep
from ..netns import LabError
from ..runner import Lab, Scenario

DAEMON_PORT = 9000
DIALLED = (8081, 8082, 8083)
TABLE = "conntui_lab_nat"

NARRATIVE = f"""\
redirect: many ports, one daemon, and the port the client really dialled

Two hosts on a veth pair. In the server namespace a NAT rule redirects TCP ports
{", ".join(map(str, DIALLED))} to port {DAEMON_PORT} (nft "redirect to :{DAEMON_PORT}", the same as
iptables -t nat -j REDIRECT). Only one daemon listens, on {DAEMON_PORT}. The client connects to
each of the three ports. In PREROUTING, conntrack records each connection and rewrites
the destination port to {DAEMON_PORT}; the socket look-up then only ever sees {DAEMON_PORT}. The
daemon asks getsockopt(SOL_IP, SO_ORIGINAL_DST) on each accepted socket: conntrack answers
with the destination before NAT, so the daemon knows which port was dialled. Replies are
translated back, so the client only ever sees the port it dialled.

conntui captures on the server's veth, where a packet socket sees incoming packets BEFORE
PREROUTING and outgoing ones AFTER POSTROUTING: every segment it shows carries the
dialled port, never {DAEMON_PORT}.

A socket look-up by the captured port alone finds nothing on {DIALLED[0]}: to name the daemon,
conntui has to translate each segment through the conntrack table first (the lab prints
the entries). If it shows "none" (no socket) for these segments, compare with the fds
the daemon reports: it really received every one of them.

Watch for:
  * SYNs and data to ports {DIALLED[0]}-{DIALLED[-1]}: the real receiver is the daemon's listener
    / accepted fds on {DAEMON_PORT}; a look-up by the captured port alone finds no socket;
  * the daemon's answers ("you dialled ..."), sent by its accepted fds on {DAEMON_PORT} but seen on
    the wire from the dialled port;
  * the conntrack entries (lab event): original tuple vs reply tuple.
"""


def _install_redirect(lab: Lab) -> str:
    """nft if it works here, else iptables; returns which one did."""
    ports = ", ".join(map(str, DIALLED))
    try:
        lab.sh("server", "nft", "add", "table", "ip", TABLE)
        lab.sh(
            "server",
            "nft",
            "add",
            "chain",
            "ip",
            TABLE,
            "pre",
            "{ type nat hook prerouting priority dstnat ; }",
        )
        lab.sh(
            "server",
            "nft",
            "add",
            "rule",
            "ip",
            TABLE,
            "pre",
            "tcp",
            "dport",
            f"{{ {ports} }}",
            "redirect",
            "to",
            f":{DAEMON_PORT}",
        )
        return "nft"
    except LabError:
        lab.sh("server", "nft", "delete", "table", "ip", TABLE, check=False)
    lab.sh(
        "server",
        "iptables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-p",
        "tcp",
        "-m",
        "multiport",
        "--dports",
        ",".join(map(str, DIALLED)),
        "-j",
        "REDIRECT",
        "--to-ports",
        str(DAEMON_PORT),
    )
    return "iptables"


def traffic(lab: Lab) -> None:
    tool = _install_redirect(lab)
    lab.event("nat_rule", tool=tool, dialled=list(DIALLED), to_port=DAEMON_PORT)
    lab.say(
        f"{tool}: tcp dport {{{', '.join(map(str, DIALLED))}}} redirect to :{DAEMON_PORT} (server namespace)"
    )
    daemon = lab.actor("daemon", "server")
    lst = daemon("listen", host="0.0.0.0", port=DAEMON_PORT)
    lab.event("listen", role="daemon", pid=daemon.pid, fd=lst["fd"], local=lst["local"])
    lab.say(
        f"daemon pid {daemon.pid} listens on {lst['local']} (fd {lst['fd']}), nothing listens on {DIALLED}"
    )
    client = lab.actor("client", "client")
    lab.pause(0.2)
    for port in DIALLED:
        con = client("connect", host=lab.server_addr, port=port)
        lab.event(
            "connect",
            role="client",
            dialled=port,
            pid=client.pid,
            fd=con["fd"],
            local=con["local"],
            remote=con["remote"],
        )
        acc = daemon("accept", fd=lst["fd"], original_dst=True)
        lab.event(
            "accept",
            role="daemon",
            pid=daemon.pid,
            fd=acc["fd"],
            local=acc["local"],
            remote=acc["remote"],
            original_dst=acc.get("original_dst"),
        )
        lab.say(
            f"client dialled {port}; the daemon's fd {acc['fd']} is {acc['local']}, "
            f"SO_ORIGINAL_DST says {acc.get('original_dst')}"
        )
        lab.pause(0.1)
        msg = f"hello port {port}"
        client("send", fd=con["fd"], data=msg)
        daemon("recv", fd=acc["fd"], n=len(msg))
        daemon("send", fd=acc["fd"], data=f"you dialled {acc.get('original_dst')}")
        got = client("recv", fd=con["fd"], any=True, timeout=2)
        lab.event("client_got", dialled=port, data=got["data"])
        lab.pause(0.1)
    ct = lab.sh("server", "conntrack", "-L", "-p", "tcp", check=False)
    lines = [ln for ln in ct.stdout.splitlines() if "dport=" in ln]
    if lines:
        lab.event("conntrack", entries=lines)
        for ln in lines:
            lab.say(f"conntrack: {ln}")
    lab.pause(0.2)


def expect(res: Result) -> list[Check]:
    lst = res.one("listen", role="daemon")
    checks: list[Check] = []
    for port in DIALLED:
        con = res.one("connect", dialled=port)
        acc = next((a for a in res.truth("accept") if a["remote"] == con["local"]), None)
        if acc is None:
            checks.append(kernel(f"{port}: the daemon accepted the connection", False, "no accept event"))
            continue
        local_port = split_ep(acc["local"])[1]
        orig = acc.get("original_dst") or ""
        checks.append(
            kernel(
                f"{port}: the daemon's socket is on {DAEMON_PORT}, SO_ORIGINAL_DST gives {port}",
                local_port == DAEMON_PORT and orig.endswith(f":{port}"),
                f"accepted {acc['local']}, original_dst {orig}",
            )
        )
        c_addr, c_port = split_ep(con["local"])
        s_addr = split_ep(con["remote"])[0]
        up: dict[str, Any] = dict(src=c_addr, sport=c_port, dst=s_addr)
        seen = res.segments(**up)
        dials = {r["dport"] for r in seen}
        checks.append(
            Check(
                f"{port}: the capture shows the dialled port, not {DAEMON_PORT}",
                dials == {port},
                f"destination ports on the wire: {sorted(dials) or 'none'}",
            )
        )
        syn = res.segments(**up, dport=port, flags="S")
        checks.append(
            received_by(
                f"{port}: SYN attributed to the daemon's listener (after NAT)",
                syn,
                lst["pid"],
                lst["fd"],
                ["listener"],
                what="SYN",
            )
        )
        data = res.segments(**up, dport=port, data=True)
        checks.append(
            received_by(
                f"{port}: data attributed to the daemon's fd {acc['fd']}",
                data,
                acc["pid"],
                acc["fd"],
                ["established"],
                what="data segment",
            )
        )
        back = res.segments(src=s_addr, sport=port, dst=c_addr, dport=c_port, data=True)
        checks.append(
            sent_by(
                f"{port}: the answer shown as sent by the daemon's fd {acc['fd']}",
                back,
                acc["pid"],
                acc["fd"],
                what="data segment",
            )
        )
    return checks


SCENARIO = Scenario(
    name="redirect",
    summary="NAT REDIRECT of several ports to one daemon; it recovers the dialled port (SO_ORIGINAL_DST)",
    narrative=NARRATIVE,
    traffic=traffic,
    expect=expect,
    two_hosts=True,
)
