"""`agentswarm doctor --smoke`: one real task from plan to merged, in a scratch run on a scratch hub.

The run's own machinery does the work: the planner asks the endpoint (or the demo simulator) for a task,
a real Celery worker drives it in a sandbox of the configured backend, and the merge stage lands it through
the gate as configured. Nothing of a real run is touched: the run lives in a scratch database on the same
Postgres server, its messages in a redis-server of its own on a free port (or, without redis-server here, an
empty database of REDIS_URL's server), its hub, target copy and sandboxes under a scratch
directory beside the hub (the target's installed dependencies are shared: the install step filled them).

The parent (`check_smoke`) prepares and removes the scratch things; a child process (`python -m
agentswarm.ops.doctor.smoke`, whose settings come from its environment) runs the stages and reports each as a
JSON line, which the parent prints as a step as soon as it arrives. A failed smoke run keeps its directory
(the worker's log is there).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agentswarm.ops.doctor.ladder import stop_process

FEATURE = {
    "id": "engine-999", "category": "engine", "title": "Doctor smoke: one constant",
    "description": "Create src/engine/doctorSmoke.ts containing exactly `export const DOCTOR_SMOKE = 'ok';` and nothing "
                   "else. This feature exists only in `agentswarm doctor --smoke`'s scratch run.",
    "priority": 1, "status": "pending", "files": ["src/engine/doctorSmoke.ts"], "dependencies": [],
    "acceptance": ["src/engine/doctorSmoke.ts exports DOCTOR_SMOKE equal to 'ok'", "tsc --noEmit passes"],
}
STEPS = ("smoke setup", "smoke plan", "smoke work", "smoke merge")
EXCLUDED = ("node_modules", "dist", ".vite", ".git")


# -- the parent: scratch things around the child -------------------------------------------------------


def check_smoke(ladder: Any, timeout_s: float = 600.0) -> None:
    """Run the child with scratch settings; print its steps; remove what it made (kept on failure)."""
    if not ladder.passed:
        for name in STEPS:
            ladder.skip(name, "a step above failed")
        return
    s = ladder.settings
    scratch = Path(s.hub_path).resolve().parent / f"doctor-smoke-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    db_name = f"agentswarm_doctor_{os.getpid()}"
    redis_server: subprocess.Popen | None = None
    try:
        db_url = _create_database(s.database_admin_url, db_name)
        redis_server, redis_url = _private_redis(scratch)
        if redis_url is None:
            redis_url = _empty_redis_db(s.redis_url)
    except Exception as exc:  # noqa: BLE001  (any service error ends the smoke run with one line)
        ladder.fail("smoke setup", f"no scratch database: {exc}", "see the `postgres` and `redis` steps")
        _drop_database(s.database_admin_url, db_name)
        if redis_server is not None:
            _stop(redis_server)
        shutil.rmtree(scratch, ignore_errors=True)
        return
    try:
        env = scratch_env(s, scratch, db_url, redis_url, ladder.facts.get("demo_llm_url"))
        ok = _run_child(ladder, env, scratch, timeout_s)
    finally:
        _drop_database(s.database_admin_url, db_name)
        if redis_server is not None:
            _stop(redis_server)
        else:
            _flush_redis(redis_url)
    if ok:
        shutil.rmtree(scratch, ignore_errors=True)


def _private_redis(scratch: Path) -> tuple[subprocess.Popen | None, str | None]:
    """A redis-server of the smoke run's own on a free port (no persistence); (None, None) if not installed."""
    import redis

    from agentswarm.ops.swarm import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        return None, None
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(scratch)], stdout=open(scratch / "redis.log", "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        try:
            client.ping()
            return proc, url
        except redis.RedisError:
            time.sleep(0.1)
        finally:
            client.close()
    _stop(proc)
    raise RuntimeError(f"redis-server on port {port} did not answer (see {scratch / 'redis.log'})")


def _stop(proc: subprocess.Popen) -> None:
    stop_process(proc)


def scratch_env(s: Any, scratch: Path, db_url: str, redis_url: str, demo_llm_url: str | None) -> dict[str, str]:
    """The child's environment: this one, pointed at the scratch services, hub, target and sandboxes."""
    from agentswarm.sandbox.deps import deps_root

    target = scratch / "target"
    shutil.copytree(Path(s.target_repo_path).resolve(), target, ignore=shutil.ignore_patterns(*EXCLUDED))
    (target / "FEATURES.json").write_text(json.dumps({"project": "doctor smoke", "version": 1, "features": [FEATURE]},
                                                     indent=2) + "\n")
    shared = deps_root(Path(s.hub_path))
    shared.mkdir(parents=True, exist_ok=True)
    (scratch / "deps").symlink_to(shared)  # deps_root(scratch hub): the install step's cache
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url, "HUB_PATH": str(scratch / "hub.git"),
           "TARGET_REPO_PATH": str(target), "SANDBOX_ROOT": str(scratch / "sandboxes"), "GIT_REPO_URL": "",
           "MAX_WORKERS": "1", "PLANNER_BATCH_SIZE": "1", "PLANNER_BACKLOG": "0", "MAX_ATTEMPTS": "1",
           "GATE_BATCH_WAIT_S": "0", "RECONCILE_INTERVAL_S": "86400", "PYTHONUNBUFFERED": "1"}
    if demo_llm_url:
        env["LLM_BASE_URL"] = demo_llm_url
    return env


def _run_child(ladder: Any, env: dict[str, str], scratch: Path, timeout_s: float) -> bool:
    proc = subprocess.Popen([sys.executable, "-m", "agentswarm.ops.doctor.smoke", str(scratch), str(timeout_s)],
                            env=env, stdout=subprocess.PIPE, stderr=open(scratch / "smoke.log", "wb"),
                            start_new_session=True)
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s + 120
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None
    sel.register(proc.stdout, selectors.EVENT_READ)
    buffer = b""
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=1.0):
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                _report(ladder, line, seen, scratch)
    finally:
        sel.close()
        stop_process(proc, group=True, timeout=30)
        proc.stdout.close()
    missing = [name for name in STEPS if name not in seen]
    if missing:
        why = "timed out" if time.monotonic() >= deadline else f"the smoke run exited {proc.returncode}"
        ladder.fail(missing[0], f"{why} before this step reported", f"see {scratch / 'smoke.log'}")
        for name in missing[1:]:
            ladder.skip(name, f"`{missing[0]}` did not finish")
    return not missing and all(ladder.status_of(name) == "ok" for name in STEPS)


def _report(ladder: Any, raw: bytes, seen: set[str], scratch: Path) -> None:
    try:
        item = json.loads(raw)
    except ValueError:
        return
    if not isinstance(item, dict) or item.get("step") not in STEPS:
        return
    seen.add(item["step"])
    if item.get("ok"):
        ladder.ok(item["step"], item.get("detail", ""))
    elif item.get("skip"):
        ladder.skip(item["step"], item.get("detail", ""))
    else:
        fix = item.get("fix") or "see the logs"
        ladder.fail(item["step"], item.get("detail", ""), f"{fix} (logs kept in {scratch})")


def _admin_url(database_url: str) -> str:
    parts = urlsplit(database_url.replace("postgresql+psycopg://", "postgresql://", 1))
    return urlunsplit(parts._replace(path="/postgres"))


def _create_database(database_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(_admin_url(database_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    return urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))


def _drop_database(database_url: str, name: str) -> None:
    import psycopg

    try:
        with psycopg.connect(_admin_url(database_url), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
    except psycopg.Error:
        pass


def _empty_redis_db(redis_url: str) -> str:
    """Without redis-server here: an empty database of REDIS_URL's server other than its own (flushed after)."""
    import redis

    parts = urlsplit(redis_url)
    own = int(parts.path.strip("/") or 0)
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
    try:
        count = int(client.config_get("databases").get("databases") or 16)
    except redis.RedisError:
        count = 16
    finally:
        client.close()
    for db in range(count - 1, -1, -1):
        if db == own:
            continue
        url = urlunsplit(parts._replace(path=f"/{db}"))
        probe = redis.Redis.from_url(url, socket_connect_timeout=5)
        try:
            if probe.dbsize() == 0:
                return url
        finally:
            probe.close()
    raise RuntimeError(f"every Redis database but REDIS_URL's holds keys: none is free for a scratch run "
                       f"(of {count})")


def _flush_redis(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
    try:
        client.flushdb()
    except redis.RedisError:
        pass
    finally:
        client.close()


if __name__ == "__main__":
    from agentswarm.ops.doctor.smoke_run import main

    sys.exit(main(Path(sys.argv[1]), float(sys.argv[2])))
