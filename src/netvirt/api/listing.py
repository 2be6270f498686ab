"""Neutron list semantics: filters, ``fields=``, sorting and marker pagination.

Services return every object the context may see; this module applies the
query string to that list. Filters compare as Neutron does: several values of
one key are OR'ed, keys are AND'ed, booleans match ``true``/``True``, and a
list-of-dict attribute matches ``key=value`` against any element
(``?fixed_ips=ip_address=10.0.0.5``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams

from netvirt.northbound.errors import BadRequest, InvalidInput

RESERVED = {
    "fields",
    "limit",
    "marker",
    "page_reverse",
    "sort_key",
    "sort_dir",
    "wait",
    "timeout",
    "cascade",
}


def _norm(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def _matches(value: Any, wanted: list[str]) -> bool:
    if isinstance(value, list):
        for want in wanted:
            if "=" in want:
                key, _, sub = want.partition("=")
                if any(isinstance(v, dict) and _norm(v.get(key)) == sub for v in value):
                    return True
            elif want in (_norm(v) for v in value):
                return True
        return False
    actual = _norm(value)
    if isinstance(value, bool):
        return actual in (w.lower() for w in wanted)
    return actual in wanted


def apply_filters(items: list[dict[str, Any]], params: QueryParams) -> list[dict[str, Any]]:
    filters: dict[str, list[str]] = {}
    for key, value in params.multi_items():
        if key not in RESERVED:
            filters.setdefault(key, []).append(value)
    if not filters:
        return items
    return [
        item
        for item in items
        if all(k in item and _matches(item[k], v) for k, v in filters.items())
    ]


def select_fields(item: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    if not fields:
        return item
    return {k: v for k, v in item.items() if k in fields}


def paginate(
    items: list[dict[str, Any]], params: QueryParams, base_url: str, collection: str
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    sort_keys = params.getlist("sort_key") or ["id"]
    sort_dirs = params.getlist("sort_dir") or ["asc"] * len(sort_keys)
    if len(sort_dirs) != len(sort_keys) or any(d not in ("asc", "desc") for d in sort_dirs):
        raise BadRequest(
            "The number of sort_keys and sort_dirs must be the same, dirs asc or desc."
        )
    for key in sort_keys:
        if items and key not in items[0]:
            raise InvalidInput("sort_key", f"'{key}' is not an attribute of {collection}")
    for key, direction in reversed(list(zip(sort_keys, sort_dirs, strict=True))):

        def sort_value(item: dict[str, Any], k: str = key) -> str:
            return _norm(item.get(k))

        items = sorted(items, key=sort_value, reverse=direction == "desc")
    reverse = params.get("page_reverse", "false").lower() == "true"
    if reverse:
        items = list(reversed(items))
    marker = params.get("marker")
    if marker:
        ids = [i["id"] for i in items]
        items = items[ids.index(marker) + 1 :] if marker in ids else items
    links: list[dict[str, str]] = []
    limit_raw = params.get("limit")
    if limit_raw:
        try:
            limit = int(limit_raw)
        except ValueError:
            raise InvalidInput("limit", f"'{limit_raw}' is not an integer") from None
        if limit < 0:
            raise InvalidInput("limit", "must be >= 0")
        if limit and len(items) > limit:
            items = items[:limit]
            query = [(k, v) for k, v in params.multi_items() if k != "marker"]
            query.append(("marker", items[-1]["id"]))
            links.append({"href": f"{base_url}?{urlencode(query)}", "rel": "next"})
    if reverse:
        items = list(reversed(items))
    return items, links


def render_list(
    items: list[dict[str, Any]], params: QueryParams, base_url: str, collection: str
) -> dict[str, Any]:
    items = apply_filters(items, params)
    items, links = paginate(items, params, base_url, collection)
    fields = params.getlist("fields")
    body: dict[str, Any] = {collection: [select_fields(i, fields) for i in items]}
    if links:
        body[f"{collection}_links"] = links
    return body
