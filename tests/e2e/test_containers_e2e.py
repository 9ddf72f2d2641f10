"""Container identity with real podman containers: the holders of a container's sockets
carry the container's id and name as ``podman inspect`` reports them; a host process and
podman's conmon (the port-reservation socket, on the host) carry none.

Ground truth is the test's own: ``podman inspect`` (Id, Name, State.Pid, State.ConmonPid),
the inodes in ``/proc/PID/fd``, the forked httpd that holds a connection, a listener and a
client the test runs itself (``test_netns_e2e``'s helpers).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conntui.model import Container
from conntui.sockets.procfs import HolderScanner

from . import podkit
from .test_netns_e2e import free_port, host_client, rows_of
from .truthkit import FileConntui, Row

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(
        not shutil.which("podman"), reason="needs podman (the README's test line installs it)"
    ),
]


def reported(name: str) -> dict[str, Any]:
    """What podman itself says about a container."""
    (doc,) = json.loads(podkit.podman("inspect", name))
    return {"id": doc["Id"], "name": doc["Name"], "conmon": int(doc["State"]["ConmonPid"])}


@pytest.fixture(scope="module")
def pods() -> Iterator[tuple[podkit.Container, podkit.Container, int]]:
    """A web container (httpd, port 80 published) and a client container."""
    with podkit.containers() as started:
        port = free_port()
        web = podkit.run(started, "/bin/httpd", "-f", "-p", "80", "-h", "/www", publish=f"{port}:80")
        client = podkit.run(started, "/bin/sleep", "600")
        podkit.listener_fd(web.pid, 80)  # httpd listens (raises if not)
        yield web, client, port


def test_holder_scanner_names_the_container_podman_reports(pods) -> None:
    web, _, _ = pods
    truth = reported(web.name)
    want = Container(truth["id"], truth["name"], "podman")
    host = socket.socket()
    try:
        host.bind(("127.0.0.1", 0))
        host.listen(1)
        httpd = podkit.socket_inodes(web.pid)
        conmon = podkit.socket_inodes(truth["conmon"])
        assert httpd and conmon  # httpd's listener; conmon's port reservation (-p) and more

        by_inode = HolderScanner().scan()
        for inode, fds in httpd.items():
            for fd in fds:
                (h,) = [h for h in by_inode[inode] if h.pid == web.pid and h.fd == fd]
                assert h.container == want, (fd, inode, h)
        for inode, fds in conmon.items():
            for fd in fds:
                (h,) = [h for h in by_inode[inode] if h.pid == truth["conmon"] and h.fd == fd]
                assert h.container is None, h  # conmon runs on the host, beside the container
        (mine,) = [h for h in by_inode[os.fstat(host.fileno()).st_ino] if h.fd == host.fileno()]
        assert mine.container is None

        # a targeted search (a socket the last scan did not see) names it the same way
        inode, fds = next(iter(httpd.items()))
        found = HolderScanner().find_holders({inode}, [web.pid])
        assert [(h.pid, h.fd, h.container) for h in found[inode]] == [(web.pid, fds[0], want)]
    finally:
        host.close()


def every_holder(r: Row) -> list[dict[str, Any]]:
    return [
        h
        for side in ("sender", "receiver")
        if r.get(side)
        for h in (*r[side].get("holders", []), *r[side].get("former_holders", []))
    ]


def test_capture_on_the_host_names_each_end_s_container(pods, tmp_path: Path) -> None:
    """conntui on the host (every namespace, ``-i any``): a host client through the published
    port and a client container reaching the web container directly. Every holder of those
    rows that is one of the web container's processes (httpd, the child it forked for the
    connection) carries the web container as podman reports it, the client container's
    ``nc`` carries the client container, the host client none."""
    web, client, port = pods
    want_web = {**{k: reported(web.name)[k] for k in ("id", "name")}, "runtime": "podman", "pod": None}
    cap = FileConntui(tmp_path / "rows.jsonl", "--headless", "--json", "-i", "any", "-p", f"{port},80")
    try:
        from_host = host_client(web, "127.0.0.1", port, "host client by 127.0.0.1")
        # a host program in the client container's network namespace (not its cgroup): named
        # without a container (CI's chroot runs `podman exec`'d commands outside the container)
        from_ctr = host_client(web, web.ip, 80, "client container's namespace", netns_of=client.pid)
    finally:
        rows, err, _ = cap.stop(settle=2.0)
    assert "Traceback" not in err, err
    bad: list[str] = []
    checked = {"web": 0, "client container": 0, "host": 0}
    for t, client_is, want_client_side in (
        (from_host, "host", None),
        (from_ctr, "client container", None),
    ):
        mine = rows_of(rows, t, (port, 80))
        web_pids = {web.pid} | {pid for pid, _ in t.server}
        assert mine, t.what
        for r in mine:
            for h in every_holder(r):
                if h["pid"] in web_pids:
                    checked["web"] += 1
                    if h.get("container") != want_web:
                        bad.append(f"{t.what}: {h} is not in {want_web['name']}")
                elif h["pid"] == t.client[0]:
                    checked[client_is] += 1
                    if h.get("container") != want_client_side:
                        bad.append(f"{t.what}: {h} should be in {want_client_side}")
    assert not bad, "\n".join(bad[:20])
    assert all(checked.values()), checked  # each kind of holder was named at least once
