"""Rendering API objects: Rich tables for people, raw JSON for scripts.

Lists print one row per object with a few columns chosen per resource;
``show`` prints every field as a two-column table. Values from the server are
wrapped in :class:`rich.text.Text` so a name like ``[bold]`` is printed, not
interpreted as markup. When stdout is not a terminal the table is laid out
wide, so piping to ``grep`` never folds an id across two lines.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from netvirt.api.client import Json

Getter = str | Callable[[Json], Any]
Column = tuple[str, Getter]

PIPE_WIDTH = 250


def console() -> Console:
    if sys.stdout.isatty():
        return Console(emoji=False)  # ":cd:" in a MAC is not an emoji
    return Console(width=PIPE_WIDTH, emoji=False)


def fmt(value: Any) -> str:
    """One cell: readable scalars, one line per list element, ``k=v`` for dicts."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        if set(value) == {"id"}:  # Octavia's parent/child references
            return str(value["id"])
        return ", ".join(f"{k}={_inline(v)}" for k, v in value.items() if v not in (None, ""))
    if isinstance(value, list | tuple):
        return "\n".join(fmt(v) for v in value)
    return str(value)


def _inline(value: Any) -> str:
    """A value inside a ``k=v`` pair: nested containers as compact JSON."""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return fmt(value)


def cell(item: Json, getter: Getter) -> str:
    value = item.get(getter) if isinstance(getter, str) else getter(item)
    return fmt(value)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def print_list(
    items: Sequence[Json], columns: Sequence[Column], as_json: bool, title: str | None = None
) -> None:
    if as_json:
        print_json(list(items))
        return
    table = Table(title=title, show_lines=False, header_style="bold")
    for header, _ in columns:
        table.add_column(header, overflow="fold")
    for item in items:
        table.add_row(*(Text(cell(item, getter)) for _, getter in columns))
    console().print(table)


def print_item(item: Json, as_json: bool, hide: Iterable[str] = ()) -> None:
    """Every field, sorted, except ``hide`` (printed separately by the caller)."""
    if as_json:
        print_json(item)
        return
    skip = set(hide)
    table = Table(show_header=True, header_style="bold")
    table.add_column("Field", style="cyan", no_wrap=True)
    table.add_column("Value", overflow="fold")
    for key in sorted(item):
        if key not in skip:
            table.add_row(Text(key), Text(fmt(item[key])))
    console().print(table)


def print_done(message: str) -> None:
    """A one-line confirmation (delete, remove) on stdout."""
    typer.echo(message)


def ports_of(rule: Json) -> str:
    """A security group rule's port range as ``80``, ``80-90`` or ``any``."""
    low, high = rule.get("port_range_min"), rule.get("port_range_max")
    if low is None and high is None:
        return "any"
    if low == high or high is None:
        return str(low)
    return f"{low}-{high}"


def remote_of(rule: Json) -> str:
    if rule.get("remote_group_id"):
        return f"group {rule['remote_group_id']}"
    return str(rule.get("remote_ip_prefix") or "any")


def fixed_ips_of(port: Json) -> str:
    return "\n".join(str(ip.get("ip_address", "")) for ip in port.get("fixed_ips") or [])


RULE_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Direction", "direction"),
    ("Ethertype", "ethertype"),
    ("Protocol", lambda r: r.get("protocol") or "any"),
    ("Ports", ports_of),
    ("Remote", remote_of),
]
