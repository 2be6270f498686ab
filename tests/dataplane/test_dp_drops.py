"""The shared DropReason enum, ParseError, and the data plane's import boundary."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import netvirt.dataplane
from netvirt.dataplane.drops import DropReason, ParseError

DATAPLANE = Path(netvirt.dataplane.__file__).parent
FORBIDDEN = ("netvirt.model", "netvirt.northbound", "netvirt.api", "scapy")


def test_values_are_stable_lowercase_names() -> None:
    for reason in DropReason:
        assert reason.value == reason.name.lower()


def test_every_reason_is_described() -> None:
    for reason in DropReason:
        assert 10 < len(reason.description) < 100, reason


def test_brief_reasons_exist() -> None:
    names = {
        "TRUNCATED_ETHERNET", "TRUNCATED_IPV4", "TRUNCATED_IPV6", "TRUNCATED_TCP",
        "TRUNCATED_UDP", "TRUNCATED_ICMP", "TRUNCATED_ARP", "TRUNCATED_DHCP",
        "BAD_IPV4_VERSION", "BAD_IPV4_IHL", "BAD_IPV4_TOTAL_LENGTH", "BAD_CHECKSUM",
        "TTL_EXPIRED", "NO_ROUTE", "ACL_DENY", "PORT_SECURITY_MAC", "PORT_SECURITY_IP",
        "ARP_SPOOF", "INVALID_CT_STATE", "UNKNOWN_ETHERTYPE", "MALFORMED_TUNNEL",
        "MTU_EXCEEDED",
    }  # fmt: skip
    assert names <= set(DropReason.__members__)


def test_parse_error_carries_reason_and_detail() -> None:
    error = ParseError(DropReason.BAD_UDP_LENGTH, "length 3")
    assert error.reason is DropReason.BAD_UDP_LENGTH
    assert str(error) == "bad_udp_length: length 3"
    assert str(ParseError(DropReason.TRUNCATED_TCP)) == "truncated_tcp"
    with pytest.raises(ParseError):
        raise error


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_dataplane_never_imports_management_plane_or_scapy() -> None:
    files = sorted(DATAPLANE.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        for name in _imports(path):
            assert not name.startswith(FORBIDDEN), f"{path.name} imports {name}"
