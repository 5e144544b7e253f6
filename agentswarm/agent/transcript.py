"""The agent's transcript: one JSON object per line, size-capped, secrets scrubbed, replayable by the dashboard."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from agentswarm.scrubbing import SECRET_ENV_NAMES, clean_text, scrub, scrub_data, secrets_from_env

__all__ = ["SECRET_ENV_NAMES", "Transcript", "scrub", "secrets_from_env"]

FILE_CAP = 4 * 1024 * 1024
INLINE_CAP = 256 * 1024
FIELD_CAP = 16 * 1024


def _cap_strings(value: Any, cap: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= cap else value[: cap // 2] + f"\n[... {len(value) - cap} chars cut ...]\n" + value[-cap // 2:]
    if isinstance(value, dict):
        return {k: _cap_strings(v, cap) for k, v in value.items()}
    if isinstance(value, list):
        return [_cap_strings(v, cap) for v in value]
    return value


class Transcript:
    """Appends events to a JSONL file until it reaches `cap_bytes`; after that only a truncation marker.

    Safe from several threads (an external agent's steps and its proxy's call records): lines never interleave.
    """

    def __init__(self, path: str | Path | None, *, cap_bytes: int = FILE_CAP, secrets: list[str] | None = None,
                 field_cap: int = FIELD_CAP) -> None:
        self.path = Path(path) if path else None
        self.cap_bytes = cap_bytes
        self.field_cap = field_cap
        self.secrets = [s for s in (secrets if secrets is not None else secrets_from_env()) if s]
        self.size = 0
        self.truncated = False
        self.events = 0
        self._lock = threading.Lock()
        self._fh = open(self.path, "w", encoding="utf-8") if self.path else None  # noqa: SIM115 - closed in close()

    def add(self, kind: str, **data: Any) -> None:
        """Record one event (kind: system, user, assistant, tool, llm_error, note, outcome, ...)."""
        with self._lock:
            self._add(kind, data)

    def _add(self, kind: str, data: dict[str, Any]) -> None:
        if self.truncated:
            return
        # Scrubbed before the fields are capped (a secret cut in two could not be found), and the line again after.
        data = json.loads(json.dumps(data, ensure_ascii=False, default=str))
        event = {"t": round(time.time(), 3), "kind": kind, **_cap_strings(scrub_data(data, self.secrets), self.field_cap)}
        line = clean_text(scrub(json.dumps(event, ensure_ascii=False, default=str), self.secrets)) + "\n"
        if self.size + len(line.encode()) > self.cap_bytes:
            self.truncated = True
            line = json.dumps({"t": round(time.time(), 3), "kind": "truncated",
                               "note": f"transcript reached its {self.cap_bytes}-byte cap"}) + "\n"
        self._write(line)

    def _write(self, line: str) -> None:
        self.size += len(line.encode())
        self.events += 1
        if self._fh is not None:
            self._fh.write(line)
            self._fh.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def inline(self, cap_bytes: int = INLINE_CAP) -> tuple[str, bool]:
        """The transcript text for result.json: whole lines up to `cap_bytes`, and whether anything was left out."""
        if self.path is None or not self.path.exists():
            return "", self.truncated
        with self._lock:
            if self._fh is not None:
                self._fh.flush()
        out: list[str] = []
        size = 0
        cut = self.truncated
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                n = len(line.encode())
                if size + n > cap_bytes:
                    cut = True
                    break
                out.append(line)
                size += n
        return "".join(out), cut
