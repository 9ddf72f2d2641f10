"""The kernel's socket lookup for one segment, emulated as a pure function.

``attribute(segment, table)`` answers two questions for the explanation pane: which local
socket the kernel hands the segment to (and *why*: the lookups it tried, in order), and which
local socket sent it. It follows ``KERNEL-DEMUX.md`` (Linux 6.x ``tcp_v4_rcv`` /
``__inet_lookup_skb`` / ``__udp4_lib_lookup`` and their IPv6 twins).

It runs once per captured packet on the capture thread, so the common case (an established
hit) is a couple of dict gets and a few f-strings: no regex, no ``ipaddress`` objects.

TPROXY is emulated for segments to non-local addresses (``_tproxy``): the rule's on-port
(``table.tproxy``, read from the ruleset) and the ``IP_TRANSPARENT`` flag sock_diag reports.

A BPF sk_lookup program on the namespace (``table.sk_lookup``) is named, and the answer
worded as the table's prediction. What it cannot see, and so does not emulate: what such a
program or a SO_ATTACH_REUSEPORT_[CE]BPF one chooses, NAT (the
capture sees pre-NAT headers; the engine asks conntrack), ``SO_INCOMING_CPU``, multicast group
membership and the boot-time hash secrets that pick one member of a ``SO_REUSEPORT`` group
(reported as "one of N"). Device binding is checked for listeners and UDP, not in the
established hash.
"""

from __future__ import annotations

from conntui.model import (
    PACKET_BROADCAST,
    PACKET_MULTICAST,
    PACKET_OTHERHOST,
    PACKET_OUTGOING,
    Attribution,
    Lookup,
    Match,
    Segment,
    SocketEntry,
    SocketTable,
    TproxyRule,
    TproxyRules,
    endpoint_text,
)

__all__ = ["attribute"]

# A full socket with no struct socket in these states was close()d: the kernel finishes it.
_CLOSING_STATES = frozenset({"FIN_WAIT1", "FIN_WAIT2", "CLOSING", "LAST_ACK", "CLOSE"})
# A full socket with no struct socket in these states is an unaccepted child of a listener.
_CHILD_STATES = frozenset({"ESTABLISHED", "CLOSE_WAIT", "SYN_RECV"})
_WILDCARDS = frozenset({"0.0.0.0", "::"})
# Answers a BPF sk_lookup program may override: the listener / unconnected-socket look-ups.
_SK_LOOKUP_DECIDES = frozenset({Match.LISTENER, Match.UDP_UNCONNECTED, Match.NONE})

# (receiver match, receiver, listener, candidates, explain)
_Result = tuple[Match, SocketEntry | None, SocketEntry | None, tuple[SocketEntry, ...], str]
# (winner, every member of its SO_REUSEPORT group (or just the winner), score)
_Pick = tuple[SocketEntry | None, tuple[SocketEntry, ...], int]
_NO_PICK: _Pick = (None, (), -1)


def attribute(seg: Segment, table: SocketTable) -> Attribution:
    """Who receives ``seg`` (emulating the kernel's lookup), who sent it, and why.

    The receiver is looked up only when the destination is an address of this host (or, for
    UDP, a multicast/broadcast group); the sender only when the source is. ``steps`` lists
    every lookup tried with its result, in order, receiver first.
    """
    steps: list[Lookup] = []
    proto = seg.proto
    src, dst = seg.src, seg.dst
    s_ep = f"[{src}]:{seg.sport}" if ":" in src else f"{src}:{seg.sport}"
    d_ep = f"[{dst}]:{seg.dport}" if ":" in dst else f"{dst}:{seg.dport}"
    if proto == "tcp":
        if seg.pkttype != PACKET_OTHERHOST and table.is_local(dst):
            res = _tcp_receiver(seg, table, steps, s_ep, d_ep)
        else:
            res = _tproxy(seg, table, steps, s_ep, d_ep) or _not_local(seg, steps)
    elif proto == "udp":
        group = _group_kind(seg)
        if group and seg.pkttype != PACKET_OTHERHOST:
            res = _udp_group(seg, table, steps, group)
        elif seg.pkttype != PACKET_OTHERHOST and table.is_local(dst):
            res = _udp_receiver(seg, table, steps, s_ep, d_ep)
        else:
            res = _tproxy(seg, table, steps, s_ep, d_ep) or _not_local(seg, steps)
    else:
        return Attribution(Match.NONE, explain=f"{proto or 'this protocol'} is not TCP or UDP.")

    sender, sender_explain = _sender(seg, table, steps, s_ep, d_ep)
    match, receiver, listener, candidates, explain = res
    sk = table.sk_lookup
    if (
        sk is not None
        and sk.programs
        and match in _SK_LOOKUP_DECIDES
        and table.is_local(dst)
        and not (proto == "udp" and receiver is not None and receiver.local.key_addr not in _WILDCARDS)
    ):
        # TCP: after the established hash, before every listener. UDP: after connected and
        # exact-address sockets, before wildcard ones (Linux 5.9's sk_lookup placement, as
        # recalled; not re-checked against 6.18 here).
        progs = ", ".join(sk.programs)
        steps.append(Lookup("BPF sk_lookup programs on this namespace (run before this look-up)", progs))
        explain = (
            f"{explain} A BPF sk_lookup program is attached to this namespace ({progs}): it runs "
            "before this look-up and may hand the segment to another socket, so this is only the "
            "socket table's prediction (the kernel's record, where shown, names its choice)."
        )
    if match is Match.NOT_LOCAL and sender is not None:
        explain = f"{explain[:-1]}; {sender_explain}."
    return Attribution(
        match,
        receiver=receiver,
        sender=sender,
        explain=explain,
        steps=tuple(steps),
        listener=listener,
        candidates=candidates,
        sender_explain=sender_explain,
    )


# --------------------------------------------------------------------------- small helpers


_ep = endpoint_text


def _who(e: SocketEntry) -> str:
    """``nginx[12] fd 7``; a socket nobody visible holds says why."""
    if e.holders:
        return e.describe()
    if e.inode:
        return f"socket inode {e.inode}, owner not visible"
    return "the kernel"


def _closed_by(e: SocketEntry) -> str:
    if e.former_holders:
        h = e.former_holders[0]
        return f"closed by {h.process}[{h.pid}] (was fd {h.fd})"
    return "its process already closed it"


def _is_unaccepted(e: SocketEntry) -> bool:
    """No struct socket and nobody holds it: a request sock, an unaccepted child or an orphan."""
    return e.inode == 0 and not e.holders


def _ifindex(seg: Segment, table: SocketTable) -> int:
    """The receiving device's index (0 when unknown: device binding is then not checked)."""
    if seg.ifindex or not seg.iface:
        return seg.ifindex
    for index, name in table.ifnames.items():
        if name == seg.iface:
            return index
    return 0


def _bucket(e: SocketEntry, addr: str, family: int) -> int:
    """2: bound to exactly ``addr``; 1: wildcard that takes this family; 0: no; -1: v6only.

    A v4 socket never takes IPv6. A v6 socket takes IPv4 only when not v6only and bound to
    ``::`` or ``::ffff:addr`` (``key_addr`` has the mapping already removed).
    """
    la = e.local.key_addr
    if family == 4:
        if e.family == 4:
            return 2 if la == addr else 1 if la == "0.0.0.0" else 0
        if la != addr and la not in _WILDCARDS:
            return 0
        if e.v6only:
            return -1
        return 2 if la == addr else 1
    if e.family != 6:
        return 0
    return 2 if la == addr else 1 if la == "::" else 0


def _first_established(hits: list[SocketEntry]) -> SocketEntry | None:
    """The established-hash entry for a 4-tuple: a live socket before a TIME_WAIT one."""
    found = None
    for e in hits:
        if e.state == "LISTEN":
            continue
        if e.state != "TIME_WAIT":
            return e
        if found is None:
            found = e
    return found


def _existed_before(e: SocketEntry, seg: Segment, table: SocketTable) -> bool | None:
    """Whether ``e`` existed before ``seg`` arrived: True, False, or None when unknown.

    ``first_seen`` is when the refresher first saw the socket; failing that, a table taken
    before the segment proves the socket was already there.
    """
    if e.first_seen:
        return e.first_seen < seg.ts
    if table.taken_at and table.taken_at < seg.ts:
        return True
    return None


def _group_kind(seg: Segment) -> str:
    """ "multicast", "broadcast" or "" for a UDP destination."""
    if seg.pkttype == PACKET_MULTICAST:
        return "multicast"
    if seg.pkttype == PACKET_BROADCAST:
        return "broadcast"
    dst = seg.dst
    if seg.family == 6:
        return "multicast" if dst[:2].lower() == "ff" else ""
    if dst == "255.255.255.255":
        return "broadcast"
    head = dst.split(".", 1)[0]
    return "multicast" if head.isascii() and head.isdigit() and 224 <= int(head) <= 239 else ""


def _not_local(seg: Segment, steps: list[Lookup]) -> _Result:
    if seg.pkttype == PACKET_OTHERHOST:
        steps.append(Lookup("frame addressed to this host's hardware address?", "no (PACKET_OTHERHOST)"))
        why = (
            f"The frame for {_ep(seg.dst, seg.dport)} was addressed to another machine's hardware "
            "address (seen only because the interface is promiscuous): the kernel drops it."
        )
        return Match.NOT_LOCAL, None, None, (), why
    steps.append(Lookup(f"route: is {seg.dst} an address of this host?", "no"))
    if seg.pkttype == PACKET_OUTGOING:
        why = (
            f"This host sends it to {_ep(seg.dst, seg.dport)}, another machine: "
            "the receiving socket is over there, not here."
        )
        return Match.NOT_LOCAL, None, None, (), why
    why = (
        f"{seg.dst} is not an address of this host, so no local socket receives "
        f"{_ep(seg.dst, seg.dport)} (the kernel forwards or drops it)."
    )
    return Match.NOT_LOCAL, None, None, (), why


# --------------------------------------------------------------------------- TPROXY

_TCP_LEARNS = (
    "the connection keeps {d} as its local address, so the daemon learns the original "
    "destination once per connection, with getsockname() on the accepted socket (REDIRECT/DNAT "
    "would rewrite the address instead, leaving getsockopt(SO_ORIGINAL_DST) to recover it)"
)
_UDP_LEARNS = (
    "the datagram keeps its headers, so the daemon learns the original destination {d} per "
    "datagram, from recvmsg() with IP_RECVORIGDSTADDR (one socket serves every steered "
    "address and port; REDIRECT/DNAT would rewrite it, and SO_ORIGINAL_DST exists for TCP only)"
)


def _tproxy(seg: Segment, table: SocketTable, steps: list[Lookup], s_ep: str, d_ep: str) -> _Result | None:
    """``tproxy_tg4`` / ``nft_tproxy``: a segment for a non-local address that a TPROXY rule
    hands to an ``IP_TRANSPARENT`` socket, or ``None`` when nothing suggests TPROXY.

    The kernel first looks up an established socket on the segment's own tuple (a transparent
    connection's local address is the original destination), then a listener (TCP) or an
    unconnected socket (UDP) on the rule's on-ip/on-port; a socket that is not transparent,
    or none, and the kernel drops the segment. Rules come from ``table.tproxy``; when it
    could not be read, a rule is presumed only because a transparent socket exists.
    """
    if seg.pkttype in (PACKET_OTHERHOST, PACKET_OUTGOING):
        return None
    proto = seg.proto
    found = table.connected(proto, seg.dst, seg.dport, seg.src, seg.sport)
    if proto == "tcp":
        hit = _first_established(found)
    else:
        hit = next((e for e in found if e.state == "ESTABLISHED"), None)
    info = table.tproxy
    rules = info.matching(seg) if info is not None else ()
    if hit is not None and not (seg.is_syn and _existed_before(hit, seg, table) is not True):
        # A held socket without IP_TRANSPARENT keeps a removed address, say: no TPROXY then,
        # unless a rule says so (the flag is not reported for TIME_WAIT and request socks).
        plausible = hit.transparent or not hit.holders or rules or info is None or info.errors
        if not plausible:
            return None
        return _tproxy_established(seg, table, steps, hit, rules[0] if rules else None, s_ep, d_ep)
    for rule in rules:
        # A rule with conditions conntui cannot check decides only if its socket is there.
        res = _tproxy_rule(seg, table, steps, rule, s_ep, d_ep)
        if res is not None:
            return res
    return _tproxy_presumed(seg, table, steps, info, d_ep)


def _tproxy_rule(
    seg: Segment, table: SocketTable, steps: list[Lookup], rule: TproxyRule, s_ep: str, d_ep: str
) -> _Result | None:
    """What one matching TPROXY rule does with ``seg`` (None: it may not apply after all)."""
    proto = seg.proto
    port = rule.port_for(seg)
    on_ip = rule.on_ip if rule.on_ip and rule.on_ip not in _WILDCARDS else ""
    sock = _tproxy_socket(table, proto, seg.family, port, on_ip)
    where = _ep(on_ip, port) if on_ip else f"port {port}"
    if rule.other and (sock is None or not sock.transparent):
        steps.append(Lookup(f"TPROXY rule for {proto.upper()} to {d_ep}?", f"maybe: {rule.describe()}"))
        return None
    steps.append(Lookup(f"TPROXY rule for {proto.upper()} to {d_ep}", rule.describe()))
    if sock is None:
        steps.append(Lookup(f"socket on {where} for the TPROXY rule", "none"))
        why = (
            f"The rule {rule.describe()} steers {proto.upper()} to {d_ep} to {where}, but no "
            f"{'listener' if proto == 'tcp' else 'socket'} is there: the kernel drops it (no "
            f"{'RST' if proto == 'tcp' else 'ICMP'} is sent)."
        )
        return Match.NONE, None, None, (), why
    steps.append(Lookup(f"socket on {where} for the TPROXY rule", f"hit: {_who(sock)} on {sock.local}"))
    if not sock.transparent:
        why = (
            f"The rule {rule.describe()} steers {proto.upper()} to {d_ep} to {_who(sock)} on "
            f"{sock.local}, which has no IP_TRANSPARENT: the kernel drops it (the socket must "
            "set IP_TRANSPARENT to take segments for addresses that are not this host's)."
        )
        return Match.NONE, None, None, (), why
    return _tproxy_hand(seg, table, steps, sock, f"the rule {rule.describe()}", s_ep, d_ep)


def _tproxy_socket(table: SocketTable, proto: str, family: int, port: int, on_ip: str) -> SocketEntry | None:
    """The listener (TCP) or unconnected socket (UDP) TPROXY's second look-up finds on
    ``port``: bound to ``on_ip`` first, else a wildcard one, else (no on-ip: the receiving
    device's primary address, unknown here) one bound to any address."""
    exact = wild = other = None
    for e in table.on_port(proto, port):
        if proto == "tcp" and e.state != "LISTEN":
            continue
        if proto == "udp" and e.remote is not None and e.remote.port:
            continue
        if e.family != family and not (e.family == 6 and family == 4 and not e.v6only):
            continue
        la = e.local.key_addr
        if on_ip and la == on_ip:
            exact = exact or e
        elif la in _WILDCARDS:
            wild = wild or e
        elif not on_ip:
            other = other or e
    return exact or wild or other


def _tproxy_presumed(
    seg: Segment, table: SocketTable, steps: list[Lookup], info: TproxyRules | None, d_ep: str
) -> _Result | None:
    """No rule known for ``seg``: presume one only when the ruleset could not be read and a
    transparent socket could take it (on the segment's own port, or the only port there)."""
    if info is not None and not info.errors:
        return None  # the ruleset was read, and no TPROXY rule takes this segment
    proto = seg.proto
    socks = [
        e
        for e in table.transparent()
        if e.proto == proto and (e.family == seg.family or (e.family == 6 and not e.v6only))
    ]
    if not socks:
        return None
    own = [e for e in socks if e.local.port == seg.dport]
    ports = {e.local.port for e in socks}
    if own:
        sock = own[0]
    elif len(ports) == 1:
        sock = socks[0]
    else:
        steps.append(Lookup("TPROXY rule (presumed)", f"transparent sockets on ports {sorted(ports)}"))
        why = (
            f"{seg.dst} is not an address of this host; transparent sockets exist on ports "
            f"{', '.join(map(str, sorted(ports)))}, so a TPROXY rule probably steers it to one of "
            "them, but the ruleset could not be read to tell which"
            f"{_read_errors(info)}: unknown."
        )
        return Match.UNKNOWN, None, None, tuple(socks), why
    reason = (
        "no TPROXY rule could be read" + _read_errors(info)
        if info is not None
        else "the ruleset was not read (offline)"
    )
    found = f"{reason}; a transparent socket is on port {sock.local.port}"
    steps.append(Lookup("TPROXY rule (presumed)", found))
    how = f"a TPROXY rule is presumed ({reason}) because the transparent (IP_TRANSPARENT) socket exists"
    return _tproxy_hand(seg, table, steps, sock, how, _ep(seg.src, seg.sport), d_ep)


def _read_errors(info: TproxyRules | None) -> str:
    return f" ({'; '.join(info.errors)})" if info is not None and info.errors else ""


def _tproxy_hand(
    seg: Segment, table: SocketTable, steps: list[Lookup], sock: SocketEntry, how: str, s_ep: str, d_ep: str
) -> _Result:
    """The transparent socket ``sock`` takes a SYN or a datagram that TPROXY steered to it."""
    if seg.proto == "udp":
        why = (
            f"TPROXY: {seg.dst} is not an address of this host, yet {how} hands UDP {s_ep} → {d_ep} "
            f"to the transparent socket on {sock.local} ({_who(sock)}) with no look-up by "
            f"destination; {_UDP_LEARNS.format(d=d_ep)}."
        )
        return Match.UDP_UNCONNECTED, sock, None, (), why
    if seg.is_syn:
        why = (
            f"TPROXY: {seg.dst} is not an address of this host, yet {how} hands the SYN for {d_ep} "
            f"to the transparent listener on {sock.local} ({_who(sock)}); {_TCP_LEARNS.format(d=d_ep)}."
        )
        return Match.LISTENER, sock, None, (), why
    why = (
        f"TPROXY: {how} steers {s_ep} → {d_ep} to the transparent listener on {sock.local} "
        f"({_who(sock)}), but the socket table has no connection for this 4-tuple: it is probably "
        "newer than the table (a listener takes only SYNs; a segment of an unknown connection "
        "gets a RST)."
    )
    return Match.UNKNOWN, None, sock, (), why


def _tproxy_established(
    seg: Segment,
    table: SocketTable,
    steps: list[Lookup],
    hit: SocketEntry,
    rule: TproxyRule | None,
    s_ep: str,
    d_ep: str,
) -> _Result:
    """A segment for a non-local address whose own tuple is a socket's: a transparent
    connection (TCP, or a connected UDP socket). Its local address is the original destination."""
    steps.append(
        Lookup(f"established hash {d_ep} ← {s_ep} (non-local address)", f"hit: {hit.state}, {_who(hit)}")
    )
    how = f"the rule {rule.describe()}" if rule is not None else "TPROXY (or a socket-match rule)"
    learns = (
        f"its local address {d_ep} is the client's original destination (getsockname() returns it)"
        if seg.proto == "tcp"
        else f"it was connect()ed from {d_ep}"
    )
    if seg.proto == "udp":
        why = (
            f"TPROXY: {seg.dst} is not an address of this host; {how} first looks up the segment's own "
            f"tuple, and {_who(hit)} is a transparent socket connected exactly to it, so it "
            f"receives UDP {s_ep} → {d_ep}; {learns}."
        )
        return Match.UDP_CONNECTED, hit, None, (), why
    if hit.holders and hit.state not in ("TIME_WAIT", "SYN_SENT"):
        why = (
            f"TPROXY: {seg.dst} is not an address of this host; {how} finds the established "
            f"connection {s_ep} → {d_ep} first and delivers it to {_who(hit)}, the socket accept() "
            f"returned from the transparent listener: {learns}."
        )
        return Match.ESTABLISHED, hit, None, (), why
    pick: _Pick | None = None
    if rule is not None and _is_unaccepted(hit):
        on_ip = rule.on_ip if rule.on_ip not in _WILDCARDS else ""
        lst = _tproxy_socket(table, "tcp", seg.family, rule.port_for(seg), on_ip)
        if lst is not None:
            pick = (lst, (lst,), 1)
    res = _tcp_classify(seg, table, steps, hit, s_ep, d_ep, pick or _NO_PICK)
    match, receiver, listener, cands, why = res
    why = (
        f"TPROXY: {seg.dst} is not an address of this host; {how} finds the established connection "
        f"first (a transparent socket: {learns}). {why}"
    )
    return match, receiver, listener, cands, why


# --------------------------------------------------------------------------- TCP listeners


def _listeners(
    table: SocketTable, addr: str, port: int, family: int, ifindex: int, steps: list[Lookup], why: str = ""
) -> _Pick:
    """``__inet_lookup_listener``: the exact-address bucket, then (only if empty) the wildcard one.

    compute_score: 1, or 2 when bound to the receiving device (``SO_BINDTODEVICE``), +1 for an
    AF_INET socket on IPv4; the first strictly best socket in table order wins. Several
    equally best sockets on the same address and device can only coexist as a
    ``SO_REUSEPORT`` group: the kernel hashes the 4-tuple with a boot-time secret to pick one,
    so every member is returned. The reuseport short-circuit is emulated: scanning in bucket
    order (the table keeps sock_diag's dump order, which is the bucket's), the first socket
    that beats the best score so far and belongs to a SO_REUSEPORT group returns its group at
    once, before later (even better-scored) sockets are looked at. Group membership is
    inferred: Linux lets two listeners share a port with overlapping addresses and devices
    only if both set SO_REUSEPORT. Not emulated: ``SO_INCOMING_CPU`` and BPF sk_lookup.
    """
    exact: list[tuple[int, SocketEntry]] = []
    wild: list[tuple[int, SocketEntry]] = []
    rejected: list[str] = []
    everyone = [e for e in table.on_port("tcp", port) if e.state == "LISTEN"]
    for e in everyone:
        b = _bucket(e, addr, family)
        if b == 0:
            if family == 6 and e.family == 4 and e.local.key_addr == "0.0.0.0":
                rejected.append(f"{e.local} ({_who(e)}): an IPv4 socket never takes IPv6")
            continue
        if b < 0:
            rejected.append(f"{e.local} ({_who(e)}): IPV6_V6ONLY, takes no IPv4")
            continue
        if e.bound_ifindex and ifindex and e.bound_ifindex != ifindex:
            rejected.append(f"{e.local} ({_who(e)}): bound to device {table.ifname(e.bound_ifindex)}")
            continue
        score = (2 if e.bound_ifindex else 1) + (1 if family == 4 and e.family == 4 else 0)
        (exact if b == 2 else wild).append((score, e))

    suffix = f", {why}" if why else ""
    note = f"; rejected {', '.join(rejected)}" if rejected else ""
    pick = _best(exact, everyone)
    steps.append(Lookup(f"listeners on {_ep(addr, port)} (exact address){suffix}", _pick_text(pick, exact)))
    if pick[0] is not None:
        if note:
            steps.append(Lookup("listeners not eligible", note[2:]))
        return pick
    pick = _best(wild, everyone)
    where = f"0.0.0.0:{port} / [::]:{port}" if family == 4 else f"[::]:{port}"
    steps.append(Lookup(f"listeners on {where} (wildcard){suffix}", _pick_text(pick, wild) + note))
    return pick


def _overlaps(a: SocketEntry, b: SocketEntry) -> bool:
    """Whether two listeners on one port would conflict at bind() without SO_REUSEPORT
    (``inet_bind_conflict``: overlapping addresses and devices)."""
    if a.bound_ifindex and b.bound_ifindex and a.bound_ifindex != b.bound_ifindex:
        return False
    x, y = a.local.key_addr, b.local.key_addr
    if a.family != b.family:
        v6 = a if a.family == 6 else b
        if v6.v6only:
            return False
    return x == y or x in _WILDCARDS or y in _WILDCARDS


def _in_reuseport_group(e: SocketEntry, listeners: list[SocketEntry]) -> bool:
    return any(o is not e and _overlaps(e, o) for o in listeners)


def _best(scored: list[tuple[int, SocketEntry]], listeners: list[SocketEntry] | None = None) -> _Pick:
    """``inet_lhash2_lookup``: the first strictly better score wins, and a SO_REUSEPORT
    socket that beats the best so far ends the scan with its group."""
    if not scored:
        return _NO_PICK
    best_score, winner = -1, scored[0][1]
    for s, e in scored:
        if s > best_score:
            best_score, winner = s, e
            if listeners is not None and _in_reuseport_group(e, listeners):
                break
    la, dev, fam = winner.local.addr, winner.bound_ifindex, winner.family
    group = tuple(
        e
        for s, e in scored
        if s == best_score and e.local.addr == la and e.bound_ifindex == dev and e.family == fam
    )
    return winner, group, best_score


def _pick_text(pick: _Pick, scored: list[tuple[int, SocketEntry]]) -> str:
    winner, group, score = pick
    if winner is None:
        return "none"
    if len(group) > 1:
        text = f"hit: {len(group)} SO_REUSEPORT listeners (score {score}): " + ", ".join(
            _who(e) for e in group
        )
    else:
        text = f"hit: {_who(winner)} on {winner.local} (score {score})"
    losers = [f"{e.local} {_who(e)} (score {s})" for s, e in scored if e not in group]
    if losers:
        text += "; beats " + ", ".join(losers)
    return text


def _reuseport_chooser(table: SocketTable) -> str:
    """Who picks a SO_REUSEPORT group's member: the kernel's hash of the 4-tuple, unless a BPF
    program attached to the group (``SO_ATTACH_REUSEPORT_[CE]BPF``) picks it. Attachments are
    not visible from outside; loaded ``sk_reuseport`` programs are (``sockets.bpf``)."""
    sk = table.sk_lookup
    if sk is not None and sk.reuseport:
        return (
            "the kernel hashes the 4-tuple to pick one, unless a BPF program attached to the group "
            f"picks it: {', '.join(sk.reuseport)} is loaded on this host"
        )
    return (
        "the kernel hashes the 4-tuple to pick one, unless a classic or eBPF program attached to "
        "the group picks it (not visible from outside)"
    )


def _has_listener(table: SocketTable, proto: str, port: int) -> bool:
    return any(e.state == "LISTEN" for e in table.on_port(proto, port))


def _listener_where(seg: Segment, table: SocketTable, pick: _Pick) -> str:
    """``the listener on 0.0.0.0:8080 (node[12] fd 20)`` plus why the kernel chose it."""
    winner, group, _ = pick
    assert winner is not None
    if len(group) > 1:
        where = (
            f"one of {len(group)} SO_REUSEPORT listeners on {winner.local} "
            f"({', '.join(_who(e) for e in group)}; {_reuseport_chooser(table)})"
        )
    else:
        where = f"the listener on {winner.local} ({_who(winner)})"
    return where


def _listener_notes(seg: Segment, table: SocketTable, winner: SocketEntry, *, accepted: bool = False) -> str:
    notes = ""
    if winner.family == 6 and seg.family == 4:
        notes += f"; it is an IPv6 socket that also accepts IPv4 (it sees the client as ::ffff:{seg.src})"
    if winner.bound_ifindex:
        notes += (
            f"; it is bound to {table.ifname(winner.bound_ifindex)} with SO_BINDTODEVICE, "
            "which scores higher than an unbound listener"
        )
    if winner.local.key_addr in _WILDCARDS:
        notes += f"; a listener bound to exactly {seg.dst} would have won over this wildcard one"
    else:
        for e in table.on_port("tcp", seg.dport):
            if e.state == "LISTEN" and e.local.key_addr in _WILDCARDS:
                notes += f"; its exact address beats the wildcard listener on {e.local}"
                break
    if winner.tx_queue and winner.rx_queue > winner.tx_queue and not accepted:
        # (when this SYN's connection exists, the queue filled after it: it was not dropped)
        notes += (
            f"; its accept queue looks full ({winner.rx_queue} waiting, backlog {winner.tx_queue}), "
            "so the kernel may drop this SYN"
        )
    return notes


# --------------------------------------------------------------------------- TCP receiver


def _tcp_receiver(seg: Segment, table: SocketTable, steps: list[Lookup], s_ep: str, d_ep: str) -> _Result:
    """``tcp_v4_rcv``: the established hash, then the listeners, else a RST."""
    src, sport, dst, dport = seg.src, seg.sport, seg.dst, seg.dport
    hit = _first_established(table.connected("tcp", dst, dport, src, sport))
    if hit is not None:
        steps.append(Lookup(f"established hash {d_ep} ← {s_ep}", f"hit: {hit.state}, {_who(hit)}"))
        if seg.is_syn:
            return _tcp_syn_hit(seg, table, steps, hit, s_ep, d_ep)
        return _tcp_classify(seg, table, steps, hit, s_ep, d_ep, None)
    steps.append(Lookup(f"established hash {d_ep} ← {s_ep}", "miss"))

    pick = _listeners(table, dst, dport, seg.family, _ifindex(seg, table), steps)
    winner = pick[0]
    flags = seg.flags
    if seg.is_syn:
        if winner is None:
            return (
                Match.NONE,
                None,
                None,
                (),
                f"No socket on {d_ep} in the table — predicted: the kernel answers with a RST.",
            )
        cands = pick[1] if len(pick[1]) > 1 else ()
        why = (
            f"SYN to port {dport}: no established connection, "
            f"{_listener_where(seg, table, pick)} takes it{_listener_notes(seg, table, winner)}."
        )
        return Match.LISTENER, winner, None, cands, why
    if "R" in flags:
        if winner is None:
            why = (
                f"No socket for {s_ep} → {d_ep}: the kernel drops this RST (a RST is never "
                "answered; if a socket existed, this RST destroyed it)."
            )
            return Match.NONE, None, None, (), why
        why = (
            f"RST for {s_ep} → {d_ep}, a connection missing from the socket table although "
            f"{_who(winner)} listens on port {dport}: a RST closes its connection at once, so "
            "its socket is probably already gone."
        )
        return Match.UNKNOWN, None, winner, (), why
    if winner is not None:
        why = (
            f"No connection for {s_ep} → {d_ep} in the socket table, although {_who(winner)} "
            f"listens on port {dport}: the table is probably older than this connection (the "
            "kernel hands a listener only SYNs and SYN-cookie ACKs, and answers a truly unknown "
            "segment with a RST)."
        )
        return Match.UNKNOWN, None, winner, (), why
    if "S" in flags:  # a SYN-ACK: it answers a connect() from this host
        why = (
            f"SYN-ACK from {s_ep} to {d_ep}, but no connecting socket for it is in the table: "
            "the connection was probably opened after the last refresh (if none exists, the "
            "kernel answers with a RST)."
        )
        return Match.UNKNOWN, None, None, (), why
    why = (
        f"No socket for {s_ep} → {d_ep} and nothing listens on port {dport} in the table — predicted: "
        "the kernel answers with a RST."
    )
    return Match.NONE, None, None, (), why


def _tcp_syn_hit(
    seg: Segment, table: SocketTable, steps: list[Lookup], hit: SocketEntry, s_ep: str, d_ep: str
) -> _Result:
    """A SYN (no ACK) that finds its 4-tuple in the established hash.

    The table is read after the packet, so the socket found may have been created *by* this
    SYN (request sock → child → maybe accepted): then the SYN really went to the listener.
    Heuristic: the hit existed before the SYN if its ``first_seen`` (or, failing that, the
    table's ``taken_at``) is before ``seg.ts``. If it did, the SYN hit a live connection (a
    client that lost its state and reuses its port): the kernel drops it and sends a challenge
    ACK (RFC 5961); a SYN_RECV hit is a retransmitted SYN. If it appeared at or after the SYN,
    or its age is unknown and a listener owns the port, this SYN created it: LISTENER, with
    the child named. TIME_WAIT is the kernel's TCP_TW_SYN rule.
    """
    state = hit.state
    pick = _listeners(table, seg.dst, seg.dport, seg.family, _ifindex(seg, table), steps)
    winner = pick[0]
    if state == "TIME_WAIT":
        if winner is not None:
            then = (
                "; if the SYN's sequence number or timestamp is newer than the old connection's, "
                f"the kernel drops the remains and hands the SYN to {_listener_where(seg, table, pick)}, "
                "otherwise it just re-acknowledges the old connection."
            )
        else:
            then = ", and with no listener on the port the kernel just re-acknowledges the old connection."
        why = f"SYN from {s_ep} to {d_ep} finds that 4-tuple's TIME_WAIT remains of a closed connection{then}"
        return Match.TIME_WAIT, hit, winner, (), why
    if state == "SYN_SENT":
        why = (
            f"SYN from {s_ep} to {d_ep} meets {_who(hit)}, which is itself connecting to "
            f"{s_ep}: a simultaneous open, both ends continue the handshake on that socket."
        )
        return Match.ESTABLISHED, hit, None, (), why

    existed = _existed_before(hit, seg, table)
    if existed is False or (existed is None and winner is not None):
        if winner is None:
            match, receiver, _, _, _ = _tcp_classify(seg, table, steps, hit, s_ep, d_ep, pick)
            why = (
                f"SYN to {d_ep} opened the connection now in state {state} ({_who(hit)}); "
                "the listener that took it has since closed."
            )
            return match, receiver, None, (), why
        if state == "SYN_RECV":
            child = "a request sock, handshake half done"
        elif _is_unaccepted(hit):
            child = f"{state}, waiting in the accept queue"
        else:
            child = f"{state}, accepted as {_who(hit)}"
        cands = pick[1] if len(pick[1]) > 1 else ()
        why = (
            f"SYN to port {seg.dport}: {_listener_where(seg, table, pick)} takes it and creates "
            f"the connection seen now ({child}){_listener_notes(seg, table, winner, accepted=True)}."
        )
        return Match.LISTENER, winner, None, cands, why

    if state == "SYN_RECV" and _is_unaccepted(hit):
        where = _listener_where(seg, table, pick) if winner is not None else "a listener that has closed"
        why = (
            f"Retransmitted SYN from {s_ep}: its handshake is already in progress, so the request "
            f"sock the kernel keeps for {where} answers by sending the SYN-ACK again."
        )
        return Match.SYN_RECV, hit, winner, (), why
    match, receiver, listener, cands, _ = _tcp_classify(seg, table, steps, hit, s_ep, d_ep, pick)
    why = (
        f"SYN from {s_ep} hits an existing connection to {d_ep} ({_who(hit)}): the kernel drops "
        "it and sends a challenge ACK (RFC 5961) so that a client which lost its state resets "
        "it; the listener never sees this SYN."
    )
    return match, receiver, listener, cands, why


def _tcp_classify(
    seg: Segment,
    table: SocketTable,
    steps: list[Lookup],
    hit: SocketEntry,
    s_ep: str,
    d_ep: str,
    pick: _Pick | None,
) -> _Result:
    """What kind of established-hash entry ``hit`` is, for a segment that is not a new SYN."""
    state = hit.state
    if state == "TIME_WAIT" and "R" not in seg.flags and ("S" in seg.flags or seg.payload_len > 0):
        # A TIME_WAIT socket takes no SYN-ACK and no data: this segment reached the socket while
        # it was connecting or connected, and the connection closed before conntui looked.
        closed = f" ({_closed_by(hit)})" if hit.former_holders else ""
        what = "SYN-ACK answers its connect()" if "S" in seg.flags else "data arrived"
        why = (
            f"Established 4-tuple {s_ep} → {d_ep}: the {what} while the connection was open; it "
            f"closed within moments{closed}, so conntui found only its TIME_WAIT remains (the "
            "kernel keeps them about a minute; --trace names the process of such short connections)."
        )
        return Match.ESTABLISHED, hit, None, (), why
    if state == "TIME_WAIT" and "F" in seg.flags and "R" not in seg.flags:
        # The table is read after the fact: the FIN that *moved* a closing socket (FIN_WAIT2)
        # into TIME_WAIT finds it there already. A retransmitted FIN would also hit TIME_WAIT,
        # but the first one is by far the common case.
        closed = f" ({_closed_by(hit)})" if hit.former_holders else ""
        why = (
            f"{s_ep} → {d_ep}: the peer's FIN reaches a socket its process already closed{closed}, "
            "waiting in FIN_WAIT2; it completes the close and the kernel alone keeps the "
            "remains in TIME_WAIT for about a minute (a repeated FIN would just be re-acknowledged)."
        )
        return Match.ESTABLISHED, hit, None, (), why
    if state == "TIME_WAIT":
        closed = f" ({_closed_by(hit)})" if hit.former_holders else ""
        why = (
            f"{s_ep} → {d_ep} belongs to a closed connection{closed} in TIME_WAIT: the kernel "
            "alone keeps its remains for about a minute and re-acknowledges late segments."
        )
        return Match.TIME_WAIT, hit, None, (), why
    if _is_unaccepted(hit) and state in _CHILD_STATES:
        if pick is None:
            pick = _listeners(
                table,
                seg.dst,
                seg.dport,
                seg.family,
                _ifindex(seg, table),
                steps,
                "to find the parent listener",
            )
        lst = pick[0]
        if lst is not None:
            if state == "SYN_RECV":
                why = (
                    f"Handshake in progress for {s_ep} → {d_ep}: the request sock the kernel keeps "
                    f"for {_listener_where(seg, table, pick)} takes it; no process sees the "
                    "connection until the handshake completes and accept() returns it."
                )
                return Match.SYN_RECV, hit, lst, (), why
            why = (
                f"Established 4-tuple {s_ep} → {d_ep}: the connection waits in the accept queue "
                f"of {_who(lst)} (listener on {lst.local}, {lst.rx_queue} queued, backlog "
                f"{lst.tx_queue}); no process holds it until accept() returns it."
            )
            return Match.ACCEPT_QUEUE, hit, lst, (), why
        if state == "SYN_RECV":
            why = (
                f"Handshake in progress for {s_ep} → {d_ep}: a request sock whose listener is gone "
                "takes it (the kernel will drop it)."
            )
            return Match.SYN_RECV, hit, None, (), why
    if _is_unaccepted(hit):
        if state in _CLOSING_STATES or hit.former_holders:
            why = (
                f"Established 4-tuple {s_ep} → {d_ep}: delivered to a socket no process holds any "
                f"more ({_closed_by(hit)}); in state {state}, the kernel alone finishes the close."
            )
        else:
            why = (
                f"Established 4-tuple {s_ep} → {d_ep}: delivered to a socket in state {state} that "
                "no process holds and no listener owns; the kernel keeps it until it closes."
            )
        return Match.ESTABLISHED, hit, None, (), why
    if _has_listener(table, "tcp", seg.dport):
        role = "the socket accept() returned for this client"
    else:
        role = f"the socket that connect()ed to {s_ep}"
    why = f"Established 4-tuple {s_ep} → {d_ep}: delivered to {_who(hit)}, {role}."
    if state in _CLOSING_STATES or state == "CLOSE_WAIT":
        why = why[:-1] + f" (state {state}: the connection is closing)."
    return Match.ESTABLISHED, hit, None, (), why


# --------------------------------------------------------------------------- UDP receiver


def _udp_scored(
    table: SocketTable, seg: Segment, addr: str, port: int, peer: str, peer_port: int, ifindex: int
) -> tuple[list[tuple[int, SocketEntry]], list[tuple[int, SocketEntry]], list[str]]:
    """UDP compute_score for every socket on ``port``, split into exact and wildcard buckets.

    IPv4: base 2 for AF_INET, 1 for a dual-stack AF_INET6 socket; +4 each for a matching
    connected peer address and port (connected elsewhere: rejected); +4 if device-bound.
    IPv6 (``udp6 compute_score``): base 0, +1 each for peer address, peer port and device.
    """
    family = seg.family
    exact: list[tuple[int, SocketEntry]] = []
    wild: list[tuple[int, SocketEntry]] = []
    rejected: list[str] = []
    for e in table.on_port("udp", port):
        b = _bucket(e, addr, family)
        if b == 0:
            continue
        if b < 0:
            rejected.append(f"{e.local} ({_who(e)}): IPV6_V6ONLY")
            continue
        step = 4 if family == 4 else 1
        score = (2 if e.family == 4 else 1) if family == 4 else 0
        r = e.remote
        if r is not None and r.port:
            if r.port != peer_port or r.key_addr != peer:
                rejected.append(f"{e.local} ({_who(e)}): connected to {r}")
                continue
            score += 2 * step
        if e.bound_ifindex:
            if ifindex and e.bound_ifindex != ifindex:
                rejected.append(f"{e.local} ({_who(e)}): bound to device {table.ifname(e.bound_ifindex)}")
                continue
            score += step
        (exact if b == 2 else wild).append((score, e))
    return exact, wild, rejected


def _udp_receiver(seg: Segment, table: SocketTable, steps: list[Lookup], s_ep: str, d_ep: str) -> _Result:
    """``__udp4_lib_lookup``: the connected 4-tuple, then exact address, then wildcard."""
    src, sport, dst, dport = seg.src, seg.sport, seg.dst, seg.dport
    for e in table.connected("udp", dst, dport, src, sport):
        if e.state == "ESTABLISHED":
            steps.append(Lookup(f"connected socket {d_ep} ← {s_ep}", f"hit: {_who(e)}"))
            why = (
                f"UDP {s_ep} → {d_ep}: delivered to {_who(e)}, the socket connect()ed to exactly "
                "this peer (a connected socket wins over ones that are only bound)."
            )
            return Match.UDP_CONNECTED, e, None, (), why
    steps.append(Lookup(f"connected socket {d_ep} ← {s_ep}", "miss"))

    exact, wild, rejected = _udp_scored(table, seg, dst, dport, src, sport, _ifindex(seg, table))
    note = f"; rejected {', '.join(rejected)}" if rejected else ""
    pick = _udp_best(exact)
    steps.append(Lookup(f"sockets bound to {d_ep} (exact address)", _udp_pick_text(pick, exact)))
    bucket = "exact"
    if pick[0] is None:
        pick = _udp_best(wild)
        bucket = "wildcard"
        where = f"0.0.0.0:{dport} / [::]:{dport}" if seg.family == 4 else f"[::]:{dport}"
        steps.append(Lookup(f"sockets bound to {where} (wildcard)", _udp_pick_text(pick, wild) + note))
    elif note:
        steps.append(Lookup("sockets not eligible", note[2:]))
    winner, group, _ = pick
    if winner is None:
        return (
            Match.NONE,
            None,
            None,
            (),
            f"No socket on {d_ep} in the table — predicted: the kernel answers with ICMP port unreachable.",
        )
    if winner.remote is not None and winner.remote.port:
        why = f"UDP {s_ep} → {d_ep}: delivered to {_who(winner)}, the socket connect()ed to this peer."
        return Match.UDP_CONNECTED, winner, None, (), why
    if len(group) > 1:
        who = (
            f"one of {len(group)} sockets bound to {winner.local} ("
            + ", ".join(_who(e) for e in group)
            + f"; with SO_REUSEPORT {_reuseport_chooser(table)}, without it the socket bound last wins)"
        )
    else:
        who = f"the socket bound to {winner.local} ({_who(winner)})"
    extra = ""
    if bucket == "exact" and wild:
        extra = f"; its exact address beats the wildcard socket on {wild[0][1].local}"
    elif bucket == "wildcard" and winner.family == 6 and seg.family == 4:
        extra = f"; it is an IPv6 socket that also takes IPv4 (it sees the sender as ::ffff:{src})"
    why = f"UDP to {d_ep}: no socket is connect()ed to {s_ep}, so {who} receives it{extra}."
    cands = group if len(group) > 1 else ()
    return Match.UDP_UNCONNECTED, winner, None, cands, why


def _udp_best(scored: list[tuple[int, SocketEntry]]) -> _Pick:
    """Highest score; ties keep table order (the kernel's order depends on bind order)."""
    if not scored:
        return _NO_PICK
    best_score = max(s for s, _ in scored)
    group = tuple(e for s, e in scored if s == best_score)
    return group[0], group, best_score


def _udp_pick_text(pick: _Pick, scored: list[tuple[int, SocketEntry]]) -> str:
    winner, group, score = pick
    if winner is None:
        return "none"
    if len(group) > 1:
        text = f"hit: {len(group)} tied (score {score}): " + ", ".join(_who(e) for e in group)
    else:
        text = f"hit: {_who(winner)} on {winner.local} (score {score})"
    losers = [f"{e.local} {_who(e)} (score {s})" for s, e in scored if e not in group]
    if losers:
        text += "; beats " + ", ".join(losers)
    return text


def _udp_group(seg: Segment, table: SocketTable, steps: list[Lookup], kind: str) -> _Result:
    """``__udp4_lib_mcast_deliver``: every socket that passes ``__udp_is_mcast_sock`` gets a copy.

    Group membership (``IP_ADD_MEMBERSHIP``) and source filters are not observable, so a
    listed socket may in fact not have joined the group.
    """
    dport = seg.dport
    d_ep = _ep(seg.dst, dport)
    exact, wild, _ = _udp_scored(table, seg, seg.dst, dport, seg.src, seg.sport, _ifindex(seg, table))
    copies = tuple(e for _, e in exact) + tuple(e for _, e in wild)
    if not copies:
        steps.append(Lookup(f"every socket on port {dport} ({kind} delivery)", "none"))
        why = (
            f"UDP {kind} to {d_ep}: no socket is bound to port {dport}, so the kernel drops it "
            f"silently (no ICMP for {kind})."
        )
        return Match.NONE, None, None, (), why
    names = ", ".join(_who(e) for e in copies)
    steps.append(
        Lookup(
            f"every socket on port {dport} ({kind} delivery)",
            f"{len(copies)} cop{'ies' if len(copies) > 1 else 'y'}: {names}",
        )
    )
    joined = " that joined the group" if kind == "multicast" else ""
    why = (
        f"UDP {kind} to {d_ep}: every socket bound to port {dport}{joined} gets its own copy — "
        f"{len(copies)} socket{'s' if len(copies) > 1 else ''}: {names}."
    )
    return Match.UDP_UNCONNECTED, copies[0], None, copies, why


# --------------------------------------------------------------------------- sender


def _sender(
    seg: Segment, table: SocketTable, steps: list[Lookup], s_ep: str, d_ep: str
) -> tuple[SocketEntry | None, str]:
    """The local socket that sent ``seg``: local (src, sport), remote (dst, dport)."""
    src, sport, dst, dport = seg.src, seg.sport, seg.dst, seg.dport
    if not table.is_local(src):
        hit = _first_established(table.connected(seg.proto, src, sport, dst, dport))
        if hit is None:
            return None, f"from another host ({src} is not an address of this host)"
        # a socket whose local address is not this host's: a transparent (TPROXY) connection
        found = f"hit: {hit.state}, {_who(hit)}"
        steps.append(Lookup(f"sender socket {s_ep} → {d_ep} (non-local address)", found))
        if "S" in seg.flags and "A" in seg.flags and hit.state != "SYN_SENT":
            return hit, (
                f"sent by the kernel during the handshake of a transparent (TPROXY) connection, from "
                f"the original destination {s_ep}; the connection is now {hit.state}, {_who(hit)}"
            )
        return hit, (
            f"sent by {_who(hit)}, a transparent connection answering from the original destination "
            f"{s_ep} (not an address of this host)"
        )
    if seg.proto == "udp":
        return _udp_sender(seg, table, steps, s_ep, d_ep)
    hit = _first_established(table.connected("tcp", src, sport, dst, dport))
    steps.append(
        Lookup(f"sender socket {s_ep} → {d_ep}", f"hit: {hit.state}, {_who(hit)}" if hit else "miss")
    )
    flags = seg.flags
    if "S" in flags and "A" in flags and (hit is None or hit.state != "SYN_SENT"):
        # A SYN-ACK comes from a listener's request sock (or a SYN cookie): no process sends
        # it, even when the table, read later, already shows the connection it led to.
        winner = _listeners(table, src, sport, seg.family, 0, steps, "to find who sent the SYN-ACK")[0]
        if winner is not None:
            sender = hit if hit is not None and hit.state == "SYN_RECV" else winner
            return sender, (
                f"sent by the kernel for the listener on {winner.local} ({_who(winner)}) during the handshake"
            )
    if hit is None:
        if "R" in flags:
            return None, "sent by the kernel itself (no socket)"
        return None, f"no local socket for {s_ep} → {d_ep} in the table (opened or closed between refreshes?)"
    state = hit.state
    if state == "TIME_WAIT":
        closed = f", {_closed_by(hit)}" if hit.former_holders else ""
        return hit, f"sent by the kernel for the TIME_WAIT remains of a closed connection{closed}"
    if _is_unaccepted(hit):
        if state == "SYN_RECV":
            return hit, "sent by the kernel for a listener's request sock during the handshake"
        if state in _CHILD_STATES and _has_listener(table, "tcp", sport):
            if seg.payload_len > 0:
                # The kernel sends only ACKs for a queued connection: data means a process
                # accept()ed it and wrote since the table was read. None asks for a fresh look.
                return None, (
                    f"the table shows {s_ep} → {d_ep} still in the accept queue, but data is sent "
                    "only once a process has accept()ed it: it was accepted since the table was read"
                )
            return hit, "sent by the kernel for a connection still in the accept queue (not yet accept()ed)"
        return hit, f"sent by the kernel finishing the close ({_closed_by(hit)})"
    if "R" in flags:
        return hit, f"sent by {_who(hit)} (a RST: the connection is aborted)"
    return hit, f"sent by {_who(hit)}"


def _udp_sender(
    seg: Segment, table: SocketTable, steps: list[Lookup], s_ep: str, d_ep: str
) -> tuple[SocketEntry | None, str]:
    src, sport, dst, dport = seg.src, seg.sport, seg.dst, seg.dport
    for e in table.connected("udp", src, sport, dst, dport):
        if e.state == "ESTABLISHED":
            steps.append(Lookup(f"sender socket {s_ep} → {d_ep} (connected)", f"hit: {_who(e)}"))
            return e, f"sent by {_who(e)} (connected to {d_ep})"
    exact: SocketEntry | None = None
    wild: SocketEntry | None = None
    count = 0
    for e in table.on_port("udp", sport):
        if e.remote is not None and e.remote.port:
            continue
        b = _bucket(e, src, seg.family)
        if b == 2:
            count += 1
            exact = exact or e
        elif b == 1:
            count += 1
            wild = wild or e
    found = exact or wild
    if found is None:
        steps.append(Lookup(f"sender socket bound to {s_ep}", "miss"))
        return None, f"no local UDP socket bound to {s_ep} in the table"
    steps.append(Lookup(f"sender socket bound to {s_ep}", f"hit: {_who(found)} on {found.local}"))
    more = f", one of {count} sockets on that port" if count > 1 else ""
    return (
        found,
        f"sent by {_who(found)} from its socket bound to {found.local} (not connected: sendto(){more})",
    )
