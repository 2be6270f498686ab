"""Neutron's per-project ``default`` security group.

Created the first time a project needs it (project creation, or its first
port). Rules as Neutron's: all egress allowed (IPv4 and IPv6); ingress allowed
only from members of the same group.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from netvirt.northbound.schema import SecurityGroup, SecurityGroupRule
from netvirt.northbound.txmemo import remembered


def ensure_default_security_group(session: Session, project_id: str) -> SecurityGroup:
    """The project's default group, created if missing (read once per transaction: a
    bulk port create asks for it per port)."""
    existing = remembered(
        session,
        ("default_sg", project_id),
        (SecurityGroup,),
        lambda: session.execute(
            select(SecurityGroup).where(
                SecurityGroup.project_id == project_id, SecurityGroup.is_default
            )
        ).scalar_one_or_none(),
    )
    if existing is not None:
        return existing
    group = SecurityGroup(
        project_id=project_id,
        name="default",
        description="Default security group",
        is_default=True,
    )
    session.add(group)
    session.flush()
    for ethertype in ("IPv4", "IPv6"):
        session.add(
            SecurityGroupRule(
                project_id=project_id,
                security_group_id=group.id,
                direction="egress",
                ethertype=ethertype,
            )
        )
        session.add(
            SecurityGroupRule(
                project_id=project_id,
                security_group_id=group.id,
                direction="ingress",
                ethertype=ethertype,
                remote_group_id=group.id,
            )
        )
    session.flush()
    return group
