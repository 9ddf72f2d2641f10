#!/usr/bin/env python3
"""UI responsiveness under load: key press → first frame showing its effect, p50/p95.

The real ``ConntuiApp`` over a real ``Engine`` whose source makes ``--rate`` segments/s
(raw IPv4 TCP frames of 200 connections, attributed against a socket table that knows them;
the engine runs in its own thread in this process, as under the TUI). Textual's pilot
presses keys in a cycle (cursor up, follow, the ladder of the selected row's connection
opened and closed, filter open, filter "tcp" applied, filter cleared, pause, resume, help,
close help, next pane); ``App._display`` is wrapped so that the effect's time is the first
frame rendered (to terminal bytes) in which the effect holds. The peer is the same app with
no traffic (0 segments/s). Peak RSS is VmHWM.

A third run sends the same rate over 10 connections, after a 6 s warm-up: each then has over
10,000 segments in the session's window, and ``l`` opens the ladder of one of them (it scans
the window, keeps the flow's last ``ladder.MAX_ARROWS`` and says how many it leaves out; the
table gives the size of the flows it opened).

    python bench/ui.py              # 20,000 segments/s for 20 s (200 and 10 connections), and idle
    python bench/ui.py --smoke      # 3 s each
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TZ", "UTC")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import Checks, banner, env_with_repo, percentile, rss_mb, table  # noqa: E402
from _frames import GeneratedSource, socket_table  # noqa: E402

from conntui.engine import Engine, StaticTables  # noqa: E402
from conntui.session import Session  # noqa: E402

SIZE = (160, 48)


class FrameClock:
    """Wraps ``app._display``: after a key press, the time of the first frame where ``want`` holds."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.frames = 0
        self.want: Callable[[], bool] | None = None
        self.hit: float | None = None
        original = app._display
        from textual._compositor import CompositorUpdate

        def display(screen, renderable):  # type: ignore[no-untyped-def]
            original(screen, renderable)
            if renderable is None:
                return
            # what a real terminal driver would do: turn the update into escape sequences
            if isinstance(renderable, CompositorUpdate):
                renderable.render_segments(app.console)
            self.frames += 1
            if self.want is not None and self.hit is None and self.want():
                self.hit = time.perf_counter()

        app._display = display


def send_key(app, key: str) -> None:  # type: ignore[no-untyped-def]
    """What ``pilot.press`` does for one key, without waiting for the app to go idle (under a
    steady stream of ticks that wait measures the pilot, not the app)."""
    import unicodedata

    from textual import events
    from textual.keys import _get_unicode_name_from_key

    try:
        char: str | None = unicodedata.lookup(_get_unicode_name_from_key(key))
    except KeyError:
        char = key if len(key) == 1 else None
    event = events.Key(key, char)
    event.set_sender(app)
    app._driver.send_message(event)


def steps(app) -> list[tuple[str, str, Callable[[], bool]]]:  # type: ignore[no-untyped-def]
    """(label, key, effect) in a cycle that leaves the app where it started."""
    from conntui.tui.screens.help import HelpScreen
    from conntui.tui.screens.ladder import LadderScreen

    main = app.main
    seg = main.segment_list
    state: dict[str, object] = {}

    def focus_changed() -> bool:
        return app.focused is not state.get("focus")

    def ladder_shown() -> bool:
        screen = app.screen
        if not isinstance(screen, LadderScreen):
            return False
        ladder = screen.view.ladder
        state.setdefault("ladders", []).append(len(ladder.arrows) + ladder.elided)  # type: ignore[union-attr]
        return True

    return [
        ("cursor up", "up", lambda: not seg.following),
        ("follow (end)", "end", lambda: seg.following),
        ("ladder (l)", "l", ladder_shown),
        ("close ladder (escape)", "escape", lambda: app.screen is main),
        ("open filter (/)", "slash", lambda: main.filter_input.is_open),
        (
            "apply filter 'tcp' (enter)",
            "enter",
            lambda: (
                app.display_filter is not None
                and app.display_filter.text == "tcp"
                and seg.empty_text != "filtering…"
                and not main.filter_input.is_open
            ),
        ),
        (
            "clear filter (escape)",
            "escape",
            lambda: app.display_filter is None and seg.empty_text != "filtering…",
        ),
        ("pause (space)", "space", lambda: app.paused),
        ("resume (space)", "space", lambda: not app.paused),
        ("help (?)", "question_mark", lambda: isinstance(app.screen, HelpScreen)),
        ("close help (escape)", "escape", lambda: app.screen is main),
        ("next pane (tab)", "tab", focus_changed),
        ("previous pane (shift+tab)", "shift+tab", lambda: app.focused is seg),
    ], state


async def drive(
    rate: float, seconds: float, warmup: float, prefill: int, flows: int = 200
) -> dict[str, object]:
    from conntui.tui.app import ConntuiApp

    if rate:
        source = GeneratedSource(
            int(rate * (seconds + warmup + 30)),
            flows,
            rate=rate,
            batch=1024,
            stop_after=seconds + warmup + 30,
        )
    else:  # the idle peer: the same kind of rows, all there before the first key
        source = GeneratedSource(prefill, flows, batch=4096)
    engine = Engine(source, StaticTables(socket_table(flows)), Session())
    app = ConntuiApp(engine, iface="lo")
    lat: dict[str, list[float]] = {}
    timeouts = 0
    presses = 0
    async with app.run_test(size=SIZE) as pilot:
        clock = FrameClock(app)
        await asyncio.sleep(warmup)
        seg0 = engine.session.counters.segments
        frames0 = clock.frames
        t_start = time.perf_counter()
        cycle, state = steps(app)
        deadline = t_start + seconds
        while time.perf_counter() < deadline:
            for label, key, want in cycle:
                if time.perf_counter() >= deadline and label == "cursor up":
                    break
                state["focus"] = app.focused
                clock.hit = None
                clock.want = want
                t0 = time.perf_counter()
                send_key(app, key)
                limit = time.perf_counter() + 5.0
                while clock.hit is None and time.perf_counter() < limit:
                    await asyncio.sleep(0.001)
                presses += 1
                if os.environ.get("BENCH_UI_DEBUG"):
                    print(
                        f"{label}: {rss_mb():.0f} MB, {engine.session.counters.segments} segs, "
                        f"source {source.done}, t {time.monotonic() - source.t0:.1f}",
                        file=sys.stderr,
                    )
                if clock.hit is None:
                    timeouts += 1
                else:
                    lat.setdefault(label, []).append((clock.hit - t0) * 1e3)
                clock.want = None
                if label == "open filter (/)":
                    app.main.filter_input.value = "tcp"
                await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - t_start
        segs = engine.session.counters.segments - seg0
        ladder_cpu = ladder_cost(app)
        frames = clock.frames - frames0
        backlog = engine.session.last_seq - app.feed.last_seq if hasattr(app.feed, "last_seq") else None
        await pilot.press("q")
    engine.stop()
    all_lat = [x for v in lat.values() for x in v]
    return {
        "rate": rate,
        "flows": flows,
        "ladder_segments": sorted(state.get("ladders", [])),  # type: ignore[arg-type]
        "ladder_cpu_ms": ladder_cpu,
        "segs_per_s": segs / elapsed,
        "fps": frames / elapsed,
        "presses": presses,
        "timeouts": timeouts,
        "lat": lat,
        "p50": percentile(all_lat, 50),
        "p95": percentile(all_lat, 95),
        "max": max(all_lat) if all_lat else float("nan"),
        "backlog": backlog,
        "rss": rss_mb(),
        "peak": rss_mb(field="VmHWM"),
    }


def ladder_cost(app) -> float:  # type: ignore[no-untyped-def]
    """CPU time (this thread's, not wall time: a loaded machine does not inflate it) to
    build the ladder of the selected row's connection over the session's window, as ``l``
    does: the median of 5."""
    from conntui.tui.ladder import ladder_for

    rec = app.main.segment_list.selected_record
    if rec is None:
        return float("nan")
    times = []
    for _ in range(5):
        t0 = time.thread_time()
        ladder_for(app.engine.session.window(), rec)
        times.append((time.thread_time() - t0) * 1e3)
    return sorted(times)[2]


def one_run(rate: float, seconds: float, warmup: float, prefill: int, flows: int = 200) -> dict:  # type: ignore[type-arg]
    """One run in a fresh process, so RSS figures are its own."""
    cmd = [sys.executable, __file__, "--one", json.dumps([rate, seconds, warmup, prefill, flows])]
    out = subprocess.run(
        cmd,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        timeout=seconds + warmup + 300,
        env=env_with_repo(),
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="3 s per run (CI)")
    ap.add_argument("--rate", type=float, default=20_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--no-idle", action="store_true", help="skip the idle (0 segments/s) peer run")
    ap.add_argument(
        "--no-long",
        action="store_true",
        help="skip the run over 10 connections (ladders of 10,000+ segments)",
    )
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(asyncio.run(drive(*json.loads(args.one)))))
        return 0
    seconds = 3.0 if args.smoke else min(args.seconds, 300.0)
    warmup = 1.0 if args.smoke else 3.0
    banner(
        f"UI: key press → effect on screen, ConntuiApp at {args.rate:,.0f} segments/s "
        f"vs idle ({SIZE[0]}x{SIZE[1]})"
    )
    try:
        import textual  # noqa: F401

        from conntui.tui.app import ConntuiApp  # noqa: F401
    except ImportError as exc:
        print(f"   skipped: the TUI is not available ({exc})")
        return 1 if args.smoke else 0  # CI installs it: not being able to run is a failure there
    runs = [one_run(args.rate, seconds, warmup, 0)]
    if not args.no_long:
        # 6 s at 20k/s over 10 connections: 12,000 segments each before the first key
        runs.append(one_run(args.rate, seconds, max(warmup, 6.0), 0, 10))
    if not args.no_idle:
        runs.append(one_run(0, seconds, 1.0, int(args.rate * 2)))

    def tag(r: dict) -> str:  # type: ignore[type-arg]
        return f"{r['rate']:,.0f}/s, {r['flows']} conns" if r["rate"] else "idle (peer)"

    rows = []
    for r in runs:
        sizes = r["ladder_segments"]
        rows.append(
            [
                tag(r),
                f"{min(sizes):,}-{max(sizes):,}" if sizes else "—",
                f"{r['ladder_cpu_ms']:.1f} ms",
                f"{r['segs_per_s']:,.0f}",
                f"{r['fps']:.1f}",
                r["presses"],
                f"{r['p50']:.1f} ms",
                f"{r['p95']:.1f} ms",
                f"{r['max']:.1f} ms",
                r["timeouts"],
                f"{r['rss']:.0f} MB",
                f"{r['peak']:.0f} MB",
            ]
        )
    print(
        table(
            [
                "offered",
                "ladder: flow size",
                "ladder build CPU",
                "stored seg/s",
                "frames/s",
                "presses",
                "p50",
                "p95",
                "max",
                "no effect in 5 s",
                "RSS",
                "peak RSS",
            ],
            rows,
        )
    )
    keys = list(runs[0]["lat"])
    per = []
    for k in keys:
        row: list[object] = [k]
        for r in runs:
            v = r["lat"].get(k, [])
            row += [
                len(v),
                f"{percentile(v, 50):.1f} ms" if v else "—",
                f"{percentile(v, 95):.1f} ms" if v else "—",
            ]
        per.append(row)
    heads = ["key"]
    for r in runs:
        heads += [f"n {tag(r)}", f"p50 {tag(r)}", f"p95 {tag(r)}"]
    print(table(heads, per))
    checks = Checks("ui", smoke=args.smoke)
    for r in runs:
        tag = f"{r['rate']:,.0f}/s" if r["rate"] else "idle"
        checks.expect(r["presses"] > 0, f"{tag}: no key press was made")
        checks.expect(
            r["timeouts"] == 0, f"{tag}: {r['timeouts']} key presses had no effect on screen in 5 s"
        )
        checks.expect(r["fps"] > 0, f"{tag}: no frame was drawn")
        if r["rate"]:
            checks.expect(r["segs_per_s"] > 0, f"{tag}: the session stored no segment")
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
