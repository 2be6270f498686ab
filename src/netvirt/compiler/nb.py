"""The compiler's input: a consistent snapshot of the NB desired state.

Taken in one read transaction through the same service functions the API
uses (as admin), so the compiler sees exactly the objects and field names a
Neutron client sees, at one generation. Builders only read this snapshot;
they never touch the database (functional core).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from netvirt.northbound import (
    floatingips,
    lbaas,
    lbaas_listeners,
    lbaas_monitors,
    lbaas_pools,
    networks,
    ports,
    qos,
    routers,
    security_groups,
    subnets,
)
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database
from netvirt.northbound.schema import Member, Meta

Obj = dict[str, Any]


@dataclass
class NBSnapshot:
    generation: int = 0
    networks: list[Obj] = field(default_factory=list)
    subnets: list[Obj] = field(default_factory=list)
    ports: list[Obj] = field(default_factory=list)
    routers: list[Obj] = field(default_factory=list)
    floatingips: list[Obj] = field(default_factory=list)
    security_groups: list[Obj] = field(default_factory=list)  # with "security_group_rules"
    qos_policies: list[Obj] = field(default_factory=list)  # with "rules"
    loadbalancers: list[Obj] = field(default_factory=list)
    listeners: list[Obj] = field(default_factory=list)
    pools: list[Obj] = field(default_factory=list)
    members: list[Obj] = field(default_factory=list)  # with "pool_id"
    healthmonitors: list[Obj] = field(default_factory=list)

    # -- lookups builders need often ------------------------------------------
    def by_id(self, kind: str) -> dict[str, Obj]:
        items: list[Obj] = getattr(self, kind)
        return {o["id"]: o for o in items}

    def subnets_of(self, network_id: str) -> list[Obj]:
        return [s for s in self.subnets if s["network_id"] == network_id]

    def ports_of(self, network_id: str) -> list[Obj]:
        return [p for p in self.ports if p["network_id"] == network_id]

    def router_ports(self, router_id: str) -> list[Obj]:
        owners = ("network:router_interface", "network:router_gateway")
        return [
            p for p in self.ports if p["device_id"] == router_id and p["device_owner"] in owners
        ]


def load(db: Database) -> NBSnapshot:
    """Read the whole NB state at one generation."""
    ctx = Context.admin()
    with db.read() as session:
        members = []
        for member in session.execute(select(Member).order_by(Member.id)).scalars():
            members.append(
                {
                    "id": member.id,
                    "pool_id": member.pool_id,
                    "address": member.address,
                    "protocol_port": member.protocol_port,
                    "subnet_id": member.subnet_id,
                    "weight": member.weight,
                    "admin_state_up": member.admin_state_up,
                    "backup": member.backup,
                    "operating_status": member.operating_status,
                    "monitor_address": member.monitor_address,
                    "monitor_port": member.monitor_port,
                }
            )
        return NBSnapshot(
            generation=session.execute(select(Meta.generation)).scalar_one(),
            networks=networks.list_all(session, ctx),
            subnets=subnets.list_all(session, ctx),
            ports=ports.list_all(session, ctx),
            routers=routers.list_all(session, ctx),
            floatingips=floatingips.list_all(session, ctx),
            security_groups=security_groups.list_all(session, ctx),
            qos_policies=qos.list_all(session, ctx),
            loadbalancers=lbaas.list_all(session, ctx),
            listeners=lbaas_listeners.list_all(session, ctx),
            pools=lbaas_pools.list_all(session, ctx),
            members=members,
            healthmonitors=lbaas_monitors.list_all(session, ctx),
        )
