"""--trace: connections that close before conntui can look them up still get their process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("bpftrace") is None, reason="bpftrace is not installed (CI installs it)"),
]

SHORT_LIVED = r"""
import json, os, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
lst = socket.socket(); lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("127.0.0.1", port)); lst.listen(64)
out = []
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = lst.accept()
    c.sendall(b"x" * 100)
    a.recv(100)
    out.append({"cport": c.getsockname()[1], "cfd": c.fileno(), "afd": a.fileno()})
    c.close(); a.close()   # the whole connection lives well under a millisecond
print(json.dumps({"pid": os.getpid(), "conns": out}))
"""


def test_short_lived_connections_are_named_by_the_tracer(conntui, port):
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port), "--trace")
    assert "no socket tracer" not in cap.stderr_head.decode(), cap.stderr_head
    done = subprocess.run(
        [sys.executable, "-c", SHORT_LIVED, str(port), "20"], capture_output=True, text=True, timeout=30
    )
    truth = json.loads(done.stdout)
    time.sleep(0.5)
    rows, err, code = cap.stop(settle=1.5)
    assert code == 0, err
    pid = truth["pid"]

    def names(sock, fd):
        held = {
            (h["pid"], h["fd"])
            for h in (sock or {}).get("holders", []) + (sock or {}).get("former_holders", [])
        }
        return (pid, fd) in held

    for conn in truth["conns"]:
        data = [
            r for r in rows if r["proto"] == "tcp" and r["sport"] == conn["cport"] and r["payload_len"] == 100
        ]
        assert len(data) == 1, conn
        row = data[0]
        assert names(row["sender"], conn["cfd"]), row
        assert names(row["receiver"], conn["afd"]), row
        assert row["match"] in ("established", "accept_queue"), row
