"""What the panes say: lengths that read as lengths, wrapped lines that keep their
indent, an empty socket view that says why, a TIME_WAIT said once, the lab's note."""

from __future__ import annotations

from textual.app import App, ComposeResult

from conntui.filters import parse_display_filter
from conntui.lab.scenarios.accept_queue import NARRATIVE
from conntui.tui.detail_text import detail_text
from conntui.tui.feed import SocketActivity
from conntui.tui.widgets.socket_tree import SocketTree

from .conftest import make_app
from .scenario import T0, make_engine, socket_table
from .test_layout import screen_lines, settle


def test_the_frame_length_reads_as_a_length() -> None:
    rec = next(iter(make_engine().session.window()))
    text = detail_text(rec, None).plain
    assert f"len {rec.segment.payload_len} ({rec.segment.wire_len}-byte frame)" in text.splitlines()[1]
    assert "(frame " not in text  # "frame N" is a frame's number in the README


async def test_a_wrapped_why_keeps_its_indent() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        pane = app.main.detail_pane
        lines = [strip.text.rstrip() for strip in pane._lines]
        why = next(i for i, line in enumerate(lines) if line.lstrip().startswith("why:"))
        assert len(lines[why]) > 60  # long enough to wrap at this width
        start = lines[why].index("why:") + len("why: ")
        assert lines[why + 1].startswith(" " * start) and lines[why + 1][start] != " ", lines[why : why + 2]


class TreeApp(App[None]):
    def compose(self) -> ComposeResult:
        yield SocketTree()


def tree_text(tree: SocketTree) -> list[str]:
    out = []
    stack = list(tree.root.children)
    while stack:
        node = stack.pop(0)
        out.append(str(node.label))
        stack[:0] = list(node.children)
    return out


async def test_an_empty_socket_view_says_why() -> None:
    app = TreeApp()
    async with app.run_test(size=(100, 12)) as pilot:
        tree = app.query_one(SocketTree)
        tree.show([], None, SocketActivity(), T0)
        await pilot.pause()
        assert tree_text(tree) == ["no sockets in the table yet"]
        tree.show(socket_table().entries, parse_display_filter("1"), SocketActivity(), T0 + 2)
        await pilot.pause()
        assert tree_text(tree) == ["no sockets match the filter"]


async def test_a_time_wait_remain_is_named_once() -> None:
    app = TreeApp()
    async with app.run_test(size=(160, 30)) as pilot:
        tree = app.query_one(SocketTree)
        tree.show(socket_table().entries, None, SocketActivity(), T0)
        await pilot.pause()
        line = next(label for label in tree_text(tree) if ":50990" in label)
        assert line.lower().count("time") == 1 and "kernel" not in line, line
        queued = next(label for label in tree_text(tree) if ":51002" in label and "8080 ←" in label)
        assert "accept queue" in queued and "kernel" not in queued, queued


async def test_the_lab_note_stays_on_screen() -> None:
    app = make_app(note=NARRATIVE)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        text = "\n".join(screen_lines(app))
        assert "accept-queue: connected, but nobody has called accept() yet" in text
        assert "Watch for:" in text and "ListenOverflows / ListenDrops" in text
        assert "Segments" in text
    app = make_app(note=NARRATIVE)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = "\n".join(screen_lines(app))
        assert "accept-queue: connected" in text and "n: what to watch" in text
        assert "Watch for:" not in text  # one line: the list keeps its room
        await pilot.press("n")
        await settle(pilot)
        text = "\n".join(screen_lines(app))
        assert "Watch for:" in text and "the early data" in text
        await pilot.press("n")
        await settle(pilot)
        assert "Watch for:" not in "\n".join(screen_lines(app))


async def test_no_note_no_watch_key() -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        assert app.main.lab_note is None
        assert not any("Watch" in line for line in screen_lines(app))


async def test_a_hostile_note_is_shown_literally() -> None:
    note = "[bold red]lab[/] \x1b[2J\u202etitle\nWatch for:\n  * [link=x]y[/link]\x07"
    app = make_app(note=note)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        text = "\n".join(screen_lines(app))
        assert "[bold red]lab[/] \\x1b[2J" in text and "[link=x]y[/link]\\x07" in text
        assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
