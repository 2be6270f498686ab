"""Typed HTTP client of the netvirt API (Neutron v2.0 and Octavia v2 shapes).

Every resource answers the same way, so the client has one generic core
(``_create``/``_list``/``_get``/``_update``/``_delete`` over a :class:`Kind`
describing the URL and envelope keys) and each public method is a one-liner
on it. Callers get plain dicts, exactly the API representation, so the CLI,
tests and scripts see what any Neutron client would see.

Failures never leak ``httpx`` exceptions: a server error becomes
:class:`ApiError` carrying the Neutron error ``type`` and ``message``, and a
server that cannot be reached becomes :class:`ApiUnreachable` (status 0).

The client can run over any ``httpx.Client`` — including Starlette's
``TestClient``, which is one — so tests exercise the real routes without a
socket.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import quote

import httpx

Json = dict[str, Any]
WaitMode = Literal["compiled", "installed"]

DEFAULT_URL = "http://127.0.0.1:9696"
_NAME_WORDS = {"name": "name", "floating_ip_address": "address"}
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


IDEMPOTENT = ("GET", "HEAD", "PUT", "DELETE")


class ApiError(Exception):
    """A request the server refused: HTTP status, Neutron error type and message."""

    def __init__(self, status: int, type: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.type!r}, {self.message!r})"


class ApiUnreachable(ApiError):
    """No HTTP answer at all (connection refused, DNS, timeout): status is 0."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "ConnectionError", message)


@dataclass(frozen=True)
class Kind:
    """Where a resource lives and how its bodies are wrapped.

    ``name_key`` is the attribute a human reference may match when it is not
    an id (``None``: ids only); ``label`` names the kind in error messages.
    """

    path: str
    member: str
    collection: str
    label: str
    name_key: str | None = "name"

    def under(self, parent_id: str) -> Kind:
        """The kind for one parent (pool members, QoS policy rules)."""
        return replace(self, path=self.path.format(parent=_segment(parent_id)))


def _kind(
    path: str, member: str, collection: str, name_key: str | None = "name", label: str = ""
) -> Kind:
    return Kind(path, member, collection, label or member.replace("_", " "), name_key)


NETWORKS = _kind("/v2.0/networks", "network", "networks")
SUBNETS = _kind("/v2.0/subnets", "subnet", "subnets")
PORTS = _kind("/v2.0/ports", "port", "ports")
ROUTERS = _kind("/v2.0/routers", "router", "routers")
FLOATINGIPS = _kind(
    "/v2.0/floatingips", "floatingip", "floatingips", "floating_ip_address", "floating IP"
)
SECURITY_GROUPS = _kind("/v2.0/security-groups", "security_group", "security_groups")
SECURITY_GROUP_RULES = _kind(
    "/v2.0/security-group-rules", "security_group_rule", "security_group_rules", None
)
QOS_POLICIES = _kind("/v2.0/qos/policies", "policy", "policies", label="QoS policy")
BANDWIDTH_LIMIT_RULES = _kind(
    "/v2.0/qos/policies/{parent}/bandwidth_limit_rules",
    "bandwidth_limit_rule",
    "bandwidth_limit_rules",
    None,
)
DSCP_MARKING_RULES = _kind(
    "/v2.0/qos/policies/{parent}/dscp_marking_rules",
    "dscp_marking_rule",
    "dscp_marking_rules",
    None,
)
LOADBALANCERS = _kind(
    "/v2/lbaas/loadbalancers", "loadbalancer", "loadbalancers", label="load balancer"
)
LISTENERS = _kind("/v2/lbaas/listeners", "listener", "listeners")
POOLS = _kind("/v2/lbaas/pools", "pool", "pools")
MEMBERS = _kind("/v2/lbaas/pools/{parent}/members", "member", "members")
HEALTHMONITORS = _kind(
    "/v2/lbaas/healthmonitors", "healthmonitor", "healthmonitors", label="health monitor"
)
PROJECTS = _kind("/v2.0/netvirt/projects", "project", "projects")


def _error_from(response: httpx.Response) -> ApiError:
    """Turn an error response into ApiError, whatever shape its body has."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("NeutronError")
        if isinstance(err, dict):
            return ApiError(
                response.status_code,
                str(err.get("type") or "NeutronError"),
                str(err.get("message") or response.reason_phrase),
                str(err.get("detail") or ""),
            )
        if "faultstring" in body:  # Octavia's own error shape
            return ApiError(response.status_code, "OctaviaError", str(body["faultstring"]))
        if "detail" in body:
            return ApiError(response.status_code, "HTTPError", str(body["detail"]))
    text = response.text.strip().splitlines()
    message = text[0] if text else response.reason_phrase
    return ApiError(response.status_code, "HTTPError", f"HTTP {response.status_code}: {message}")


def _query_value(value: Any) -> Any:
    """Neutron filters spell booleans ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return [_query_value(v) for v in value]
    return value


class NetvirtClient:
    """One API endpoint and one token.

    ``http`` lets a caller hand over an existing ``httpx.Client`` (it is then
    not closed by :meth:`close`); otherwise one is built on ``base_url`` with
    ``transport`` if given. ``wait`` is the default realization wait for
    every write; ``page_size`` makes every list request pages of that size
    (all pages are still followed).
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        wait: WaitMode | None = None,
        wait_timeout: float = 30.0,
        page_size: int | None = None,
    ) -> None:
        self.token = token
        self.wait = wait
        self.wait_timeout = wait_timeout
        self.page_size = page_size
        self.timeout = timeout
        self.last_realization: str | None = None
        self._owns_http = http is None
        if http is None:
            http = httpx.Client(
                base_url=(base_url or DEFAULT_URL).rstrip("/"),
                transport=transport,
                timeout=timeout,
            )
        self.http = http
        self.base_url = str(http.base_url).rstrip("/")

    @classmethod
    def from_env(cls, **kwargs: Any) -> NetvirtClient:
        """Configured by ``NETVIRT_URL`` (default :data:`DEFAULT_URL`) and ``NETVIRT_TOKEN``."""
        return cls(
            os.environ.get("NETVIRT_URL") or DEFAULT_URL,
            os.environ.get("NETVIRT_TOKEN") or None,
            **kwargs,
        )

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> NetvirtClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        wait: WaitMode | None = None,
    ) -> Any:
        """Send one request; return the decoded body (``None`` when empty)."""
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        timeout = self.timeout
        wait = wait or (self.wait if method != "GET" else None)
        if wait is not None:
            query |= {"wait": wait, "timeout": self.wait_timeout}
            timeout += self.wait_timeout
        headers = {"X-Auth-Token": self.token} if self.token else {}
        # a borrowed client keeps its own timeouts (Starlette's TestClient refuses them)
        extra: dict[str, Any] = {"timeout": timeout} if self._owns_http else {}
        try:
            try:
                response = self.http.request(
                    method, path, json=json, params=query or None, headers=headers, **extra
                )
            except (httpx.ReadError, httpx.RemoteProtocolError):
                if method not in IDEMPOTENT:
                    raise
                # the server closed a kept-alive connection just as this request went out
                # (its idle timer fired late on a busy server): once more, on a new one
                response = self.http.request(
                    method, path, json=json, params=query or None, headers=headers, **extra
                )
        except httpx.TimeoutException:
            raise ApiUnreachable(
                f"the netvirt API at {self.base_url} did not answer within {timeout:g}s"
            ) from None
        except httpx.TransportError as exc:
            raise ApiUnreachable(
                f"cannot reach the netvirt API at {self.base_url} ({_reason(exc)}); "
                "is `netvirt serve` running? Set NETVIRT_URL or --url."
            ) from None
        if response.is_error:
            raise _error_from(response)
        if method != "GET":
            self.last_realization = response.headers.get("X-Netvirt-Realization")
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                response.status_code, "InvalidResponse", "the server answered with non-JSON"
            ) from None

    # ------------------------------------------------------------------ generic core

    def _create(self, kind: Kind, attrs: Json, wait: WaitMode | None = None) -> Json:
        data = self.request("POST", kind.path, json={kind.member: attrs}, wait=wait)
        return cast(Json, data[kind.member])

    def _list(self, kind: Kind, filters: dict[str, Any]) -> list[Json]:
        """All matching objects, following ``<collection>_links`` next pages."""
        params = dict(filters)
        if self.page_size and "limit" not in params:
            params["limit"] = self.page_size
        data = self.request("GET", kind.path, params=params)
        items = list(data[kind.collection])
        seen: set[str] = set()
        while (href := _next_link(data, kind.collection)) is not None and href not in seen:
            seen.add(href)
            data = self.request("GET", href)
            items.extend(data[kind.collection])
        return items

    def _get(self, kind: Kind, ident: str) -> Json:
        data = self.request("GET", _member_path(kind, ident))
        return cast(Json, data[kind.member])

    def _update(self, kind: Kind, ident: str, attrs: Json, wait: WaitMode | None = None) -> Json:
        data = self.request("PUT", _member_path(kind, ident), json={kind.member: attrs}, wait=wait)
        return cast(Json, data[kind.member])

    def _delete(self, kind: Kind, ident: str, wait: WaitMode | None = None, **params: Any) -> None:
        self.request("DELETE", _member_path(kind, ident), params=params, wait=wait)

    def _find(self, kind: Kind, ref: str, **scope: Any) -> Json:
        """By id when ``ref`` looks like one and exists, else by unique name.

        A name that matches several objects is an error naming the candidates:
        silently picking one would act on the wrong tenant's or twin object.
        """
        by_id: ApiError | None = None
        if kind.name_key is None or UUID_RE.fullmatch(ref):
            try:
                return self._get(kind, ref)
            except ApiError as exc:
                if exc.status != 404 or kind.name_key is None:
                    raise
                by_id = exc
        matches = self._list(kind, {kind.name_key: ref, **scope})
        if len(matches) == 1:
            return matches[0]
        if not matches:
            if by_id is not None:
                raise by_id  # the server's own "could not be found" says it best
            raise ApiError(
                404,
                f"{kind.member.title().replace('_', '')}NotFound",
                f"No {kind.label} found with id or {_NAME_WORDS[kind.name_key]} '{ref}'.",
            )
        ids = ", ".join(str(m["id"]) for m in matches)
        raise ApiError(
            409,
            "AmbiguousName",
            f"{len(matches)} {_plural(kind.label)} match '{ref}' ({ids}); use an id.",
        )

    # ------------------------------------------------------------------ networks

    def create_network(self, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._create(NETWORKS, attrs, wait)

    def list_networks(self, **filters: Any) -> list[Json]:
        return self._list(NETWORKS, filters)

    def get_network(self, network_id: str) -> Json:
        return self._get(NETWORKS, network_id)

    def find_network(self, ref: str) -> Json:
        return self._find(NETWORKS, ref)

    def update_network(
        self, network_id: str, *, wait: WaitMode | None = None, **attrs: Any
    ) -> Json:
        return self._update(NETWORKS, network_id, attrs, wait)

    def delete_network(self, network_id: str, *, wait: WaitMode | None = None) -> None:
        self._delete(NETWORKS, network_id, wait)

    # ------------------------------------------------------------------ subnets

    def create_subnet(self, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._create(SUBNETS, attrs, wait)

    def list_subnets(self, **filters: Any) -> list[Json]:
        return self._list(SUBNETS, filters)

    def get_subnet(self, subnet_id: str) -> Json:
        return self._get(SUBNETS, subnet_id)

    def find_subnet(self, ref: str) -> Json:
        return self._find(SUBNETS, ref)

    def update_subnet(self, subnet_id: str, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._update(SUBNETS, subnet_id, attrs, wait)

    def delete_subnet(self, subnet_id: str, *, wait: WaitMode | None = None) -> None:
        self._delete(SUBNETS, subnet_id, wait)

    # ------------------------------------------------------------------ ports

    def create_port(self, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._create(PORTS, attrs, wait)

    def list_ports(self, **filters: Any) -> list[Json]:
        return self._list(PORTS, filters)

    def get_port(self, port_id: str) -> Json:
        return self._get(PORTS, port_id)

    def find_port(self, ref: str) -> Json:
        return self._find(PORTS, ref)

    def update_port(self, port_id: str, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._update(PORTS, port_id, attrs, wait)

    def delete_port(self, port_id: str, *, wait: WaitMode | None = None) -> None:
        self._delete(PORTS, port_id, wait)

    # ------------------------------------------------------------------ routers

    def create_router(self, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._create(ROUTERS, attrs, wait)

    def list_routers(self, **filters: Any) -> list[Json]:
        return self._list(ROUTERS, filters)

    def get_router(self, router_id: str) -> Json:
        return self._get(ROUTERS, router_id)

    def find_router(self, ref: str) -> Json:
        return self._find(ROUTERS, ref)

    def update_router(self, router_id: str, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._update(ROUTERS, router_id, attrs, wait)

    def delete_router(self, router_id: str, *, wait: WaitMode | None = None) -> None:
        self._delete(ROUTERS, router_id, wait)

    def add_router_interface(
        self,
        router_id: str,
        *,
        subnet_id: str | None = None,
        port_id: str | None = None,
        wait: WaitMode | None = None,
    ) -> Json:
        """Attach a subnet (new port on its gateway IP) or an existing port."""
        return self._router_interface("add", router_id, subnet_id, port_id, wait)

    def remove_router_interface(
        self,
        router_id: str,
        *,
        subnet_id: str | None = None,
        port_id: str | None = None,
        wait: WaitMode | None = None,
    ) -> Json:
        return self._router_interface("remove", router_id, subnet_id, port_id, wait)

    def _router_interface(
        self,
        action: str,
        router_id: str,
        subnet_id: str | None,
        port_id: str | None,
        wait: WaitMode | None,
    ) -> Json:
        body = {k: v for k, v in (("subnet_id", subnet_id), ("port_id", port_id)) if v}
        path = f"{_member_path(ROUTERS, router_id)}/{action}_router_interface"
        return cast(Json, self.request("PUT", path, json=body, wait=wait))

    # ------------------------------------------------------------------ floating IPs

    def create_floatingip(self, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._create(FLOATINGIPS, attrs, wait)

    def list_floatingips(self, **filters: Any) -> list[Json]:
        return self._list(FLOATINGIPS, filters)

    def get_floatingip(self, floatingip_id: str) -> Json:
        return self._get(FLOATINGIPS, floatingip_id)

    def find_floatingip(self, ref: str) -> Json:
        """By id or by floating IP address."""
        return self._find(FLOATINGIPS, ref)

    def update_floatingip(
        self, floatingip_id: str, *, wait: WaitMode | None = None, **attrs: Any
    ) -> Json:
        return self._update(FLOATINGIPS, floatingip_id, attrs, wait)

    def delete_floatingip(self, floatingip_id: str, *, wait: WaitMode | None = None) -> None:
        self._delete(FLOATINGIPS, floatingip_id, wait)

    # ------------------------------------------------------------------ security groups

    def create_security_group(self, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._create(SECURITY_GROUPS, attrs, wait)

    def list_security_groups(self, **filters: Any) -> list[Json]:
        return self._list(SECURITY_GROUPS, filters)

    def get_security_group(self, group_id: str) -> Json:
        return self._get(SECURITY_GROUPS, group_id)

    def find_security_group(self, ref: str) -> Json:
        return self._find(SECURITY_GROUPS, ref)

    def update_security_group(
        self, group_id: str, *, wait: WaitMode | None = None, **attrs: Any
    ) -> Json:
        return self._update(SECURITY_GROUPS, group_id, attrs, wait)

    def delete_security_group(self, group_id: str, *, wait: WaitMode | None = None) -> None:
        self._delete(SECURITY_GROUPS, group_id, wait)

    def create_security_group_rule(self, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._create(SECURITY_GROUP_RULES, attrs, wait)

    def list_security_group_rules(self, **filters: Any) -> list[Json]:
        return self._list(SECURITY_GROUP_RULES, filters)

    def get_security_group_rule(self, rule_id: str) -> Json:
        return self._get(SECURITY_GROUP_RULES, rule_id)

    def delete_security_group_rule(self, rule_id: str, *, wait: WaitMode | None = None) -> None:
        self._delete(SECURITY_GROUP_RULES, rule_id, wait)

    # ------------------------------------------------------------------ QoS

    def create_qos_policy(self, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._create(QOS_POLICIES, attrs, wait)

    def list_qos_policies(self, **filters: Any) -> list[Json]:
        return self._list(QOS_POLICIES, filters)

    def get_qos_policy(self, policy_id: str) -> Json:
        return self._get(QOS_POLICIES, policy_id)

    def find_qos_policy(self, ref: str) -> Json:
        return self._find(QOS_POLICIES, ref)

    def update_qos_policy(
        self, policy_id: str, *, wait: WaitMode | None = None, **attrs: Any
    ) -> Json:
        return self._update(QOS_POLICIES, policy_id, attrs, wait)

    def delete_qos_policy(self, policy_id: str, *, wait: WaitMode | None = None) -> None:
        self._delete(QOS_POLICIES, policy_id, wait)

    def create_bandwidth_limit_rule(
        self, policy_id: str, *, wait: WaitMode | None = None, **attrs: Any
    ) -> Json:
        return self._create(BANDWIDTH_LIMIT_RULES.under(policy_id), attrs, wait)

    def list_bandwidth_limit_rules(self, policy_id: str, **filters: Any) -> list[Json]:
        return self._list(BANDWIDTH_LIMIT_RULES.under(policy_id), filters)

    def get_bandwidth_limit_rule(self, policy_id: str, rule_id: str) -> Json:
        return self._get(BANDWIDTH_LIMIT_RULES.under(policy_id), rule_id)

    def update_bandwidth_limit_rule(
        self, policy_id: str, rule_id: str, *, wait: WaitMode | None = None, **attrs: Any
    ) -> Json:
        return self._update(BANDWIDTH_LIMIT_RULES.under(policy_id), rule_id, attrs, wait)

    def delete_bandwidth_limit_rule(
        self, policy_id: str, rule_id: str, *, wait: WaitMode | None = None
    ) -> None:
        self._delete(BANDWIDTH_LIMIT_RULES.under(policy_id), rule_id, wait)

    def create_dscp_marking_rule(
        self, policy_id: str, *, wait: WaitMode | None = None, **attrs: Any
    ) -> Json:
        return self._create(DSCP_MARKING_RULES.under(policy_id), attrs, wait)

    def list_dscp_marking_rules(self, policy_id: str, **filters: Any) -> list[Json]:
        return self._list(DSCP_MARKING_RULES.under(policy_id), filters)

    def get_dscp_marking_rule(self, policy_id: str, rule_id: str) -> Json:
        return self._get(DSCP_MARKING_RULES.under(policy_id), rule_id)

    def update_dscp_marking_rule(
        self, policy_id: str, rule_id: str, *, wait: WaitMode | None = None, **attrs: Any
    ) -> Json:
        return self._update(DSCP_MARKING_RULES.under(policy_id), rule_id, attrs, wait)

    def delete_dscp_marking_rule(
        self, policy_id: str, rule_id: str, *, wait: WaitMode | None = None
    ) -> None:
        self._delete(DSCP_MARKING_RULES.under(policy_id), rule_id, wait)

    # ------------------------------------------------------------------ load balancers

    def create_loadbalancer(self, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._create(LOADBALANCERS, attrs, wait)

    def list_loadbalancers(self, **filters: Any) -> list[Json]:
        return self._list(LOADBALANCERS, filters)

    def get_loadbalancer(self, lb_id: str) -> Json:
        return self._get(LOADBALANCERS, lb_id)

    def find_loadbalancer(self, ref: str) -> Json:
        return self._find(LOADBALANCERS, ref)

    def update_loadbalancer(
        self, lb_id: str, *, wait: WaitMode | None = None, **attrs: Any
    ) -> Json:
        return self._update(LOADBALANCERS, lb_id, attrs, wait)

    def delete_loadbalancer(
        self, lb_id: str, *, cascade: bool = False, wait: WaitMode | None = None
    ) -> None:
        """``cascade`` deletes listeners, pools, members and monitors too (Octavia)."""
        self._delete(LOADBALANCERS, lb_id, wait, cascade=True if cascade else None)

    def create_listener(self, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._create(LISTENERS, attrs, wait)

    def list_listeners(self, **filters: Any) -> list[Json]:
        return self._list(LISTENERS, filters)

    def get_listener(self, listener_id: str) -> Json:
        return self._get(LISTENERS, listener_id)

    def find_listener(self, ref: str) -> Json:
        return self._find(LISTENERS, ref)

    def update_listener(
        self, listener_id: str, *, wait: WaitMode | None = None, **attrs: Any
    ) -> Json:
        return self._update(LISTENERS, listener_id, attrs, wait)

    def delete_listener(self, listener_id: str, *, wait: WaitMode | None = None) -> None:
        self._delete(LISTENERS, listener_id, wait)

    def create_pool(self, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._create(POOLS, attrs, wait)

    def list_pools(self, **filters: Any) -> list[Json]:
        return self._list(POOLS, filters)

    def get_pool(self, pool_id: str) -> Json:
        return self._get(POOLS, pool_id)

    def find_pool(self, ref: str) -> Json:
        return self._find(POOLS, ref)

    def update_pool(self, pool_id: str, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._update(POOLS, pool_id, attrs, wait)

    def delete_pool(self, pool_id: str, *, wait: WaitMode | None = None) -> None:
        self._delete(POOLS, pool_id, wait)

    def create_member(self, pool_id: str, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._create(MEMBERS.under(pool_id), attrs, wait)

    def list_members(self, pool_id: str, **filters: Any) -> list[Json]:
        return self._list(MEMBERS.under(pool_id), filters)

    def get_member(self, pool_id: str, member_id: str) -> Json:
        return self._get(MEMBERS.under(pool_id), member_id)

    def find_member(self, pool_id: str, ref: str) -> Json:
        return self._find(MEMBERS.under(pool_id), ref)

    def update_member(
        self, pool_id: str, member_id: str, *, wait: WaitMode | None = None, **attrs: Any
    ) -> Json:
        return self._update(MEMBERS.under(pool_id), member_id, attrs, wait)

    def delete_member(self, pool_id: str, member_id: str, *, wait: WaitMode | None = None) -> None:
        self._delete(MEMBERS.under(pool_id), member_id, wait)

    def create_healthmonitor(self, *, wait: WaitMode | None = None, **attrs: Any) -> Json:
        return self._create(HEALTHMONITORS, attrs, wait)

    def list_healthmonitors(self, **filters: Any) -> list[Json]:
        return self._list(HEALTHMONITORS, filters)

    def get_healthmonitor(self, monitor_id: str) -> Json:
        return self._get(HEALTHMONITORS, monitor_id)

    def find_healthmonitor(self, ref: str) -> Json:
        return self._find(HEALTHMONITORS, ref)

    def update_healthmonitor(
        self, monitor_id: str, *, wait: WaitMode | None = None, **attrs: Any
    ) -> Json:
        return self._update(HEALTHMONITORS, monitor_id, attrs, wait)

    def delete_healthmonitor(self, monitor_id: str, *, wait: WaitMode | None = None) -> None:
        self._delete(HEALTHMONITORS, monitor_id, wait)

    # ------------------------------------------------------------------ netvirt extension

    def create_project(self, name: str, description: str = "") -> Json:
        return self._create(PROJECTS, {"name": name, "description": description})

    def list_projects(self) -> list[Json]:
        return self._list(PROJECTS, {})

    def find_project(self, ref: str) -> Json:
        """By id or name; the projects list takes no filters, so match here."""
        projects = self.list_projects()
        for key in ("id", "name"):
            hits = [p for p in projects if p.get(key) == ref]
            if len(hits) == 1:
                return hits[0]
        raise ApiError(404, "ProjectNotFound", f"No project found with id or name '{ref}'.")

    def create_token(self, project: str, role: str = "member", description: str = "") -> Json:
        """Mint a token for a project (id or name); the secret is only in this answer."""
        body = {"token": {"project": project, "role": role, "description": description}}
        data = self.request("POST", "/v2.0/netvirt/tokens", json=body)
        return cast(Json, data["token"])

    def whoami(self) -> Json:
        return cast(Json, self.request("GET", "/v2.0/netvirt/whoami"))

    def status(self) -> Json:
        data = self.request("GET", "/v2.0/netvirt/status")
        return cast(Json, data["status"])

    def trace(self, from_port: str, microflow: str) -> Json:
        """Trace a packet from a port (id, id prefix or name) through the logical topology."""
        body = {"trace": {"from_port": from_port, "microflow": microflow}}
        data = self.request("POST", "/v2.0/netvirt/trace", json=body)
        return cast(Json, data["trace"])

    def list_hosts(self) -> list[Json]:
        """Hosts with heartbeat, installed generation and counters (admin)."""
        data = self.request("GET", "/v2.0/netvirt/hosts")
        return cast(list[Json], data["hosts"])

    def get_host(self, name: str) -> Json:
        data = self.request("GET", f"/v2.0/netvirt/hosts/{_segment(name)}")
        return cast(Json, data["host"])

    def port_counters(self, port_id: str) -> Json:
        """Packets, bytes and drops by reason of a port, as its host last reported."""
        data = self.request("GET", f"/v2.0/netvirt/ports/{_segment(port_id)}/counters")
        return cast(Json, data["counters"])


def _segment(text: str) -> str:
    """One URL path segment: slashes quoted, and ``.``/``..`` too (URLs drop those)."""
    quoted = quote(text, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def _member_path(kind: Kind, ident: str) -> str:
    """Quote the id: a reference typed by a human must never become a path."""
    return f"{kind.path}/{_segment(ident)}"


def _next_link(data: Any, collection: str) -> str | None:
    for link in data.get(f"{collection}_links") or []:
        if link.get("rel") == "next" and link.get("href"):
            return str(link["href"])
    return None


def _plural(label: str) -> str:
    return label[:-1] + "ies" if label.endswith("y") else label + "s"


def _reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError):
        text = str(exc).lower()
        if "refused" in text:
            return "connection refused"
        if "name or service" in text or "nodename" in text:
            return "unknown host"
        return "cannot connect"
    return type(exc).__name__
