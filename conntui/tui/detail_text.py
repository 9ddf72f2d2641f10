"""The detail pane's text for one record: the kernel's lookup in plain words, both ends'
sockets with every holder, and (when ready) scapy's dissection. Plain ``Text``, no markup."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

from ..model import Record, SocketEntry
from .procinfo import process_line
from .text import MATCH_HELP, MATCH_STYLE, clock, container_text, direction, endpoint, holder_text, safe

TITLE = Style(bold=True, underline=True)
LABEL = Style(bold=True)
DIM = Style(dim=True)
HIT = Style(color="green")
MISS = Style(color="yellow")


def _socket_lines(t: Text, sock: SocketEntry, indent: str = "  ", live: bool = False) -> None:
    t.append(indent)
    t.append(sock.state, style=LABEL)
    t.append(f" {sock.proto}{sock.family} {endpoint(sock.local.addr, sock.local.port)}")
    if sock.remote is not None:
        t.append(" ↔ ", style=DIM)
        t.append(endpoint(sock.remote.addr, sock.remote.port))
    bits = []
    if sock.inode:
        bits.append(f"inode {sock.inode}")
    else:
        bits.append("no inode (no struct socket)")
    if sock.state == "LISTEN":
        bits.append(f"backlog {sock.tx_queue}, accept queue {sock.rx_queue}")
    elif sock.rx_queue or sock.tx_queue:
        bits.append(f"rx_queue {sock.rx_queue}, tx_queue {sock.tx_queue}")
    if sock.uid:
        bits.append(f"uid {sock.uid}")
    if sock.v6only:
        bits.append("v6only")
    if sock.bound_ifindex:
        bits.append(f"bound to ifindex {sock.bound_ifindex}")
    t.append("  (" + ", ".join(bits) + ")\n", style=DIM)
    if sock.holders:
        for h in sock.holders:
            t.append(f"{indent}  held by ")
            t.append(holder_text(h), style=LABEL)
            t.append("\n")
            if h.container is not None:
                t.append(f"{indent}    in container {container_text(h.container)}\n")
            about = process_line(h) if live else ""
            if about:
                t.append(f"{indent}    {safe(about)}\n", style=DIM)
    elif sock.unreadable:
        t.append(f"{indent}  held by a process conntui may not read: {safe(sock.describe())}\n", style=DIM)
    else:
        t.append(f"{indent}  held by no process: the kernel owns it\n", style=DIM)
    for h in sock.former_holders:
        t.append(f"{indent}  formerly held by {holder_text(h)}\n", style=DIM)


def detail_text(
    rec: Record, dissection: list[str] | None, *, wrap_width: int = 0, live: bool = False
) -> Text:
    """``live``: a live capture, whose holders' processes psutil may describe (a file's pids
    are another moment's, or another host's)."""
    seg = rec.segment
    att = rec.attribution
    t = Text()
    t.append(f"#{rec.seq}  ", style=DIM)
    t.append(clock(seg.ts))
    t.append(f"  {safe(seg.iface) or '?'} {direction(seg.pkttype)}  {seg.proto}  ")
    t.append(endpoint(seg.src, seg.sport), style=LABEL)
    t.append(" → ")
    t.append(endpoint(seg.dst, seg.dport), style=LABEL)
    if seg.proto == "tcp":
        t.append(f"  [{seg.flags or 'none'}]")
    # the numbers on a line of their own (wrapped, "len" and its number could part)
    t.append("\n  ")
    if seg.proto == "tcp":
        t.append(f"seq {seg.seq} ack {seg.ack} win {seg.window}  ")
    t.append(f"len {seg.payload_len}")
    if seg.wire_len:
        t.append(f" ({seg.wire_len}-byte frame)", style=DIM)  # a length, not a frame number
    t.append("\n\n")

    match_style = MATCH_STYLE.get(att.match, Style())
    t.append("Receiver  ", style=TITLE)
    t.append(f" {att.match} ", style=match_style)
    help_text = MATCH_HELP.get(att.match)
    if help_text:
        t.append(f"  {help_text}", style=DIM)
    t.append("\n")
    if att.receiver is not None:
        _socket_lines(t, att.receiver, live=live)
    else:
        t.append("  no local socket receives it\n", style=DIM)
    if att.explain:
        t.append("  why: ", style=LABEL)
        t.append(safe(att.explain) + "\n")

    if att.kernel is not None:
        t.append("\nThe kernel's record\n", style=TITLE)
        t.append("  " + safe(att.kernel.text()) + "\n")
        if att.agrees is False:
            t.append(
                "  conntui's table predicted otherwise (see the notes): this row follows the kernel\n",
                style=MISS,
            )
        elif att.agrees:
            t.append("  agrees with conntui's prediction\n", style=DIM)
    if att.notes:
        t.append("\nNotes\n", style=TITLE)
        for note in att.notes:
            t.append("  " + safe(note) + "\n", style=DIM)

    if att.steps:
        t.append("\nKernel lookup\n", style=TITLE)
        for i, step in enumerate(att.steps, 1):
            t.append(f"  {i}. ")
            t.append(safe(step.what))
            t.append(" → ", style=DIM)
            result = safe(step.result)
            t.append(result + "\n", style=MISS if result.startswith(("miss", "no")) else HIT)

    if att.listener is not None and att.listener is not att.receiver:
        t.append("\nListener\n", style=TITLE)
        _socket_lines(t, att.listener)

    if att.candidates:
        t.append(f"\nCandidates ({len(att.candidates)}, e.g. one SO_REUSEPORT group)\n", style=TITLE)
        for c in att.candidates:
            _socket_lines(t, c)

    t.append("\nSender\n", style=TITLE)
    if att.sender is not None:
        _socket_lines(t, att.sender, live=live)
    else:
        t.append("  no local socket sent it", style=DIM)
        t.append(" (a remote host, or the kernel itself, e.g. a RST)\n", style=DIM)
    if att.sender_explain:
        t.append("  why: ", style=LABEL)
        t.append(safe(att.sender_explain) + "\n")

    if seg.payload_preview:
        t.append("\nPayload ", style=TITLE)
        t.append(f"(first {len(seg.payload_preview)} bytes)\n", style=DIM)
        t.append("  " + safe(seg.payload_preview.decode("latin-1")) + "\n")

    t.append("\nPacket (scapy)\n", style=TITLE)
    if dissection is None:
        t.append("  dissecting…\n", style=DIM)
    else:
        for line in dissection:
            t.append("  " + line + "\n")
    t.rstrip()
    return t
