"""Fetching rows with tenancy applied.

``visible`` answers "may this context read it?"; ``fetch_owned`` answers "may
it change it?". An object the context may not read is reported exactly like a
missing one (404), so ids of other projects leak nothing.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from netvirt.northbound.context import Context
from netvirt.northbound.errors import Forbidden, not_found
from netvirt.northbound.schema import Network

T = TypeVar("T")


def fetch(session: Session, model: type[T], ident: str, kind: str) -> T:
    if "\x00" in ident or len(ident) > 64:
        raise not_found(kind, ident.replace("\x00", "\\x00")[:64])
    row = session.get(model, ident)
    if row is None:
        raise not_found(kind, ident)
    pin(session, row)
    return row


def pin(session: Session, row: object) -> None:
    """Keep ``row`` in the session's identity map for the rest of the transaction.

    The identity map holds rows weakly: in a bulk create, the network (or security
    group) one item fetched is collected once that item is done, and the next item's
    ``session.get`` read it again (a SELECT per port for the same network). A strong
    reference for the session's life makes the later gets dictionary lookups; the
    session (one transaction) is short-lived, so nothing is held for long."""
    pinned: dict[int, object] = session.info.setdefault("netvirt.pinned", {})
    pinned[id(row)] = row  # one reference per row, however often it is fetched


def fetch_owned(session: Session, ctx: Context, model: type[T], ident: str, kind: str) -> T:
    """A row the context owns (admins own everything); otherwise 404."""
    row = fetch(session, model, ident, kind)
    if not ctx.owns(getattr(row, "project_id", None)):
        raise not_found(kind, ident)
    return row


def owned_clause(ctx: Context, model: Any) -> ColumnElement[bool] | None:
    """SQL filter for rows the context owns (``None`` = no filter for admins)."""
    if ctx.is_admin:
        return None
    clause: ColumnElement[bool] = model.project_id == ctx.project_id
    return clause


def network_visible_clause(ctx: Context) -> ColumnElement[bool] | None:
    if ctx.is_admin:
        return None
    return or_(Network.project_id == ctx.project_id, Network.shared, Network.external)


def network_visible(ctx: Context, net: Network) -> bool:
    return ctx.is_admin or net.project_id == ctx.project_id or net.shared or net.external


def fetch_network(session: Session, ctx: Context, ident: str, *, write: bool = False) -> Network:
    net = fetch(session, Network, ident, "network")
    if not network_visible(ctx, net):
        raise not_found("network", ident)
    if write and not ctx.owns(net.project_id):
        raise Forbidden(f"Project {ctx.project_id} may not change network {ident}.")
    return net


def network_usable(ctx: Context, net: Network) -> bool:
    """May the context plug a port of its own into ``net``?"""
    return ctx.owns(net.project_id) or net.shared


def select_visible(model: Any, clause: ColumnElement[bool] | None) -> Any:
    stmt = select(model)
    if clause is not None:
        stmt = stmt.where(clause)
    return stmt.order_by(model.id)
