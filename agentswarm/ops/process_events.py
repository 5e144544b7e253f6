"""supervisord event listener: every restart of a swarm process, and every give-up, becomes an event.

`process.restarted` when supervisord starts a process again after it exited or failed to start (which
process, how its last run ended, its pid, the count of restarts so far); `process.gave_up` when
supervisord stops trying (FATAL). They reach `agentswarm status` and the dashboard's feed.

When a worker dies, the messages it had taken and not acknowledged go back to its queues at once
(`handback`); the monitor's recovery re-sends from Postgres what was in flight (a task whose
heartbeat stopped goes back to pending and is sent again).

The listener speaks supervisord's protocol on stdin/stdout and logs on stderr. It acknowledges
every event, even one it could not record: Postgres being down costs the event (a line on stderr
says so), never the supervisor's progress. Each write gives up after a few seconds.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agentswarm.ops.supervision import CRITICAL, GROUP

log = logging.getLogger("agentswarm.process_events")
RESTARTED_FROM = ("EXITED", "BACKOFF")  # STARTING from these is a restart; from STOPPED, a first start
EXIT_LINE = re.compile(r"exited: (?P<name>\S+) \((?P<how>[^;)]*)")
LOG_TAIL = 64 * 1024


def parse(line: str) -> dict[str, str]:
    """supervisord's `key:value key:value` header or payload line."""
    return dict(token.split(":", 1) for token in line.split() if ":" in token)


def how_it_ended(supervisor_log: Path, name: str) -> str:
    """How the process last ended, from supervisord's own log ("terminated by SIGKILL", "exit status 1")."""
    try:
        with open(supervisor_log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - LOG_TAIL))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return "unknown"
    found = [m["how"] for m in EXIT_LINE.finditer(tail) if m["name"] == name]
    return found[-1].strip() if found else "unknown"


@dataclass
class Restarts:
    """Turns supervisord's process state changes into the events worth recording."""

    supervisor_log: Path
    startretries: int = 3
    hand_back: Callable[[str], int | None] | None = None  # a dead process's reserved messages, back to its queues
    count: Counter[str] = field(default_factory=Counter)
    last_pid: dict[str, int] = field(default_factory=dict)
    handed_back: dict[str, int | None] = field(default_factory=dict)

    def event(self, eventname: str, payload: dict[str, str]) -> tuple[str, str, dict[str, Any]] | None:
        """(kind, message, data) for an event worth recording, else None."""
        name, state = payload.get("processname", ""), eventname.removeprefix("PROCESS_STATE_")
        if payload.get("groupname") != GROUP:
            return None
        if state == "RUNNING" or state == "EXITED":
            self.last_pid[name] = int(payload.get("pid") or 0)
        if (state == "EXITED" or state == "BACKOFF") and self.hand_back is not None:
            self.handed_back[name] = self.hand_back(name)
        if state == "STARTING" and payload.get("from_state") in RESTARTED_FROM:
            self.count[name] += 1
            ended = how_it_ended(self.supervisor_log, name)
            failed_start = payload["from_state"] == "BACKOFF"
            data = {"process": name, "ended": ended, "signal": _signal(ended), "exit_status": _status(ended),
                    "pid": self.last_pid.get(name), "restarts": self.count[name], "failed_start": failed_start,
                    "tries": int(payload.get("tries") or 0),
                    "handed_back": self.handed_back.pop(name, None)}
            why = "it failed to start" if failed_start else "it died"
            return ("process.restarted", f"{name} restarted: {why} ({ended}); restart {self.count[name]}", data)
        if state == "FATAL":
            ended = how_it_ended(self.supervisor_log, name)
            stops = "; the swarm stops" if name in CRITICAL else ""
            msg = f"{name} gave up: it failed to start {self.startretries + 1} times in a row ({ended}){stops}"
            return ("process.gave_up", msg, {"process": name, "ended": ended, "restarts": self.count[name],
                                             "critical": name in CRITICAL})
        return None


def _signal(ended: str) -> str | None:
    return ended.removeprefix("terminated by ").split()[0] if ended.startswith("terminated by ") else None


def _status(ended: str) -> int | None:
    return int(ended.rsplit(" ", 1)[1]) if ended.startswith("exit status ") else None


def hand_back_by_name(queues: dict[str, list[str]], redis_url: str, options: dict[str, Any]
                      ) -> Callable[[str], int | None]:
    """`Restarts.hand_back` for processes consuming `queues` (by name); a failure is a log line and None."""
    from agentswarm.ops.handback import hand_back

    def run(name: str) -> int | None:
        if not queues.get(name):
            return None
        try:
            n = hand_back(redis_url, queues[name], time.time(), options)
        except Exception as exc:
            log.warning("could not hand back what %s had taken from %s: %s", name, ",".join(queues[name]),
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return None
        if n:
            log.info("%s died holding %d message(s): back on %s", name, n, ",".join(queues[name]))
        return n

    return run


class Recorder:
    """Writes one event per transaction on an engine that gives up within seconds."""

    def __init__(self, database_url: str, run_id: str | None):
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        self.run_id = run_id
        self.engine = create_engine(database_url, poolclass=NullPool, connect_args={
            "connect_timeout": 3, "options": "-c statement_timeout=5000 -c lock_timeout=3000"})

    def record(self, kind: str, message: str, data: dict[str, Any]) -> None:
        from sqlalchemy.orm import Session

        from agentswarm.db.events import record_event

        with Session(self.engine) as session, session.begin():
            record_event(session, kind, message, run_id=self.run_id, **data)


def serve(restarts: Restarts, recorder: Any, stdin: IO[str], stdout: IO[str]) -> None:
    """supervisord's event listener loop: READY, one event, RESULT OK; until stdin closes."""
    while True:
        stdout.write("READY\n")
        stdout.flush()
        line = stdin.readline()
        if not line:
            return
        headers = parse(line)
        payload = stdin.read(int(headers.get("len", 0)))
        try:
            found = restarts.event(headers.get("eventname", ""), parse(payload.split("\n", 1)[0]))
            if found and recorder is None:
                log.info("%s %s (not recorded)", found[0], found[1])
            elif found:
                recorder.record(*found)  # record_event logs it too
        except Exception as exc:  # never fail the event: supervisord would send it again and again
            log.warning("could not record %s (%s): %s", headers.get("eventname"), payload.strip()[:200],
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        stdout.write("RESULT 2\nOK")
        stdout.flush()


def main(argv: list[str] | None = None) -> None:
    """`python -m agentswarm.ops.process_events --supervisor-log PATH [--run-id ID]` (supervisord starts it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supervisor-log", type=Path, required=True)
    parser.add_argument("--run-id")
    parser.add_argument("--startretries", type=int, default=3)
    parser.add_argument("--queues", action="append", default=[], metavar="NAME=Q1,Q2",
                        help="the queues a worker process alone consumes")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    protocol, sys.stdout = sys.stdout, sys.stderr  # nothing but the protocol may reach supervisord's pipe
    restarts = Restarts(args.supervisor_log, args.startretries)
    recorder: Any
    try:
        from agentswarm.config import get_settings
        from agentswarm.queue.app import transport_options

        settings = get_settings()
        recorder = Recorder(settings.database_url, args.run_id)
        queues = {name: qs.split(",") for name, _, qs in (q.partition("=") for q in args.queues)}
        restarts.hand_back = hand_back_by_name(queues, settings.redis_url, transport_options(settings))
    except Exception as exc:  # the supervisor goes on without its events rather than without a listener
        log.warning("process events are not recorded: %s", str(exc).splitlines()[0] if str(exc) else exc)
        recorder = None
    serve(restarts, recorder, sys.stdin, protocol)


if __name__ == "__main__":
    main()
