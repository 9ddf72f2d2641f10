"""``-w -``: pcapng streamed to standard output, for ``conntui -w - | tshark -r -``."""

from __future__ import annotations

import contextlib
import io
import os
import select
import sys
from typing import Any, Final

from .errors import ExportError
from .writers import PcapNgWriter

STDOUT: Final = "-"


class _StdoutStream(io.FileIO):
    """The private copy of standard output ``-w -`` writes to; remembers that its reader
    went away (EPIPE: Python ignores SIGPIPE, so the write fails instead of killing us)."""

    broken_pipe = False

    def write(self, data: Any, /) -> int:
        try:
            return super().write(data)
        except BrokenPipeError:
            self.broken_pipe = True
            raise


class StdoutWriter(PcapNgWriter):
    """pcapng streamed to standard output, for ``conntui -w - | tshark -r -``.

    The engine flushes its writer every 0.25 s, so packets reach the reader as they come, as
    whole blocks. Each flush also checks that the reader is still there (``poll`` says
    POLLERR once the read end of a pipe is closed), so a reader that exits while no packet
    flows still ends the capture. ``broken_pipe`` tells that case from other write errors.
    """

    def flush(self) -> None:
        stream = self._stream
        if not isinstance(stream, _StdoutStream):  # not built by open_stdout_writer
            super().flush()
            return
        try:
            super().flush()
        except ExportError:
            if not stream.broken_pipe:
                raise
        if self._closed or stream.closed:
            return
        poller = select.poll()
        poller.register(stream.fileno(), 0)  # POLLERR and POLLHUP are always reported
        if any(ev & (select.POLLERR | select.POLLHUP) for _fd, ev in poller.poll(0)):
            stream.broken_pipe = True
        if stream.broken_pipe:
            raise ExportError("standard output was closed: its reader went away")

    @property
    def broken_pipe(self) -> bool:
        return isinstance(self._stream, _StdoutStream) and self._stream.broken_pipe

    def _release(self) -> None:
        super()._release()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                # whatever a failed flush left in the buffer is dropped: the reader is gone
                stream.close()


def open_stdout_writer(*, flush_bytes: int = 1 << 20, pib: bool = False) -> StdoutWriter:
    """A pcapng writer on standard output (``-w -``).

    The stream gets a private duplicate of fd 1, and fd 1 itself is pointed at standard
    error: nothing else (a stray ``print``, a library's warning) can land in the middle of
    the capture. Refuses a terminal (binary data would garble it). Raises ``ExportError``.
    """
    if os.isatty(1):
        raise ExportError("-w -: standard output is a terminal; pipe it, e.g. conntui -w - | tshark -r -")
    try:
        fd = os.dup(1)
    except OSError as e:
        raise ExportError(f"-w -: standard output is not open: {e.strerror or e}") from None
    sys.stdout.flush()
    os.dup2(2, 1)
    stream = _StdoutStream(fd, "wb")
    stream.name = "standard output"  # for messages
    return StdoutWriter(stream, flush_bytes=flush_bytes, pib=pib)
