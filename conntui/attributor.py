"""Attribution of one decoded segment: the socket table, capture order and NAT together.

The demux (demux.py) answers from one socket table; the table is read after the fact. The
attributor decides which table to ask and whether to trust the answer: a cached answer for
a flow's data and ACKs (flowcache.py), the flow's history in capture order (one
``FlowHistory.observe`` per segment: FINs, RSTs, an old connection a SYN ran into), an
exact look-up when the table may be too old (freshness.py), and NAT and the other
namespaces (natviews.py). It owns no thread and keeps no row; the engine calls it once per
segment it stores.
"""

from __future__ import annotations

import time
from dataclasses import replace

from .capfile.comments import attribution_from_comment
from .demux import attribute
from .flowcache import FlowCache, cache_key
from .freshness import ResolveGate, final_answer, late_after_close, needs_resolve, shows_open
from .history import FlowHistory
from .model import Attribution, Frame, Match, Segment, SocketTable
from .natviews import NatViews, View, nat_may_hide
from .sockets.namespaces import NamespaceTables
from .tablesource import TableSource


class Attributor:
    """One segment → its attribution (and, across namespaces, the receiving end's view)."""

    def __init__(
        self,
        tables: TableSource,
        *,
        live: bool,
        resolve_cooldown: float = 0.05,
        use_file_attributions: bool = True,
    ) -> None:
        self.tables = tables
        self.live = live
        self.use_file_attributions = use_file_attributions
        self.history = FlowHistory()  # what capture order showed: FINs, RSTs, old connections
        self.flow_cache = FlowCache(final=final_answer)
        self.gate = ResolveGate(resolve_cooldown)
        # every network namespace's table, when the tables source keeps them (host capture)
        self.spaces = tables if isinstance(tables, NamespaceTables) else None
        self.views = NatViews(tables, self.spaces, self.gate)
        self._listener_checks: dict[tuple[str, int], float] = {}

    def attribute(self, frame: Frame, seg: Segment) -> tuple[Attribution, View | None]:
        """The segment's attribution, and the receiving socket's own view of a row that
        crosses namespaces (None for every other row)."""
        if frame.comment and self.use_file_attributions:
            restored = attribution_from_comment(frame.comment)
            if restored is not None:
                return restored, None
        table = self.tables.current()
        if not self.live and not len(table):
            return Attribution(
                Match.UNKNOWN,
                explain="Read from a file with no attribution recorded: the socket table of that "
                "moment is not known.",
            ), None
        # Most segments are data and ACKs of flows already seen: with the same table, the
        # demux would answer exactly as before (it reads only addresses, ports, flags,
        # packet type and interface for them), so reuse that answer.
        flags = seg.flags
        seen = self.history.observe(seg)
        closed, old_conn = seen.closed, seen.old_conn
        if old_conn is not None:
            # a SYN hit this old connection; until its RST is seen, it is the one on this tuple
            table = table.with_entries((old_conn,))
        cacheable = (
            "S" not in flags and "F" not in flags and "R" not in flags and not closed and old_conn is None
        )
        if cacheable:
            key = cache_key(seg)
            hit = self.flow_cache.get(table, key)
            if hit is not None:
                return hit, None
        after_reset = False
        if seen.reset_before:
            pruned = self._forget_reset(seg, table)
            after_reset, table = pruned is not table, pruned
        att = attribute(seg, table)
        if self.spaces is not None and self.live and len(self.spaces) > 1:
            crossed = self.views.across(seg, att)
            if crossed is not None:
                # never cached for the C fast path: each end was read in its own namespace's
                # table, whose refreshes the cache does not follow; every copy and segment of
                # it is judged against the kernel's record of its namespace
                return crossed
        stale_after_close = closed and not seg.is_syn and shows_open(att)
        if (
            self.live
            and (
                after_reset
                or stale_after_close
                or needs_resolve(seg, att, table)
                or self._listeners_stale(seg, att)
            )
            and self.gate.may_resolve(seg, att)
        ):
            first = att
            fresher = self.tables.resolve(seg, prune=stale_after_close)
            if fresher is not None and old_conn is not None:
                fresher = fresher.with_entries((old_conn,))
            if fresher is not None:
                att = attribute(seg, self._forget_reset(seg, fresher) if seen.reset_before else fresher)
            old = first.receiver
            if (
                seg.is_syn
                and first.match == Match.ESTABLISHED
                and att.match == Match.LISTENER
                and old is not None
                and 0 < old.first_seen < seg.ts
                and not after_reset
                and not seen.syn_after_close
            ):
                # Capture order decides: the old connection was alive when this SYN came (no RST
                # or close of it was seen before), so the SYN hit it (challenge ACK); the new
                # connection the table shows now was made after its RST, further on.
                att = first
                self.history.keep_old_connection(seg, old)
            if first.match == Match.TIME_WAIT and seg.is_syn and att.match == Match.LISTENER:
                # The table read after the fact shows the connection this SYN made; the one
                # before showed why the kernel let it through: keep both halves.
                att = replace(att, explain=f"{att.explain} It reused a TIME_WAIT 4-tuple: {first.explain}")
            if closed and not seg.is_syn:
                att = late_after_close(seg, att)
            # a fresher table came in: the next segment of the flow is cached against it
            return self.views.through_nat(seg, att), None
        if closed and not seg.is_syn:
            att = late_after_close(seg, att)
        if self.live and nat_may_hide(seg, att, table):
            natted = self.views.through_nat(seg, att)
            if natted is not att:
                return natted, None
        if cacheable and self.tables.current() is table and not needs_resolve(seg, att, table):
            self.flow_cache.put(table, key, att)
        return att, None

    def syn_was_accepted(self, seg: Segment) -> bool:
        """Whether the connection a SYN asks for exists (request sock or child): then the SYN
        was not dropped, whatever the listener's queue shows now (the verifier asks)."""
        return any(
            e.state != "TIME_WAIT"
            for e in self.tables.current().connected("tcp", seg.dst, seg.dport, seg.src, seg.sport)
        )

    @staticmethod
    def _forget_reset(seg: Segment, table: SocketTable) -> SocketTable:
        """Hide a connection from the SYN that follows its reset.

        The table is read after the fact: a connection killed by a RST may still be listed
        (the refresher has not run) or may be gone although the SYN before the RST reached
        it. Capture order settles it: a SYN after a RST on its 4-tuple
        (``Seen.reset_before``) is a new connection attempt, and the old connection must
        not explain it.
        """
        old = [
            e
            for e in table.connected("tcp", seg.dst, seg.dport, seg.src, seg.sport)
            if e.state != "TIME_WAIT"
        ]
        return table.with_entries((), removed=old) if old else table

    def _listeners_stale(self, seg: Segment, att: Attribution) -> bool:
        """A SYN to a listener: check the port's listeners (new SO_REUSEPORT members, queue
        lengths) at most once a second per port; the refresher covers the rest."""
        if att.match != Match.LISTENER or not seg.is_syn:
            return False
        key = (seg.proto, seg.dport)
        now = time.monotonic()
        last = self._listener_checks.get(key)
        if last is not None and now - last < 1.0:
            return False
        if len(self._listener_checks) > 10_000:
            self._listener_checks.clear()
        self._listener_checks[key] = now
        return True
