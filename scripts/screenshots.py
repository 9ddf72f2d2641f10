#!/usr/bin/env python3
"""Regenerate ``screenshots/``: the real app on real loopback traffic it makes itself.

    sudo /path/to/venv/bin/python scripts/screenshots.py [--frozen | --labs-only]

As root it starts, for at most a minute, a small TCP server (``demo-server``, port 18080),
a client that connects to it every few hundred milliseconds (``demo-client``), a listener
that never accepts (``demo-backlog``, port 18081, so segments wait in its accept queue), a
UDP server and client (``demo-udp-server``, port 18053), a connection attempt to a closed
port (18099) and, when podman is installed, a busybox ``httpd`` container with port 18082
published (``demo-web-client`` fetches from it) — then captures on ``lo`` with the same
engine and app ``sudo conntui -i lo -p ...`` runs (and, for the container, a second app on
every device: ``-i any -p 18082,80``), and saves SVG screenshots (and PNGs when
``rsvg-convert`` is installed: apt-get install librsvg2-bin): the main view, details, the
ladder of a connection, a filter, the sockets, an 80x24 terminal, the help, a container's
rows and the ladder of one of its connections (through podman's NAT).

It also runs two lab scenarios (``conntui lab stale-client`` and ``redirect``, headless, with
``-w``) and draws a ladder of each with ``conntui -r FILE --ladder PORT --ladder-svg``:
``ladder-stale-client.svg`` (the README shows it) and ``ladder-redirect.svg``, with their
text beside them (``.txt``).

Without root, or with ``--frozen``, it uses the frozen data of the TUI tests instead (no
container, no lab).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "screenshots"
SIZE = (160, 48)
sys.path.insert(0, str(ROOT))

# Each actor names itself (PR_SET_NAME) so the screen shows who is who.
PRELUDE = """
import ctypes, socket, sys, time
ctypes.CDLL(None).prctl(15, NAME.encode(), 0, 0, 0)
END = time.time() + DURATION
"""
SERVER = """
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 18080)); srv.listen(64); srv.settimeout(0.5)
while time.time() < END:
    try:
        conn, _ = srv.accept()
    except socket.timeout:
        continue
    conn.settimeout(2)
    try:
        data = conn.recv(1024)
        conn.sendall(b"HTTP/1.1 200 OK\\r\\ncontent-length: 5\\r\\n\\r\\nhello")
        conn.recv(1024)  # keep-alive: the client closes first
    except OSError:
        pass
    conn.close()
"""
CLIENT = """
import os
# Fresh client ports: the kernel may otherwise reuse the 4-tuple of a connection still in
# TIME_WAIT on the server side (loopback, net.ipv4.tcp_tw_reuse=2), a case the core's demux
# does not follow yet (see the TUI issue notes).
port = 20000 + (os.getpid() * 7) % 30000
while time.time() < END:
    port += 1
    try:
        c = socket.socket()
        c.settimeout(2)
        c.bind(("127.0.0.1", port))
        c.connect(("127.0.0.1", 18080))
        c.sendall(b"GET / HTTP/1.1\\r\\nHost: demo\\r\\n\\r\\n")
        c.recv(1024)
        time.sleep(0.8)  # a connection that lives long enough to be seen in the socket table
        c.close()
    except OSError:
        pass
    try:  # nobody listens on 18099: the kernel answers RST
        socket.create_connection(("127.0.0.1", 18099), timeout=1)
    except OSError:
        pass
    time.sleep(0.4)
"""
BACKLOG = """
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 18081)); srv.listen(8)
clients = []
while time.time() < END:
    if len(clients) < 3:  # connected, never accepted: they sit in the accept queue
        c = socket.create_connection(("127.0.0.1", 18081))
        c.sendall(b"hello, is anybody there?")
        clients.append(c)
    time.sleep(1.0)
"""
UDP_SERVER = """
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 18053)); s.settimeout(0.5)
while time.time() < END:
    try:
        data, peer = s.recvfrom(512)
    except socket.timeout:
        continue
    s.sendto(b"answer:" + data, peer)
"""
UDP_CLIENT = """
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("127.0.0.1", 18053)); s.settimeout(1)
while time.time() < END:
    s.send(b"query")
    try:
        s.recv(512)
    except OSError:
        pass
    time.sleep(0.7)
"""


WEB_CLIENT = """
while time.time() < END:
    try:  # the container's httpd, through podman's published port (DNAT)
        c = socket.create_connection(("127.0.0.1", 18082), timeout=2)
        c.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        while c.recv(4096):
            pass
        c.close()
    except OSError:
        pass
    time.sleep(0.6)
"""


def start_actor(name: str, body: str, duration: float) -> subprocess.Popen[bytes]:
    code = f"NAME = {name!r}\nDURATION = {duration}\n" + textwrap.dedent(PRELUDE) + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code])


def for_rsvg(svg: str) -> str:
    """Textual's SVG as rsvg-convert should draw it: rsvg drops the no-break spaces that
    start or end a ``<text>`` unless told to keep them, and every field after one then
    runs into the one before (``19:46:40.000000lo``). Browsers keep them anyway."""
    return svg.replace("<svg ", '<svg xml:space="preserve" ', 1)


def to_png(svg: Path) -> None:
    if shutil.which("rsvg-convert"):
        subprocess.run(
            ["rsvg-convert", "-o", str(svg.with_suffix(".png"))],
            input=for_rsvg(svg.read_text(encoding="utf-8")).encode(),
            check=False,
        )


def saver(app, saved: list[Path]):  # type: ignore[no-untyped-def]
    """``save(name)``: the app's screen as ``screenshots/NAME.svg`` (and ``.png``)."""

    def save(name: str) -> None:
        path = OUT / f"{name}.svg"
        app.save_screenshot(str(path))
        to_png(path)
        saved.append(path)

    return save


async def shoot(app, frozen: bool) -> list[Path]:  # type: ignore[no-untyped-def]
    from conntui.tui.app import ConntuiApp

    assert isinstance(app, ConntuiApp)
    saved: list[Path] = []
    save = saver(app, saved)

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2 if frozen else 6.0)
        await pilot.press("space")  # pause the display so every picture shows the same rows
        await pilot.pause(0.3)
        await pilot.press("space")
        # the detail pane follows the newest row at most twice a second: a picture where
        # it shows the selected row
        for _ in range(60):
            await pilot.pause(0.05)
            rec = app.main.segment_list.selected_record
            if rec is not None and rec is app.main.detail_pane.record:
                break
        save("main")
        # details of a SYN handed to the listener
        await pilot.press("slash", *"match:listener", "enter")
        await pilot.pause(0.3)
        # a SYN of a few seconds ago: its connection is over, every row of it settled
        await pilot.press("end", *(() if frozen else ("up", "up", "up")), "enter")
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        save("details")
        # that SYN's connection as a ladder: listen()'s fd gets the SYN, accept()'s the rest
        await pilot.press("l")
        await pilot.pause(0.5)
        save("ladder")
        await pilot.press("escape")
        await pilot.pause(0.3)
        await pilot.press("escape")
        await pilot.pause(0.3)
        # a port filter, on the list and the socket view at once, and the filter line
        # opened again over them (as ``/`` shows it, with the filter in force)
        port = "8080" if frozen else "18080,18081"
        await pilot.press("slash", *port, "enter")
        await pilot.pause(0.3)
        await pilot.press("up", "up")
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        await pilot.press("slash")
        await pilot.pause(0.3)
        save("filter")
        await pilot.press("escape")  # closes the line and clears the filter
        await pilot.pause(0.3)
        # the socket view, focused and maximized (the command palette's "Maximize"), so
        # that whole lines show: a listener's accept queue over the last seconds is at
        # the end of its line, past what the pane shows at this width
        await pilot.press("tab")
        await pilot.pause(1.2)
        app.screen.maximize(app.main.socket_tree)
        await pilot.pause(0.3)
        save("sockets")
        app.screen.minimize()
        await pilot.pause(0.3)
        await pilot.press("shift+tab", "shift+tab")
        # an 80x24 terminal: the columns that matter most, the rest in the details
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.6)
        save("narrow-80x24")
        await pilot.resize_terminal(*SIZE)
        await pilot.pause(0.3)
        await pilot.press("question_mark")
        await pilot.pause(0.3)
        save("help")
        await pilot.press("escape", "q")
    return saved


async def shoot_container(app) -> list[Path]:  # type: ignore[no-untyped-def]
    """The container's rows and the ladder of one of its connections (a capture on every
    device: the published port's traffic leaves lo for podman's bridge)."""
    saved: list[Path] = []
    save = saver(app, saved)

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(5.0)
        # a SYN that httpd's listener took, its connection as a ladder: the client's fd,
        # podman's DNAT+SNAT between the namespaces, httpd's listener and accepted fd
        await pilot.press("slash", *"ctr:conntui-demo-web match:listener", "enter")
        await pilot.pause(0.5)
        await pilot.press("end", "up", "up", "up")
        await pilot.pause(0.3)
        await pilot.press("l")
        await pilot.pause(0.5)
        save("ladder-container")
        await pilot.press("escape")
        await pilot.pause(0.3)
        # the rows of the container's httpd (ctr: filter), one selected with its details
        await pilot.press("escape", "slash", *"ctr:conntui-demo-web", "enter")
        await pilot.pause(0.5)
        await pilot.press("space")  # the same rows while the picture is taken
        await pilot.press("end", "up", "up", "up", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause(0.5)
        save("container")
        await pilot.press("space", "q")
    return saved


def frozen_app():  # type: ignore[no-untyped-def]
    os.environ["TZ"] = "UTC"
    time.tzset()
    from conntui.tui.app import ConntuiApp
    from tests.tui.scenario import fixed_clock, make_engine

    return ConntuiApp(make_engine(), iface="lo", clock=fixed_clock)


def container_app():  # type: ignore[no-untyped-def]
    from conntui.cli import make_app, make_engine, parse_options

    opts = parse_options(["-i", "any", "-p", "18082,80"])  # the published port, httpd's
    engine = make_engine(opts)
    return make_app(opts, engine)


def live_app():  # type: ignore[no-untyped-def]
    from conntui.cli import make_app, make_engine, parse_options

    # like a person would on a busy host: capture only the demo's ports
    opts = parse_options(["-i", "lo", "-p", "18053,18080-18081,18099"])
    engine = make_engine(opts)
    return make_app(opts, engine)


def lab_ladder(scenario: str, pick: str, saved: list[Path]) -> None:
    """``conntui lab SCENARIO`` headless with ``-w``, then the ladder of the connection
    ``pick`` names in its events, as ``conntui -r FILE --ladder PORT --ladder-svg`` draws it."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        pcap = Path(d) / "lab.pcapng"
        run = [sys.executable, "-m", "conntui", "lab", scenario, "--headless", "--json", "--no-node"]
        for attempt in range(3):
            lab = subprocess.run(
                [*run, "--", "-w", str(pcap), "--overwrite"],
                capture_output=True,
                text=True,
                timeout=180,
                cwd=ROOT,
            )
            if lab.returncode == 0:
                break
            # a check failed: on a loaded machine the kernel tracer can attach too late for
            # the first rows; the picture is of a run whose checks all passed
            print(f"  ({scenario}, run {attempt + 1}: a check failed; again)")
        events = [json.loads(x) for x in lab.stdout.splitlines() if x.startswith('{"lab": "event"')]
        ev = next((e for e in events if e["what"] == "connect" and e.get("role") in (pick, None)), None)
        if ev is None:
            print(f"  (no ladder of {scenario}: the lab reported no connect ({lab.stderr.strip()[-200:]}))")
            return
        port = ev["local"].rsplit(":", 1)[1]
        svg = OUT / f"ladder-{scenario}.svg"
        done = subprocess.run(
            [
                *(sys.executable, "-m", "conntui", "-r", str(pcap)),
                "--ladder",
                port,
                "--ladder-svg",
                str(svg),
                "--overwrite",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        if done.returncode != 0:
            print(f"  (no ladder of {scenario}: {done.stderr.strip()})")
            return
        svg.with_suffix(".txt").write_text(done.stdout, encoding="utf-8")
        to_png(svg)
        saved.append(svg)


def main() -> int:
    frozen = "--frozen" in sys.argv or os.geteuid() != 0
    if "--labs-only" in sys.argv and not frozen:  # only the two lab ladders
        saved: list[Path] = []
        lab_ladder("stale-client", "client-before", saved)
        lab_ladder("redirect", "client", saved)
        print("saved", *(str(p.relative_to(ROOT)) for p in saved))
        return 0
    OUT.mkdir(exist_ok=True)
    actors: list[subprocess.Popen[bytes]] = []
    saved: list[Path] = []
    with contextlib.ExitStack() as stack:
        container = False
        if frozen:
            app = frozen_app()
        else:
            duration = 90.0  # (stopped when the pictures are taken; a loaded machine is slow)
            if shutil.which("podman") and shutil.which("busybox"):
                from tests.e2e import podkit

                started = stack.enter_context(podkit.containers())
                web = podkit.run(started, "/bin/httpd", "-f", "-p", "80", "-h", "/www", publish="18082:80")
                # the screenshots' name for it (podkit's is random)
                podkit.podman("rename", started[-1], "conntui-demo-web")
                started[-1] = "conntui-demo-web"
                podkit.listener_fd(web.pid, 80)
                container = True
            actors.append(start_actor("demo-server", SERVER, duration))
            actors.append(start_actor("demo-udp-server", UDP_SERVER, duration))
            time.sleep(0.5)
            app = live_app()  # capture starts before the clients: handshakes are seen whole
            actors.append(start_actor("demo-backlog", BACKLOG, duration))
            actors.append(start_actor("demo-client", CLIENT, duration))
            actors.append(start_actor("demo-udp-client", UDP_CLIENT, duration))
            if container:
                actors.append(start_actor("demo-web-client", WEB_CLIENT, duration))
        try:
            saved += asyncio.run(shoot(app, frozen))
            if container:
                saved += asyncio.run(shoot_container(container_app()))
        finally:
            for p in actors:
                p.terminate()
            for p in actors:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
    if not frozen:
        lab_ladder("stale-client", "client-before", saved)
        lab_ladder("redirect", "client", saved)
    what = "frozen test data" if frozen else "live traffic (and two lab scenarios)"
    print(f"saved {len(saved)} screenshots of {what} in {OUT}:")
    for path in saved:
        print(f"  {path.relative_to(ROOT)}" + (" (+ .png)" if path.with_suffix(".png").exists() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
