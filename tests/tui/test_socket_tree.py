"""The socket view relabels only the lines on screen; the others catch up when shown."""

from __future__ import annotations

from textual.app import App, ComposeResult

from conntui.model import Holder
from conntui.tui.feed import Activity, SocketActivity, socket_key
from conntui.tui.widgets.socket_tree import SocketTree

from .scenario import T0, ep, sock

SOCKETS = [
    sock(
        "tcp",
        "ESTABLISHED",
        ep("127.0.0.1", 40000 + i),
        ep("127.0.0.1", 9000),
        (Holder(4242, 3 + i, "client"),),
        100 + i,
    )
    for i in range(40)
]


class TreeApp(App[None]):
    CSS = "SocketTree { height: 8; }"

    def compose(self) -> ComposeResult:
        yield SocketTree()


def busy(activity: SocketActivity, index: int, segments: int) -> None:
    s = SOCKETS[index]
    activity.by_key[socket_key(s)] = Activity(segments, 10 * segments, T0, {int(T0): segments})
    activity.newest_ts = T0


def label_of(tree: SocketTree, index: int) -> str:
    for node, s in tree._socket_nodes.values():
        if s is SOCKETS[index]:
            return str(node.label)
    raise AssertionError("no node")


async def test_labels_off_screen_are_brought_up_to_date_when_they_come_into_view() -> None:
    app = TreeApp()
    async with app.run_test(size=(100, 12)) as pilot:
        tree = app.query_one(SocketTree)
        activity = SocketActivity()
        tree.show(SOCKETS, None, activity, T0)
        await pilot.pause()
        assert "seg" not in label_of(tree, 1) and "seg" not in label_of(tree, 39)
        # traffic on a socket on screen and on one far below it
        busy(activity, 1, 5)
        busy(activity, 39, 7)
        tree.show(SOCKETS, None, activity, T0 + 0.5)
        await pilot.pause()
        assert "5 seg" in label_of(tree, 1)  # on screen: at once
        tree.scroll_end(animate=False, immediate=True)
        await pilot.pause()
        assert "7 seg" in label_of(tree, 39)  # scrolled into view: caught up
        lines = app.screen._compositor.render_strips()
        assert any("7 seg" in line.text for line in lines)
