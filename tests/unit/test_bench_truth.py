"""bench/truth.py's judge: which rows are right, which state something false, and how the
kernel's verdict fields (``kernel``, ``agrees``) are counted when present and when absent."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import truth

LO = "127.0.0.1"
SRV, CLI = 40001, 51000
SPID, SFD, CPID, CFD = 100, 5, 200, 7


def sock(pid: int | None, fd: int = 0, name: str = "", state: str = "ESTABLISHED") -> dict[str, Any]:
    holders = [] if pid is None else [{"pid": pid, "process": name, "fd": fd}]
    return {"state": state, "holders": holders}


def row(ts: float, to_server: bool, flags: str, match: str = "established", **kw: Any) -> dict[str, Any]:
    server = sock(SPID, SFD, "python3")
    client = sock(CPID, CFD, "node")
    r: dict[str, Any] = {
        "ts": ts,
        "proto": "tcp",
        "src": LO,
        "dst": LO,
        "sport": CLI if to_server else SRV,
        "dport": SRV if to_server else CLI,
        "flags": flags,
        "payload_len": 0,
        "match": match,
        "explain": "",
        "receiver": server if to_server else client,
        "sender": client if to_server else server,
    }
    r.update(kw)
    return r


def flow() -> truth.Flow:
    f = truth.Flow("node net, end at once", "tcp", SRV, CLI, 10.0, 10.01, True, CPID, CFD, "node")
    f.server_pid, f.server_fd, f.server_comm = SPID, SFD, "python3"
    return f


def exchange() -> list[dict[str, Any]]:
    """A whole connection: handshake, request, answer, the client closes first."""
    return [
        row(10.000, True, "S", "listener", receiver=sock(SPID, 3, "python3", "LISTEN")),
        row(10.001, False, "SA"),
        row(10.002, True, "A"),
        row(10.003, True, "PA", payload_len=6),
        row(10.004, False, "PA", payload_len=6),
        row(10.005, True, "FA"),
        # the client's socket is orphaned: the kernel holds it as a TIME_WAIT (FIN_WAIT2) entry
        row(10.006, False, "FA", "time_wait", receiver=sock(None, state="TIME_WAIT")),
        row(10.007, True, "A"),
    ]


def run(rows: list[dict[str, Any]], witness: truth.Witness | None = None) -> dict[str, Any]:
    tallies, examples, extra = truth.judge([flow()], rows, witness or truth.Witness(), show=5)
    res = {
        "ports": "",
        "rate": 1,
        "seconds": 1,
        "traffic_seconds": 1,
        "conntui_args": [],
        "rows": len(rows),
        "tallies": tallies,
        "examples": examples,
        "judge": extra,
        "client_errors": {},
        "missing_server": 0,
        "conntui": {},
        "tcpdump": {},
        "witness": {"rst": 0, "icmp_unreach": 0},
        "counters": [],
    }
    return truth.summarize(res)


def test_a_right_exchange_has_no_false_statement_and_the_kernel_fields_absent_are_na() -> None:
    s = run(exchange())
    o = s["overall"]
    assert (o["data_rows"], o["rows_right"], o["flows_right"], o["false_total"]) == (2, 2, 1, 0)
    assert s["kernel"] == "n/a"
    truth.report(s)
    assert s["goals"]["met_false"] and s["goals"]["met_flows_right"]


def test_time_wait_for_a_segment_a_live_socket_received_is_false() -> None:
    rows = exchange()
    rows[2] = row(10.002, True, "A", "time_wait", receiver=sock(None, state="TIME_WAIT"))
    s = run(rows)
    assert s["overall"]["false_statements"]["tw_none_live"] == 1
    assert not s["goals"]["met_false"]


def test_wrong_owner_and_name_the_program_never_had() -> None:
    rows = exchange()
    rows[3] = row(10.003, True, "PA", payload_len=6, sender=sock(999, CFD, "curl"))
    rows[4] = row(10.004, False, "PA", payload_len=6, sender=sock(SPID, SFD, "sh"))
    s = run(rows)
    fs = s["overall"]["false_statements"]
    assert (fs["wrong_owner"], fs["wrong_name"]) == (1, 1)
    assert s["overall"]["rows_right"] == 0 and s["overall"]["flows_right"] == 0


def test_a_claimed_rst_is_false_unless_tcpdump_saw_it() -> None:
    rows = exchange()
    rows[4] = row(
        10.004,
        False,
        "PA",
        "none",
        payload_len=6,
        explain="No socket on 127.0.0.1:51000 — the kernel answers with a RST.",
        receiver=None,
    )
    s = run(rows)
    assert s["overall"]["false_statements"]["rst_icmp_unseen"] == 1
    assert s["overall"]["false_statements"]["tw_none_live"] == 1
    w = truth.Witness()
    w.rst[truth.tuple_key(LO, CLI, LO, SRV)].append(10.0045)
    s = run(rows, w)
    assert s["overall"]["false_statements"]["rst_icmp_unseen"] == 0
    assert s["claims"] == {"total": 1, "seen": 1}


def test_kernel_verdicts_are_counted_and_every_disagreement_listed(capsys: Any) -> None:
    rows = exchange()
    for r in rows:
        r["kernel"], r["agrees"] = None, None
    rows[1]["kernel"] = {"verdict": "delivered", "reason": None, "source": "sock:inet_sock_set_state"}
    rows[1]["agrees"] = True
    rows[3]["kernel"] = {"verdict": "dropped", "reason": "NO_SOCKET", "source": "skb:kfree_skb"}
    rows[3]["agrees"] = False
    s = run(rows)
    k = s["kernel"]
    assert (k["rows_with_field"], k["verdicts"], k["agree"], k["disagree"], k["null"]) == (8, 2, 1, 1, 6)
    assert k["agree_pct"] == 50.0
    assert len(s["disagreements"]) == 1 and "dropped/NO_SOCKET (skb:kfree_skb)" in s["disagreements"][0]
    assert dict(k["drops"]) == {"NO_SOCKET": 1}
    truth.report(s)
    out = capsys.readouterr().out
    assert "agreement 50.0 %" in out and out.count("disagreement: ") == 1
    assert "kernel drops on captured segments: 1 (NO_SOCKET x1)" in out
