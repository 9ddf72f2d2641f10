"""The socket view groups sockets by network namespace when they come from several: a
container's listener on a port and the host's on the same port are two listeners, each
connection sits under the listener of its own namespace, and ``ctr:`` / ``netns:`` keep a
namespace's sockets in the socket pane as they keep its rows in the list."""

from __future__ import annotations

import dataclasses
import time

from conntui.capture import ListSource
from conntui.engine import Engine
from conntui.filters import parse_display_filter
from conntui.model import Container, Holder, SocketEntry, SocketTable
from conntui.session import Session
from conntui.tablesource import ManyNamespaces, NamespaceTable
from conntui.tui.app import ConntuiApp
from conntui.tui.sockview import SECTION_LISTEN, SECTION_TCP, build_view
from conntui.tui.widgets.socket_tree import SocketTree

from .scenario import T0, ep, fixed_clock, frames, sock, socket_table
from .test_pilot import type_filter

HOST_NS = 4026531840
CTR_NS = 4026532246
OTHER_NS = 4026532300
WEB = Container("5f6dc9ff6ca2190b6be70dd62acb52e7cf7775e5fda71d7525b00b69da4624f4", "web", "podman")
HTTPD = Holder(700, 3, "httpd", WEB)
HTTPD_CONN = Holder(701, 4, "httpd", WEB)
NGINX = Holder(1000, 6, "nginx")
NGINX_CONN = Holder(1000, 9, "nginx")


def two_namespaces() -> list[SocketEntry]:
    """A listener on 0.0.0.0:80 in the host and one in a container, each with a connection
    (the container's listed first: a look-up by port alone finds it first)."""
    ctr = [
        sock("tcp", "LISTEN", ep("0.0.0.0", 80), None, (HTTPD,), 501, netns=CTR_NS, cookie=1),
        sock(
            "tcp",
            "ESTABLISHED",
            ep("10.241.1.2", 80),
            ep("10.241.0.1", 41000),
            (HTTPD_CONN,),
            502,
            netns=CTR_NS,
        ),
    ]
    host = [
        sock("tcp", "LISTEN", ep("0.0.0.0", 80), None, (NGINX,), 601, netns=HOST_NS, cookie=2),
        sock(
            "tcp",
            "ESTABLISHED",
            ep("10.241.0.1", 80),
            ep("10.241.2.9", 42000),
            (NGINX_CONN,),
            602,
            netns=HOST_NS,
        ),
    ]
    return ctr + host


def test_same_port_in_two_namespaces_each_connection_under_its_own_listener() -> None:
    view = build_view(two_namespaces(), primary_netns=HOST_NS)
    listeners = view.by_section(SECTION_LISTEN)
    assert len(listeners) == 2
    for g in listeners:
        assert g.listener is not None and g.rows
        # a connection is spawned only by a listener of its own namespace
        assert {s.netns for s in g.rows} == {g.listener.netns} == {g.netns}
    assert [n.inode for n in view.namespaces] == [HOST_NS, CTR_NS]  # conntui's own first
    assert view.namespaces[0].title == f"conntui's namespace  netns:{HOST_NS}"
    assert view.namespaces[1].title == f"ctr web (podman)  netns:{CTR_NS}"
    assert [g.netns for g in view.groups] == [HOST_NS, CTR_NS]
    assert [g.listener.netns for g in view.by_section(SECTION_LISTEN, CTR_NS) if g.listener] == [CTR_NS]


def test_a_namespace_without_containers_is_named_by_its_inode() -> None:
    entries = [
        *two_namespaces(),
        sock(
            "tcp",
            "ESTABLISHED",
            ep("10.241.3.2", 43000),
            ep("10.241.0.1", 80),
            (Holder(9, 3, "curl"),),
            9,
            netns=OTHER_NS,
        ),
    ]
    view = build_view(entries, primary_netns=HOST_NS)
    assert [n.title for n in view.namespaces] == [
        f"conntui's namespace  netns:{HOST_NS}",
        f"netns:{OTHER_NS}",  # no container: after those of conntui's namespace, before containers'
        f"ctr web (podman)  netns:{CTR_NS}",
    ]
    assert [g.process for g in view.by_section(SECTION_TCP, OTHER_NS)] == ["curl"]


def test_one_namespace_shows_no_namespace_level_and_the_same_keys() -> None:
    entries = [dataclasses.replace(e, netns=HOST_NS) for e in socket_table().entries]
    plain = build_view(socket_table().entries)
    view = build_view(entries, primary_netns=HOST_NS)
    assert view.namespaces == [] and plain.namespaces == []
    assert view.signature() == plain.signature()


def test_ctr_and_netns_filters_keep_a_namespace_sockets() -> None:
    entries = two_namespaces()
    for text in ("ctr:web", "ctr:5f6dc9ff", f"netns:{CTR_NS}", f"netns:net:[{CTR_NS}]"):
        view = build_view(entries, parse_display_filter(text), primary_netns=HOST_NS)
        assert {s.netns for g in view.groups for s in g.rows} == {CTR_NS}, text
        assert [n.inode for n in view.namespaces] == [CTR_NS], text
        assert all(not g.dimmed for g in view.groups), text
    view = build_view(entries, parse_display_filter(f"netns:{HOST_NS}"), primary_netns=HOST_NS)
    assert {s.netns for g in view.groups for s in g.rows} == {HOST_NS}
    assert not build_view(entries, parse_display_filter("ctr:nope"), primary_netns=HOST_NS).groups


# -- the socket pane, with a table source that reads two namespaces -----------------------


class TwoNamespaces:
    """A table source like ``NamespaceTables``: the scenario's table in conntui's own
    namespace, and a podman container's namespace with its own listener on 8080."""

    primary_inode = HOST_NS

    def __init__(self) -> None:
        self.host = SocketTable(
            [dataclasses.replace(e, netns=HOST_NS) for e in socket_table().entries],
            taken_at=T0,
            local_addrs=("127.0.0.1", "::1"),
            ifnames={1: "lo"},
        )
        self.ctr = SocketTable(
            [
                sock("tcp", "LISTEN", ep("0.0.0.0", 8080), None, (HTTPD,), 501, netns=CTR_NS, cookie=77),
                sock(
                    "tcp",
                    "ESTABLISHED",
                    ep("10.241.1.2", 8080),
                    ep("10.241.0.1", 41000),
                    (HTTPD_CONN,),
                    502,
                    netns=CTR_NS,
                ),
            ],
            taken_at=T0,
            local_addrs=("10.241.1.2",),
        )

    def current(self) -> SocketTable:
        return self.host

    def refresh(self) -> SocketTable:
        return self.host

    def resolve(self, seg: object, *, prune: bool = False) -> SocketTable | None:
        return None

    def namespace_tables(self) -> list[NamespaceTable]:
        return [NamespaceTable(HOST_NS, self.host), NamespaceTable(CTR_NS, self.ctr, "ns12-web")]


def pane_text(app: ConntuiApp) -> list[str]:
    tree = app.main.socket_tree
    return [str(line.node.label) for line in tree._tree_lines]


def two_namespace_app() -> ConntuiApp:
    """The scenario's frames and table in conntui's namespace, beside a container's."""
    tables = TwoNamespaces()
    assert isinstance(tables, ManyNamespaces)
    engine = Engine(ListSource(frames(), "test frames"), tables, Session())
    engine.run()
    return ConntuiApp(engine, iface="lo", clock=fixed_clock)


async def test_socket_pane_groups_by_namespace_and_filters_by_container() -> None:
    app = two_namespace_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(2 * app.AFTER_FRAME)
        tree = app.query_one(SocketTree)
        lines = pane_text(app)
        host_at = lines.index(next(x for x in lines if x.startswith("conntui's namespace")))
        ctr_at = lines.index(next(x for x in lines if x.startswith("ctr web (podman)")))
        assert host_at == 0 and ctr_at > host_at
        assert f"netns:{CTR_NS}  (ns12-web)" in lines[ctr_at]
        # the container's :8080 listener and the host's are two, each with its own connection
        ctr_lines = lines[ctr_at:]
        assert any(
            x.endswith("httpd[700] fd 3 (ctr web)  accept queue 0 (backlog 0)  1 conn") for x in ctr_lines
        )
        assert any("10.241.1.2:8080 ← 10.241.0.1:41000" in x for x in ctr_lines)
        assert not any("10.241.1.2" in x for x in lines[:ctr_at])
        # segments went to the host's 0.0.0.0:8080 listener, none to the container's
        assert any(":8080 0.0.0.0:8080  pyserver" in x and "seg" in x for x in lines[:ctr_at])
        assert not any("seg" in x for x in ctr_lines)
        assert tree.view is not None
        await type_filter(pilot, "ctr:web")
        lines = pane_text(app)
        assert "no sockets match the filter" not in lines
        assert lines[0].startswith("ctr web (podman)") and len([x for x in lines if "netns:" in x]) == 1
        assert any("10.241.1.2:8080 ← 10.241.0.1:41000" in x for x in lines)
        assert not any("pyserver" in x or "curl" in x for x in lines)
        await type_filter(pilot, f"netns:{HOST_NS}")
        lines = pane_text(app)
        assert lines[0].startswith("conntui's namespace") and not any("httpd" in x for x in lines)


async def test_an_old_namespace_table_says_when_it_was_read() -> None:
    """A namespace no segment went to lately is not read again: its line says when its
    sockets were read, rather than passing them off as the current ones."""
    app = two_namespace_app()
    tables = app.engine.tables
    assert isinstance(tables, TwoNamespaces)
    tables.ctr = SocketTable(tables.ctr.entries, taken_at=T0 - 60, local_addrs=("10.241.1.2",))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(2 * app.AFTER_FRAME)
        line = next(x for x in pane_text(app) if x.startswith("ctr web (podman)"))
        read = time.strftime("%H:%M:%S", time.localtime(T0 - 60))
        assert f"(ns12-web) sockets as read at {read}" in line
        host = next(x for x in pane_text(app) if x.startswith("conntui's namespace"))
        assert "as read" not in host
