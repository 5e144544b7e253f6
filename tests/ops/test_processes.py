"""One process list, the Procfile: supervisord (`make swarm`) runs it, docker-compose.yml runs the same
commands (tests/ops/test_compose.py), and they serve what celery_app routes to."""

import configparser
import shlex
from pathlib import Path

import pytest

from agentswarm.ops.supervision import CRITICAL, GROUP, Policy, Supervisor, read_procfile
from agentswarm.queue.app import TASK_ROUTES, create_app
from agentswarm.queue.names import CONTROL_QUEUES, PROCESS_QUEUES, QUEUES

ROOT = Path(__file__).resolve().parents[2]


def _argv(cmd) -> list[str]:
    if isinstance(cmd, str):
        return shlex.split(cmd)
    if cmd[:2] == ["sh", "-c"]:
        return shlex.split(cmd[2].removeprefix("exec "))
    return list(cmd)


def _opt(argv, flag):
    return argv[argv.index(flag) + 1] if flag in argv else None


def _check_process_set(commands: dict[str, list[str]]):
    workers = {n: a for n, a in commands.items() if "worker" in a}
    queues_served = {q for a in workers.values() for q in _opt(a, "-Q").split(",")}
    assert queues_served == set(QUEUES)
    routed = {r["queue"] for r in TASK_ROUTES.values()}
    assert routed <= queues_served
    by_queue = {tuple(_opt(a, "-Q").split(",")): a for a in workers.values()}
    assert set(by_queue) == set(PROCESS_QUEUES)  # the reconciler's long checks never hold up planning
    assert _opt(by_queue[("reconcile",)], "-c") == "1"
    work = by_queue[("work",)]
    assert _opt(work, "-P") == "threads" and "MAX_WORKERS" in _opt(work, "-c")
    assert _opt(by_queue[("merge",)], "-c") == "1"
    beats = [a for a in commands.values() if "beat" in a]
    assert len(beats) == 1
    assert any("flower" in a for a in commands.values())
    for a in commands.values():
        assert _opt(a, "-A") == "agentswarm.queue.app"


def test_procfile_dashboard_stays_on_loopback():
    lines = dict(ln.split(":", 1) for ln in (ROOT / "Procfile").read_text().splitlines()
                 if ln.strip() and not ln.startswith("#"))
    argv = shlex.split(lines["dashboard"])
    assert argv[:2] == ["agentswarm", "dashboard"] and _opt(argv, "--host") in (None, "127.0.0.1", "localhost")


def test_procfile_agrees_with_celery_app():
    lines = [ln.split(":", 1) for ln in (ROOT / "Procfile").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    commands = {name.strip(): shlex.split(cmd) for name, cmd in lines}
    _check_process_set({n: a for n, a in commands.items() if a[0] == "celery"})


def test_supervisord_config_comes_from_the_procfile(tmp_path):
    procfile = read_procfile(ROOT / "Procfile")
    sup = Supervisor(procfile, tmp_path, cwd=ROOT, run_id="r1")
    conf = configparser.RawConfigParser()
    conf.read_string(sup.config("pw"))
    programs = {s.removeprefix("program:"): conf[s] for s in conf.sections() if s.startswith("program:")}
    assert list(programs) == list(procfile) == conf[f"group:{GROUP}"]["programs"].split(",")
    assert CRITICAL <= set(programs)
    policy = Policy()
    for name, section in programs.items():
        # the Procfile's own shell line (supervisord reads %% as %: celery's -n work@%h survives)
        assert shlex.split(section["command"].replace("%%", "%")) == ["/bin/sh", "-c", f"exec {procfile[name]}"]
        assert section["autorestart"] == "true" and section["startsecs"] == str(policy.startsecs)
        assert section["startretries"] == str(policy.startretries)
        assert section["stopasgroup"] == section["killasgroup"] == "true"  # pool children and sandboxes too
    listener = conf["eventlistener:events"]
    assert listener["events"] == "PROCESS_STATE" and "agentswarm.ops.process_events" in listener["command"]
    assert "--run-id r1" in listener["command"]
    assert conf["unix_http_server"]["chmod"] == "0700" and conf["unix_http_server"]["password"] == "pw"


def test_every_task_has_a_route():
    app = create_app()
    import agentswarm.tasks  # noqa: F401

    ours = {n for n in app.tasks if n.startswith("agentswarm.")}
    assert ours == set(TASK_ROUTES)


def test_every_beat_entry_names_a_registered_task_on_a_control_queue():
    app = create_app()
    app.loader.import_default_modules()  # the entry points, as a worker loads them (`include`)
    for entry in app.conf.beat_schedule.values():
        assert entry["task"] in app.tasks, entry
        assert TASK_ROUTES[entry["task"]]["queue"] in CONTROL_QUEUES


def test_the_served_hub_is_optional_and_started_only_when_asked(monkeypatch, tmp_path):
    """`hubserve` is a commented line of the Procfile (compose and supervisord skip it); `make swarm` adds it
    when HUB_SERVE_ADDR is set, and refuses to start at all without a token for it."""
    from agentswarm.config import load_settings
    from agentswarm.errors import ConfigError
    from agentswarm.ops.swarm import HUB_SERVE, check_hub_serve, processes

    name, command = HUB_SERVE
    assert f"# {name}: {command}" in (ROOT / "Procfile").read_text().splitlines()
    assert name not in read_procfile(ROOT / "Procfile") and name not in processes(None)
    assert processes(None, hub_serve=True)[name] == command
    monkeypatch.chdir(tmp_path)
    check_hub_serve(load_settings())  # off: nothing needed
    monkeypatch.setenv("HUB_SERVE_ADDR", "127.0.0.1:8471")
    with pytest.raises(ConfigError, match="HUB_SERVE_TOKEN"):
        check_hub_serve(load_settings())
    monkeypatch.setenv("HUB_SERVE_TOKEN", "a-token-of-enough-length")
    check_hub_serve(load_settings())
