"""All NB tables. Import this package to register every table on ``Base.metadata``."""

from netvirt.northbound.schema.base import Base
from netvirt.northbound.schema.identity import Meta, Project, Realization, Token
from netvirt.northbound.schema.l2 import IPAllocation, Network, Port, Subnet
from netvirt.northbound.schema.l3 import FloatingIP, Router
from netvirt.northbound.schema.lbaas import HealthMonitor, Listener, LoadBalancer, Member, Pool
from netvirt.northbound.schema.qos import QosPolicy, QosRule
from netvirt.northbound.schema.security import PortSecurityGroup, SecurityGroup, SecurityGroupRule

__all__ = [
    "Base",
    "FloatingIP",
    "HealthMonitor",
    "IPAllocation",
    "Listener",
    "LoadBalancer",
    "Member",
    "Meta",
    "Network",
    "Pool",
    "Port",
    "PortSecurityGroup",
    "Project",
    "QosPolicy",
    "QosRule",
    "Realization",
    "Router",
    "SecurityGroup",
    "SecurityGroupRule",
    "Subnet",
    "Token",
]
