"""The ladder of every lab scenario against the scenario's ground truth.

Each scenario runs for real (``conntui lab NAME --headless --json -- -w FILE``: its own
namespaces, its own programs, which report their pids and fds as ``{"lab": "event"}``
lines). Its capture is read back and every connection in it drawn as a ladder; then:

- lanes: every lane named by a scenario program's fd is an fd that program reported, and
  each fd the programs got from connect() and accept() is a lane saying so (``connect()``,
  ``accept()``); a listener's lane says ``listen()``;
- arrows: exactly the connection's segments, in the order the capture file has them, read
  with scapy (not with conntui), each from its sender's end to its receiver's.

Then what each picture is for: listen() vs accept() (listen-vs-connect), the accept-queue
drop (accept-queue), the stale client's challenge ACK (stale-client), the REDIRECT (redirect),
each with its own assertions, the last three through the command line (text and SVG).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.utils import PcapNgReader

from conntui.cli import make_engine, parse_options
from conntui.model import Record
from conntui.tui.ladder import Ladder, flow_key, ladder_for, ladder_lines

ROOT = Path(__file__).resolve().parents[2]
LAB = [sys.executable, "-m", "conntui", "lab"]
SVG = "{http://www.w3.org/2000/svg}"
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, capture)"),
]
HOLDER = re.compile(r"^(?P<name>.*)\[(?P<pid>\d+)\] fd (?P<fd>\d+)")


@dataclass
class Run:
    pcap: Path
    events: list[dict[str, Any]]
    records: list[Record]
    ladders: list[Ladder]

    def ladder(self, port: int) -> Ladder:
        return next(ld for ld in self.ladders if f":{port} " in ld.title + " ")

    def of_endpoint(self, ep: str) -> Ladder:
        """The ladder of the connection one of whose ends is ``ep`` (``::ffff:`` unmapped)."""
        addr, _, port = ep.removeprefix("::ffff:").rpartition(":")
        want = f"{addr}:{port}" if ":" not in addr else f"[{addr}]:{port}"
        found = [ld for ld in self.ladders if want in ld.title.split()]
        assert found, f"no connection of {ep} in {[ld.title for ld in self.ladders]}"
        return found[-1]


def run_lab(name: str, tmp_path: Path, *extra: str) -> Run:
    pcap = tmp_path / f"{name}.pcapng"
    lab = subprocess.run(
        [*LAB, name, "--headless", "--json", *extra, "--", "-w", str(pcap)],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=ROOT,
    )
    lines = [json.loads(line) for line in lab.stdout.splitlines() if line.startswith("{")]
    end = [e for e in lines if e.get("lab") == "end"]
    # 0: every check passed; 3: some of conntui's own checks failed (test_lab's business)
    assert lab.returncode in (0, 3) and end and not end[0]["error"], lab.stderr[-3000:]
    events = [e for e in lines if e.get("lab") == "event"]
    engine = make_engine(parse_options(["-r", str(pcap), "--headless"]))
    try:
        engine.run()
    finally:
        engine.close()
    records = engine.session.window()
    assert records, f"{name}: nothing captured"
    firsts: dict[object, Record] = {}
    for rec in records:
        firsts.setdefault(flow_key(rec.segment), rec)
    # one connection NAT rewrote has two 4-tuples (before and after), and one ladder
    ladders = {}
    for rec in firsts.values():
        ladder = ladder_for(records, rec)
        ladders.setdefault(tuple(a.seq for a in ladder.arrows), ladder)
    return Run(pcap, events, records, list(ladders.values()))


Packet = tuple[str, int, str, int, str]


def file_order(pcap: Path) -> list[tuple[Packet, tuple[object, ...]]]:
    """The capture's TCP/UDP segments in file order, read by scapy: (src, sport, dst, dport,
    flags), and what NAT leaves of a TCP segment (sequence and acknowledgment numbers, flags,
    window, payload length; () for UDP)."""
    out: list[tuple[Packet, tuple[object, ...]]] = []
    with PcapNgReader(str(pcap)) as reader:
        for pkt in reader:
            ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
            l4 = pkt.getlayer(TCP) or pkt.getlayer(UDP)
            if ip is None or l4 is None:
                continue
            flags = "".join(f for f in "FSRPAUEC" if f in str(l4.flags)) if isinstance(l4, TCP) else ""
            same = (l4.seq, l4.ack, flags, l4.window, len(l4.payload)) if isinstance(l4, TCP) else ()
            out.append(((ip.src, int(l4.sport), ip.dst, int(l4.dport), flags), same))
    return out


def nat_keys(events: list[dict[str, Any]]) -> dict[object, object]:
    """The flow key of each connection conntrack rewrote, as the kernel's table (the lab's
    ``conntrack -L`` event) has it after the rewrite, to its key as dialled."""
    out: dict[object, object] = {}
    for e in events:
        for entry in e.get("entries", []) if e["what"] == "conntrack" else []:
            proto, fields = entry.split()[0], re.findall(r"(src|dst|sport|dport)=(\S+)", entry)
            if len(fields) < 8:
                continue
            o, r = dict(fields[:4]), dict(fields[4:8])
            dialled = flow_key_of(proto, (o["src"], int(o["sport"]), o["dst"], int(o["dport"]), ""))
            rewritten = flow_key_of(proto, (r["dst"], int(r["dport"]), r["src"], int(r["sport"]), ""))
            if rewritten != dialled:
                out[rewritten] = dialled
    return out


def connection_in_file(
    order: list[tuple[Packet, tuple[object, ...]]], proto: str, key: object, nat: dict[object, object]
) -> list[Packet]:
    """The connection's segments in file order, each once: a segment seen again with the
    other 4-tuple NAT gives the connection (before and after the rewrite, ``-i any``) is
    the first copy's."""
    out: list[Packet] = []
    first_tuple: dict[tuple[object, ...], tuple[object, ...]] = {}
    for p, same in order:
        k = flow_key_of(proto, p)
        if nat.get(k, k) != key:
            continue
        if same and first_tuple.setdefault(same, p[:4]) != p[:4]:
            continue  # the same segment again, rewritten
        out.append(p)
    return out


def holder(label: str) -> tuple[str, int, int] | None:
    m = HOLDER.match(label)
    return (m["name"], int(m["pid"]), int(m["fd"])) if m else None


def lane_of(ladder: Ladder, pid: int, fd: int) -> int | None:
    for i, ln in enumerate(ladder.lanes):
        h = holder(ln.label)
        if h is not None and h[1:] == (pid, fd):
            return i
    return None


SCENARIOS = [
    "listen-vs-connect",
    "established-routing",
    "accept-queue",
    "stale-client",
    "port-conflict",
    "redirect",
    "container-port",
    "udp-demux",
    "same-port",
    "tproxy",
]


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_ladder_of_a_scenario_matches_its_ground_truth(name: str, tmp_path: Path) -> None:
    run = run_lab(name, tmp_path, "--no-node")
    reported = {(e["pid"], e["fd"]) for e in run.events if "pid" in e and "fd" in e}
    programs = {pid for pid, _ in reported}
    assert reported, f"{name}: the programs reported no fd"
    # arrows: the connection's segments, in the file's order, from sender to receiver
    order = file_order(run.pcap)
    nat = nat_keys(run.events)
    by_seq = {rec.seq: rec for rec in run.records}
    for ladder in run.ladders:
        segs = [by_seq[a.seq].segment for a in ladder.arrows]
        key = flow_key(segs[0])
        in_file = connection_in_file(order, segs[0].proto, nat.get(key, key), nat)
        assert [(s.src, s.sport, s.dst, s.dport, s.flags) for s in segs] == in_file, ladder.title
        assert [a.seq for a in ladder.arrows] == sorted(a.seq for a in ladder.arrows)
        left = (segs[0].src, segs[0].sport)
        for a, s in zip(ladder.arrows, segs, strict=True):
            from_left = (s.src, s.sport) == left
            assert ladder.lanes[a.src].left == from_left and ladder.lanes[a.dst].left != from_left, (
                ladder.title,
                a,
            )
    # lanes: a program's fd in a lane is one it reported
    seen: dict[tuple[int, int], set[str]] = {}
    for ladder in run.ladders:
        for ln in ladder.lanes:
            h = holder(ln.label)
            if h is None or h[1] not in programs:
                continue
            assert h[1:] in reported, (
                f"{name}: lane {ln.label!r} is no fd the programs reported {sorted(reported)}"
            )
            seen.setdefault(h[1:], set()).add(ln.lines[2])
    # ... and each fd connect() and accept() gave is a lane saying so: a connect()ed fd
    # sent the SYN; an accept()ed one has a lane when a segment came after accept()
    # returned (a connection whose capture ends with its handshake has none)
    for e in run.events:
        role = {"connect": "connect()", "accept": "accept()", "listen": "listen()"}.get(e["what"])
        if role is None or "fd" not in e:
            continue
        pair = (e["pid"], e["fd"])
        if e["what"] == "listen":
            assert seen.get(pair, {role}) == {role}, f"{name}: listener {pair}: lanes {seen.get(pair)}"
            continue
        ladder = run.of_endpoint(e["local"] if e["what"] == "connect" else e["remote"])
        if e["what"] == "accept" and not any(a.ts > e["ts"] + 0.3 for a in ladder.arrows):
            continue
        assert lane_of(ladder, *pair) is not None, f"{name}: {e['what']} fd {pair}: {ladder.lanes}"
        assert role in seen.get(pair, set()), f"{name}: {e['what']} fd {pair}: lanes {seen.get(pair)}"


def flow_key_of(proto: str, p: Packet) -> object:
    a, b = (p[0], p[1]), (p[2], p[3])
    return (proto, min(a, b), max(a, b))


def test_listen_vs_connect_the_syn_goes_to_listen_and_the_data_to_accept(tmp_path: Path) -> None:
    run = run_lab("listen-vs-connect", tmp_path, "--no-node")
    ev = {e["what"]: e for e in run.events if e["what"] in ("listen", "connect", "accept")}
    port = int(ev["connect"]["local"].rsplit(":", 1)[1])
    ladder = run.ladder(port)
    client, listener, accepted = (
        lane_of(ladder, ev[w]["pid"], ev[w]["fd"]) for w in ("connect", "listen", "accept")
    )
    # the client's side on the left (its fd, then the TIME_WAIT its close() leaves), the
    # server's on the right: the listener, (the accept queue), the fd accept() returned
    assert client == 0 and listener is not None and accepted is not None and listener < accepted, ladder.lanes
    assert ladder.lanes[client].lines[2] == "connect()" and ladder.lanes[listener].lines[2] == "listen()"
    assert ladder.lanes[accepted].lines[2] == "accept()"
    assert {ln.kind for ln in ladder.lanes} <= {"socket", "queue", "time_wait"}
    syn = ladder.arrows[0]
    assert (syn.what, syn.src, syn.dst, syn.match) == ("S 0", client, listener, "listener")
    assert ladder.arrows[1].what == "SA 0" and ladder.arrows[1].src == listener
    data = [a for a in ladder.arrows if a.what.startswith("PA ")]
    assert len(data) == 2 and {(a.src, a.dst) for a in data} == {(client, accepted), (accepted, client)}


def test_accept_queue_the_dropped_syn_ends_in_a_cross(tmp_path: Path) -> None:
    """The late client's first SYN finds the queue full: its arrow goes to the listener
    and ends in ✕; the retransmission a second later is answered."""
    run = run_lab("accept-queue", tmp_path, "--no-node")
    listen = next(e for e in run.events if e["what"] == "listen")
    late = [e for e in run.events if e["what"] == "accept"][-1]
    ladder = run.ladder(int(late["remote"].rsplit(":", 1)[1]))
    listener = lane_of(ladder, listen["pid"], listen["fd"])
    first, second, synack = ladder.arrows[:3]
    assert first.what == "S 0 queue full" and first.dst == listener and first.dropped, first
    assert second.what.startswith("S 0") and second.dst == listener and not second.dropped, second
    assert synack.what == "SA 0" and synack.src == listener
    lines = ladder_lines(ladder)
    arrows = [line for line in lines if "─" in line]
    assert "✕" in arrows[0] and "▶" not in arrows[0] and "▶" in arrows[1]
    assert lane_of(ladder, late["pid"], late["fd"]) is not None


def test_stale_client_the_challenge_ack_from_the_old_socket_to_the_new_client(tmp_path: Path) -> None:
    """Text and SVG from the command line: the old server fd answers the new client's SYN
    with a challenge ACK; both clients (one 4-tuple) are lanes of their own."""
    run = run_lab("stale-client", tmp_path, "--no-node")
    ev = {(e["what"], e.get("role"), e.get("client")): e for e in run.events}
    before, after = ev[("connect", "client-before", None)], ev[("connect", "client-after", None)]
    old_fd = ev[("accept", "server", "client-before")]
    svg = run.pcap.with_suffix(".svg")
    port = before["local"].rsplit(":", 1)[1]
    done = subprocess.run(
        [sys.executable, "-m", "conntui", "-r", str(run.pcap), "--ladder", port, "--ladder-svg", str(svg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    names = re.split(r"\s{2,}", lines[1].strip())
    assert names[:2] == [f"client-before[{before['pid']}]", f"client-after[{after['pid']}]"], lines[:4]
    ladder = run.ladder(int(port))
    old, new = lane_of(ladder, old_fd["pid"], old_fd["fd"]), lane_of(ladder, after["pid"], after["fd"])
    challenge = [a for a in ladder.arrows if a.what.endswith(" challenge ACK") and not a.what.startswith("S")]
    assert len(challenge) == 1 and (challenge[0].src, challenge[0].dst) == (old, new), ladder.arrows
    assert any(" A 0 challenge ACK " in line and "◀" in line for line in lines), lines
    texts = ["".join(t.itertext()) for t in ET.parse(svg).getroot().iter(f"{SVG}text")]
    assert "A 0 challenge ACK" in texts and f"client-after[{after['pid']}]" in texts


def test_redirect_the_nat_lane_between_client_and_daemon(tmp_path: Path) -> None:
    run = run_lab("redirect", tmp_path, "--no-node")
    listen = next(e for e in run.events if e["what"] == "listen")
    for conn in (e for e in run.events if e["what"] == "connect"):
        dialled = conn["dialled"]
        ladder = run.ladder(int(conn["local"].rsplit(":", 1)[1]))
        kinds = [ln.kind for ln in ladder.lanes]
        nat = kinds.index("nat")
        assert ladder.lanes[nat].lines[:2] == (
            "NAT REDIRECT",
            f":{dialled} → :{listen['local'].rsplit(':', 1)[1]}",
        )
        client = lane_of(ladder, conn["pid"], conn["fd"])
        accepted = next(e for e in run.events if e["what"] == "accept" and e["remote"] == conn["local"])
        assert client is not None and client < nat < lane_of(ladder, accepted["pid"], accepted["fd"])  # type: ignore[operator]
        assert client < nat < lane_of(ladder, listen["pid"], listen["fd"])  # type: ignore[operator]
        assert all(a.nat for a in ladder.arrows)
        # the namespaces: the client's is not the daemon's
        spaces = [ln.lines[3] for ln in ladder.lanes if ln.kind == "socket"]
        assert len(set(spaces)) == 2 and all(s.startswith("net:[") for s in spaces), spaces
        rails = ladder_lines(ladder)[5]
        assert all(line[rails.index("┊")] == "◇" for line in ladder_lines(ladder)[6:])
