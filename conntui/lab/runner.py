"""Running one scenario: namespaces up, conntui capturing, traffic, verdicts, teardown.

The lab's own output, in headless JSON mode, is one stream on stdout: conntui's rows,
passed through unchanged, interleaved with ``{"lab": ...}`` lines:

* ``{"lab": "start", "scenario", "namespaces", "iface", "narrative", "node"}``
* ``{"lab": "event", "what", "ts", "pid", "fd", ...}``: ground truth from the scenario's
  programs (who listened, connected, accepted, received what, which errno);
* ``{"lab": "counters", "host", "delta": {...}}``: kernel counters (``/proc/net/netstat``,
  ``/proc/net/snmp``) that changed inside a namespace during a step;
* ``{"lab": "check", "name", "ok", "detail", "about"}``: the scenario's expectations;
* ``{"lab": "end", "ok", "checks", "failed", "error"}``.

A person reading text sees the narrative and progress notes on stderr.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import IO, Any

from .checks import Check, Result, Row, nothing_unknown, who
from .netns import LabError, Topology, exec_prefix, ns_run
from .procs import Actor, NodeScript, Program, node_binary, package_env

Event = dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    """One teaching scenario: what to read, what to run, what must be seen."""

    name: str
    summary: str  # one line, for `conntui lab`
    narrative: str  # what to watch, printed before the capture starts
    traffic: Callable[[Lab], None]  # set up programs and run bounded traffic
    expect: Callable[[Result], list[Check]]  # verdicts over the run
    two_hosts: bool = False  # a client namespace on a veth pair, or one namespace's loopback
    uses_node: bool = False  # Node's net module is used when node is on PATH
    conntui_args: tuple[str, ...] = ()  # extra options for conntui in this scenario
    # Runs before conntui starts, so its first socket table already has what this makes
    # (a socket made later waits for a refresh; a TPROXY miss is not looked up again).
    setup: Callable[[Lab], None] | None = None


class Aborted(Exception):
    """The person (or the TUI closing) stopped the lab."""


class Emitter:
    """Where the lab's lines go: stdout as JSON, stdout as text, or a log file (TUI)."""

    def __init__(self, out: IO[str], *, as_json: bool, notes: IO[str]) -> None:
        self.out = out
        self.as_json = as_json
        self.notes = notes
        self.lock = threading.Lock()

    def _write(self, stream: IO[str], text: str) -> None:
        with self.lock:
            try:
                stream.write(text + "\n")
                stream.flush()
            except (BrokenPipeError, ValueError):
                pass

    def lab(self, obj: dict[str, Any]) -> None:
        if self.as_json:
            self._write(self.out, json.dumps(obj))
        else:
            kind = obj.get("lab")
            rest = {k: v for k, v in obj.items() if k not in ("lab", "narrative")}
            self._write(self.out, f"# lab {kind}: " + " ".join(f"{k}={v}" for k, v in rest.items()))

    def row(self, line: str, row: Row) -> None:
        self._write(self.out, line if self.as_json else text_row(row))

    def say(self, text: str) -> None:
        self._write(self.notes, text)


def text_row(row: Row) -> str:
    """A conntui row in one line, for ``conntui lab NAME --headless`` without ``--json``."""
    t = time.strftime("%H:%M:%S", time.localtime(row["ts"])) + f".{int(row['ts'] % 1 * 1e6):06d}"
    sender = who(row.get("sender"))
    return (
        f"{t} {row['proto']} {row['src']}:{row['sport']} > {row['dst']}:{row['dport']} "
        f"[{row['flags'] or '-'}] len {row['payload_len']}  {row['match']} → {who(row.get('receiver'))}"
        f"  (from {sender})  {row.get('explain', '')}"
    )


def parse_counters(text: str) -> dict[str, int]:
    """``/proc/net/netstat`` and ``/proc/net/snmp``: header/value line pairs → flat dict."""
    out: dict[str, int] = {}
    lines = text.splitlines()
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        hk, _, names = head.partition(":")
        vk, _, values = vals.partition(":")
        if hk != vk:
            continue
        for name, value in zip(names.split(), values.split(), strict=False):
            if value.lstrip("-").isdigit():
                out[f"{hk}.{name}"] = int(value)
    return out


class Lab:
    """What a scenario's traffic script gets: its hosts, programs and ways to report."""

    def __init__(self, topo: Topology, emit: Emitter, *, use_node: bool, abort: threading.Event) -> None:
        self.topo = topo
        self.emit = emit
        self.use_node = use_node and node_binary() is not None
        self.abort = abort
        self.programs: list[Program] = []
        self.events: list[Event] = []
        self.state: dict[str, Any] = {}  # what ``setup`` hands on to ``traffic``
        self._lock = threading.Lock()

    # -- hosts ---------------------------------------------------------------------

    def ns(self, host: str) -> str:
        """The namespace of ``host``: "server", "client", or one the scenario made itself
        (``Topology.add_namespace(topo.extra(host))``)."""
        if host == "server":
            return self.topo.server
        if host == "client":
            return self.topo.client
        return self.topo.extra(host)

    @property
    def server_addr(self) -> str:
        return self.topo.server_addr

    @property
    def client_addr(self) -> str:
        return self.topo.client_addr

    def sh(self, host: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a short command (nft, sysctl, ss) inside a host's namespace."""
        self.check_abort()
        return ns_run(self.ns(host), *cmd, check=check)

    # -- programs ----------------------------------------------------------------------

    def actor(self, name: str, host: str = "server") -> Actor:
        self.check_abort()
        a = Actor(self.ns(host), name)
        self.programs.append(a)
        return a

    def node(self, source: str, name: str, host: str = "server", args: tuple[str, ...] = ()) -> NodeScript:
        self.check_abort()
        n = NodeScript(self.ns(host), source, name, args)
        self.programs.append(n)
        return n

    def stop_programs(self) -> None:
        for p in reversed(self.programs):
            p.stop()
        self.programs.clear()

    # -- reporting -------------------------------------------------------------------------

    def event(self, what: str, **fields: Any) -> Event:
        """Record and emit one piece of ground truth."""
        ev: Event = {"lab": "event", "what": what, "ts": time.time(), **fields}
        with self._lock:
            self.events.append(ev)
        self.emit.lab(ev)
        return ev

    def say(self, text: str) -> None:
        self.emit.say(f"lab: {text}")

    def counters(self, host: str = "server") -> dict[str, int]:
        out = ns_run(self.ns(host), "cat", "/proc/net/netstat", "/proc/net/snmp").stdout
        return parse_counters(out)

    def counter_delta(
        self, before: dict[str, int], host: str = "server", names: tuple[str, ...] = ()
    ) -> dict[str, int]:
        """Counters that changed since ``before`` (or the named ones), emitted and returned."""
        after = self.counters(host)
        delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        for n in names:
            delta.setdefault(n, 0)
        if names:
            delta = {k: delta[k] for k in names}
        self.event("counters", host=host, delta=delta)
        return delta

    # -- time --------------------------------------------------------------------------------

    def check_abort(self) -> None:
        if self.abort.is_set():
            raise Aborted

    def pause(self, seconds: float) -> None:
        """Sleep, but stop at once if the lab is being stopped."""
        if self.abort.wait(seconds):
            raise Aborted


# -- conntui, captured headless ---------------------------------------------------------------


class HeadlessCapture:
    """``conntui -i IFACE --headless --json`` inside the server namespace."""

    def __init__(self, topo: Topology, emit: Emitter, extra: list[str], cap_seconds: float) -> None:
        self.emit = emit
        self.rows: list[Row] = []
        self.stderr_lines: list[str] = []
        self._ready = threading.Event()
        argv = [
            sys.executable, "-m", "conntui", "-i", topo.capture_iface,
            "--headless", "--json", "--duration", f"{cap_seconds:g}", *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            [*exec_prefix(topo.server), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=package_env(),
            start_new_session=True,
        )
        self._out = threading.Thread(target=self._read_out, name="lab-conntui-out", daemon=True)
        self._err = threading.Thread(target=self._read_err, name="lab-conntui-err", daemon=True)
        self._out.start()
        self._err.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            self.rows.append(row)
            self.emit.row(line, row)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip())
            if "listening on" in line:
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 15.0) -> None:
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            tail = "; ".join(self.stderr_lines[-3:]) or "no output"
            raise LabError(f"conntui did not start capturing: {tail}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            except ProcessLookupError:
                pass
        self._out.join(timeout)
        self._err.join(timeout)


def read_pcapng_rows(path: str) -> list[Row]:
    """conntui's own rows, restored from the attributions it wrote into a pcapng."""
    proc = subprocess.run(
        [sys.executable, "-m", "conntui", "-r", path, "--headless", "--json"],
        capture_output=True,
        text=True,
        env=package_env(),
        timeout=60,
    )
    rows = []
    for line in proc.stdout.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


# -- one run ---------------------------------------------------------------------------------------


@dataclass
class RunOptions:
    headless: bool = False
    as_json: bool = False
    use_node: bool = True
    settle: float = 0.8  # seconds between the last traffic and stopping conntui
    cap_seconds: float = 120.0  # conntui's own --duration, in case the lab is killed
    tui_start_delay: float = 2.5  # seconds the TUI gets to appear before traffic starts
    conntui_args: tuple[str, ...] = ()


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


def evaluate(scn: Scenario, events: list[Event], rows: list[Row]) -> list[Check]:
    """The scenario's checks plus the generic one (no ``unknown`` rows)."""
    result = Result(events, rows)
    try:
        checks = scn.expect(result)
    except KeyError as exc:  # a piece of ground truth is missing: the run did not finish
        checks = [Check("scenario finished", False, f"missing ground truth: {exc}", about="kernel")]
    return [*checks, nothing_unknown(result)]


def run_scenario(scn: Scenario, opts: RunOptions) -> int:
    """Build, run, check and tear down one scenario. Exit code: 0 all checks passed, 3 some
    failed, 1 the lab itself could not run, 130 interrupted."""
    topo = Topology(two_hosts=scn.two_hosts)
    abort = threading.Event()
    if opts.headless:
        emit = Emitter(sys.stdout, as_json=opts.as_json, notes=sys.stderr)
    else:
        log = open(  # noqa: SIM115 - closed in finally
            os.path.join(tempfile.gettempdir(), f"conntui-lab-{os.getpid()}.log"), "w", encoding="utf-8"
        )
        emit = Emitter(log, as_json=True, notes=log)
    lab = Lab(topo, emit, use_node=opts.use_node, abort=abort)
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    code = 1
    try:
        topo.build()
        start = {
            "lab": "start",
            "scenario": scn.name,
            "namespaces": topo.namespaces(),
            "iface": topo.capture_iface,
            "server_addr": topo.server_addr,
            "client_addr": topo.client_addr,
            "node": lab.use_node if scn.uses_node else None,
            "narrative": scn.narrative,
        }
        emit.lab(start)
        run = _run_headless if opts.headless else _run_tui
        code = run(scn, lab, emit, opts)
    except LabError as exc:
        sys.stderr.write(f"conntui lab: {exc}\n")
        emit.lab({"lab": "end", "ok": False, "error": str(exc)})
        code = 1
    except (KeyboardInterrupt, _Stop, Aborted):
        abort.set()
        sys.stderr.write("conntui lab: interrupted; tearing down\n")
        emit.lab({"lab": "end", "ok": False, "error": "interrupted"})
        code = 130
    except Exception as exc:  # a bug in a scenario: still tear down, and say what broke
        traceback.print_exc(file=sys.stderr)
        emit.lab({"lab": "end", "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        code = 1
    finally:
        # Teardown must not be interrupted half-way by a second Ctrl-C.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            abort.set()
            lab.stop_programs()
            topo.teardown()
        finally:
            signal.signal(signal.SIGINT, old_int)
            for s, h in previous.items():
                signal.signal(s, h)
            if emit.out is not sys.stdout:
                emit.out.close()
    return code


def _finish(scn: Scenario, lab: Lab, rows: list[Row], error: str | None, console: IO[str]) -> int:
    """Evaluate the checks, emit them, and tell the person the verdicts."""
    checks = evaluate(scn, lab.events, rows)
    for c in checks:
        lab.emit.lab(c.to_dict())
    failed = [c for c in checks if not c.ok]
    lab.emit.lab(
        {
            "lab": "end",
            "ok": not failed and not error,
            "checks": len(checks),
            "failed": len(failed),
            "error": error,
        }
    )
    console.write(f"\n{scn.name}: {len(checks) - len(failed)} of {len(checks)} checks passed\n")
    for c in checks:
        console.write(f"  [{'ok' if c.ok else 'FAIL'}] ({c.about}) {c.name}: {c.detail}\n")
    if error:
        console.write(f"  the scenario stopped early: {error}\n")
    console.flush()
    if error:
        return 1
    return 3 if failed else 0


def _run_headless(scn: Scenario, lab: Lab, emit: Emitter, opts: RunOptions) -> int:
    """conntui headless in the server namespace; the traffic on this thread; verdicts."""
    emit.say(scn.narrative.rstrip() + "\n")
    if scn.setup is not None:
        scn.setup(lab)
    cap = HeadlessCapture(lab.topo, emit, [*scn.conntui_args, *opts.conntui_args], opts.cap_seconds)
    error: str | None = None
    try:
        cap.wait_ready()
        try:
            scn.traffic(lab)
        except LabError as exc:
            error = str(exc)
            lab.say(f"the scenario stopped early: {exc}")
        time.sleep(opts.settle)
    finally:
        cap.stop()
        for line in cap.stderr_lines:
            emit.say(f"conntui: {line}")
    return _finish(scn, lab, cap.rows, error, sys.stderr)


def _run_tui(scn: Scenario, lab: Lab, emit: Emitter, opts: RunOptions) -> int:
    """The TUI in the foreground (it owns the terminal); traffic on a thread; verdicts after."""
    pcap = os.path.join(tempfile.gettempdir(), f"conntui-lab-{os.getpid()}.pcapng")
    out = sys.stdout
    out.write(scn.narrative.rstrip() + "\n\n")
    out.write(
        f"Opening conntui on {lab.topo.capture_iface} in namespace {lab.topo.server}; traffic starts in "
    )
    out.write(f"{opts.tui_start_delay:g} s. Quit the TUI to tear the lab down.\n")
    out.flush()
    if scn.setup is not None:
        scn.setup(lab)
    time.sleep(1.5)
    argv = [
        sys.executable, "-m", "conntui", "-i", lab.topo.capture_iface, "-w", pcap,
        "--lab-note", scn.narrative,  # what to watch stays on screen (the TUI covers this text)
        *scn.conntui_args, *opts.conntui_args,
    ]  # fmt: skip
    errors: list[str] = []

    def traffic() -> None:
        try:
            lab.pause(opts.tui_start_delay)
            scn.traffic(lab)
            lab.say("traffic done; the programs keep their sockets until you quit")
        except Aborted:
            pass
        except LabError as exc:
            errors.append(str(exc))
        except Exception as exc:  # shown after the TUI closes
            errors.append(f"{type(exc).__name__}: {exc}")

    tui = subprocess.Popen([*exec_prefix(lab.topo.server), *argv], env=package_env())
    worker = threading.Thread(target=traffic, name="lab-traffic", daemon=True)
    worker.start()
    interrupted = False

    def on_int(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        interrupted = True

    old_int = signal.signal(signal.SIGINT, on_int)
    try:
        while tui.poll() is None:
            try:
                tui.wait(0.5)
            except subprocess.TimeoutExpired:
                if interrupted:
                    tui.terminate()
    finally:
        signal.signal(signal.SIGINT, old_int)
        lab.abort.set()
        worker.join(30)
    if tui.returncode not in (0, None) and not os.path.exists(pcap):
        sys.stderr.write(f"conntui lab: conntui exited with {tui.returncode}; try --headless\n")
        return 1
    rows = read_pcapng_rows(pcap) if os.path.exists(pcap) else []
    out.write(f"\n{scn.name}: what the programs reported ({len(rows)} segments captured, saved in {pcap};")
    out.write(f" lab log {emit.out.name}):\n")
    for e in lab.events:
        out.write("  " + " ".join(f"{k}={v}" for k, v in e.items() if k not in ("lab", "ts")) + "\n")
    return _finish(scn, lab, rows, errors[0] if errors else None, out)
