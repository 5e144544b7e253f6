"""Setting up and running: services, the schema, doctor, the demo model, prepare, swarm, the dashboard, the
served hub."""

from __future__ import annotations

from pathlib import Path

import click

from agentswarm.ops.cli.base import _settings, cli


@cli.command()
@click.option("--services/--no-services", default=True, help="Start Redis/Postgres if they are down.")
def check(services: bool) -> None:
    """Validate the settings and make sure Redis and Postgres answer."""
    from agentswarm.db.session import check_database
    from agentswarm.ops.services import (
        check_gate,
        check_reconciler,
        check_sandboxes,
        ensure_postgres,
        ensure_redis,
    )

    s = _settings()
    if services:
        click.echo(f"redis: {ensure_redis(s.given_redis_url, s.service_secrets_dir)}")
        click.echo(f"postgres: {ensure_postgres(s.database_admin_url)}")
    check_database(s.database_url)
    click.echo(f"sandboxes: {check_sandboxes(s)}")
    click.echo(f"gate: {check_gate(s)}")
    click.echo(f"reconciler: {check_reconciler(s)}")
    mode = "demo (built-in simulator)" if s.demo_mode else s.llm_base_url
    click.echo(f"settings ok: model {s.llm_model} at {mode}, {s.max_workers} workers, "
               f"sandbox {s.sandbox_backend.value}, merge {s.merge_strategy.value}")


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Create or migrate the schema (running it twice changes nothing)."""
    from agentswarm.db.migrate import upgrade
    from agentswarm.db.session import check_database

    s = _settings()
    check_database(s.database_url)
    upgrade(s.database_url, revision)
    click.echo(f"database at {revision}")


@db.command("current")
def db_current() -> None:
    """Show the schema revision."""
    from agentswarm.db.migrate import current

    current(_settings().database_url)


@cli.command("llm-check")
def llm_check() -> None:
    """Probe the configured endpoint: models, a chat, and a tool call (what a swarm relies on)."""
    from agentswarm.llm.factory import client_from_settings
    from agentswarm.ops.llm_check import check_endpoint

    s = _settings()
    if s.demo_mode:
        raise click.ClickException("LLM_BASE_URL is not set (demo mode uses the built-in simulator)")
    report = check_endpoint(client_from_settings(s), s.llm_model)
    for line in report.lines:
        click.echo(f"{'ok  ' if line.ok else 'FAIL'} {line.name:<11} {line.detail}")
    if not report.ok:
        raise SystemExit(1)


@cli.command()
@click.option("--smoke", is_flag=True, help="Then one real task from plan to merged, in a scratch run on a scratch hub.")
@click.option("--smoke-timeout", default=600.0, show_default=True, type=click.FloatRange(30, 7200),
              help="Seconds the smoke run may take.")
def doctor(smoke: bool, smoke_timeout: float) -> None:
    """The checks before a run, one line each with the fix: services, schema, hub, Node, sandboxes, endpoints."""
    from agentswarm.ops.doctor import run_doctor

    if not run_doctor(smoke=smoke, echo=click.echo, smoke_timeout_s=smoke_timeout):
        raise SystemExit(1)


@cli.command("fake-llm")
@click.option("--port", default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--latency", default=0.0, envvar="SIM_LATENCY_S", show_envvar=True,
              type=click.FloatRange(0, 600), help="Seconds added to every reply (demo mode: SIM_LATENCY_S).")
def fake_llm(port: int, host: str, latency: float) -> None:
    """Serve the OpenAI-compatible fake LLM (the swarm simulator) until Ctrl-C.

    SIM_FAULTS (kind:rate,...) and SIM_FAULT_ATTEMPTS in the environment make its worker break branches.
    """
    from agentswarm.demo.fake_llm import serve_forever
    from agentswarm.demo.sim_faults import faults_from_env

    try:
        faults, attempts = faults_from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"fake LLM at http://{host}:{port}/v1 (Ctrl-C to stop)")
    serve_forever(port=port, host=host, latency_s=latency, sim_faults=faults, sim_fault_attempts=attempts)


@cli.command()
def init() -> None:
    """Create the local hub from TARGET_REPO_PATH (unless GIT_REPO_URL is set) and load FEATURES.json."""
    from agentswarm.db.session import session_scope
    from agentswarm.git.hub import prepare_hub
    from agentswarm.lifecycle.features import sync_features

    s = _settings()
    url, sha = prepare_hub(s.git_repo_url or None, s.hub_path, s.target_repo_path)
    click.echo(f"hub {url} at main {sha[:12] if sha else '?'}")
    features = s.target_repo_path / "FEATURES.json"
    if features.exists():
        with session_scope() as db:
            n = sync_features(db, features)
        click.echo(f"features: {n} loaded from {features}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="Default: DASHBOARD_PORT (8080).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Without AGENTSWARM_DASHBOARD_TOKEN: the token kept in this file (a random one is written "
              "there on first start).")
def dashboard(host: str, port: int | None, token_file: Path | None) -> None:
    """Serve the live web dashboard."""
    import os

    from agentswarm.dashboard import serve
    from agentswarm.dashboard.app import TOKEN_ENV, token_from_file

    if token_file is not None and not os.environ.get(TOKEN_ENV, "").strip():
        os.environ[TOKEN_ENV] = token_from_file(token_file)
        click.echo(f"dashboard token: in {token_file} (the page asks for it once per tab)")
    s = _settings()
    serve(host, port or s.dashboard_port, s)  # prints where it listens; refuses off loopback without a token


@cli.command("hub-serve")
@click.option("--addr", default=None, help="host:port to listen on. Default: HUB_SERVE_ADDR.")
def hub_serve(addr: str | None) -> None:
    """Serve the hub (HUB_PATH) read-only over git's smart HTTP to remote gate workers, until SIGTERM or Ctrl-C.

    Every request needs HUB_SERVE_TOKEN as a bearer token; any commit can be fetched by sha, nothing pushed.
    """
    import signal

    from agentswarm.errors import ConfigError
    from agentswarm.git.serve import serve_hub

    s = _settings()
    addr = addr or s.hub_serve_addr
    if not addr:
        raise ConfigError("HUB_SERVE_ADDR is not set: say where to listen (e.g. 127.0.0.1:8471) or pass --addr")
    server = serve_hub(s.hub_path, addr, s.hub_serve_token)  # ConfigError without a token or a hub

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    click.echo(f"hub {s.hub_path} served read-only at {server.url} (bearer token: HUB_SERVE_TOKEN; "
               "SIGTERM or Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@cli.group()
def agents() -> None:
    """The external agents (AGENT=mini-swe-agent or pi): pinned CLIs in AGENT_TOOLS_DIR."""


@agents.command("install")
@click.argument("names", nargs=-1, type=click.Choice(["mini-swe-agent", "pi"]))
def agents_install(names: tuple[str, ...]) -> None:
    """Install the named agents (default: the configured AGENT's, if external) from their registries; idempotent."""
    from agentswarm.agent.install import EXTERNAL, install_agent, tools_dir

    s = _settings()
    wanted = names or ((s.agent,) if s.agent in EXTERNAL else ())
    home = tools_dir(s.agent_tools_dir)
    if not wanted:
        click.echo(f"AGENT={s.agent} needs nothing installed (name mini-swe-agent or pi to install one anyway)")
    for name in wanted:
        click.echo(f"{name}: {install_agent(name, home)}")


@cli.command()
def prepare() -> None:
    """What `swarm` does before it starts the processes: services checked, schema migrated, hub made, features
    loaded, a run active (the one already active, if any), and main's first check asked for. Safe to repeat."""
    from agentswarm.ops.swarm import prepare as prepare_swarm
    from agentswarm.queue.names import RECONCILE_TICK
    from agentswarm.queue.send import send_tick

    run_id = prepare_swarm(_settings())
    send_tick(RECONCILE_TICK)
    click.echo(f"run {run_id} active")


@cli.command()
def swarm() -> None:
    """Run a whole swarm (what `make swarm` does); demo mode when no LLM_BASE_URL is set."""
    from agentswarm.ops.swarm import launch

    launch(_settings())
