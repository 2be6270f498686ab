"""Fixtures for the StateStore contract: the same tests run on memory and on a real Redis.

The Redis server is Debian's ``redis-server``, started once per session on a
free loopback port with persistence off, and flushed before every test. Time
is abstracted by ``Harness.advance``: a fake clock for the memory store, a real
sleep for Redis (whose clock we cannot drive).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from netvirt.state import MemoryStore
from netvirt.state.redis import RedisStore
from state.state_support import FakeClock, Harness, RedisServer, redis_binary


@pytest.fixture(scope="session")
def redis_bin() -> str:
    binary = redis_binary()
    if binary is None:
        pytest.skip("redis-server not installed (Debian package redis-server)")
    return binary


@pytest.fixture(scope="session")
def redis_url(redis_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(redis_bin, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on a freshly flushed database, for setup and inspection."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def redis_store(redis_raw: redis.Redis, redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore.from_url(redis_url)
    yield store
    store.close()


@pytest.fixture(params=["memory", "redis"])
def harness(request: pytest.FixtureRequest) -> Harness:
    if request.param == "memory":
        clock = FakeClock()
        return Harness("memory", MemoryStore(clock), clock.advance)
    store: RedisStore = request.getfixturevalue("redis_store")
    return Harness("redis", store, time.sleep)
