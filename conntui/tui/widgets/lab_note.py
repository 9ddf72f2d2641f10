"""What to watch, at the top of the screen while ``conntui lab`` runs a scenario.

The scenario's narrative is printed before the TUI opens, and the TUI would cover it: this
keeps its title and its "Watch for:" part on screen. On a narrow or short terminal it is
one line (the title) until ``n`` opens it; ``n`` folds it again.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.widget import Widget

from ..text import safe

TITLE = Style(bold=True)
HINT = Style(dim=True)
MAX_LINES = 9  # the note never takes more of the screen than this (the rest ends in "…")


def split_note(note: str) -> tuple[str, list[str]]:
    """(title, what to watch): the narrative's first line, and its "Watch for:" part
    (or, without one, the rest of it), as lines."""
    lines = [safe(line.rstrip()) for line in note.strip("\n").splitlines()]
    title = lines[0].strip() if lines else ""
    rest = lines[1:]
    for i, line in enumerate(rest):
        if line.strip().lower().startswith("watch for"):
            rest = rest[i:]
            break
    while rest and not rest[0].strip():
        rest = rest[1:]
    return title, _reflow(rest)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _reflow(lines: list[str]) -> list[str]:
    """Lines of text wrapped for 90 columns, joined again: a bullet (``*``, ``-``) takes
    the lines indented under its text, so each bullet can be wrapped to the screen."""
    out: list[str] = []
    under = -1  # the column a bullet's text starts at (its continuation lines are there)
    for line in lines:
        stripped = line.strip()
        if stripped.startswith(("* ", "- ")):
            out.append(line.rstrip())
            under = _indent(line) + 2
        elif out and stripped and under >= 0 and _indent(line) >= under:
            out[-1] += " " + stripped
        else:
            out.append(line.rstrip())
            under = -1
    return out


def _wrap(line: str, width: int) -> list[str]:
    """``line`` in parts of at most ``width`` cells, each after the first indented under
    its text (a bullet's text, not its ``*``)."""
    if len(line) <= width:
        return [line]
    stripped = line.lstrip()
    indent = len(line) - len(stripped) + (2 if stripped.startswith(("* ", "- ")) else 0)
    indent = min(indent, width // 2)
    out: list[str] = []
    words = stripped.split()
    if not words:
        return [""]
    current = line[: len(line) - len(stripped)] + words[0]
    for word in words[1:]:
        if len(current) + 1 + len(word) <= width:
            current += " " + word
        else:
            out.append(current)
            current = " " * indent + word
        while len(current) > width:  # a word longer than the line
            out.append(current[:width])
            current = " " * indent + current[width:]
    if current.strip():
        out.append(current)
    return out


class LabNote(Widget):
    """The lab's title and what to watch (see the module docstring)."""

    DEFAULT_CSS = """
    LabNote { height: auto; background: $boost; color: $text; padding: 0 1; }
    """

    def __init__(self, note: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title, self.watch_lines = split_note(note)
        self.expanded = True
        self.toggled = False  # n was pressed: the size no longer decides

    def lines(self, width: int) -> list[Text]:
        room = max(1, width - 1)  # the last cell left blank
        hint = ("  (n: hide)" if self.expanded else "  (n: what to watch)") if self.watch_lines else ""
        if len(hint) > room // 2:
            hint = ""
        title = Text(self.title, style=TITLE, no_wrap=True, end="")
        title.truncate(room - len(hint), overflow="ellipsis")
        title.append(hint, style=HINT)
        out = [title]
        if not self.expanded:
            return out
        body = [part for line in self.watch_lines for part in _wrap(line, room)]
        if len(body) > MAX_LINES - 1:
            body = [*body[: MAX_LINES - 2], "  … (the rest was printed before the TUI opened)"]
        out += [Text(line[:room] if len(line) <= room else line[: room - 1] + "…", end="") for line in body]
        return out

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.lines(width))

    def render(self) -> Text:
        return Text("\n").join(self.lines(self.content_region.width))

    def toggle(self) -> None:
        self.toggled = True
        self.expanded = not self.expanded
        self.refresh(layout=True)
