"""Request models for load balancers, shaped like Octavia v2 (``/v2/lbaas/...``).

Values Octavia knows but netvirt's provider does not implement (HTTPS
listeners, PROXY pools, SOURCE_IP_PORT, cookie persistence, TLS-HELLO checks…)
are refused with a message saying so, rather than with a bare "not one of", so
a client ported from Octavia learns that the option exists but is unsupported.
Rules that relate several fields of one body (timeout <= delay, HTTP-only
options) live here; rules that need the store (protocol compatibility with a
listener, uniqueness) live in the services.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator

from netvirt.model.types import (
    UUID,
    Description,
    IPAddress,
    L4Port,
    Name,
    ProjectId,
    RequestModel,
)

PROVIDER = "netvirt"

LISTENER_PROTOCOLS = ("TCP", "UDP", "HTTP")
LISTENER_PROTOCOLS_KNOWN = ("HTTPS", "TERMINATED_HTTPS", "SCTP", "PROMETHEUS")
POOL_PROTOCOLS = ("TCP", "UDP", "HTTP")
POOL_PROTOCOLS_KNOWN = ("HTTPS", "PROXY", "PROXYV2", "SCTP")
LB_ALGORITHMS = ("ROUND_ROBIN", "SOURCE_IP", "LEAST_CONNECTIONS")
LB_ALGORITHMS_KNOWN = ("SOURCE_IP_PORT",)
PERSISTENCE_TYPES = ("SOURCE_IP",)
PERSISTENCE_TYPES_KNOWN = ("HTTP_COOKIE", "APP_COOKIE")
MONITOR_TYPES = ("PING", "TCP", "HTTP")
MONITOR_TYPES_KNOWN = ("HTTPS", "TLS-HELLO", "UDP-CONNECT", "SCTP")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE")
HTTP_ONLY = ("http_method", "url_path", "expected_codes")

_CODES_LIST = re.compile(r"^\d{3}(,\d{3})*$")
_CODES_RANGE = re.compile(r"^(\d{3})-(\d{3})$")
_URL_PATH = re.compile(r"^/[\x21-\x7e]*$")


def _choice(kind: str, supported: tuple[str, ...], known: tuple[str, ...]) -> Callable[[str], str]:
    """A validator accepting ``supported`` and explaining why ``known`` values are refused."""

    def check(value: str) -> str:
        if value in supported:
            return value
        if value in known:
            raise ValueError(f"{kind} {value} is not supported by provider '{PROVIDER}'")
        raise ValueError(f"'{value}' is not a valid {kind}; use one of {', '.join(supported)}")

    return check


def _expected_codes(value: str) -> str:
    """Octavia's forms: one code, a comma-separated list, or an inclusive range."""
    ranged = _CODES_RANGE.match(value)
    if ranged:
        codes = [int(ranged.group(1)), int(ranged.group(2))]
        if codes[0] > codes[1]:
            raise ValueError(f"range '{value}' starts after it ends")
    elif _CODES_LIST.match(value):
        codes = [int(c) for c in value.split(",")]
    else:
        raise ValueError(f"'{value}' is not a status code, a list like 200,202 or a range 200-204")
    if any(not 100 <= c <= 599 for c in codes):
        raise ValueError(f"'{value}' holds a code outside 100-599")
    return value


def _url_path(value: str) -> str:
    if not _URL_PATH.match(value):
        raise ValueError(f"'{value}' is not a URL path (must start with '/', no spaces)")
    return value


ListenerProtocol = Annotated[
    str, AfterValidator(_choice("protocol", LISTENER_PROTOCOLS, LISTENER_PROTOCOLS_KNOWN))
]
PoolProtocol = Annotated[
    str, AfterValidator(_choice("protocol", POOL_PROTOCOLS, POOL_PROTOCOLS_KNOWN))
]
Algorithm = Annotated[
    str, AfterValidator(_choice("lb_algorithm", LB_ALGORITHMS, LB_ALGORITHMS_KNOWN))
]
PersistenceType = Annotated[
    str,
    AfterValidator(_choice("session persistence type", PERSISTENCE_TYPES, PERSISTENCE_TYPES_KNOWN)),
]
MonitorType = Annotated[
    str, AfterValidator(_choice("health monitor type", MONITOR_TYPES, MONITOR_TYPES_KNOWN))
]
HttpMethod = Annotated[str, AfterValidator(_choice("http_method", HTTP_METHODS, ()))]
ExpectedCodes = Annotated[str, Field(max_length=64), AfterValidator(_expected_codes)]
UrlPath = Annotated[str, Field(max_length=255), AfterValidator(_url_path)]
Tag = Annotated[str, Field(min_length=1, max_length=255)]
Tags = Annotated[list[Tag], Field(max_length=50)]
ConnectionLimit = Annotated[int, Field(ge=-1)]
Weight = Annotated[int, Field(ge=0, le=256)]
Delay = Annotated[int, Field(ge=1, le=2147483647)]
Retries = Annotated[int, Field(ge=1, le=10)]


class SessionPersistence(RequestModel):
    """Only SOURCE_IP stickiness: the datapath hashes the client address, no cookies."""

    type: PersistenceType
    cookie_name: None = None
    persistence_timeout: int | None = Field(None, ge=1)
    persistence_granularity: IPAddress | None = None


class LoadBalancerCreate(RequestModel):
    name: Name = ""
    description: Description = ""
    project_id: ProjectId | None = None
    tenant_id: ProjectId | None = None
    vip_subnet_id: UUID | None = None
    vip_network_id: UUID | None = None
    vip_port_id: UUID | None = None
    vip_address: IPAddress | None = None
    admin_state_up: bool = True
    provider: str | None = Field(None, max_length=64)
    flavor_id: UUID | None = None
    tags: Tags = Field(default_factory=list)

    @model_validator(mode="after")
    def _needs_vip(self) -> LoadBalancerCreate:
        if not (self.vip_subnet_id or self.vip_network_id or self.vip_port_id):
            raise ValueError("one of vip_subnet_id, vip_network_id or vip_port_id is required")
        return self


class LoadBalancerUpdate(RequestModel):
    name: Name | None = None
    description: Description | None = None
    admin_state_up: bool | None = None
    tags: Tags | None = None


class ListenerCreate(RequestModel):
    loadbalancer_id: UUID
    protocol: ListenerProtocol
    protocol_port: L4Port
    name: Name = ""
    description: Description = ""
    default_pool_id: UUID | None = None
    connection_limit: ConnectionLimit = -1
    admin_state_up: bool = True
    tags: Tags = Field(default_factory=list)


class ListenerUpdate(RequestModel):
    name: Name | None = None
    description: Description | None = None
    default_pool_id: UUID | None = None
    connection_limit: ConnectionLimit | None = None
    admin_state_up: bool | None = None
    tags: Tags | None = None


class PoolCreate(RequestModel):
    protocol: PoolProtocol
    lb_algorithm: Algorithm
    loadbalancer_id: UUID | None = None
    listener_id: UUID | None = None
    name: Name = ""
    description: Description = ""
    session_persistence: SessionPersistence | None = None
    admin_state_up: bool = True
    tags: Tags = Field(default_factory=list)

    @model_validator(mode="after")
    def _needs_parent(self) -> PoolCreate:
        if not (self.loadbalancer_id or self.listener_id):
            raise ValueError("at least one of loadbalancer_id or listener_id is required")
        return self


class PoolUpdate(RequestModel):
    name: Name | None = None
    description: Description | None = None
    lb_algorithm: Algorithm | None = None
    session_persistence: SessionPersistence | None = None
    admin_state_up: bool | None = None
    tags: Tags | None = None


class MemberCreate(RequestModel):
    address: IPAddress
    protocol_port: L4Port
    name: Name = ""
    subnet_id: UUID | None = None
    weight: Weight = 1
    backup: bool = False
    monitor_address: IPAddress | None = None
    monitor_port: L4Port | None = None
    admin_state_up: bool = True
    tags: Tags = Field(default_factory=list)


class MemberUpdate(RequestModel):
    name: Name | None = None
    weight: Weight | None = None
    backup: bool | None = None
    monitor_address: IPAddress | None = None
    monitor_port: L4Port | None = None
    admin_state_up: bool | None = None
    tags: Tags | None = None


def check_monitor_fields(values: dict[str, Any]) -> None:
    """Cross-field rules of a health monitor, on a create body or on merged update values."""
    if values["timeout"] > values["delay"]:
        raise ValueError(
            f"timeout ({values['timeout']}) must be less than or equal to delay ({values['delay']})"
        )
    if values["type"] != "HTTP":
        given = [k for k in HTTP_ONLY if values.get(k) is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} is only valid for health monitors of type HTTP, "
                f"not {values['type']}"
            )


class HealthMonitorCreate(RequestModel):
    pool_id: UUID
    type: MonitorType
    delay: Delay
    timeout: Delay
    max_retries: Retries
    max_retries_down: Retries = 3
    http_method: HttpMethod | None = None
    url_path: UrlPath | None = None
    expected_codes: ExpectedCodes | None = None
    name: Name = ""
    admin_state_up: bool = True
    tags: Tags = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_fields(self) -> HealthMonitorCreate:
        check_monitor_fields(self.model_dump())
        return self


class HealthMonitorUpdate(RequestModel):
    delay: Delay | None = None
    timeout: Delay | None = None
    max_retries: Retries | None = None
    max_retries_down: Retries | None = None
    http_method: HttpMethod | None = None
    url_path: UrlPath | None = None
    expected_codes: ExpectedCodes | None = None
    name: Name | None = None
    admin_state_up: bool | None = None
    tags: Tags | None = None
