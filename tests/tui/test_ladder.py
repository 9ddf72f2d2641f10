"""The ladder of a connection over the frozen session: lanes are the fds the scenario's
programs hold (and what the kernel holds), arrows the segments in capture order."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace

from conntui.crossns import copy_note
from conntui.model import (
    Attribution,
    Container,
    Endpoint,
    Frame,
    Holder,
    KernelVerdict,
    Lookup,
    Match,
    Record,
    Segment,
    SocketEntry,
)
from conntui.tui.ladder import (
    MAX_ARROWS,
    MAX_SVG_ARROWS,
    flow_key,
    ladder_for,
    ladder_head,
    ladder_lines,
    ladder_svg,
)
from conntui.tui.screens.ladder import LadderScreen

from .conftest import make_app
from .scenario import make_engine
from .test_layout import screen_lines, settle


def records():  # type: ignore[no-untyped-def]
    return list(make_engine().session.window())


def test_lanes_are_the_sockets_and_arrows_follow_capture_order() -> None:
    recs = records()
    ladder = ladder_for(recs, recs[0])  # curl → pyserver :8080
    assert [ln.label for ln in ladder.lanes] == [
        "curl[5151] fd 5",
        "pyserver[4242] fd 3",
        "pyserver[4242] fd 4",
    ]
    flow = [r for r in recs if flow_key(r.segment) == flow_key(recs[0].segment)]
    assert [a.seq for a in ladder.arrows] == [r.seq for r in flow]
    syn, synack, ack = ladder.arrows[:3]
    assert (syn.src, syn.dst, syn.what, syn.match) == (0, 1, "S 0", "listener")  # listen()
    assert (synack.src, synack.dst) == (1, 0)
    assert (ack.src, ack.dst, ack.match) == (0, 2, "established")  # the fd accept() returned
    lines = ladder_lines(ladder)
    assert "curl[5151]" in lines[1] and "pyserver[4242]" in lines[1] and "fd 5" in lines[2]
    # what made each fd: connect() on the left, listen() takes the SYN, accept() the rest
    assert re.split(r"\s{2,}", lines[3].strip()) == ["connect()", "listen()", "accept()"]
    assert "S 0" in lines[5] and "▶" in lines[5] and lines[5].endswith("listener")


def test_kernel_lanes_say_what_the_kernel_holds() -> None:
    recs = records()
    by_port = {r.segment.sport: r for r in recs}
    queued = ladder_for(recs, by_port[51002])
    assert [ln.label for ln in queued.lanes] == ["wget[6161] fd 3", "accept queue (no fd yet)"]
    closed = ladder_for(recs, by_port[51500])
    # nothing listens on 9999: the SYN goes to the kernel, whose RST comes back from it
    assert [ln.label for ln in closed.lanes] == ["- (no socket)", "kernel (no socket)"]
    assert [(a.src, a.dst, a.what, a.match) for a in closed.arrows] == [
        (0, 1, "S 0", "none"),
        (1, 0, "RA 0", "none"),
    ]
    # what later segments proved shows on the arrow: the kernel's RST for the SYN
    lines = ladder_lines(closed)
    assert re.split(r"\s{2,}", lines[3].strip()) == ["remote or gone", "RST / ICMP"]
    rst = lines[-1]
    assert rst.endswith("none  ⚠ the kernel's RST answering record #10: nothing listens on port 9999"), rst
    assert rst.index("◀") < rst.index("RA 0") < rst.index("│", rst.index("◀"))
    late = ladder_for(recs, by_port[50990])
    assert [ln.label for ln in late.lanes] == ["- (no socket)", "TIME_WAIT (kernel)"]


def test_a_hostile_name_in_a_lane_is_literal() -> None:
    recs = records()
    dig = next(r for r in recs if r.segment.sport == 40000)
    text = "\n".join(ladder_lines(ladder_for(recs, dig)))
    assert "[bold red]evil[/]\\x1b" in text and "\x1b" not in text and "\u202e" not in text


def test_a_flow_of_a_million_segments_is_bounded_and_says_what_it_leaves_out() -> None:
    recs = records()
    data = recs[3]
    million = 1_000_000
    # a generator: the builder keeps the last MAX_ARROWS, never the million
    many = (Record(i, data.frame, data.segment, data.attribution) for i in range(million))
    ladder = ladder_for(many, data)
    lines = ladder_lines(ladder)
    assert len(ladder.arrows) == MAX_ARROWS and ladder.elided == million - MAX_ARROWS
    assert ladder.arrows[-1].seq == million - 1  # the newest are kept
    assert lines[1] == "(the first 995,000 segments of this flow are left out; the last 5,000 follow)"
    assert len(lines) == len(ladder_head(ladder)) + MAX_ARROWS
    svg = ladder_svg(ladder)
    assert svg.count("<line") - len(ladder.lanes) == MAX_SVG_ARROWS  # rails, then one line an arrow
    assert "the first 998,000 segments of this flow are left out; the last 2,000 follow" in svg


async def test_l_opens_the_ladder_of_the_selected_row_and_esc_closes_it() -> None:
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        await pilot.press("l")  # the last row: curl's final ACK
        await settle(pilot)
        assert isinstance(app.screen, LadderScreen)
        text = "\n".join(screen_lines(app))
        assert "Ladder of tcp 127.0.0.1:51000 ⇄ 127.0.0.1:8080" in text
        assert "curl[5151]" in text and "pyserver[4242]" in text and "fd 5" in text and "fd 4" in text
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is app.main


async def test_w_saves_the_ladder_as_text_and_svg(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "decoy.txt").write_text("keep")
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        await pilot.press("up", "up", "up", "up", "up", "up", "l")  # dig ↔ the hostile name (UDP)
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        await pilot.press("w")  # a second time: a second pair, nothing overwritten
        await settle(pilot)
    txt = sorted(tmp_path.glob("conntui-ladder-*.txt"))
    svg = sorted(tmp_path.glob("conntui-ladder-*.svg"))
    assert len(txt) == 2 and len(svg) == 2 and (tmp_path / "decoy.txt").read_text() == "keep"
    text = txt[0].read_text()
    assert text.startswith("udp 127.0.0.1:40000 ⇄ 127.0.0.1:5353") and "[bold red]evil[/]\\x1b" in text
    picture = svg[0].read_text()
    assert picture.startswith("<svg") and "dig[7070]" in picture and "\x1b" not in picture


# -- hand-made flows: what the frozen session has no example of ------------------------------

CLI, SRV = ("10.0.0.2", 40000), ("10.0.0.1", 8080)


def seg(t: float, src: tuple[str, int], dst: tuple[str, int], flags: str, n: int = 0) -> Segment:
    return Segment(100.0 + t, "veth0", "tcp", 4, src[0], src[1], dst[0], dst[1], flags, n)


def sk(
    state: str,
    local: tuple[str, int],
    remote: tuple[str, int] | None,
    holder: Holder | None,
    cookie: int,
    netns: int = 0,
) -> SocketEntry:
    return SocketEntry(
        "tcp", 4, state, Endpoint(*local), Endpoint(*remote) if remote else None,
        inode=cookie if holder else 0, holders=(holder,) if holder else (), cookie=cookie, netns=netns,
    )  # fmt: skip


def rec(i: int, s: Segment, att: Attribution) -> Record:
    return Record(i, Frame(s.ts, b"", 101), s, att)


def test_a_stale_client_is_its_own_lane_and_the_challenge_ack_is_marked() -> None:
    """A client that lost its state reconnects from the same port: the old server socket
    (cookie 2) gets the new client's (cookie 9) SYN and answers a challenge ACK."""
    old_cli = sk("ESTABLISHED", CLI, SRV, Holder(10, 3, "client-before"), 1)
    new_cli = sk("SYN_SENT", CLI, SRV, Holder(11, 3, "client-after"), 9)
    old_srv = sk("ESTABLISHED", SRV, CLI, Holder(20, 4, "server"), 2)
    listener = sk("LISTEN", ("0.0.0.0", 8080), None, Holder(20, 3, "server"), 3)
    ok = KernelVerdict("delivered", "sock:inet_sock_set_state")
    answered = ("the kernel answered with a challenge ACK (record #3)",)
    challenge = ("challenge ACK (RFC 5961) answering the SYN of record #2",)
    flow = [
        rec(0, seg(0, CLI, SRV, "S"), Attribution(Match.LISTENER, listener, old_cli, kernel=ok, agrees=True)),
        rec(1, seg(1, CLI, SRV, "PA", 5), Attribution(Match.ESTABLISHED, old_srv, old_cli)),
        rec(2, seg(2, CLI, SRV, "S"), Attribution(Match.ESTABLISHED, old_srv, new_cli, notes=answered)),
        rec(3, seg(3, SRV, CLI, "A"), Attribution(Match.ESTABLISHED, new_cli, old_srv, notes=challenge)),
        rec(4, seg(4, CLI, SRV, "R"), Attribution(Match.ESTABLISHED, old_srv, new_cli)),
    ]
    ladder = ladder_for(flow, flow[0])
    assert [ln.label for ln in ladder.lanes] == [
        "client-before[10] fd 3",
        "client-after[11] fd 3",
        "server[20] fd 3",
        "server[20] fd 4",
    ]
    assert [(a.src, a.dst) for a in ladder.arrows] == [(0, 2), (0, 3), (1, 3), (3, 1), (1, 3)]
    lines = ladder_lines(ladder)
    challenge = lines[-2]
    assert "◀─" in challenge and " A 0 challenge ACK " in challenge, challenge
    assert " S 0 → challenge ACK " in lines[-3]
    assert lines[5].endswith("listener · kernel: delivered ✓")


def test_a_redirect_is_a_nat_lane_between_the_namespaces() -> None:
    """REDIRECT of :8081 to the daemon's :9000: the rewrite is a lane between the client's
    namespace and the daemon's, every arrow crosses it at ◇, each socket says its netns."""
    dialled = ("10.0.0.1", 8081)
    cli = sk("ESTABLISHED", CLI, dialled, Holder(10, 3, "client"), 1, netns=4026531111)
    lst = sk("LISTEN", ("0.0.0.0", 9000), None, Holder(20, 3, "daemon"), 2, netns=4026532222)
    acc = sk("ESTABLISHED", ("10.0.0.1", 9000), CLI, Holder(20, 4, "daemon"), 3, netns=4026532222)
    ct = Lookup(
        "conntrack: 10.0.0.2:40000 → 10.0.0.1:8081 (DNAT)",
        "dialled 10.0.0.1:8081; the receiving socket is 10.0.0.1:9000 ↔ 10.0.0.2:40000",
    )
    flow = [
        rec(0, seg(0, CLI, dialled, "S"), Attribution(Match.LISTENER, lst, cli, steps=(ct,))),
        rec(1, seg(1, dialled, CLI, "SA"), Attribution(Match.ESTABLISHED, cli, lst)),
        rec(2, seg(2, CLI, dialled, "A"), Attribution(Match.ACCEPT_QUEUE, None, cli, steps=(ct,))),
        rec(3, seg(3, CLI, dialled, "PA", 9), Attribution(Match.ESTABLISHED, acc, cli, steps=(ct,))),
    ]
    ladder = ladder_for(flow, flow[0])
    assert [ln.kind for ln in ladder.lanes] == ["socket", "nat", "socket", "queue", "socket"]
    assert ladder.lanes[1].lines == ("NAT REDIRECT", ":8081 → :9000", "(conntrack)", "")
    assert all(a.nat for a in ladder.arrows)
    lines = ladder_lines(ladder)
    assert re.split(r"\s{2,}", lines[1].strip()) == [
        "client[10]",
        "NAT REDIRECT",
        "daemon[20]",
        "accept queue",
        "daemon[20]",
    ]
    assert re.split(r"\s{2,}", lines[3].strip()) == [
        "connect()",
        "(conntrack)",
        "listen()",
        "SYN_RECV → accept()",
        "accept()",
    ]
    assert re.split(r"\s{2,}", lines[4].strip()) == [
        "net:[4026531111]",
        "net:[4026532222]",
        "net:[4026532222]",
    ]
    rails = lines[5]
    nat_x = rails.index("┊")
    arrows = lines[6:]
    assert all(a[nat_x] == "◇" for a in arrows), arrows
    assert arrows[2].endswith("accept_queue") and arrows[2].index("▶") < rails.rindex("│")


def test_kernel_verdicts_mark_the_arrows_and_a_drop_ends_in_a_cross() -> None:
    cli = sk("SYN_SENT", CLI, SRV, Holder(10, 3, "client"), 1)
    lst = sk("LISTEN", ("0.0.0.0", 8080), None, Holder(20, 3, "server"), 2)
    drop = KernelVerdict("dropped", "skb:kfree_skb", "TCP_LISTEN_OVERFLOW")
    full = "the accept queue is full (2 waiting, backlog 1): the kernel drops this SYN (ListenOverflows)"
    judged = Attribution(Match.LISTENER, lst, cli, notes=(full,), kernel=drop, agrees=False)
    flow = [
        rec(0, seg(0, CLI, SRV, "S"), judged),
        rec(1, seg(1, CLI, SRV, "S"), Attribution(Match.LISTENER, lst, cli, notes=(full,))),
    ]
    ladder = ladder_for(flow, flow[0])
    assert [a.dropped for a in ladder.arrows] == [True, True]
    first, second = ladder_lines(ladder)[-2:]
    assert "✕" in first and "▶" not in first and " S 0 queue full " in first, first
    assert "listener · kernel: dropped TCP_LISTEN_OVERFLOW ≠  ⚠ the accept queue is full" in first
    assert "✕" in second and "kernel:" not in second  # the kernel said nothing: the prediction alone


def test_hostile_text_is_escaped_in_the_svg() -> None:
    """A process name with markup, XML and control characters: literal in the text, escaped
    in the SVG, which stays well-formed XML."""
    name = '<script>alert("x")</script>&amp;[b]\x1b]0;t\x07\u202e'
    cli = sk("ESTABLISHED", CLI, SRV, Holder(10, 3, name), 1)
    srv = sk("ESTABLISHED", SRV, CLI, Holder(20, 4, "server"), 2)
    note = "dropped: <b>&</b>\x00"
    flow = [rec(0, seg(0, CLI, SRV, "PA", 3), Attribution(Match.ESTABLISHED, srv, cli, notes=(note,)))]
    ladder = ladder_for(flow, flow[0])
    text = "\n".join(ladder_lines(ladder))
    assert "<script>alert" in text and "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    svg = ladder_svg(ladder)
    root = ET.fromstring(svg)  # well-formed: every < & " escaped, no control character
    texts = ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert any(t == '<script>alert("x")</s…' for t in texts), texts
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "\x1b" not in svg
    assert any("⚠ dropped: <b>&</b>\\x00" in t for t in texts), texts


def test_a_container_lane_says_its_container_and_a_copy_on_the_bridge_is_one_arrow() -> None:
    """A published port (DNAT+SNAT): the client on the host, httpd in a container; each
    segment captured on the bridge and again on the veth (crossns.copy_note) is one arrow."""
    web = Container("5f6dc9ff6ca2", "web", "podman")
    host, ctr = ("10.88.0.1", 45492), ("10.88.0.6", 80)
    cli = sk("ESTABLISHED", ("127.0.0.1", 45492), ("127.0.0.1", 18082), Holder(10, 3, "curl"), 1, netns=1111)
    lst = SocketEntry(
        "tcp", 6, "LISTEN", Endpoint("::", 80), None, inode=2, cookie=2, netns=2222,
        holders=(Holder(20, 3, "httpd", container=web),),
    )  # fmt: skip
    ct = Lookup(
        "conntrack: 10.88.0.1:45492 → 10.88.0.6:80 (DNAT+SNAT)",
        "dialled 127.0.0.1:18082; the receiving socket is 10.88.0.6:80 ↔ 10.88.0.1:45492",
    )
    syn = Attribution(Match.LISTENER, lst, cli, steps=(ct,))
    copy = Attribution(
        Match.LISTENER, lst, cli, notes=(copy_note(0, seg(0, host, ctr, "S")._replace(iface="veth0")),)
    )
    flow = [rec(0, seg(0, host, ctr, "S"), syn), rec(1, seg(0.00001, host, ctr, "S"), copy)]
    ladder = ladder_for(flow, flow[0])
    assert len(ladder.arrows) == 1 and ladder.arrows[0].seq == 0
    assert ladder.caveat == "1 segment seen again on another device is drawn once (one arrow each)"
    assert [ln.lines for ln in ladder.lanes] == [
        ("curl[10]", "fd 3", "connect()", "", "net:[1111]"),
        ("NAT DNAT+SNAT", "127.0.0.1:18082 →", "10.88.0.6:80", "", ""),
        ("httpd[20]", "fd 3", "listen()", "ctr web", "net:[2222]"),
    ]
    lines = ladder_lines(ladder)
    assert lines[1] == "(1 segment seen again on another device is drawn once (one arrow each))"
    assert "ctr web" in lines[5] and "net:[2222]" in lines[6]


def test_a_connection_seen_before_and_after_dnat_is_one_ladder() -> None:
    """A published port (10.231.0.1:18080 DNAT'd to a container's 10.231.1.2:80) captured
    with ``-i any``: each segment on the host's veth (as dialled) and on the container's (as
    translated). Whichever copy comes first, and from whichever row the ladder is opened,
    it is one ladder of the connection, each segment once, each from its sender's end."""
    cli_end, dialled, ctr = ("10.231.0.2", 51978), ("10.231.0.1", 18080), ("10.231.1.2", 80)
    cli = sk("ESTABLISHED", cli_end, dialled, Holder(10, 3, "client"), 1, netns=1111)
    lst = sk("LISTEN", ("0.0.0.0", 80), None, Holder(20, 3, "web"), 2, netns=2222)
    acc = sk("ESTABLISHED", ctr, cli_end, Holder(20, 4, "web"), 3, netns=2222)
    ct = Lookup(
        "conntrack: 10.231.0.2:51978 → 10.231.0.1:18080 (DNAT)",
        "dialled 10.231.0.1:18080; the receiving socket is 10.231.1.2:80 ↔ 10.231.0.2:51978",
    )
    rows = [  # (flags, payload, pre-DNAT first?, attribution of the first copy)
        ("S", 0, True, Attribution(Match.LISTENER, lst, cli, steps=(ct,))),
        ("SA", 0, False, Attribution(Match.ESTABLISHED, cli, lst)),
        ("A", 0, True, Attribution(Match.ACCEPT_QUEUE, None, cli)),
        ("PA", 28, True, Attribution(Match.ESTABLISHED, acc, cli)),
        ("PA", 43, False, Attribution(Match.ESTABLISHED, cli, acc)),
    ]
    flow: list[Record] = []
    for i, (flags, n, request, att) in enumerate(rows):
        far = dialled if request else ctr  # the server's end as the first copy's device has it
        near = ctr if request else dialled
        src, dst, src2, dst2 = (cli_end, far, cli_end, near) if request else (far, cli_end, near, cli_end)
        first = seg(i, src, dst, flags, n)._replace(iface="veth-srv" if request else "veth-ctr")
        again = seg(i + 0.00001, src2, dst2, flags, n)._replace(iface="veth-ctr" if request else "veth-srv")
        flow.append(rec(len(flow), first, att))
        flow.append(rec(len(flow), again, replace(att, notes=(*att.notes, copy_note(flow[-1].seq, again)))))
    for opened in flow:
        ladder = ladder_for(flow, opened)
        assert [a.seq for a in ladder.arrows] == [0, 2, 4, 6, 8], opened
        assert ladder.title == "tcp 10.231.0.2:51978 ⇄ 10.231.0.1:18080"
        assert [ln.kind for ln in ladder.lanes] == ["socket", "nat", "socket", "queue", "socket"]
        assert [(a.what, a.src, a.dst) for a in ladder.arrows] == [
            ("S 0", 0, 2),
            ("SA 0", 2, 0),
            ("A 0", 0, 3),
            ("PA 28", 0, 4),
            ("PA 43", 4, 0),
        ]
        assert all(a.nat for a in ladder.arrows)
        assert ladder.caveat == "5 segments seen again on another device are drawn once (one arrow each)"


async def test_the_ladder_follows_a_resized_terminal() -> None:
    """Resized while open (narrower than its lanes, then wide): the lanes share the new
    width, the head stays above the arrows, nothing is left of the old layout."""
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        await pilot.press("l")
        await settle(pilot)
        for size in ((40, 12), (200, 50), (80, 24)):
            await pilot.resize_terminal(*size)
            await settle(pilot)
            assert isinstance(app.screen, LadderScreen)
            view = app.screen.view
            lines = screen_lines(app)
            assert len(lines) == size[1] and all(len(line) <= size[0] for line in lines)
            rails = [i for i, ch in enumerate(view.head_lines[-1]) if ch == "│"]
            assert len(rails) == 3 and view._lane_width >= 14
            # the head's rails are where the arrows' are
            first = view.line(len(view.head_lines))
            assert first is not None and all(first[x] in "│▶◀" for x in rails), (first, rails)
