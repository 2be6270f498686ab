"""Projects, tokens and realization reports.

Tokens are random 32-byte URL-safe secrets; only their SHA-256 is stored, so a
leaked database does not leak credentials. A token maps to one project and a
role: ``admin`` or ``member`` for the tenant API, or ``host`` for host agents.
Host credentials are kept apart from tenant ones both ways: a host token may
call only the southbound API (``/v2.0/netvirt/sb``), which in turn refuses
tenant and admin tokens, so a compromised hypervisor cannot read or change
tenants' objects and a tenant cannot impersonate a hypervisor.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from netvirt.northbound.context import Context
from netvirt.northbound.default_sg import ensure_default_security_group
from netvirt.northbound.errors import Conflict, Forbidden, NotAuthenticated, not_found
from netvirt.northbound.schema import Meta, Project, Realization, Token
from netvirt.northbound.schema.base import iso, utcnow

ROLES = ("admin", "member", "host")
HOST_ROLE = "host"
ADMIN_PROJECT = "admin"


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _token(session: Session, secret: str | None) -> Token:
    if not secret:
        raise NotAuthenticated("Authentication required: send a token in X-Auth-Token.")
    token = session.execute(
        select(Token).where(Token.token_hash == hash_token(secret))
    ).scalar_one_or_none()
    if token is None:
        raise NotAuthenticated("The request you have made requires authentication.")
    return token


def authenticate(session: Session, secret: str | None) -> Context:
    """The tenant API's principal; host tokens are refused (403)."""
    token = _token(session, secret)
    if token.role == HOST_ROLE:
        raise Forbidden("Host credentials may call only the southbound API (/v2.0/netvirt/sb).")
    return Context(project_id=token.project_id, is_admin=token.role == "admin")


def authenticate_host(session: Session, secret: str | None) -> str:
    """The southbound API's principal: the id of a ``host`` token (others get 403)."""
    token = _token(session, secret)
    if token.role != HOST_ROLE:
        raise Forbidden("The southbound API needs host credentials (a token with role host).")
    return token.id


def project_to_dict(project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "name": project.name,
        "description": project.description,
        "created_at": iso(project.created_at),
    }


def create_project(
    session: Session, ctx: Context, name: str, description: str = "", project_id: str | None = None
) -> dict[str, Any]:
    if not ctx.is_admin:
        raise Forbidden("Only admins may create projects.")
    if session.execute(select(Project).where(Project.name == name)).first():
        raise Conflict(f"Project {name} already exists.", type="ProjectExists")
    if project_id and session.get(Project, project_id):
        raise Conflict(f"Project {project_id} already exists.", type="ProjectExists")
    project = Project(name=name, description=description)
    if project_id:
        project.id = project_id
    session.add(project)
    session.flush()
    ensure_default_security_group(session, project.id)
    return project_to_dict(project)


def list_projects(session: Session, ctx: Context) -> list[dict[str, Any]]:
    stmt = select(Project).order_by(Project.name)
    if not ctx.is_admin:
        stmt = stmt.where(Project.id == ctx.project_id)
    return [project_to_dict(p) for p in session.execute(stmt).scalars()]


def find_project(session: Session, ref: str) -> Project:
    project = (
        session.get(Project, ref)
        or session.execute(select(Project).where(Project.name == ref)).scalar_one_or_none()
    )
    if project is None:
        raise not_found("project", ref)
    return project


def create_token(
    session: Session, ctx: Context, project_ref: str, role: str, description: str = ""
) -> dict[str, Any]:
    """Create a token; the secret is in the result and nowhere else."""
    if not ctx.is_admin:
        raise Forbidden("Only admins may create tokens.")
    if role not in ROLES:
        from netvirt.northbound.errors import InvalidInput

        raise InvalidInput("role", f"'{role}' is not one of {', '.join(ROLES)}")
    project = find_project(session, project_ref)
    secret = secrets.token_urlsafe(32)
    token = Token(
        token_hash=hash_token(secret), project_id=project.id, role=role, description=description
    )
    session.add(token)
    session.flush()
    return {
        "id": token.id,
        "token": secret,
        "project_id": project.id,
        "role": role,
        "description": description,
    }


def bootstrap(session: Session, *, force: bool = False) -> dict[str, Any] | None:
    """Create the admin project and its first admin token, once.

    Returns ``None`` when an admin token already exists (unless ``force``):
    bootstrapping twice must not mint credentials silently.
    """
    admin = Context.admin()
    project = session.get(Project, ADMIN_PROJECT)
    if project is None:
        create_project(session, admin, "admin", "Cloud administrators", project_id=ADMIN_PROJECT)
    elif not force:
        has_token = session.execute(select(Token.id).where(Token.role == "admin")).first()
        if has_token:
            return None
    return create_token(session, admin, ADMIN_PROJECT, "admin", "bootstrap")


def report(session: Session, component: str, name: str, generation: int) -> None:
    """Upsert a realization report in one statement.

    Reports are written without the generation bump (they are discovered
    state), so nothing else serializes two first reports of one host: a plain
    read-then-insert would race on PostgreSQL. ``ON CONFLICT`` makes it atomic.
    """
    dialect = session.get_bind().dialect.name
    insert_fn = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert_fn(Realization).values(
        component=component, name=name, generation=generation, reported_at=utcnow()
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["component", "name"],
        set_={"generation": generation, "reported_at": utcnow()},
    )
    session.execute(stmt)


def status(session: Session) -> dict[str, Any]:
    nb = session.execute(select(Meta.generation).where(Meta.id == 1)).scalar_one()
    rows = list(session.execute(select(Realization).order_by(Realization.name)).scalars())
    compiled = next((r.generation for r in rows if r.component == "compiler"), 0)
    hosts = [
        {"host": r.name, "installed_generation": r.generation, "reported_at": iso(r.reported_at)}
        for r in rows
        if r.component == "host"
    ]
    installed = min((r.generation for r in rows if r.component == "host"), default=compiled)
    return {
        "nb_generation": nb,
        "compiled_generation": compiled,
        "installed_generation": min(installed, compiled),
        "hosts": hosts,
    }
