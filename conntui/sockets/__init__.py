"""The socket table: kernel snapshots, every holder of each socket, and fast look-ups.

* :mod:`.diag`: NETLINK_SOCK_DIAG dumps and exact 4-tuple look-ups (``RawSock``), which
  run the kernel's own receive look-up (established hash, then listeners; UDP's scoring);
* :mod:`.procfs`: inode → every (pid, fd, process) from ``/proc/*/fd``, incrementally;
* :mod:`.route`: local addresses and interface names (rtnetlink);
* :mod:`.source`: :class:`SocketTableSource`, the refresher's engine;
* :mod:`.netlink`: the netlink plumbing, including opening sockets in another netns.

Stdlib only (``socket``/``struct``): the package needs neither psutil nor
pyroute2.
"""

from .diag import DiagSocket, RawSock, dump, lookup_exact, parse_msg, state_text, to_entry
from .procfs import HolderScanner, ProcessNames, find_holders, scan_holders
from .route import RouteInfo
from .source import SocketTableSource, netns_path

__all__ = [
    "DiagSocket",
    "HolderScanner",
    "ProcessNames",
    "RawSock",
    "RouteInfo",
    "SocketTableSource",
    "dump",
    "find_holders",
    "lookup_exact",
    "netns_path",
    "parse_msg",
    "scan_holders",
    "state_text",
    "to_entry",
]
