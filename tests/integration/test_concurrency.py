"""Parallel writers against a real uvicorn server, on SQLite and PostgreSQL.

The store promises that writers are serialized (SQLite's write lock, the
``meta`` row lock on PostgreSQL), so IPAM never hands one address to two
ports, and every losing request fails cleanly: a 409 with no partial rows and
no generation bump. These tests race many requests to check exactly that.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from integration.conftest import LiveServer
from netvirt.northbound.db import Database
from netvirt.northbound.schema import IPAllocation, Port

PARALLEL = 60
POOL = {"start": "10.20.0.10", "end": "10.20.0.59"}  # 50 addresses of a /26


def row_counts(db: Database, network_id: str) -> tuple[int, int]:
    with db.read() as session:
        ports = session.execute(
            select(func.count()).select_from(Port).where(Port.network_id == network_id)
        ).scalar_one()
        ips = session.execute(
            select(func.count())
            .select_from(IPAllocation)
            .where(IPAllocation.network_id == network_id)
        ).scalar_one()
    return ports, ips


def setup_network(client: httpx.Client) -> tuple[str, str]:
    resp = client.post("/v2.0/networks", json={"network": {"name": "race"}})
    assert resp.status_code == 201, resp.text
    net_id: str = resp.json()["network"]["id"]
    body = {"network_id": net_id, "cidr": "10.20.0.0/26", "allocation_pools": [POOL]}
    resp = client.post("/v2.0/subnets", json={"subnet": body})
    assert resp.status_code == 201, resp.text
    subnet_id: str = resp.json()["subnet"]["id"]
    return net_id, subnet_id


def race(client: httpx.Client, path: str, payloads: list[Any]) -> list[httpx.Response]:
    """POST every payload to ``path`` at once (as far as the threads allow)."""
    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        return list(pool.map(lambda payload: client.post(path, json=payload), payloads))


def race_ports(client: httpx.Client, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    return race(client, "/v2.0/ports", [{"port": body} for body in bodies])


def split(responses: list[httpx.Response]) -> tuple[list[dict[str, Any]], Counter[str]]:
    wins = [r.json()["port"] for r in responses if r.status_code == 201]
    losses = Counter(
        f"{r.status_code} {r.json()['NeutronError']['type']}"
        for r in responses
        if r.status_code != 201
    )
    return wins, losses


@pytest.mark.timeout(60)
def test_parallel_port_creates_exhaust_pool_without_duplicates(live_server: LiveServer) -> None:
    db = live_server.db
    with live_server.client() as client:
        net_id, subnet_id = setup_network(client)
        generation = db.generation()
        # half let IPAM pick the subnet, half name it: both paths must hold
        implicit = {"network_id": net_id}
        explicit = {"network_id": net_id, "fixed_ips": [{"subnet_id": subnet_id}]}
        wins, losses = split(race_ports(client, [implicit, explicit] * (PARALLEL // 2)))

    pool_size = 50
    assert len(wins) == pool_size
    assert losses == Counter({"409 IpAddressGenerationFailure": PARALLEL - pool_size})
    addresses = [p["fixed_ips"][0]["ip_address"] for p in wins]
    macs = [p["mac_address"] for p in wins]
    assert len(set(addresses)) == pool_size
    assert len(set(macs)) == pool_size
    lo, hi = (int(ipaddress.ip_address(POOL[k])) for k in ("start", "end"))
    assert {int(ipaddress.ip_address(a)) for a in addresses} == set(range(lo, hi + 1))
    # the losers left nothing: one port and one allocation per winner, one bump each
    assert row_counts(db, net_id) == (pool_size, pool_size)
    assert db.generation() == generation + pool_size


@pytest.mark.timeout(60)
def test_parallel_requests_for_one_fixed_ip_have_one_winner(live_server: LiveServer) -> None:
    db = live_server.db
    contenders = 20
    with live_server.client() as client:
        net_id, _ = setup_network(client)
        generation = db.generation()
        body = {"network_id": net_id, "fixed_ips": [{"ip_address": "10.20.0.33"}]}
        wins, losses = split(race_ports(client, [body] * contenders))

    assert len(wins) == 1
    assert wins[0]["fixed_ips"][0]["ip_address"] == "10.20.0.33"
    assert losses == Counter({"409 IpAddressAlreadyAllocated": contenders - 1})
    assert row_counts(db, net_id) == (1, 1)
    assert db.generation() == generation + 1


@pytest.mark.timeout(60)
def test_parallel_requests_for_one_mac_have_one_winner(live_server: LiveServer) -> None:
    db = live_server.db
    contenders = 20
    with live_server.client() as client:
        net_id, _ = setup_network(client)
        body = {"network_id": net_id, "mac_address": "fa:16:3e:12:34:56"}
        wins, losses = split(race_ports(client, [body] * contenders))

    assert [p["mac_address"] for p in wins] == ["fa:16:3e:12:34:56"]
    assert losses == Counter({"409 MacAddressInUse": contenders - 1})
    assert row_counts(db, net_id) == (1, 1)


REPORT_RACE_REASON = (
    "northbound/identity.py report() reads then inserts the realization row, and "
    "Database.write(bump=False) skips the meta row lock that serializes writers: on "
    "PostgreSQL two first reports of one host both insert, and the loser answers 409"
)


@pytest.mark.timeout(60)
def test_parallel_first_reports_of_a_host_all_succeed(
    live_server: LiveServer, request: pytest.FixtureRequest
) -> None:
    """An agent may retry its report while the first is in flight: both must land."""
    db = live_server.db
    generation = db.generation()
    with live_server.client() as client:
        # the race is a matter of timing: give it several fresh rows to hit
        for round_ in range(10):
            report = {"component": "host", "name": f"chassis-{round_}", "generation": 1}
            responses = race(client, "/v2.0/netvirt/status/reports", [{"report": report}] * 20)
            assert Counter(r.status_code for r in responses) == {204: 20}, round_
    assert db.generation() == generation, "reports are discovered state: no bump"
