"""Replies shaped as real servers send them (issue 17), for the fake LLM to replay to each component."""

from __future__ import annotations

import json
from typing import Any

from agentswarm.demo.completions import NO_USAGE


def cut_inside(tasks: list[dict], n_complete: int) -> dict:
    """A reply cut by the token limit in the middle of task n_complete (0-based), as finish_reason "length"."""
    text = json.dumps(tasks, indent=2)
    mark = text.index(json.dumps(tasks[n_complete]["description"]))
    return {"content": text[:mark + 4], "finish_reason": "length"}


def trailing_commas(tasks: list[dict]) -> str:
    """The JSON array with a trailing comma after every list's last element, as models write it."""
    return json.dumps(tasks, indent=2).replace('"\n  ]', '",\n  ]').replace("}\n]", "},\n]")


def unrepairable(tasks: list[dict]) -> str:
    """Commas missing between the tasks: a slip the repair does not guess at."""
    return json.dumps(tasks).replace("}, {", "} {")


def without_titles(tasks: list[dict]) -> str:
    return json.dumps([{k: v for k, v in t.items() if k != "title"} for t in tasks])


def no_usage(content: Any) -> dict:
    """A reply with no usage object at all."""
    return {"content": content if isinstance(content, str) else json.dumps(content), "usage": NO_USAGE}


def padded(tasks: list[dict], chars: int) -> str:
    """The tasks, each carrying `chars` characters of an ignored field: a reply past the parser's cap."""
    return json.dumps([{**t, "notes": "x" * chars} for t in tasks])
