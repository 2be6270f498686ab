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
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

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
        try:
            with self._sessions() as session, session.begin():
                if bump:
                    session.execute(
                        update(Meta).where(Meta.id == 1).values(generation=Meta.generation + 1)
                    )
                generation = session.execute(
                    select(Meta.generation).where(Meta.id == 1)
                ).scalar_one()
                yield session
            if result is not None:
                result.generation = generation
        finally:
            if lock is not None:
                lock.release()
        with self._changed:
            self._changed.notify_all()

    def generation(self) -> int:
        with self.read() as session:
            return session.execute(select(Meta.generation).where(Meta.id == 1)).scalar_one()

    def wait_changed(self, timeout: float) -> None:
        """Block until any write in this process commits (or ``timeout`` passes)."""
        with self._changed:
            self._changed.wait(timeout)

    def dispose(self) -> None:
        self.engine.dispose()
