"""Container identity without a runtime: cgroup lines of each runtime, state files (good,
garbled, missing), the per-process cache, and the holder scanner on a fake /proc."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conntui.model import Container, Holder
from conntui.sockets.containers import (
    CgroupMatch,
    ContainerLookup,
    parse_cgroup,
    parse_docker_name,
    parse_storage_names,
)
from conntui.sockets.procfs import HolderScanner

from .test_sockets import FakeProc

ID = "5f6dc9ff6ca2190b6be70dd62acb52e7cf7775e5fda71d7525b00b69da4624f4"
ID2 = "675d8cb4b2958159b668f25c639ae6e01166f96b9010a1e55f8b9d74f559dc66"
UID = "1b2c3d4e-0000-4111-8222-123456789abc"
PODMAN_POD = "a" * 64

# what podman 4.3 (cgroupfs manager, hybrid cgroup v1/v2) wrote on this project's machine
PODMAN_CGROUPFS = "\n".join(
    f"{n}:{c}:/libpod_parent/libpod-{ID}"
    for n, c in [
        (9, "name=systemd"),
        (8, "pids"),
        (7, "blkio"),
        (6, "freezer"),
        (5, "devices"),
        (4, "memory"),
        (3, "cpuset"),
        (2, "cpuacct"),
        (1, "cpu"),
        (0, ""),
    ]
)
CONMON_CGROUPFS = "9:name=systemd:/\n8:pids:/libpod_parent/conmon\n4:memory:/libpod_parent/conmon\n0::/\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # docker: systemd driver (v2), cgroupfs driver (v1), docker in docker (the inner one)
        (f"0::/system.slice/docker-{ID}.scope\n", CgroupMatch(ID, "docker")),
        (
            f"12:memory:/docker/{ID}\n11:pids:/docker/{ID}\n1:name=systemd:/docker/{ID}\n",
            CgroupMatch(ID, "docker"),
        ),
        (f"0::/docker/{ID2}/docker/{ID}\n", CgroupMatch(ID, "docker")),
        # podman: systemd (with and without the container's own sub-cgroup), cgroupfs, in a pod
        (f"0::/machine.slice/libpod-{ID}.scope\n", CgroupMatch(ID, "podman")),
        (f"0::/machine.slice/libpod-{ID}.scope/container\n", CgroupMatch(ID, "podman")),
        (PODMAN_CGROUPFS, CgroupMatch(ID, "podman")),
        (
            f"0::/machine.slice/machine-libpod_pod_{PODMAN_POD}.slice/libpod-{ID}.scope\n",
            CgroupMatch(ID, "podman", PODMAN_POD),
        ),
        (
            f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope\n",
            CgroupMatch(ID, "podman", user=1000),
        ),
        # Kubernetes: CRI-O and containerd, systemd driver (uid with "_"), cgroupfs driver
        (
            "0::/kubepods.slice/kubepods-burstable.slice/"
            f"kubepods-burstable-pod{UID.replace('-', '_')}.slice/crio-{ID}.scope\n",
            CgroupMatch(ID, "cri-o", UID),
        ),
        (
            "0::/kubepods.slice/kubepods-besteffort.slice/"
            f"kubepods-besteffort-pod{UID.replace('-', '_')}.slice/cri-containerd-{ID}.scope\n",
            CgroupMatch(ID, "containerd", UID),
        ),
        (
            f"0::/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/cri-containerd-{ID}.scope\n",
            CgroupMatch(ID, "containerd", UID),
        ),
        (f"4:memory:/kubepods/besteffort/pod{UID}/{ID}\n", CgroupMatch(ID, "", UID)),
        (f"4:memory:/kubepods/besteffort/pod{UID}/crio-{ID}\n", CgroupMatch(ID, "cri-o", UID)),
        (f"0::/kubepods/pod{UID}\n", CgroupMatch("", "", UID)),
        # an id of a runtime conntui does not know: the id, no runtime
        (f"0::/system.slice/someruntime-{ID}.scope\n", CgroupMatch(ID, "")),
        (f"0::/lxc/{ID}\n", CgroupMatch(ID, "")),
    ],
)
def test_cgroup_names_the_container(text: str, expected: CgroupMatch) -> None:
    assert parse_cgroup(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        # conmon: podman's / CRI-O's monitor on the host, not the container's process
        f"0::/machine.slice/libpod-conmon-{ID}.scope\n",
        f"0::/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-conmon-{ID}.scope\n",
        CONMON_CGROUPFS,
        # host processes
        "0::/\n",
        "0::/init.scope\n",
        "0::/user.slice/user-0.slice/session-3.scope\n",
        "0::/system.slice/docker.service\n",
        "0::/system.slice/containerd.service\n",
        "4:memory:/process_api/4d8c60239f75462509bfc6e1e0f7c04e\n0::/\n",  # 32 hex: not an id
        f"0::/system.slice/docker-{ID[:63]}.scope\n",  # one digit short
        f"0::/system.slice/docker-{ID.upper()}.scope\n",  # ids are lower-case hex
        # nothing, garbage
        "",
        "garbage\n\x00\xff:::\n",
        "0:/docker/x\n",
    ],
)
def test_no_container(text: str) -> None:
    assert parse_cgroup(text) is None


def test_v2_line_wins_over_controllers() -> None:
    """A hybrid layout where one controller says another thing: the v2 line decides."""
    text = f"4:memory:/docker/{ID2}\n0::/system.slice/docker-{ID}.scope\n"
    assert parse_cgroup(text) == CgroupMatch(ID, "docker")


def test_storage_names() -> None:
    doc = [
        {"id": ID, "names": ["web"], "image": "x", "metadata": "{}"},
        {"id": ID2, "names": ["[bold]db[/bold]", "alias"]},
        {"id": "noname", "names": []},
        "not an object",
        {"id": 5, "names": ["bad id"]},
        {"id": "badnames", "names": "web"},
        {"id": "longname", "names": ["x" * 1000]},
    ]
    names = parse_storage_names(json.dumps(doc).encode())
    assert names == {ID: "web", ID2: "[bold]db[/bold]", "longname": "x" * 256}


@pytest.mark.parametrize(
    "data", [b"", b"{", b"\xff\xfe", b'{"id": "x"}', b"null", b"[" * 100000 + b"]" * 100000, b"[1e400]"]
)
def test_garbled_state_files_give_no_names(data: bytes) -> None:
    assert parse_storage_names(data) == {}
    assert parse_docker_name(data) == ""


def test_docker_name() -> None:
    assert parse_docker_name(json.dumps({"ID": ID, "Name": "/web"}).encode()) == "web"
    assert parse_docker_name(json.dumps({"ID": ID, "Name": 7}).encode()) == ""
    assert parse_docker_name(json.dumps({"ID": ID}).encode()) == ""


# --- ContainerLookup: I/O and caches on a fake tree ------------------------------------


class Tree:
    """A fake host: /proc/PID/cgroup files and the runtimes' state files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc = root / "proc"
        self.storage = root / "var/lib/containers/storage/overlay-containers"
        self.docker = root / "var/lib/docker/containers"

    def cgroup(self, pid: int, text: str) -> None:
        d = self.proc / str(pid)
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup").write_text(text)

    def podman(self, entries: list[dict[str, object]] | bytes, name: str = "containers.json") -> Path:
        self.storage.mkdir(parents=True, exist_ok=True)
        path = self.storage / name
        path.write_bytes(entries if isinstance(entries, bytes) else json.dumps(entries).encode())
        return path

    def docker_config(self, cid: str, data: bytes) -> Path:
        d = self.docker / cid
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.v2.json").write_bytes(data)
        return d / "config.v2.json"

    def lookup(self) -> ContainerLookup:
        return ContainerLookup(str(self.proc), str(self.root))


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


def test_podman_name_from_containers_json(tree: Tree) -> None:
    tree.cgroup(10, PODMAN_CGROUPFS)
    tree.podman([{"id": ID, "names": ["web"]}])
    assert tree.lookup().of(10, 1, "httpd") == Container(ID, "web", "podman")


def test_podman_volatile_and_run_root(tree: Tree) -> None:
    tree.cgroup(10, f"0::/machine.slice/libpod-{ID}.scope\n")
    tree.cgroup(11, f"0::/machine.slice/libpod-{ID2}.scope\n")
    tree.podman([{"id": ID, "names": ["kept"]}])
    tree.podman([{"id": ID2, "names": ["removed-on-exit"]}], "volatile-containers.json")
    lookup = tree.lookup()
    assert lookup.of(10, 1, "a").name == "kept"  # type: ignore[union-attr]
    assert lookup.of(11, 1, "a").name == "removed-on-exit"  # type: ignore[union-attr]
    run = tree.root / "run/containers/storage/overlay-containers"
    run.mkdir(parents=True)
    (run / "volatile-containers.json").write_text(json.dumps([{"id": ID2, "names": ["transient"]}]))
    tree.podman([], "volatile-containers.json")
    tree.cgroup(12, f"0::/machine.slice/libpod-{ID2}.scope\n")
    assert lookup.of(12, 1, "a").name == "transient"  # type: ignore[union-attr]


def test_crio_names_come_from_the_same_storage(tree: Tree) -> None:
    tree.cgroup(10, f"0::/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-{ID}.scope\n")
    tree.podman([{"id": ID, "names": ["k8s_web_mypod_default_x_0"]}])
    assert tree.lookup().of(10, 1, "a") == Container(ID, "k8s_web_mypod_default_x_0", "cri-o", UID)


def test_graphroot_and_data_root_from_config(tree: Tree) -> None:
    (tree.root / "etc/containers").mkdir(parents=True)
    (tree.root / "etc/containers/storage.conf").write_text(
        '[storage]\ndriver = "vfs"\ngraphroot = "/srv/cs"\n'
    )
    (tree.root / "etc/docker").mkdir(parents=True)
    (tree.root / "etc/docker/daemon.json").write_text('{"data-root": "/srv/docker"}')
    store = tree.root / "srv/cs/vfs-containers"
    store.mkdir(parents=True)
    (store / "containers.json").write_text(json.dumps([{"id": ID, "names": ["vfs-web"]}]))
    cfg = tree.root / f"srv/docker/containers/{ID2}"
    cfg.mkdir(parents=True)
    (cfg / "config.v2.json").write_text('{"Name": "/dweb"}')
    tree.cgroup(10, f"0::/machine.slice/libpod-{ID}.scope\n")
    tree.cgroup(11, f"0::/system.slice/docker-{ID2}.scope\n")
    lookup = tree.lookup()
    assert lookup.of(10, 1, "a") == Container(ID, "vfs-web", "podman")
    assert lookup.of(11, 1, "a") == Container(ID2, "dweb", "docker")


def test_garbled_config_files_keep_the_defaults(tree: Tree) -> None:
    (tree.root / "etc/containers").mkdir(parents=True)
    (tree.root / "etc/containers/storage.conf").write_bytes(b"[storage\n\xff")
    (tree.root / "etc/docker").mkdir(parents=True)
    (tree.root / "etc/docker/daemon.json").write_bytes(b"{nope")
    tree.podman([{"id": ID, "names": ["web"]}])
    tree.docker_config(ID2, b'{"Name": "/dweb"}')
    tree.cgroup(10, f"0::/machine.slice/libpod-{ID}.scope\n")
    tree.cgroup(11, f"0::/docker/{ID2}\n")
    lookup = tree.lookup()
    assert lookup.of(10, 1, "a") == Container(ID, "web", "podman")
    assert lookup.of(11, 1, "a") == Container(ID2, "dweb", "docker")


def test_docker_name_and_its_changes(tree: Tree) -> None:
    """The name is read again when the state file changes (``docker rename``)."""
    path = tree.docker_config(ID, b'{"Name": "/web"}')
    lookup = tree.lookup()
    assert lookup.name_of("docker", ID) == "web"
    path.write_bytes(b'{"Name": "/web2"}')
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert lookup.name_of("docker", ID) == "web2"


def test_state_file_parsed_once_while_unchanged(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    tree.podman([{"id": ID, "names": ["web"]}])
    lookup = tree.lookup()
    calls: list[bytes] = []
    import conntui.sockets.containers as mod

    real = mod.parse_storage_names

    def counting(data: bytes) -> dict[str, str]:
        calls.append(data)
        return real(data)

    monkeypatch.setattr(mod, "parse_storage_names", counting)
    for _ in range(3):
        assert lookup.name_of("podman", ID) == "web"
    assert len(calls) == 1


@pytest.mark.parametrize(
    "state", [b"{garbled", b"", b"\xff\xff", b'{"id": "not a list"}', b"[" * 50000, None]
)
def test_unreadable_or_garbled_state_leaves_name_unknown(tree: Tree, state: bytes | None) -> None:
    tree.cgroup(10, f"0::/machine.slice/libpod-{ID}.scope\n")
    tree.cgroup(11, f"0::/system.slice/docker-{ID}.scope\n")
    if state is not None:
        tree.podman(state)
        tree.docker_config(ID, state)
    lookup = tree.lookup()
    assert lookup.of(10, 1, "a") == Container(ID, "", "podman")
    assert lookup.of(11, 1, "a") == Container(ID, "", "docker")


def test_state_directory_not_readable_is_no_name(tree: Tree) -> None:
    """A state 'file' that is a directory (or otherwise cannot be read) is no name."""
    tree.storage.mkdir(parents=True)
    (tree.storage / "containers.json").mkdir()
    assert tree.lookup().name_of("podman", ID) == ""


def test_unknown_runtime_and_containerd_show_the_id(tree: Tree) -> None:
    tree.cgroup(10, f"0::/system.slice/someruntime-{ID}.scope\n")
    tree.cgroup(
        11, f"0::/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/cri-containerd-{ID}.scope\n"
    )
    lookup = tree.lookup()
    c = lookup.of(10, 1, "a")
    assert c == Container(ID, "", "") and c.label == ID[:12]
    assert lookup.of(11, 1, "a") == Container(ID, "", "containerd", UID)


def test_no_cgroup_file_is_no_container(tree: Tree) -> None:
    tree.proc.mkdir(parents=True)
    assert tree.lookup().of(99, 1, "gone") is None


def test_cache_per_pid_start_time_and_comm(tree: Tree) -> None:
    """A reused pid (another start time) and an exec (another comm) are read anew."""
    tree.podman([{"id": ID, "names": ["web"]}])
    tree.cgroup(10, "0::/user.slice\n")
    lookup = tree.lookup()
    assert lookup.of(10, 1, "runc:[2:INIT]") is None
    tree.cgroup(10, f"0::/machine.slice/libpod-{ID}.scope\n")
    assert lookup.of(10, 1, "runc:[2:INIT]") is None  # cached: one read per process
    assert lookup.of(10, 1, "httpd") == Container(ID, "web", "podman")  # exec'd
    assert lookup.of(10, 2, "runc:[2:INIT]") == Container(ID, "web", "podman")  # pid reused
    assert len(lookup) == 3


def test_label() -> None:
    assert Container(ID, "web").label == "web"
    assert Container(ID).label == ID[:12]
    assert Container("", pod=UID).label == f"pod {UID}"


# --- the holder scanner names each holder's container ----------------------------------


def test_scanner_gives_each_holder_its_container(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    proc = FakeProc(tree.proc)
    proc.process(100, "httpd")
    proc.sock(100, 3, 555)
    tree.cgroup(100, PODMAN_CGROUPFS)
    proc.process(200, "conmon")
    proc.sock(200, 5, 556)
    tree.cgroup(200, CONMON_CGROUPFS)
    proc.process(300, "curl")
    proc.sock(300, 3, 557)
    tree.cgroup(300, "0::/user.slice\n")
    tree.podman([{"id": ID, "names": ["web"]}])
    scanner = HolderScanner(str(proc.root), containers=tree.lookup())
    web = Container(ID, "web", "podman")
    got = scanner.scan({555, 556, 557})
    assert got == {
        555: (Holder(100, 3, "httpd", web),),
        556: (Holder(200, 5, "conmon"),),
        557: (Holder(300, 3, "curl"),),
    }
    # incremental scans and targeted searches name them the same way
    proc.sock(100, 4, 558)
    assert scanner.scan({555, 556, 557, 558})[558] == (Holder(100, 4, "httpd", web),)
    proc.sock(100, 6, 559)
    assert scanner.find_holders({559}, [100]) == {559: (Holder(100, 6, "httpd", web),)}


def test_scanner_reused_pid_gets_its_own_container(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    proc = FakeProc(tree.proc)
    proc.process(100, "httpd", starttime=10)
    proc.sock(100, 3, 555)
    tree.cgroup(100, PODMAN_CGROUPFS)
    tree.podman([{"id": ID, "names": ["web"]}])
    scanner = HolderScanner(str(proc.root), containers=tree.lookup())
    assert scanner.scan({555})[555][0].container == Container(ID, "web", "podman")
    proc.kill(100)
    proc.process(100, "httpd", starttime=20)  # the same pid and name, now on the host
    proc.sock(100, 3, 600)
    tree.cgroup(100, "0::/user.slice\n")
    assert scanner.scan({600}) == {600: (Holder(100, 3, "httpd"),)}


def test_an_exec_replaces_the_holder_and_its_container(tmp_path: Path) -> None:
    """runc's init exec()s the container's program: the same pid and start time, another
    comm. The socket it holds is then held by the new program (read again: its name and
    container), listed once, not under both names."""
    tree = Tree(tmp_path)
    proc = FakeProc(tree.proc)
    proc.process(100, "runc:[2:INIT]")
    proc.sock(100, 3, 555)
    tree.cgroup(100, "0::/user.slice\n")
    tree.podman([{"id": ID, "names": ["web"]}])
    scanner = HolderScanner(str(proc.root), containers=tree.lookup())
    assert scanner.scan({555}) == {555: (Holder(100, 3, "runc:[2:INIT]"),)}
    proc.process(100, "httpd")  # exec: same start time
    tree.cgroup(100, f"0::/machine.slice/libpod-{ID}.scope\n")
    assert scanner.scan({555}) == {555: (Holder(100, 3, "httpd", Container(ID, "web", "podman")),)}


def test_rootless_names_come_from_the_users_own_state(tree: Tree) -> None:
    """A rootless container is named from its user's storage; a cgroup a user named after a
    system container's id does not borrow the system container's name."""
    user = "0::/user.slice/user-1000.slice/user@1000.service/user.slice"
    tree.cgroup(10, f"{user}/libpod-{ID}.scope\n")
    tree.cgroup(11, f"{user}/libpod-{ID2}.scope\n")
    tree.cgroup(12, f"{user}/docker-{ID}.scope\n")
    tree.cgroup(13, f"0::/user.slice/user-2000.slice/user@2000.service/libpod-{ID}.scope\n")
    tree.podman([{"id": ID2, "names": ["system-db"]}])  # rootful podman's own
    home = tree.root / "home/alice/.local/share"
    (home / "containers/storage/overlay-containers").mkdir(parents=True)
    (home / "containers/storage/overlay-containers/containers.json").write_text(
        json.dumps([{"id": ID, "names": ["alices-web"]}])
    )
    (home / f"docker/containers/{ID}").mkdir(parents=True)
    (home / f"docker/containers/{ID}/config.v2.json").write_text('{"Name": "/alices-docker"}')
    homes = {1000: "/home/alice"}
    lookup = ContainerLookup(str(tree.proc), str(tree.root), home_of=homes.get)
    assert lookup.of(10, 1, "a") == Container(ID, "alices-web", "podman")
    assert lookup.of(11, 1, "a") == Container(ID2, "", "podman")  # not "system-db"
    assert lookup.of(12, 1, "a") == Container(ID, "alices-docker", "docker")
    assert lookup.of(13, 1, "a") == Container(ID, "", "podman")  # no such user: id only
    tree.cgroup(14, f"0::/machine.slice/libpod-{ID2}.scope\n")
    assert lookup.of(14, 1, "a") == Container(ID2, "system-db", "podman")


def test_rootless_volatile_list_under_the_users_run_root(tree: Tree) -> None:
    tree.cgroup(10, f"0::/user.slice/user-1000.slice/user@1000.service/libpod-{ID}.scope\n")
    run = tree.root / "run/user/1000/containers/overlay-containers"
    run.mkdir(parents=True)
    (run / "volatile-containers.json").write_text(json.dumps([{"id": ID, "names": ["tmp-web"]}]))
    lookup = ContainerLookup(str(tree.proc), str(tree.root), home_of={1000: "/home/alice"}.get)
    assert lookup.of(10, 1, "a") == Container(ID, "tmp-web", "podman")


def test_traced_containers_follow_the_process_not_the_pid(tmp_path: Path) -> None:
    """A tracer record names (pid, time): its container is the one of the process that had
    the pid then. Noted while it runs, it is known after it exits; a pid reused by a later
    process gets none; one never seen running gets none."""
    from conntui.model import Container as C
    from conntui.sockets.procfs import TracedContainers

    tree = Tree(tmp_path)
    proc = FakeProc(tree.proc)
    boot = 1_700_000_000
    (tree.proc / "stat").write_text(f"cpu  1 2 3\nbtime {boot}\n")
    clk = os.sysconf("SC_CLK_TCK")
    proc.process(100, "nc", starttime=50 * clk)  # started at boot + 50 s
    tree.cgroup(100, f"0::/machine.slice/libpod-{ID}.scope\n")
    tree.podman([{"id": ID, "names": ["client"]}])
    now = [boot + 61.0]
    traced = TracedContainers(str(tree.proc), tree.lookup(), clock=lambda: now[0])
    web = C(ID, "client", "podman")

    class Rec:
        pid = 100
        t = boot + 60.0

    traced.note(Rec())  # the record came while nc ran
    proc.kill(100)
    assert traced.at(100, boot + 60.0) == web  # nc has exited: still known
    proc.process(100, "sh", starttime=500 * clk)  # the pid reused at boot + 500 s
    now[0] = boot + 700.0
    tree.cgroup(100, "0::/user.slice\n")
    assert traced.at(100, boot + 600.0) is None  # the new process is on the host
    assert traced.at(100, boot + 400.0) is None  # a record from before sh started: not sh's
    assert traced.at(4242, boot + 60.0) is None  # never seen, not running
