#!/usr/bin/env python3
"""Run every benchmark, one process each, and say which ones failed.

    sudo python bench/run_all.py --smoke    # what CI runs: seconds per benchmark, with checks
    sudo python bench/run_all.py            # the full runs (several minutes)

Exits non-zero when a benchmark does: a crash, a timeout, a tool that did not start, and in
``--smoke`` mode a failed check (missing packets or comments, wrong attributions, counters
that do not add up: each benchmark prints its failed checks as ``bench/NAME.py: FAILED: …``).
A slow figure is never a failure. Extra arguments after ``--`` go to every benchmark.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    "capture",
    "manyflow",
    "sockets",
    "shortlived",
    "memory",
    "ui",
    "hotpath",
    "truth",
    "namespaces",
    "privsep",
]
# truth.py's smoke asserts its goal of 0 false statements too (session 7: 0 in 9 smoke runs,
# 3 of them beside other work, and 0 in a full run of 34,196 rows)
SMOKE_ARGS: dict[str, list[str]] = {}
# generous: a crash or a hang, not a slow figure, is what these catch
TIMEOUT = {"smoke": 180.0, "full": 1800.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="short runs (CI)")
    ap.add_argument("--only", nargs="+", choices=BENCHES, help="run these only")
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="-- extra arguments for every benchmark")
    args = ap.parse_args(argv)
    extra = [a for a in args.rest if a != "--"]
    mode = "smoke" if args.smoke else "full"
    failed: list[str] = []
    summary = []
    for name in args.only or BENCHES:
        smoke = ["--smoke", *SMOKE_ARGS.get(name, [])] if args.smoke else []
        cmd = [sys.executable, str(HERE / f"{name}.py"), *smoke, *extra]
        print(f"\n### bench/{name}.py {'--smoke' if args.smoke else ''}", flush=True)
        t0 = time.monotonic()
        try:
            rc = subprocess.run(cmd, timeout=TIMEOUT[mode], check=False).returncode
        except subprocess.TimeoutExpired:
            rc = -1
            print(f"bench/{name}.py: timed out after {TIMEOUT[mode]:.0f} s", flush=True)
        took = time.monotonic() - t0
        summary.append(f"  {name:<11} {'ok' if rc == 0 else f'FAILED (exit {rc})':<20} {took:6.1f} s")
        if rc != 0:
            failed.append(name)
    print("\n### summary")
    print("\n".join(summary))
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
