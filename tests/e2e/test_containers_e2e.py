"""Container identity with a real podman container: the holder of the container's httpd
sockets carries the container's id and name as ``podman inspect`` reports them; a host
process and podman's conmon (the port-reservation socket, on the host) carry none.

The socket ground truth is the test's own: the inodes in ``/proc/<httpd pid>/fd`` and
``/proc/<conmon pid>/fd``, and a listener the test opens itself.

conntui reads one network namespace today; the capture test runs it inside the container's
(``nsenter --net``) and makes the traffic there (``podman exec … wget``). Traffic from the
host through the published port (DNAT into the container's namespace) needs issue 12's
items 1-3 and is tested with them.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from conntui.model import Container
from conntui.sockets.procfs import HolderScanner

from .conftest import free_port
from .podmankit import RunningContainer, httpd_container, socket_inodes
from .truthkit import FileConntui

pytestmark = pytest.mark.skipif(
    not (shutil.which("podman") and shutil.which("runc") and shutil.which("nsenter")),
    reason="needs podman, runc and nsenter (the README's test line installs them)",
)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningContainer]:
    with httpd_container(tmp_path_factory.mktemp("img"), "ctr-test", free_port()) as c:
        yield c


def expected(c: RunningContainer) -> Container:
    """The container as podman reports it (``podman inspect``: Id, Name)."""
    return Container(c.id, c.name, "podman")


def test_holder_scanner_names_the_container_podman_reports(web: RunningContainer) -> None:
    host = socket.socket()
    try:
        host.bind(("127.0.0.1", 0))
        host.listen(1)
        host_inode = os.fstat(host.fileno()).st_ino
        httpd = socket_inodes(web.pid)
        conmon = socket_inodes(web.conmon_pid)
        assert httpd and conmon  # httpd's listener; conmon's port reservation (-p) and others

        by_inode = HolderScanner().scan()
        for fd, inode in httpd.items():
            (h,) = [h for h in by_inode[inode] if h.pid == web.pid and h.fd == fd]
            assert h.container == expected(web), (fd, inode, h)
        for fd, inode in conmon.items():
            (h,) = [h for h in by_inode[inode] if h.pid == web.conmon_pid and h.fd == fd]
            assert h.container is None, h  # conmon runs on the host, beside the container
        (mine,) = [h for h in by_inode[host_inode] if h.fd == host.fileno()]
        assert mine.container is None

        # a targeted search (a socket the last scan did not see) names it the same way
        fd, inode = next(iter(httpd.items()))
        found = HolderScanner().find_holders({inode}, [web.pid])
        assert [(h.pid, h.fd, h.container) for h in found[inode]] == [(web.pid, fd, expected(web))]
    finally:
        host.close()


def test_capture_in_the_container_namespace_names_the_container(
    web: RunningContainer, tmp_path: Path
) -> None:
    """conntui in the container's network namespace, wget in the container fetching from its
    httpd: the SYN goes to httpd's listener, whose holder carries the container; every
    holder of every row is one of the container's processes and carries it too."""
    listener_fd, listener_inode = next(iter(socket_inodes(web.pid).items()))
    cap = FileConntui(
        tmp_path / "rows.jsonl",
        "--headless",
        "--json",
        "--no-trace",
        "-i",
        "lo",
        "-p",
        "80",
        prefix=("nsenter", f"--net=/proc/{web.pid}/ns/net"),
    )
    try:
        for _ in range(3):
            got = web.exec("wget", "-q", "-O", "-", "http://127.0.0.1:80/")
            assert got.returncode == 0 and "hello from a container" in got.stdout, got
        rows, err, code = cap.stop()
    finally:
        cap.kill()
    assert code == 0, err
    want = {"id": web.id, "name": web.name, "runtime": "podman", "pod": None}
    syns = [r for r in rows if r["flags"] == "S" and r["dport"] == 80]
    assert len(syns) == 3, [(r["flags"], r["sport"], r["dport"]) for r in rows]
    for r in syns:
        # the SYN's receiver is httpd's listener, or (a SYN judged against TIME_WAIT
        # remains) names it as the listener that takes the SYN: its holder either way
        (lst,) = [s for s in (r["receiver"], r.get("listener")) if s and s["inode"] == listener_inode]
        holders = lst["holders"]
        assert [(h["pid"], h["fd"]) for h in holders] == [(web.pid, listener_fd)], holders
        assert holders[0]["container"] == want
    seen = [h for r in rows for side in ("sender", "receiver") if r[side] for h in r[side]["holders"]]
    assert seen
    assert all(h["container"] == want for h in seen), [h for h in seen if h["container"] != want]
