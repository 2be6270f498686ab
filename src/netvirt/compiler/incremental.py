"""Incremental compilation: rebuild only the datapaths an NB change can affect.

Theory of operation
-------------------
A compile is a pure function of the NB snapshot, and every builder emits a
datapath's flows while visiting that datapath (``compile.build``). So when an
NB change can only affect the flows of some datapaths, building those
datapaths alone and keeping the other datapaths' flows from the previous
compile gives exactly the full compile's result (``tests/compiler`` checks
incremental == full over random change sequences).

What a change can affect (:func:`dirty_datapaths`), conservatively:

* a network or one of its subnets → its switch;
* a port (created, deleted, changed) → its network's switch; a change of its
  status or binding host alone changes its binding, not the switch's flows; when its
  addresses or groups changed, every switch with a port in a security group
  whose rules name one of the port's groups as ``remote_group_id`` (the
  remote-group expansion lists every member address);
* a security group or its rules → every switch with a port in the group;
* routers follow their networks: a router whose interface is on a rebuilt
  switch is rebuilt too (its ARP resolution lists the ports there);
* anything else — routers, floating IPs, QoS policies, load balancers and
  their parts, and ports owned by a router, a floating IP or a load balancer —
  rebuilds everything (rare changes; their dependencies cross datapaths).

The topology follows the same rule: bindings and flood groups of switches
outside the rebuilt set are the previous compile's (routers are recomputed,
they are few). The flows are kept per datapath (:attr:`Compiled.chunks`), in
canonical order; the SB state holds them as such chunks (``SBState.set_chunks``:
its flow list is their concatenation, joined only when read whole), and ``dirty``
tells the southbound service which datapaths' flows may differ from the previous
generation's. The builders' NB lookups are carried from compile to compile: those
over a kind no write touched as they were (:func:`carried`), those over ports
patched for the changed ports (:func:`patch_index`).

Within a rebuilt switch most ports did not change (a bulk create adds ports to a
switch that has hundreds): each per-port builder (port security, ACL port flows,
ARP/ND, DHCP, L2 lookup) emits a port's flows through ``FlowSink.per_port``, which
reuses the previous compile's flows of that port (:attr:`Compiled.memo`, with their
canonical sort keys) when the port's NB object, its binding and the switch inputs the
builder names are equal — compared by identity first, as ``nb.refresh`` shares
untouched objects and never changes an object it shared. A full compile uses the memo
too; ``tests/compiler/test_port_memo.py`` checks a hit never differs from a fresh build.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from netvirt.compiler.compile import Chunks, build
from netvirt.compiler.lflow import PortMemo, same_flows_port
from netvirt.compiler.nb import (
    NETWORKS_BY_KEY,
    PORTS_BY_DEVICE,
    PORTS_BY_ID,
    PORTS_BY_NETWORK,
    NBSnapshot,
    Obj,
)
from netvirt.compiler.topology import ROUTER_OWNERS, router_port_name
from netvirt.southbound.model import SBState

# a change to any of these rebuilds everything
FULL_KINDS = (
    "routers",
    "floatingips",
    "qos_policies",
    "loadbalancers",
    "listeners",
    "pools",
    "members",
    "healthmonitors",
)
SERVICE_OWNERS = ("network:", "Octavia")  # router, floating IP, gateway, VIP ports
KINDS = ("networks", "subnets", "ports", "security_groups", *FULL_KINDS)


@dataclass
class Compiled:
    """One compile's output and what the next incremental compile starts from."""

    nb: NBSnapshot
    sb: SBState
    chunks: Chunks
    dirty: frozenset[int] | None  # datapaths rebuilt since the previous compile (None: all)
    # the NB lookups this compile used (NBSnapshot.indexed), carried over or patched by
    # the next compile instead of walking every port again
    index: dict[object, Any] = field(default_factory=dict, repr=False, compare=False)
    # names of the port bindings that may differ from the previous compile's (None: any)
    ports_dirty: frozenset[str] | None = None
    # every port's flows of each per-port builder, with what they were built from
    # (``FlowSink.per_port``): the next compile reuses those of unchanged ports
    memo: PortMemo = field(default_factory=dict, repr=False, compare=False)
    reused: tuple[int, int] = (0, 0)  # per-port emissions from the memo, all of them


def compile_full(nb: NBSnapshot, memo: PortMemo | None = None) -> Compiled:
    """Every datapath built again (``memo``: per-port flows a previous compile left)."""
    index: dict[object, Any] = {}
    kept: PortMemo = {}
    reused = [0, 0]
    sb, chunks = build(nb, None, keep=index, memo=memo, memo_out=kept, reused=reused)
    sb.set_chunks(chunks)
    return Compiled(nb, sb, chunks, None, index, memo=kept, reused=(reused[0], reused[1]))


def compile_incremental(
    prev: Compiled | None, nb: NBSnapshot, changed: dict[str, set[str]] | None = None
) -> Compiled:
    """``nb`` compiled, reusing ``prev``'s flows of the datapaths the change cannot affect.

    ``changed`` (kind → ids of changed objects) narrows the comparison of the two
    snapshots when the caller knows it; None compares every object."""
    if prev is None:
        return compile_full(nb)
    if changed is None:
        changed = changed_objects(prev.nb, nb)
    ports = _changed_ports(prev, nb, changed.get("ports", set()))
    found = dirty_datapaths(prev, nb, changed, ports)
    if found is None:
        return compile_full(nb, prev.memo)
    dirty, bindings_only = found
    seed = patch_index(prev.index, ports) | carried(prev, nb)
    index: dict[object, Any] = {}
    scope = dirty | bindings_only
    drop = rebuilt_bindings(prev, scope)
    kept: PortMemo = {}
    reused = [0, 0]
    sb, fresh = build(
        nb,
        dirty,
        prev.sb,
        scope,
        seed=seed,
        keep=index,
        drop=drop,
        memo=prev.memo,
        memo_out=kept,
        reused=reused,
    )
    chunks = {dp: flows for dp, flows in prev.chunks.items() if dp not in dirty}
    chunks.update(fresh)
    sb.set_chunks(chunks)  # the flow list is joined only if someone reads it whole
    out = Compiled(nb, sb, chunks, dirty, index, memo=kept, reused=(reused[0], reused[1]))
    built = rebuilt_bindings(out, scope)
    if drop is not None and built is not None:
        out.ports_dirty = frozenset(drop | built)  # every other binding is prev's own
    return out


# port id -> (before, after); None where the port does not exist
PortChanges = dict[str, tuple[Obj | None, Obj | None]]


def _changed_ports(prev: Compiled, nb: NBSnapshot, ids: set[str]) -> PortChanges:
    """The old and new versions of the changed ports: the old ones from the previous
    compile's lookup when it has one (no walk over every old port)."""
    if not ids:
        return {}
    old_by_id: dict[str, Obj] | None = prev.index.get(PORTS_BY_ID)
    if old_by_id is None:
        old_by_id = {str(p["id"]): p for p in prev.nb.ports if p["id"] in ids}
    after = _find_ports(nb.ports, ids)
    return {i: (old_by_id.get(i), after.get(i)) for i in ids}


def _find_ports(ports: list[Obj], ids: set[str]) -> dict[str, Obj]:
    """The ports of ``ids`` in ``ports``: by bisection, as the store lists them by id; a
    walk over the list only for ids not found that way (deleted ports, or a snapshot
    not sorted by id)."""
    found: dict[str, Obj] = {}
    for ident in ids:
        at = bisect.bisect_left(ports, ident, key=_port_id)
        if at < len(ports) and _port_id(ports[at]) == ident:
            found[ident] = ports[at]
    if len(found) < len(ids):
        missing = ids - found.keys()
        found.update((str(p["id"]), p) for p in ports if p["id"] in missing)
    return found


def _port_id(port: Obj) -> str:
    return str(port["id"])


def patch_index(index: dict[object, Any], ports: PortChanges) -> dict[object, Any]:
    """The previous compile's port lookups (by id, by network) with the changed ports replaced
    (new containers: the previous snapshot's stay as they were)."""
    out: dict[object, Any] = {}
    by_id: dict[str, Obj] | None = index.get(PORTS_BY_ID)
    if by_id is not None:
        by_id = dict(by_id)
        for pid, (_, new) in ports.items():
            if new is None:
                by_id.pop(pid, None)
            else:
                by_id[pid] = new
        out[PORTS_BY_ID] = by_id
    grouped: dict[str, list[Obj]] | None = index.get(PORTS_BY_NETWORK)
    if grouped is not None:
        grouped = dict(grouped)
        for pid, (old, new) in ports.items():
            for net in {str(p["network_id"]) for p in (old, new) if p is not None}:
                members = [p for p in grouped.get(net, ()) if p["id"] != pid]
                if new is not None and str(new["network_id"]) == net:
                    members = _in_order(members, new)
                if members:
                    grouped[net] = members
                else:
                    grouped.pop(net, None)
        out[PORTS_BY_NETWORK] = grouped
    return out


def rebuilt_bindings(prev: Compiled, scope: frozenset[int]) -> set[str] | None:
    """The names of ``prev``'s bindings that a compile rebuilding the switches of
    ``scope`` builds again: the ports of those networks and every router's ports (None
    when the previous compile's lookups cannot tell)."""
    by_net: dict[str, list[Obj]] | None = prev.index.get(PORTS_BY_NETWORK)
    by_device: dict[str, list[Obj]] | None = prev.index.get(PORTS_BY_DEVICE)
    if by_net is None or (prev.nb.routers and by_device is None):
        return None
    networks: dict[int, Obj] = prev.index.get(NETWORKS_BY_KEY) or {
        int(n["provider:segmentation_id"]): n for n in prev.nb.networks
    }
    out: set[str] = set()
    for key in scope:
        net = networks.get(key)
        if net is not None:
            out.update(str(p["id"]) for p in by_net.get(str(net["id"]), ()))
    for router in prev.nb.routers:
        assert by_device is not None
        for port in by_device.get(str(router["id"]), ()):
            if port["device_owner"] in ROUTER_OWNERS:
                out.add(router_port_name(str(port["id"])))
    return out


def carried(prev: Compiled, nb: NBSnapshot) -> dict[object, Any]:
    """The previous compile's lookups over kinds whose list is the very same object in
    ``nb`` (``nb.refresh`` shares the lists of kinds no write touched; nothing mutates
    a snapshot's lists): networks by key, subnets and QoS policies by id..."""
    out: dict[object, Any] = {}
    for key, value in prev.index.items():
        kind = lookup_kind(key)
        if kind is not None and kind != "ports" and getattr(nb, kind) is getattr(prev.nb, kind):
            out[key] = value
    return out


def lookup_kind(key: object) -> str | None:
    """The NB kind a lookup of ``NBSnapshot``'s cache is computed from (None: unknown)."""
    if isinstance(key, tuple) and len(key) >= 2 and key[0] in ("by_id", "group"):
        return str(key[1])
    if key == NETWORKS_BY_KEY:
        return "networks"
    return None


def _in_order(members: list[Obj], port: Obj) -> list[Obj]:
    """``members`` with ``port`` added in id order (``NBSnapshot.ports_of``'s order)."""
    out = list(members)
    bisect.insort(out, port, key=lambda p: str(p["id"]))
    return out


# -- what a change affects ---------------------------------------------------------------------


def changed_objects(
    old: NBSnapshot, new: NBSnapshot, kinds: Iterable[str] = KINDS
) -> dict[str, set[str]]:
    """kind → ids of objects added, removed or changed between two snapshots."""
    out: dict[str, set[str]] = {}
    for kind in kinds:
        before = {str(o["id"]): o for o in getattr(old, kind)}
        after = {str(o["id"]): o for o in getattr(new, kind)}
        ids = {
            i
            for i in before.keys() | after.keys()
            if before.get(i) is not after.get(i) and before.get(i) != after.get(i)
        }
        if ids:
            out[kind] = ids
    return out


def _membership(port: Obj | None) -> tuple[object, ...]:
    """What a port contributes to remote-group expansions."""
    if port is None:
        return ()
    return (
        tuple(f["ip_address"] for f in port.get("fixed_ips", [])),
        tuple(p["ip_address"] for p in port.get("allowed_address_pairs", [])),
        tuple(port.get("security_groups", [])),
    )


def _binding_only(old: Obj, new: Obj) -> bool:
    return same_flows_port(old, new)


def dirty_datapaths(
    prev: Compiled,
    nb: NBSnapshot,
    changed: dict[str, set[str]] | None,
    ports: PortChanges | None = None,
) -> tuple[frozenset[int], frozenset[int]] | None:
    """(datapaths whose flows the change from ``prev.nb`` to ``nb`` may affect, switches
    whose port bindings alone changed); None when everything must be rebuilt (see the
    module docstring). ``ports``: the changed ports' versions, if known."""
    old = prev.nb
    if changed is None:
        changed = changed_objects(old, nb)
    if any(changed.get(kind) for kind in FULL_KINDS):
        return None
    nets: set[str] = set(changed.get("networks", ()))
    bindings: set[str] = set()  # networks where only bindings changed
    for kind in ("subnets",):
        ids = changed.get(kind, set())
        for snap in (old, nb):
            nets |= {str(s["network_id"]) for s in snap.subnets if s["id"] in ids}
    groups: set[str] = set(changed.get("security_groups", ()))
    members: set[str] = set()  # groups whose member addresses changed
    port_ids = changed.get("ports", set())
    if port_ids:
        if ports is None:
            ports = _changed_ports(prev, nb, port_ids)
        for pid in port_ids:
            o, n = ports[pid]
            if o == n:
                continue
            if o is not None and n is not None and _binding_only(o, n):
                bindings.add(str(n["network_id"]))
                continue
            for port in (o, n):
                if port is None:
                    continue
                if str(port.get("device_owner", "")).startswith(SERVICE_OWNERS):
                    return None
                nets.add(str(port["network_id"]))
            if _membership(o) != _membership(n):
                members |= {
                    *(o or {}).get("security_groups", []),
                    *(n or {}).get("security_groups", []),
                }
    if members:
        for snap in (old, nb):
            for group in snap.security_groups:
                rules = group.get("security_group_rules", [])
                if any(r.get("remote_group_id") in members for r in rules):
                    groups.add(str(group["id"]))
    if groups:
        for snap in (old, nb):
            for port in snap.ports:
                if groups.intersection(port.get("security_groups", ())):
                    nets.add(str(port["network_id"]))
    flows = _with_routers(prev.sb, nets, old, nb)
    return flows, _with_routers(prev.sb, bindings, old, nb) - flows


def _with_routers(
    old_sb: SBState, nets: set[str], old: NBSnapshot, nb: NBSnapshot
) -> frozenset[int]:
    """The switches of ``nets`` (in either snapshot) and the routers attached to them."""
    switches: set[int] = set()
    for snap in (old, nb):
        for net in snap.networks:
            if net["id"] in nets:
                switches.add(int(net["provider:segmentation_id"]))
    routers: set[int] = set()
    if not old.routers and not nb.routers:
        return frozenset(switches)  # no router: no walk over the ports for patch ports
    for pb in old_sb.ports.values():
        if pb.type == "patch" and pb.peer is not None and pb.datapath not in switches:
            peer = old_sb.ports.get(pb.peer)
            if peer is not None and peer.datapath in switches:
                routers.add(pb.datapath)
    return frozenset(switches | routers)
