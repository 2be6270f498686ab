"""``status``, ``whoami``, ``admin project|token`` over the API, and the error contract."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from cli.conftest import Cli
from conftest import Api
from netvirt.api.client import NetvirtClient
from netvirt.cli import common
from netvirt.cli.main import app
from netvirt.northbound.db import Database


def test_whoami_table_and_json(cli: Cli, alice: Api) -> None:
    assert cli.json("whoami") == {"project_id": "admin", "role": "admin"}
    out = cli.ok("whoami", token=alice.token)
    assert alice.project_id in out
    assert "member" in out


def test_status_reports_generations(cli: Cli) -> None:
    before = cli.json("status")["nb_generation"]
    cli.ok("network", "create", "n")
    after = cli.json("status")
    assert after["nb_generation"] > before
    assert after["hosts"] == []
    table = cli.ok("status")
    assert "compiled_generation" in table
    assert "Hosts" in table


def test_admin_project_and_token_over_the_api(cli: Cli) -> None:
    project = cli.json("admin", "project", "create", "dave", "--description", "d")
    assert project["name"] == "dave"
    assert "dave" in cli.ok("admin", "project", "list")
    out = cli.ok("admin", "token", "create", "dave", "--role", "member")
    secret = out.strip().splitlines()[-1].removeprefix("export NETVIRT_TOKEN=")
    assert cli.json("whoami", token=secret) == {"project_id": project["id"], "role": "member"}
    line = cli.fails("admin", "project", "create", "eve", token=secret)
    assert line == "error: Only admins may create projects."


def test_direct_store_admin_commands_still_work(cli: Cli, db: Database) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["admin", "project-create", "frank", "--db", db.url])
    assert result.exit_code == 0, result.output
    assert "frank" in cli.ok("admin", "project", "list")
    result = runner.invoke(app, ["admin", "token-create", "frank", "--db", db.url])
    assert result.exit_code == 0, result.output
    assert '"role": "member"' in result.stdout


def test_bad_token_is_one_line(cli: Cli) -> None:
    line = cli.fails("network", "list", token="wrong")
    assert line == "error: The request you have made requires authentication."


def test_connection_refused_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    def factory(url: str, token: str | None) -> NetvirtClient:
        return NetvirtClient(url, token, transport=httpx.MockTransport(refuse))

    monkeypatch.setattr(common, "client_factory", factory)
    result = CliRunner().invoke(app, ["network", "list", "--url", "http://10.9.9.9:9696"])
    assert result.exit_code == 1
    assert result.stderr == (
        "error: cannot reach the netvirt API at http://10.9.9.9:9696 (connection refused); "
        "is `netvirt serve` running? Set NETVIRT_URL or --url.\n"
    )
    assert result.stdout == ""


def test_wait_timeout_warns_but_succeeds(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    inner = common.client_factory

    def impatient(url: str, token: str | None) -> NetvirtClient:
        client = inner(url, token)
        client.wait_timeout = 0  # no compiler runs in this test
        return client

    monkeypatch.setattr(common, "client_factory", impatient)
    result = cli("network", "create", "n", "--wait", "compiled", "--json")
    assert result.exit_code == 0
    assert result.stderr == "warning: committed, but not yet compiled (timed out)\n"
    assert cli.json("network", "show", "n")["name"] == "n"


def test_every_resource_verb_is_registered(cli: Cli) -> None:
    top = cli.ok("--help")
    for group in ("network", "subnet", "port", "router", "floating-ip", "security-group"):
        assert group in top
    for group in ("qos", "lb", "status", "whoami", "serve", "admin"):
        assert group in top
    admin = cli.ok("admin", "--help")
    for verb in ("bootstrap", "project-create", "token-create", "project", "token"):
        assert verb in admin
    lb = cli.ok("lb", "--help")
    for verb in ("listener", "pool", "member", "healthmonitor"):
        assert verb in lb
