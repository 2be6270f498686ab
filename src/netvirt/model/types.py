"""Reusable validated field types: addresses, CIDRs, MACs, names, port numbers."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class RequestModel(BaseModel):
    """Base of every request body: unknown fields refused, aliases accepted."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=False)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        """NUL cannot be stored by PostgreSQL and is never meaningful in a name or id."""
        if _has_nul(data):
            raise ValueError("NUL characters are not allowed")
        return data

    def set_fields(self) -> dict[str, Any]:
        """The fields the client actually sent (``None`` included when sent)."""
        return self.model_dump(exclude_unset=True, by_alias=False)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"'{value}' is not a valid IP address") from None


def _cidr(value: str) -> str:
    """A network CIDR with no host bits set (Neutron refuses '10.0.0.1/24')."""
    if "/" not in value:
        raise ValueError(f"'{value}' is not a valid CIDR (missing prefix length)")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"'{value}' is not a valid CIDR") from None
    if (
        str(net) != str(ipaddress.ip_interface(value).network)
        or ipaddress.ip_interface(value).ip != net.network_address
    ):
        raise ValueError(f"'{value}' isn't a recommended CIDR, use '{net}' instead")
    return str(net)


def _ip_or_cidr(value: str) -> str:
    """An address or a prefix (allowed_address_pairs, remote_ip_prefix)."""
    try:
        if "/" in value:
            return str(ipaddress.ip_network(value, strict=False))
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"'{value}' is neither a valid IP address nor a valid CIDR") from None


def _mac(value: str) -> str:
    mac = value.lower().replace("-", ":")
    if not MAC_RE.match(mac):
        raise ValueError(f"'{value}' is not a valid MAC address")
    if int(mac[:2], 16) & 1:
        raise ValueError(f"'{value}' is a multicast MAC address, not a unicast one")
    if mac == "00:00:00:00:00:00":
        raise ValueError(f"'{value}' is the all-zero MAC address")
    return mac


def _uuid(value: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F-]{1,36}", value):
        raise ValueError(f"'{value}' is not a valid UUID")
    return value.lower()


IPAddress = Annotated[str, AfterValidator(_ip)]
CIDR = Annotated[str, AfterValidator(_cidr)]
IPOrCIDR = Annotated[str, AfterValidator(_ip_or_cidr)]
MAC = Annotated[str, AfterValidator(_mac)]
UUID = Annotated[str, Field(max_length=36), AfterValidator(_uuid)]
Name = Annotated[str, Field(max_length=255)]
Description = Annotated[str, Field(max_length=255)]
ProjectId = Annotated[str, Field(min_length=1, max_length=64)]
L4Port = Annotated[int, Field(ge=1, le=65535)]
