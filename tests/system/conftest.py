"""System tests: real namespaces, veths, TAPs and sockets (root only).

Every namespace is named ``nvt<pid % 10000>-<test n>-<role>`` and removed by
the ``scope`` fixture's finalizer, whatever the test did; the finalizer
fails the test's teardown if any namespace of its prefix remains. TAPs are
created in the test's own namespace and moved into a "VM" namespace at
once; they vanish when their fd closes, which the fixtures also do.

Helpers the tests import (``Forwarder``, ``tcp_transfer``) live in
``system/netio.py``, not here, so that pytest's own copy of this module is
the only one.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import pytest

from netvirt.dataplane import netns
from system.netio import PREFIX

_counter = itertools.count(1)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "system tests need root (network namespaces, TAP devices)"
    if not os.path.exists("/dev/net/tun"):
        return "system tests need /dev/net/tun"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip system tests with a clear reason when the machine cannot run them."""
    reason = _skip_reason()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("system"):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def _no_leftovers() -> Iterator[None]:
    """After the whole session no namespace of this run's prefix may remain."""
    yield
    if _skip_reason() is None:
        remaining = netns.NetnsScope(PREFIX).cleanup()
        assert remaining == [], f"namespaces left behind: {remaining}"


@pytest.fixture
def scope() -> Iterator[netns.NetnsScope]:
    """A namespace scope private to one test, always cleaned up."""
    ns_scope = netns.NetnsScope(f"{PREFIX}-{next(_counter)}")
    try:
        yield ns_scope
    finally:
        remaining = ns_scope.cleanup()
        assert remaining == [], f"namespaces left behind: {remaining}"


@pytest.fixture
def ifname() -> Callable[[str], str]:
    """Unique interface names (at most 15 bytes) for devices made in the test's namespace."""
    test = next(_counter)
    return lambda role: f"{PREFIX}{test}{role}"[:15]
