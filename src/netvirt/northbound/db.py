"""Database access: engine setup, schema migrations, and transactions.

Theory of operation
-------------------
* The embedded default is an SQLite file; ``NETVIRT_DB`` (or ``--db``) takes
  any SQLAlchemy URL, e.g. ``postgresql+psycopg://user@host/netvirt``.
* The schema is created and upgraded only through Alembic migrations
  (``netvirt/northbound/migrations``), so an existing database upgrades in
  place without losing data.
* :meth:`Database.write` is one transaction that first bumps the global NB
  generation. That first statement takes the write lock (SQLite) or the
  ``meta`` row lock (PostgreSQL), so writers are serialized: IPAM decisions
  made inside a write never race, and the generation orders every write.
  Unique constraints (IP per network, MAC per network, VNI) are the backstop.
* Reads use their own short transactions and never block on writers
  (SQLite WAL mode; PostgreSQL MVCC).
* Every write of this process also leaves a :class:`Touched` entry in a
  bounded change log (:meth:`Database.touched_since`): which NB objects
  (kind and id, as the compiler's snapshot names them) its rows belong to.
  The compiler reloads only those instead of the whole NB
  (``compiler/nb.py:refresh``). The entry is appended before the commit, so a
  reader that opened its snapshot under the write lock
  (:meth:`Database.read_logged`) has the entry of every write it can see.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from netvirt.northbound.schema import Meta

MIGRATIONS = Path(__file__).parent / "migrations"


def default_url() -> str:
    """``NETVIRT_DB``, else an SQLite file in ``NETVIRT_STATE_DIR`` (default
    ``/var/lib/netvirt`` for root, ``~/.local/share/netvirt`` otherwise)."""
    if os.environ.get("NETVIRT_DB"):
        return os.environ["NETVIRT_DB"]
    fallback = "/var/lib/netvirt" if os.geteuid() == 0 else "~/.local/share/netvirt"
    state_dir = Path(os.environ.get("NETVIRT_STATE_DIR", fallback)).expanduser()
    return f"sqlite:///{state_dir / 'netvirt.db'}"


@dataclass
class WriteResult:
    """What a write transaction returns to its caller: the generation it created."""

    generation: int = 0


# table -> (snapshot kind, attribute naming the object the row belongs to); tables not
# listed (meta, projects, tokens, realization) are not compiler input
OWNER: dict[str, tuple[str, str]] = {
    "networks": ("networks", "id"),
    "subnets": ("subnets", "id"),
    "ports": ("ports", "id"),
    "ip_allocations": ("ports", "port_id"),
    "port_security_groups": ("ports", "port_id"),
    "security_groups": ("security_groups", "id"),
    "security_group_rules": ("security_groups", "security_group_id"),
    "qos_policies": ("qos_policies", "id"),
    "qos_rules": ("qos_policies", "policy_id"),
    "routers": ("routers", "id"),
    "floatingips": ("floatingips", "id"),
    "loadbalancers": ("loadbalancers", "id"),
    "lb_listeners": ("listeners", "id"),
    "lb_pools": ("pools", "id"),
    "lb_members": ("members", "id"),
    "lb_healthmonitors": ("healthmonitors", "id"),
}
LOG_SIZE = 4096


@dataclass(frozen=True)
class Touched:
    """The NB objects one write changed: ``rows`` (kind, id); ``unknown`` kinds had rows
    changed by a bulk statement (``DELETE … WHERE``) whose ids the ORM does not see."""

    seq: int
    generation: int
    rows: frozenset[tuple[str, str]]
    unknown: frozenset[str]
    bumped: bool = True  # a write of desired state (False: discovered state, e.g. status)


@dataclass
class _Collector:
    rows: set[tuple[str, str]] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)

    def after_flush(self, session: Session, _context: object) -> None:
        for obj in (*session.new, *session.dirty, *session.deleted):
            owner = OWNER.get(getattr(obj, "__tablename__", ""))
            if owner is not None:
                self.rows.add((owner[0], str(getattr(obj, owner[1]))))
            if getattr(obj, "__tablename__", "") == "subnets":
                self.rows.add(("networks", str(obj.network_id)))  # a network lists its subnets

    def execute(self, state: ORMExecuteState) -> None:
        if (state.is_delete or state.is_update) and state.bind_mapper is not None:
            owner = OWNER.get(str(getattr(state.bind_mapper.class_, "__tablename__", "")))
            if owner is not None:
                self.unknown.add(owner[0])


def _size(entry: Touched) -> int:
    """Objects an entry touched; a bulk statement on a kind none of whose rows the entry
    names counts as a thousand (a port write's ``DELETE FROM ip_allocations WHERE
    port_id = …`` names its port, so it counts nothing more)."""
    kinds = {kind for kind, _ in entry.rows}
    return len(entry.rows) + 1000 * len(entry.unknown - kinds)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


class Database:
    """The NB store's connection: one per process, thread-safe."""

    def __init__(self, url: str | None = None, *, migrate: bool = True) -> None:
        self.url = url or default_url()
        self.engine = make_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite allows one writer; taking a process-local lock first avoids
        # burning the busy timeout when many API threads write at once.
        self._write_lock = threading.Lock() if self.url.startswith("sqlite") else None
        self._changed = threading.Condition()
        self._log: deque[Touched] = deque(maxlen=LOG_SIZE)
        self._log_lock = threading.Lock()
        self._seq = 0
        self._bumping = 0  # bumping writes in progress (an int: PostgreSQL allows several)
        self.writes = 0  # commits of this process so far (see wait_changed)
        if migrate:
            self.upgrade()

    def upgrade(self, revision: str = "head") -> None:
        command.upgrade(alembic_config(self.engine), revision)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def write(self, result: WriteResult | None = None, *, bump: bool = True) -> Iterator[Session]:
        """One write transaction; bumps the generation before anything else.

        ``bump=False`` is for discovered state (realization reports, port
        status): it changes no desired state, so it must not look like a change.
        """
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        self._bumping += bump
        try:
            with self._sessions() as session, session.begin():
                if bump:
                    session.execute(
                        update(Meta).where(Meta.id == 1).values(generation=Meta.generation + 1)
                    )
                generation = session.execute(
                    select(Meta.generation).where(Meta.id == 1)
                ).scalar_one()
                collector = _Collector()
                event.listen(session, "after_flush", collector.after_flush)
                event.listen(session, "do_orm_execute", collector.execute)
                yield session
                session.flush()
                self._record(generation, collector, bump)
            if result is not None:
                result.generation = generation
        finally:
            self._bumping -= bump
            if lock is not None:
                lock.release()
        with self._changed:
            self.writes += 1
            self._changed.notify_all()

    def _record(self, generation: int, collector: _Collector, bumped: bool) -> None:
        with self._log_lock:
            self._seq += 1
            rows, unknown = frozenset(collector.rows), frozenset(collector.unknown)
            self._log.append(Touched(self._seq, generation, rows, unknown, bumped))

    @contextmanager
    def read_logged(self) -> Iterator[tuple[Session, int, int] | None]:
        """A read transaction together with the change log position it reflects:
        (session, generation, seq) — every write of this process up to ``seq`` is visible
        in the session and nothing later is. None where that cannot be known (no
        process-local write lock: PostgreSQL); the caller then reads everything."""
        lock = self._write_lock
        if lock is None:
            yield None
            return
        with self._sessions() as session, session.begin():
            with lock:  # no write in flight: the snapshot and the log agree
                generation = session.execute(
                    select(Meta.generation).where(Meta.id == 1)
                ).scalar_one()
                with self._log_lock:
                    seq = self._seq
            yield session, generation, seq

    def writing(self) -> bool:
        """A write of desired state (one that bumps the generation) is in progress."""
        return self._bumping > 0

    def touched_count(self, seq: int) -> int | None:
        """How many objects the writes after ``seq`` touched; None if unknown."""
        with self._log_lock:
            entries = [t for t in self._log if t.seq > seq]
            if len(entries) != self._seq - seq:
                return None
        return sum(_size(t) for t in entries if t.bumped)

    def touched_since(self, seq: int, upto: int) -> list[Touched] | None:
        """Entries after ``seq`` up to ``upto``; None when some have left the log."""
        with self._log_lock:
            entries = [t for t in self._log if seq < t.seq <= upto]
        if len(entries) != upto - seq:
            return None
        return entries

    def generation(self) -> int:
        with self.read() as session:
            return session.execute(select(Meta.generation).where(Meta.id == 1)).scalar_one()

    def wait_changed(self, timeout: float, seen: int | None = None) -> None:
        """Block until any write in this process commits (or ``timeout`` passes).

        ``seen``: the :attr:`writes` count the caller read before it last looked at the
        store; a write committed since then returns at once. Without it, a write that
        commits between the caller's look and this wait is only noticed after
        ``timeout`` (the compiler lost up to half a second per port create that way)."""
        with self._changed:
            if seen is None or self.writes == seen:
                self._changed.wait(timeout)

    def dispose(self) -> None:
        self.engine.dispose()
