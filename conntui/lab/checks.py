"""What a scenario expects, checked against what really happened.

A run yields two streams: ``events`` (ground truth reported by the lab's own programs:
which pid and fd listened, connected, accepted, received) and ``rows`` (conntui's JSON
lines). Each scenario turns them into ``Check``s; the tests assert them and the lab prints
them, so a person sees the same verdicts the tests do.

``about`` says what a check is about: ``kernel`` checks confirm the scenario produced the
effect it teaches (an EADDRINUSE, a ListenOverflows increment); ``conntui`` checks compare
conntui's attribution with the truth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

Row = dict[str, Any]
Event = dict[str, Any]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    about: str = "conntui"  # "conntui" | "kernel"

    def to_dict(self) -> dict[str, Any]:
        return {"lab": "check", **asdict(self)}


def holders(sock: dict[str, Any] | None) -> set[tuple[int, int]]:
    """The (pid, fd) pairs holding a socket in a conntui row."""
    if not sock:
        return set()
    return {(int(h["pid"]), int(h["fd"])) for h in sock.get("holders") or ()}


def who(sock: dict[str, Any] | None) -> str:
    """``lab-server[12] fd 3``, ``kernel (no holder)`` or ``nobody``, for a check's detail."""
    if not sock:
        return "nobody"
    hs = sock.get("holders") or []
    if not hs:
        return f"kernel (no holder, {sock.get('state')})"
    return ", ".join(f"{h['process']}[{h['pid']}] fd {h['fd']}" for h in hs)


def brief(row: Row) -> str:
    """One row in a few words, for a check's detail."""
    return (
        f"{row['proto']} {row['src']}:{row['sport']} > {row['dst']}:{row['dport']} "
        f"[{row['flags'] or '-'}] len {row['payload_len']}: {row['match']} → {who(row.get('receiver'))}"
    )


class Result:
    """The events and rows of one run, with the look-ups the scenarios' checks use."""

    def __init__(self, events: Iterable[Event], rows: Iterable[Row]) -> None:
        self.events = list(events)
        self.rows = list(rows)

    def truth(self, what: str, **fields: Any) -> list[Event]:
        return [
            e for e in self.events if e.get("what") == what and all(e.get(k) == v for k, v in fields.items())
        ]

    def one(self, what: str, **fields: Any) -> Event:
        found = self.truth(what, **fields)
        if not found:
            raise KeyError(f"no {what} event with {fields}")
        return found[0]

    def segments(
        self,
        *,
        proto: str | None = None,
        src: str | None = None,
        sport: int | None = None,
        dst: str | None = None,
        dport: int | None = None,
        flags: str | Callable[[str], bool] | None = None,
        data: bool | None = None,
        payload_len: int | None = None,
    ) -> list[Row]:
        """Rows matching every given field; ``data`` means payload or no payload."""
        out = []
        for r in self.rows:
            if proto is not None and r["proto"] != proto:
                continue
            if src is not None and r["src"] != src:
                continue
            if sport is not None and r["sport"] != sport:
                continue
            if dst is not None and r["dst"] != dst:
                continue
            if dport is not None and r["dport"] != dport:
                continue
            if flags is not None and not (flags(r["flags"]) if callable(flags) else r["flags"] == flags):
                continue
            if data is not None and (r["payload_len"] > 0) != data:
                continue
            if payload_len is not None and r["payload_len"] != payload_len:
                continue
            out.append(r)
        return out


def split_ep(text: str) -> tuple[str, int]:
    addr, _, port = text.rpartition(":")
    return addr.strip("[]"), int(port)


def received_by(
    name: str,
    rows: list[Row],
    pid: int,
    fd: int,
    matches: Iterable[str],
    *,
    what: str = "segment",
) -> Check:
    """Every row's receiver is held by (pid, fd) and was found the expected way."""
    allowed = set(matches)
    if not rows:
        return Check(name, False, f"conntui printed no such {what}")
    bad = [r for r in rows if (pid, fd) not in holders(r.get("receiver")) or r["match"] not in allowed]
    if bad:
        return Check(
            name,
            False,
            f"{len(bad)} of {len(rows)} not delivered to pid {pid} fd {fd} via {'/'.join(sorted(allowed))}; "
            f"first: {brief(bad[0])}",
        )
    return Check(name, True, f"{len(rows)} {what}(s) → pid {pid} fd {fd} ({rows[0]['match']})")


def sent_by(name: str, rows: list[Row], pid: int, fd: int, *, what: str = "segment") -> Check:
    if not rows:
        return Check(name, False, f"conntui printed no such {what}")
    bad = [r for r in rows if (pid, fd) not in holders(r.get("sender"))]
    if bad:
        return Check(
            name,
            False,
            f"{len(bad)} of {len(rows)} not shown as sent by pid {pid} fd {fd}; first: {brief(bad[0])}, "
            f"sender {who(bad[0].get('sender'))}",
        )
    return Check(name, True, f"{len(rows)} {what}(s) sent by pid {pid} fd {fd}")


def nothing_unknown(result: Result) -> Check:
    """No segment was left ``unknown`` (the table always caught up)."""
    bad = [r for r in result.rows if r["match"] == "unknown"]
    if bad:
        return Check(
            "no segment left unknown",
            False,
            f"{len(bad)} unknown; first: {brief(bad[0])}: {bad[0]['explain']}",
        )
    return Check("no segment left unknown", True, f"{len(result.rows)} segments, none unknown")


def kernel(name: str, ok: bool, detail: str) -> Check:
    return Check(name, ok, detail, about="kernel")
