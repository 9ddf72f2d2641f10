"""The errors of capture files: one line each, for the user (the CLI prints it, the TUI
shows it), never a traceback."""

from __future__ import annotations


class ExportError(Exception):
    """The capture file cannot be written (one line, for the user)."""


class ExportExists(ExportError):
    """The target file exists and overwriting was not asked for (a UI may ask, then retry
    with ``overwrite=True``)."""


class CaptureFileError(Exception):
    """The capture file cannot be read: missing, not a capture, corrupt (one line)."""
