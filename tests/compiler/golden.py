"""Normalized golden dumps of logical flows.

``dump(sb, nb, datapath)`` prints one line per flow of a datapath:

    stage priority match => actions [provenance]

in pipeline order, then by descending priority and text, with every NB uuid
replaced by a readable name (ports, networks, subnets, groups, rules, routers,
LB objects by name; ``lrp-<port>`` keeps its prefix) and, optionally, port
MACs replaced by ``<port-name>`` tokens for snapshots whose MACs are random
(built through the API). Table numbers never
appear: stages are named.

``check_golden(name, text)`` compares with ``goldens/<name>.txt``; with
``NETVIRT_UPDATE_GOLDENS=1`` it (re)writes the file instead and passes.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from netvirt.compiler.build import link_local
from netvirt.compiler.expr.printer import format_actions, format_match
from netvirt.compiler.lflow import LogicalFlow
from netvirt.compiler.nb import NBSnapshot, Obj
from netvirt.southbound.model import SBState

GOLDENS = Path(__file__).parent / "goldens"
PORT_SET = re.compile(r'\{("[^"]*"(?:, "[^"]*")*)\}')
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def rule_name(group: Obj, rule: Obj, groups: dict[str, Obj]) -> str:
    """A rule described by its content (rules have no name and ids are random)."""
    ports = ""
    if rule.get("port_range_min") is not None:
        ports = f":{rule['port_range_min']}-{rule.get('port_range_max')}"
    remote = rule.get("remote_ip_prefix") or ""
    if rule.get("remote_group_id"):
        remote = "sg:" + groups.get(rule["remote_group_id"], {}).get("name", "?")
    proto = rule.get("protocol") or "any"
    return f"{group['name']}/{rule['direction']}/{rule['ethertype']}/{proto}{ports}/{remote}"


def _unnamed(kind: str, obj: Obj) -> str:
    """Service objects are often nameless: describe them by owner and address."""
    if kind == "ports":
        owner = str(obj.get("device_owner") or "port").split(":")[-1]
        addresses = [f["ip_address"] for f in obj.get("fixed_ips", [])]
        return f"{owner}@{addresses[0]}" if addresses else owner
    return str(obj.get("floating_ip_address") or kind)


def names(nb: NBSnapshot) -> dict[str, str]:
    """NB uuid → stable readable name."""
    out: dict[str, str] = {}
    kinds = ("networks", "subnets", "ports", "routers", "qos_policies", "loadbalancers")
    for kind in (*kinds, "listeners", "pools", "security_groups", "floatingips"):
        for obj in getattr(nb, kind):
            out[obj["id"]] = obj.get("name") or _unnamed(kind, obj)
    groups = {g["id"]: g for g in nb.security_groups}
    for group in nb.security_groups:
        for rule in group.get("security_group_rules", []):
            out[rule["id"]] = rule_name(group, rule, groups)
    for member in nb.members:
        out[member["id"]] = f"member:{member['address']}:{member['protocol_port']}"
    # names may embed other objects' uuids (Octavia's "octavia-lb-<id>" VIP ports)
    return {k: UUID.sub(lambda m: out.get(m.group(0), "<uuid?>"), v) for k, v in out.items()}


def _port_namer(sb: SBState, datapath: int) -> dict[int, str]:
    keys = {pb.key: pb.name for pb in sb.ports.values() if pb.datapath == datapath}
    keys |= {g.key: g.name for g in sb.groups.values() if g.datapath == datapath}
    return keys


def format_flow(flow: LogicalFlow, ports: dict[int, str]) -> str:
    actions = format_actions(flow.actions, lambda key: ports.get(key, f"<key {key}>"))
    match = format_match(flow.match)
    return f"{flow.stage.name} {flow.priority} {match} => {actions} [{flow.provenance}]"


def normalize(text: str, mapping: dict[str, str]) -> str:
    """Uuids → names, then port sets sorted by name (their order is the uuids')."""
    named = UUID.sub(lambda m: mapping.get(m.group(0), "<uuid?>"), text)
    return PORT_SET.sub(lambda m: "{" + ", ".join(sorted(m.group(1).split(", "))) + "}", named)


def _mac_tokens(nb: NBSnapshot, mapping: dict[str, str]) -> dict[str, str]:
    """Port MAC (and its EUI-64 link-local address) → ``<port-name>`` / ``<port-name:lla>``."""
    out = {}
    for port in nb.ports:
        name = mapping.get(port["id"], port["id"])
        mac = int(port["mac_address"].replace(":", ""), 16)
        out[port["mac_address"]] = f"<{name}>"
        out[str(link_local(mac))] = f"<{name}:lla>"
    return out


def dump(
    sb: SBState,
    nb: NBSnapshot,
    datapath: int,
    *,
    stages: Iterable[str] | None = None,
    hide_macs: bool = False,
) -> str:
    """Sorted, normalized lines of one datapath's flows (optionally only some stages)."""
    wanted = set(stages) if stages is not None else None
    ports = _port_namer(sb, datapath)
    mapping = names(nb)
    tokens = _mac_tokens(nb, mapping) if hide_macs else {}
    pattern = re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))
    lines = []
    for flow in sb.flows:
        if flow.datapath != datapath or (wanted is not None and flow.stage.name not in wanted):
            continue
        line = normalize(format_flow(flow, ports), mapping)
        if tokens:
            line = pattern.sub(lambda m: tokens[m.group(0)], line)
            line = normalize(line, {})
        lines.append((flow.stage.table, -flow.priority, line))
    return "".join(line + "\n" for *_, line in sorted(lines))


def check_golden(name: str, text: str) -> None:
    path = GOLDENS / f"{name}.txt"
    if os.environ.get("NETVIRT_UPDATE_GOLDENS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"no golden {path.name}; run with NETVIRT_UPDATE_GOLDENS=1"
    expected = path.read_text()
    if text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"goldens/{path.name}",
                "compiled",
            )
        )
        raise AssertionError(f"golden {path.name} differs:\n{diff}")
