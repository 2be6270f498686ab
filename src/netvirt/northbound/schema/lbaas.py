"""Load balancers shaped like Octavia v2: load balancer → listeners → pools → members,
and one health monitor per pool."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from netvirt.northbound.schema.base import Base, StandardAttrs


class LoadBalancer(StandardAttrs, Base):
    __tablename__ = "loadbalancers"
    vip_subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id"), index=True)
    vip_network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"))
    vip_port_id: Mapped[str | None] = mapped_column(
        ForeignKey("ports.id", ondelete="SET NULL"), nullable=True
    )
    vip_address: Mapped[str] = mapped_column(String(64))
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    provider: Mapped[str] = mapped_column(String(64), default="netvirt")
    provisioning_status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    operating_status: Mapped[str] = mapped_column(String(16), default="ONLINE")


class Listener(StandardAttrs, Base):
    __tablename__ = "lb_listeners"
    loadbalancer_id: Mapped[str] = mapped_column(
        ForeignKey("loadbalancers.id", ondelete="CASCADE"), index=True
    )
    protocol: Mapped[str] = mapped_column(String(16))
    protocol_port: Mapped[int] = mapped_column(Integer)
    default_pool_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    connection_limit: Mapped[int] = mapped_column(Integer, default=-1)
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    provisioning_status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    operating_status: Mapped[str] = mapped_column(String(16), default="ONLINE")


class Pool(StandardAttrs, Base):
    __tablename__ = "lb_pools"
    loadbalancer_id: Mapped[str] = mapped_column(
        ForeignKey("loadbalancers.id", ondelete="CASCADE"), index=True
    )
    listener_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    protocol: Mapped[str] = mapped_column(String(16))
    lb_algorithm: Mapped[str] = mapped_column(String(32))
    session_persistence: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    provisioning_status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    operating_status: Mapped[str] = mapped_column(String(16), default="ONLINE")


class Member(StandardAttrs, Base):
    __tablename__ = "lb_members"
    pool_id: Mapped[str] = mapped_column(ForeignKey("lb_pools.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(64))
    protocol_port: Mapped[int] = mapped_column(Integer)
    subnet_id: Mapped[str | None] = mapped_column(ForeignKey("subnets.id"), nullable=True)
    weight: Mapped[int] = mapped_column(Integer, default=1)
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    monitor_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    monitor_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    backup: Mapped[bool] = mapped_column(Boolean, default=False)
    provisioning_status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    operating_status: Mapped[str] = mapped_column(String(16), default="NO_MONITOR")


class HealthMonitor(StandardAttrs, Base):
    __tablename__ = "lb_healthmonitors"
    pool_id: Mapped[str] = mapped_column(ForeignKey("lb_pools.id", ondelete="CASCADE"), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    delay: Mapped[int] = mapped_column(Integer)
    timeout: Mapped[int] = mapped_column(Integer)
    max_retries: Mapped[int] = mapped_column(Integer)
    max_retries_down: Mapped[int] = mapped_column(Integer, default=3)
    http_method: Mapped[str | None] = mapped_column(String(16), nullable=True)
    url_path: Mapped[str | None] = mapped_column(String(255), nullable=True)
    expected_codes: Mapped[str | None] = mapped_column(String(64), nullable=True)
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    provisioning_status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    operating_status: Mapped[str] = mapped_column(String(16), default="ONLINE")
