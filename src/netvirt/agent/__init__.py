"""The host agent (like ovn-controller): claims local ports, turns the logical flows
that matter on this host into classifier rules, reconciles desired vs installed
state and dispatches the pipeline's outputs to local ports and tunnels.

The core is pure and single-threaded; the runner drives :meth:`Agent.step` and
the I/O (see docs/agent.md).
"""

from netvirt.agent.agent import Agent, Installed
from netvirt.agent.bindings import Bindings, Plug, bind
from netvirt.agent.physical import Encap, PhysicalState, Port, Tunnel, compute

__all__ = [
    "Agent",
    "Bindings",
    "Encap",
    "Installed",
    "PhysicalState",
    "Plug",
    "Port",
    "Tunnel",
    "bind",
    "compute",
]
