"""Capture files: what conntui writes with ``-w`` and the TUI's export, and reads with ``-r``.

One module per idea; import the one you need (this package imports none of them):

* ``comments``: the per-packet comment codec, an attribution as a pcapng comment and back;
* ``private``: creating a capture file as a root process must (``create_private_file``);
* ``writers``: the pcap and pcapng writers (``open_writer``);
* ``stdout``: the pcapng writer on standard output (``-w -``);
* ``reader``: the pcap and pcapng reader (``read_capture``, ``-r``);
* ``spool``: the session's rows that left memory, in a private temporary pcapng;
* ``export``: a session's rows written to a new capture file (the TUI's ``w``);
* ``formats`` and ``errors``: the numbers and the errors the others share.

The package sits between the capture and the C fast path: ``engine`` → ``capture`` →
``capfile`` → ``fastpath`` (pyproject.toml's import-linter contracts).
"""
