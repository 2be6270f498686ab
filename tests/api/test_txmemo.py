"""Reads remembered within one write transaction (northbound/txmemo.py) are dropped by
any write that could change them, so a transaction never sees less than it wrote."""

from __future__ import annotations

from sqlalchemy import delete

from conftest import Api
from netvirt.northbound.db import Database
from netvirt.northbound.ports import _network_subnets
from netvirt.northbound.schema import Subnet


def _network_with_subnet(alice: Api) -> str:
    net: str = alice.ok("POST", "/v2.0/networks", {"network": {"name": "n"}})["network"]["id"]
    body = {"subnet": {"network_id": net, "cidr": "10.8.0.0/24", "ip_version": 4}}
    alice.ok("POST", "/v2.0/subnets", body)
    return net


def test_a_subnet_written_in_the_transaction_is_seen_by_the_next_read(
    db: Database, alice: Api
) -> None:
    net = _network_with_subnet(alice)
    with db.write() as session:
        first = _network_subnets(session, net)
        assert [s.cidr for s in first] == ["10.8.0.0/24"]
        assert _network_subnets(session, net) is first  # remembered: no second read
        session.add(
            Subnet(
                project_id=first[0].project_id,
                name="",
                network_id=net,
                ip_version=4,
                cidr="10.8.1.0/24",
                gateway_ip="10.8.1.1",
            )
        )
        session.flush()
        assert sorted(s.cidr for s in _network_subnets(session, net)) == [
            "10.8.0.0/24",
            "10.8.1.0/24",
        ]
        first[0].gateway_ip = "10.8.0.254"  # an update of one: dropped too
        session.flush()
        assert _network_subnets(session, net) is not first
        session.rollback()


def test_a_bulk_statement_drops_every_memo(db: Database, alice: Api) -> None:
    net = _network_with_subnet(alice)
    with db.write() as session:
        assert len(_network_subnets(session, net)) == 1
        session.execute(delete(Subnet).where(Subnet.network_id == net))
        assert _network_subnets(session, net) == []
        session.rollback()
