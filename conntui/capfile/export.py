"""A session's rows written to a new capture file: the TUI's export (``w``), run on one of
its worker threads. Rows that left memory come back from the spool first, so the file holds
every row of the session still held (or those ``keep`` keeps), in order."""

from __future__ import annotations

from collections.abc import Callable

from ..model import Record
from ..session import Session
from .formats import Target
from .writers import open_writer


def export_session(
    session: Session, target: Target, keep: Callable[[Record], bool] | None = None, *, overwrite: bool = False
) -> int:
    """Write the rows of ``session`` that ``keep`` keeps (all by default) to ``target``, a new
    capture file (``open_writer``: pcap for a ``.pcap`` name, else pcapng; an existing file
    is replaced only with ``overwrite``). Returns how many packets were written; raises
    ``ExportError`` (or ``OSError``) as ``open_writer`` and ``Writer.write`` do, after
    closing the file."""
    writer = open_writer(target, overwrite=overwrite)
    written = 0
    try:
        for rec in session.all_records(keep):
            writer.write(rec.frame, rec.segment, rec.attribution)
            written += 1
    finally:
        writer.close()
    return written
