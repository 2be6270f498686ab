"""A throwaway PostgreSQL server from Debian's packages, for integration tests.

Why a real server: SQLite serializes writers with one file lock, PostgreSQL
with the ``meta`` row lock under MVCC; the NB store's claims (writers never
race, a failed write leaves nothing, migrations equal the models) have to hold
on both, and only a real server shows the second.

The server lives in a temporary directory owned by ``postgres`` (initdb and
pg_ctl refuse to run as root, so as root they run through ``runuser``), listens
on a free TCP port of 127.0.0.1 with trust authentication, keeps its unix socket
in the same directory, and runs with fsync off: durability is not under test.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

SUPERUSER = "postgres"


def find_bindir() -> Path | None:
    """The newest Debian PostgreSQL bin directory that has initdb and pg_ctl."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    for path in reversed(candidates):
        bindir = Path(path)
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    return None


def unavailable_reason() -> str | None:
    """Why a server cannot be started here, or ``None`` when it can."""
    if find_bindir() is None:
        return "PostgreSQL binaries not installed (/usr/lib/postgresql/*/bin; see scripts/setup.sh)"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root but runuser is missing"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no postgres user to run the server as"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PgServer:
    """One PostgreSQL cluster: start, create/drop databases, stop and remove."""

    def __init__(self) -> None:
        bindir = find_bindir()
        assert bindir is not None, unavailable_reason()
        self.bindir = bindir
        self._as_postgres = os.geteuid() == 0
        # as root, stay out of a TMPDIR that the postgres user may not be able to enter
        parent = "/tmp" if self._as_postgres else None
        self.root = Path(tempfile.mkdtemp(prefix="netvirt-pg-", dir=parent))
        self.data = self.root / "data"
        self.sockdir = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = 0

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(
            cmd, cwd=self.root, capture_output=True, text=True, timeout=60, check=False
        )
        if proc.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}{log}")

    def start(self) -> None:
        self.sockdir.mkdir()
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            for path in (self.root, self.sockdir):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust",
            "-E", "UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-k {self.sockdir}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        # A port picked free can be taken before the server binds it: retry.
        for attempt in range(3):
            self.port = free_port()
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
                    "-o", f"{options} -p {self.port}", "start",
                )  # fmt: skip
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url("postgres", "postgresql"), autocommit=True)

    def create_database(self, name: str | None = None, template: str = "template0") -> str:
        """Create a database (empty, or a copy of ``template``) and return its name."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
