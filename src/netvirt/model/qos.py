"""Request models for QoS policies and their bandwidth_limit / dscp_marking rules."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from netvirt.model.types import Description, Name, ProjectId, RequestModel

MAX_KBPS = (1 << 31) - 1  # Neutron stores rates in a signed 32-bit column
# The DSCP values Neutron accepts: best effort, the class selectors (CS1-CS7),
# the assured forwarding classes (AF11-AF43) and expedited forwarding (EF).
VALID_DSCP_MARKS = frozenset(
    {0, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 46, 48, 56}
)
RULE_TYPES = ("bandwidth_limit", "dscp_marking")

RuleDirection = Literal["egress", "ingress"]
Kbps = Annotated[int, Field(ge=0, le=MAX_KBPS)]


def _dscp(value: int) -> int:
    if value not in VALID_DSCP_MARKS:
        allowed = ", ".join(str(v) for v in sorted(VALID_DSCP_MARKS))
        raise ValueError(f"{value} is not a valid DSCP mark; use one of {allowed}")
    return value


DscpMark = Annotated[int, AfterValidator(_dscp)]


class QosPolicyCreate(RequestModel):
    name: Name = ""
    description: Description = ""
    project_id: ProjectId | None = None
    tenant_id: ProjectId | None = None
    shared: bool = False
    is_default: bool = False


class QosPolicyUpdate(RequestModel):
    name: Name | None = None
    description: Description | None = None
    shared: bool | None = None
    is_default: bool | None = None


class BandwidthLimitRuleCreate(RequestModel):
    max_kbps: Kbps
    max_burst_kbps: Kbps = 0
    direction: RuleDirection = "egress"


class BandwidthLimitRuleUpdate(RequestModel):
    max_kbps: Kbps | None = None
    max_burst_kbps: Kbps | None = None
    direction: RuleDirection | None = None


class DscpMarkingRuleCreate(RequestModel):
    dscp_mark: DscpMark


class DscpMarkingRuleUpdate(RequestModel):
    dscp_mark: DscpMark | None = None
