"""`make swarm`'s supervisor: supervisord runs the Procfile's processes and starts again one that dies.

One process list, the repository's Procfile (docker-compose.yml runs the same set; a test keeps them
agreeing). Every process runs in supervisord's group `swarm`, in a process group of its own:
- one that dies after it has run `startsecs` (killed by the OOM killer, a crash) is started again at once;
- one that dies sooner failed to start: supervisord tries again after 1 s, 2 s, 3 s ... and after
  `startretries` failed starts gives up on it (FATAL) and says so. If beat or the control worker gives
  up, nothing would plan or recover any more, so the whole swarm stops with a line saying why;
- every restart and every give-up is an event in Postgres (`process_events`, a supervisord event listener),
  and what a dead worker had taken from its queues goes back on them (`handback`).
Ctrl-C or SIGTERM stops them all: SIGTERM to each process group, SIGKILL after `stopwaitsecs`.
"""

from __future__ import annotations

import configparser
import ctypes
import http.client
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentswarm.errors import ConfigError
from agentswarm.ops.console import Console
from agentswarm.ops.handback import queues_of

GROUP = "swarm"
LISTENER = "events"
CRITICAL = frozenset({"beat", "control"})  # without them nothing is planned, checked or recovered
USER = "agentswarm"
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Policy:
    """How supervisord starts, restarts and stops each process."""

    startsecs: int = 10  # a process that exits sooner failed to start (and is retried with backoff)
    startretries: int = 3  # failed starts in a row before supervisord gives up on a process
    stopwaitsecs: int = 10  # after SIGTERM, seconds before SIGKILL


def read_procfile(path: Path) -> dict[str, str]:
    """A Procfile's processes, name to shell command line, in order."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            out[name.strip()] = command.strip()
    return out


def _value(v: object) -> str:
    text = str(v).lower() if isinstance(v, bool) else str(v)
    if "\n" in text:
        raise ConfigError(f"a supervisord setting cannot hold a newline: {text!r}")
    return text.replace("%", "%%")  # supervisord expands %(name)s in every value


def _ini(sections: list[tuple[str, dict[str, object]]]) -> str:
    lines: list[str] = []
    for name, options in sections:
        lines += [f"[{name}]", *(f"{k}={_value(v)}" for k, v in options.items()), ""]
    return "\n".join(lines)


class Supervisor:
    """One supervisord for one swarm: its config, its control socket and its log files live in `state`."""

    def __init__(self, processes: dict[str, str], state: Path, *, cwd: Path, run_id: str | None = None,
                 policy: Policy | None = None):
        self.processes, self.state, self.cwd = processes, state, cwd
        self.run_id, self.policy = run_id, policy or Policy()
        self.conf = state / "supervisord.conf"
        self.log = state / "supervisord.log"
        sock = state / "supervisor.sock"
        if len(str(sock)) > 100:  # a unix socket's path must fit in 108 bytes
            sock = Path(tempfile.mkdtemp(prefix="agentswarm-")) / "supervisor.sock"
        self.sock = sock
        self._rpc: Any = None

    def config(self, password: str) -> str:
        """supervisord's configuration: the processes in one group, the event listener, the control socket."""
        p, state = self.policy, self.state
        listen = [sys.executable, "-m", "agentswarm.ops.process_events", "--supervisor-log", str(self.log),
                  "--startretries", str(p.startretries)]
        for name, line in self.processes.items():
            if queues := queues_of(line):
                listen += ["--queues", f"{name}={','.join(queues)}"]
        sections: list[tuple[str, dict[str, object]]] = [
            ("supervisord", {"nodaemon": True, "silent": True, "logfile": self.log, "logfile_maxbytes": "10MB",
                             "logfile_backups": 2, "loglevel": "info", "pidfile": state / "supervisord.pid",
                             "childlogdir": state, "directory": self.cwd,
                             **({"user": "root"} if os.geteuid() == 0 else {})}),
            ("unix_http_server", {"file": self.sock, "chmod": "0700", "username": USER, "password": password}),
            ("rpcinterface:supervisor",
             {"supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"}),
            ("supervisorctl", {"serverurl": f"unix://{self.sock}", "username": USER, "password": password}),
            (f"group:{GROUP}", {"programs": ",".join(self.processes)}),
        ]
        for name, line in self.processes.items():
            sections.append((f"program:{name}", {
                "command": shlex.join(["/bin/sh", "-c", f"exec {line}"]),  # the Procfile's shell line; exec keeps the pid
                "directory": self.cwd, "autostart": True, "autorestart": True,
                "startsecs": p.startsecs, "startretries": p.startretries,
                "stopsignal": "TERM", "stopwaitsecs": p.stopwaitsecs, "stopasgroup": True, "killasgroup": True,
                "redirect_stderr": True, "stdout_logfile": state / f"{name}.log",
                "stdout_logfile_maxbytes": "50MB", "stdout_logfile_backups": 2,
            }))
        sections.append((f"eventlistener:{LISTENER}", {
            "command": shlex.join(listen + (["--run-id", self.run_id] if self.run_id else [])),
            "directory": self.cwd, "events": "PROCESS_STATE", "buffer_size": 1024,
            "priority": 1,  # started first, stopped last
            "autorestart": True, "startsecs": 1, "stopsignal": "TERM", "stopwaitsecs": 5,
            "stdout_logfile": "NONE", "stderr_logfile": state / f"{LISTENER}.log",
            "stderr_logfile_maxbytes": "10MB", "stderr_logfile_backups": 2,
        }))
        return _ini(sections)

    def write_config(self) -> Path:
        """Write the configuration (readable by this user only: it holds the control socket's password)."""
        self.state.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.config(secrets.token_urlsafe(18)))
        return self.conf

    def rpc(self) -> Any:
        """supervisord's XML-RPC interface over its unix socket (`.supervisor.getProcessInfo(...)`, ...)."""
        if self._rpc is None:
            self._rpc = rpc(self.conf)
        return self._rpc

    def gave_up(self) -> list[str]:
        """The processes supervisord gave up on (FATAL); empty while it does not answer."""
        try:
            infos = self.rpc().supervisor.getAllProcessInfo()
        except (OSError, xmlrpc.client.Error, http.client.HTTPException):
            self._rpc = None
            return []
        return [i["name"] for i in infos if i["group"] == GROUP and i["statename"] == "FATAL"]

    def run(self, env: dict[str, str], out: Any = None, *, story: Any = None, quiet: bool = False) -> int:
        """Run supervisord until it stops, printing the processes' output; the exit code for `make swarm`.

        `quiet`: print only the processes' warnings and errors (every line stays in its log file).
        `story`: called about once a second, returns lines to print under `swarm` (ops/narrator.py).
        Ctrl-C or SIGTERM stops every process and returns 0; a critical process that cannot run, 1.
        """
        exe = shutil.which("supervisord", path=str(Path(sys.executable).parent)) or shutil.which("supervisord")
        if not exe:
            raise ConfigError("supervisord is not installed: run `make install`")
        self.write_config()
        names = [*self.processes, LISTENER, "supervisor"]
        files = [*(self.state / f"{n}.log" for n in self.processes), self.state / f"{LISTENER}.log", self.log]
        console = Console(dict(zip(names, files, strict=True)), out, quiet=frozenset(names) if quiet else frozenset())
        proc = subprocess.Popen([exe, "--nodaemon", "--configuration", str(self.conf)], cwd=self.cwd, env=env,
                                stdin=subprocess.DEVNULL, preexec_fn=_stop_with_parent)
        code: int | None = None

        def stop(signum: int, _frame: object) -> None:
            nonlocal code
            code = 0 if code is None else code  # asked to stop: stopping is success
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

        handlers = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        told: set[str] = set()
        try:
            next_check = time.monotonic() + 1
            while proc.poll() is None:
                console.pump()
                if code is None and time.monotonic() >= next_check:
                    next_check = time.monotonic() + 1
                    for name in sorted(set(self.gave_up()) - told):
                        told.add(name)
                        if quiet:  # its lines were not printed: the last of them say why
                            for line in _tail(self.state / f"{name}.log", 15):
                                console.say(name, line)
                        console.say("swarm", self._gave_up_line(name))
                        if name in CRITICAL:
                            code = 1
                            proc.send_signal(signal.SIGTERM)
                if story is not None and code is None:
                    for line in story():
                        console.say("swarm", line)
                time.sleep(0.2)
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            if proc.poll() is None:  # this loop itself failed: stop the processes before leaving
                proc.send_signal(signal.SIGTERM)
                proc.wait()
            console.pump(final=True)
            if code is None:
                code = proc.returncode or 0
                console.say("swarm", f"supervisord exited with status {proc.returncode}")
            else:
                console.say("swarm", "every process stopped" if code else "stopped as asked: every process stopped")
            console.out.flush()
            console.close()
            if self.sock.parent != self.state:
                shutil.rmtree(self.sock.parent, ignore_errors=True)
        return code

    def _gave_up_line(self, name: str) -> str:
        tries = f"it failed to start {self.policy.startretries + 1} times in a row (it must run {self.policy.startsecs}s)"
        if name in CRITICAL:
            return f"{name} cannot run: {tries}; its lines above say why. Stopping the swarm."
        return (f"{name} is not running: {tries}; the rest keep running. Once fixed: "
                f"supervisorctl -c {self.conf} start {GROUP}:{name}")


def _tail(path: Path, n: int) -> list[str]:
    """The last n lines of a log file (what a process said before it died)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 16384))
            return [ln.decode("utf-8", "replace") for ln in fh.read().splitlines()[-n:]]
    except OSError:
        return []


def rpc(conf: Path) -> Any:
    """The XML-RPC proxy of the supervisord that `conf` configures (its socket and password)."""
    from supervisor.xmlrpc import SupervisorTransport

    parser = configparser.RawConfigParser()
    if not parser.read(conf) or not parser.has_section("supervisorctl"):
        raise FileNotFoundError(f"no supervisord configuration at {conf}")
    ctl = {k: v.replace("%%", "%") for k, v in parser["supervisorctl"].items()}
    transport = SupervisorTransport(ctl["username"], ctl["password"], ctl["serverurl"])
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def _stop_with_parent() -> None:
    """In supervisord's child: SIGTERM (stop every process) should the `make swarm` process itself be killed."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
