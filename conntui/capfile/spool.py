"""The session spool: rows that leave the session's in-memory window go to a private
temporary pcapng (``PcapngSpool``), so an export still holds every row while memory stays
flat."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator

from .. import fastpath
from ..decode import decode_frame
from ..model import Attribution, Match, Record
from .comments import attribution_from_comment
from .errors import ExportError
from .reader import read_capture
from .writers import open_writer


class PcapngSpool:
    """Session rows that left the in-memory window, kept in a private temporary pcapng.

    The same format as ``-w`` (the attribution rides in each packet's comment), so reading
    rows back is reading a conntui capture file; the file is 0600 and removed on close (and
    unlinked at once where the platform allows reading an unlinked file through /proc).
    """

    def __init__(self, directory: str | None = None) -> None:
        fd, self.path = tempfile.mkstemp(prefix="conntui-spool-", suffix=".pcapng", dir=directory)
        self._stream = os.fdopen(fd, "wb")
        self._writer = open_writer(self._stream, "pcapng")
        self._lock = threading.Lock()
        self.count = 0
        self._closed = False

    def detach(self) -> None:
        """Unlink the file now; it is read back through ``/proc/self/fd`` and vanishes
        with conntui (nothing to remove at the end, which a confined conntui may not)."""
        fd = self._stream.fileno()
        os.unlink(self.path)
        self.path = f"/proc/self/fd/{fd}"

    def add(self, rec: Record) -> None:
        with self._lock:
            if self._closed:
                return
            self._writer.write(rec.frame, rec.segment, rec.attribution)
            self.count += 1

    def add_many(self, recs: list[Record]) -> None:
        """``add`` for each row, in order; the blocks are built in C where it can (the
        rows the C fast path stores leave the window at the packet rate)."""
        fast = fastpath.blocks_builder()
        with self._lock:
            if self._closed:
                return
            writer = self._writer
            i = 0
            while i < len(recs):
                if fast is not None:
                    blob, written, i = fast(recs, i, writer)
                    if written:
                        writer.put_blocks(blob, written)
                    if i >= len(recs):
                        break
                rec = recs[i]  # one the C builder leaves to the writer (a new comment, ...)
                writer.write(rec.frame, rec.segment, rec.attribution)
                i += 1
            self.count += len(recs)

    def records(self, count: int, first_seq: int) -> Iterator[Record]:
        """The first ``count`` spooled rows, numbered from ``first_seq``."""
        with self._lock:
            if self._closed:
                return
            self._writer.flush()
            self._stream.flush()
        reader = read_capture(self.path)
        try:
            for i, frame in enumerate(reader):
                if i >= count:
                    break
                seg = decode_frame(frame)
                if seg is None:
                    continue
                att = attribution_from_comment(frame.comment) or Attribution(Match.UNKNOWN)
                yield Record(first_seq + i, frame, seg, att)
        finally:
            reader.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError, ExportError):
                self._writer.close()
            with contextlib.suppress(OSError):
                self._stream.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)
