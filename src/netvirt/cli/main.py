"""Entry point of the ``netvirt`` command: server and admin verbs.

Resource verbs (network, subnet, port, …) live in their own modules and are
registered here; they talk to the API only through :mod:`netvirt.api.client`.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from netvirt.cli import agent as agent_cli
from netvirt.cli import hosts, l3, lb, meta, resources, security
from netvirt.cli import lab as lab_cli
from netvirt.northbound import identity
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database, default_url

app = typer.Typer(no_args_is_help=True, help="netvirt: multi-tenant network virtualization.")
admin_app = typer.Typer(no_args_is_help=True, help="Administration: bootstrap, projects, tokens.")
app.add_typer(admin_app, name="admin")
app.add_typer(resources.network_app, name="network")
app.add_typer(resources.subnet_app, name="subnet")
app.add_typer(resources.port_app, name="port")
app.add_typer(l3.router_app, name="router")
app.add_typer(l3.fip_app, name="floating-ip")
app.add_typer(security.sg_app, name="security-group")
app.add_typer(security.qos_app, name="qos")
app.add_typer(lb.lb_app, name="lb")
app.add_typer(hosts.host_app, name="host")
app.add_typer(meta.meta_app)
app.command("agent")(agent_cli.agent)
app.command("datapath")(agent_cli.datapath)
app.add_typer(lab_cli.lab_app, name="lab")
admin_app.add_typer(meta.project_app, name="project")
admin_app.add_typer(meta.token_app, name="token")
console = Console(emoji=False)  # MACs like fa:16:3e:cd:.. are not emoji codes
err = Console(stderr=True, emoji=False)

DbOption = Annotated[
    str, typer.Option("--db", envvar="NETVIRT_DB", help="SQLAlchemy URL of the NB store")
]


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 9696,
    db: DbOption = "",
    bootstrap: Annotated[
        bool, typer.Option(help="Create the admin token first if none exists, and print it")
    ] = False,
) -> None:
    """Run the API server and the central compiler on the embedded store (SQLite) or --db."""
    import threading

    import uvicorn

    from netvirt.api.app import create_app
    from netvirt.compiler.service import CompilerService

    tune_gc()
    import logging

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("netvirt.compiler").setLevel(logging.INFO)  # one line per compile
    database = Database(db or default_url())
    if bootstrap:
        _bootstrap(database, force=False, quiet_if_exists=True)
    app = create_app(database)
    compiler = CompilerService(database)
    app.state.compiler = compiler
    stop = threading.Event()
    thread = threading.Thread(target=compiler.run, args=(stop,), name="compiler", daemon=True)
    thread.start()
    console.print(f"[bold]netvirt[/] API on http://{host}:{port}/  (store: {database.url})")
    console.print(f"web GUI on http://{host}:{port}/ui/")
    try:
        # idle keep-alive connections are closed after 75 s, not uvicorn's 5 s: on a busy
        # server the idle timer fires late and races the client's next request on that
        # connection, which the client then sees as a dropped connection (ReadError)
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=75)
    finally:
        stop.set()


def tune_gc() -> None:
    """Collect young objects less often: a compile at 10k ports allocates millions of
    long-lived objects, and the default thresholds ran a full collection over all of
    them again and again (a 10k-port compile took 35 s instead of 13 s)."""
    import gc

    gc.set_threshold(100_000, 50, 100)


def _bootstrap(database: Database, *, force: bool, quiet_if_exists: bool = False) -> None:
    with database.write() as session:
        token = identity.bootstrap(session, force=force)
    if token is None:
        if quiet_if_exists:
            console.print(
                "admin token already bootstrapped (use `netvirt admin bootstrap --force`)"
            )
            return
        err.print("[red]error:[/] an admin token already exists; pass --force to mint another")
        raise typer.Exit(1)
    console.print(f"admin token: [bold]{token['token']}[/]")
    console.print(f"export NETVIRT_TOKEN={token['token']}")


@admin_app.command("bootstrap")
def admin_bootstrap(
    db: DbOption = "",
    force: Annotated[
        bool, typer.Option(help="Mint another admin token even if one exists")
    ] = False,
) -> None:
    """Create the admin project and the first admin token (printed once)."""
    _bootstrap(Database(db or default_url()), force=force)


@admin_app.command("project-create")
def admin_project_create(name: str, db: DbOption = "", description: str = "") -> None:
    """Create a project directly in the store (no server needed)."""
    with Database(db or default_url()).write() as session:
        project = identity.create_project(session, Context.admin(), name, description)
    console.print_json(json.dumps(project))


@admin_app.command("token-create")
def admin_token_create(
    project: str, db: DbOption = "", role: Annotated[str, typer.Option()] = "member"
) -> None:
    """Create a token for a project directly in the store; prints the secret once."""
    with Database(db or default_url()).write(bump=False) as session:
        token = identity.create_token(session, Context.admin(), project, role)
    console.print_json(json.dumps(token))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
