"""Suite-wide rule: under CI a skip is a failure.

The README's test line installs every tool a test needs and CI runs it as root, so a test that
skips there (a missing tshark, bpftrace, tmux, libpcap, root, ...) means a missing install step,
not a machine that cannot run it. CI sets ``CI`` (to ``true``); on a developer's machine skips
stay skips. Expected failures (``xfail``) are not skips and are left alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"missing install step: {reason.removeprefix('Skipped: ')} (CI allows no skips)"
