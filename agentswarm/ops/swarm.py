"""`make swarm`: prepare everything a run needs, then start every process with honcho."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import click

from agentswarm.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def procfile(settings: Settings, demo_port: int | None) -> str:
    """The repository's Procfile, plus the demo model when no endpoint is configured."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    if demo_port is not None:
        lines.append(f"llm: agentswarm fake-llm --port {demo_port}")
    return "\n".join(lines) + "\n"


def prepare(settings: Settings) -> str:
    """Services up, schema migrated, hub created, features loaded, a run active; returns the run id."""
    from agentswarm.db.migrate import upgrade
    from agentswarm.db.session import check_database, session_scope
    from agentswarm.git.hub import prepare_hub
    from agentswarm.lifecycle.features import sync_features
    from agentswarm.lifecycle.runs import start_run
    from agentswarm.ops.services import (
        check_gate,
        check_reconciler,
        check_sandboxes,
        ensure_postgres,
        ensure_redis,
    )

    click.echo(f"redis: {ensure_redis(settings.redis_url)}")
    click.echo(f"postgres: {ensure_postgres(settings.database_url)}")
    check_database(settings.database_url)
    click.echo(f"sandboxes: {check_sandboxes(settings)}")
    click.echo(f"gate: {check_gate(settings)}")
    click.echo(f"reconciler: {check_reconciler(settings)}")
    upgrade(settings.database_url)
    url, sha = prepare_hub(settings.git_repo_url or None, settings.hub_path, settings.target_repo_path)
    click.echo(f"hub: {url} (main {str(sha)[:12]})")
    with session_scope() as db:
        features = settings.target_repo_path / "FEATURES.json"
        if features.exists():
            click.echo(f"features: {sync_features(db, features)} loaded")
        run = start_run(db, settings)
        return run.id


def launch(settings: Settings) -> None:
    """Prepare, then replace this process with honcho running every swarm process."""
    demo_port = free_port() if settings.demo_mode else None
    env = dict(os.environ)
    if demo_port is not None:
        env["LLM_BASE_URL"] = f"http://127.0.0.1:{demo_port}"
        os.environ["LLM_BASE_URL"] = env["LLM_BASE_URL"]
        from agentswarm.config import get_settings

        get_settings.cache_clear()
        settings = get_settings()
        click.echo(f"demo mode: no LLM_BASE_URL set, the built-in simulator answers at {env['LLM_BASE_URL']}")
    run_id = prepare(settings)
    from agentswarm.queue.names import RECONCILE_TICK
    from agentswarm.queue.send import send_tick

    send_tick(RECONCILE_TICK)  # main is checked as soon as the reconcile worker starts, then every interval
    click.echo(f"run {run_id} active; dashboard at http://127.0.0.1:{settings.dashboard_port}/, Flower at "
               f"http://127.0.0.1:{settings.flower_port}; `agentswarm status` in another shell; "
               "Ctrl-C stops everything")
    var = ROOT / "var"
    var.mkdir(exist_ok=True)
    path = var / "Procfile.swarm"
    path.write_text(procfile(settings, demo_port))
    honcho = shutil.which("honcho", path=str(Path(sys.executable).parent)) or shutil.which("honcho")
    if not honcho:
        raise click.ClickException("honcho is not installed: run `make install`")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    os.chdir(ROOT)
    os.execve(honcho, [honcho, "start", "-f", str(path), "-d", str(ROOT)], env)
