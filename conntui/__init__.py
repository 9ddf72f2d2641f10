"""conntui: which process and file descriptor the kernel delivers each TCP/UDP segment to."""

__version__ = "0.1.0"
