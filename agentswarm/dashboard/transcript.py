"""Turning a handoff's JSONL transcript into a capped list of entries for the log viewer."""

from __future__ import annotations

from typing import Any

from agentswarm.lifecycle.progress import parse_step

MAX_ENTRIES = 400
FIELD_CAP = 6000


def _cap(value: Any, cap: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= cap else value[:cap] + f"\n[... {len(value) - cap} more characters]"
    if isinstance(value, dict):
        return {str(k): _cap(v, cap) for k, v in value.items()}
    if isinstance(value, list):
        return [_cap(v, cap) for v in value[:200]]
    return value


def parse_transcript(text: str, max_entries: int = MAX_ENTRIES, field_cap: int = FIELD_CAP) -> dict:
    """Entries (each a dict with at least `kind`), how many lines there were, and whether any were left out."""
    entries: list[dict] = []
    lines = [line for line in (text or "").splitlines() if line.strip()]
    for line in lines[:max_entries]:
        entries.append(_cap(parse_step(line), field_cap))
    tokens = {"prompt": 0, "completion": 0}
    for e in entries:
        if e["kind"] in ("assistant", "llm_call"):
            tokens["prompt"] += _int(e.get("prompt_tokens"))
            tokens["completion"] += _int(e.get("completion_tokens"))
    return {"entries": entries, "lines": len(lines), "truncated": len(lines) > max_entries
            or any(e["kind"] == "truncated" for e in entries), "tokens": tokens}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
