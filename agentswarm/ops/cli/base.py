"""The `agentswarm` command's group, its settings, and the entry point that turns expected failures into one line."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from agentswarm.errors import SwarmError

if TYPE_CHECKING:
    from agentswarm.config import Settings


def _settings() -> Settings:
    from agentswarm.config import get_settings

    return get_settings()



def _ago(seconds: float | None) -> str:
    """12s, 3m05s, 2h10m."""
    if seconds is None:
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@click.group()
def cli() -> None:
    """AgentSwarm: a massively parallel autonomous coding system."""
    from agentswarm.errors import ConfigError
    from agentswarm.logs import configure_cli

    try:
        configure_cli(_settings().log_format.value)
    except ConfigError:
        pass  # the command itself reads the settings and says what is wrong


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
    except Exception as exc:
        line = _database_error_line(exc)
        if line is None:
            raise
        click.echo(f"agentswarm: {line}", err=True)
        sys.exit(2)


def _database_error_line(exc: BaseException) -> str | None:
    """One line for a database that is missing, down or without its schema (any verb); None for anything else."""
    from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

    from agentswarm.scrubbing import scrub, secrets_from_env

    if not isinstance(exc, DBAPIError):
        return None
    text = str(exc.orig if exc.orig is not None else exc).strip()
    reason = scrub(text.splitlines()[0] if text else type(exc).__name__, secrets_from_env())[:300]
    if isinstance(exc, OperationalError):
        return f"DATABASE_URL: cannot reach Postgres ({reason})"
    if isinstance(exc, ProgrammingError) and "does not exist" in reason:
        return f"DATABASE_URL: the database has no schema yet ({reason}); run `agentswarm db upgrade`"
    return f"DATABASE_URL: database error ({reason})"


