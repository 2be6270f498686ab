"""NB lookups the trace endpoint needs: which port to trace from, and readable names."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from netvirt.northbound.context import Context
from netvirt.northbound.errors import Conflict, not_found
from netvirt.northbound.schema import Network, Port, Router


def resolve_port(session: Session, ctx: Context, ref: str) -> str:
    """A port the caller owns, by id, unique id prefix or unique name (404 otherwise)."""
    row = session.get(Port, ref)
    if row is not None and ctx.owns(row.project_id):
        return row.id
    stmt = select(Port).where((Port.name == ref) | Port.id.startswith(ref))
    if not ctx.is_admin:
        stmt = stmt.where(Port.project_id == ctx.project_id)
    hits = list(session.execute(stmt.limit(3)).scalars())
    if not hits:
        raise not_found("port", ref)
    if len(hits) > 1:
        raise Conflict(f"Port reference {ref!r} is ambiguous.", type="AmbiguousPort")
    return hits[0].id


def display_names(session: Session) -> dict[str, str]:
    """Logical port and datapath names → what a person calls them."""
    names: dict[str, str] = {}
    routers = {r.id: r.name or r.id[:8] for r in session.execute(select(Router)).scalars()}
    nets = {n.id: n.name or n.id[:8] for n in session.execute(select(Network)).scalars()}
    for port in session.execute(select(Port)).scalars():
        label = port.name or port.id[:8]
        if port.device_owner.startswith("network:router") and port.device_id in routers:
            names[port.id] = f"{nets.get(port.network_id, '?')}-to-{routers[port.device_id]}"
            names[f"lrp-{port.id}"] = (
                f"{routers[port.device_id]}-to-{nets.get(port.network_id, '?')}"
            )
        else:
            names[port.id] = label
    return names
