"""The import rules of pyproject.toml's ``[tool.importlinter]``, checked on every run.

Only ``conntui/tui`` imports textual; the pure core (model, decode, demux, filters, session,
history, verify and the other modules listed there) imports nothing that does I/O; the
engine wing and the capture path (engine → capture → capfile → fastpath) import one way (no
circle through the C fast path); inside ``conntui/capfile`` the export loop and the spool
sit above the writers and the reader, which sit above the comment codec and private-file
creation; capture files import neither the CLI nor the UI. A contract that names a module
that no longer exists fails too. ``lint-imports`` prints which import breaks which rule.
"""

from __future__ import annotations

import os
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]


def test_the_import_rules_hold() -> None:
    here = os.getcwd()
    os.chdir(ROOT)  # the contracts are read from ./pyproject.toml
    try:
        assert lint_imports(no_cache=True, no_logo=True) == 0
    finally:
        os.chdir(here)
