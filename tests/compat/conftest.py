"""A real ``netvirt serve`` for this package, and OpenStack SDK connections to it.

The point of these tests is that an *unmodified* openstacksdk (no plugin, no
patch, no Keystone) drives netvirt. So the server runs as a separate process on
a loopback port, exactly as an operator starts it, and the SDK reaches it only
over HTTP. Tokens are minted directly in the server's database, as
``netvirt admin bootstrap`` / ``token-create`` do.

Authentication without Keystone uses keystoneauth1's ``admin_token`` plugin:
it sends the given token as ``X-Auth-Token`` on every request and answers the
given endpoint for every service, so the SDK never asks for a service catalog.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openstack.connection
import pytest
from openstack.connection import Connection

from netvirt.northbound import identity
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database

STARTUP_TIMEOUT = 60.0  # generous: CI shares 2 cores with other work
HERE = Path(__file__).parent

# openstacksdk 4.x warns about its own internals on every call (e.g. "_compute_attributes
# is deprecated", and an InfluxDB warning on every Connection although none is configured).
# Those say nothing about the server, so only they are ignored here; every other warning,
# such as UnsupportedServiceVersion or LegacyAPIWarning, still fails the test.
SDK_SELF_DEPRECATIONS = [
    pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK50Warning"),
    pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK60Warning"),
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            for mark in SDK_SELF_DEPRECATIONS:
                item.add_marker(mark)


@dataclass
class Member:
    """A project with a member token, and an SDK connection acting as it."""

    project_id: str
    token: str
    conn: Connection


@dataclass
class Server:
    """A running ``netvirt serve`` and the means to mint credentials for it."""

    url: str
    db_url: str
    admin_token: str
    process: subprocess.Popen[bytes]
    log_path: Path
    connections: list[Connection] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def connect(self, token: str) -> Connection:
        """An SDK connection that sends ``token`` and talks only to this server."""
        conn = openstack.connection.Connection(
            auth_type="admin_token",
            auth={"endpoint": self.url, "token": token},
            network_endpoint_override=self.url,
        )
        self.connections.append(conn)
        return conn

    def make_member(self, name: str) -> Member:
        """Create a project and a member token in the store the server reads."""
        database = Database(self.db_url)
        try:
            with database.write() as session:
                project = identity.create_project(session, Context.admin(), name)
                token = identity.create_token(session, Context.admin(), project["id"], "member")
        finally:
            database.dispose()
        return Member(project["id"], token["token"], self.connect(token["token"]))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bootstrap(db_url: str) -> str:
    database = Database(db_url)
    try:
        with database.write() as session:
            token = identity.bootstrap(session)
    finally:
        database.dispose()
    assert token is not None
    secret: str = token["token"]
    return secret


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"netvirt serve exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"netvirt serve did not answer within {STARTUP_TIMEOUT}s:\n{log_path.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``netvirt serve`` on a free loopback port with its own SQLite store.

    One server for the whole package: starting it costs 2-8 s on a loaded 2-core
    machine, too much to pay per module. Modules stay independent through their
    own projects (``alice``/``bob`` are per module) and unique names (``uniq``).
    """
    tmp = tmp_path_factory.mktemp("netvirt-serve")
    db_url = f"sqlite:///{tmp / 'nb.db'}"
    admin_token = _bootstrap(db_url)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETVIRT_", "OS_"))}
    env["NETVIRT_STATE_DIR"] = str(tmp / "state")
    log_path = tmp / "serve.log"
    cmd = [sys.executable, "-m", "netvirt.cli.main", "serve"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--db", db_url]
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    srv = Server(url, db_url, admin_token, process, log_path)
    try:
        _wait_until_up(url, process, log_path)
        yield srv
    finally:
        for conn in srv.connections:
            conn.close()
        _stop(process)


@pytest.fixture(scope="module")
def admin_conn(server: Server) -> Connection:
    return server.connect(server.admin_token)


@pytest.fixture(scope="module")
def alice(server: Server) -> Member:
    return server.make_member(f"alice-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def bob(server: Server) -> Member:
    return server.make_member(f"bob-{uuid.uuid4().hex[:6]}")


@pytest.fixture
def uniq() -> Callable[[str], str]:
    """Unique names, since every test of a module shares one server."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def sent(admin_conn: Connection) -> Iterator[list[tuple[str, str]]]:
    """Every (method, URL) the admin connection sends while the test runs."""
    calls: list[tuple[str, str]] = []

    def hook(response: Any, *args: Any, **kwargs: Any) -> None:
        calls.append((response.request.method, response.request.url))

    hooks = admin_conn.session.session.hooks["response"]
    hooks.append(hook)
    yield calls
    hooks.remove(hook)
