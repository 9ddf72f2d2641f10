"""scapy's dissection of one frame, for the detail pane (run in a worker thread).

Only the packet a person selects is ever dissected; the capture path never builds scapy
objects.
"""

from __future__ import annotations

from ..model import Frame
from .text import safe

MAX_LINES = 300


def _packet(frame: Frame) -> object:
    data = frame.data
    lt = frame.linktype
    if lt in (101, 228, 229, 12, 14):  # raw IP (version nibble), IPv4, IPv6
        if data and data[0] >> 4 == 6:
            from scapy.layers.inet6 import IPv6

            return IPv6(data)
        from scapy.layers.inet import IP

        return IP(data)
    if lt == 1:
        from scapy.layers.l2 import Ether

        return Ether(data)
    if lt == 113:
        from scapy.layers.l2 import CookedLinux

        return CookedLinux(data)
    if lt == 276:
        from scapy.layers.l2 import CookedLinuxV2

        return CookedLinuxV2(data)
    from scapy.packet import Raw

    return Raw(data)


def dissect(frame: Frame) -> list[str]:
    """The layers and fields of ``frame``, one terminal-safe line each (never raises)."""
    try:
        import scapy.layers.inet  # binds TCP/UDP to IP
        import scapy.layers.inet6  # noqa: F401

        pkt = _packet(frame)
        dump = pkt.show(dump=True)  # type: ignore[attr-defined]
    except Exception as exc:  # scapy on hostile bytes: say so, never crash the UI
        return [safe(f"scapy could not dissect this frame: {type(exc).__name__}: {exc}")]
    lines = [safe(line.rstrip()) for line in str(dump).splitlines() if line.strip()]
    if len(lines) > MAX_LINES:
        lines = [*lines[:MAX_LINES], f"… {len(lines) - MAX_LINES} more lines"]
    return lines


def preload() -> None:
    """Import what :func:`dissect` uses now: scapy's import runs ``ldconfig`` and reads the
    routes, which conntui may no longer do once it has dropped its privileges."""
    try:
        import scapy.layers.inet
        import scapy.layers.inet6
        import scapy.layers.l2
        import scapy.packet  # noqa: F401
    except Exception:  # dissect() says so when a frame is opened
        return
