"""Logical flow builders: one module per concern, each ``build(nb, sb, sink)``.

Contract of a builder
---------------------
* input: the NB snapshot and the SB state after ``build_topology`` (datapaths,
  port bindings with their tunnel keys, flood groups); builders never change
  ``sb``, they only call ``sink.add``;
* every flow carries ``Provenance(builder=<module name>, nb_kind, nb_id)``,
  naming the NB object that caused it (a port, a security group rule, a
  listener, a subnet…); defaults name the network;
* a builder emits the priority-0 default of every stage it owns, so every
  stage of every datapath has a flow for every packet (the pipeline drops a
  packet that hits no flow, which would hide a missing default);
* output is a pure function of the snapshot: iteration is over sorted keys,
  never over set order, so two compiles are equal.

This module holds the small vocabulary the switch builders share: a per
network view (:class:`Switch` with its :class:`LPort` list), value and match
helpers that keep the printed text readable (``Value.text``), and the action
tail of every responder ("send it back where it came from").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from functools import lru_cache
from operator import attrgetter

from netvirt.compiler.expr.ast import Cmp, Value, conj
from netvirt.compiler.lflow import FlowSink, Provenance
from netvirt.compiler.nb import NBSnapshot, Obj
from netvirt.dataplane.actions import Move, Output, SetField
from netvirt.dataplane.fields import FLAG_LOOPBACK
from netvirt.southbound.model import Datapath, PortBinding, SBState

# -- values ------------------------------------------------------------------------------------


def mac_text(mac: int) -> str:
    raw = f"{mac:012x}"
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def mac_value(mac: int) -> Value:
    return Value(mac, None, mac_text(mac))


@lru_cache(maxsize=65536)
def ip_value(text: str) -> Value:
    """An address (exact) or a CIDR (masked) as a match value; host prefixes are exact."""
    net = ipaddress.ip_network(text, strict=False)
    if net.prefixlen == net.max_prefixlen:
        return Value(int(net.network_address), None, str(net.network_address))
    return Value(int(net.network_address), int(net.netmask), str(net))


def hex_mask(bit: int) -> Value:
    """A single bit of a register, spelled ``0x4/0x4``."""
    return Value(bit, bit, f"{bit:#x}/{bit:#x}")


def port_value(name: str, key: int) -> Value:
    """A logical port: the key for the datapath, the name (printed quoted) for people."""
    return Value(key, None, name)


def ips_cmp(symbol: str, addrs: Iterable[str]) -> Cmp:
    """``symbol == {a, b, …}`` with duplicates removed and a stable order."""
    ordered = sorted(set(addrs), key=_addr_sort_key)
    return Cmp(symbol, "==", tuple(ip_value(a) for a in ordered))


@lru_cache(maxsize=65536)
def _addr_sort_key(text: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(text, strict=False)
    return (net.version, int(net.network_address), net.prefixlen)


def macs_cmp(symbol: str, macs: Iterable[int]) -> Cmp:
    return Cmp(symbol, "==", tuple(mac_value(m) for m in sorted(set(macs))))


def reg0_bit(bit: int) -> Cmp:
    """``reg0 == bit/bit``: a REGBIT_* flag of :mod:`netvirt.compiler.regs` is set."""
    return Cmp("reg0", "==", (hex_mask(bit),))


def set_reg0_bit(bit: int) -> SetField:
    return SetField("reg0", bit, bit)


def link_local(mac: int) -> ipaddress.IPv6Address:
    """The EUI-64 IPv6 link-local address of a MAC (RFC 4291 appendix A)."""
    eui = ((mac >> 24) << 40) | (0xFFFE << 24) | (mac & 0xFFFFFF)
    eui ^= 0x02 << 56  # flip the universal/local bit
    return ipaddress.IPv6Address((0xFE80 << 112) | eui)


@lru_cache(maxsize=65536)
def ip_version(text: str) -> int:
    return ipaddress.ip_network(text, strict=False).version


# -- the switch view ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LPort:
    """An NB port together with its SB binding on a switch."""

    nb: Obj
    pb: PortBinding

    @property
    def name(self) -> str:
        return self.pb.name

    @property
    def id(self) -> str:
        return str(self.nb["id"])

    @property
    def mac(self) -> int:
        return self.pb.mac

    @property
    def secured(self) -> bool:
        """Port security applies: a VM port with ``port_security_enabled``."""
        return self.pb.type == "vif" and bool(self.nb.get("port_security_enabled", True))

    @property
    def fixed_ips(self) -> list[str]:
        return [str(f["ip_address"]) for f in self.nb.get("fixed_ips", [])]

    def fixed_of(self, version: int) -> list[str]:
        return [a for a in self.fixed_ips if ip_version(a) == version]

    @property
    def pairs(self) -> list[tuple[int, str]]:
        """Allowed address pairs as (MAC, address or CIDR); the MAC defaults to the port's."""
        out = []
        for pair in self.nb.get("allowed_address_pairs", []):
            mac = pair.get("mac_address") or None
            out.append((_mac_int(mac) if mac else self.mac, str(pair["ip_address"])))
        return out

    @property
    def macs(self) -> list[int]:
        """The port's MAC first, then pair MACs that differ, in a stable order."""
        extra = sorted({m for m, _ in self.pairs if m != self.mac})
        return [self.mac, *extra]

    def addresses_by_mac(self) -> dict[int, list[str]]:
        """Source addresses each MAC may use: fixed IPs with the port's MAC, pairs with theirs."""
        out: dict[int, list[str]] = {m: [] for m in self.macs}
        out[self.mac].extend(self.fixed_ips)
        for mac, addr in self.pairs:
            out[mac].append(addr)
        return out

    @property
    def all_addresses(self) -> list[str]:
        return self.fixed_ips + [a for _, a in self.pairs]

    @property
    def admin_up(self) -> bool:
        return bool(self.nb.get("admin_state_up", True))

    def inport(self) -> Cmp:
        return Cmp("inport", "==", (port_value(self.name, self.pb.key),))

    def outport(self) -> Cmp:
        return Cmp("outport", "==", (port_value(self.name, self.pb.key),))

    def set_outport(self) -> SetField:
        return SetField("outport", self.pb.key)


def _mac_int(mac: str) -> int:
    return int(mac.replace(":", "").replace("-", ""), 16)


def inport_in(ports: Iterable[LPort]) -> Cmp:
    return Cmp("inport", "==", tuple(port_value(p.name, p.pb.key) for p in ports))


def outport_in(ports: Iterable[LPort]) -> Cmp:
    return Cmp("outport", "==", tuple(port_value(p.name, p.pb.key) for p in ports))


@dataclass(frozen=True, slots=True)
class Switch:
    """One network's logical switch: its datapath, ports (sorted by name) and subnets."""

    net: Obj
    dp: Datapath
    ports: tuple[LPort, ...]
    subnets: tuple[Obj, ...]

    @property
    def key(self) -> int:
        return self.dp.key

    @property
    def id(self) -> str:
        return str(self.net["id"])

    @property
    def admin_up(self) -> bool:
        return bool(self.net.get("admin_state_up", True))

    def vifs(self) -> list[LPort]:
        return [p for p in self.ports if p.pb.type == "vif"]

    def secured(self) -> list[LPort]:
        return [p for p in self.ports if p.secured]

    def provenance(self, builder: str, note: str = "") -> Provenance:
        return Provenance(builder, "network", self.id, note)


def switches(nb: NBSnapshot, sb: SBState) -> list[Switch]:
    """Every network's switch, in datapath-key order (only those in ``nb.scope`` when a
    compile is scoped, see compiler/incremental.py); made once per compile
    (``nb.views``) for all builders."""
    views = nb.views
    if views is None:
        return list(_switches(nb, sb))
    key = ("switches", id(sb), nb.scope)
    made: list[Switch] | None = views.get(key)
    if made is None:
        made = views[key] = list(_switches(nb, sb))
    return made


def _switches(nb: NBSnapshot, sb: SBState) -> Iterator[Switch]:
    by_key = nb.network_by_key()
    scope = nb.scope
    keys = sorted(by_key) if scope is None else sorted(k for k in scope if k in by_key)
    for key in keys:
        net = by_key[key]
        bound = sorted(
            (
                sb.ports[p["id"]]
                for p in nb.ports_of(net["id"])
                if p["id"] in sb.ports and sb.ports[p["id"]].datapath == key
            ),
            key=lambda pb: pb.name,
        )
        by_port = nb.by_id("ports")
        ports = tuple(LPort(by_port[pb.nb_id], pb) for pb in bound)
        own = tuple(sorted(nb.subnets_of(net["id"]), key=lambda s: str(s["id"])))
        yield Switch(net, sb.datapaths[key], ports, own)


def per_port(
    sink: FlowSink,
    builder: str,
    switch: Switch,
    port: LPort,
    inputs: tuple[object, ...],
    emit: Callable[[], None],
) -> None:
    """Emit one port's flows through the sink's per-port memo (``FlowSink.per_port``):
    ``inputs`` must hold everything of the switch ``emit`` reads (the port's NB object
    and binding are compared anyway), or a stale flow would survive a change."""
    binding = _flow_fields(port.pb)
    sink.per_port((builder, port.name), (switch.key, port.nb, binding), inputs, emit)


# what a port binding holds that flows may read: all but its state on a host (compared
# field by field: a port's binding is made again when an agent reports it up)
BINDING_STATE = frozenset({"up", "requested_chassis"})
_flow_fields = attrgetter(*(f.name for f in fields(PortBinding) if f.name not in BINDING_STATE))


def port_provenance(builder: str, port: LPort, note: str = "") -> Provenance:
    return Provenance(builder, "port", port.id, note)


# -- shared flows and action tails -------------------------------------------------------------


def reply_to_sender() -> tuple[object, ...]:
    """``outport = inport; flags.loopback = 1; output;``: answer on the port it came in."""
    return (
        Move("outport", "inport"),
        SetField("flags", FLAG_LOOPBACK, FLAG_LOOPBACK),
        Output(),
    )


def add_defaults(
    sink: FlowSink,
    switch: Switch,
    builder: str,
    defaults: dict[str, tuple[object, ...]],
) -> None:
    """The priority-0 flow of each stage a builder owns (``match 1``)."""
    for stage_name, actions in defaults.items():
        sink.add(
            switch.key,
            stage_name,
            0,
            conj(),
            actions,
            switch.provenance(builder, "default"),
        )
