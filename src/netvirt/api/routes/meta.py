"""Version and extension discovery (``GET /``, ``GET /v2.0``, ``GET /v2.0/extensions``),
so existing Neutron clients can negotiate what this server speaks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from netvirt.api.deps import get_context
from netvirt.northbound.context import Context
from netvirt.northbound.errors import not_found

router = APIRouter(tags=["discovery"])

UPDATED = "2026-11-21T00:00:00-00:00"
EXTENSIONS: list[tuple[str, str, str]] = [
    (
        "external-net",
        "Neutron external network",
        "Adds external network attribute to network resource.",
    ),
    (
        "router",
        "Neutron L3 Router",
        "Router abstraction for basic L3 forwarding between L2 networks and gateways.",
    ),
    (
        "ext-gw-mode",
        "Neutron L3 Configurable external gateway mode",
        "Enables SNAT control on the router gateway.",
    ),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router."),
    ("security-group", "security-group", "The security groups extension."),
    ("port-security", "Port Security", "Provides port security."),
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs."),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application."),
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks."),
    ("qos", "QoS", "The QoS extension."),
    (
        "qos-bw-limit-direction",
        "Direction for QoS bandwidth limit rule",
        "Allows configuring direction.",
    ),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    (
        "standard-attr-description",
        "standard-attr-description",
        "Extension to add descriptions to standard attributes.",
    ),
    (
        "standard-attr-revisions",
        "Resource revision numbers",
        "Exposes revision_number of resources.",
    ),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields."),
    (
        "project-id",
        "project_id field enabled",
        "Extension that indicates that project_id field is enabled.",
    ),
    (
        "revision-if-match",
        "If-Match constraints based on revision_number",
        "Updates and deletes honour If-Match: revision_number=N (412 otherwise).",
    ),
    ("pagination", "Pagination support", "Extension that indicates that pagination is enabled."),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled."),
    (
        "fip-port-details",
        "Floating IP Port Details Extension",
        "Add port_details attribute to Floating IP resource.",
    ),
    (
        "netvirt-realization",
        "netvirt realization status",
        "GET /v2.0/netvirt/status and ?wait=compiled|installed on writes.",
    ),
]


def _ext(alias: str, name: str, description: str) -> dict[str, Any]:
    return {
        "alias": alias,
        "name": name,
        "description": description,
        "updated": UPDATED,
        "links": [],
    }


@router.get("/", summary="API versions")
def versions(request: Request) -> dict[str, Any]:
    href = str(request.base_url).rstrip("/") + "/v2.0/"
    return {
        "versions": [{"id": "v2.0", "status": "CURRENT", "links": [{"href": href, "rel": "self"}]}]
    }


@router.get("/v2.0", summary="Resources of v2.0")
@router.get("/v2.0/", include_in_schema=False)
def resources(request: Request) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/") + "/v2.0/"
    names = [
        ("network", "networks"),
        ("subnet", "subnets"),
        ("port", "ports"),
        ("router", "routers"),
        ("floatingip", "floatingips"),
        ("security_group", "security-groups"),
        ("security_group_rule", "security-group-rules"),
        ("policy", "qos/policies"),
    ]
    return {
        "resources": [
            {"name": n, "collection": c, "links": [{"href": base + c, "rel": "self"}]}
            for n, c in names
        ]
    }


@router.get("/v2.0/extensions", summary="List extensions")
def list_extensions(_ctx: Context = Depends(get_context)) -> dict[str, Any]:
    return {"extensions": [_ext(*e) for e in EXTENSIONS]}


@router.get("/v2.0/extensions/{alias}", summary="Show extension")
def show_extension(alias: str, _ctx: Context = Depends(get_context)) -> dict[str, Any]:
    for ext in EXTENSIONS:
        if ext[0] == alias:
            return {"extension": _ext(*ext)}
    raise not_found("extension", alias)
