"""NAT and network namespaces: a segment seen with other addresses, or in another place,
than the socket it belongs to.

The capture sees ingress frames before DNAT/REDIRECT and egress frames after SNAT, and a
host capture sees containers' traffic whose sockets are in their own namespaces' tables.
``NatViews`` asks conntrack for the socket's real tuple (``through_nat``) and looks each end
of a segment up in the namespace that owns its address (``across``, composed by
crossns.py). Only the live attributor calls it: a file's segments have no conntrack.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

from .crossns import NatIndex, compose, mapping_ends, unknown_end
from .demux import attribute
from .freshness import ResolveGate, needs_resolve
from .model import (
    PACKET_HOST,
    PACKET_OUTGOING,
    Attribution,
    FlowKey,
    Lookup,
    Match,
    Segment,
    SocketEntry,
    SocketTable,
    endpoint_text,
    unmap,
)
from .sockets.conntrack import Conntrack, NatMapping, local_socket_tuple, sending_socket_tuple
from .sockets.namespaces import NamespaceTables
from .tablesource import TableSource

NAT_SUSPECTS = frozenset((Match.NONE, Match.NOT_LOCAL, Match.UNKNOWN))

_UNSET = object()
# a row across namespaces as each end's socket sees it: (receiving segment, its table, its
# namespace, sending segment, its namespace (None: another host))
View = tuple[Segment, SocketTable, int, Segment, int | None]


def nat_may_hide(seg: Segment, att: Attribution, table: SocketTable) -> bool:
    """Whether NAT may be why an end of ``seg`` was not found (worth asking conntrack): a
    miss, a SYN (what the client dialled), or a segment from this host whose sending socket
    the table does not show under the captured tuple (both ends local, as with an OUTPUT
    REDIRECT: the sender's socket holds the tuple before the rewrite)."""
    return (
        seg.is_syn
        or att.match in NAT_SUSPECTS
        or (att.sender is None and "R" not in seg.flags and table.is_local(seg.src))
    )


class NatViews:
    """conntrack's and the other namespaces' view of segments the primary table misses."""

    def __init__(
        self,
        tables: TableSource,
        spaces: NamespaceTables | None,
        gate: ResolveGate,
        conntrack: Conntrack | None = None,
    ) -> None:
        """``conntrack``: the table to ask (tests); by default the kernel's, opened once it
        has one."""
        self.tables = tables
        self.spaces = spaces
        self._gate = gate
        self._nat: Conntrack | None = conntrack
        self._nat_next_check = 0.0
        self._nat_cache: dict[FlowKey, object] = {}
        self._nat_index = NatIndex()

    def through_nat(self, seg: Segment, att: Attribution) -> Attribution:
        """What conntrack says about a segment NAT may have rewritten.

        The capture sees ingress frames before DNAT/REDIRECT and egress frames after SNAT and
        the reverse translation, so with NAT the captured addresses are not the socket's
        (KERNEL-DEMUX.md §6). A miss (none, not_local, unknown) is looked up again with the
        socket's real tuple; a SYN that already found its socket learns what the client
        dialled. ``conntui.sockets.conntrack`` has the direction rules.
        """
        table = self.tables.current()
        if not nat_may_hide(seg, att, table):
            return att
        nat = self.conntrack()
        if nat is None:
            return att
        key = seg.key
        mapping = self._nat_cache.get(key, _UNSET)
        if mapping is _UNSET:
            outgoing = seg.pkttype == PACKET_OUTGOING or seg.src == seg.dst or seg.iface == "lo"
            mapping = nat.lookup(key, seg.family, outgoing=outgoing)
            if len(self._nat_cache) > 65536:
                self._nat_cache.clear()
            self._nat_cache[key] = mapping
        if not isinstance(mapping, NatMapping) or not mapping.nat:
            return att
        sock = local_socket_tuple(mapping, key, is_local=table.is_local)
        if sock is None:
            return att
        laddr, lport, raddr, rport = sock
        o = mapping.original
        dialled = endpoint_text(o.dst, o.dport)
        kind = "REDIRECT/DNAT" if mapping.dst_nat else "SNAT"
        if att.match not in NAT_SUSPECTS:  # found already (post-NAT capture, e.g. on lo)
            if seg.is_syn:
                note = f"NAT ({kind}): the client dialled {dialled}; conntrack sent it to this socket"
                att = replace(att, notes=(*att.notes, note))
            return self._nat_sender(seg, att, mapping, table, kind)
        incoming = unmap(seg.src) == unmap(raddr) and seg.sport == rport
        if incoming:
            real = seg._replace(src=raddr, sport=rport, dst=laddr, dport=lport)
        else:
            real = seg._replace(src=laddr, sport=lport, dst=raddr, dport=rport)
        if real == seg:
            return att
        real_att = attribute(real, table)
        local_end = real_att.receiver if incoming else real_att.sender
        if needs_resolve(real, real_att, table) or local_end is None or not local_end.holders:
            fresher = self.tables.resolve(real)
            if fresher is not None:
                real_att = attribute(real, fresher)
        here = endpoint_text(laddr, lport)
        step = Lookup(
            f"conntrack: {endpoint_text(seg.src, seg.sport)} → {endpoint_text(seg.dst, seg.dport)} ({kind})",
            f"the local socket is {here} ↔ {endpoint_text(raddr, rport)}",
        )
        why = (
            f"NAT ({kind}): the client dialled {dialled}; conntrack rewrote the connection so the "
            f"socket on {here} {'receives' if incoming else 'sends'} it (the capture shows the "
            f"addresses as they were on the wire). {real_att.explain}"
        )
        return replace(real_att, explain=why, steps=(step, *real_att.steps))

    def _nat_sender(
        self, seg: Segment, att: Attribution, mapping: NatMapping, table: SocketTable, kind: str
    ) -> Attribution:
        """Name the sending socket of a segment from this host that the captured tuple does not
        show: NAT rewrote the segment after that socket sent it (an OUTPUT REDIRECT on lo:
        the client's socket is connected to the dialled port, its SYN is captured going to
        the daemon's). conntrack's tuple for the sending end is looked up instead."""
        if att.sender is not None or "R" in seg.flags or not table.is_local(seg.src):
            return att
        sock = sending_socket_tuple(mapping, seg.key, is_local=table.is_local)
        if sock is None or sock == (seg.src, seg.sport, seg.dst, seg.dport):
            return att
        laddr, lport, raddr, rport = sock
        sent = seg._replace(src=laddr, sport=lport, dst=raddr, dport=rport)
        found = attribute(sent, table)
        if found.sender is None or not found.sender.holders:
            fresher = self.tables.resolve(sent)
            if fresher is not None:
                found = attribute(sent, fresher)
        if found.sender is None:
            return att
        here, there = endpoint_text(laddr, lport), endpoint_text(raddr, rport)
        step = Lookup(
            f"conntrack: {endpoint_text(seg.src, seg.sport)} → {endpoint_text(seg.dst, seg.dport)} ({kind})",
            f"the sending socket is {here} ↔ {there}",
        )
        senders = tuple(x for x in found.steps if x.what.startswith("sender socket"))
        why = (
            f"NAT ({kind}) rewrote this segment after its socket sent it: conntrack gives the "
            f"sending socket's tuple {here} → {there}. {found.sender_explain}"
        )
        return replace(att, sender=found.sender, sender_explain=why, steps=(*att.steps, step, *senders))

    def across(self, seg: Segment, att: Attribution) -> tuple[Attribution, View | None] | None:
        """The row of a segment an end of which is in another network namespace (a
        container's): each end looked up in the namespace owning its address, with its
        socket's own tuple (through conntrack when NAT rewrote it), and the receiving
        socket's own view of it (judged there when the row settles; None: no one table
        receives it). None: both ends are in this namespace or on other hosts, and the
        usual path answers (crossns.py)."""
        spaces = self.spaces
        assert spaces is not None
        home = spaces.primary_inode
        elsewhere = spaces.owner(seg.src) not in (home, None) or spaces.owner(seg.dst) not in (home, None)
        elsewhere = elsewhere or bool(spaces.owners(seg.src) or spaces.owners(seg.dst))
        if not elsewhere and not (seg.is_syn or att.match in NAT_SUSPECTS):
            return None
        mapping = self._mapping(seg)
        ends = mapping_ends(mapping, seg) if mapping is not None and mapping.nat else None
        if ends is None:
            if not elsewhere:
                return None
            mapping = None
            ends = (seg.src, seg.sport, seg.dst, seg.dport), (seg.dst, seg.dport, seg.src, seg.sport)
        snd, rcv = ends
        snd_ns, rcv_ns = spaces.owner(snd[0]), spaces.owner(rcv[0])
        if snd_ns in (home, None) and rcv_ns in (home, None) and not spaces.owners(rcv[0]):
            return None  # a NAT of this namespace's own (REDIRECT): through_nat's
        # each end as its own socket sees it (the device is the host's, not that namespace's)
        rseg = seg._replace(src=rcv[2], sport=rcv[3], dst=rcv[0], dport=rcv[1], pkttype=PACKET_HOST)
        sseg = seg._replace(src=snd[0], sport=snd[1], dst=snd[2], dport=snd[3], pkttype=PACKET_OUTGOING)
        rseg, sseg = rseg._replace(ifindex=0, iface=""), sseg._replace(ifindex=0, iface="")
        several = spaces.owners(rcv[0])
        view: View | None = None
        if rcv_ns is None and len(several) > 1:
            receiving = unknown_end(rcv[0], several)
        else:
            # owned by no namespace: handled where it was captured (forwarded, dropped, or
            # steered by TPROXY to a local socket), with the device and packet type it came by
            where = home if rcv_ns is None else rcv_ns
            if where == home:
                rseg = rseg._replace(iface=seg.iface, ifindex=seg.ifindex)
                if mapping is None:
                    rseg = rseg._replace(pkttype=seg.pkttype)
            rtable = spaces.table(where)
            assert rtable is not None
            receiving = self._look(rseg, rtable, where)
            view = (rseg, rtable, where, sseg, snd_ns)
        stable = spaces.table(snd_ns) if snd_ns is not None else None
        if stable is not None:
            sending = self._look(sseg, stable, snd_ns, "sender")
        else:
            sending = attribute(sseg, spaces.primary.current())
        crossed = compose(
            seg,
            receiving,
            sending,
            rcv=rcv,
            rcv_where=self.ns_label(rcv_ns) if rcv_ns not in (home, None) else "",
            snd_where=self.ns_label(snd_ns) if snd_ns not in (home, None) else "",
            mapping=mapping,
        )
        return crossed, view

    def _look(self, seg: Segment, table: SocketTable, ns: int | None, end: str = "receiver") -> Attribution:
        """The demux in one namespace's table, looked up again there when it is too old, and
        again when the socket of ``end`` (receiver or sender) has changed hands since."""
        att = attribute(seg, table)
        spaces = self.spaces
        if ns is None or spaces is None:
            return att
        if needs_resolve(seg, att, table) and self._gate.may_resolve(seg, att):
            src = spaces.source(ns)
            fresher = src.resolve(seg) if src is not None else None
            if fresher is not None:
                table, att = fresher, attribute(seg, fresher)
        sock = att.receiver if end == "receiver" else att.sender
        now = self._held_now(sock, ns)
        if now is not sock and now is not None:
            att = attribute(seg, table.with_entries((now,)))
        return att

    def _held_now(self, sock: SocketEntry | None, ns: int | None) -> SocketEntry | None:
        """``sock`` with the holders it has now, when those the table shows have let it go
        (a forking server: the parent accept()s, a child takes the socket, the parent closes
        its fd; the table read before still names the parent). One readlink per holder."""
        if sock is None or not sock.inode or not sock.holders or ns is None or self.spaces is None:
            return sock
        link = f"socket:[{sock.inode}]"
        for h in sock.holders:
            try:
                if os.readlink(f"/proc/{h.pid}/fd/{h.fd}") == link:
                    return sock
            except OSError:
                pass
        src = self.spaces.source(ns)
        if src is None:
            return sock
        found = src.scanner.find_holders({sock.inode}, [h.pid for h in sock.holders], deep=False)
        now = found.get(sock.inode, ())
        if not now:
            return sock  # gone, or not found cheaply: the table's view stands
        return replace(sock, holders=now, former_holders=(*sock.former_holders, *sock.holders))

    def ns_label(self, ns: int | None) -> str:
        """How a row names a network namespace (with its name when it has one)."""
        spaces = self.spaces
        if ns is None or spaces is None:
            return ""
        info = spaces.infos.get(ns)
        if info is not None and info.name:
            return f"network namespace net:[{ns}] ({info.name})"
        return f"network namespace net:[{ns}]"

    def _mapping(self, seg: Segment) -> NatMapping | None:
        """The conntrack entry of ``seg``'s connection: asked once per captured tuple, or
        (a half-translated copy, which no whole tuple of the entry matches) found by an
        endpoint of an entry seen before."""
        key = seg.key
        mapping = self._nat_cache.get(key, _UNSET)
        if mapping is _UNSET:
            nat = self.conntrack()
            mapping = None
            if nat is not None:
                outgoing = seg.pkttype == PACKET_OUTGOING or seg.src == seg.dst or seg.iface == "lo"
                mapping = nat.lookup(key, seg.family, outgoing=outgoing)
            if mapping is None:
                mapping = self._nat_index.find(seg)
            elif isinstance(mapping, NatMapping) and mapping.nat:
                self._nat_index.add(mapping)
            if len(self._nat_cache) > 65536:
                self._nat_cache.clear()
            if mapping is not None or not seg.is_syn:  # a SYN may come before its entry
                self._nat_cache[key] = mapping
        return mapping if isinstance(mapping, NatMapping) else None

    def conntrack(self) -> Conntrack | None:
        """The conntrack table, once the kernel has one (NAT rules load it on demand)."""
        if self._nat is not None:
            return self._nat if self._nat.available else None
        now = time.monotonic()
        if now < self._nat_next_check:
            return None
        self._nat_next_check = now + 5.0
        if not os.path.exists("/proc/sys/net/netfilter/nf_conntrack_max"):
            return None
        try:
            self._nat = Conntrack()
        except OSError:
            return None
        return self._nat
