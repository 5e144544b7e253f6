"""Text on its way into Postgres: secrets scrubbed, NUL and lone surrogates cleaned, and only then cut.

Everything a model, an agent or a person supplies (summaries, errors, titles, descriptions, event
messages, transcripts) passes through here before it is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

from agentswarm.errors import ConfigError
from agentswarm.scrubbing import clean_data, clean_text, scrub_clip, scrub_data, secrets_from_env

if TYPE_CHECKING:
    from agentswarm.config import Settings

__all__ = ["clean_data", "clean_text", "orchestrator_secrets", "stored_data", "stored_text"]


def orchestrator_secrets(settings: Settings | None = None) -> list[str]:
    """The secrets to scrub: from `settings` (default: the process's settings), else from the environment."""
    if settings is None:
        from agentswarm.config import get_settings

        try:
            settings = get_settings()
        except ConfigError:
            return secrets_from_env()
    return settings.secrets()


@overload
def stored_text(text: str, limit: int | None = None, settings: Settings | None = None) -> str: ...
@overload
def stored_text(text: None, limit: int | None = None, settings: Settings | None = None) -> None: ...
def stored_text(text: str | None, limit: int | None = None, settings: Settings | None = None) -> str | None:
    """`text` scrubbed of every secret, cleaned for Postgres, then cut to `limit` characters (None stays None)."""
    return scrub_clip(text, orchestrator_secrets(settings), limit)


def stored_data(value: Any, settings: Settings | None = None) -> Any:
    """JSON-like data with every string scrubbed and cleaned (for JSON columns)."""
    return clean_data(scrub_data(value, orchestrator_secrets(settings)))
