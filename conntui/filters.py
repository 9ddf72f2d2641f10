"""Port sets and display filters: text a person types → a predicate (and a BPF string).

Port specs follow tcpdump habits: ``8080``, ``80,443``, ``8000-8100``, repeatable. Display
filters (the TUI's ``/``) are space-separated terms that must all hold:

    8080 | 80,443 | 8000-8100   a source or destination port in the set
    port:8080                   the same, spelled out
    pid:1234                    the sender or receiver is held by this pid
    proc:nginx                  ... by a process whose name contains this (case-insensitive)
    ctr:web                     ... by a process in a container whose name contains this
                                (case-insensitive) or whose id starts with it
    netns:4026532246            the sender or receiver socket is in this network namespace
                                (its inode: ``net:[N]`` in ``ls -l /proc/PID/ns/net``)
    match:none                  the attribution kind (established, listener, accept_queue, ...)
    proto:tcp | tcp | udp       the protocol
    host:127.0.0.1              a source or destination address

Stdlib only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .model import Attribution, Match, Segment, SocketEntry


class FilterError(ValueError):
    """A one-line, user-facing reason why a filter does not parse."""


@dataclass(frozen=True, slots=True)
class PortSet:
    """A set of ports as inclusive ranges; empty means every port."""

    ranges: tuple[tuple[int, int], ...] = ()
    # one byte per port: a lookup per segment instead of a scan of the ranges (hot path)
    _bits: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bits = bytearray(65536)
        for lo, hi in self.ranges:
            bits[lo : hi + 1] = b"\x01" * (hi - lo + 1)
        object.__setattr__(self, "_bits", bytes(bits))

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and 0 <= port <= 65535 and bool(self._bits[port])

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def matches(self, seg: Segment) -> bool:
        bits = self._bits
        return not self.ranges or bool(bits[seg.sport] or bits[seg.dport])

    def bpf(self) -> str:
        """The tcpdump expression selecting the same segments."""
        terms = [f"port {lo}" if lo == hi else f"portrange {lo}-{hi}" for lo, hi in self.ranges]
        return "(tcp or udp) and (" + " or ".join(terms) + ")"

    def __str__(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ranges)


def _port(text: str, spec: str) -> int:
    if not text.isdigit():
        raise FilterError(f"bad port {text!r} in {spec!r}: ports are numbers 0-65535")
    value = int(text)
    if value > 65535:
        raise FilterError(f"bad port {text!r} in {spec!r}: ports are numbers 0-65535")
    return value


def parse_ports(specs: Iterable[str]) -> PortSet:
    """``["8080", "80,443", "8000-8100"]`` → PortSet; raises FilterError."""
    ranges: list[tuple[int, int]] = []
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                raise FilterError(f"bad port list {spec!r}: empty item")
            if "-" in part:
                lo_text, _, hi_text = part.partition("-")
                lo, hi = _port(lo_text.strip(), spec), _port(hi_text.strip(), spec)
                if lo > hi:
                    raise FilterError(f"bad port range {part!r}: {lo} is above {hi}")
                ranges.append((lo, hi))
            else:
                p = _port(part, spec)
                ranges.append((p, p))
    return PortSet(tuple(sorted(set(ranges))))


RecordPredicate = Callable[[Segment, Attribution], bool]


def _sockets(att: Attribution) -> tuple[SocketEntry, ...]:
    return tuple(s for s in (att.receiver, att.sender, att.listener) if s is not None)


def _pid_term(pid: int) -> RecordPredicate:
    def keep(seg: Segment, att: Attribution) -> bool:
        return any(h.pid == pid for s in _sockets(att) for h in (*s.holders, *s.former_holders))

    return keep


def _proc_term(name: str) -> RecordPredicate:
    needle = name.lower()

    def keep(seg: Segment, att: Attribution) -> bool:
        return any(
            needle in h.process.lower() for s in _sockets(att) for h in (*s.holders, *s.former_holders)
        )

    return keep


def _ctr_term(text: str) -> RecordPredicate:
    needle = text.lower()

    def keep(seg: Segment, att: Attribution) -> bool:
        for s in _sockets(att):
            for h in (*s.holders, *s.former_holders):
                c = h.container
                if c is not None and (needle in c.name.lower() or (c.id and c.id.startswith(needle))):
                    return True
        return False

    return keep


def _netns_term(inode: int) -> RecordPredicate:
    return lambda seg, att: any(s.netns == inode for s in _sockets(att))


def _port_term(ports: PortSet) -> RecordPredicate:
    return lambda seg, att: ports.matches(seg)


def _match_term(match: str) -> RecordPredicate:
    return lambda seg, att: att.match == match


def _proto_term(proto: str) -> RecordPredicate:
    return lambda seg, att: seg.proto == proto


def _host_term(host: str) -> RecordPredicate:
    return lambda seg, att: host in (seg.src, seg.dst)


MATCH_NAMES = {m.value for m in Match}


@dataclass(frozen=True)
class DisplayFilter:
    """A parsed display filter: the text it came from and its predicate."""

    text: str
    terms: tuple[RecordPredicate, ...] = ()
    ports: PortSet = PortSet()

    def __call__(self, seg: Segment, att: Attribution) -> bool:
        return all(term(seg, att) for term in self.terms)

    def __bool__(self) -> bool:
        return bool(self.terms)


def parse_display_filter(text: str) -> DisplayFilter:
    """Parse the TUI filter language (module docstring); raises FilterError."""
    terms: list[RecordPredicate] = []
    ports = PortSet()
    for word in text.split():
        key, sep, value = word.partition(":")
        if not sep:
            key, value = ("proto", word) if word.lower() in ("tcp", "udp") else ("port", word)
        key = key.lower()
        if not value:
            raise FilterError(f"bad filter term {word!r}: nothing after {key}:")
        if key == "port":
            ps = parse_ports([value])
            ports = PortSet(tuple(sorted({*ports.ranges, *ps.ranges})))
            terms.append(_port_term(ps))
        elif key == "pid":
            if not value.isdigit():
                raise FilterError(f"bad pid {value!r}: a pid is a number")
            terms.append(_pid_term(int(value)))
        elif key in ("proc", "process"):
            terms.append(_proc_term(value))
        elif key in ("ctr", "container"):
            terms.append(_ctr_term(value))
        elif key == "netns":
            digits = value.removeprefix("net:").strip("[]")
            if not digits.isdigit():
                raise FilterError(f"bad netns {value!r}: a namespace's inode, e.g. netns:4026531840")
            terms.append(_netns_term(int(digits)))
        elif key == "match":
            m = value.lower()
            if m not in MATCH_NAMES:
                raise FilterError(f"unknown match {value!r} (one of {', '.join(sorted(MATCH_NAMES))})")
            terms.append(_match_term(m))
        elif key == "proto":
            p = value.lower()
            if p not in ("tcp", "udp"):
                raise FilterError(f"unknown protocol {value!r} (tcp or udp)")
            terms.append(_proto_term(p))
        elif key == "host":
            h = value.strip("[]")
            terms.append(_host_term(h))
        else:
            raise FilterError(
                f"unknown filter term {key!r} (use port:, pid:, proc:, ctr:, netns:, match:, proto:, host:)"
            )
    return DisplayFilter(text.strip(), tuple(terms), ports)
