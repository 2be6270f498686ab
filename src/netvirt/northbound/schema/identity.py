"""Projects, API tokens, the global generation counter and realization reports."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from netvirt.northbound.schema.base import Base, new_id, utcnow


class Meta(Base):
    """A single row (id=1) holding the NB generation.

    Every write transaction starts with ``UPDATE meta SET generation =
    generation + 1``: the row lock serializes writers on PostgreSQL and takes
    SQLite's write lock up front, so the generation is a total order of writes.
    """

    __tablename__ = "meta"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(
        String(64), primary_key=True, default=lambda: new_id().replace("-", "")
    )
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Token(Base):
    """An API token. Only its SHA-256 is stored; the secret is shown once at creation."""

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Realization(Base):
    """Generations reported by the control plane: the compiler (``component='compiler'``)
    and one row per host agent (``component='host'``, ``name`` = chassis name)."""

    __tablename__ = "realization"
    component: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    reported_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
