"""``netvirt trace``: send a described packet from a logical port and explain its fate.

The trace compiles nothing itself: it takes an SB state (compiled from the NB
store), translates it exactly as a host agent does (``compiler/translate.py``)
with every port treated as local, and runs the datapath pipeline with
tracing on. Each step shows the stage, the priority and match of the flow
hit, its actions and its provenance (builder and NB object); conntrack
decisions and the final verdict follow: delivered to a port with the final
headers, or dropped with its reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from netvirt.compiler.expr.actions_text import format_actions
from netvirt.compiler.expr.printer import format_match
from netvirt.compiler.lflow import LogicalFlow
from netvirt.compiler.stages import BY_TABLE
from netvirt.compiler.translate import all_rules, topology
from netvirt.dataplane.classifier import Classifier
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.headers.addr import ip4_str, ip6_str, mac_str
from netvirt.dataplane.packet import parse_packet
from netvirt.dataplane.pipeline import ConnTracker, Pipeline, TraceEvent, Verdict
from netvirt.southbound.model import PortBinding, SBState
from netvirt.trace.microflow import build_frame, parse_microflow


def new_conntrack() -> ConnTracker:
    """A fresh, empty in-memory conntrack: a trace starts with no connections."""
    from netvirt.dataplane.nf import FlowKeyConntrack
    from netvirt.dataplane.nf.conntrack import Conntrack
    from netvirt.state.memory import MemoryStore

    return FlowKeyConntrack(Conntrack(MemoryStore()))


_QUOTED = re.compile(r'"([^"]+)"')
_UUIDISH = re.compile(r"(?:lrp-)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class TraceError(ValueError):
    """Bad trace input (unknown port, bad microflow): the message says which."""


@dataclass
class TraceResult:
    port: PortBinding
    frame: bytes
    verdict: Verdict
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def delivered(self) -> list[str]:
        return [e.port_name for e in self.verdict.outputs]

    @property
    def dropped(self) -> list[DropReason]:
        return list(self.verdict.drops)


def find_port(sb: SBState, ref: str) -> PortBinding:
    if ref in sb.ports:
        return sb.ports[ref]
    matches = [p for p in sb.ports.values() if p.nb_id.startswith(ref) and p.type != "patch"]
    if len(matches) == 1:
        return matches[0]
    raise TraceError(f"unknown logical port {ref!r}")


def run_trace(
    sb: SBState,
    from_port: str,
    microflow: str,
    conntrack: ConnTracker,
    *,
    now: float = 0.0,
    port_names: dict[str, str] | None = None,
) -> TraceResult:
    port = find_port(sb, from_port)
    try:
        frame = build_frame(sb, port, parse_microflow(microflow))
    except ValueError as err:
        raise TraceError(str(err)) from None
    classifier = Classifier()
    for rule in all_rules(sb):
        classifier.add(rule)
    pipeline = Pipeline(classifier, topology(sb), conntrack)
    verdict = pipeline.process(frame, port.datapath, port.key, now, trace=True)
    result = TraceResult(port, frame, verdict)
    result.steps = [_step(sb, e, port_names or {}) for e in verdict.trace or []]
    return result


def _port_namer(sb: SBState, datapath: int, names: dict[str, str]) -> Any:
    by_key = {p.key: p.name for p in sb.ports.values() if p.datapath == datapath}
    by_key |= {g.key: g.name for g in sb.groups.values() if g.datapath == datapath}

    def name(key: int) -> str:
        raw = by_key.get(key, str(key))
        return names.get(raw, raw)

    return name


def _step(sb: SBState, event: TraceEvent, names: dict[str, str]) -> dict[str, Any]:
    dp = sb.datapaths.get(event.datapath)
    step: dict[str, Any] = {
        "event": event.kind,
        "datapath": dp.display_name or dp.name if dp else str(event.datapath),
        "datapath_kind": dp.kind if dp else "",
        "detail": _UUIDISH.sub(lambda m: names.get(m[0], m[0]), event.detail),
    }
    if event.table is not None:
        stage = BY_TABLE[event.table]
        step["stage"] = stage.name
        step["pipeline"] = stage.pipeline
    flow = event.rule.cookie if event.rule is not None else None
    if isinstance(flow, LogicalFlow):
        step["priority"] = flow.priority
        step["match"] = _QUOTED.sub(
            lambda m: f'"{names.get(m[1], m[1])}"', format_match(flow.match)
        )
        step["actions"] = format_actions(flow.actions, _port_namer(sb, flow.datapath, names))
        step["provenance"] = {
            "builder": flow.provenance.builder,
            "nb_kind": flow.provenance.nb_kind,
            "nb_id": flow.provenance.nb_id,
            "note": flow.provenance.note,
        }
    return step


def packet_summary(frame: bytes) -> dict[str, Any]:
    """Headers of a frame in match-language names, for the verdict."""
    p = parse_packet(frame, verify_checksum=False)
    out: dict[str, Any] = {"eth.src": mac_str(p.eth_src), "eth.dst": mac_str(p.eth_dst)}
    if p.arp_op:
        out |= {
            "arp.op": p.arp_op,
            "arp.spa": ip4_str(p.arp_spa),
            "arp.tpa": ip4_str(p.arp_tpa),
            "arp.sha": mac_str(p.arp_sha),
            "arp.tha": mac_str(p.arp_tha),
        }
    elif p.ip_version:
        fmt = ip4_str if p.ip_version == 4 else ip6_str
        out |= {
            f"ip{p.ip_version}.src": fmt(p.ip_src),
            f"ip{p.ip_version}.dst": fmt(p.ip_dst),
            "ip.ttl": p.ip_ttl,
            "ip.proto": p.ip_proto,
        }
        if p.ip_tos >> 2:
            out["ip.dscp"] = p.ip_tos >> 2
        if p.ip_proto in (6, 17):
            proto = "tcp" if p.ip_proto == 6 else "udp"
            out |= {f"{proto}.src": p.l4_sport, f"{proto}.dst": p.l4_dport}
        elif p.ip_proto in (1, 58):
            out |= {"icmp.type": p.icmp_type, "icmp.code": p.icmp_code}
    return out


def to_json(result: TraceResult, names: dict[str, str] | None = None) -> dict[str, Any]:
    names = names or {}
    return {
        "from_port": names.get(result.port.name, result.port.name),
        "packet": packet_summary(result.frame),
        "steps": result.steps,
        "outputs": [
            {"port": names.get(e.port_name, e.port_name), "packet": packet_summary(e.frame)}
            for e in result.verdict.outputs
        ],
        "drops": [r.value for r in result.verdict.drops],
        "verdict": _verdict(result, names),
    }


def _verdict(result: TraceResult, names: dict[str, str]) -> str:
    parts = [f"output to {names.get(e.port_name, e.port_name)}" for e in result.verdict.outputs]
    parts += [f"drop ({r.value})" for r in result.verdict.drops]
    return "; ".join(parts) or "no output"


def format_text(result: TraceResult, names: dict[str, str] | None = None) -> str:
    """Human-readable trace, one block per datapath pipeline, like ovn-trace."""
    data = to_json(result, names)
    lines = [f"packet from {data['from_port']}: " + _fields(data["packet"]), ""]
    for step in data["steps"]:
        kind = step["event"]
        if kind == "enter":
            title = f"{step['datapath_kind']} {step['datapath']} — {step['detail']}"
            lines += ["", title, "-" * len(title)]
        elif kind == "stage":
            prov = step.get("provenance", {})
            obj = f" {prov['nb_kind']}={prov['nb_id']}" if prov.get("nb_kind") else ""
            head = f"  {step['stage']} (priority {step.get('priority', '?')})"
            lines.append(f"{head} [{prov.get('builder', '')}{obj}]")
            lines.append(f"      match:   {step.get('match', '')}")
            lines.append(f"      actions: {step.get('actions', '')}")
        elif kind in ("ct", "emit", "note", "output"):
            lines.append(f"      -> {step['detail']}")
        elif kind == "deliver":
            target = (names or {}).get(step["detail"], step["detail"])
            lines.append(f"  delivered to {target}")
        elif kind == "drop":
            where = f" in {step['stage']}" if "stage" in step else ""
            lines.append(f"  DROP{where}: {step['detail']}")
    lines.append("")
    for out in data["outputs"]:
        lines.append(f"output to {out['port']}: " + _fields(out["packet"]))
    for reason in data["drops"]:
        lines.append(f"dropped: {reason}")
    lines.append(f"verdict: {data['verdict']}")
    return "\n".join(lines)


def _fields(packet: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in packet.items())
