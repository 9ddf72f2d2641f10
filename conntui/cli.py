"""Command line: parse tcpdump-style options, check privileges, wire the pipeline.

``make_engine`` and ``make_app`` are the factories shared by the CLI and the tests, so what
the tests drive is what a person runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, NoReturn

from . import __version__, fastpath
from .capfile.errors import ExportError
from .capfile.spool import PcapngSpool
from .capfile.stdout import STDOUT, StdoutWriter, open_stdout_writer
from .capfile.writers import Writer, open_writer
from .capture import CaptureError, FileCapture, FrameSource, LiveCapture, compile_bpf, libpcap_available
from .engine import Engine, StaticTables, TableSource
from .filters import FilterError, PortSet, parse_display_filter, parse_ports
from .jsonout import json_line, text_line
from .model import Record
from .session import Counters, Session
from .sockets.namespaces import NamespaceTables

if TYPE_CHECKING:
    from .privsep import Privsep
    from .tui.app import ConntuiApp

PROG = "conntui"
HEADLESS_WINDOW = 50_000  # rows kept in memory in headless mode (~100 MB at most)


class UsageError(Exception):
    """A one-line error for the user; the exit code is 2 (bad usage) or 1 (runtime)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """A bad option is one line (what is wrong, where to read more) and exit code 2, not
    the usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Show, live, which process and file descriptor the kernel delivers each TCP/UDP\n"
            "segment to, and why. Without --headless it opens the TUI (and runs headless when\n"
            "standard output is not a terminal)."
        ),
        epilog=(
            "examples:\n"
            "  sudo conntui -i lo -p 8080\n"
            "  sudo conntui --headless --json -c 20 tcp port 443\n"
            "  conntui -r session.pcapng --headless\n"
            "\n"
            "teaching scenarios in private network namespaces:\n"
            "  sudo conntui lab [SCENARIO]   (list them, or run one; conntui lab --help)\n"
            "  scenarios: listen-vs-connect, listen, established-routing, accept-queue,\n"
            "  stale-client, port-conflict, same-port, redirect, container-port, udp-demux, tproxy"
        ),
    )
    p.add_argument(
        "-i", "--interface", default="any", metavar="IFACE", help="interface to capture on (default: any)"
    )
    p.add_argument(
        "-N",
        "--netns",
        metavar="NS",
        help="capture in one network namespace only and read only its sockets: an `ip netns` name, "
        "a path (/run/netns/NAME, /proc/PID/ns/net) or a pid (default: conntui's own namespace, "
        "with every other namespace's sockets read too, so containers are named)",
    )
    p.add_argument(
        "-p",
        "--port",
        action="append",
        default=[],
        metavar="PORTS",
        help="keep segments whose source or destination port matches: 8080, 80,443, 8000-8100 (repeatable)",
    )
    p.add_argument(
        "-w",
        "--write",
        metavar="FILE",
        help="write the session while capturing (.pcap, else pcapng with attributions); "
        "-w - streams pcapng to standard output (| tshark -r -)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="with -w: replace FILE if it exists (else it is an error)"
    )
    p.add_argument(
        "--pcapng-pib",
        action="store_true",
        help="with -w (pcapng): also write each process as a Process Information Block (in a "
        "Wireshark custom block, as Wireshark's development tree reads it) and the sending "
        "process's pid in epb_processid_threadid; released Wireshark does not read them yet "
        "(tshark 4.0 shows each such block as a frame without a packet)",
    )
    p.add_argument(
        "-r", "--read", metavar="FILE", help="read a saved pcap/pcapng instead of capturing (no root needed)"
    )
    p.add_argument("-c", "--count", type=int, metavar="COUNT", help="stop after COUNT segments")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after SECONDS")
    p.add_argument("--headless", action="store_true", help="print one line per segment instead of the TUI")
    p.add_argument("--json", action="store_true", help="with --headless: one JSON object per line")
    p.add_argument("-q", "--quiet", action="store_true", help="with --headless: print no per-segment lines")
    p.add_argument(
        "--settle",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="how long printed lines and -w wait for later segments (the kernel's RST, a challenge ACK) "
        "to complete a row (default 0.5; 0 prints at once)",
    )
    trace = p.add_mutually_exclusive_group()
    trace.add_argument(
        "--no-trace",
        dest="trace",
        action="store_false",
        help="do not run the kernel tracer (bpftrace): rows are then conntui's predictions from the "
        "socket table only, and short connections may be unknown",
    )
    trace.add_argument(
        "--trace",
        dest="trace",
        action="store_true",
        help="run the kernel tracer (the default when bpftrace is installed): the kernel's own record "
        "of state changes, drops and resets, and the process of connections gone before conntui looks",
    )
    p.set_defaults(trace=True)
    p.add_argument(
        "--ladder",
        metavar="FILTER",
        help="with -r: print each connection FILTER matches as a ladder (a sequence diagram of its "
        "segments between sockets); FILTER as in the TUI: 8080, host:10.0.0.1, proc:nginx, match:none",
    )
    p.add_argument(
        "--ladder-svg",
        metavar="OUT.svg",
        help="with --ladder: also draw those ladders as an SVG picture into OUT.svg (not over an "
        "existing file unless --overwrite)",
    )
    privsep = p.add_mutually_exclusive_group()
    privsep.add_argument(
        "--privsep",
        dest="privsep",
        action="store_true",
        help="live capture (the default): once set up, the process that parses packets drops every "
        "privilege (no capabilities, no_new_privs, seccomp, Landlock) and a small helper process "
        "keeps what the socket table needs (SECURITY.md)",
    )
    privsep.add_argument(
        "--no-privsep",
        dest="privsep",
        action="store_false",
        help="keep root's privileges in the one conntui process (as before privilege separation)",
    )
    p.set_defaults(privsep=True)
    p.add_argument("--version", action="version", version=f"{PROG} {__version__} ({fastpath.status()})")
    p.add_argument("--lab-note", default="", help=argparse.SUPPRESS)  # conntui lab: what to watch
    p.add_argument("expression", nargs="*", help="a BPF filter in tcpdump syntax (needs libpcap)")
    return p


@dataclass
class Options:
    interface: str
    ports: PortSet
    expression: str
    write: str | None
    read: str | None
    count: int | None
    duration: float | None
    headless: bool
    json: bool
    quiet: bool
    overwrite: bool = False
    pib: bool = False  # --pcapng-pib
    settle: float = 0.5
    trace: bool = True
    lab_note: str = ""
    ladder: str | None = None
    ladder_svg: str | None = None
    netns: str | None = None  # the path of the one namespace to capture in (-N)
    # drop privileges after set-up (live capture, --privsep)
    privsep: bool = False


def parse_options(argv: Sequence[str]) -> Options:
    args = build_parser().parse_args(argv)
    try:
        ports = parse_ports(args.port)
    except FilterError as exc:
        raise UsageError(str(exc), 2) from None
    if not 0 <= args.settle <= 60:
        raise UsageError(f"bad settle time {args.settle}: between 0 and 60 seconds", 2)
    if args.count is not None and args.count <= 0:
        raise UsageError(f"bad count {args.count}: it must be a positive number", 2)
    if args.duration is not None and not args.duration > 0:
        raise UsageError(f"bad duration {args.duration}: it must be a positive number of seconds", 2)
    if args.ladder is not None:
        if not args.read:
            raise UsageError("--ladder reads a saved session: give it -r FILE", 2)
        try:
            parse_display_filter(args.ladder)
        except FilterError as exc:
            raise UsageError(str(exc), 2) from None
    if args.ladder_svg is not None and args.ladder is None:
        raise UsageError("--ladder-svg draws the ladders --ladder FILTER prints: give it --ladder", 2)
    netns = None
    if args.netns is not None:
        if args.read:
            raise UsageError("-N captures in a network namespace; -r reads a file: choose one", 2)
        netns = _netns_path(args.netns)
    # -w -: the capture is the output; per-segment lines only when asked for (to stderr)
    to_stdout = args.write == STDOUT
    same = args.read and args.write and os.path.abspath(args.read) == os.path.abspath(args.write)
    if same and not to_stdout:
        raise UsageError("-r and -w name the same file", 2)
    if args.pcapng_pib and (not args.write or (not to_stdout and args.write.lower().endswith(".pcap"))):
        raise UsageError("--pcapng-pib writes pcapng blocks: give it -w FILE.pcapng (or -w -)", 2)
    return Options(
        interface=args.interface,
        ports=ports,
        expression=" ".join(args.expression).strip(),
        write=args.write,
        read=args.read,
        count=args.count,
        duration=args.duration,
        headless=args.headless or args.json or args.quiet or to_stdout or args.ladder is not None,
        json=args.json,
        quiet=args.quiet or (to_stdout and not (args.headless or args.json)),
        overwrite=args.overwrite,
        pib=args.pcapng_pib,
        settle=args.settle,
        trace=args.trace,
        lab_note=args.lab_note,
        ladder=args.ladder,
        ladder_svg=args.ladder_svg,
        netns=netns,
        privsep=args.privsep and not args.read,
    )


def _netns_path(arg: str) -> str:
    """-N's namespace as a file that opens it; a one-line error when there is none."""
    if arg.isdigit():
        path = f"/proc/{arg}/ns/net"
    elif "/" in arg:
        path = arg
    else:
        path = f"/run/netns/{arg}"
    try:
        if os.stat(path).st_ino == 0:
            raise OSError(2, "not a namespace")
    except OSError as exc:
        raise UsageError(f"no network namespace {arg!r} ({path}: {exc.strerror or exc})", 2) from None
    return path


def enter_netns(path: str) -> None:
    """Move conntui (this thread, so every thread and program it starts from now on) into
    the network namespace at ``path``: the capture, the socket table and the tracer then all
    see that namespace, as with ``ip netns exec``."""
    from .sockets.netlink import join_netns

    try:
        join_netns(path)
    except OSError as exc:
        raise UsageError(f"cannot enter network namespace {path}: {exc.strerror or exc}", 1) from None


def _kernel_filter(opts: Options, notes: list[str]) -> list[tuple[int, int, int, int]] | None:
    """The BPF program for the live socket: the expression and the ports, when libpcap is here."""
    if not libpcap_available():
        if opts.expression:
            raise UsageError(
                "BPF filter expressions need libpcap (apt-get install libpcap0.8); -p/--port works without it"
            )
        if opts.ports:
            notes.append("libpcap not found: the port filter runs in user space (apt-get install libpcap0.8)")
        return None
    parts = [f"({opts.expression})"] if opts.expression else []
    if opts.ports:
        # ICMP port unreachables quote the datagram they answer: keep them so "no socket"
        # predictions can be checked (the engine applies the port filter to the quote).
        parts.append(f"({opts.ports.bpf()} or (icmp and icmp[0] == 3) or (icmp6 and ip6[40] == 1))")
    if not parts:
        return None
    try:
        return compile_bpf(" and ".join(parts))
    except CaptureError as exc:
        if opts.expression:
            raise UsageError(str(exc), 2) from None
        raise UsageError(str(exc)) from None


def make_source(opts: Options, notes: list[str]) -> FrameSource:
    if opts.read:
        if opts.expression:
            raise UsageError("a BPF expression applies to live capture; with -r use -p to filter by port", 2)
        return FileCapture(opts.read)
    program = _kernel_filter(opts, notes)
    source = LiveCapture(opts.interface, program)
    if not fastpath.built():
        notes.append(
            "the C accelerator was not built (apt-get install gcc python3-dev, then reinstall): "
            "the capture runs in pure Python, lossless only up to ~100k packets/s"
        )
    return source


def make_tables(live: bool, *, one_namespace: bool = False) -> TableSource:
    """Every network namespace's socket table on a live capture (only conntui's own with
    ``one_namespace``, i.e. -N); none from a file."""
    if not live:
        return StaticTables()
    from .sockets import SocketTableSource

    # This namespace's table, and every other namespace's (containers): a segment is looked
    # up where its address lives (crossns.py).
    if one_namespace:
        only = SocketTableSource()
        only.refresh()
        return only
    tables = NamespaceTables(SocketTableSource())
    tables.refresh()
    return tables


# the helper of each engine set up with privilege separation (see make_engine)
_PRIVSEP: weakref.WeakKeyDictionary[Engine, Privsep] = weakref.WeakKeyDictionary()
# why the helper of an engine went away mid-session (one line), once it has
_HELPER_LOST: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def privsep_of(engine: Engine) -> Privsep | None:
    return _PRIVSEP.get(engine)


def make_engine(opts: Options, notes: list[str] | None = None, session: Session | None = None) -> Engine:
    """Everything the capture needs, opened in the order that gives the clearest error.

    With ``opts.privsep`` (a live capture run from the command line), the privileged helper
    is forked first, while this process has one thread; once everything is open, this
    process drops its privileges for good (:mod:`conntui.privsep`)."""
    notes = notes if notes is not None else []
    if opts.netns is not None:
        # first: the helper (below) serves the namespace conntui captures in, forked after
        # entering it, so its conntrack (and sock_diag) channels are that namespace's
        enter_netns(opts.netns)
    priv: Privsep | None = None
    if opts.privsep and not opts.read:
        from . import privsep

        try:
            priv = privsep.start()
        except OSError as exc:
            raise UsageError(f"cannot start the privileged helper: {exc.strerror or exc}") from None
    try:
        engine = _make_engine(opts, notes, session, priv)
    except BaseException:
        if priv is not None:
            priv.close()
        raise
    if priv is not None:
        _PRIVSEP[engine] = priv
    return engine


def _make_engine(opts: Options, notes: list[str], session: Session | None, priv: Privsep | None) -> Engine:
    source = make_source(opts, notes)
    opened: list[Callable[[], None]] = [source.close]  # the close of each thing opened
    try:
        return _open_rest(opts, notes, session, priv, source, opened)
    except KeyboardInterrupt:
        # Ctrl-C while setting up: close what is open, the newest first (the tracer is a
        # child in its own session: the terminal's Ctrl-C does not reach it, nothing else
        # would stop it)
        for close in reversed(opened):
            with contextlib.suppress(Exception):
                close()
        raise


def _open_rest(
    opts: Options,
    notes: list[str],
    session: Session | None,
    priv: Privsep | None,
    source: FrameSource,
    opened: list[Callable[[], None]],
) -> Engine:
    """The rest of :func:`_make_engine` once the source is open; puts the close of each
    thing it opens in ``opened``."""
    try:
        writer: Writer | None
        if opts.write == STDOUT:
            writer = open_stdout_writer(pib=opts.pib)
        else:
            writer = open_writer(opts.write, overwrite=opts.overwrite, pib=opts.pib) if opts.write else None
    except ExportError as exc:
        source.close()
        raise UsageError(str(exc)) from None
    if writer is not None:
        opened.append(writer.close)
    tables = make_tables(source.live, one_namespace=opts.netns is not None)
    keep = opts.ports.matches if opts.ports else None
    if session is None and opts.headless:
        # Headless mode prints and writes each row once and never reads it back: keep only the
        # recent rows late re-attribution needs, so memory stays flat on a long capture.
        session = Session(window=HEADLESS_WINDOW)
    elif session is None:
        # The TUI exports the whole session: rows that leave the window go to a disk spool.
        spool = PcapngSpool()
        if priv is not None:
            spool.detach()  # written through its descriptor: no path to allow, none to remove
        session = Session(spool=spool)
    # With libpcap the kernel filter already holds the ports: checking every segment again
    # in Python is pure cost (the engine still checks the datagram an ICMP error quotes).
    in_kernel = source.live and bool(opts.ports) and libpcap_available()
    tracer = None
    if opts.trace and source.live:
        from .tracer import SocketTracer

        # every namespace's record when the tables cover every namespace (containers)
        tracer = SocketTracer.start(
            all_namespaces=isinstance(tables, NamespaceTables), defer_threads=priv is not None
        )
        if tracer is not None:
            opened.append(tracer.close)
        else:
            notes.append(
                f"no kernel tracer ({SocketTracer.why_not}): rows are predictions from the socket table "
                "only, without the kernel's verdicts, and short connections may be unknown"
            )
    engine = Engine(
        source,
        tables,
        session,
        keep=keep,
        writer=writer,
        kernel_filtered=in_kernel,
        settle=opts.settle,
        tracer=tracer,
    )
    opened[:] = [engine.close]  # it closes the source, the writer and the tracer
    if opts.trace and source.live and tracer is None:
        engine.tracer_unavailable = SocketTracer.why_not or "the kernel tracer did not start"
    if priv is not None:
        _confine(opts, engine, priv)
    if tracer is not None:
        tracer.resume()  # its reader threads start confined (a no-op unless deferred)
        if opts.headless and not tracer.wait_ready(10.0):
            # Headless output is read by scripts: start capturing once the probes are attached
            # (a second or two). The TUI opens at once; rows before then say so.
            notes.append("the kernel tracer is still attaching: the first rows are predictions only")
    return engine


def _confine(opts: Options, engine: Engine, priv: Privsep) -> None:
    """Drop this process's privileges for good, now that everything is open; the helper
    keeps what the socket table needs. A helper that dies ends the session cleanly."""
    writable = [os.path.abspath(opts.write)] if opts.write and opts.write != STDOUT else []
    if not opts.headless:
        from .tui import dissect

        dissect.preload()  # scapy's import runs ldconfig: not once confined

    def lost(why: str) -> None:
        _HELPER_LOST[engine] = why
        engine.request_stop()

    try:
        priv.drop(writable, on_lost=lost)
    except OSError as exc:
        engine.close()
        raise UsageError(f"cannot drop privileges: {exc.strerror or exc}") from None


def make_app(opts: Options, engine: Engine) -> ConntuiApp:
    from .tui.app import ConntuiApp

    filter_text = " ".join(x for x in (str(opts.ports) if opts.ports else "", opts.expression) if x)
    return ConntuiApp(
        engine,
        iface=opts.interface if not opts.read else opts.read,
        filter_text=filter_text,
        export_path=opts.write,
        note=opts.lab_note,
    )


def print_counters(counters: Counters, out: IO[str]) -> None:
    """tcpdump-style closing lines."""
    out.write(f"{counters.segments} segments captured\n")
    pct = counters.attributed_pct()
    out.write(f"{counters.attributed} attributed to a local socket or the kernel ({pct:.1f}%)\n")
    out.write(f"{counters.undecodable} frames not decodable as TCP/UDP\n")
    if counters.filtered:
        out.write(f"{counters.filtered} segments left out by the port filter\n")
    out.write(f"{counters.kernel_drops} packets dropped by kernel\n")
    if counters.unread:
        out.write(f"{counters.unread} packets received but not read (in the capture ring when it ended)\n")


class _Stop(Exception):
    pass


def _stop_on_signals(engine: Engine) -> dict[int, Any]:
    """SIGINT, SIGTERM, SIGHUP: the first ends the capture cleanly (every packet in hand is
    printed and written, the file closed); a second one interrupts at once. Returns the
    previous handlers."""
    seen: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if seen:
            raise _Stop(signum)
        seen.append(signum)
        engine.request_stop()

    return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}


def run_headless(opts: Options, engine: Engine, out: IO[str]) -> int:
    def emit(rec: Record) -> None:
        if opts.json:
            out.write(json_line(rec.segment, rec.attribution, rec.seq) + "\n")
        else:
            out.write(text_line(rec.segment, rec.attribution) + "\n")

    if not opts.quiet:
        engine.on_record = emit
    src = engine.source
    what = f"listening on {opts.interface}" if src.live else f"reading from file {opts.read}"
    filt = " and ".join(x for x in (f"port {opts.ports}" if opts.ports else "", opts.expression) if x)
    # the capture's own handlers before "listening on": a signal from then on (a script
    # waits for that line) ends the capture cleanly, exit 0
    previous = _stop_on_signals(engine)
    sys.stderr.write(f"{PROG}: {what}{', filter: ' + filt if filt else ''}\n")
    sys.stderr.flush()
    code = 0
    reported: list[str] = []

    def writer_failed(message: str) -> None:  # once, when it happens; capture goes on
        reported.append(message)
        if isinstance(engine.writer, StdoutWriter):  # -w -: the output is gone, so is the point
            sys.stderr.write(f"{PROG}: {message}; stopping\n")
            engine.request_stop()
        else:
            sys.stderr.write(f"{PROG}: {message}; capture goes on without writing the file\n")
        sys.stderr.flush()

    engine.on_writer_error = writer_failed
    try:
        engine.run(count=opts.count, duration=opts.duration)
    except (KeyboardInterrupt, _Stop):
        pass
    except CaptureError as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        code = 1
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        engine.on_writer_error = None
        engine.close()
        with contextlib.suppress(BrokenPipeError):
            out.flush()
        print_counters(engine.session.counters, sys.stderr)
        code = _end_helper(engine) or code
        if engine.writer_error:
            if not reported:
                sys.stderr.write(f"{PROG}: {engine.writer_error}\n")
            # -w - | tshark -c 10: the reader had what it wanted (like --headless | head)
            broken = isinstance(engine.writer, StdoutWriter) and engine.writer.broken_pipe
            code = code if broken else 1
    return code


MAX_LADDERS = 20  # connections --ladder prints at most (it says how many more matched)
LADDER_LOOKBACK = 20_000  # rows kept to find a flow's segments from before FILTER first kept one


def run_ladder(opts: Options, engine: Engine, out: IO[str]) -> int:
    """``-r FILE --ladder FILTER``: the ladder of each connection with a segment FILTER keeps,
    as text on ``out`` and, with ``--ladder-svg``, as one SVG picture. The rows stream
    through: each ladder keeps its flow's last segments (``ladder.MAX_ARROWS``) and says how
    many it leaves out, so a file of millions of segments needs no more memory than a short
    one."""
    from .tui.ladder import LadderBuilder, flow_key, ladder_lines, ladders_svg

    flt = parse_display_filter(opts.ladder or "")
    builders: dict[object, LadderBuilder] = {}
    more: set[object] = set()  # other flows FILTER keeps (counted up to a bound)
    recent: deque[Record] = deque(maxlen=LADDER_LOOKBACK)

    def feed(rec: Record) -> None:
        key = flow_key(rec.segment)
        builder = builders.get(key)
        if builder is None and (not flt or flt(rec.segment, rec.attribution)):
            if len({id(b) for b in builders.values()}) < MAX_LADDERS:
                builder = builders[key] = LadderBuilder(rec.segment)
                for old in recent:
                    builder.add(old)
                if len(recent) == recent.maxlen and recent[0].segment.flags != "S":
                    builder.caveat = (
                        f"FILTER first kept this connection at row #{rec.seq}; its rows before "
                        f"#{recent[0].seq} are not searched"
                    )
            elif len(more) < 100_000:
                more.add(key)
        if builder is not None:
            known = len(builder.keys)
            builder.add(rec)
            if len(builder.keys) > known:
                # conntrack rewrote the connection: its other 4-tuples are its rows too
                for other in builder.keys:
                    builders.setdefault(other, builder)
        recent.append(rec)

    engine.on_record = feed
    try:
        engine.run()
    finally:
        engine.close()
    if not builders:
        sys.stderr.write(f"{PROG}: no segment in {opts.read} matches {opts.ladder!r}\n")
        return 1
    ladders = [b.build() for b in {id(b): b for b in builders.values()}.values()]
    for i, ladder in enumerate(ladders):
        out.write(("\n" if i else "") + "\n".join(ladder_lines(ladder)) + "\n")
    if more:
        many = f"{len(more)}" if len(more) < 100_000 else "over 100,000"
        sys.stderr.write(f"{PROG}: {many} more connections match; narrow the filter\n")
    if opts.ladder_svg:
        try:
            with open(opts.ladder_svg, "w" if opts.overwrite else "x", encoding="utf-8") as f:
                f.write(ladders_svg(ladders))
        except FileExistsError:
            sys.stderr.write(f"{PROG}: {opts.ladder_svg} exists (--overwrite replaces it)\n")
            return 1
        except OSError as exc:
            sys.stderr.write(f"{PROG}: cannot write {opts.ladder_svg}: {exc.strerror or exc}\n")
            return 1
    return 0


def _end_helper(engine: Engine) -> int:
    """Stop the privileged helper; 1 (after one line) if it had died mid-session."""
    priv = _PRIVSEP.pop(engine, None)
    if priv is None:
        return 0
    lost = _HELPER_LOST.get(engine)
    priv.close()
    if lost:
        sys.stderr.write(f"{PROG}: {lost}: the session ended (the file, if any, is complete)\n")
        return 1
    return 0


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real stream
        return False


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["lab"]:
        from .lab import main as lab_main

        return int(lab_main(argv[1:]))
    if argv[:1] == ["wireshark"]:
        from .wireshark import main as wireshark_main

        return int(wireshark_main(argv[1:]))
    if any(a.startswith("--extcap-") or a == "--capture" for a in argv):  # run by Wireshark
        from .wireshark.extcap import main as extcap_main

        return extcap_main(argv)
    # SIGHUP and SIGTERM while setting up end conntui as Ctrl-C does (what is open closed,
    # the tracer stopped) until the capture puts its own handlers in place
    held = threading.current_thread() is threading.main_thread()
    previous = (
        {s: signal.signal(s, _stopped_setting_up) for s in (signal.SIGHUP, signal.SIGTERM)} if held else {}
    )
    try:
        return _capture(argv)
    except KeyboardInterrupt as exc:  # one that came while a handler was being put back
        return interrupted(exc)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class SetUpStopped(KeyboardInterrupt):
    """SIGHUP or SIGTERM while conntui sets up; taken as Ctrl-C is (SIGINT raises
    KeyboardInterrupt itself)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stopped_setting_up(signum: int, frame: FrameType | None) -> NoReturn:
    raise SetUpStopped(signum)


def interrupted(exc: KeyboardInterrupt) -> int:
    """A signal before conntui captured: one line, and the shell's code for it (130 for
    Ctrl-C, 128 + the signal's number)."""
    signum = exc.signum if isinstance(exc, SetUpStopped) else signal.SIGINT
    what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{PROG}: {what}\n")
        sys.stderr.flush()
    return 128 + signum


def _capture(argv: list[str]) -> int:
    """A live capture or a file read: set up, then :func:`_run`; a signal while setting up
    ends it quietly."""
    notes: list[str] = []
    try:
        opts = parse_options(argv)
        if not opts.headless and not _is_terminal(sys.stdout):
            # a TUI nobody sees (a pipe, a file): lines instead, as tcpdump writes them
            opts.headless = True
            notes.append("standard output is not a terminal: running headless (one line per segment)")
        elif not opts.headless and opts.ladder is None and not _is_terminal(sys.stdin):
            # a TUI nobody can type to (stdin from /dev/null, a pipe, a background job):
            # Textual's input thread spun at full CPU on the end of input and q never came
            opts.headless = True
            notes.append("standard input is not a terminal: running headless (one line per segment)")
        engine = make_engine(opts, notes)
    except (UsageError, CaptureError) as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return exc.code if isinstance(exc, UsageError) else 1
    except KeyboardInterrupt as exc:  # while setting up (make_engine closed what it opened)
        return interrupted(exc)
    try:
        return _run(opts, engine, notes)
    except KeyboardInterrupt as exc:
        # before the capture's own handlers were in place (once they are, a signal ends
        # the capture cleanly, exit 0), or in the TUI before it took the terminal
        engine.stop()
        _end_helper(engine)
        return interrupted(exc)


def _run(opts: Options, engine: Engine, notes: list[str]) -> int:
    """Capture (headless, a ladder or the TUI) with the engine :func:`make_engine` built."""
    for note in notes:
        sys.stderr.write(f"{PROG}: note: {note}\n")
    if opts.ladder is not None:
        try:
            return run_ladder(opts, engine, sys.stdout)
        except BrokenPipeError:
            return 0
    if opts.headless:
        try:
            return run_headless(opts, engine, sys.stderr if opts.write == STDOUT else sys.stdout)
        except BrokenPipeError:
            # the reader went away (e.g. `| head`): stop quietly, like tcpdump
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0
    try:
        app = make_app(opts, engine)
    except ImportError as exc:
        engine.close()
        _end_helper(engine)
        sys.stderr.write(f"{PROG}: the TUI is not available ({exc}); use --headless\n")
        return 1
    priv = privsep_of(engine)
    if priv is not None:
        # the helper died: end the app as `q` does (the -w file is completed)

        def lost(why: str) -> None:
            _HELPER_LOST[engine] = why
            engine.request_stop()
            with contextlib.suppress(Exception):
                app.call_from_thread(app.exit)

        priv.client.on_lost = lost
    # SIGTERM / SIGHUP (a closed terminal) end the app like `q`: the -w file is completed.
    previous = {
        s: signal.signal(s, lambda signum, frame: app.exit()) for s in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        app.run()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        engine.stop()
    if _end_helper(engine):
        return 1
    if engine.writer_error:
        sys.stderr.write(f"{PROG}: {engine.writer_error}\n")
        return 1
    if engine.error:
        sys.stderr.write(f"{PROG}: {engine.error}\n")
        return 1
    return 0
