"""The Lua plugin (conntui/wireshark/conntui.lua) run by the real tshark on files written
by conntui's own writer with known attributions, and on damaged comments and files."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP

from conntui.capfile.formats import LINKTYPE_RAW
from conntui.capfile.writers import open_writer
from conntui.model import PACKET_HOST, Attribution, Container, Endpoint, Frame, Holder, Match, SocketEntry
from conntui.wireshark import PLUGIN_NAME, plugin_text

TSHARK = shutil.which("tshark") or "tshark"  # the Quick start installs it
REPO = Path(__file__).resolve().parent.parent.parent
PLUGIN = REPO / "conntui" / "wireshark" / PLUGIN_NAME
PKT = bytes(IP(src="127.0.0.1", dst="127.0.0.1") / TCP(sport=40000, dport=8080, flags="PA") / b"hi")

SERVER = SocketEntry(
    "tcp",
    4,
    "ESTABLISHED",
    Endpoint("127.0.0.1", 8080),
    Endpoint("127.0.0.1", 40000),
    inode=5,
    holders=(Holder(4321, 7, "nginx"),),
)
CLIENT = SocketEntry(
    "tcp",
    4,
    "ESTABLISHED",
    Endpoint("127.0.0.1", 40000),
    Endpoint("127.0.0.1", 8080),
    inode=6,
    holders=(Holder(1234, 3, "curl"), Holder(1235, 9, "curl-child")),
)
EST = Attribution(Match.ESTABLISHED, receiver=SERVER, sender=CLIENT, explain="the established socket")
NONE = Attribution(
    Match.NONE, receiver=None, sender=CLIENT, explain="nothing listens: the kernel answers RST"
)
ORDER = [EST, EST, NONE, EST, NONE, EST, EST]


def frame(i: int, comment: str = "") -> Frame:
    return Frame(1.0 + i, PKT, LINKTYPE_RAW, "lo", 1, PACKET_HOST, 0x0800, len(PKT), comment)


def write(path: Path, atts: list[Attribution | None], comments: list[str] | None = None) -> None:
    with open_writer(path) as w:
        for i, att in enumerate(atts):
            w.write(frame(i, (comments or [""] * len(atts))[i]), None, att)


def tshark(path: Path, *fields: str, extra: tuple[str, ...] = (), plugin: bool = True) -> list[list[str]]:
    """One row per displayed frame: the values of ``fields`` (repeated values joined by ',')."""
    args = [TSHARK, "-n", "-r", str(path), *extra, "-T", "fields", "-E", "separator=|"]
    if plugin:
        args[1:1] = ["-X", f"lua_script:{PLUGIN}"]
    for f in fields:
        args += ["-e", f]
    res = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=60)
    assert res.returncode == 0, res.stderr
    assert "Lua" not in res.stderr and "lua" not in res.stderr, res.stderr
    return [line.split("|") for line in res.stdout.splitlines()]


SIDES = ("conntui.sender.pid", "conntui.sender.fd", "conntui.receiver.pid", "conntui.receiver.fd")


@pytest.mark.parametrize("passes", [(), ("-2",)], ids=["one-pass", "two-pass"])
def test_fields_name_every_packets_pids_and_fds_including_reference_only_ones(tmp_path, passes):
    path = tmp_path / "known.pcapng"
    write(path, list(ORDER))
    rows = tshark(
        path, "frame.number", *SIDES, "conntui.match", "conntui.json_frame", "conntui.error", extra=passes
    )
    assert [r[0] for r in rows] == [str(n) for n in range(1, len(ORDER) + 1)]
    # frames 2, 4, 6, 7 carry only "conntui-json-ref: frame 1", frame 5 names frame 3
    assert [r[6] for r in rows] == ["", "1", "", "1", "3", "1", "1"]
    for r, att in zip(rows, ORDER, strict=True):
        assert r[1:3] == ["1234,1235", "3,9"]  # both holders of the client socket
        if att is EST:
            assert r[3:6] == ["4321", "7", "established"]
        else:
            assert r[3:6] == ["", "", "none"]
        assert r[7] == ""  # no error


@pytest.mark.parametrize("passes", [(), ("-2",)], ids=["one-pass", "two-pass"])
def test_the_issue_filter_selects_the_none_rows(tmp_path, passes):
    path = tmp_path / "known.pcapng"
    write(path, list(ORDER))
    rows = tshark(
        path,
        "frame.number",
        "conntui.sender.process",
        "conntui.receiver.process",
        extra=(*passes, "-Y", 'conntui.match == "none"'),
    )
    assert rows == [["3", "curl,curl-child", ""], ["5", "curl,curl-child", ""]]
    rows = tshark(
        path, "frame.number", extra=(*passes, "-Y", "conntui.receiver.pid == 4321 && conntui.sender.fd == 9")
    )
    assert [r[0] for r in rows] == ["1", "2", "4", "6", "7"]


def comment(att_json: dict[str, object], summary: str = "a[1] fd 2 → b[3] fd 4 (established)") -> str:
    return f"conntui: {summary}\nconntui-json: {json.dumps(att_json)}"


def test_kernel_verdict_containers_and_escaped_names_when_present(tmp_path):
    """``kernel.reason``, ``agrees`` and ``container`` (being added to the JSON) are read
    when present; JSON escapes (non-ASCII, surrogate pairs) decode to the same text."""
    sock = {
        "state": "ESTABLISHED",
        "local": "10.0.0.2:80",
        "holders": [
            {
                "pid": 77,
                "process": "caf\u00e9 \U0001f600",
                "fd": 5,
                "container": {"id": "ab12", "name": "web"},
            }
        ],
    }
    full = comment(
        {
            "receiver": sock,
            "sender": None,
            "match": "none",
            "explain": "x",
            "kernel": {"verdict": "dropped", "reason": "NO_SOCKET", "source": "skb:kfree_skb"},
            "agrees": False,
        }
    )
    other = comment(
        {
            "receiver": {**sock, "holders": [], "container": {"id": "cd34"}},
            "match": "time_wait",
            "agrees": True,
        }
    )
    path = tmp_path / "k.pcapng"
    write(path, [None, None, None], [full, other, comment({"match": "unknown"})])
    rows = tshark(
        path,
        "conntui.receiver.pid",
        "conntui.receiver.process",
        "conntui.receiver.container",
        "conntui.kernel.verdict",
        "conntui.kernel.reason",
        "conntui.agrees",
        "conntui.error",
    )
    assert rows[0] == ["77", "caf\u00e9 \U0001f600", "web", "dropped", "NO_SOCKET", "0", ""]
    assert rows[1] == ["", "", "cd34", "", "", "1", ""]
    assert rows[2] == ["", "", "", "", "", "", ""]  # absent: left empty, not an error


BAD = [
    # (comment, what the error says, pids and fds still shown "sender.pid|sender.fd|receiver.pid|receiver.fd")
    ("hello, a comment that is not conntui's", "", "|||"),
    (
        "conntui: a[1] fd 2 → b[3] fd 4 (established)\nconntui-json-ref: frame 1",
        "which this capture does not have",
        "1|2|3|4",
    ),
    (
        "conntui: a[1] fd 2 → b[3] fd 4 (established)\nconntui-json-ref: frame 9999",
        "does not come before",
        "1|2|3|4",
    ),
    ("conntui: a[1] fd 2 → b[3] fd 4 (established)\nconntui-json-ref: frame x", "names no frame", "1|2|3|4"),
    ('conntui: a[5] fd 6 → kernel (time_wait)\nconntui-json: {"receiver":{"inode"', "damaged", "5|6||"),
    ("conntui: - → b[3] fd 4 (listener)\nconntui-json: " + "[" * 5000, "nested too deep", "||3|4"),
    (
        "conntui: x → y (established)\nconntui-json: "
        '{"match":"established","receiver":{"holders":[{"pid":"7","fd":1e400}]}}',
        "bad pid or fd",
        "|||",
    ),
    (
        'conntui: a[1] fd 2 → b[3] fd 4 (none)\nconntui-json: {"match":"none","sender":[1,2]}',
        "sender is not an object",
        "|||",
    ),
    ("conntui: a[1] fd 2 → b[3] fd 4 (established)", "no attribution JSON", "1|2|3|4"),
    ('conntui: a[1] fd 2 → b[3] fd 4 (none)\nconntui-json: "just a string"', "not an object", "1|2|3|4"),
    (
        'conntui: \udcff\udcfe[8] fd 1 → -  (none)\nconntui-json: {"match":"none","explain":"\\ud800"}',
        "",
        "|||",
    ),
]


@pytest.mark.parametrize("passes", [(), ("-2",)], ids=["one-pass", "two-pass"])
def test_bad_comments_show_what_they_can_and_are_marked(tmp_path, passes):
    path = tmp_path / "bad.pcapng"
    write(path, [None] * len(BAD), [c for c, _, _ in BAD])
    rows = tshark(path, *SIDES, "conntui.error", "conntui.summary", extra=passes)
    assert len(rows) == len(BAD)
    for row, (text, error, shown) in zip(rows, BAD, strict=True):
        assert "|".join(row[:4]) == shown, (text[:80], row)
        if error:
            assert error in row[4], (text[:80], row)
        else:
            assert row[4] == "", (text[:80], row)
        assert bool(row[5]) == text.startswith("conntui: "), row  # the summary line, always
    expert = subprocess.run(
        [TSHARK, "-n", "-X", f"lua_script:{PLUGIN}", "-r", str(path), "-V", *passes],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=60,
    )
    assert expert.returncode == 0 and "Lua Error" not in expert.stdout
    assert expert.stdout.count("[Expert Info (Warning/Protocol): conntui: ") == 9  # one per damaged comment


def test_a_reference_to_a_frame_with_another_attribution_is_not_followed(tmp_path):
    """A file cut or merged so that frame N now holds another attribution: the reference's
    summary line differs from frame N's, so the plugin says so instead of lying."""
    path = tmp_path / "merged.pcapng"
    summary = "conntui: curl[1234] fd 3 (+1) → nginx[4321] fd 7 (established): the established socket"
    write(path, [NONE, None], ["", summary + "\nconntui-json-ref: frame 1"])
    rows = tshark(path, *SIDES, "conntui.match", "conntui.error")
    assert rows[1][:5] == ["1234", "3", "4321", "7", "established"]  # from the summary line
    assert "carries another attribution" in rows[1][5]


def test_a_truncated_file_gives_every_whole_packets_fields(tmp_path):
    path = tmp_path / "cut.pcapng"
    write(path, list(ORDER))
    data = path.read_bytes()
    path.write_bytes(data[:-30])  # the last packet's block is cut
    res = subprocess.run(
        [
            TSHARK,
            "-n",
            "-X",
            f"lua_script:{PLUGIN}",
            "-r",
            str(path),
            "-T",
            "fields",
            *[arg for f in SIDES for arg in ("-e", f)],
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "cut short" in res.stderr and "Lua" not in res.stderr
    rows = [line.split("\t") for line in res.stdout.splitlines()]
    assert len(rows) == len(ORDER) - 1
    assert rows[-1] == ["1234,1235", "3,9", "4321", "7"]  # frame 6: a reference, followed


def test_install_puts_the_plugin_where_tshark_loads_it(tmp_path):
    """``conntui wireshark install`` into a temporary HOME; tshark run with that HOME loads
    the plugin by itself (no -X); ``conntui wireshark plugin`` prints the same file."""
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home)}
    res = subprocess.run(
        [sys.executable, "-m", "conntui", "wireshark", "install", "--extcap-dir", str(tmp_path / "extcap")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    installed = home / ".local/lib/wireshark/plugins" / PLUGIN_NAME
    assert installed.read_text() == plugin_text() == PLUGIN.read_text()
    assert f"Lua plugin: {installed}" in res.stdout
    launcher = tmp_path / "extcap" / "conntui"
    assert os.access(launcher, os.X_OK) and "-m conntui.wireshark.extcap" in launcher.read_text()
    path = tmp_path / "known.pcapng"
    write(path, list(ORDER))
    out = subprocess.run(
        [
            TSHARK,
            "-n",
            "-r",
            str(path),
            "-Y",
            'conntui.match == "none"',
            "-T",
            "fields",
            "-e",
            "frame.number",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.stdout.split() == ["3", "5"], out.stderr
    printed = subprocess.run(
        [sys.executable, "-m", "conntui", "wireshark", "plugin"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert printed.returncode == 0 and printed.stdout == plugin_text()


@pytest.mark.parametrize("passes", [(), ("-2",)], ids=["one-pass", "two-pass"])
def test_references_survive_a_cut_file_by_their_summary_line(tmp_path, passes):
    """editcap drops frame 1 (the only JSON of the established flow): its references keep
    the summary line's pid and fd, marked; the 'none' flow's JSON moves from frame 3 to 2
    and its reference, which still says frame 3, is resolved by its summary line."""
    whole, cut = tmp_path / "whole.pcapng", tmp_path / "cut.pcapng"
    write(whole, list(ORDER))
    subprocess.run(["editcap", str(whole), str(cut), "1"], check=True, capture_output=True, timeout=60)
    rows = tshark(cut, *SIDES, "conntui.match", "conntui.error", extra=passes)
    assert [r[4] for r in rows] == [
        "established",
        "none",
        "established",
        "none",
        "established",
        "established",
    ]
    for r, att in zip(rows, ORDER[1:], strict=True):
        if att is EST:  # summary: "curl[1234] fd 3 (+1) → nginx[4321] fd 7": the first holder only
            assert r[:4] == ["1234", "3", "4321", "7"] and "from the summary line" in r[5], r
        else:
            assert r[:4] == ["1234,1235", "3,9", "", ""] and r[5] == "", r


def test_tshark_two_pass_read_filter_renumbers_frames_and_references_still_resolve(tmp_path):
    """``tshark -2 -R``: the frames kept are renumbered, so 'frame 3' names another frame
    in the second pass; the summary line finds the right JSON."""
    path = tmp_path / "known.pcapng"
    write(path, list(ORDER))
    rows = tshark(
        path, "frame.number", *SIDES, "conntui.error", extra=("-2", "-R", 'conntui.match == "none"')
    )
    assert rows == [["1", "1234,1235", "3,9", "", "", ""], ["2", "1234,1235", "3,9", "", "", ""]]


def test_uninstall_removes_both_files_and_a_bad_folder_is_one_line(tmp_path):
    lua, ext = tmp_path / "lua", tmp_path / "ext"
    base = [sys.executable, "-m", "conntui", "wireshark"]
    dirs = ["--lua-dir", str(lua), "--extcap-dir", str(ext)]
    assert (
        subprocess.run([*base, "install", *dirs], capture_output=True, cwd=REPO, timeout=60).returncode == 0
    )
    assert (lua / PLUGIN_NAME).exists() and (ext / "conntui").exists()
    res = subprocess.run([*base, "uninstall", *dirs], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 0 and not (lua / PLUGIN_NAME).exists() and not (ext / "conntui").exists()
    assert res.stdout.count("removed ") == 2
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    res = subprocess.run(
        [*base, "install", "--lua-dir", str(blocker / "sub"), "--extcap-dir", str(ext)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith(f"conntui wireshark: cannot write {blocker / 'sub' / PLUGIN_NAME}: ")
    assert len(res.stderr.splitlines()) == 1


def test_the_writers_container_shows_by_name_or_id(tmp_path):
    """conntui's own comments with a holder's container: the name, or the id where the name is
    unknown; a packet whose JSON is gone still gets pid and fd from the summary line, which
    now ends in ``(ctr NAME)``."""
    cid = "5f6dc9ff6ca2190b6be70dd62acb52e7cf7775e5fda71d7525b00b69da4624f4"
    named = Container(cid, "web", "podman")
    server = dataclasses.replace(SERVER, holders=(Holder(4321, 7, "nginx", named),))
    anon = dataclasses.replace(SERVER, holders=(Holder(4321, 8, "nginx", Container(cid)),))
    a = Attribution(Match.ESTABLISHED, receiver=server, sender=CLIENT, explain="the established socket")
    b = Attribution(Match.ESTABLISHED, receiver=anon, sender=CLIENT, explain="the established socket")
    path = tmp_path / "c.pcapng"
    write(path, [a, a, b])
    rows = tshark(path, "conntui.receiver.fd", "conntui.receiver.container", "conntui.sender.container")
    assert rows == [["7", "web", ""], ["7", "web", ""], ["8", cid, ""]]
    cut = tmp_path / "cut.pcapng"
    damaged = "conntui: curl[1234] fd 3 → nginx[4321] fd 7 (ctr web) (established)\nconntui-json: {"
    write(cut, [None], [damaged])
    (row,) = tshark(cut, *SIDES, "conntui.match")
    assert row == ["1234", "3", "4321", "7", "established"]


def block_spans(data: bytes) -> list[tuple[int, int, int]]:
    """(type, start, end) of each block of a little-endian pcapng file."""
    spans, pos = [], 0
    while pos < len(data):
        btype, total = struct.unpack_from("<II", data, pos)
        spans.append((btype, pos, pos + total))
        pos += total
    return spans


def test_a_stream_cut_anywhere_in_a_packet_keeps_the_whole_packets_fields(tmp_path):
    """``conntui -w - | head -c N | tshark -r -``: the stream ends inside a packet's block
    (its header, its data, its comment, its trailer). tshark says the input was cut short;
    the plugin gives every whole packet its pids and fds (references followed) and never
    errors on the cut one."""
    path = tmp_path / "known.pcapng"
    write(path, list(ORDER))
    data = path.read_bytes()
    epbs = [(start, end) for btype, start, end in block_spans(data) if btype == 6]
    assert len(epbs) == len(ORDER)
    receiver = {EST: ["4321", "7"], NONE: ["", ""]}
    want = [["1234,1235", "3,9", *receiver[att], ""] for att in ORDER]
    for k in (1, 2, 4):  # frame 2 (a reference), frame 3 (the 'none' JSON), frame 5 (its reference)
        start, end = epbs[k]
        comment_at = data.index(b"conntui: ", start)
        for cut in (start + 4, start + 40, comment_at + 12, end - 2):
            proc = subprocess.run(
                [TSHARK, "-n", "-X", f"lua_script:{PLUGIN}", "-r", "-", "-T", "fields"]
                + [arg for f in (*SIDES, "conntui.error") for arg in ("-e", f)],
                input=data[:cut],
                capture_output=True,
                timeout=60,
            )
            err = proc.stderr.decode(errors="replace")
            assert "cut short" in err and "Lua" not in err, (k, cut, err)
            rows = [line.split("\t") for line in proc.stdout.decode().splitlines()]
            assert rows == want[:k], (k, cut, rows)
