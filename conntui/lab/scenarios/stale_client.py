"""stale-client: a client loses its connection state and comes back on the same port."""

from __future__ import annotations

from ..checks import Check, Result, brief, holders, kernel, received_by, sent_by, split_ep
from ..runner import Lab, Scenario

PORT = 8080
CLIENT_PORT = 40000
TABLE = "conntui_lab"

NARRATIVE = f"""\
stale-client: the server still has a connection the client has forgotten

Two hosts on a veth pair: the client namespace and the server namespace (conntui watches
the server's interface). The client connects from port {CLIENT_PORT} and exchanges data. Then it
"loses power": its socket disappears without a FIN or RST reaching the server (here:
close() with SO_LINGER 0 while a firewall rule in the client drops its RST). The server's
socket is still ESTABLISHED, with an fd, and nothing tells it otherwise.

The client comes back and connects again from the same port {CLIENT_PORT}. Its SYN carries the
same 4-tuple as the old connection, so the kernel's established hash finds the OLD socket,
not the listener. A SYN on an established connection is not a new connection: the kernel
drops it and answers with a "challenge ACK" (RFC 5961) carrying the old sequence numbers.
This is why a server seems to "ignore" the reconnecting client. The client, still in
SYN_SENT, finds that ACK does not acknowledge its SYN and answers with a RST whose
sequence number is exactly what the server expects, so the server's old socket is reset.
Because that ACK hints at stale state on the other side, Linux re-arms the client's SYN
timer to TCP_TIMEOUT_MIN (a few ms) instead of waiting the usual 1 s
(tcp_rcv_synsent_state_process). The retransmitted SYN finds no established socket any
more and reaches the listener: a new connection, a new accepted fd. connect() just takes
a few milliseconds longer. (Without the client's RST, e.g. behind a firewall that drops
it, the server would keep answering challenge ACKs until its old connection times out.)

Watch for:
  * the SYN after the "reboot": match "established", delivered to the OLD accepted fd;
  * the challenge ACK (flags A) sent back by that old socket;
  * the client's RST, delivered to the old socket (which it kills);
  * the retransmitted SYN, milliseconds later: to the listener; then the new fd;
  * TcpExt.TCPSYNChallenge / TCPChallengeACK in the server namespace.
"""

COUNTERS = ("TcpExt.TCPSYNChallenge", "TcpExt.TCPChallengeACK", "TcpExt.TCPACKSkippedChallenge")


def _drop_client_goodbyes(lab: Lab) -> None:
    """In the client: drop its own FIN and RST to the server, so the server never learns."""
    lab.sh("client", "nft", "add", "table", "inet", TABLE)
    lab.sh("client", "nft", "add", "chain", "inet", TABLE, "out", "{ type filter hook output priority 0 ; }")
    lab.sh(
        "client",
        "nft",
        "add",
        "rule",
        "inet",
        TABLE,
        "out",
        "tcp",
        "dport",
        str(PORT),
        "tcp",
        "flags",
        "&",
        "(fin|rst)",
        "!=",
        "0",
        "drop",
    )


def traffic(lab: Lab) -> None:
    host = lab.server_addr
    server = lab.actor("server", "server")
    lst = server("listen", host="0.0.0.0", port=PORT)
    lab.event("listen", role="server", pid=server.pid, fd=lst["fd"], local=lst["local"])
    lab.say(f"server pid {server.pid} listens on {lst['local']} (fd {lst['fd']})")
    old = lab.actor("client-before", "client")
    con = old("connect", host=host, port=PORT, bind=[lab.client_addr, CLIENT_PORT])
    lab.event("connect", role="client-before", pid=old.pid, fd=con["fd"], local=con["local"])
    acc = server("accept", fd=lst["fd"])
    lab.event(
        "accept", role="server", client="client-before", pid=server.pid, fd=acc["fd"], remote=acc["remote"]
    )
    lab.say(f"client {con['local']} connected; the server holds the connection as fd {acc['fd']}")
    lab.pause(0.2)
    old("send", fd=con["fd"], data="hello before the reboot")
    server("recv", fd=acc["fd"], n=23)
    server("send", fd=acc["fd"], data="welcome")
    old("recv", fd=con["fd"], n=7)
    lab.pause(0.3)

    _drop_client_goodbyes(lab)
    old("close", fd=con["fd"], rst=True)
    old.stop()
    lab.event("vanished", role="client-before", local=con["local"])
    lab.sh("client", "nft", "delete", "table", "inet", TABLE)
    lab.say(
        "the client vanished: its RST was dropped, the server still has fd " + str(acc["fd"]) + " ESTABLISHED"
    )
    lab.pause(0.5)

    before = lab.counters("server")
    new = lab.actor("client-after", "client")
    con2 = new("connect", host=host, port=PORT, bind=[lab.client_addr, CLIENT_PORT], timeout=6)
    lab.event("connect", role="client-after", pid=new.pid, fd=con2["fd"], local=con2["local"])
    acc2 = server("accept", fd=lst["fd"], timeout=6)
    lab.event(
        "accept", role="server", client="client-after", pid=server.pid, fd=acc2["fd"], remote=acc2["remote"]
    )
    lab.say(
        f"the client is back on {con2['local']}; after a challenge ACK and a RST, accept() → fd {acc2['fd']}"
    )
    lab.pause(0.2)
    stale = server("recv", fd=acc["fd"], n=1, timeout=1, allow_error=True)
    lab.event(
        "old_socket_read",
        role="server",
        fd=acc["fd"],
        errname=stale.get("errname"),
        eof=stale.get("eof", False),
    )
    lab.say(f"reading the old fd {acc['fd']} now gives {stale.get('errname') or stale}")
    new("send", fd=con2["fd"], data="hello after the reboot")
    server("recv", fd=acc2["fd"], n=22)
    lab.pause(0.3)
    lab.counter_delta(before, "server", COUNTERS)


def expect(res: Result) -> list[Check]:
    lst = res.one("listen", role="server")
    old_acc = res.one("accept", client="client-before")
    new_acc = res.one("accept", client="client-after")
    new_con = res.one("connect", role="client-after")
    vanished = res.one("vanished")
    _, port = split_ep(lst["local"])
    c_addr, c_port = split_ep(new_con["local"])
    delta = res.one("counters")["delta"]
    stale = res.one("old_socket_read")
    checks = [
        kernel(
            "the client came back on the same source port",
            c_port == CLIENT_PORT,
            f"reconnected from {new_con['local']}",
        ),
        kernel(
            "the server answered the SYN with a challenge ACK",
            delta.get("TcpExt.TCPSYNChallenge", 0) >= 1 and delta.get("TcpExt.TCPChallengeACK", 0) >= 1,
            f"{delta}",
        ),
        kernel("the old socket was reset", stale.get("errname") == "ECONNRESET", f"read on old fd: {stale}"),
    ]
    up = [r for r in res.segments(src=c_addr, sport=c_port, dport=port) if r["ts"] > vanished["ts"]]
    dst = up[0]["dst"] if up else ""
    syns = [r for r in up if r["flags"] == "S"]
    first_syn = syns[:1]
    checks.append(
        received_by(
            "the reconnecting SYN hits the OLD socket",
            first_syn,
            old_acc["pid"],
            old_acc["fd"],
            ["established"],
            what="SYN",
        )
    )
    checks.append(
        Check(
            "the explanation names the challenge ACK",
            bool(first_syn) and "challenge" in first_syn[0].get("explain", "").lower(),
            first_syn[0].get("explain", "") if first_syn else "no SYN",
        )
    )
    t0 = first_syn[0]["ts"] if first_syn else 0.0
    challenge = [
        r
        for r in res.segments(src=dst, sport=port, dst=c_addr, dport=c_port, flags="A")
        if r["ts"] > t0 and r["payload_len"] == 0
    ][:1]
    checks.append(
        sent_by(
            "the challenge ACK comes from the old socket",
            challenge,
            old_acc["pid"],
            old_acc["fd"],
            what="challenge ACK",
        )
    )
    rst = [r for r in up if "R" in r["flags"]][:1]
    checks.append(
        received_by(
            "the client's RST goes to the old socket",
            rst,
            old_acc["pid"],
            old_acc["fd"],
            ["established"],
            what="RST",
        )
    )
    later = [r for r in syns[1:] if not rst or r["ts"] > rst[0]["ts"]]
    checks.append(
        received_by(
            "the retransmitted SYN reaches the listener",
            later[:1],
            lst["pid"],
            lst["fd"],
            ["listener"],
            what="SYN",
        )
    )
    # what came back to the first SYN: the challenge ACK, not "nothing" (verify.py)
    said = [n for r in later[:1] for n in r.get("notes", ()) if n.startswith("a retransmission of the SYN")]
    checks.append(
        Check(
            "the retransmitted SYN's note names the challenge ACK that came back",
            bool(said) and "challenge ACK" in said[0] and "nothing came back" not in said[0],
            said[0] if said else "no note on the retransmitted SYN",
        )
    )
    data = [r for r in up if r["payload_len"] > 0]
    checks.append(
        received_by(
            "the new connection's data goes to the new fd",
            data,
            new_acc["pid"],
            new_acc["fd"],
            ["established"],
            what="data segment",
        )
    )
    wrong = [r for r in data if (old_acc["pid"], old_acc["fd"]) in holders(r.get("receiver"))]
    if wrong:
        checks.append(Check("no new data blamed on the old fd", False, brief(wrong[0])))
    return checks


SCENARIO = Scenario(
    name="stale-client",
    summary="a client vanishes without FIN and reconnects from the same port: the old socket gets the SYN",
    narrative=NARRATIVE,
    traffic=traffic,
    expect=expect,
    two_hosts=True,
)
