"""What the whole-swarm benchmarks share: a fresh database, and `agentswarm swarm` run for a while and stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def fresh_db(name: str) -> str:
    """Drop and create database `name`; its SQLAlchemy URL."""
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def run_swarm(env: dict[str, str], seconds: float, log_path: Path,
              probe: Callable[[], Any] | None = None, until: Callable[[], bool] | None = None) -> tuple[Any, Any]:
    """`agentswarm swarm` for `seconds` (or until `until()` is true, asked every second), then Ctrl-C (SIGKILL if it
    hangs); probe() just after start and before stop."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "agentswarm.ops.cli", "swarm"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        first = probe() if probe else None
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                if until is not None and proc.poll() is None and _asked(until):
                    break
            return first, (probe() if probe else None)
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def _asked(until: Callable[[], bool]) -> bool:
    try:
        return until()
    except Exception:  # the database is not there yet (the swarm is still preparing): ask again
        return False
