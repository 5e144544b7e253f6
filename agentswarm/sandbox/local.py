"""The local backend: one directory and one process group per command, a scrubbed environment, rlimits.

Layout of a sandbox: `<root>/<run_id>/<task_id>-a<attempt>/` holding `meta.json`, `work/`
(the handle's workdir: task.json, result.json, repo), `home/`, `tmp/` and `logs/`.
Where the machine allows it (root), the sandbox also has its own cgroup (pids, memory, CPU;
sandbox/cgroups.py) that every command joins, and its writable places share one size-limited
tmpfs (sandbox/disk.py); `limits` says which of these hold here, and why not.
Every process started in it carries `AGENTSWARM_SANDBOX=<that directory>` in its
environment, so list() and terminate() find its processes from any process, even
after the worker that created it crashed.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

import agentswarm
from agentswarm.agent.contract import GATE_SOCKET_ENV
from agentswarm.git.intake import clone_for_sandbox
from agentswarm.sandbox import cgroups, disk, isolation, launch, procs
from agentswarm.sandbox.admission import AdmissionController
from agentswarm.sandbox.base import (
    OUTPUT_CAP_BYTES,
    ExecResult,
    SandboxError,
    SandboxGone,
    SandboxHandle,
    SandboxInfo,
    check_id,
    check_relpath,
)
from agentswarm.sandbox.files import chown_tree, force_remove, read_capped, read_range, write_atomic
from agentswarm.sandbox.registry_proxy import SOCKET_ENV as REGISTRY_SOCKET_ENV
from agentswarm.sandbox.registry_proxy import RegistryProxy, registry_url

_SID_RE = re.compile(r"^(?P<run>[A-Za-z0-9_.-]{1,63})/(?P<task>[A-Za-z0-9_.-]{1,63})-a(?P<attempt>\d+)$")
_PACKAGE_PARENT = str(Path(agentswarm.__file__).resolve().parent.parent)
log = logging.getLogger(__name__)


class LocalSandboxConfig(BaseModel):
    """Settings of the local backend."""

    model_config = ConfigDict(extra="forbid")

    root: Path = Field(Path("var/sandboxes"), description="Directory holding one sub-directory per sandbox.")
    python: str = Field(sys.executable, description="Python interpreter for the launcher and the worker runner.")
    path: str | None = Field(None, description="PATH of sandboxed commands; default: the interpreter's bin dir + this PATH.")
    cpu_seconds: int | None = Field(3600, description="RLIMIT_CPU of each process, in CPU seconds.")
    memory_mb: int | None = Field(4096, description="RLIMIT_DATA of each process (not RLIMIT_AS: V8 and wasm reserve huge ranges).")
    max_file_mb: int | None = Field(1024, description="RLIMIT_FSIZE: the largest file a process may write.")
    max_processes: int | None = Field(8192, description="Processes and threads of all sandboxes together: the "
                                      "swarm's pids group where per-sandbox groups hold, else RLIMIT_NPROC (per uid).")
    max_open_files: int | None = Field(4096, description="RLIMIT_NOFILE of each process.")
    output_cap_bytes: int = Field(OUTPUT_CAP_BYTES, description="Most bytes of stdout (and of stderr) returned by exec.")
    create_concurrency: int = Field(8, description="Most sandboxes being created at once in this process.")
    create_rate: float = Field(10.0, description="Most sandbox creations per second in this process.")
    isolation: Literal["bwrap", "none"] = Field("bwrap", description="bwrap: namespaces, no network, read-only system (SANDBOX_ISOLATION).")
    uid: int = Field(65534, ge=1, description="The unprivileged uid (and gid) sandboxes run as when the orchestrator is root.")
    registry: str = Field("", description="The npm registry a networked command (the install) reaches, through "
                          "the orchestrator's proxy (NPM_REGISTRY); empty: the one the host's npm uses.")
    pids_max: int | None = Field(2048, ge=16, description="pids.max of each sandbox's cgroup: its processes and "
                                 "threads together, whatever its uid (SANDBOX_PIDS_MAX).")
    cgroup_memory_mb: int | None = Field(4096, ge=64, description="Memory limit of each sandbox's cgroup, "
                                         "plus disk_mb for its tmpfs files (SANDBOX_MEMORY_MB).")
    cgroup_cpus: float | None = Field(None, gt=0, description="CPU quota of each sandbox's cgroup, in cores (SANDBOX_CPU).")
    disk_mb: int | None = Field(4096, ge=1, description="Size of the tmpfs holding each sandbox's work, home and tmp "
                                "(SANDBOX_DISK_MB); None: plain directories, no quota.")


class LocalSandboxBackend:
    """Sandboxes as directories and process groups on this machine."""

    name = "local"
    delivery = "bundle"  # the orchestrator prepares the repository and imports the work as a bundle

    def __init__(self, config: LocalSandboxConfig | None = None, *, admission: AdmissionController | None = None):
        self.config = config or LocalSandboxConfig()
        self.root = self.config.root.resolve()
        self.admission = admission or AdmissionController.shared(
            self.config.create_concurrency, self.config.create_rate
        )
        self._envs: dict[str, dict[str, str]] = {}
        self._readonly: dict[str, builtins.list[str]] = {}
        self._lock = threading.Lock()
        if self.config.isolation == "bwrap":
            isolation.check_bwrap(self.config.uid, self.config.uid)
        launch.compile_package()
        c = self.config
        self._disk_why = disk.usable() if c.disk_mb else "SANDBOX_DISK_MB unset"
        # The tmpfs pages a sandbox writes count in its memory group: its files must not turn into an OOM kill.
        memory = c.cgroup_memory_mb and c.cgroup_memory_mb + (0 if self._disk_why else c.disk_mb or 0)
        self._want = cgroups.Want(pids=c.pids_max, memory_mb=memory, cpus=c.cgroup_cpus,
                                  total_pids=c.max_processes if c.pids_max else None)
        self.cgroups = (cgroups.detect(self.root) if (c.pids_max, c.cgroup_memory_mb, c.cgroup_cpus) != (None,) * 3
                        else cgroups.Cgroups(reason="no cgroup limit configured"))
        log.info("local sandboxes: %s", self.limits)

    @property
    def limits(self) -> str:
        """One line: which per-sandbox limits hold on this machine, and why the others do not."""
        quota = f"disk quota {self.config.disk_mb} MB (tmpfs)" if not self._disk_why else \
            f"no disk quota ({self._disk_why})"
        return f"{self.cgroups.describe()}; {quota}"

    # -- lifecycle -------------------------------------------------------------------------------

    def create(self, *, run_id: str, task_id: str, attempt: int, env: dict[str, str]) -> SandboxHandle:
        """Make the sandbox's empty workspace; the same (run, task, attempt) always yields the same sandbox."""
        sid = f"{check_id('run_id', run_id)}/{check_id('task_id', task_id)}-a{int(attempt)}"
        sbdir = self.root / sid
        with self.admission:
            sbdir.parent.mkdir(parents=True, exist_ok=True)
            # Built aside and renamed into place, so list() never sees a sandbox without its meta.
            staging = sbdir.parent / f".{sbdir.name}.{uuid.uuid4().hex[:8]}.creating"
            staging.mkdir()
            try:
                meta = self._populate(staging, sid, run_id, task_id, attempt)
                os.rename(staging, sbdir)
            except OSError as exc:  # it exists already (the same attempt was created before), or no limits
                disk.release(staging)
                shutil.rmtree(staging, ignore_errors=True)
                if not sbdir.is_dir():
                    raise SandboxError(f"cannot create sandbox {sid}: {exc}") from exc
                handle = self._wait_for_meta(sid)
            else:
                handle = self._handle(sid, meta)
        with self._lock:
            self._envs[sid] = {str(k): str(v) for k, v in env.items()}
        return handle

    def attach(self, sandbox_id: str) -> SandboxHandle | None:
        """The handle of an existing sandbox, or None if it is gone."""
        if not _SID_RE.match(sandbox_id):
            return None
        meta = self._read_meta(sandbox_id)
        return None if meta is None else self._handle(sandbox_id, meta)

    def terminate(self, sb_or_id: SandboxHandle | str) -> None:
        """Kill every process of the sandbox and remove its directory; a sandbox already gone is fine."""
        sid = sb_or_id.id if isinstance(sb_or_id, SandboxHandle) else sb_or_id
        if not _SID_RE.match(sid):
            raise ValueError(f"not a local sandbox id: {sid!r}")
        sbdir = self.root / sid
        procs.kill_marked(str(sbdir))
        cgroups.release((self._read_meta(sid) or {}).get("cgroups") or map(str, self.cgroups.dirs(sid)))
        disk.release(sbdir)
        for _ in range(5):
            shutil.rmtree(sbdir, onerror=force_remove)
            if not sbdir.exists():
                break
            procs.kill_marked(str(sbdir))
        with self._lock:
            self._envs.pop(sid, None)
            self._readonly.pop(sid, None)

    def list(self, run_id: str | None = None) -> list[SandboxInfo]:
        """Sandboxes of this run (or of every run) found as directories or as live marked processes."""
        prefix = f"{self.root}/{check_id('run_id', run_id)}/" if run_id else f"{self.root}/"
        live = procs.marked_processes(prefix)
        live_ids = {marker[len(str(self.root)) + 1 :] for marker in live}
        found: dict[str, SandboxInfo] = {}
        run_dirs = [self.root / run_id] if run_id else (list(self.root.iterdir()) if self.root.is_dir() else [])
        for run_dir in run_dirs:
            if not run_dir.is_dir():
                continue
            for sbdir in run_dir.iterdir():
                sid = f"{run_dir.name}/{sbdir.name}"
                if _SID_RE.match(sid):
                    meta = self._read_meta(sid) or {}
                    found[sid] = _info(sid, meta.get("created_at"), sid in live_ids)
        for sid in live_ids - set(found):
            if _SID_RE.match(sid):
                found[sid] = _info(sid, None, True)
        return sorted(found.values(), key=lambda info: info.id)

    # -- files and commands ----------------------------------------------------------------------

    def add_readonly(self, sb: SandboxHandle, path: str) -> None:
        """Make a host path visible, read-only and at the same place, to the sandbox's later commands."""
        with self._lock:
            self._readonly.setdefault(sb.id, []).append(path)

    def prepare_repo(self, sb: SandboxHandle, hub: str) -> None:
        """The task's repository at <workdir>/repo: a clone borrowing the hub's objects, read-only."""
        clone_for_sandbox(hub, self._inside(sb, "repo"))
        self.add_readonly(sb, str(Path(hub) / "objects"))  # the clone borrows the hub's objects

    def put_file(self, sb: SandboxHandle, path: str, data: bytes) -> None:
        """Write a file under the sandbox's workdir, never through a link that leaves it."""
        target = self._inside(sb, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._inside(sb, path)  # the parents may have been links
        write_atomic(target, data)

    def get_file(self, sb: SandboxHandle, path: str) -> bytes | None:
        """Read a file under the sandbox's workdir; None if absent (or a link leading outside)."""
        check_relpath(path)
        if not Path(sb.workdir).is_dir():
            raise SandboxGone(sb.id)
        try:
            target = self._inside(sb, path)
            return target.read_bytes() if target.is_file() else None
        except (ValueError, OSError):
            return None

    def read_range(self, sb: SandboxHandle, path: str, offset: int, limit: int) -> bytes | None:
        """At most `limit` bytes from `offset` of a regular file under the workdir; None if absent, not a
        regular file, or reached through a link (the sandbox's user may swap it for one at any time)."""
        check_relpath(path)
        if not Path(sb.workdir).is_dir():
            raise SandboxGone(sb.id)
        try:
            self._inside(sb, path)
        except (ValueError, OSError, RuntimeError):  # outside, or a loop of links
            return None
        return read_range(Path(sb.workdir), path, offset, limit)

    def exec(self, sb: SandboxHandle, argv: builtins.list[str], *, timeout_s: float,
             network: bool = False) -> ExecResult:  # `list` is a method here
        """Run argv in the workdir, in its own process group; at the limit the whole group is killed.

        network: the npm registry only, through a proxy this process serves while argv runs (see
        sandbox/registry_proxy.py); never the host's network.
        """
        if not network:
            return self._exec(sb, argv, timeout_s, {})
        with RegistryProxy(registry_url(self.config.registry)) as proxy:
            home = str(self.root / sb.id / "home")
            return self._exec(sb, proxy.command(argv, self.config.python), timeout_s, proxy.env(home))

    def _exec(self, sb: SandboxHandle, argv: builtins.list[str], timeout_s: float,
              extra_env: dict[str, str]) -> ExecResult:
        if not argv:
            raise ValueError("argv must not be empty")
        sbdir = self.root / sb.id
        if not (sbdir / "work").is_dir():
            raise SandboxGone(sb.id)
        stem = sbdir / "logs" / f"exec-{uuid.uuid4().hex[:12]}"
        out_path, err_path = stem.with_suffix(".out"), stem.with_suffix(".err")
        cmd = launch.limited(argv, self._limits(), self.config.python)
        env = {**self._child_env(sb), **extra_env}
        if self.config.isolation == "bwrap":
            cmd, env = self._isolated(sb, cmd, env), {procs.MARKER: env[procs.MARKER], "PATH": os.defpath}
        cmd = self.cgroups.join(self._groups(sb.id), cmd)
        started = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, cwd=sb.workdir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True, close_fds=True)
        timed_out = False
        try:
            code = proc.wait(timeout=max(0.0, timeout_s))
        except subprocess.TimeoutExpired:
            timed_out = True
            procs.kill_group(proc.pid)
            proc.wait()
            code = -1
        duration = time.monotonic() - started
        stdout, stderr = (read_capped(p, self.config.output_cap_bytes) for p in (out_path, err_path))
        for p in (out_path, err_path):
            p.unlink(missing_ok=True)
        if code < 0 and not timed_out:
            code = 128 - code  # killed by a signal: the shell's convention, as Modal reports it
        return ExecResult(exit_code=code, stdout=stdout, stderr=stderr, timed_out=timed_out, duration_s=duration)

    # -- helpers ---------------------------------------------------------------------------------

    def _populate(self, staging: Path, sid: str, run_id: str, task_id: str, attempt: int) -> dict:
        """The sandbox's directories (on its quota's tmpfs, if any), cgroups and meta.json, in staging."""
        if self.config.disk_mb and not self._disk_why:
            disk.make(staging, self.config.disk_mb)
        for sub in ("work", "home", "tmp", "logs"):
            (staging / sub).mkdir(exist_ok=True)
        meta = {"id": sid, "run_id": run_id, "task_id": task_id, "attempt": int(attempt),
                "created_at": datetime.now(UTC).isoformat(), "creator_pid": os.getpid(),
                "cgroups": self.cgroups.make(sid, self._want)}
        (staging / "meta.json").write_bytes(json.dumps(meta).encode())
        return meta

    def _groups(self, sid: str) -> builtins.list[str]:
        """The sandbox's cgroups, made again if they are gone (the machine rebooted since its creation)."""
        groups = (self._read_meta(sid) or {}).get("cgroups") or []
        if all(os.path.isdir(g) for g in groups):
            return groups
        return self.cgroups.make(sid, self._want)

    def _child_env(self, sb: SandboxHandle) -> dict[str, str]:
        sbdir = self.root / sb.id
        path = self.config.path or os.pathsep.join(
            [str(Path(self.config.python).parent), os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")]
        )
        env = {"PATH": path, "HOME": str(sbdir / "home"), "TMPDIR": str(sbdir / "tmp"),
               "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONPATH": _PACKAGE_PARENT,
               "PYTHONUNBUFFERED": "1", "GIT_TERMINAL_PROMPT": "0"}
        with self._lock:
            env.update(self._envs.get(sb.id, {}))
        env[procs.MARKER] = str(sbdir)
        return env

    def _isolated(self, sb: SandboxHandle, cmd: builtins.list[str], env: dict[str, str]) -> builtins.list[str]:
        """cmd wrapped in bubblewrap, its directories handed to the sandbox's uid (when we are root)."""
        sbdir = self.root / sb.id
        uid = self.config.uid
        if os.geteuid() == 0:
            for sub in ("work", "home", "tmp"):
                chown_tree(sbdir / sub, uid)
        with self._lock:
            readonly = builtins.list(self._readonly.get(sb.id, []))
        for socket_env in (GATE_SOCKET_ENV, REGISTRY_SOCKET_ENV):
            if env.get(socket_env):
                readonly.append(str(Path(env[socket_env]).parent))
        return isolation.wrap(cmd, workdir=sb.workdir, home=str(sbdir / "home"), tmp=str(sbdir / "tmp"), env=env,
                              uid=uid, gid=uid, python=self.config.python, readonly=readonly)

    def _limits(self) -> dict[str, int]:
        mib = 1024 * 1024
        c = self.config
        wanted = {"RLIMIT_CPU": c.cpu_seconds, "RLIMIT_DATA": c.memory_mb and c.memory_mb * mib,
                  "RLIMIT_FSIZE": c.max_file_mb and c.max_file_mb * mib, "RLIMIT_NPROC": c.max_processes,
                  "RLIMIT_NOFILE": c.max_open_files, "RLIMIT_CORE": 0}
        if self.config.pids_max and "pids" in self.cgroups.bases:  # per uid: one sandbox could use up everyone's
            del wanted["RLIMIT_NPROC"]  # the swarm's pids group bounds them all together instead
        return {name: value for name, value in wanted.items() if value is not None}

    def _inside(self, sb: SandboxHandle, path: str) -> Path:
        workdir = Path(sb.workdir).resolve()
        target = (workdir / check_relpath(path)).resolve()
        if target != workdir and workdir not in target.parents:
            raise ValueError(f"{path!r} leads outside the sandbox")
        return target

    def _handle(self, sid: str, meta: dict) -> SandboxHandle:
        m = _SID_RE.match(sid)
        assert m is not None
        return SandboxHandle(id=sid, run_id=m["run"], task_id=m["task"], backend=self.name,
                             workdir=str(self.root / sid / "work"),
                             meta={"attempt": int(m["attempt"]), "created_at": meta.get("created_at"),
                                   "dir": str(self.root / sid)})

    def _read_meta(self, sid: str) -> dict | None:
        try:
            return json.loads((self.root / sid / "meta.json").read_text())
        except FileNotFoundError:
            return None if not (self.root / sid).is_dir() else {}
        except (OSError, ValueError):
            return {}

    def _wait_for_meta(self, sid: str, wait_s: float = 5.0) -> SandboxHandle:
        deadline = time.monotonic() + wait_s
        while True:  # a concurrent create of the same sandbox may still be writing meta.json
            meta = self._read_meta(sid)
            if meta or time.monotonic() > deadline:
                return self._handle(sid, meta or {})
            time.sleep(0.02)


def _info(sid: str, created_at: str | None, alive: bool) -> SandboxInfo:
    m = _SID_RE.match(sid)
    assert m is not None
    when = datetime.fromisoformat(created_at) if created_at else None
    return SandboxInfo(id=sid, run_id=m["run"], task_id=m["task"], created_at=when, alive=alive)
