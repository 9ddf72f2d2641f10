"""``conntui -r FILE --ladder FILTER``: the ladders of a saved session, printed.

The file is the frozen session written by conntui itself (pcapng with attributions), so
the lanes come back with the same pids and fds."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from conntui.capfile.writers import open_writer
from conntui.tui.ladder import MAX_ARROWS, MAX_SVG_ARROWS

from .scenario import make_engine

ROOT = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"


def saved_session(path: Path) -> Path:
    writer = open_writer(str(path))
    try:
        for rec in make_engine().session.window():
            writer.write(rec.frame, rec.segment, rec.attribution)
    finally:
        writer.close()
    return path


def conntui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conntui", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_ladder_of_a_port_from_a_saved_session(tmp_path: Path) -> None:
    f = saved_session(tmp_path / "s.pcapng")
    done = conntui("-r", str(f), "--ladder", "51000")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "tcp 127.0.0.1:51000 ⇄ 127.0.0.1:8080"
    assert "curl[5151]" in lines[1] and lines[1].count("pyserver[4242]") == 2
    assert "fd 5" in lines[2] and "fd 3" in lines[2] and "fd 4" in lines[2]
    assert lines[3].split() == ["connect()", "listen()", "accept()"]
    arrows = [line for line in lines if line.startswith("19:") or line[:2].isdigit()]
    assert len(arrows) == 9 and arrows[0].endswith("listener") and " S 0 " in arrows[0]
    assert "\x1b" not in done.stdout


def test_ladder_of_every_flow_a_filter_keeps(tmp_path: Path) -> None:
    f = saved_session(tmp_path / "s.pcapng")
    done = conntui("-r", str(f), "--ladder", "8080")
    titles = [line for line in done.stdout.splitlines() if " ⇄ " in line]
    assert titles == [
        "tcp 127.0.0.1:51000 ⇄ 127.0.0.1:8080",
        "tcp 127.0.0.1:51002 ⇄ 127.0.0.1:8080",
        "tcp 127.0.0.1:50990 ⇄ 127.0.0.1:8080",
    ]
    hostile = conntui("-r", str(f), "--ladder", "5353")
    assert "[bold red]evil[/]\\x1b" in hostile.stdout and "\x1b" not in hostile.stdout


def test_ladder_bad_input_is_one_line(tmp_path: Path) -> None:
    f = saved_session(tmp_path / "s.pcapng")
    for args, code, needle in (
        (["--ladder", "8080"], 2, "-r FILE"),
        (["-r", str(f), "--ladder", "port:x"], 2, "port"),
        (["-r", str(f), "--ladder", "4444"], 1, "no segment"),
    ):
        done = conntui(*args)
        err = done.stderr.strip().splitlines()
        assert done.returncode == code and len(err) == 1 and needle in err[0], (args, done.stderr)


def test_ladder_svg_draws_what_the_text_prints(tmp_path: Path) -> None:
    f = saved_session(tmp_path / "s.pcapng")
    out = tmp_path / "l.svg"
    done = conntui("-r", str(f), "--ladder", "8080", "--ladder-svg", str(out))
    assert done.returncode == 0, done.stderr
    root = ET.fromstring(out.read_text())
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    titles = [t for t in texts if " ⇄ " in t]
    assert titles == [line for line in done.stdout.splitlines() if " ⇄ " in line] and len(titles) == 3
    assert {"curl[5151]", "pyserver[4242]", "fd 5", "fd 3", "fd 4", "accept queue", "TIME_WAIT"} <= set(texts)
    # one arrow a segment: 9 + 1 + 1 (the rails are lines too, one a lane)
    assert len(list(root.iter(f"{SVG}line"))) == 11 + 3 + 2 + 2
    # never over an existing file unless --overwrite
    again = conntui("-r", str(f), "--ladder", "51000", "--ladder-svg", str(out))
    assert again.returncode == 1 and again.stderr.strip().endswith("exists (--overwrite replaces it)")
    assert len(titles) == 3 and out.read_text().count(" ⇄ ") == 3
    forced = conntui("-r", str(f), "--ladder", "51000", "--ladder-svg", str(out), "--overwrite")
    assert forced.returncode == 0 and out.read_text().count(" ⇄ ") == 1


def test_ladder_svg_escapes_a_hostile_name(tmp_path: Path) -> None:
    f = saved_session(tmp_path / "s.pcapng")
    out = tmp_path / "h.svg"
    done = conntui("-r", str(f), "--ladder", "5353", "--ladder-svg", str(out))
    assert done.returncode == 0, done.stderr
    svg = out.read_text()
    texts = ["".join(t.itertext()) for t in ET.fromstring(svg).iter(f"{SVG}text")]
    assert "[bold red]evil[/]\\x1b…" in texts and "\x1b" not in svg


def test_a_long_flow_from_the_cli_is_bounded_and_says_so(tmp_path: Path) -> None:
    """12,000 segments of one connection: the ladder keeps the last MAX_ARROWS, says how
    many it leaves out, in the text and in the SVG (fewer there)."""
    records = list(make_engine().session.window())
    data = next(r for r in records if r.segment.sport == 51000 and r.segment.payload_len)
    path = tmp_path / "long.pcapng"
    writer = open_writer(str(path))
    try:
        for i in range(12_000):
            seg = data.segment._replace(ts=data.segment.ts + i * 1e-4)
            writer.write(data.frame._replace(ts=seg.ts), seg, data.attribution)
    finally:
        writer.close()
    out = tmp_path / "long.svg"
    done = conntui("-r", str(path), "--ladder", "51000", "--ladder-svg", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    left_out = 12_000 - MAX_ARROWS
    assert (
        lines[1]
        == f"(the first {left_out:,} segments of this flow are left out; the last {MAX_ARROWS:,} follow)"
    )
    assert sum(1 for line in lines if "─" in line) == MAX_ARROWS
    svg = out.read_text()
    assert f"the first {12_000 - MAX_SVG_ARROWS:,} segments of this flow are left out" in svg


def test_ladder_svg_needs_ladder_and_a_writable_place(tmp_path: Path) -> None:
    f = saved_session(tmp_path / "s.pcapng")
    for args, code, needle in (
        (["-r", str(f), "--ladder-svg", str(tmp_path / "x.svg")], 2, "give it --ladder"),
        (
            ["-r", str(f), "--ladder", "8080", "--ladder-svg", str(tmp_path / "no" / "x.svg")],
            1,
            "cannot write",
        ),
    ):
        done = conntui(*args)
        err = done.stderr.strip().splitlines()
        assert done.returncode == code and len(err) == 1 and needle in err[0], (args, done.stderr)
