"""FlowCache keeps demux answers across derived socket tables and drops exactly those whose
keys changed: every cached answer must equal a fresh ``attribute(seg, table)``."""

from __future__ import annotations

import itertools
import random

import pytest

from conntui.demux import attribute
from conntui.flowcache import FlowCache, cache_key
from conntui.model import Endpoint, Holder, Segment, SocketEntry, SocketTable

SERVER = "127.0.0.1"


def conn(cport: int, cookie: int, state: str = "ESTABLISHED", sport: int = 80, pid: int = 100) -> SocketEntry:
    """The server side of a connection from 127.0.0.2:cport."""
    return SocketEntry(
        "tcp",
        4,
        state,
        Endpoint(SERVER, sport),
        Endpoint("127.0.0.2", cport),
        inode=cookie,
        cookie=cookie,
        holders=(Holder(pid, 3 + cookie % 50, "srv"),),
    )


def listener(port: int, cookie: int, backlog_used: int = 0) -> SocketEntry:
    return SocketEntry(
        "tcp",
        4,
        "LISTEN",
        Endpoint("0.0.0.0", port),
        None,
        inode=cookie,
        cookie=cookie,
        rx_queue=backlog_used,
    )


def udp(port: int, cookie: int, peer: int | None = None) -> SocketEntry:
    return SocketEntry(
        "udp",
        4,
        "ESTABLISHED" if peer else "UNCONN",
        Endpoint(SERVER, port),
        Endpoint("127.0.0.2", peer) if peer else None,
        inode=cookie,
        cookie=cookie,
        holders=(Holder(200 + cookie, 5, "dns"),),
    )


def tcp_seg(cport: int, sport: int = 80) -> Segment:
    return Segment(1.0, "lo", "tcp", 4, "127.0.0.2", cport, SERVER, sport, "A", 10, ifindex=1)


def udp_seg(cport: int, port: int) -> Segment:
    return Segment(1.0, "lo", "udp", 4, "127.0.0.2", cport, SERVER, port, "", 10, ifindex=1)


def test_an_unrelated_change_keeps_the_answer_a_related_one_drops_it() -> None:
    t1 = SocketTable([listener(80, 1), conn(5000, 2), conn(5001, 3), udp(53, 4)])
    cache = FlowCache()
    for s in (tcp_seg(5000), tcp_seg(5001), udp_seg(7000, 53)):
        cache.put(t1, cache_key(s), attribute(s, t1))
    t2 = t1.with_entries([conn(5002, 9)])  # a new connection elsewhere on the port
    assert cache.get(t2, cache_key(tcp_seg(5000))) is not None
    t3 = t2.with_entries([conn(5000, 2, "CLOSE_WAIT")])  # this connection changed
    assert cache.get(t3, cache_key(tcp_seg(5000))) is None
    assert cache.get(t3, cache_key(tcp_seg(5001))) is not None
    t4 = t3.with_entries([udp(53, 10, peer=7000)])  # a socket connect()ed to the peer
    assert cache.get(t4, cache_key(udp_seg(7000, 53))) is None
    assert cache.dropped == 2 and cache.cleared == 0
    fresh = SocketTable(t4.entries)  # a full refresh: no lineage
    assert cache.get(fresh, cache_key(tcp_seg(5001))) is None
    assert cache.cleared == 1


def test_a_listener_change_keeps_established_answers_on_its_port() -> None:
    """Each new connection moves the listener's accept queue, and the table then holds a new
    view of the listener: an established flow's answer (found by its 4-tuple before any
    listener is asked) stays; an answer that read the listener does not."""
    t1 = SocketTable([listener(80, 1), conn(5000, 2)])
    cache = FlowCache()
    est, to_listener = tcp_seg(5000), tcp_seg(6000)
    for s in (est, to_listener):
        cache.put(t1, cache_key(s), attribute(s, t1))
    t2 = t1.with_entries([listener(80, 1, backlog_used=1)])
    assert cache.get(t2, cache_key(est)) is not None
    assert cache.get(t2, cache_key(to_listener)) is None
    assert cache.get(t2, cache_key(est)) == attribute(est, t2)


def test_a_skipped_table_clears() -> None:
    t1 = SocketTable([conn(5000, 2)])
    cache = FlowCache()
    cache.put(t1, cache_key(tcp_seg(5000)), attribute(tcp_seg(5000), t1))
    t3 = t1.with_entries([conn(6000, 3)]).with_entries([conn(6001, 4)])  # t2 never seen
    assert cache.get(t3, cache_key(tcp_seg(5000))) is None


@pytest.mark.parametrize("seed", range(10))
def test_cached_answers_always_equal_a_fresh_demux(seed: int) -> None:
    rng = random.Random(seed)
    cookies = itertools.count(1000)
    conns = {c: next(cookies) for c in range(5000, 5030)}
    entries = [listener(80, 1), listener(81, 2, backlog_used=0)]
    entries += [conn(c, k) for c, k in conns.items()]
    entries += [udp(53, 3), udp(54, 4)]
    table = SocketTable(entries)
    cache = FlowCache()
    hits = 0
    for _ in range(400):
        change: list[SocketEntry] = []
        removed: list[SocketEntry] = []
        for _ in range(rng.randint(0, 2)):
            r = rng.random()
            c = rng.choice(list(conns))
            if r < 0.25:  # a connection changes state
                change.append(conn(c, conns[c], rng.choice(["ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT1"])))
            elif r < 0.4:  # a new connection on the same 4-tuple, held by someone else
                conns[c] = next(cookies)
                change.append(conn(c, conns[c], pid=300))
            elif r < 0.5:  # a connection is gone
                removed += [e for e in table.connected("tcp", SERVER, 80, "127.0.0.2", c)]
            elif r < 0.6:  # a listener's accept queue fills
                change.append(listener(80, 1, backlog_used=rng.randint(0, 5)))
            elif r < 0.7:  # a UDP socket connect()s to a peer, or a new one binds
                change.append(udp(53, 3, peer=rng.choice([None, 7000, 7001])))
            elif r < 0.8:
                change.append(udp(54, next(cookies), peer=rng.choice([None, 7000])))
            else:  # a brand-new connection on another port
                change.append(conn(rng.randint(6000, 6100), next(cookies), sport=81))
        if change or removed:
            table = table.with_entries(change, removed=removed)
        if rng.random() < 0.03:
            table = SocketTable(table.entries)  # a full refresh now and then
        for _ in range(10):
            r = rng.random()
            if r < 0.6:
                s = tcp_seg(rng.choice(list(conns)))
            elif r < 0.7:
                s = tcp_seg(rng.randint(6000, 6100), 81)
            else:
                s = udp_seg(rng.choice([7000, 7001, 7002]), rng.choice([53, 54]))
            key = cache_key(s)
            fresh = attribute(s, table)
            hit = cache.get(table, key)
            if hit is not None:
                hits += 1
                assert hit == fresh, (s, hit.explain, fresh.explain)
            else:
                cache.put(table, key, fresh)
    assert hits > 500  # the cache does survive changes (without lineage it would rarely hit)
