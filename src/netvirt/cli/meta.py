"""``netvirt status``, ``netvirt whoami`` and ``netvirt admin project|token …`` over the API.

The ``admin project-create`` / ``token-create`` verbs of :mod:`netvirt.cli.main`
write the store directly (for bootstrapping a host with no server); these go
through the API like every other verb, so they work against a remote server.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from netvirt.cli.common import Cli, Description, NameArg, verb
from netvirt.cli.output import Column, print_item, print_json, print_list

meta_app = typer.Typer(help="Realization status and identity.")
project_app = typer.Typer(no_args_is_help=True, help="Projects, over the API (admin).")
token_app = typer.Typer(no_args_is_help=True, help="Tokens, over the API (admin).")


class Role(StrEnum):
    member = "member"
    admin = "admin"


HOST_COLUMNS: list[Column] = [
    ("Host", "host"),
    ("Installed generation", "installed_generation"),
    ("Reported at", "reported_at"),
]
PROJECT_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Name", "name"),
    ("Description", "description"),
    ("Created", "created_at"),
]


@verb(meta_app, "status")
def status(cli: Cli) -> None:
    """NB, compiled and installed generations: is the last change live yet?"""
    data = cli.client.status()
    if cli.json:
        print_json(data)
        return
    print_item(data, False, hide=["hosts"])
    print_list(data.get("hosts") or [], HOST_COLUMNS, False, title="Hosts")


@verb(meta_app, "trace")
def trace(
    cli: Cli,
    microflow: Annotated[
        str, typer.Argument(help="What to send, e.g. 'ip4.dst == 8.8.8.8 && tcp.dst == 443'")
    ] = "",
    from_port: Annotated[
        str, typer.Option("--from", help="Source port: name, id or id prefix")
    ] = "",
) -> None:
    """Walk a packet through the virtual network: each stage, flow, provenance and verdict."""
    if not from_port:
        raise typer.BadParameter("give the source port with --from")
    data = cli.client.trace(from_port, microflow)
    if cli.json:
        print_json(data)
        return
    typer.echo(data["text"])


@verb(meta_app, "whoami")
def whoami(cli: Cli) -> None:
    """The project and role of the token in use."""
    data = cli.client.whoami()
    print_item(data if cli.json else {**data, "url": cli.client.base_url}, cli.json)


@verb(project_app, "create")
def project_create(cli: Cli, name: NameArg, description: Description = None) -> None:
    """Create a project (it gets its default security group)."""
    print_item(cli.client.create_project(name, description or ""), cli.json)


@verb(project_app, "list")
def project_list(cli: Cli) -> None:
    """List projects (a member sees only its own)."""
    print_list(cli.client.list_projects(), PROJECT_COLUMNS, cli.json)


@verb(token_app, "create")
def token_create(
    cli: Cli,
    project: Annotated[str, typer.Argument(help="Project name or id.")],
    role: Annotated[Role, typer.Option(help="member or admin.")] = Role.member,
    description: Description = None,
) -> None:
    """Mint a token for a project; the secret is shown this once only."""
    token = cli.client.create_token(project, role.value, description or "")
    print_item(token, cli.json)
    if not cli.json:
        typer.echo(f"export NETVIRT_TOKEN={token['token']}")
