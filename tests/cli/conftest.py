"""Run the real ``netvirt`` Typer app against the real API, in process.

The CLI builds its client through ``netvirt.cli.common.client_factory``;
here it is replaced by one that speaks to the test app through Starlette's
TestClient, so every test goes CLI → NetvirtClient → routes → store.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import Result
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import Api
from netvirt.api.client import NetvirtClient
from netvirt.cli import common
from netvirt.cli.main import app


class Cli:
    """Invoke ``netvirt`` with a token; helpers for success and JSON output."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.runner = CliRunner()

    def __call__(self, *args: str, token: str | None = None) -> Result:
        env = {"NETVIRT_TOKEN": token or self.token, "NETVIRT_URL": "http://testserver"}
        return self.runner.invoke(app, list(args), env=env)

    def ok(self, *args: str, token: str | None = None) -> str:
        result = self(*args, token=token)
        assert result.exit_code == 0, f"{args}: {result.exit_code} {result.stderr}"
        return result.stdout

    def json(self, *args: str, token: str | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", token=token))

    def fails(self, *args: str, code: int = 1, token: str | None = None) -> str:
        """Assert the one-line error contract and return that line."""
        result = self(*args, token=token)
        assert result.exit_code == code, f"{args}: {result.exit_code} {result.stdout}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ")
        assert "Traceback" not in result.output
        return lines[0]


@pytest.fixture
def cli(client: TestClient, admin: Api, monkeypatch: pytest.MonkeyPatch) -> Cli:
    def factory(url: str, token: str | None) -> NetvirtClient:
        return NetvirtClient(http=client, token=token)

    monkeypatch.setattr(common, "client_factory", factory)
    return Cli(admin.token)
