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
they are few). The flows are kept per
datapath (:attr:`Compiled.chunks`), in canonical order, so the SB flow list is
their concatenation and ``dirty`` tells the southbound service which
datapaths' flows may differ from the previous generation's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from netvirt.compiler.compile import Chunks, build, join
from netvirt.compiler.nb import NBSnapshot, Obj
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


def compile_full(nb: NBSnapshot) -> Compiled:
    sb, chunks = build(nb, None)
    sb.flows = join(chunks)
    return Compiled(nb, sb, chunks, None)


def compile_incremental(
    prev: Compiled | None, nb: NBSnapshot, changed: dict[str, set[str]] | None = None
) -> Compiled:
    """``nb`` compiled, reusing ``prev``'s flows of the datapaths the change cannot affect.

    ``changed`` (kind → ids of changed objects) narrows the comparison of the two
    snapshots when the caller knows it; None compares every object."""
    if prev is None:
        return compile_full(nb)
    found = dirty_datapaths(prev, nb, changed)
    if found is None:
        return compile_full(nb)
    dirty, bindings_only = found
    sb, fresh = build(nb, dirty, prev.sb, dirty | bindings_only)
    chunks = {dp: flows for dp, flows in prev.chunks.items() if dp not in dirty}
    chunks.update(fresh)
    sb.flows = join(chunks)
    return Compiled(nb, sb, chunks, dirty)


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


# port fields no flow depends on: a port whose change is only these (an agent's status
# report, ACTIVE/DOWN; a new binding host) gets a new binding, its switch keeps its flows
BINDING_ONLY = frozenset(
    {"status", "revision_number", "updated_at", "binding:host_id", "binding:vif_type"}
)


def _binding_only(old: Obj, new: Obj) -> bool:
    keys = old.keys() | new.keys()
    return all(k in BINDING_ONLY or old.get(k) == new.get(k) for k in keys)


def dirty_datapaths(
    prev: Compiled, nb: NBSnapshot, changed: dict[str, set[str]] | None
) -> tuple[frozenset[int], frozenset[int]] | None:
    """(datapaths whose flows the change from ``prev.nb`` to ``nb`` may affect, switches
    whose port bindings alone changed); None when everything must be rebuilt (see the
    module docstring)."""
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
        before = {p["id"]: p for p in old.ports if p["id"] in port_ids}
        after = {p["id"]: p for p in nb.ports if p["id"] in port_ids}
        for pid in port_ids:
            o, n = before.get(pid), after.get(pid)
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
    for pb in old_sb.ports.values():
        if pb.type == "patch" and pb.peer is not None and pb.datapath not in switches:
            peer = old_sb.ports.get(pb.peer)
            if peer is not None and peer.datapath in switches:
                routers.add(pb.datapath)
    return frozenset(switches | routers)
