"""Messages that workers post back to the UI (never one per packet)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from ..filters import DisplayFilter
from .feed import RowBuffer


@dataclass
class Dissected(Message):
    """scapy's dissection of the record ``seq`` is ready."""

    seq: int
    lines: list[str]


@dataclass
class ExportDone(Message):
    path: str
    packets: int


@dataclass
class ExportFailed(Message):
    path: str
    error: str


@dataclass
class FilterReady(Message):
    """A worker filtered the session window for a new display filter."""

    flt: DisplayFilter | None
    buffer: RowBuffer
    upto_seq: int
    generation: int

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, FilterReady)
