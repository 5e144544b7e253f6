"""`make swarm`: prepare everything a run needs, then run every process under supervisord (`supervision`)."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path

import click

from agentswarm.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HUB_SERVE = ("hubserve", "agentswarm hub-serve")  # the Procfile's commented-out optional line


def processes(demo_port: int | None, hub_serve: bool = False) -> dict[str, str]:
    """The repository's Procfile, plus the demo model when no endpoint is configured, plus the served hub for
    remote gate workers when HUB_SERVE_ADDR is set (`hub_serve`)."""
    from agentswarm.ops.supervision import read_procfile

    found = read_procfile(ROOT / "Procfile")
    if demo_port is not None:
        found["llm"] = f"agentswarm fake-llm --port {demo_port}"
    if hub_serve:
        found[HUB_SERVE[0]] = HUB_SERVE[1]
    return found


def check_hub_serve(settings: Settings) -> None:
    """With HUB_SERVE_ADDR set, a usable HUB_SERVE_TOKEN is required before anything starts (ConfigError)."""
    from agentswarm.errors import ConfigError
    from agentswarm.git.serve import MIN_TOKEN_LEN

    if settings.hub_serve_addr and len(settings.hub_serve_token.strip()) < MIN_TOKEN_LEN:
        raise ConfigError(f"HUB_SERVE_ADDR is set but HUB_SERVE_TOKEN is not (at least {MIN_TOKEN_LEN} characters): "
                          "the served hub needs a token (or unset HUB_SERVE_ADDR)")


KEEP_STATE_DIRS = 10


def state_dir(settings: Settings) -> Path:
    """A fresh directory for this swarm's supervisor (config, control socket, every process's log),
    beside the hub (`var/swarm/` by default); `swarm/current` points at the newest. Only the newest
    few are kept."""
    base = settings.hub_path.resolve().parent / "swarm"
    base.mkdir(parents=True, exist_ok=True)
    _prune(base)
    path = base / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    path.mkdir()
    link = base / f".current-{os.getpid()}"
    link.unlink(missing_ok=True)
    link.symlink_to(path.name)
    link.replace(base / "current")
    return path


def _shown(path: Path) -> Path:
    """The path relative to the repository when it is inside it (shorter to read), else as is."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _prune(base: Path) -> None:
    """Remove all but the newest state directories, never one whose supervisord is still running."""
    old = sorted((p for p in base.iterdir() if p.is_dir() and not p.is_symlink()), key=lambda p: p.name)
    for path in old[:-(KEEP_STATE_DIRS - 1)]:
        try:
            os.kill(int((path / "supervisord.pid").read_text()), 0)
            continue  # alive: another swarm's
        except (OSError, ValueError):
            shutil.rmtree(path, ignore_errors=True)


def prepare(settings: Settings, *, demo: bool | None = None) -> str:
    """Services up, schema migrated, hub created, features loaded, a run active; returns the run id.

    Redis and Postgres are reached with the URLs as given; a Redis started here requires a password, and
    the swarm gets a Postgres role of its own (`db_role`). From then on everything connects with those
    credentials, this process too (the settings are read again), and never prints them.
    `demo`: whether the user configured no model (the launcher points LLM_BASE_URL at the simulator
    before preparing, so `settings` alone would say otherwise); None: from `settings`.
    """
    from agentswarm.config import get_settings
    from agentswarm.db.migrate import upgrade
    from agentswarm.db.session import check_database, session_scope
    from agentswarm.git.hub import prepare_hub
    from agentswarm.lifecycle.features import sync_features
    from agentswarm.lifecycle.runs import hub_replaced, start_run
    from agentswarm.ops.db_role import ensure_swarm_role
    from agentswarm.ops.services import (
        check_gate,
        check_reconciler,
        check_redis_password,
        check_sandboxes,
        ensure_postgres,
        ensure_redis,
    )

    click.echo(f"redis: {ensure_redis(settings.given_redis_url, settings.service_secrets_dir)}")
    click.echo(f"postgres: {ensure_postgres(settings.database_admin_url)}")
    click.echo(f"postgres role: {ensure_swarm_role(settings)}")
    get_settings.cache_clear()
    settings = get_settings()
    check_redis_password(settings.redis_url, settings.service_secrets_dir)
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
        replaced = hub_replaced(db, settings)
        if replaced:
            click.echo(f"hub: {replaced}")
        run = start_run(db, settings, demo=demo)
        return run.id


def launch(settings: Settings) -> None:
    """Prepare, then run every swarm process under supervisord until Ctrl-C (or beat or control cannot run)."""
    from agentswarm.ops.supervision import Supervisor

    demo = settings.demo_mode  # what the user configured, before the simulator's URL is set below
    if demo:  # the simulator validates its own settings: a bad SIM_FAULTS stops here, in one line
        from agentswarm.demo.sim_faults import faults_from_env
        from agentswarm.errors import ConfigError

        try:
            faults_from_env({"SIM_FAULTS": settings.sim_faults,
                             "SIM_FAULT_ATTEMPTS": str(settings.sim_fault_attempts)})
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    check_hub_serve(settings)
    demo_port = free_port() if demo else None
    env = dict(os.environ)
    if demo_port is not None:
        env["LLM_BASE_URL"] = f"http://127.0.0.1:{demo_port}"
        os.environ["LLM_BASE_URL"] = env["LLM_BASE_URL"]
        from agentswarm.config import get_settings

        get_settings.cache_clear()
        settings = get_settings()
        click.echo(f"demo mode: no LLM_BASE_URL set, the built-in simulator answers at {env['LLM_BASE_URL']}")
    run_id = prepare(settings, demo=demo)
    from agentswarm.queue.names import RECONCILE_TICK
    from agentswarm.queue.send import send_tick

    send_tick(RECONCILE_TICK)  # main is checked as soon as the reconcile worker starts, then every interval
    state = state_dir(settings)
    supervisor = Supervisor(processes(demo_port, bool(settings.hub_serve_addr)), state, cwd=ROOT, run_id=run_id)
    if settings.hub_serve_addr:
        click.echo(f"hub served read-only to gate workers at http://{settings.hub_serve_addr}/hub.git")
    click.echo(f"run {run_id} active; dashboard at http://127.0.0.1:{settings.dashboard_port}/, Flower at "
               f"http://127.0.0.1:{settings.flower_port}; `agentswarm status` in another shell; "
               "Ctrl-C stops everything")
    click.echo(f"supervisord restarts a process that dies; logs in {_shown(state)}/; "
               f"`supervisorctl -c {_shown(supervisor.conf)} status` shows each process")
    env["SERVICE_SECRETS_DIR"] = str(Path(settings.service_secrets_dir).resolve())  # the processes run in ROOT
    env["BEAT_SCHEDULE"] = str(state.parent / "celerybeat-schedule")  # beside the hub, like the rest of var/
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    story = None
    if settings.swarm_console == "story":
        from agentswarm.db.session import session_scope
        from agentswarm.ops.narrator import Narrator

        click.echo("the console tells the run's story and the processes' warnings; every line is in the logs "
                   "(SWARM_CONSOLE=all prints them all)")
        story = Narrator(run_id, f"http://127.0.0.1:{settings.dashboard_port}/", session_scope).lines
    sys.stdout.flush()
    sys.exit(supervisor.run(env, story=story, quiet=story is not None))
