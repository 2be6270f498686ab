"""The compiler's input: a consistent snapshot of the NB desired state.

Taken in one read transaction through the same service functions the API
uses (as admin), so the compiler sees exactly the objects and field names a
Neutron client sees, at one generation. Builders only read this snapshot;
they never touch the database (functional core).

:func:`refresh` is the compiler service's way in: it reads again only the
objects the database's change log names as touched since the previous
snapshot (``northbound/db.py``) and says which they were, so the incremental
compiler compares those alone.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

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
    # compile-time only (never compared): the datapaths a scoped compile rebuilds (None:
    # all, see compiler/incremental.py) and lookups shared by the builders of one compile
    scope: frozenset[int] | None = field(default=None, compare=False, repr=False)
    _index: dict[object, Any] | None = field(default=None, compare=False, repr=False)
    # compile-time only: views the builders of one compile share that are not NB lookups
    # (they read the SB topology too), never carried to the next compile
    views: dict[object, Any] | None = field(default=None, compare=False, repr=False)

    # -- lookups builders need often ------------------------------------------
    @contextmanager
    def indexed(self, seed: dict[object, Any] | None = None) -> Iterator[dict[object, Any]]:
        """Share lookups between builders while compiling (the lists must not change
        meanwhile); outside, every lookup is computed afresh. ``seed``: lookups already
        known to be right for this snapshot (the incremental compiler's, carried over
        from the previous compile: ``incremental.carried``, ``patch_index``); yields
        the lookups, which the caller may keep for the next compile."""
        self._index = dict(seed or {})
        try:
            yield self._index
        finally:
            self._index = None

    def _cached(self, key: object, make: Callable[[], Any]) -> Any:
        if self._index is None:
            return make()
        if key not in self._index:
            self._index[key] = make()
        return self._index[key]

    def by_id(self, kind: str) -> dict[str, Obj]:
        items: list[Obj] = getattr(self, kind)
        out: dict[str, Obj] = self._cached(("by_id", kind), lambda: {o["id"]: o for o in items})
        return out

    def _grouped(self, kind: str, key: str) -> dict[str, list[Obj]]:
        def make() -> dict[str, list[Obj]]:
            out: dict[str, list[Obj]] = {}
            for obj in getattr(self, kind):
                out.setdefault(obj[key], []).append(obj)
            return out

        grouped: dict[str, list[Obj]] = self._cached(("group", kind, key), make)
        return grouped

    def subnets_of(self, network_id: str) -> list[Obj]:
        return list(self._grouped("subnets", "network_id").get(network_id, []))

    def ports_of(self, network_id: str) -> list[Obj]:
        """A network's ports, by id (whatever order the snapshot lists them in, so the
        incremental compiler can patch this lookup: ``incremental.patch_index``)."""
        grouped: dict[str, list[Obj]] = self._cached(PORTS_BY_NETWORK, self._ports_by_network)
        return list(grouped.get(network_id, []))

    def network_by_key(self) -> dict[int, Obj]:
        """Networks by datapath key (their VNI)."""
        by_key: dict[int, Obj] = self._cached(NETWORKS_BY_KEY, self._networks_by_key)
        return by_key

    def _networks_by_key(self) -> dict[int, Obj]:
        return {int(n["provider:segmentation_id"]): n for n in self.networks}

    def _ports_by_network(self) -> dict[str, list[Obj]]:
        out: dict[str, list[Obj]] = {}
        for port in self.ports:
            out.setdefault(str(port["network_id"]), []).append(port)
        for members in out.values():
            members.sort(key=_id)
        return out

    def router_ports(self, router_id: str) -> list[Obj]:
        owners = ("network:router_interface", "network:router_gateway")
        return [
            p
            for p in self._grouped("ports", "device_id").get(router_id, [])
            if p["device_owner"] in owners
        ]


# lookups the incremental compiler carries from one compile to the next (those over ports
# patched for the changed ports) instead of computing them again (O(ports) per compile)
PORTS_BY_ID = ("by_id", "ports")
PORTS_BY_NETWORK = ("ports_by_network",)
NETWORKS_BY_KEY = ("networks_by_key",)
PORTS_BY_DEVICE = ("group", "ports", "device_id")  # router_ports


def _members(session: Session) -> list[Obj]:
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
    return members


LOADERS: dict[str, Callable[[Session, Context], list[Obj]]] = {
    "networks": networks.list_all,
    "subnets": subnets.list_all,
    "ports": ports.list_all,
    "routers": routers.list_all,
    "floatingips": floatingips.list_all,
    "security_groups": security_groups.list_all,
    "qos_policies": qos.list_all,
    "loadbalancers": lbaas.list_all,
    "listeners": lbaas_listeners.list_all,
    "pools": lbaas_pools.list_all,
    "members": lambda session, _ctx: _members(session),
    "healthmonitors": lbaas_monitors.list_all,
}


def _read(session: Session, generation: int) -> NBSnapshot:
    ctx = Context.admin()
    nb = NBSnapshot(generation)
    for kind, read in LOADERS.items():
        setattr(nb, kind, read(session, ctx))
    return nb


def load(db: Database) -> NBSnapshot:
    """Read the whole NB state at one generation."""
    with db.read() as session:
        return _read(session, session.execute(select(Meta.generation)).scalar_one())


@dataclass
class Loaded:
    """A snapshot and what changed since the previous one: ``changed`` (kind → ids of
    objects added, removed or changed) or None when it was read whole."""

    nb: NBSnapshot
    seq: int | None  # the database change log position it reflects (None: unknown)
    changed: dict[str, set[str]] | None


# ports whose rows also appear in other objects (routers' gateways, floating IPs, VIPs):
# touching one reloads every other kind
SERVICE_OWNERS = ("network:", "Octavia")
MAX_PORTS = 2000  # beyond this many touched ports, reading everything is as cheap


def refresh(db: Database, old: Loaded | None) -> Loaded:
    """The NB now: only the objects the database's change log says were touched since
    ``old`` are read again (a port create reads one port, not ten thousand); the whole
    NB when the log cannot tell (first load, entries lost, writes by another process,
    PostgreSQL)."""
    with db.read_logged() as logged:
        if logged is None:
            return Loaded(load(db), None, None)
        session, generation, seq = logged
        entries = None
        if old is not None and old.seq is not None:
            entries = db.touched_since(old.seq, seq)
        last = max((t.generation for t in entries or ()), default=old.nb.generation if old else -1)
        if old is None or entries is None or last != generation:
            return Loaded(_read(session, generation), seq, None)
        touched: dict[str, set[str]] = {}
        unknown: set[str] = set()
        for entry in entries:
            for kind, ident in entry.rows:
                touched.setdefault(kind, set()).add(ident)
            # a bulk DELETE in a write that also touched rows of that kind deletes their
            # children (ports.py, security_groups.py): the ids are known after all
            unknown |= entry.unknown - {kind for kind, _ in entry.rows}
        nb, exact = _patch(session, old.nb, generation, touched, unknown)
        # reloaded kinds without the ids of what changed: the compiler compares them all
        return Loaded(nb, seq, touched if exact else None)


def _patch(
    session: Session,
    old: NBSnapshot,
    generation: int,
    touched: dict[str, set[str]],
    unknown: set[str],
) -> tuple[NBSnapshot, bool]:
    """``old`` with the touched objects read again; True when ``touched`` names every
    object that may have changed (False: whole kinds were read again)."""
    ctx = Context.admin()
    nb = replace(old, generation=generation, scope=None, _index=None, views=None)
    port_ids = sorted(touched.get("ports", ()))
    reload = set(touched) | unknown
    exact = not unknown
    if "ports" in unknown or len(port_ids) > MAX_PORTS:
        nb.ports = ports.list_all(session, ctx)
        reload.discard("ports")
    elif port_ids:
        fresh = ports.list_by_ids(session, port_ids)
        olds = _pick(old.ports, touched["ports"])
        if any(str(p["device_owner"]).startswith(SERVICE_OWNERS) for p in (*fresh, *olds)):
            reload |= set(LOADERS)
            exact = False
        nb.ports = _merge(old.ports, touched["ports"], fresh)
        reload.discard("ports")
    for kind in sorted(reload):
        setattr(nb, kind, LOADERS[kind](session, ctx))
    return nb, exact


def _pick(items: list[Obj], ids: set[str]) -> list[Obj]:
    """The objects of ``ids`` in ``items`` (sorted by id)."""
    out = []
    for ident in sorted(ids):
        at = bisect.bisect_left(items, ident, key=_id)
        if at < len(items) and _id(items[at]) == ident:
            out.append(items[at])
    return out


def _merge(items: list[Obj], ids: set[str], fresh: list[Obj]) -> list[Obj]:
    """``items`` (sorted by id) with the objects of ``ids`` replaced by ``fresh``: found by
    bisection, so a port create does not sort ten thousand ports again."""
    out = list(items)
    for ident in sorted(ids, reverse=True):
        at = bisect.bisect_left(out, ident, key=_id)
        if at < len(out) and _id(out[at]) == ident:
            del out[at]
    for obj in fresh:
        bisect.insort(out, obj, key=_id)
    return out


def _id(obj: Obj) -> str:
    return str(obj["id"])
