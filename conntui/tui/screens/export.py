"""The export dialog: where to write, and whether to keep only what the filter shows."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet

from ..text import count, safe


@dataclass(frozen=True)
class ExportRequest:
    path: str
    only_filtered: bool


class ExportScreen(ModalScreen[ExportRequest | None]):
    DEFAULT_CSS = """
    ExportScreen { align: center middle; }
    ExportScreen > Vertical {
        width: 76; max-width: 100%; height: auto; border: thick $accent; background: $surface;
        padding: 1 2;
    }
    ExportScreen Label { margin-bottom: 1; width: 100%; }
    ExportScreen .hint { color: $text-muted; }
    ExportScreen Input { margin-bottom: 1; }
    ExportScreen RadioSet { width: 100%; margin-bottom: 1; }
    ExportScreen Horizontal { height: auto; align-horizontal: right; }
    ExportScreen Button { margin-left: 2; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default_path: str, total: int, shown: int, filter_text: str) -> None:
        super().__init__()
        self.default_path = default_path
        self.total = total
        self.shown = shown
        self.filter_text = filter_text

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text("Export the session to a capture file", style="bold"))
            yield Input(self.default_path, id="export-path")
            yield Label(
                Text(
                    "*.pcapng keeps each packet's attribution as a comment; *.pcap is classic pcap; "
                    "relative paths are in the current directory.",
                ),
                classes="hint",
            )
            with RadioSet(id="export-scope"):
                yield RadioButton(
                    Text(f"all {count(self.total)} segments of the session"), value=True, id="scope-all"
                )
                label = (
                    f"only the {count(self.shown)} the filter “{safe(self.filter_text)}” shows"
                    if self.filter_text
                    else "only what the filter shows (no filter: the same)"
                )
                yield RadioButton(Text(label), id="scope-filtered")
            with Horizontal():
                yield Button("Export", variant="primary", id="export-ok")
                yield Button("Cancel", id="export-cancel")

    def on_mount(self) -> None:
        self.query_one("#export-path", Input).focus()  # the name is selected: typing replaces it

    def _submit(self) -> None:
        path = self.query_one("#export-path", Input).value.strip()
        if not path:
            self.notify("type a file name first", severity="warning", markup=False)
            return
        only = self.query_one("#scope-filtered", RadioButton).value
        self.dismiss(ExportRequest(path, bool(only)))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "export-ok":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
