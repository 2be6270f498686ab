"""Routers and floating IPs.

Router interfaces and gateways are ports (``device_owner`` =
``network:router_interface`` / ``network:router_gateway``, ``device_id`` = the
router), as in Neutron; so are floating IP addresses (``network:floatingip``).
That keeps one IPAM and one uniqueness rule for every address.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from netvirt.northbound.schema.base import Base, StandardAttrs


class Router(StandardAttrs, Base):
    __tablename__ = "routers"
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    gw_network_id: Mapped[str | None] = mapped_column(ForeignKey("networks.id"), nullable=True)
    gw_port_id: Mapped[str | None] = mapped_column(
        ForeignKey("ports.id", ondelete="SET NULL"), nullable=True
    )
    enable_snat: Mapped[bool] = mapped_column(Boolean, default=True)
    routes: Mapped[list[Any]] = mapped_column(default=list)


class FloatingIP(StandardAttrs, Base):
    __tablename__ = "floatingips"
    __table_args__ = (UniqueConstraint("fixed_port_id", "fixed_ip_address"),)
    floating_network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    floating_ip_address: Mapped[str] = mapped_column(String(64))
    floating_port_id: Mapped[str] = mapped_column(ForeignKey("ports.id"))
    fixed_port_id: Mapped[str | None] = mapped_column(
        ForeignKey("ports.id"), nullable=True, index=True
    )
    fixed_ip_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    router_id: Mapped[str | None] = mapped_column(ForeignKey("routers.id"), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="DOWN")
