"""Where the engine's socket tables come from: the protocol, and a fixed table.

On a live host the source is ``sockets.SocketTableSource`` (or ``NamespaceTables``, one per
network namespace); tests, files read with ``-r`` and the TUI's demo data use
``StaticTables``. The engine and its attributor only ever call these three methods.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

from .model import Segment, SocketTable


class TableSource(Protocol):
    """Where the socket table comes from (``sockets.SocketTableSource`` on a live host)."""

    def current(self) -> SocketTable: ...

    def refresh(self) -> SocketTable: ...

    def resolve(self, seg: Segment, *, prune: bool = False) -> SocketTable | None: ...


class StaticTables:
    """A fixed socket table (tests, files read with -r, the TUI's demo data)."""

    def __init__(self, table: SocketTable | None = None) -> None:
        self._table = table or SocketTable()

    def current(self) -> SocketTable:
        return self._table

    def refresh(self) -> SocketTable:
        return self._table

    def resolve(self, seg: Segment, *, prune: bool = False) -> SocketTable | None:
        return None


class NamespaceTable(NamedTuple):
    """One network namespace's latest table, for showing (the TUI's socket view)."""

    inode: int  # the namespace's inode (``/proc/PID/ns/net``)
    table: SocketTable
    name: str = ""  # its ``ip netns`` (or runtime) name, when bind-mounted


@runtime_checkable
class ManyNamespaces(Protocol):
    """A table source that reads several network namespaces (``sockets.NamespaceTables``)."""

    primary_inode: int  # the namespace conntui runs in

    def namespace_tables(self) -> list[NamespaceTable]: ...
