"""SocketTable.with_entries derives tables lazily (overlay indexes, entries as a recipe over
the last materialised tuple). Chains of derivations, read at random points only, must equal
the same changes applied one at a time to fully built tables."""

from __future__ import annotations

import itertools
import random

import pytest

from conntui.model import Endpoint, SocketEntry, SocketTable


def mk(
    n: int, cookie: int, state: str = "ESTABLISHED", port: int | None = None, remote: bool = True
) -> SocketEntry:
    return SocketEntry(
        "tcp",
        4,
        state,
        Endpoint("127.0.0.1", port or 1000 + n),
        Endpoint("127.0.0.1", 80) if remote else None,
        inode=n + 1,
        cookie=cookie,
    )


def eager(table: SocketTable, extra: list[SocketEntry], removed: list[SocketEntry]) -> SocketTable:
    """The same change on a table whose entries are read (materialised) first."""
    _ = table.entries
    out = table.with_entries(extra, removed=removed)
    _ = out.entries
    return SocketTable(out.entries)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("fold_at", [4, 2048])
def test_lazy_chains_equal_eager_rebuilds(seed: int, fold_at: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SocketTable, "_FOLD_AT", fold_at)
    rng = random.Random(seed)
    fresh = itertools.count(10_000)
    conns = {n: n + 1 for n in range(60)}
    base = [mk(n, c) for n, c in conns.items()] + [
        mk(900 + i, 901 + i, "LISTEN", 80, remote=False) for i in range(3)
    ]
    lazy = SocketTable(base)
    ref = SocketTable(base)
    for _ in range(300):
        extra: list[SocketEntry] = []
        for _ in range(rng.randint(0, 3)):
            r = rng.random()
            n = rng.randrange(60)
            if r < 0.35:  # a known connection changes state (a newer view, same place)
                extra.append(mk(n, conns[n], rng.choice(["ESTABLISHED", "FIN_WAIT1", "TIME_WAIT"])))
            elif r < 0.5:  # a new connection on the same 4-tuple supersedes the old one
                conns[n] = next(fresh)
                extra.append(mk(n, conns[n]))
            elif r < 0.65:  # a listener's queue moved
                i = rng.randrange(3)
                extra.append(mk(900 + i, 901 + i, "LISTEN", 80, remote=False))
            else:  # a brand-new socket
                extra.append(mk(200 + rng.randrange(50), next(fresh)))
        # removals are picked from what the reference shows (the same sockets are visible in both)
        pick = rng.sample(list(ref.entries), k=rng.randint(0, 2)) if rng.random() < 0.3 else []
        removed_lazy = [x for x in (lazy.by_cookie("tcp", e.cookie) for e in pick) if x is not None]
        assert len(removed_lazy) == len(pick)
        lazy = lazy.with_entries(extra, removed=removed_lazy)
        ref = eager(ref, extra, pick)
        if rng.random() < 0.2:  # read now and then: materialises this link of the chain
            assert [e.cookie for e in lazy.entries] == [e.cookie for e in ref.entries]
        assert lazy._by_tuple == ref._by_tuple
        assert lazy._by_local == ref._by_local
        assert lazy._by_cookie == ref._by_cookie
        for e in ref.entries:
            assert lazy.by_cookie("tcp", e.cookie) == e
    assert [e.cookie for e in lazy.entries] == [e.cookie for e in ref.entries]
    assert list(lazy.entries) == list(ref.entries)


def test_a_chain_of_misses_keeps_no_old_tables_alive() -> None:
    import gc

    table = SocketTable([mk(n, n + 1) for n in range(100)])
    root = table.entries
    for i in range(50):
        table = table.with_entries([mk(500 + i, 5000 + i)])
    recipe = table._recipe
    assert recipe is not None and recipe.root is root  # changes over the first tuple, no chain
    assert not any(isinstance(r, SocketTable) for r in gc.get_referents(table, recipe))
    assert len(table) == 150
    assert table._recipe is None  # read once: materialised


def _read_len(t: SocketTable, results: list[int], errors: list[BaseException]) -> None:
    try:
        results.append(len(t.entries))
    except BaseException as exc:
        errors.append(exc)


def test_entries_read_from_several_threads_at_once() -> None:
    import threading

    for _ in range(50):
        table = SocketTable([mk(n, n + 1) for n in range(2000)])
        for i in range(5):
            table = table.with_entries([mk(3000 + i, 30_000 + i)])
        results: list[int] = []
        errors: list[BaseException] = []
        threads = [threading.Thread(target=_read_len, args=(table, results, errors)) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors and results == [2005] * 4
