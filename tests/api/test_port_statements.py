"""SQL statements a bulk port create costs per port (a count, not a time).

Why a count: the NB write of 10k ports is measured against OVN in bench/ (docs/performance.md,
"Port writes and IPAM"), and what made it slow each time was statements per port — a replace's
DELETE + flush for a port that had nothing, the subnet's allocations read again for every
address, a check SELECT for an address that was free by construction. A regression of any
of those shows here as a higher count, on any machine, at any load.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from conftest import Api
from netvirt.northbound.db import Database

PORTS = 40


def _count_statements(db: Database) -> list[str]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    event.listen(db.engine, "before_cursor_execute", record)
    return seen


def test_a_bulk_create_costs_a_bounded_number_of_statements_per_port(
    db: Database, alice: Api
) -> None:
    net = alice.ok("POST", "/v2.0/networks", {"network": {"name": "n"}})["network"]["id"]
    alice.ok(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": net, "cidr": "10.9.0.0/16", "ip_version": 4}},
    )
    alice.ok("POST", "/v2.0/ports", {"ports": [{"network_id": net}]})  # warm caches
    seen = _count_statements(db)
    body = alice.ok("POST", "/v2.0/ports", {"ports": [{"network_id": net}] * PORTS})
    ports = body["ports"]
    assert len(ports) == PORTS
    assert len({p["fixed_ips"][0]["ip_address"] for p in ports}) == PORTS  # all distinct
    per_port = len(seen) / PORTS
    # ~4 today (session 10): the MAC check and three INSERTs (port, address, group
    # binding), the request's own reads amortized; 7.9 at the start of session 10 (a
    # check SELECT for an address free by construction, the network's subnets and the
    # project's default group read per port)
    assert per_port < 5.0, (per_port, sorted(set(seen)))
    # the subnet's allocations are read once per request, not once per port
    assert seen.count("SELECT") < 3 * PORTS, seen.count("SELECT")
