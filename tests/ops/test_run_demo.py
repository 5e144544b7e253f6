"""A run records demo mode from what the user configured, not from the simulator's URL the launcher sets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from agentswarm.db import Run, session_scope

ROOT = Path(__file__).resolve().parents[2]


def _prepare(tmp_path: Path, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_")}
    env.update(HUB_PATH=str(tmp_path / "var" / "hub.git"), SANDBOX_ROOT=str(tmp_path / "sb"), **extra)
    out = subprocess.run([sys.executable, "-m", "agentswarm", "prepare"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return re.search(r"^run (\w+) active$", out.stdout, re.M).group(1)


def test_a_run_with_a_configured_endpoint_is_not_a_demo(db, redis_client, tmp_path):
    run_id = _prepare(tmp_path, LLM_BASE_URL="http://127.0.0.1:9/v1")
    with session_scope(db) as s:
        run = s.get(Run, run_id)
        assert run.demo is False and run.config["model"] != "simulator"


def test_a_run_without_an_endpoint_is_a_demo(db, redis_client, tmp_path):
    run_id = _prepare(tmp_path)
    with session_scope(db) as s:
        run = s.get(Run, run_id)
        assert run.demo is True and run.config["model"] == "simulator"  # what the dashboard shows as the model

