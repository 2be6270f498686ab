"""IPAM against a reference model, on both backends (Hypothesis).

The model is five lines: a pool of addresses, a dict of port -> address, and
"a port without fixed_ips gets the lowest free address". Random sequences of
creates (implicit, or with an explicit address in or out of the pool) and deletes must leave the
store agreeing with the model after every step, and every refusal must carry
Neutron's error type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:  # only the root conftest's class; importing it at run time is
    # ambiguous when several test folders have a conftest module of that name
    from conftest import Api


CIDR = "10.9.0.0/28"  # gateway .1, broadcast .15
# A small pool so runs reach exhaustion; explicit addresses may lie outside it (as in Neutron).
POOL = [f"10.9.0.{i}" for i in range(2, 8)]
POOLS = [{"start": POOL[0], "end": POOL[-1]}]

Op = tuple[str, int]
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("auto"), st.just(0)),
        st.tuples(st.just("fixed"), st.integers(0, 15)),
        st.tuples(st.just("delete"), st.integers(0, 63)),
    ),
    min_size=1,
    max_size=14,
)


def expected_refusal(host: int, model: dict[str, str]) -> tuple[int, str] | None:
    """What the store must answer to a request for 10.9.0.<host>, or None if it must accept."""
    if host in (0, 15):
        return 400, "InvalidInput"
    if host == 1 or f"10.9.0.{host}" in model.values():
        return 409, "IpAddressAlreadyAllocated"
    return None


def step(api: Api, net_id: str, model: dict[str, str], op: Op) -> None:
    kind, arg = op
    if kind == "delete":
        if model:
            victim = sorted(model)[arg % len(model)]
            api.ok("DELETE", f"/v2.0/ports/{victim}")
            del model[victim]
        return
    body: dict[str, Any] = {"network_id": net_id}
    if kind == "auto":
        want = next((ip for ip in POOL if ip not in model.values()), None)
        refusal = None if want is not None else (409, "IpAddressGenerationFailure")
    else:
        want = f"10.9.0.{arg}"
        body["fixed_ips"] = [{"ip_address": want}]
        refusal = expected_refusal(arg, model)
    status, data = api.post("/v2.0/ports", {"port": body})
    if refusal is not None:
        assert (status, data["NeutronError"]["type"]) == refusal, op
        return
    assert status == 201, (op, data)
    assert [f["ip_address"] for f in data["port"]["fixed_ips"]] == [want]
    model[data["port"]["id"]] = str(want)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
# every branch at least once: exhaustion, reuse of a freed address, gateway,
# network address, an address outside the pool, and that address again
@example(
    ops=[("auto", 0)] * 7
    + [("delete", 3), ("auto", 0), ("fixed", 1), ("fixed", 0), ("fixed", 12), ("fixed", 12)]
)
def test_ipam_agrees_with_lowest_free_model(admin: Api, ops: list[Op]) -> None:
    net = admin.ok("POST", "/v2.0/networks", {"network": {}})["network"]
    subnet = {"network_id": net["id"], "cidr": CIDR, "allocation_pools": POOLS}
    admin.ok("POST", "/v2.0/subnets", {"subnet": subnet})
    model: dict[str, str] = {}
    for op in ops:
        step(admin, net["id"], model, op)
    status, body = admin.get("/v2.0/ports", network_id=net["id"])
    assert status == 200
    stored = {p["id"]: p["fixed_ips"][0]["ip_address"] for p in body["ports"]}
    assert stored == model
