"""QoS policies and their rules (bandwidth_limit, dscp_marking)."""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from netvirt.northbound.schema.base import Base, StandardAttrs


class QosPolicy(StandardAttrs, Base):
    __tablename__ = "qos_policies"
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)


class QosRule(Base):
    """One rule; ``rule_type`` is ``bandwidth_limit`` or ``dscp_marking``."""

    __tablename__ = "qos_rules"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    policy_id: Mapped[str] = mapped_column(
        ForeignKey("qos_policies.id", ondelete="CASCADE"), index=True
    )
    rule_type: Mapped[str] = mapped_column(String(32))
    max_kbps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_burst_kbps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    direction: Mapped[str | None] = mapped_column(String(8), nullable=True)
    dscp_mark: Mapped[int | None] = mapped_column(Integer, nullable=True)
