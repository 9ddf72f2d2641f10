"""The suite's CI rule (tests/conftest.py): under CI a skip fails as a missing install step."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).parent.parent / "conftest.py"

SAMPLE = """
import pytest

@pytest.mark.skipif(True, reason="needs frobnicate (apt-get install frobnicate)")
def test_marked():
    pass

def test_imperative():
    pytest.skip("tshark is not installed")

@pytest.mark.xfail(reason="known gap")
def test_known_gap():
    assert False

def test_known_gap_at_run_time():
    pytest.xfail("known gap")

def test_passes():
    pass
"""


def run_sample(tmp_path: Path, ci: str | None) -> str:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    return proc.stdout


def test_under_ci_every_skip_fails_and_names_the_missing_step(tmp_path: Path) -> None:
    out = run_sample(tmp_path, "true")
    # a skip marker acts in set-up, so pytest counts that failure as an error
    assert "1 failed, 1 passed, 2 xfailed, 1 error" in out, out
    assert "missing install step: needs frobnicate (apt-get install frobnicate)" in out, out
    assert "missing install step: tshark is not installed" in out, out


def test_outside_ci_a_skip_stays_a_skip(tmp_path: Path) -> None:
    for ci in (None, "false"):
        out = run_sample(tmp_path, ci)
        assert "1 passed, 2 skipped, 2 xfailed" in out, (ci, out)
