"""One line: interface, filters, rate, totals, kernel drops, attribution, export, errors."""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from ..text import count, safe

SEP = Text(" │ ", style=Style(dim=True))


@dataclass(frozen=True)
class Status:
    iface: str
    capture_filter: str
    display_filter: str
    rate: float
    segments: int
    shown: int
    drops: int
    attributed_pct: float
    export: str
    paused: bool
    error: str | None
    source_ended: bool = False
    filtering: tuple[int, int] | None = None  # (rows gone through, of) while a filter is applied
    # the kernel tracer: "attaching" | "attached" | "failed" | "died" | "off" | "" (not shown),
    # and for failed/died its one-line reason
    tracer: str = ""
    tracer_why: str = ""


def status_text(s: Status, width: int | None = None) -> Text:
    """The status line; in ``width`` cells (the last left blank), the least useful parts
    are left out first, and a part still too long ends in an ellipsis."""
    parts: list[tuple[int, Text]] = []  # (rank: lower is kept longer, part)
    if s.paused:
        parts.append((0, Text(" PAUSED ", style=Style(color="black", bgcolor="yellow", bold=True))))
    if s.error:  # early, so a narrow terminal still shows it
        parts.append((0, Text(safe(s.error), style=Style(color="bright_white", bgcolor="red", bold=True))))
    if s.tracer:
        parts.append(_tracer_part(s.tracer, s.tracer_why))
    parts.append((5, Text.assemble(("⇅ ", Style(dim=True)), (safe(s.iface) or "any", Style(bold=True)))))
    if s.capture_filter:
        parts.append((6, Text.assemble(("capture ", Style(dim=True)), safe(s.capture_filter))))
    if s.display_filter:
        parts.append(
            (1, Text.assemble(("filter ", Style(dim=True)), (safe(s.display_filter), Style(color="cyan"))))
        )
    parts.append((7, Text(f"{count(s.rate)} pkt/s")))
    seg = Text(f"{count(s.segments)} segments")
    if s.filtering is not None:
        done, total = s.filtering
        seg.append(f" ({count(s.shown)} shown, ", style=Style(dim=True))
        seg.append(f"filtering… {count(done)} of {count(total)}", style=Style(color="yellow"))
        seg.append(")", style=Style(dim=True))
    elif s.display_filter:
        seg.append(f" ({count(s.shown)} shown)", style=Style(dim=True))
    parts.append((2, seg))
    parts.append(
        (
            3 if s.drops else 4,
            Text(f"{count(s.drops)} dropped", style=Style(color="red", bold=True) if s.drops else Style()),
        )
    )
    pct = s.attributed_pct
    pct_style = (
        Style(color="green") if pct >= 99.5 else Style(color="yellow") if pct >= 90 else Style(color="red")
    )
    parts.append((3, Text(f"{pct:.1f}% attributed", style=pct_style)))
    if s.export:
        parts.append((8, Text(safe(s.export))))
    if s.source_ended:
        parts.append((6, Text("end of input", style=Style(dim=True))))
    if width is None:
        return SEP.join(p for _, p in parts)
    room = width - 1
    while len(parts) > 1 and sum(p.cell_len for _, p in parts) + 3 * (len(parts) - 1) > room:
        worst = max(range(len(parts)), key=lambda i: (parts[i][0], i))
        del parts[worst]
    line = SEP.join(p for _, p in parts)
    if line.cell_len > room:
        line.truncate(max(0, room), overflow="ellipsis")
    return line


def _tracer_part(state: str, why: str) -> tuple[int, Text]:
    """The kernel tracer's state: a failure stays on screen as long as an error does (rows
    are then predictions only), attaching is worth a glance, attached is a detail."""
    if state in ("failed", "died"):
        text = f"kernel tracer {state}" + (f": {why}" if why else "")
        return 0, Text(safe(text), style=Style(color="black", bgcolor="yellow"))
    if state == "attaching":
        return 2, Text("kernel tracer attaching…", style=Style(color="yellow"))
    if state == "attached":
        return 9, Text("kernel tracer attached", style=Style(color="green"))
    return 9, Text(f"kernel tracer {safe(state)}", style=Style(dim=True))


class StatusBar(Widget):
    """A fixed one-line widget: an update repaints one line and never reflows the screen
    (a ``Static.update`` would, ten times a second)."""

    DEFAULT_CSS = """
    StatusBar { height: 1; width: 1fr; background: $panel; color: $text; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._last: Status | None = None
        self._text = Text("")
        self._width = -1

    def render(self) -> Text:
        width = self.content_region.width
        if self._last is not None and width != self._width:
            self._width = width
            self._text = status_text(self._last, width)
        return self._text

    def show(self, status: Status) -> None:
        if status != self._last:
            self._last = status
            self._text = status_text(status, self.content_region.width)
            self._width = self.content_region.width
            self.refresh()
