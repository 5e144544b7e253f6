"""The ladder: steps, their one-line report, and what they share (`run.py` holds their order).

Invariants: every step ends as ok, warn, fail or skip, and is printed once, as soon as it ends; a skip always
names the step it waited on; a warning names its fix but does not stop a run; the ladder passes only when
no step failed. Lines are scrubbed of every secret the settings and the endpoints know before they are printed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agentswarm.scrubbing import scrub, secrets_from_env

if TYPE_CHECKING:
    from agentswarm.config import Settings


class StepStatus(StrEnum):
    ok = "ok"
    warn = "warn"
    fail = "fail"
    skip = "skip"


MARKS = {StepStatus.ok: "✓", StepStatus.warn: "–", StepStatus.fail: "✗", StepStatus.skip: "–"}
NAME_WIDTH = 16


@dataclass
class Step:
    """One rung: its name, how it ended, what was found, and (on failure) what to do."""

    name: str
    status: StepStatus
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{MARKS[self.status]} {self.name:<{NAME_WIDTH}} {self.detail}"
        return text + (f" → fix: {self.fix}" if self.fix else "")


class Ladder:
    """The steps so far, the resources they share (closed at the end) and the facts they found."""

    def __init__(self, settings: Settings, echo: Callable[[str], Any] = print, modal_module: Any = None) -> None:
        self.settings = settings
        self.echo = echo
        self.modal_module = modal_module  # tests inject a fake of the SDK; None: import `modal`
        self.steps: list[Step] = []
        self.facts: dict[str, Any] = {}  # what later steps use: the hub to install from, the demo model's URL
        self.resources = contextlib.ExitStack()
        self._secrets: list[str] = [*settings.secrets(), *secrets_from_env()]

    def __enter__(self) -> Ladder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.resources.close()

    def add_secret(self, value: str | None) -> None:
        """A value never to print (an endpoint's key read from its variable)."""
        if value:
            self._secrets.append(value)

    def record(self, name: str, status: StepStatus, detail: str, fix: str = "") -> Step:
        step = Step(name, status, scrub(" ".join(detail.split()), self._secrets), scrub(fix, self._secrets))
        self.steps.append(step)
        self.echo(step.line())
        return step

    def ok(self, name: str, detail: str) -> Step:
        return self.record(name, StepStatus.ok, detail)

    def warn(self, name: str, detail: str, fix: str) -> Step:
        """A step that passed with a risk the user should close (the run is not held by it)."""
        return self.record(name, StepStatus.warn, detail, fix)

    def fail(self, name: str, detail: str, fix: str) -> Step:
        return self.record(name, StepStatus.fail, detail, fix)

    def skip(self, name: str, why: str) -> Step:
        return self.record(name, StepStatus.skip, f"skipped: {why}")

    def status_of(self, name: str) -> StepStatus | None:
        found = [s.status for s in self.steps if s.name == name]
        return found[-1] if found else None

    def needs(self, name: str, *prerequisites: str) -> bool:
        """True when every prerequisite passed; else record `name` as skipped, naming the first that did not."""
        for pre in prerequisites:
            status = self.status_of(pre)
            if status not in (StepStatus.ok, StepStatus.warn):
                self.skip(name, f"needs `{pre}`, which {'failed' if status is StepStatus.fail else 'did not run'}")
                return False
        return True

    @property
    def passed(self) -> bool:
        return not any(s.status is StepStatus.fail for s in self.steps)

    def summary(self) -> str:
        counts = {status: sum(s.status is status for s in self.steps) for status in StepStatus}
        failed = [s.name for s in self.steps if s.status is StepStatus.fail]
        head = (f"ready: {counts[StepStatus.ok]} steps passed" if not failed
                else f"NOT ready: {len(failed)} step{'s' if len(failed) != 1 else ''} failed ({', '.join(failed)})")
        warned = counts[StepStatus.warn]
        head += f", {warned} warning{'s' if warned != 1 else ''}" if warned else ""
        return head + (f", {counts[StepStatus.skip]} skipped" if counts[StepStatus.skip] else "")


def shown_url(url: str) -> str:
    """A service URL without its user and password: scheme://host:port/path."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def stop_process(proc: subprocess.Popen, *, group: bool = False, timeout: float = 10.0) -> None:
    """SIGTERM (to its process group with `group`), then SIGKILL after `timeout` seconds; waits for the end."""
    if proc.poll() is not None:
        return
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait()
