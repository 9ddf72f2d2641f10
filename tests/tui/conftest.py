"""Frozen time zone and helpers for the TUI tests."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Iterator

import pytest

from conntui.tui.app import ConntuiApp

from .scenario import fixed_clock, make_engine


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Times in the list are local wall-clock times: pin the zone so snapshots match
    anywhere (and put it back for the rest of the test run)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def make_app(**kw: object) -> ConntuiApp:
    """The app over the frozen scenario (engine already drained, fixed clock)."""
    engine = kw.pop("engine", None) or make_engine()
    return ConntuiApp(engine, iface="lo", clock=fixed_clock, **kw)  # type: ignore[arg-type]


@pytest.fixture
def app() -> ConntuiApp:
    return make_app()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests in a fresh event loop (no pytest-asyncio needed)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**args))
    return True
