"""Every line on screen reads as separate fields, and nothing is cut without an ellipsis.

Two checks over the frozen session at 40x12, 80x24, 160x48 and 240x70: ``joined`` looks
for two fields run together (``19:46:40.000000lo``, ``:20240.0.0.0:2024``,
``kernelbacklog``, ``[5151]fd``); the edge check looks at the last cell of each line of
each pane's text area, which must be blank or ``…`` (a line reaching the edge was cut, or
could be). Both run on the live screen of a pilot; ``joined`` also on the committed SVG
snapshots of those sizes (``test_snapshots.py``), as a reader sees them.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from conntui.lab.scenarios.accept_queue import NARRATIVE
from conntui.tui.app import ConntuiApp
from conntui.tui.row_text import SHAPES, WHO_MIN, Widths, fit, row_text
from conntui.tui.widgets.detail_pane import DetailPane
from conntui.tui.widgets.keys_footer import KeysFooter
from conntui.tui.widgets.lab_note import LabNote
from conntui.tui.widgets.segment_list import SegmentList
from conntui.tui.widgets.socket_tree import SocketTree
from conntui.tui.widgets.status_bar import StatusBar

from .conftest import make_app
from .scenario import make_engine

SIZES = [(40, 12), (80, 24), (160, 48), (240, 70)]
SNAPSHOTS = Path(__file__).parent / "__snapshots__" / "test_snapshots"

# identifiers that must stand alone (a letter right before or after one: two fields joined)
MATCHES = ["listener", "accept_queue", "syn_recv", "time_wait", "udp_connected", "udp_unconnected"]
MATCHES += ["not_local", "established", "estab", "accept_q", "udp_conn", "udp_unconn"]
FIELDS = [*MATCHES, "LISTEN", "ESTABLISHED", "TIME_WAIT", "UNCONN", "SYN_RECV", "CLOSE_WAIT", "kernel"]
WORDS = set(FIELDS) | {"listeners", "kernels", "establishes", "establishing", "LISTENING"}
HOSTILE_SHOWN = re.compile(r"\[bold red\]evil\[/\][^\[]*")  # the scenario's hostile process name


def joined(line: str) -> list[str]:
    """The places in ``line`` where two fields run together."""
    line = HOSTILE_SHOWN.sub("NAME", line)  # its brackets are the name's own, shown literally
    bad: list[str] = []
    for m in re.finditer(r"\d\d:\d\d:\d\d(?:\.\d{1,6})?", line):
        before, after = line[m.start() - 1 : m.start()], line[m.end() : m.end() + 1]
        if (before and before not in " │(") or (after and after not in " │…)"):
            bad.append(line[max(0, m.start() - 3) : m.end() + 3])
    for m in re.finditer(r"(?<![\d.])(\d+)\.(\d+)\.(\d+)\.(\d+)(?::(\d+))?", line):
        octets = [int(g) for g in m.groups()[:4]]
        port = int(m.group(5)) if m.group(5) else 0
        after = line[m.end() : m.end() + 1]
        if max(octets) > 255 or port > 65535 or after.isalnum():
            bad.append(m.group(0))
    for m in re.finditer(r"[A-Za-z_]+", line):
        token = m.group(0)
        if token in WORDS:
            continue
        if any(token.startswith(f) or token.endswith(f) for f in FIELDS):
            bad.append(token)
    bad += re.findall(r"\[\d+\][A-Za-z0-9]\w*", line)  # "[5151]fd"
    bad += re.findall(r"\b\d+[A-Za-z]{3,}\b", line)  # "128accept", "5ESTABLISHED"
    return bad


def test_joined_finds_what_the_issue_saw() -> None:
    for seen in (
        "01:09:24.914477lo  in",
        "udp_unconnecteddemo-udp-client",
        "▁ :20240.0.0.0:2024",
        "kernelbacklog 128",
        "LISTENtcp4 0.0.0.0:80",
        "ESTABLISHEDudp4",
        "curl[5151]fd 5",
        "accept queue 128accept",
    ):
        assert joined(seen), seen
    ok = "19:46:40.000000 lo    in  tcp   127.0.0.1:51000 → 127.0.0.1:8080  S  0 listener  curl[5151] fd 5"
    assert joined(ok) == []


def screen_lines(app: ConntuiApp) -> list[str]:
    return ["".join(seg.text for seg in strip) for strip in app.screen._compositor.render_strips()]


def cut_at_edge(app: ConntuiApp) -> list[str]:
    """Lines of a pane whose last cell is neither blank nor ``…``."""
    lines = screen_lines(app)
    bad = []
    for kind in (LabNote, SegmentList, SocketTree, DetailPane, StatusBar, KeysFooter):
        for widget in app.screen.query(kind):
            if not widget.display or not widget.region:
                continue
            region = widget.scrollable_content_region
            for y in range(region.y, region.bottom):
                row = lines[y]
                last = row[region.right - 1 : region.right]
                if last not in (" ", "…", ""):
                    bad.append(f"{type(widget).__name__}: {row[region.x : region.right]!r}")
    return bad


async def settle(pilot) -> None:  # type: ignore[no-untyped-def]
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("note", [False, True], ids=["", "lab"])
async def test_no_field_runs_into_another_and_nothing_is_cut_silently(
    size: tuple[int, int], note: bool
) -> None:
    app = make_app(note=NARRATIVE) if note else make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        for keys in ((), ("tab",), ("tab",), ("n",), ("escape", "home")):
            for key in keys:
                await pilot.press(key)
            await settle(pilot)
            lines = screen_lines(app)
            assert [(line, joined(line)) for line in lines if joined(line)] == [], keys
            assert cut_at_edge(app) == [], (keys, "\n".join(lines))


def svg_lines(path: Path) -> list[str]:
    """The text of an SVG screenshot Textual wrote, one string per terminal line."""
    svg = path.read_text(encoding="utf-8")
    cells: dict[int, dict[int, str]] = {}
    pattern = (
        r'<text class="[^"]*" x="([\d.]+)" y="[\d.]+" textLength="[\d.]+" '
        r'clip-path="url\(#terminal-line-(\d+)\)">([^<]*)</text>'
    )
    for x, line, text in re.findall(pattern, svg):
        col = round(float(x) / 12.2)
        row = cells.setdefault(int(line), {})
        for i, ch in enumerate(html.unescape(text).replace("\xa0", " ")):
            row[col + i] = ch
    return [
        "".join(row.get(i, " ") for i in range(max(row, default=-1) + 1)) for _, row in sorted(cells.items())
    ]


@pytest.mark.parametrize(
    "name",
    [
        "test_tiny_40x12",
        "test_narrow_80x24",
        "test_narrow_80x24_sockets",
        "test_main_screen",
        "test_wide_240x70",
    ],
)
def test_the_snapshots_show_no_field_joined_to_another(name: str) -> None:
    lines = svg_lines(SNAPSHOTS / f"{name}.svg")
    assert len(lines) > 10
    assert any("sender → receiver" in line for line in lines)
    assert [(line, joined(line)) for line in lines if joined(line)] == []


def test_sender_receiver_is_the_last_column_to_go() -> None:
    """Narrower and narrower: the other columns go first; sender → receiver is cut only
    once nothing else is left, and below WHO_MIN the header says so."""
    engine = make_engine()
    recs = list(engine.session.window())
    widths = Widths()
    for rec in recs:
        widths = widths.grow(rec)
    curl = next(r for r in recs if r.attribution.sender and r.attribution.sender.holders[0].process == "curl")
    seen_shapes = set()
    for width in range(240, 10, -1):
        layout = fit(width, widths)
        seen_shapes.add(layout.shape)
        line = row_text(curl, layout).plain
        assert len(line) <= width - 1, (width, line)
        if layout.who < widths.who:
            assert layout.shape == SHAPES[-1], (width, layout)  # nothing else left to drop
        if width >= 40:
            assert "curl" in line and "fd 5" in line, (width, line)
        assert bool(layout.note) == (layout.who < WHO_MIN), (width, layout)
        if layout.note:
            assert "too narrow" in layout.note and len(layout.note) <= width - 1
    assert seen_shapes == set(SHAPES)


async def test_resized_while_drawing_every_size_still_fits() -> None:
    """A terminal dragged through sizes (some tiny) between frames, with the lab note and
    the filter line open: no error, and at each size it settles on, nothing cut silently."""
    app = make_app(note=NARRATIVE)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"80")
        for size in [(40, 12), (240, 70), (12, 5), (80, 24), (121, 31), (119, 29), (30, 8), (1, 1)]:
            await pilot.resize_terminal(*size)  # no pause: the next size comes mid-layout
        await pilot.press("escape")
        for size in SIZES:
            await pilot.resize_terminal(*size)
            await settle(pilot)
            lines = screen_lines(app)
            assert [(line, joined(line)) for line in lines if joined(line)] == [], size
            assert cut_at_edge(app) == [], (size, "\n".join(lines))
        assert app.is_running
