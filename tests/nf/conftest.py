"""Fixtures for the network-function tests: the same scenarios on memory and on Redis.

``env`` is a store plus the time the conntrack calls pass as ``now``. With the
memory store the store's clock *is* that time, so store TTLs and entry expiry
move together; Redis keeps its own clock, and its TTLs (30 s and more) never
run out during a test, so expiry there is conntrack's explicit ``expiry`` —
which is exactly what makes a fake ``now`` work with a real server.
The redis-server runner is the one of the StateStore tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from netvirt.state import MemoryStore
from netvirt.state.redis import RedisStore
from nf.nf_support import NfEnv
from state.state_support import FakeClock, RedisServer, redis_binary


def pytest_configure(config: pytest.Config) -> None:
    """Keep Hypothesis failure reports readable under ``-W error`` (see tests/dataplane)."""
    config.addinivalue_line(
        "filterwarnings",
        "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning",
    )


@pytest.fixture(scope="session")
def nf_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = redis_binary()
    if binary is None:
        pytest.skip("redis-server not installed (Debian package redis-server)")
    server = RedisServer(binary, tmp_path_factory.mktemp("nf-redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def nf_redis_store(nf_redis_url: str) -> Iterator[RedisStore]:
    client = redis.Redis.from_url(nf_redis_url)
    client.flushdb()
    client.close()
    store = RedisStore.from_url(nf_redis_url)
    yield store
    store.close()


@pytest.fixture(params=["memory", "redis"])
def env(request: pytest.FixtureRequest) -> NfEnv:
    clock = FakeClock(1000.0)
    if request.param == "memory":
        return NfEnv("memory", MemoryStore(clock), clock)
    return NfEnv("redis", request.getfixturevalue("nf_redis_store"), clock)


@pytest.fixture
def mem() -> NfEnv:
    """Memory only: for the tests that need many flows or count round trips."""
    clock = FakeClock(1000.0)
    return NfEnv("memory", MemoryStore(clock), clock)
