"""The base of every AgentSwarm Celery task: arguments checked against the task's signature before it runs.

Messages sent by the swarm always fit; one sent by hand (`celery call`, Flower, a script) may not. Celery would
call the function anyway and log a TypeError with a traceback; here the call fails as an *expected* error (listed
in `throws`), which Celery logs as one line ("raised expected: BadCall(...)") and Flower shows as the failure.
Each task may add its own expected errors (bad values, not only bad shapes) to `throws`.
"""

from __future__ import annotations

import inspect
from typing import Any

from celery import Task

from agentswarm.errors import BadCall


class CheckedTask(Task):
    """A task whose arguments must bind to its signature; a bad call is an expected failure, named in one line."""

    throws: tuple[type[BaseException], ...] = (BadCall,)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            inspect.signature(self.run).bind(*args, **kwargs)
        except TypeError as exc:
            raise BadCall(f"{self.name}: {exc}") from None
        return super().__call__(*args, **kwargs)
