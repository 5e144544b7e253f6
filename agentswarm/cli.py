"""The `agentswarm` command."""

from __future__ import annotations

import sys

import click

from agentswarm.errors import SwarmError


def _settings():
    from agentswarm.config import get_settings

    return get_settings()


@click.group()
def cli() -> None:
    """AgentSwarm: a massively parallel autonomous coding system."""


@cli.command()
@click.option("--services/--no-services", default=True, help="Start Redis/Postgres if they are down.")
def check(services: bool) -> None:
    """Validate the settings and make sure Redis and Postgres answer."""
    from agentswarm.db.session import check_database
    from agentswarm.services import ensure_postgres, ensure_redis

    s = _settings()
    if services:
        click.echo(f"redis: {ensure_redis(s.redis_url)}")
        click.echo(f"postgres: {ensure_postgres(s.database_url)}")
    check_database(s.database_url)
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


@cli.command("fake-llm")
@click.option("--port", default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--latency", default=0.0, help="Seconds added to every reply.")
def fake_llm(port: int, host: str, latency: float) -> None:
    """Serve the OpenAI-compatible fake LLM (the swarm simulator) until Ctrl-C."""
    from agentswarm.testing.fake_llm import serve_forever

    click.echo(f"fake LLM at http://{host}:{port}/v1 (Ctrl-C to stop)")
    serve_forever(port=port, host=host, latency_s=latency)


def main(argv: list[str] | None = None) -> None:
    """Entry point: expected failures print one line and exit 2, never a traceback."""
    try:
        cli.main(args=argv, prog_name="agentswarm", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SwarmError as exc:
        click.echo(f"agentswarm: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
