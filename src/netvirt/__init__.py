"""netvirt: multi-tenant network virtualization for Linux hosts.

The package is split along the three planes described in docs/architecture.md:
``model``/``northbound``/``api`` hold the management plane (desired state),
``compiler``/``southbound``/``agent`` the control plane and ``dataplane`` the
packet path.
"""

__version__ = "0.1.0"
