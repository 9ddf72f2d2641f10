"""The ``conntui lab`` command line: list, run one scenario, or clean up stale namespaces."""

from __future__ import annotations

import argparse
import os
import sys

from .netns import PREFIX, LabError, cleanup, stale_namespaces
from .procs import node_binary
from .runner import RunOptions, run_scenario

PROG = "conntui lab"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Teaching scenarios in private network namespaces: real programs, bounded traffic, "
            "and conntui showing which socket gets each segment and why. Without a scenario, "
            "list them."
        ),
        epilog=(
            "examples:  sudo conntui lab    sudo conntui lab accept-queue    "
            "sudo conntui lab redirect --headless --json    sudo conntui lab --cleanup    "
            "(arguments after -- go to conntui itself, e.g. -- -p 8080)"
        ),
    )
    p.add_argument("scenario", nargs="?", help="the scenario to run")
    p.add_argument("--headless", action="store_true", help="no TUI: print conntui's lines and the verdicts")
    p.add_argument(
        "--json", action="store_true", help='with --headless: JSON lines (conntui rows and {"lab": ...})'
    )
    p.add_argument("--no-node", action="store_true", help="use Python programs even where node is on PATH")
    p.add_argument(
        "--cleanup",
        action="store_true",
        help=f"delete namespaces ({PREFIX}*) left by labs that no longer run, and stop their programs",
    )
    p.add_argument(
        "--all", action="store_true", help="with --cleanup: every lab namespace, even of running labs"
    )
    return p


def list_scenarios(out: object = None) -> int:
    from .scenarios import SCENARIOS

    stream = sys.stdout
    width = max(len(n) for n in SCENARIOS)
    stream.write("Scenarios (run one with: sudo conntui lab NAME):\n\n")
    for name, scn in SCENARIOS.items():
        stream.write(f"  {name:<{width}}  {scn.summary}\n")
    stream.write(
        "\nOptions: --headless [--json] for a run without the TUI; --no-node for Python only"
        + ("" if node_binary() else " (node not found: Python is used)")
        + "; --cleanup removes stale namespaces.\n"
    )
    stale = stale_namespaces()
    if stale:
        stream.write(f"\nStale lab namespaces: {' '.join(stale)} (sudo conntui lab --cleanup)\n")
    return 0


def main(argv: list[str]) -> int:
    conntui_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, conntui_args = argv[:i], argv[i + 1 :]
    args = build_parser().parse_args(argv)
    if args.cleanup:
        if os.geteuid() != 0:
            sys.stderr.write(f"{PROG}: --cleanup needs root: sudo {PROG} --cleanup\n")
            return 1
        removed = cleanup(everything=args.all)
        sys.stdout.write(
            f"removed {len(removed)} lab namespace(s){': ' + ' '.join(removed) if removed else ''}\n"
        )
        return 0
    if not args.scenario:
        return list_scenarios()
    from .scenarios import SCENARIOS

    scn = SCENARIOS.get(args.scenario)
    if scn is None:
        sys.stderr.write(f"{PROG}: no scenario {args.scenario!r}; choose one of: {', '.join(SCENARIOS)}\n")
        return 2
    if os.geteuid() != 0:
        sys.stderr.write(f"{PROG}: building network namespaces needs root: sudo {PROG} {scn.name}\n")
        return 1
    opts = RunOptions(
        headless=args.headless or args.json,
        as_json=args.json,
        use_node=not args.no_node,
        conntui_args=tuple(conntui_args),
    )
    try:
        return run_scenario(scn, opts)
    except LabError as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return 1
