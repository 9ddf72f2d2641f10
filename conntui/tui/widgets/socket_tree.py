"""The socket view: listeners with their connections, clients and UDP sockets by process.

A ``Tree`` refreshed about once a second. Its shape is rebuilt only when the set of
sockets changes; otherwise only labels change (counters, sparklines, the light-up of a
socket a segment was just routed to), and only on the lines on screen: the others get
theirs when they are scrolled or unfolded into view. Bounded by ``sockview.build_view``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Tree
from textual.widgets.tree import NodeID, TreeNode

from ...filters import DisplayFilter
from ...model import SocketEntry
from ..feed import Activity, SocketActivity, socket_key
from ..sockview import (
    SECTION_LISTEN,
    SECTION_TCP,
    SECTION_TITLES,
    SECTION_UDP,
    NetnsGroup,
    SocketGroup,
    SocketView,
    build_view,
    child_kind,
)
from ..text import count, endpoint, holder_text, safe, size

LIT_FOR = 1.5  # seconds a socket stays lit after a segment was routed to it
LIT = Style(bgcolor="#204a20")
DIM = Style(dim=True)
KERNEL = Style(color="bright_black", italic=True)
SPARK = " ▁▂▃▄▅▆▇█"
SPARK_WIDTH = 8

NodeData = tuple[str, object]  # ("netns" | "section" | "group" | "socket" | "more", key)


QUEUE_WIDTH = 12


def queue_sparkline(series: list[int], capacity: int) -> str:
    """Accept-queue length over the last seconds, full height = the queue's capacity."""
    cap = max(1, capacity)
    return "".join(SPARK[min(8, round(v * 8 / cap))] if v else SPARK[0] for v in series)


def sparkline(series: list[int]) -> str:
    top = max(series) if series else 0
    if not top:
        return SPARK[0] * len(series)
    return "".join(SPARK[0] if v == 0 else SPARK[max(1, round(v * 8 / top))] for v in series)


def _addr(sock: SocketEntry) -> str:
    return endpoint(sock.local.addr, sock.local.port)


def _holders(sock: SocketEntry) -> Text:
    if not sock.holders:
        if sock.former_holders:
            return Text("kernel (was " + holder_text(sock.former_holders[0]) + ")", style=KERNEL)
        return Text("kernel", style=KERNEL)
    t = Text(holder_text(sock.holders[0]))
    for h in sock.holders[1:]:
        t.append(", " + holder_text(h), style=DIM)
    return t


class SocketTree(Tree[NodeData]):
    """See the module docstring. Call ``show(entries, filter, activity, now)``."""

    DEFAULT_CSS = """
    SocketTree { background: $surface; overflow-x: hidden; }
    """

    # space pauses everywhere (a Tree would fold a node with it; enter still does)
    BINDINGS = [Binding("space", "app.toggle_pause", "Pause")]

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(Text("sockets"), id=id, classes=classes)
        self.show_root = False
        self.guide_depth = 2
        self._signature: tuple[object, ...] | None = None
        self._group_nodes: dict[str, TreeNode[NodeData]] = {}
        self._socket_nodes: dict[tuple[str, object], tuple[TreeNode[NodeData], SocketEntry]] = {}
        self._section_nodes: dict[str, TreeNode[NodeData]] = {}
        self._collapsed: set[str] = set()
        self._expanded: set[str] = set()  # groups collapsed by default that the user opened
        self.view: SocketView | None = None
        # accept-queue length of each listener (by cookie), one sample a second
        self._queue_hist: dict[int, deque[int]] = {}
        self._queue_sampled = 0.0
        # what each group or socket line shows, and the show() its label is from
        self._label_of: dict[NodeID, tuple[SocketGroup, SocketEntry | None]] = {}
        self._labelled: dict[NodeID, int] = {}
        self._shown = 0  # show() calls so far
        self._activity = SocketActivity()
        self._now = 0.0
        self._room = -1  # the width labels were last cut for

    # -- labels ------------------------------------------------------------------------

    def _spark(self, act: Activity | None, activity: SocketActivity) -> Text:
        """A fixed-width column: segments per second over the last seconds."""
        if act is None or not act.segments:
            return Text(" " * (SPARK_WIDTH + 1))
        series = act.series(int(activity.newest_ts))[-SPARK_WIDTH:]
        return Text(sparkline(series) + " ", style=Style(color="cyan"))

    def _totals(self, act: Activity | None) -> Text:
        if act is None or not act.segments:
            return Text("")
        return Text(f"  {count(act.segments)} seg {size(act.bytes)}", style=DIM)

    def _lit(self, label: Text, act: Activity | None, now: float) -> Text:
        if act is not None and act.segments and now - act.last_hit < LIT_FOR:
            label.stylize(LIT)
        return label

    def _group_label(self, g: SocketGroup, activity: SocketActivity, now: float) -> Text:
        if g.listener is not None:
            lst = g.listener
            act = activity.get(lst)
            t = self._spark(act, activity)
            t.append(f":{lst.local.port}", style=Style(bold=True, color="cyan"))
            t.append(f" {_addr(lst)}  ")
            t.append_text(_holders(lst))
            t.append(f"  accept queue {lst.rx_queue} (backlog {lst.tx_queue})", style=DIM)
            hist = self._queue_hist.get(lst.cookie)
            if hist and any(hist):
                t.append(" " + queue_sparkline(list(hist), lst.tx_queue + 1), style=Style(color="yellow"))
            if lst.tx_queue and lst.rx_queue > lst.tx_queue:  # sk_acceptq_is_full: backlog + 1 fit
                t.append(" FULL", style=Style(color="red", bold=True))
            if g.rows:
                t.append(f"  {len(g.rows) + g.hidden} conn", style=DIM)
            t.append_text(self._totals(act))
            if g.dimmed:
                t.stylize(DIM)
            return self._lit(t, act, now)
        n = len(g.rows) + g.hidden
        noun = "socket" if n == 1 else "sockets"
        if g.pid is None:
            return Text.assemble(("kernel", KERNEL), (f"  {n} {noun} no process holds", DIM))
        return Text.assemble((safe(g.process), Style(bold=True)), (f"[{g.pid}]", DIM), (f"  {n} {noun}", DIM))

    def _socket_label(self, g: SocketGroup, s: SocketEntry, activity: SocketActivity, now: float) -> Text:
        act = activity.get(s)
        t = self._spark(act, activity)
        r = s.remote
        if g.listener is not None:
            t.append(_addr(s))
            t.append(" ← ", style=DIM)
            t.append(endpoint(r.addr, r.port) if r else "*")
            # who holds it, or why nobody does (unless the state says it: TIME_WAIT)
            kind = child_kind(s)
            if kind == "in accept queue":
                t.append("  in accept queue (no fd yet)", style=Style(color="yellow"))
            elif s.holders or kind == "kernel":
                t.append("  ")
                t.append_text(_holders(s))
        else:
            t.append(_addr(s))
            if r is not None and r.port:
                t.append(" → ", style=DIM)
                t.append(endpoint(r.addr, r.port))
            if g.pid is None:
                t.append("  ")
                t.append_text(_holders(s))
            else:
                t.append("  " + ", ".join(f"fd {h.fd}" for h in s.holders if h.pid == g.pid))
                others = [h for h in s.holders if h.pid != g.pid]
                if others:
                    t.append("  also " + ", ".join(holder_text(h) for h in others), style=DIM)
        t.append(f"  {s.state}", style=DIM)
        if s.state not in ("LISTEN", "UNCONN") and (s.rx_queue or s.tx_queue):
            t.append(f"  rx {s.rx_queue} tx {s.tx_queue}", style=DIM)
        t.append_text(self._totals(act))
        return self._lit(t, act, now)

    # -- updates -----------------------------------------------------------------------

    def show(
        self,
        entries: Iterable[SocketEntry],
        flt: DisplayFilter | None,
        activity: SocketActivity,
        now: float,
        *,
        primary_netns: int = 0,
        netns_notes: Mapping[int, str] | None = None,
    ) -> None:
        """Show ``entries`` (of every namespace read; ``primary_netns`` is conntui's own)."""
        view = build_view(entries, flt, primary_netns=primary_netns, netns_notes=netns_notes)
        self.view = view
        if now - self._queue_sampled >= 1.0:
            self._queue_sampled = now
            seen = set()
            for g in view.groups:
                if g.listener is not None:
                    seen.add(g.listener.cookie)
                    hist = self._queue_hist.setdefault(g.listener.cookie, deque(maxlen=QUEUE_WIDTH))
                    hist.append(g.listener.rx_queue)
            for cookie in [c for c in self._queue_hist if c not in seen]:
                del self._queue_hist[cookie]
        self._shown += 1
        self._activity = activity
        self._now = now
        sig = (*view.signature(), not view.groups and bool(flt))  # (what an empty view says)
        if sig != self._signature:
            self._rebuild(view, activity, now, flt)
            self._signature = sig
            return
        # the same sockets (their counters, queues and holders may differ): new labels
        # for the lines on screen now, for the others when they come into view
        label_of = self._label_of
        for g in view.groups:
            node = self._group_nodes.get(g.key)
            if node is not None:
                label_of[node.id] = (g, None)
            for s in g.rows:
                item = self._socket_nodes.get((g.key, socket_key(s)))
                if item is not None:
                    label_of[item[0].id] = (g, s)
        self._relabel_visible(quiet=False)

    def _label(self, g: SocketGroup, s: SocketEntry | None) -> Text:
        if s is None:
            return self._group_label(g, self._activity, self._now)
        return self._socket_label(g, s, self._activity, self._now)

    def _relabel_visible(self, *, quiet: bool) -> None:
        """Bring the labels of the lines on screen up to the last ``show``. ``quiet``: the
        lines are about to be rendered (no refresh asked for)."""
        shown, labelled, label_of = self._shown, self._labelled, self._label_of
        top = self.scroll_offset.y
        for line in self._tree_lines[top : top + self.size.height]:
            node = line.node
            nid = node.id
            if labelled.get(nid) == shown:
                continue
            labelled[nid] = shown
            what = label_of.get(nid)
            if what is None:
                continue
            label = self._label(*what)
            if node.label == label:  # an unchanged label costs no repaint
                continue
            if quiet:
                # what TreeNode.set_label does, without asking for another repaint
                node._label = self.process_label(label)
                node._updates += 1
            else:
                node.set_label(label)

    def render_lines(self, crop: Region) -> list[Strip]:
        self._relabel_visible(quiet=True)  # lines scrolled or unfolded into view
        room = self.scrollable_content_region.width
        if room != self._room:  # a scrollbar came or went: labels are cut for the new width
            self._room = room
            self._line_cache.clear()
        return super().render_lines(crop)

    def notify_style_update(self) -> None:
        # Tree rebuilds every line (measuring every label) and lays out the whole screen
        # again on any change of style, such as the focus coming or going; the lines and
        # their widths stay the same, only their colours may change.
        Widget.notify_style_update(self)
        self._line_cache.clear()
        self._updates += 1
        self.refresh()

    def render_label(self, node: TreeNode[NodeData], base_style: Style, style: Style) -> Text:
        """The label, cut with an ellipsis to the pane's width (the last cell left blank)."""
        text = super().render_label(node, base_style, style)
        depth = 0
        parent = node.parent
        while parent is not None and parent is not self.root:
            depth += 1
            parent = parent.parent
        room = self.scrollable_content_region.width - depth * self.guide_depth - 1
        if text.cell_len > room:
            text.truncate(max(0, room), overflow="ellipsis")
        return text

    def get_label_width(self, node: TreeNode[NodeData]) -> int:
        # what Tree's own does (render_label's cell length), without copying each label
        width = node.label.cell_len if isinstance(node.label, Text) else cell_len(str(node.label))
        if node.allow_expand:
            width += cell_len(self.ICON_NODE_EXPANDED if node.is_expanded else self.ICON_NODE)
        return width

    def _rebuild(
        self, view: SocketView, activity: SocketActivity, now: float, flt: DisplayFilter | None = None
    ) -> None:
        cursor = self.cursor_node
        cursor_data = cursor.data if cursor is not None else None
        self.clear()
        self._group_nodes.clear()
        self._socket_nodes.clear()
        self._section_nodes.clear()
        self._label_of.clear()
        self._labelled.clear()
        restore: TreeNode[NodeData] | None = None
        if not view.groups:
            empty = "no sockets match the filter" if flt else "no sockets in the table yet"
            self.root.add_leaf(Text(empty, style=DIM), data=("more", ""))
        spaces: list[NetnsGroup | None] = list(view.namespaces) or [None]
        for space in spaces:
            parent = self.root
            if space is not None:
                # sockets of several namespaces: one level above the sections for each
                nkey = f"netns:{space.inode}"
                parent = self.root.add(
                    self._netns_label(space, view), data=("netns", nkey), expand=nkey not in self._collapsed
                )
                if cursor_data == ("netns", nkey):
                    restore = parent
            for section in (SECTION_LISTEN, SECTION_TCP, SECTION_UDP):
                groups = view.by_section(section, None if space is None else space.inode)
                if not groups:
                    continue
                skey = section if space is None else f"{space.inode}/{section}"
                title = Text(SECTION_TITLES[section], style=Style(bold=True))
                title.append(f"  {len(groups)}", style=DIM)
                snode = parent.add(title, data=("section", skey), expand=skey not in self._collapsed)
                self._section_nodes[skey] = snode
                if cursor_data == ("section", skey):
                    restore = snode
                for g in groups:
                    gnode = self._add_group(snode, g, activity, now)
                    if cursor_data == ("group", g.key):
                        restore = gnode
                    for s in g.rows:
                        if cursor_data == ("socket", socket_key(s)):
                            restore = self._socket_nodes[(g.key, socket_key(s))][0]
        if view.hidden_groups:
            self.root.add_leaf(
                Text(f"… {view.hidden_groups} more groups (narrow the filter)", style=DIM), data=("more", "")
            )
        if restore is not None:
            self.move_cursor(restore)

    def _netns_label(self, space: NetnsGroup, view: SocketView) -> Text:
        groups = [g for g in view.groups if g.netns == space.inode]
        n = sum(len(g.rows) + g.hidden + (g.listener is not None) for g in groups)
        t = Text(safe(space.title), style=Style(bold=True, color="magenta"))
        t.append(f"  {n} socket{'s' if n != 1 else ''}", style=DIM)
        return t

    def _add_group(
        self, snode: TreeNode[NodeData], g: SocketGroup, activity: SocketActivity, now: float
    ) -> TreeNode[NodeData]:
        """A group's line and its sockets' under ``snode``."""
        shown = self._shown
        label = self._group_label(g, activity, now)
        # kernel-owned leftovers (TIME_WAIT, orphans) can be many: folded unless opened
        folded = g.key in self._collapsed or (g.pid is None and g.listener is None)
        gnode = snode.add(label, data=("group", g.key), expand=not folded or g.key in self._expanded)
        self._group_nodes[g.key] = gnode
        self._label_of[gnode.id] = (g, None)
        self._labelled[gnode.id] = shown
        for s in g.rows:
            skey = socket_key(s)
            leaf = gnode.add_leaf(self._socket_label(g, s, activity, now), data=("socket", skey))
            self._socket_nodes[(g.key, skey)] = (leaf, s)
            self._label_of[leaf.id] = (g, s)
            self._labelled[leaf.id] = shown
        if g.hidden:
            gnode.add_leaf(Text(f"… {g.hidden} more (narrow the filter)", style=DIM), data=("more", g.key))
        if not g.rows and g.listener is not None:
            gnode.allow_expand = False
        return gnode

    def on_tree_node_collapsed(self, event: Tree.NodeCollapsed[NodeData]) -> None:
        data = event.node.data
        if data is not None and data[0] in ("netns", "section", "group"):
            self._collapsed.add(str(data[1]))
            self._expanded.discard(str(data[1]))

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[NodeData]) -> None:
        data = event.node.data
        if data is not None:
            self._collapsed.discard(str(data[1]))
            self._expanded.add(str(data[1]))
