"""conntui as a Wireshark capture source (extcap interface ``conntui-any``).

Wireshark runs the launcher ``conntui wireshark install`` wrote (``python -m
conntui.wireshark.extcap ARGS``; ``conntui ARGS`` does the same) with, in turn:

* ``--extcap-interfaces``: the interface list (one: ``conntui-any``);
* ``--extcap-dlts --extcap-interface conntui-any``: its link type (raw IP);
* ``--extcap-config --extcap-interface conntui-any``: the options dialog (ports, --trace);
* ``--capture --extcap-interface conntui-any --fifo PATH [--extcap-capture-filter F]
  [--port P] [--trace]``: the capture itself.

The capture is ``conntui -w -`` with the FIFO as standard output: the same pcapng stream,
each packet's attribution in its comment (the Lua plugin makes fields of them). Wireshark
ends it with SIGTERM, or by closing the FIFO; both end conntui cleanly. Capturing needs
what conntui needs (root, or CAP_NET_RAW and the right to read other processes' fds).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from typing import IO

from .. import __version__

INTERFACE = "conntui-any"
LINKTYPE_RAW = 101  # what conntui's live capture writes (one IDB per interface)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="conntui (extcap)", description="conntui as a Wireshark capture source")
    p.add_argument("--extcap-interfaces", action="store_true", help="list the interfaces")
    p.add_argument("--extcap-version", metavar="VERSION", help="Wireshark's version")
    p.add_argument("--extcap-interface", metavar="IFACE", help="the interface to act on")
    p.add_argument("--extcap-dlts", action="store_true", help="list the interface's link types")
    p.add_argument("--extcap-config", action="store_true", help="list the interface's options")
    p.add_argument("--extcap-capture-filter", default="", metavar="FILTER", help="a BPF filter")
    p.add_argument("--capture", action="store_true", help="capture into --fifo")
    p.add_argument("--fifo", metavar="PATH", help="where Wireshark reads the capture")
    p.add_argument("--port", default="", metavar="PORTS", help="as conntui -p")
    p.add_argument("--trace", action="store_true", help="as conntui --trace")
    return p


def interfaces() -> str:
    return (
        f"extcap {{version={__version__}}}{{display=conntui}}\n"
        f"interface {{value={INTERFACE}}}{{display=conntui: any (which process gets each packet, and why)}}\n"
    )


def dlts() -> str:
    return f"dlt {{number={LINKTYPE_RAW}}}{{name=RAW}}{{display=Raw IP, each packet annotated by conntui}}\n"


def config() -> str:
    return (
        "arg {number=0}{call=--port}{display=Ports}{type=string}{required=false}"
        "{tooltip=Keep segments whose source or destination port matches: 8080, 80,443, 8000-8100}\n"
        "arg {number=1}{call=--trace}{display=Trace connect() and accept() with bpftrace}"
        "{type=boolflag}{default=false}"
        "{tooltip=Names the process of connections that close before conntui can look them up}\n"
    )


def check_filter(expression: str) -> int:
    """Exit status 0 if conntui can compile ``expression``, else 1 with the reason on stdout
    (what Wireshark shows beside the filter field)."""
    from ..capture import CaptureError, compile_bpf, libpcap_available

    if not libpcap_available():
        sys.stdout.write("BPF filters need libpcap (apt-get install libpcap0.8); use the Ports option\n")
        return 1
    try:
        compile_bpf(expression)
    except CaptureError as exc:
        sys.stdout.write(f"{exc}\n")
        return 1
    return 0


class _ErrorsOnly(io.TextIOBase):
    """Standard error for a capture run by Wireshark, which shows whatever an extcap writes
    there as an error: only conntui's error lines go through (not "listening on", notes,
    the closing counters, nor the end of the FIFO, which is Wireshark stopping us)."""

    QUIET = ("conntui: listening on", "conntui: note:", "conntui: standard output was closed")

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._buf = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._buf += s
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            if line.startswith("conntui: ") and not line.startswith(self.QUIET):
                self._out.write(line + "\n")
        self._out.flush()
        return len(s)


def main(argv: Sequence[str] | None = None) -> int:
    args, _unknown = _parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if args.extcap_interfaces:
        sys.stdout.write(interfaces())
        return 0
    if args.extcap_interface and args.extcap_interface != INTERFACE:
        sys.stderr.write(f"conntui: unknown extcap interface {args.extcap_interface!r} (only {INTERFACE})\n")
        return 1
    if args.extcap_dlts:
        sys.stdout.write(dlts())
        return 0
    if args.extcap_config:
        sys.stdout.write(config())
        return 0
    if not args.capture:
        if args.extcap_capture_filter.strip():  # Wireshark checks a filter as it is typed
            return check_filter(args.extcap_capture_filter.strip())
        return 0
    if not args.fifo:
        sys.stderr.write("conntui: --capture needs --fifo PATH\n")
        return 2
    try:
        fd = os.open(args.fifo, os.O_WRONLY | os.O_CLOEXEC)  # waits for Wireshark to read
    except OSError as e:
        sys.stderr.write(f"conntui: cannot open {args.fifo}: {e.strerror or e}\n")
        return 1
    os.dup2(fd, 1)
    os.close(fd)
    cli_argv = ["-w", "-", "-i", "any"]
    if args.port.strip():
        cli_argv += ["-p", args.port.strip()]
    if args.trace:
        cli_argv.append("--trace")
    if args.extcap_capture_filter.strip():
        cli_argv += ["--", args.extcap_capture_filter.strip()]
    from ..cli import main as cli_main

    sys.stderr = _ErrorsOnly(sys.__stderr__ or sys.stderr)
    return cli_main(cli_argv)


if __name__ == "__main__":
    sys.exit(main())
