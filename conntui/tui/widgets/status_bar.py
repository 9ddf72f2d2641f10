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


def status_text(s: Status) -> Text:
    parts: list[Text] = []
    if s.paused:
        parts.append(Text(" PAUSED ", style=Style(color="black", bgcolor="yellow", bold=True)))
    if s.error:  # early, so a narrow terminal still shows it
        parts.append(Text(safe(s.error), style=Style(color="bright_white", bgcolor="red", bold=True)))
    parts.append(Text.assemble(("⇅ ", Style(dim=True)), (safe(s.iface) or "any", Style(bold=True))))
    if s.capture_filter:
        parts.append(Text.assemble(("capture ", Style(dim=True)), safe(s.capture_filter)))
    if s.display_filter:
        parts.append(
            Text.assemble(("filter ", Style(dim=True)), (safe(s.display_filter), Style(color="cyan")))
        )
    parts.append(Text(f"{count(s.rate)} pkt/s"))
    seg = Text(f"{count(s.segments)} segments")
    if s.filtering is not None:
        done, total = s.filtering
        seg.append(f" ({count(s.shown)} shown, ", style=Style(dim=True))
        seg.append(f"filtering… {count(done)} of {count(total)}", style=Style(color="yellow"))
        seg.append(")", style=Style(dim=True))
    elif s.display_filter:
        seg.append(f" ({count(s.shown)} shown)", style=Style(dim=True))
    parts.append(seg)
    parts.append(
        Text(f"{count(s.drops)} dropped", style=Style(color="red", bold=True) if s.drops else Style())
    )
    pct = s.attributed_pct
    pct_style = (
        Style(color="green") if pct >= 99.5 else Style(color="yellow") if pct >= 90 else Style(color="red")
    )
    parts.append(Text(f"{pct:.1f}% attributed", style=pct_style))
    if s.export:
        parts.append(Text(safe(s.export)))
    if s.source_ended:
        parts.append(Text("end of input", style=Style(dim=True)))
    return SEP.join(parts)


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

    def render(self) -> Text:
        return self._text

    def show(self, status: Status) -> None:
        if status != self._last:
            self._last = status
            self._text = status_text(status)
            self.refresh()
