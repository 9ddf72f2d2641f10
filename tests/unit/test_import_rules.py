"""The import rules of pyproject.toml's ``[tool.importlinter]``, checked on every run.

Only ``conntui/tui`` imports textual; the pure core (model, decode, demux, filters, session,
history, verify and the other modules listed there) imports nothing that does I/O; the
engine wing and the capture path import one way (no circle through the C fast path).
``lint-imports`` prints which import breaks which rule.
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
