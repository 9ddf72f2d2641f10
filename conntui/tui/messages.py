"""Messages that workers post back to the UI (never one per packet)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


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
