"""``conntui -r FILE --ladder FILTER``: the ladders of a saved session, printed.

The file is the frozen session written by conntui itself (pcapng with attributions), so
the lanes come back with the same pids and fds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conntui.export import open_writer

from .scenario import make_engine

ROOT = Path(__file__).resolve().parents[2]


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
