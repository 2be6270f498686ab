"""What every resource verb shares: connection options, the client, error handling.

Verbs are plain functions taking a :class:`Cli` first; :func:`verb` registers
them on a Typer group and adds ``--url``/``--token`` (and ``--json``,
``--wait`` where they apply) to their signature, so the options are declared
once and every verb turns an :class:`ApiError` into one ``error: …`` line on
stderr and exit status 1, never a traceback.

The client is built by the module-level :data:`client_factory`; tests swap
it for one that runs over Starlette's TestClient.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer

from netvirt.api.client import DEFAULT_URL, ApiError, Json, NetvirtClient, WaitMode

F = TypeVar("F", bound=Callable[..., None])


class Wait(StrEnum):
    compiled = "compiled"
    installed = "installed"


class UsageProblem(Exception):
    """Options that make no sense together; reported like a usage error (exit 2)."""


def default_factory(url: str, token: str | None) -> NetvirtClient:
    return NetvirtClient(url, token)


client_factory: Callable[[str, str | None], NetvirtClient] = default_factory


class Cli:
    """Per-invocation state: options and a lazily built client."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        json: bool = False,
        wait: WaitMode | None = None,
        page_size: int | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.json = json
        self.wait: WaitMode | None = wait
        self.page_size = page_size
        self._client: NetvirtClient | None = None

    @property
    def client(self) -> NetvirtClient:
        if self._client is None:
            self._client = client_factory(self.url, self.token)
            self._client.wait = self.wait
            if self.page_size:
                self._client.page_size = self.page_size
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def warn_unrealized(self) -> None:
        """A write committed but did not become live within the wait timeout."""
        if self.wait and self._client and self._client.last_realization == "timeout":
            typer.echo(f"warning: committed, but not yet {self.wait} (timed out)", err=True)


UrlOpt = Annotated[
    str,
    typer.Option("--url", envvar="NETVIRT_URL", help="API endpoint.", rich_help_panel="Connection"),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="NETVIRT_TOKEN",
        help="API token (X-Auth-Token).",
        show_default=False,
        rich_help_panel="Connection",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the raw JSON of the API.")]
WaitOpt = Annotated[
    Wait | None,
    typer.Option("--wait", help="Return only once the change is compiled or installed."),
]
PageOpt = Annotated[
    int | None,
    typer.Option("--page-size", min=1, help="Objects per request (every page is fetched)."),
]

_COMMON: list[tuple[str, Any, Any]] = [
    ("url", UrlOpt, DEFAULT_URL),
    ("token", TokenOpt, None),
]


def verb(
    group: typer.Typer,
    name: str,
    *,
    json: bool = True,
    write: bool = False,
    pages: bool = False,
) -> Callable[[F], F]:
    """Register ``fn(cli, ...)`` as ``group name`` with the shared options added."""
    extra = list(_COMMON)
    if json:
        extra.append(("json_out", JsonOpt, False))
    if write:
        extra.append(("wait", WaitOpt, None))
    if pages:
        extra.append(("page_size", PageOpt, None))

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "cli"]
        added = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
            for n, a, d in extra
        ]

        def command(**kwargs: Any) -> None:
            wait = kwargs.pop("wait", None)
            cli = Cli(
                kwargs.pop("url"),
                kwargs.pop("token"),
                json=kwargs.pop("json_out", False),
                wait=wait.value if wait is not None else None,
                page_size=kwargs.pop("page_size", None),
            )
            try:
                fn(cli, **kwargs)
                cli.warn_unrealized()
            except ApiError as exc:
                fail(exc.message)
            except UsageProblem as exc:
                fail(str(exc), code=2)
            finally:
                cli.close()

        # copy the help text and names, but no __wrapped__: Typer must see the new signature
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(command, attr, getattr(fn, attr))
        params = own + added
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        group.command(name)(command)
        return fn

    return decorate


def fail(message: str, code: int = 1) -> None:
    """One line on stderr and a non-zero exit: the whole error contract of the CLI."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def usage(message: str) -> UsageProblem:
    return UsageProblem(message)


def only_set(**attrs: Any) -> Json:
    """The attributes a user actually gave (``None`` means "not given")."""
    return {k: v for k, v in attrs.items() if v is not None}


def require_change(attrs: Json) -> Json:
    if not attrs:
        raise usage("nothing to update: give at least one option")
    return attrs


def parse_pair(text: str, sep: str, what: str) -> tuple[str, str]:
    """``A<sep>B`` with both parts non-empty, else a usage error naming the option."""
    left, found, right = text.partition(sep)
    if not found or not left or not right:
        raise usage(f"{what} expects A{sep}B, got '{text}'")
    return left.strip(), right.strip()


def parse_port_range(text: str) -> tuple[int, int]:
    """``80`` or ``80-90`` → (min, max)."""
    low, _, high = text.partition("-")
    try:
        lo = int(low)
        hi = int(high) if high else lo
    except ValueError:
        raise usage(f"--port expects N or N-M, got '{text}'") from None
    if not 0 < lo <= hi <= 65535:
        raise usage(f"--port range '{text}' is not within 1-65535 with min <= max")
    return lo, hi


def exclusive(**given: Any) -> None:
    """At most one of these options may be given."""
    names = [k for k, v in given.items() if v not in (None, False, [])]
    if len(names) > 1:
        opts = " and ".join("--" + n.replace("_", "-") for n in names)
        raise usage(f"{opts} cannot be used together")


Ref = Annotated[str, typer.Argument(help="Name or id.")]
Refs = Annotated[list[str], typer.Argument(help="Names or ids.")]
NameArg = Annotated[str, typer.Argument(help="Name of the new object.")]
Description = Annotated[str | None, typer.Option(help="Free text.")]
ProjectOpt = Annotated[
    str | None, typer.Option("--project", help="Owner project (admin only): name or id.")
]


def project_id(cli: Cli, project: str | None) -> str | None:
    """Resolve ``--project`` (name or id) to the id the API expects."""
    return None if project is None else str(cli.client.find_project(project)["id"])
