"""What live capture needs from the kernel, and who the person behind ``sudo`` is.

conntui runs as root to open a packet socket (CAP_NET_RAW), to enlarge its receive buffer
past ``net.core.rmem_max`` (CAP_NET_ADMIN) and to read every process's ``/proc/PID/fd``.
When the packet socket is refused, the message names the capabilities this process lacks
(read from ``/proc/self/status``) instead of guessing. Files it writes for a person who ran
``sudo conntui -w FILE`` belong to that person (``SUDO_UID``/``SUDO_GID``), not to root.
Stdlib only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = [
    "CAPTURE_CAPABILITIES",
    "capture_denied_message",
    "effective_capabilities",
    "give_to_invoking_user",
    "invoking_user",
    "missing_capture_capabilities",
]

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
# What live capture uses, in the order a person should read them: the first is required
# (the packet socket), the second avoids kernel drops at high rates (SO_RCVBUFFORCE).
CAPTURE_CAPABILITIES: tuple[tuple[str, int], ...] = (
    ("CAP_NET_RAW", CAP_NET_RAW),
    ("CAP_NET_ADMIN", CAP_NET_ADMIN),
)


def effective_capabilities(status_path: str = "/proc/self/status") -> int | None:
    """This process's effective capability mask (``CapEff``), or None when unknown."""
    try:
        with open(status_path, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split(":", 1)[1].strip(), 16)
    except (OSError, ValueError):
        return None
    return None


def missing_capture_capabilities(caps: int | None = None) -> list[str]:
    """The names of the capture capabilities this process lacks ([] if it has them all, or
    if its capabilities cannot be read)."""
    if caps is None:
        caps = effective_capabilities()
    if caps is None:
        return []
    return [name for name, bit in CAPTURE_CAPABILITIES if not caps >> bit & 1]


def capture_denied_message(missing: list[str] | None = None) -> str:
    """One line for a refused packet socket: what is missing, and how to run conntui."""
    if missing is None:
        missing = missing_capture_capabilities()
    why = f"this process lacks {' and '.join(missing)}" if missing else "the kernel refused a packet socket"
    return (
        f"capturing packets needs root: {why} (CAP_NET_RAW opens the packet socket, CAP_NET_ADMIN "
        "enlarges its buffer); run it as `sudo conntui ...`; reading a file with -r needs no privileges"
    )


def invoking_user(env: Mapping[str, str] | None = None, euid: int | None = None) -> tuple[int, int] | None:
    """``(uid, gid)`` of the person who ran ``sudo conntui``, when running as root under sudo.

    gid is -1 (leave the group alone) when ``SUDO_GID`` is missing. None when not root, not
    under sudo, or when the variables do not hold plain numbers.
    """
    env = os.environ if env is None else env
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return None
    uid_text = env.get("SUDO_UID", "")
    gid_text = env.get("SUDO_GID", "")
    if not _number(uid_text):
        return None
    uid = int(uid_text)
    gid = int(gid_text) if _number(gid_text) else -1
    if uid == 0:
        return None
    return uid, gid


def _number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 10


def give_to_invoking_user(fd: int, env: Mapping[str, str] | None = None) -> bool:
    """Hand the file open on ``fd`` to the person behind sudo; True when it was chowned.

    Best effort: a file system without owners (vfat, some network mounts) keeps root's.
    """
    who = invoking_user(env)
    if who is None:
        return False
    try:
        os.fchown(fd, who[0], who[1])
    except OSError:
        return False
    return True
