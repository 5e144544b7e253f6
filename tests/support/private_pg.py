"""A Postgres of the test's own, to restart at will: the chaos tests take the database away mid-run without
touching the shared server every other test (and CI) uses.

initdb and pg_ctl from this machine's PostgreSQL (the one `.ci/run` installs), run as the `postgres` user when
the tests run as root (initdb refuses root); trust auth on 127.0.0.1 only, on a port of its own.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivatePostgres:
    """One throwaway server: its data directory, port, URL, and a restart like an operator's."""

    data: Path
    port: int
    pg_ctl: str
    as_user: list[str]

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def ctl_command(self, *args: str) -> list[str]:
        return [*self.as_user, self.pg_ctl, "-D", str(self.data), "-w", "-t", "60", *args]

    def restart_command(self) -> str:
        """A shell line that restarts the server (fast: open connections are cut, as a crash would)."""
        return " ".join(self.ctl_command("restart", "-m", "fast", "-l", str(self.data / "server.log")))

    def restart(self) -> None:
        subprocess.run(self.ctl_command("restart", "-m", "fast", "-l", str(self.data / "server.log")),
                       check=True, capture_output=True, timeout=90)

    def stop(self) -> None:
        subprocess.run(self.ctl_command("stop", "-m", "immediate"), capture_output=True, timeout=60)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
            conn.execute(f'create database "{name}"')
        return self.url(name)


@pytest.fixture
def private_pg():
    """A running private Postgres (stopped and removed at the end); skipped when initdb is not installed."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (apt-get install postgresql)")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="agentswarm-pg-"))
    if os.geteuid() == 0:  # initdb refuses root: the server runs as `postgres`
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    port = _free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                    "--no-sync"], check=True, capture_output=True, timeout=120)
    pg = PrivatePostgres(data, port, pg_ctl, as_user)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off -c max_connections=200"
    started = subprocess.run(pg.ctl_command("start", "-o", options, "-l", str(data / "server.log")),
                             capture_output=True, text=True, timeout=90)
    if started.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"private Postgres did not start: {started.stderr or started.stdout}")
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
