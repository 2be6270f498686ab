"""QoS: DSCP marking (``ls_in_qos_mark``) and the bandwidth limits of VM ports.

A VM port's effective policy is its own ``qos_policy_id``, else its network's
(as Neutron: a network policy applies to the network's VM ports, not to
router or other ``network:*`` ports). A ``dscp_marking`` rule rewrites the
DSCP of every IP packet the VM sends (100): ``ip.dscp = N``.

Bandwidth limits produce no flows: token buckets are per-port state of the
datapath, not a match/action. :func:`port_limits` resolves them (with
Neutron's default burst) and ``topology.build_topology`` puts them on the
port binding, where the host's datapath reads them (docs/qos.md).
"""

from __future__ import annotations

from netvirt.compiler.build import LPort, Switch, add_defaults, switches
from netvirt.compiler.expr.ast import BoolSym, conj
from netvirt.compiler.lflow import FlowSink, Provenance
from netvirt.compiler.nb import NBSnapshot, Obj
from netvirt.dataplane.actions import Next, SetField
from netvirt.southbound.model import BandwidthLimit, SBState

BUILDER = "qos"


def build(nb: NBSnapshot, sb: SBState, sink: FlowSink) -> None:
    policies = nb.by_id("qos_policies")
    for switch in switches(nb, sb):
        for port in switch.vifs():
            policy = policies.get(effective_policy(switch, port) or "")
            mark = dscp_mark(policy) if policy else None
            if policy is not None and mark is not None:
                _mark(switch, port, policy, mark, sink)
        add_defaults(sink, switch, BUILDER, {"ls_in_qos_mark": (Next(),)})


def effective_policy(switch: Switch, port: LPort) -> str | None:
    return policy_id(port.nb, switch.net)


def policy_id(port: Obj, net: Obj) -> str | None:
    """The id of the policy in force on ``port`` (its own, else its network's)."""
    own = port.get("qos_policy_id")
    if own:
        return str(own)
    if str(port.get("device_owner", "")).startswith("network:"):
        return None
    net_policy = net.get("qos_policy_id")
    return str(net_policy) if net_policy else None


DEFAULT_BURST_PERCENT = 80  # Neutron's burst when a rule says 0 (good enough for TCP)


def default_burst(max_kbps: int) -> int:
    """Neutron's default burst: 80 % of the rate, in kbit (rounded down, at least 1)."""
    return max(1, max_kbps * DEFAULT_BURST_PERCENT // 100)


def port_limits(policy: Obj | None) -> tuple[BandwidthLimit | None, BandwidthLimit | None]:
    """(egress, ingress) limits of a policy; a rate of 0 means no limit (as OVS)."""
    limits: dict[str, BandwidthLimit] = {}
    for rule in (policy or {}).get("rules", []):
        rate = int(rule.get("max_kbps") or 0)
        if rule.get("type") != "bandwidth_limit" or rate <= 0:
            continue
        burst = int(rule.get("max_burst_kbps") or 0) or default_burst(rate)
        limits[str(rule.get("direction") or "egress")] = BandwidthLimit(rate, burst)
    return limits.get("egress"), limits.get("ingress")


def dscp_mark(policy: Obj) -> int | None:
    for rule in policy.get("rules", []):
        if rule.get("type") == "dscp_marking":
            return int(rule["dscp_mark"])
    return None


def _mark(switch: Switch, port: LPort, policy: Obj, mark: int, sink: FlowSink) -> None:
    match = conj(port.inport(), BoolSym("ip"))
    prov = Provenance(BUILDER, "qos_policy", str(policy["id"]), f"dscp {mark}")
    sink.add(switch.key, "ls_in_qos_mark", 100, match, (SetField("ip.dscp", mark), Next()), prov)
