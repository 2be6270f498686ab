"""Fixtures for the GUI tests: a real ``netvirt serve`` subprocess and headless Chromium.

The server runs on a free loopback port with a temporary SQLite store that
already holds an admin token and three member projects (alice, bob, carol), made
through ``identity`` exactly as ``netvirt admin`` does. The browser is
Debian's Chromium driven by Playwright's Python package (never a downloaded
browser), with a fresh profile; every page records failed requests, script
errors and any request that leaves the server's origin.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from netvirt.northbound import identity
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = {"width": 1360, "height": 860}
PHONE = {"width": 390, "height": 844}


@dataclass
class Server:
    base: str
    tokens: dict[str, str]
    projects: dict[str, str]
    log: Path

    def api(self, who: str, method: str, path: str, body: Any = None) -> Any:
        """Call the API as ``who``; assert success; return the JSON body (None on 204)."""
        resp = httpx.request(
            method,
            self.base + path,
            json=body,
            headers={"X-Auth-Token": self.tokens[who]},
            timeout=10,
        )
        assert resp.status_code < 300, f"{method} {path} -> {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _seed(url: str) -> tuple[dict[str, str], dict[str, str]]:
    db = Database(url)
    tokens: dict[str, str] = {}
    projects: dict[str, str] = {"admin": "admin"}
    with db.write() as session:
        admin = identity.bootstrap(session)
        assert admin is not None
        tokens["admin"] = admin["token"]
        for name in ("alice", "bob", "carol"):
            project = identity.create_project(session, Context.admin(), name)
            projects[name] = project["id"]
            made = identity.create_token(session, Context.admin(), project["id"], "member")
            tokens[name] = made["token"]
        host = identity.create_token(session, Context.admin(), "admin", "host")
        tokens["host"] = host["token"]
    db.dispose()
    return tokens, projects


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"netvirt serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(base + "/", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"netvirt serve did not answer in 30 s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``netvirt serve`` in a subprocess, as an operator runs it."""
    root = tmp_path_factory.mktemp("netvirt-web")
    url = f"sqlite:///{root / 'nb.db'}"
    tokens, projects = _seed(url)
    port = _free_port()
    log = root / "serve.log"
    env = os.environ | {"NETVIRT_STATE_DIR": str(root)}
    cmd = [sys.executable, "-m", "netvirt.cli.main", "serve", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--db", url]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, log)
        yield Server(base, tokens, projects, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A persistent Chromium context on a fresh profile (one per test session)."""
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=LAPTOP,
        )
        context.set_default_timeout(10_000)
        try:
            yield context
        finally:
            context.close()


@dataclass
class Watched:
    """A page plus what it did: script errors and requests to other origins."""

    page: Any
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)


@pytest.fixture
def watched(browser: Any, server: Server) -> Iterator[Watched]:
    page = browser.new_page()
    seen = Watched(page)
    page.on("pageerror", lambda err: seen.errors.append(f"pageerror: {err}"))
    page.on(
        "console",
        lambda msg: seen.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
    )

    def on_request(request: Any) -> None:
        if not request.url.startswith(server.base + "/"):
            seen.foreign.append(request.url)

    page.on("request", on_request)
    page.on("response", lambda response: seen.responses.append(response))
    try:
        yield seen
    finally:
        page.close()
