"""QoS DSCP marking (``ls_in_qos_mark``).

A VM port's effective policy is its own ``qos_policy_id``, else its network's
(as Neutron: a network policy applies to the network's VM ports, not to
router or other ``network:*`` ports). A ``dscp_marking`` rule rewrites the
DSCP of every IP packet the VM sends (100): ``ip.dscp = N``. Bandwidth
limits are the datapath's job (a later issue); they produce no flows here.
"""

from __future__ import annotations

from netvirt.compiler.build import LPort, Switch, add_defaults, switches
from netvirt.compiler.expr.ast import BoolSym, conj
from netvirt.compiler.lflow import FlowSink, Provenance
from netvirt.compiler.nb import NBSnapshot, Obj
from netvirt.dataplane.actions import Next, SetField
from netvirt.southbound.model import SBState

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
    own = port.nb.get("qos_policy_id")
    if own:
        return str(own)
    if str(port.nb.get("device_owner", "")).startswith("network:"):
        return None
    net_policy = switch.net.get("qos_policy_id")
    return str(net_policy) if net_policy else None


def dscp_mark(policy: Obj) -> int | None:
    for rule in policy.get("rules", []):
        if rule.get("type") == "dscp_marking":
            return int(rule["dscp_mark"])
    return None


def _mark(switch: Switch, port: LPort, policy: Obj, mark: int, sink: FlowSink) -> None:
    match = conj(port.inport(), BoolSym("ip"))
    prov = Provenance(BUILDER, "qos_policy", str(policy["id"]), f"dscp {mark}")
    sink.add(switch.key, "ls_in_qos_mark", 100, match, (SetField("ip.dscp", mark), Next()), prov)
