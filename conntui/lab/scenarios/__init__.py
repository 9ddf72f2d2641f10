"""The lab's scenarios, in teaching order. Each module defines ``SCENARIO``."""

from __future__ import annotations

from ..runner import Scenario
from . import (
    accept_queue,
    container_port,
    established_routing,
    listen,
    listen_vs_connect,
    port_conflict,
    redirect,
    same_port,
    stale_client,
    tproxy,
    udp_demux,
)

SCENARIOS: dict[str, Scenario] = {
    m.SCENARIO.name: m.SCENARIO
    for m in (
        listen_vs_connect,
        listen,
        established_routing,
        accept_queue,
        stale_client,
        port_conflict,
        same_port,
        redirect,
        container_port,
        udp_demux,
        tproxy,
    )
}

__all__ = ["SCENARIOS", "Scenario"]
