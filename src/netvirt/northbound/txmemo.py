"""Reads remembered for the rest of one write transaction, until a write could change them.

Why: a bulk port create (500 ports per request in the control-plane benchmark) asked the
database for the same network's subnets and the same project's default security group
once per port — two of the ~6 statements each port cost. Within one transaction nothing
but the transaction itself changes those rows (the database's isolation), so a read can
be remembered as long as the transaction writes nothing of the kinds it depends on.

Invalidation is conservative: a flush that inserts, updates or deletes any object of a
memo's kinds drops that memo, and any ORM statement that is not a SELECT (a bulk
``UPDATE``/``DELETE``, whose rows the session cannot see) drops every memo. The memo
lives in ``session.info``, so it ends with the session (one transaction).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

T = TypeVar("T")

_KEY = "netvirt.txmemo"


class _Memos:
    """The session's memos: value and the ORM classes it depends on, by key."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: dict[tuple[Any, ...], tuple[Any, tuple[type, ...]]] = {}


def _memos(session: Session) -> _Memos:
    found: _Memos | None = session.info.get(_KEY)
    if found is None:
        found = session.info[_KEY] = _Memos()
        event.listen(session, "after_flush", _drop_written)
        event.listen(session, "do_orm_execute", _drop_on_write_statement)
    return found


def remembered(
    session: Session, key: tuple[Any, ...], kinds: tuple[type, ...], load: Callable[[], T]
) -> T:
    """``load()``'s result, read once per transaction until an object of ``kinds`` is
    written (``key`` names the read; it must say everything the read depends on)."""
    memos = _memos(session)
    hit = memos.values.get(key)
    if hit is not None:
        value: T = hit[0]
        return value
    value = load()
    if value is not None:  # an absent row may be created by the caller next: not kept
        memos.values[key] = (value, kinds)
    return value


def _drop_written(session: Session, _context: object) -> None:
    memos: _Memos | None = session.info.get(_KEY)
    if memos is None or not memos.values:
        return
    written = {type(obj) for obj in (*session.new, *session.dirty, *session.deleted)}
    if not written:
        return
    for key, (_value, kinds) in list(memos.values.items()):
        if any(issubclass(cls, kinds) for cls in written):
            del memos.values[key]


def _drop_on_write_statement(state: ORMExecuteState) -> None:
    if not state.is_select:
        memos: _Memos | None = state.session.info.get(_KEY)
        if memos is not None:
            memos.values.clear()
