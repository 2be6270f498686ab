"""IPAM inside one write transaction: the per-transaction allocation cache
(``ipam._taken``) must never hand out an address the table holds, and must keep
"lowest free address of the pools" exact across creates, deletes and fixed_ips
replacements in the same transaction (a bulk create, or any service writing
several ports at once)."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from conftest import Api
from netvirt.model.l2 import PortCreate, PortUpdate
from netvirt.northbound import ports
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database
from netvirt.northbound.schema import IPAllocation

POOL = [str(ipaddress.ip_address("10.9.0.2") + n) for n in range(12)]  # 10.9.0.0/28 minus gw

# one step: ("create",), ("create_at", pool index), ("delete", nth live port),
# ("readdress", nth live port, pool index)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("create")),
        st.tuples(st.just("create_at"), st.integers(0, len(POOL) - 1)),
        st.tuples(st.just("delete"), st.integers(0, 20)),
        st.tuples(st.just("readdress"), st.integers(0, 20), st.integers(0, len(POOL) - 1)),
    ),
    max_size=25,
)


def _network(admin: Api) -> str:
    net = admin.ok("POST", "/v2.0/networks", {"network": {"name": "ipam"}})["network"]["id"]
    admin.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": net, "cidr": "10.9.0.0/28"}})
    return str(net)


def _lowest_free(session: object, net: str) -> str | None:
    held = set(
        session.execute(  # type: ignore[attr-defined]
            select(IPAllocation.ip_address).where(IPAllocation.network_id == net)
        ).scalars()
    )
    return next((ip for ip in POOL if ip not in held), None)


def test_a_bulk_create_takes_the_lowest_addresses_in_order(admin: Api) -> None:
    net = _network(admin)
    admin.ok(
        "POST", "/v2.0/ports", {"port": {"network_id": net, "fixed_ips": [{"ip_address": POOL[1]}]}}
    )
    body = admin.ok("POST", "/v2.0/ports", {"ports": [{"network_id": net}] * 5})
    got = [p["fixed_ips"][0]["ip_address"] for p in body["ports"]]
    assert got == [POOL[0], *POOL[2:6]]


# each example makes its own network and removes its ports: the fixtures are only the API
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=steps)
def test_one_transaction_allocates_as_the_table_says(
    script: list[tuple[object, ...]], admin: Api, db: Database
) -> None:
    net = _network(admin)
    ctx = Context.admin()
    live: list[str] = []
    try:
        with db.write() as session:
            for step in script:
                want = _lowest_free(session, net)
                if step[0] == "create":
                    if want is None:
                        continue
                    port = ports.create(session, ctx, PortCreate(network_id=net))
                    assert port["fixed_ips"][0]["ip_address"] == want
                    live.append(port["id"])
                elif step[0] == "create_at":
                    ip = POOL[int(step[1])]  # type: ignore[call-overload]
                    if _taken(session, net, ip):
                        continue
                    req = PortCreate(network_id=net, fixed_ips=[{"ip_address": ip}])
                    live.append(ports.create(session, ctx, req)["id"])
                elif live and step[0] == "delete":
                    ports.delete(session, ctx, live.pop(int(step[1]) % len(live)))  # type: ignore[call-overload]
                elif live and step[0] == "readdress":
                    ip = POOL[int(step[2])]  # type: ignore[call-overload]
                    if _taken(session, net, ip):
                        continue
                    req_u = PortUpdate(fixed_ips=[{"ip_address": ip}])
                    ports.update(session, ctx, live[int(step[1]) % len(live)], req_u)  # type: ignore[call-overload]
    finally:
        with db.write() as session:
            for port_id in live:
                ports.delete(session, ctx, port_id)


def _taken(session: object, net: str, ip: str) -> bool:
    return session.get(IPAllocation, (net, ip)) is not None  # type: ignore[attr-defined]


def test_an_address_freed_by_a_readdress_is_the_next_one_given(admin: Api, db: Database) -> None:
    net = _network(admin)
    ctx = Context.admin()
    with db.write() as session:
        first = ports.create(session, ctx, PortCreate(network_id=net))
        ports.create(session, ctx, PortCreate(network_id=net))
        ports.update(session, ctx, first["id"], PortUpdate(fixed_ips=[{"ip_address": POOL[7]}]))
        third = ports.create(session, ctx, PortCreate(network_id=net))
    assert first["fixed_ips"][0]["ip_address"] == POOL[0]
    assert third["fixed_ips"][0]["ip_address"] == POOL[0]
