"""The numbers pcap and pcapng files share, for the writers and the reader: link types,
the snap length, the ARP hardware types of a Linux cooked (SLL2) header, and what a capture
file may be opened as (a path or a binary stream)."""

from __future__ import annotations

import os
from typing import IO, Final

LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276

SNAPLEN: Final = 262144
ARPHRD_ETHER: Final = 1
ARPHRD_NONE: Final = 0xFFFE  # what SLL2 says for frames captured without a link header

Target = str | os.PathLike[str] | IO[bytes]
