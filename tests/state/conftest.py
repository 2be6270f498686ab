"""Fixtures for the StateStore contract: the same tests on memory, Redis and Redis Cluster.

The Redis server is Debian's ``redis-server``, started once per session on a
free loopback port with persistence off, and flushed before every test. The
cluster is three ``redis-server --cluster-enabled yes`` masters on loopback
ports of 7100-7199 (client and bus ports), joined with CLUSTER ADDSLOTSRANGE
and MEET, started once per session and flushed before every test. Time is
abstracted by ``Harness.advance``: a fake clock for the memory store, a real
sleep for Redis (whose clock we cannot drive).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from netvirt.state import MemoryStore
from netvirt.state.cluster import RedisClusterStore
from netvirt.state.redis import RedisStore
from state.state_support import FakeClock, Harness, RedisClusterServers, RedisServer, redis_binary


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


@pytest.fixture(scope="session")
def redis_cluster(
    redis_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(redis_bin, tmp_path_factory.mktemp("nvc-cluster"))
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def cluster(redis_cluster: RedisClusterServers) -> RedisClusterServers:
    """The session's cluster, every master flushed (version counters included)."""
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture
def cluster_store(cluster: RedisClusterServers) -> Iterator[RedisClusterStore]:
    store = RedisClusterStore.from_url(cluster.url)
    yield store
    store.close()


@pytest.fixture(params=["memory", "redis", "cluster"])
def harness(request: pytest.FixtureRequest) -> Harness:
    if request.param == "memory":
        clock = FakeClock()
        return Harness("memory", MemoryStore(clock), clock.advance)
    if request.param == "cluster":
        return Harness("cluster", request.getfixturevalue("cluster_store"), time.sleep)
    store: RedisStore = request.getfixturevalue("redis_store")
    return Harness("redis", store, time.sleep)
