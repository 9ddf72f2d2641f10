"""The ladder of a lab scenario against its ground truth: ``conntui lab listen-vs-connect``
(Python programs) writes its capture (``-- -w FILE``); ``conntui -r FILE --ladder PORT``
must show as lanes exactly the fds the programs reported (connect(), listen(), accept()),
the SYN going to the listener and the data to the accepted fd, in capture order."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB = [sys.executable, "-m", "conntui", "lab"]
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, capture)"),
]


def test_listen_vs_connect_ladder_matches_the_programs(tmp_path: Path) -> None:
    pcap = tmp_path / "lab.pcapng"
    lab = subprocess.run(
        [*LAB, "listen-vs-connect", "--headless", "--json", "--no-node", "--", "-w", str(pcap)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    assert lab.returncode == 0, lab.stderr[-2000:]
    events = {}
    for line in lab.stdout.splitlines():
        obj = json.loads(line)
        if obj.get("lab") == "event" and obj["what"] in ("listen", "connect", "accept"):
            events[obj["what"]] = obj
    assert set(events) == {"listen", "connect", "accept"}, lab.stdout[-2000:]
    client_port = events["connect"]["local"].rsplit(":", 1)[1]
    done = subprocess.run(
        [sys.executable, "-m", "conntui", "-r", str(pcap), "--ladder", client_port],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    names, fds = re.split(r"\s{2,}", lines[1].strip()), re.split(r"\s{2,}", lines[2].strip())
    want = [events[w] for w in ("connect", "listen", "accept")]  # left to right
    assert [name[name.index("[") :] for name in names] == [f"[{ev['pid']}]" for ev in want], lines[:3]
    assert fds == [f"fd {ev['fd']}" for ev in want], lines[:3]
    rails = [i for i, ch in enumerate(lines[3]) if ch == "│"]
    arrows = [line for line in lines[4:] if "─" in line]
    syn = arrows[0]
    assert " S 0 " in syn and syn.endswith("listener") and syn.index("▶") + 1 == rails[1], arrows[:2]
    data = [a for a in arrows if " PA 21 " in a]
    assert len(data) == 2 and all(a.endswith("established") for a in data), arrows
    assert data[0].index("▶") + 1 == rails[2] and data[1].index("◀") - 1 == rails[0]  # accept()'s fd


def test_accept_queue_drop_shows_on_the_late_clients_ladder(tmp_path: Path) -> None:
    """conntui lab accept-queue: the late client's first SYN finds the queue full; its
    ladder shows that SYN marked as dropped, the retransmission a second later answered,
    and the lanes the programs reported (its fd, the listener, the fd accept() gave)."""
    pcap = tmp_path / "aq.pcapng"
    lab = subprocess.run(
        [*LAB, "accept-queue", "--headless", "--json", "--no-node", "--", "-w", str(pcap)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    assert lab.returncode == 0, lab.stderr[-2000:]
    events = [json.loads(line) for line in lab.stdout.splitlines()]
    events = [e for e in events if e.get("lab") == "event"]
    listen = next(e for e in events if e["what"] == "listen")
    accepts = [e for e in events if e["what"] == "accept"]
    late = accepts[-1]  # the client whose first SYN was dropped is accepted last
    port = late["remote"].rsplit(":", 1)[1]
    done = subprocess.run(
        [sys.executable, "-m", "conntui", "-r", str(pcap), "--ladder", port],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    fds = re.split(r"\s{2,}", lines[2].strip())
    assert fds[1:] == [f"fd {listen['fd']}", f"fd {late['fd']}"], lines[:3]
    names = re.split(r"\s{2,}", lines[1].strip())
    assert names[1].endswith(f"[{listen['pid']}]") and names[2].endswith(f"[{late['pid']}]"), lines[:3]
    arrows = [line for line in lines[4:] if "─" in line]
    first, second = arrows[0], arrows[1]
    assert " S 0 " in first and "accept queue is full" in first and "drops this SYN" in first, first
    assert " S 0 " in second and "retransmission" in second, second
    assert " SA 0 " in arrows[2], arrows[2]
