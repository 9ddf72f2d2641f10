"""This host's addresses and interface names, from rtnetlink (RTM_GETADDR, RTM_GETLINK).

The same code serves any network namespace: the channel is opened inside it. psutil and
``socket.if_nameindex`` would only see the namespace of the calling thread.
"""

from __future__ import annotations

import socket
import struct

from .netlink import NETLINK_ROUTE, NetlinkChannel, iter_attrs

RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_GETADDR = 22

IFA_ADDRESS = 1
IFA_LOCAL = 2
IFLA_IFNAME = 3

_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change


def parse_addr_msg(msg: bytes) -> tuple[int, str] | None:
    """``(ifindex, address)`` from one RTM_NEWADDR payload (IFA_LOCAL over IFA_ADDRESS)."""
    if len(msg) < _IFADDRMSG.size:
        return None
    family, _plen, _flags, _scope, index = _IFADDRMSG.unpack_from(msg, 0)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs = dict(iter_attrs(msg, _IFADDRMSG.size, len(msg)))
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if raw is None:
        return None
    try:
        return index, socket.inet_ntop(family, raw)
    except (ValueError, OSError):
        return None


def parse_link_msg(msg: bytes) -> tuple[int, str] | None:
    """``(ifindex, name)`` from one RTM_NEWLINK payload."""
    if len(msg) < _IFINFOMSG.size:
        return None
    _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(msg, 0)
    for kind, value in iter_attrs(msg, _IFINFOMSG.size, len(msg)):
        if kind == IFLA_IFNAME:
            return index, value.split(b"\0", 1)[0].decode("utf-8", "replace")
    return None


class RouteInfo:
    """Addresses and interface names of one network namespace."""

    def __init__(self, netns_path: str | None = None, *, channel: NetlinkChannel | None = None) -> None:
        self._channel = channel if channel is not None else NetlinkChannel(NETLINK_ROUTE, netns_path, 1 << 16)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RouteInfo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def local_addresses(self) -> set[str]:
        """Every address configured on an interface (compressed text form)."""
        payload = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        out: set[str] = set()
        for msg in self._channel.dump(RTM_GETADDR, payload, RTM_NEWADDR):
            parsed = parse_addr_msg(msg)
            if parsed is not None:
                out.add(parsed[1])
        return out

    def interface_names(self) -> dict[int, str]:
        """ifindex → interface name."""
        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        out: dict[int, str] = {}
        for msg in self._channel.dump(RTM_GETLINK, payload, RTM_NEWLINK):
            parsed = parse_link_msg(msg)
            if parsed is not None:
                out[parsed[0]] = parsed[1]
        return out
