"""``conntui -r`` of a ptcpdump file shows the process ptcpdump recorded for each packet.

The file is written here byte by byte in ptcpdump's documented layout (its
internal/writer/pcapng.go): Ethernet frames, one pcapng comment option per group of
"Key: value" lines ("PID: 42\\nCmd: ...\\nArgs: ...", then container, ...), and epb_flags
for the direction.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from conntui.capfile.comments import attribution_from_comment
from conntui.capfile.reader import read_capture
from conntui.model import Match

REPO = Path(__file__).resolve().parent.parent.parent


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) & 3)


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def ptcpdump_file(path: Path, packets: list[tuple[bytes, list[str], int]]) -> None:
    """SHB, one Ethernet IDB, then an EPB per (frame, comments, direction 1 in / 2 out)."""
    out = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _opt(4, b"ptcpdump") + _opt(0, b""))
    out += _block(1, struct.pack("<HHI", 1, 0, 262144) + _opt(2, b"lo") + _opt(0, b""))
    for i, (data, comments, direction) in enumerate(packets):
        ticks = (1_700_000_000 + i) * 1_000_000
        opts = b"".join(_opt(1, c.encode("utf-8", "surrogateescape")) for c in comments)
        opts += _opt(2, struct.pack("<I", direction)) + _opt(0, b"")
        body = struct.pack("<IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
        out += _block(6, body + data + b"\0" * (-len(data) & 3) + opts)
    path.write_bytes(out)


def frame(sport: int, dport: int) -> bytes:
    return bytes(
        Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / TCP(sport=sport, dport=dport, flags="PA") / b"x"
    )


PACKETS = [
    (frame(40000, 8080), ["PID: 4242\nCmd: /usr/bin/curl\nArgs: curl http://127.0.0.1:8080/"], 2),
    (
        frame(8080, 40000),
        [
            "PID: 77\nCmd: /usr/sbin/nginx\nArgs: nginx: worker process",
            "ThreadId: 78\nThreadName: nginx",
            "ContainerName: web\nContainerId: 0123abcd\nContainerImage: nginx:1\nContainerLabels: ",
        ],
        1,
    ),
    (frame(40001, 8080), [], 2),
    (frame(40002, 8080), ["PID: 9\x1b[2J\u202e\nCmd: evil"], 2),  # not a pid: not ptcpdump's
    (frame(40003, 8080), ["PID: 31\nCmd: ev\x1b]0;pwned\x07il\u202e"], 2),
]


def test_ptcpdump_comments_become_the_rows_process_notes(tmp_path):
    path = tmp_path / "ptcpdump.pcapng"
    ptcpdump_file(path, PACKETS)
    frames = list(read_capture(path))
    assert len(frames) == len(PACKETS)
    first = attribution_from_comment(frames[0].comment)
    assert first is not None and first.match is Match.UNKNOWN
    assert first.notes == ("ptcpdump: /usr/bin/curl[4242]",)
    assert "curl http://127.0.0.1:8080/" in first.explain and "no socket, fd" in first.explain
    second = attribution_from_comment(frames[1].comment)
    assert second is not None and second.notes == ("ptcpdump: /usr/sbin/nginx[77] in container web",)
    assert attribution_from_comment(frames[2].comment) is None
    assert attribution_from_comment(frames[3].comment) is None

    res = subprocess.run(
        [sys.executable, "-m", "conntui", "-r", str(path), "--headless", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["notes"] for r in rows] == [
        ["ptcpdump: /usr/bin/curl[4242]"],
        ["ptcpdump: /usr/sbin/nginx[77] in container web"],
        [],
        [],
        ["ptcpdump: ev\x1b]0;pwned\x07il\u202e[31]"],
    ]
    assert [r["match"] for r in rows] == ["unknown"] * len(PACKETS)
    text = subprocess.run(
        [sys.executable, "-m", "conntui", "-r", str(path), "--headless"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    lines = text.stdout.splitlines()
    assert lines[0].endswith("(unknown); ptcpdump: /usr/bin/curl[4242]"), lines[0]
    assert lines[4].endswith("; ptcpdump: ev\\x1b]0;pwned\\x07il\\u202e[31]"), lines[4]  # escaped
    assert "\x1b" not in text.stdout
