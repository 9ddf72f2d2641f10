"""Hostile text: strings any local user (or a capture file) controls never reach a terminal raw.

Process names (``comm``, 15 bytes, settable with ``prctl(PR_SET_NAME)`` or by writing
``/proc/self/comm``; ``argv[0]``, up to 128 KiB), interface names and explanations read back
from a capture file, and payload bytes: the headless text line escapes them
(``jsonout.safe_text``), JSON carries them exactly (as escapes), the pcapng comment's human
line is terminal-safe. ``tests/unit/test_jsonout.py`` covers ``safe_text`` itself; this file
follows the strings from where they enter (``/proc``, a file given to ``-r``) to what is
printed. The real-process version is ``tests/e2e/test_robustness.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conntui.capfile.comments import attribution_from_comment, comment_text
from conntui.capfile.reader import read_capture
from conntui.capfile.writers import open_writer
from conntui.cli import main
from conntui.jsonout import json_line, text_line
from conntui.model import Attribution, Endpoint, Frame, Holder, Match, Segment, SocketEntry
from conntui.sockets import ProcessNames

ESC = "\x1b"
# Each fits in comm's 15 bytes unless said otherwise.
HOSTILE_COMMS = [
    "\x1b[31m[red]x",  # SGR colour + Rich markup
    "\x1b]0;pwned\x07",  # OSC: set the window title
    "\x1b[2J\x1b[H",  # clear the screen, cursor home
    "[link=file:/]x",  # Rich link markup
    "\u202egnp.exe",  # right-to-left override (7 bytes in UTF-8)
    "a\nb\rc\bd\x7f",  # line breaks, backspace, DEL
    "\x9b31m\x90",  # C1 CSI and DCS as characters
    "\u200b\u2028\ufeff",  # zero width space, line separator, BOM
]
PAYLOAD = b"\x1b]0;pwned\x07\x1b[2J\x1b[31mHTTP/1.1 200 OK\r\n"


def terminal_safe(text: str) -> bool:
    """No character a terminal acts on: C0/C1 controls, DEL, bidi and invisible formatting."""
    return text.isprintable() and ESC not in text


def seg() -> Segment:
    base = Segment(1.7e9, "lo", "tcp", 4, "127.0.0.1", 40000, "127.0.0.1", 8080, "PA", len(PAYLOAD))
    return base._replace(payload_preview=PAYLOAD[:64])


def listener(*names: str) -> SocketEntry:
    holders = tuple(Holder(100 + i, 3 + i, n) for i, n in enumerate(names))
    return SocketEntry("tcp", 4, "LISTEN", Endpoint("127.0.0.1", 8080), None, inode=7, holders=holders)


def client(name: str) -> SocketEntry:
    return SocketEntry(
        "tcp",
        4,
        "ESTABLISHED",
        Endpoint("127.0.0.1", 40000),
        Endpoint("127.0.0.1", 8080),
        inode=8,
        holders=(Holder(99, 5, name),),
    )


def hostile_attribution(name: str) -> Attribution:
    return Attribution(
        Match.LISTENER,
        receiver=listener(name, name),
        sender=client(name),
        explain=f"SYN to a listener held by {name}[100] fd 3 \x1b[0m",
        sender_explain=f"sent by {name}",
    )


# --------------------------------------------------------------------------- from /proc


def fake_process(root: Path, pid: int, comm: bytes, argv: bytes, starttime: int = 100) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    fields = b" ".join([b"S"] + [b"0"] * 18 + [str(starttime).encode()] + [b"0"] * 30)
    (d / "stat").write_bytes(f"{pid} (".encode() + comm + b") " + fields + b"\n")
    (d / "cmdline").write_bytes(argv + b"\0")


def test_names_read_from_proc_are_escaped_in_text_and_exact_in_json(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    for pid, comm in enumerate(HOSTILE_COMMS, start=10):
        raw = comm.encode()
        assert len(raw) <= 15, comm  # what the kernel would let a process set
        fake_process(root, pid, raw, raw)
    names = ProcessNames(str(root))
    for pid, comm in enumerate(HOSTILE_COMMS, start=10):
        name = names.name(pid)
        assert name == comm  # read literally: no stripping, no interpretation
        att = hostile_attribution(name)
        line = text_line(seg(), att)
        assert terminal_safe(line), repr(line)
        row = json.loads(json_line(seg(), att))
        assert json_line(seg(), att).isascii()
        assert row["receiver"]["holders"][0]["process"] == comm
        assert row["sender"]["holders"][0]["process"] == comm


def test_undecodable_and_long_names_stay_one_safe_line(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    fake_process(root, 20, b"bad\xff\xfe\x1b[1m", b"bad")  # not UTF-8: shown as U+FFFD
    long_argv = b"/tmp/" + b"long-daemon-nam" + b"\x1b[5m" * 20_000  # argv[0] may be 128 KiB
    fake_process(root, 21, b"long-daemon-nam", long_argv)
    names = ProcessNames(str(root))
    bad = names.name(20)
    assert bad is not None and "\ufffd" in bad and ESC in bad
    long = names.name(21)
    assert long is not None and long.startswith("long-daemon-nam")
    for name in (bad, long):
        line = text_line(seg(), hostile_attribution(name))
        assert terminal_safe(line) and "\n" not in line


# --------------------------------------------------------------------------- capture files


def test_comment_human_line_is_safe_and_json_line_exact() -> None:
    for name in HOSTILE_COMMS:
        att = hostile_attribution(name)
        human, json_part = comment_text(att).split("\n")
        assert terminal_safe(human), repr(human)
        assert json_part.isascii() and json_part.isprintable()
        assert attribution_from_comment(comment_text(att)) == att


def write_hostile_capture(path: Path, name: str) -> None:
    """A pcapng as an attacker would craft it for ``-r``: a hostile interface name (IDB), a
    hostile attribution comment and an escape-laden payload."""
    ip = (
        bytes.fromhex("4500")
        + (40 + len(PAYLOAD)).to_bytes(2, "big")
        + bytes.fromhex("00010000400600007f0000017f000001")
    )
    tcp = bytes.fromhex("9c401f9000000001000000005018020000000000")
    frame = Frame(1.7e9, ip + tcp + PAYLOAD, 101, "lo\x1b]0;if\x07", 1, 0, 0x0800)
    with open_writer(path, "pcapng") as w:
        w.write(frame, None, hostile_attribution(name))


@pytest.mark.parametrize("name", HOSTILE_COMMS)
def test_reading_a_hostile_file_prints_safe_text_and_exact_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = tmp_path / "hostile.pcapng"
    write_hostile_capture(path, name)
    assert main(["-r", str(path), "--headless"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 1, out
    assert terminal_safe(lines[0]), repr(lines[0])
    assert "HTTP/1.1" not in out  # the payload is never printed by the headless line
    assert terminal_safe(err.replace("\n", ""))

    assert main(["-r", str(path), "--headless", "--json"]) == 0
    out, _ = capsys.readouterr()
    assert out.isascii() and out.count("\n") == 1
    row = json.loads(out)
    assert row["iface"] == "lo\x1b]0;if\x07"
    assert row["receiver"]["holders"][0]["process"] == name
    assert row["explain"] == hostile_attribution(name).explain


def test_re_exporting_a_hostile_file_keeps_the_comment_safe(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.pcapng", tmp_path / "out.pcapng"
    write_hostile_capture(src, HOSTILE_COMMS[1])
    assert main(["-r", str(src), "-w", str(dst), "-q"]) == 0
    (frame,) = list(read_capture(dst))
    human = frame.comment.split("\n")[0]
    assert human.startswith("conntui: ") and terminal_safe(human)
    assert attribution_from_comment(frame.comment) == hostile_attribution(HOSTILE_COMMS[1])
