"""SocketTable.with_entries patches its indexes; they must equal a full rebuild, and a newer
view of a socket keeps its place (table order is the kernel's bucket order)."""

from __future__ import annotations

import itertools
import random

import pytest

from conntui.model import Endpoint, SocketEntry, SocketTable


def mk(
    n: int,
    cookie: int,
    state: str = "ESTABLISHED",
    port: int | None = None,
    remote: bool = True,
    proto: str = "tcp",
) -> SocketEntry:
    return SocketEntry(
        proto,
        4,
        state,
        Endpoint("127.0.0.1", port or 1000 + n),
        Endpoint("127.0.0.1", 80) if remote else None,
        inode=n + 1,
        cookie=cookie,
    )


@pytest.mark.parametrize("seed", range(6))
def test_patched_indexes_equal_a_rebuild(seed: int) -> None:
    rng = random.Random(seed)
    fresh = itertools.count(10_000)
    conns = {n: n + 1 for n in range(200)}  # connection n → its cookie
    es = [mk(n, c) for n, c in conns.items()]
    es += [mk(1000 + i, 1001 + i, "LISTEN", 80, remote=False) for i in range(3)]
    es += [mk(2000 + i, 2001 + i, "UNCONN", 53, remote=False, proto="udp") for i in range(3)]
    table = SocketTable(es)
    for _ in range(400):
        extra = []
        for _ in range(rng.randint(0, 3)):
            r = rng.random()
            if r < 0.3:  # a known connection changes state
                n = rng.randrange(200)
                extra.append(mk(n, conns[n], rng.choice(["ESTABLISHED", "TIME_WAIT", "FIN_WAIT1"])))
            elif r < 0.45:  # a new connection reuses a 4-tuple (new cookie)
                n = rng.randrange(200)
                conns[n] = next(fresh)
                extra.append(mk(n, conns[n]))
            elif r < 0.6:  # a listener's queue moved
                i = rng.randrange(3)
                extra.append(mk(1000 + i, 1001 + i, "LISTEN", 80, remote=False))
            elif r < 0.7:  # a UDP socket connect()s or is seen unconnected again
                i = rng.randrange(3)
                connected = rng.random() < 0.5
                extra.append(
                    mk(
                        2000 + i,
                        2001 + i,
                        "ESTABLISHED" if connected else "UNCONN",
                        53,
                        remote=connected,
                        proto="udp",
                    )
                )
            else:  # a brand-new socket
                extra.append(mk(300 + rng.randrange(100), next(fresh)))
        removed = rng.sample(list(table.entries), k=rng.randint(0, 1)) if rng.random() < 0.2 else []
        before = table
        table = table.with_entries(extra, removed=removed)
        rebuilt = SocketTable(table.entries)
        assert rebuilt._by_tuple == table._by_tuple
        assert rebuilt._by_local == table._by_local
        assert rebuilt._by_cookie == table._by_cookie
        if not removed:
            old = [e.cookie for e in before.on_port("tcp", 80) if e.state == "LISTEN"]
            new = [e.cookie for e in table.on_port("tcp", 80) if e.state == "LISTEN"]
            assert [c for c in new if c in old] == old  # re-viewed listeners keep their bucket order


def test_a_new_connection_on_a_4_tuple_replaces_the_old_one() -> None:
    old = mk(1, 1)
    table = SocketTable([old]).with_entries([mk(1, 2, "SYN_RECV")])
    assert [e.cookie for e in table.connected("tcp", "127.0.0.1", 1001, "127.0.0.1", 80)] == [2]
    assert table.by_cookie("tcp", 1) is None and len(table) == 1
