"""make swarm's supervisor, with the real supervisord and Postgres: a process that dies is started again
and the restart is an event; one that cannot start is given up on; Ctrl-C stops everything."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from agentswarm.config import get_settings
from agentswarm.control.status import recent_events
from agentswarm.db import Event, session_scope
from agentswarm.lifecycle.runs import start_run
from agentswarm.ops.console import Follow
from agentswarm.ops.handback import hand_back, queues_of
from agentswarm.ops.process_events import Recorder, Restarts, serve
from agentswarm.ops.supervision import rpc
from agentswarm.ops.swarm import free_port
from agentswarm.queue.app import transport_options
from agentswarm.queue.broker import queue_lengths, queued_task_ids
from agentswarm.queue.names import MERGE_BRANCH, RUN_TASK
from agentswarm.queue.send import send_merge, send_run_task
from tests.support.waiting import wait_for

# Runs Supervisor.run as `make swarm` does, in a process of its own (it takes SIGINT like a terminal's Ctrl-C).
RUNNER = """
import json, os, sys
from pathlib import Path
from agentswarm.ops.supervision import Policy, Supervisor
spec = json.loads(sys.argv[1])
sup = Supervisor(spec["processes"], Path(spec["state"]), cwd=Path(spec["state"]), run_id=spec["run_id"],
                 policy=Policy(startsecs=1, startretries=spec["retries"], stopwaitsecs=5))
sys.exit(sup.run(dict(os.environ)))
"""


def _start(tmp_path: Path, processes: dict[str, str], run_id: str | None, retries: int = 2):
    state = tmp_path / "state"
    spec = json.dumps({"processes": processes, "state": str(state), "run_id": run_id, "retries": retries})
    out = open(tmp_path / "out.log", "wb")  # noqa: SIM115 (closed by the caller's _stop)
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, spec], stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, state, out


def _info(state: Path, name: str) -> dict:
    return rpc(state / "supervisord.conf").supervisor.getProcessInfo(f"swarm:{name}")


def _running_pid(state: Path, name: str) -> int:
    def up():
        try:
            info = _info(state, name)
        except OSError:
            return 0
        return info["pid"] if info["statename"] == "RUNNING" else 0

    return wait_for(up, timeout=30)


def _session_pids(sid: int) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(pid))
    return pids


def _events(db, kind: str) -> list[Event]:
    with session_scope(db) as s:
        return list(s.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))


def test_a_killed_process_is_restarted_and_the_restart_is_an_event(tmp_path, db):
    with session_scope(db) as s:
        run_id = start_run(s, get_settings()).id
    processes = {"sleeper": "sleep 300", "talker": "sh -c 'echo talker up %h; exec sleep 300'"}
    proc, state, out = _start(tmp_path, processes, run_id)
    try:
        first = _running_pid(state, "sleeper")
        os.kill(first, signal.SIGKILL)  # as the OOM killer would
        wait_for(lambda: _running_pid(state, "sleeper") != first, timeout=30)
        (event,) = wait_for(lambda: _events(db, "process.restarted"), timeout=30)
        assert event.run_id == run_id and event.data["process"] == "sleeper"
        assert event.data["signal"] == "SIGKILL" and event.data["pid"] == first and event.data["restarts"] == 1
        assert "sleeper restarted" in event.message and "SIGKILL" in event.message
        with session_scope(db) as s:  # what `agentswarm status` lists
            assert any(e["kind"] == "process.restarted" for e in recent_events(s, run_id))
        assert _info(state, "talker")["statename"] == "RUNNING"  # the others never noticed
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        code = proc.wait(timeout=30)
        out.close()
    text = (tmp_path / "out.log").read_text()
    assert code == 0, text  # asked to stop: success
    assert "talker     | talker up %h" in text  # each process's output behind its name; % survives the config
    assert "exited: sleeper (terminated by SIGKILL; not expected)" in text and "every process stopped" in text
    wait_for(lambda: not _session_pids(proc.pid), timeout=10)


def test_beat_that_cannot_start_is_given_up_on_and_stops_the_swarm(tmp_path, db):
    processes = {"beat": "sh -c 'echo beat: no such schedule >&2; exit 3'", "sleeper": "sleep 300"}
    proc, state, out = _start(tmp_path, processes, None, retries=1)
    try:
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        out.close()
    text = (tmp_path / "out.log").read_text()
    assert code == 1, text
    assert "beat       | beat: no such schedule" in text
    assert "beat cannot run: it failed to start 2 times in a row" in text and "Stopping the swarm" in text
    restarted = _events(db, "process.restarted")
    assert [e.data["failed_start"] for e in restarted] == [True] and restarted[0].data["exit_status"] == 3
    (gave_up,) = _events(db, "process.gave_up")
    assert gave_up.data == {"process": "beat", "ended": "exit status 3", "restarts": 1, "critical": True}
    wait_for(lambda: not _session_pids(proc.pid), timeout=10)  # the sleeper was stopped with it


def _payload(eventname: str, **fields) -> str:
    body = " ".join(f"{k}:{v}" for k, v in fields.items())
    return f"ver:3.0 server:supervisor serial:1 pool:events poolserial:1 eventname:{eventname} len:{len(body)}\n{body}"


def test_restarts_name_the_process_its_end_and_the_count(tmp_path):
    log = tmp_path / "supervisord.log"
    log.write_text("2026-01-01 00:00:00,000 WARN exited: work (terminated by SIGKILL; not expected)\n")
    r = Restarts(log, startretries=3, hand_back={"work": 2}.get)
    swarm = {"groupname": "swarm", "processname": "work"}
    assert r.event("PROCESS_STATE_STARTING", {**swarm, "from_state": "STOPPED"}) is None  # a first start
    assert r.event("PROCESS_STATE_RUNNING", {**swarm, "from_state": "STARTING", "pid": "41"}) is None
    assert r.event("PROCESS_STATE_EXITED", {**swarm, "from_state": "RUNNING", "pid": "41", "expected": "0"}) is None
    kind, message, data = r.event("PROCESS_STATE_STARTING", {**swarm, "from_state": "EXITED", "tries": "0"})
    assert kind == "process.restarted" and message == "work restarted: it died (terminated by SIGKILL); restart 1"
    assert data["pid"] == 41 and data["signal"] == "SIGKILL" and data["restarts"] == 1 and not data["failed_start"]
    assert data["handed_back"] == 2  # what it had taken went back to its queue when it died
    assert r.event("PROCESS_STATE_STARTING", {"groupname": "events", "processname": "events",
                                              "from_state": "EXITED"}) is None  # not a swarm process
    with log.open("a") as fh:
        fh.write("2026-01-01 00:00:09,000 WARN exited: work (exit status 2; not expected)\n")
    kind, _, data = r.event("PROCESS_STATE_STARTING", {**swarm, "from_state": "BACKOFF", "tries": "1"})
    assert data["failed_start"] and data["exit_status"] == 2 and data["signal"] is None and data["restarts"] == 2
    kind, message, data = r.event("PROCESS_STATE_FATAL", {**swarm, "from_state": "BACKOFF"})
    assert kind == "process.gave_up" and not data["critical"] and "4 times in a row (exit status 2)" in message


def test_listener_acknowledges_every_event_when_postgres_is_down(tmp_path, caplog):
    down = Recorder(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing", None)
    stdin = io.StringIO(_payload("PROCESS_STATE_STARTING", processname="work", groupname="swarm",
                                 from_state="EXITED", tries=0)
                        + _payload("PROCESS_STATE_FATAL", processname="work", groupname="swarm",
                                   from_state="BACKOFF"))
    stdout = io.StringIO()
    t0 = time.monotonic()
    serve(Restarts(tmp_path / "no.log"), down, stdin, stdout)
    assert time.monotonic() - t0 < 10
    assert stdout.getvalue() == "READY\nRESULT 2\nOKREADY\nRESULT 2\nOKREADY\n"
    assert caplog.text.count("could not record") == 2


def test_console_follows_a_log_across_rotation(tmp_path):
    path = tmp_path / "work.log"
    path.write_bytes(b"one\ntw")
    follow = Follow(path)
    assert follow.lines() == ["one"]
    with path.open("ab") as fh:
        fh.write(b"o\nthree\n")
    path.rename(tmp_path / "work.log.1")  # supervisord's rotation: rename, then a new file
    path.write_bytes(b"four\nfive")
    assert follow.lines() == ["two", "three", "four"]
    assert follow.rest() == ["five"]
    follow.close()


# Takes one message from each queue as a worker does (acknowledged late: it stays in `unacked`), then waits.
TAKER = """
import sys, time
from kombu import Connection
from agentswarm.config import get_settings
from agentswarm.queue.app import transport_options
settings = get_settings()
channel = Connection(settings.redis_url, transport_options=transport_options(settings)).channel()
held = [channel.basic_get(q, no_ack=False) for q in sys.argv[1:]]
print("took", *[m is not None for m in held], flush=True)
time.sleep(120)
"""


def test_what_a_killed_worker_had_taken_goes_back_to_its_queue(redis_client):
    assert queues_of("celery -A agentswarm.queue.app worker -Q plan,monitor -c 2") == ["plan", "monitor"]
    assert queues_of("celery -A agentswarm.queue.app beat") == []
    send_merge("merge-me")
    send_run_task("run-me", 5)
    taker = subprocess.Popen([sys.executable, "-c", TAKER, "merge", "work"], stdout=subprocess.PIPE, text=True)
    assert taker.stdout.readline().split() == ["took", "True", "True"]
    taker.kill()  # SIGKILL: nothing acknowledged, nothing restored
    taker.wait()
    assert queue_lengths(redis_client) == {"plan": 0, "work": 0, "merge": 0, "gate": 0, "reconcile": 0, "monitor": 0}
    assert queued_task_ids(redis_client, "merge", MERGE_BRANCH) == {"merge-me"}  # held, as far as the monitor sees

    settings = get_settings()
    assert hand_back(settings.redis_url, ["merge"], time.time(), transport_options(settings)) == 1
    assert queue_lengths(redis_client, ["merge", "work"]) == {"merge": 1, "work": 0}  # only the merge worker's
    assert redis_client.hlen("unacked") == 1  # the work queue's message is another process's business
    assert hand_back(settings.redis_url, ["work"], time.time() - 60, transport_options(settings)) == 0  # too new
    assert hand_back(settings.redis_url, ["work"], time.time(), transport_options(settings)) == 1
    assert queued_task_ids(redis_client, "work", RUN_TASK) == {"run-me"} and redis_client.hlen("unacked") == 0


def test_hand_back_gives_up_quickly_when_redis_is_down():
    t0 = time.monotonic()
    try:
        hand_back(f"redis://127.0.0.1:{free_port()}/0", ["merge"], time.time(), {})
    except Exception as exc:
        assert "refused" in str(exc).lower() or "connect" in str(exc).lower(), exc
    else:
        raise AssertionError("no error from a Redis that is not there")
    assert time.monotonic() - t0 < 15
