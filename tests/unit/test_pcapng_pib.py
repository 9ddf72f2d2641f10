"""``--pcapng-pib``: process information blocks as Wireshark's development tree reads them
(a Wireshark custom block: type 0x00000BAD, PEN 32622, little-endian entry of type 3 holding
the pid and the PIB's options) and ``epb_processid_threadid`` (EPB option 8) on each packet.

The bytes are checked against a parser written here from the layout, not conntui's reader;
the expected blocks are spelled out by hand (the PIB without options is the one Wireshark's
own tests use). Released tshark (Debian 12: 4.0) must still read such a file whole.
"""

from __future__ import annotations

import dataclasses
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conntui.capfile.comments import COMMENT_JSON_PREFIX, COMMENT_REF_PREFIX, attribution_from_comment
from conntui.capfile.reader import read_capture
from conntui.capfile.writers import open_writer, pib_block, processid_opt
from conntui.cli import UsageError, parse_options
from conntui.model import Attribution, Holder, Match

from .test_wireshark_plugin import EST, NONE, PKT, PLUGIN, REPO, SERVER, TSHARK, frame

# the same pid 4321, now another program (a reused pid)
REUSED = dataclasses.replace(
    EST, receiver=dataclasses.replace(SERVER, holders=(Holder(4321, 7, "caf\u00e9"),))
)
INBOUND = Attribution(Match.ESTABLISHED, receiver=SERVER, sender=None, explain="from elsewhere")
ORDER = [EST, EST, NONE, REUSED, INBOUND]


def write(path: Path, atts: list[Attribution], *, pib: bool) -> None:
    with open_writer(path, pib=pib) as w:
        for i, att in enumerate(atts):
            w.write(frame(i), None, att)


def blocks(data: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of every block of a little-endian pcapng file."""
    out, pos = [], 0
    while pos < len(data):
        btype, total = struct.unpack_from("<II", data, pos)
        assert total >= 12 and total % 4 == 0 and pos + total <= len(data)
        assert struct.unpack_from("<I", data, pos + total - 4)[0] == total
        out.append((btype, data[pos + 8 : pos + total - 4]))
        pos += total
    return out


def options(raw: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos + 4 <= len(raw):
        code, length = struct.unpack_from("<HH", raw, pos)
        if code == 0:
            break
        out.append((code, raw[pos + 4 : pos + 4 + length]))
        pos += 4 + length + (-length & 3)
    return out


def pib(body: bytes) -> tuple[int, dict[int, bytes]]:
    """(pid, options) of a Wireshark custom block holding a process information entry."""
    pen, entry_type, entry_len = struct.unpack_from("<III", body)
    assert (pen, entry_type) == (32622, 3)
    assert len(body) == 12 + entry_len  # the entry is padded already; no block options
    (pid,) = struct.unpack_from("<I", body, 12)
    return pid, dict(options(body[16 : 12 + entry_len]))


def epb_options(body: bytes) -> dict[int, bytes]:
    caplen = struct.unpack_from("<I", body, 12)[0]
    return dict(options(body[20 + caplen + (-caplen & 3) :]))


def test_the_custom_block_bytes():
    # no name: the entry is the pid alone, as in Wireshark's own test capture
    assert pib_block(4321, "").hex() == ("ad0b00001c0000006e7f00000300000004000000e11000001c000000")
    # pib_name (2), padded to 32 bits, then opt_endofopt: in the entry's length
    assert pib_block(77, "sshd").hex() == (
        "ad0b0000" "28000000" "6e7f0000" "03000000" "10000000" "4d000000"
        "02000400" "73736864" "00000000" "28000000"
    )  # fmt: skip
    assert pib_block(1, "nginx").hex() == (
        "ad0b0000" "2c000000" "6e7f0000" "03000000" "14000000" "01000000"
        "02000500" "6e67696e" "78000000" "00000000" "2c000000"
    )  # fmt: skip
    # the draft's example, little-endian: process 1234, thread unknown
    assert processid_opt(1234).hex() == "08000800d204000000000000"


def test_writer_puts_each_process_before_its_first_packet_and_names_the_sender(tmp_path):
    path = tmp_path / "pib.pcapng"
    write(path, ORDER, pib=True)
    got = blocks(path.read_bytes())
    kinds = [t for t, _ in got]
    assert kinds[:2] == [0x0A0D0D0A, 1]
    # EST: its three processes, then the packet; EST and NONE again: nothing new;
    # REUSED: pid 4321 under another name; INBOUND: 4321 is nginx again. Wireshark takes
    # the last block of a pid before the packet, so each change is written again.
    assert kinds[2:] == [0xBAD, 0xBAD, 0xBAD, 6, 6, 6, 0xBAD, 6, 0xBAD, 6]
    assert [pib(b) for t, b in got if t == 0xBAD] == [
        (1234, {2: b"curl"}),
        (1235, {2: b"curl-child"}),
        (4321, {2: b"nginx"}),
        (4321, {2: "caf\u00e9".encode()}),
        (4321, {2: b"nginx"}),
    ]
    epbs = [epb_options(b) for t, b in got if t == 6]
    sender = struct.pack("<II", 1234, 0)  # the sending socket's first holder, tid unknown
    assert [o.get(8) for o in epbs] == [sender, sender, sender, sender, None]
    # every comment carries its JSON in full (released Wireshark counts the custom blocks
    # as frames, so a "frame N" reference would point elsewhere there)
    for o, att in zip(epbs, ORDER, strict=True):
        text = o[1].decode()
        assert COMMENT_JSON_PREFIX in text and COMMENT_REF_PREFIX not in text
        back = attribution_from_comment(text)
        assert back is not None and back.match == att.match


def test_without_the_flag_nothing_changes(tmp_path):
    path = tmp_path / "plain.pcapng"
    write(path, ORDER, pib=False)
    got = blocks(path.read_bytes())
    assert [t for t, _ in got] == [0x0A0D0D0A, 1, 6, 6, 6, 6, 6]
    assert all(8 not in epb_options(b) for t, b in got if t == 6)
    assert COMMENT_REF_PREFIX.encode() in got[3][1]  # references, as ever


def test_released_tshark_reads_the_file_whole(tmp_path):
    """tshark 4.0 reads it without error: each custom block becomes a frame with no packet
    (and no conntui fields), every packet keeps its fields from the Lua plugin."""
    path = tmp_path / "pib.pcapng"
    write(path, ORDER, pib=True)
    fields = ["tcp.srcport", "conntui.sender.pid", "conntui.receiver.pid", "conntui.match", "conntui.error"]
    res = subprocess.run(
        [TSHARK, "-n", "-X", f"lua_script:{PLUGIN}", "-r", str(path), "-T", "fields", "-E", "separator=|"]
        + [arg for f in fields for arg in ("-e", f)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "rror" not in res.stderr and "cut short" not in res.stderr, res.stderr
    rows = [line.split("|") for line in res.stdout.splitlines()]
    assert len(rows) == 5 + len(ORDER)
    packets = [r for r in rows if r[0]]
    assert packets == [
        ["40000", "1234,1235", "4321", "established", ""],
        ["40000", "1234,1235", "4321", "established", ""],
        ["40000", "1234,1235", "", "none", ""],
        ["40000", "1234,1235", "4321", "established", ""],
        ["40000", "", "4321", "established", ""],
    ]
    assert all(r == ["", "", "", "", ""] for r in rows if not r[0])  # the custom blocks
    mime = subprocess.run(
        [
            TSHARK,
            "-r",
            str(path),
            "-X",
            "read_format:MIME Files Format",
            "-T",
            "fields",
            "-e",
            "pcapng.block.type",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert mime.returncode == 0, mime.stderr
    assert mime.stdout.split(",").count("0x00000bad") == 5


def test_conntuis_own_reader_skips_the_blocks(tmp_path):
    path = tmp_path / "pib.pcapng"
    write(path, ORDER, pib=True)
    frames = list(read_capture(path))
    assert len(frames) == len(ORDER)
    for f, att in zip(frames, ORDER, strict=True):
        back = attribution_from_comment(f.comment)
        assert back is not None and back.match == att.match and f.data == PKT


@pytest.mark.parametrize(
    "argv", [["--pcapng-pib"], ["--pcapng-pib", "-w", "x.pcap"], ["--pcapng-pib", "-r", "in.pcapng"]]
)
def test_the_flag_needs_a_pcapng_output(argv):
    with pytest.raises(UsageError) as e:
        parse_options(argv)
    assert str(e.value) == "--pcapng-pib writes pcapng blocks: give it -w FILE.pcapng (or -w -)"
    assert e.value.code == 2


def test_the_flag_is_one_line_from_the_command_line_and_off_by_default(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "conntui", "--pcapng-pib", "-r", str(tmp_path / "none.pcapng")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert parse_options(["-w", "x.pcapng"]).pib is False
    assert parse_options(["-w", "-", "--pcapng-pib"]).pib is True
