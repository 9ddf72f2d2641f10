"""A segment between network namespaces: which socket sends it, which receives it, where.

A capture in the host's namespace sees a container's traffic on the bridge and on the
container's veth: neither end's socket is in the host's table. Each end is looked up in the
namespace that owns its address (``sockets.namespaces``), with the 4-tuple that socket
really has. With NAT (a published port: DNAT to the container, MASQUERADE of the client) the
captured addresses are not the sockets': the conntrack entry has both views (``ORIG``: the
initiator's socket, ``REPLY``: the responder's, ``sockets/conntrack.py``).

The tap sees a segment in one of three forms: untranslated, fully translated, or — with
bridge netfilter (``br_netfilter``, which podman and Docker load) — half translated: a
reply entering the bridge device already has its destination de-SNAT'd but not its source
de-DNAT'd (``10.88.0.8:80 → 127.0.0.1:33324`` for a client that dialled
``127.0.0.1:18081``). :func:`mapping_ends` accepts all three by sides rather than whole
tuples: each endpoint of the segment must be one of its side's two views. :class:`NatIndex`
finds the entry of a half-translated copy (ctnetlink's GET hashes whole tuples, and no
whole tuple of the entry matches it) from the endpoints of entries already seen.

Pure: the namespaces, tables and conntrack entries are passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Generic, TypeVar

from .model import Attribution, Lookup, Match, Segment, endpoint_text, unmap
from .sockets.conntrack import NatMapping

__all__ = ["End", "NatIndex", "SegmentCopies", "compose", "copy_note", "mapping_ends", "nat_kind"]

_T = TypeVar("_T")

# One socket's view of its connection: (local addr, local port, remote addr, remote port)
End = tuple[str, int, str, int]


def _ep(addr: str, port: int) -> tuple[str, int]:
    return unmap(addr), port


def mapping_ends(m: NatMapping, seg: Segment) -> tuple[End, End] | None:
    """(the sending socket's tuple, the receiving socket's tuple) for a segment of the
    connection ``m`` in any form the tap shows; None when the segment is not of it.

    The initiator's socket is ``ORIG.src ↔ ORIG.dst``; the responder's ``REPLY.src ↔
    REPLY.dst``. A segment from the initiator's side carries, as its source, ``ORIG.src``
    (untranslated) or ``REPLY.dst`` (after SNAT), and as its destination ``ORIG.dst``
    (before DNAT) or ``REPLY.src`` (after): any mix of the two is the same segment."""
    o, r = m.original, m.reply
    if seg.proto != o.proto:
        return None
    s, d = _ep(seg.src, seg.sport), _ep(seg.dst, seg.dport)
    initiator_side = (_ep(o.src, o.sport), _ep(r.dst, r.dport))
    responder_side = (_ep(o.dst, o.dport), _ep(r.src, r.sport))
    initiator: End = (o.src, o.sport, o.dst, o.dport)
    responder: End = (r.src, r.sport, r.dst, r.dport)
    if s in initiator_side and d in responder_side:
        return initiator, responder
    if s in responder_side and d in initiator_side:
        return responder, initiator
    return None


def nat_kind(m: NatMapping) -> str:
    """``DNAT``, ``SNAT``, ``DNAT+SNAT`` (a published port reached with masquerade) or ""."""
    kinds = [k for k, on in (("DNAT", m.dst_nat), ("SNAT", m.src_nat)) if on]
    return "+".join(kinds)


class NatIndex:
    """Recent NAT'd connections by each of their endpoints, to recognise a half-translated
    copy of a segment (see the module's doc). Bounded: the oldest endpoints go first."""

    def __init__(self, limit: int = 16384) -> None:
        self.limit = limit
        self._by_ep: OrderedDict[tuple[str, str, int], NatMapping] = OrderedDict()

    def add(self, m: NatMapping) -> None:
        o, r = m.original, m.reply
        for addr, port in ((o.src, o.sport), (o.dst, o.dport), (r.src, r.sport), (r.dst, r.dport)):
            k = (o.proto, unmap(addr), port)
            self._by_ep[k] = m
            self._by_ep.move_to_end(k)
        while len(self._by_ep) > self.limit:
            self._by_ep.popitem(last=False)

    def find(self, seg: Segment) -> NatMapping | None:
        """The connection ``seg`` belongs to, by an endpoint of it seen before."""
        for addr, port in ((seg.src, seg.sport), (seg.dst, seg.dport)):
            m = self._by_ep.get((seg.proto, unmap(addr), port))
            if m is not None and mapping_ends(m, seg) is not None:
                return m
        return None

    def __len__(self) -> int:
        return len(self._by_ep)


def compose(
    seg: Segment,
    receiving: Attribution,
    sending: Attribution,
    *,
    rcv: End,
    rcv_where: str,
    snd_where: str,
    mapping: NatMapping | None,
) -> Attribution:
    """One row's attribution from the receiving end's look-up (in its namespace, with its
    socket's tuple) and the sending end's (in its own): the receiver's match, socket and
    steps, the sender's socket, and an explanation that walks the chain: what was dialled,
    the rewrite, the namespace, the socket."""
    here = endpoint_text(rcv[0], rcv[1])
    steps: list[Lookup] = []
    lead = ""
    if mapping is not None and mapping.nat:
        o = mapping.original
        kind = nat_kind(mapping)
        captured = f"{endpoint_text(seg.src, seg.sport)} → {endpoint_text(seg.dst, seg.dport)}"
        dialled = endpoint_text(o.dst, o.dport)
        steps.append(
            Lookup(
                f"conntrack: {captured} ({kind})",
                f"dialled {dialled}; the receiving socket is {here} ↔ {endpoint_text(rcv[2], rcv[3])}",
            )
        )
        lead = f"The client dialled {dialled}; conntrack ({kind}) delivers it to {here}. "
    if rcv_where:
        steps.append(Lookup(f"network namespace owning {unmap(rcv[0])}", rcv_where))
        lead += f"{unmap(rcv[0])} is an address of {rcv_where}. "
    sender_explain = sending.sender_explain
    if snd_where and sending.sender is not None:
        sender_explain = f"{sender_explain} (in {snd_where})"
    explain = lead + receiving.explain
    sender_steps = tuple(s for s in sending.steps if s.what.startswith("sender socket"))
    return replace(
        receiving,
        sender=sending.sender,
        sender_explain=sender_explain,
        explain=explain,
        steps=(*steps, *receiving.steps, *sender_steps),
    )


def unknown_end(addr: str, owners: tuple[int, ...]) -> Attribution:
    """An end whose address several namespaces own: which one receives is not guessed."""
    spaces = ", ".join(f"net:[{o}]" for o in owners)
    return Attribution(
        Match.UNKNOWN,
        explain=(
            f"{unmap(addr)} is an address of several network namespaces ({spaces}): which one "
            "the segment reaches depends on the link it takes, which conntui does not follow yet."
        ),
    )


# A copy of a segment on another device comes within microseconds (a bridge forwards in the
# same softirq); a TCP retransmission at the earliest after an RTO (200 ms and more).
COPY_WINDOW = 0.005


class SegmentCopies(Generic[_T]):
    """One segment captured on several devices (``any`` sees it on the bridge and on the
    container's veth, NAT'd or not on each): recognised by what NAT does not change — TCP's
    sequence and acknowledgment numbers, flags, window and payload length; a UDP datagram's
    length and first bytes — seen on another device within ``COPY_WINDOW``.

    Keeps the first copy's row number, attribution and ``extra`` (what the engine needs to
    judge it), so every copy is attributed the same way and none counts as a retransmission."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._seen: OrderedDict[tuple[object, ...], tuple[float, str, int, Attribution, _T]] = OrderedDict()

    @staticmethod
    def _key(seg: Segment) -> tuple[object, ...]:
        if seg.proto == "tcp":
            return ("tcp", seg.seq, seg.ack, seg.flags, seg.window, seg.payload_len)
        return (seg.proto, seg.payload_len, seg.payload_preview)

    def first(self, seg: Segment) -> tuple[int, Attribution, _T] | None:
        """The first copy's (row number, attribution, extra) if ``seg`` is a later copy."""
        hit = self._seen.get(self._key(seg))
        if hit is None:
            return None
        ts, iface, seq, att, extra = hit
        if iface == seg.iface or not 0 <= seg.ts - ts <= COPY_WINDOW:
            return None
        return seq, att, extra

    def add(self, seg: Segment, seq: int, att: Attribution, extra: _T) -> None:
        key = self._key(seg)
        self._seen[key] = (seg.ts, seg.iface, seq, att, extra)
        self._seen.move_to_end(key)
        if len(self._seen) > self.limit:
            self._seen.popitem(last=False)


def copy_note(first_seq: int, seg: Segment) -> str:
    return (
        f"the segment of record #{first_seq} again, seen on {seg.iface or 'another device'} "
        "(a bridge and its ports, or NAT on the way, show one segment more than once)"
    )
