"""The Modal backend: one named, tagged Modal Sandbox per task attempt (modal 1.x SDK).

The `modal` module is injected (tests pass a fake of its surface); every SDK name used
here is checked against the installed package by tests/sandbox/test_sandbox_modal_contract.py.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib
import math
import posixpath
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentswarm.agent.contract import REPO_BUNDLE_NAME
from agentswarm.agent.shell import HeadTail
from agentswarm.git.intake import bundle_of_branches
from agentswarm.sandbox.admission import AdmissionController
from agentswarm.sandbox.base import (
    OUTPUT_CAP_BYTES,
    ExecResult,
    SandboxCreateError,
    SandboxError,
    SandboxGone,
    SandboxHandle,
    SandboxInfo,
    check_id,
    check_relpath,
)
from agentswarm.sandbox.modal_image import WORKDIR, worker_image

TAG_RUN, TAG_TASK, TAG_ATTEMPT, TAG_CREATED = (
    "agentswarm.run", "agentswarm.task", "agentswarm.attempt", "agentswarm.created")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# A ranged read is one exec of this (Python is in every worker image): stat + read_bytes would be two execs
# and would fetch the whole file each time. The file is the agent's: a link, FIFO or directory is refused
# (exit NOT_A_FILE) and nothing is waited on; what it prints is capped by the caller, and a hang times out.
RANGE_READER = (
    "import os,stat,sys\n"
    "p,o,n=sys.argv[1],int(sys.argv[2]),int(sys.argv[3])\n"
    "try:\n"
    "    f=os.open(p,os.O_RDONLY|os.O_NOFOLLOW|os.O_NONBLOCK|os.O_NOCTTY)\n"
    "except OSError:\n"
    "    sys.exit(3)\n"
    "if not stat.S_ISREG(os.fstat(f).st_mode):\n"
    "    sys.exit(3)\n"
    "sys.stdout.buffer.write(os.pread(f,n,o))\n"
)
NOT_A_FILE = 3
READ_TIMEOUT_S = 30


class ModalSandboxConfig(BaseModel):
    """Settings of the Modal backend."""

    model_config = ConfigDict(extra="forbid")

    app_name: str = Field("agentswarm", description="Modal App the sandboxes belong to (MODAL_APP_NAME).")
    cpu: float = Field(2.0, description="CPU cores requested per sandbox (SANDBOX_CPU).")
    memory_mb: int = Field(4096, description="Memory requested per sandbox, MiB (SANDBOX_MEMORY_MB).")
    timeout_s: int = Field(1800, description="Sandbox lifetime: Modal kills it after this (WORKER_TIMEOUT).")
    secret_names: list[str] = Field(["agentswarm-llm"], description="Named Modal secrets (LLM key, git token) to inject.")
    image_python: str = Field("3.11", description="Python version of the worker image.")
    workdir: str = Field(WORKDIR, description="Absolute directory in the sandbox for task.json, result.json and repo.")
    block_network: bool = Field(False, description="Cut the sandbox off the network (the agent needs the LLM and git).")
    output_cap_bytes: int = Field(OUTPUT_CAP_BYTES, description="Most bytes of stdout (and of stderr) returned by exec.")
    create_concurrency: int = Field(8, description="Most sandboxes being created at once in this process.")
    create_rate: float = Field(4.0, description="Most sandbox creations per second in this process.")
    max_retries: int = Field(6, description="Retries of a call Modal refused for rate limits or a transient fault.")
    backoff_s: float = Field(1.0, description="First retry delay; doubled each retry, with jitter.")
    backoff_max_s: float = Field(30.0, description="Longest retry delay.")


def sandbox_name(run_id: str, task_id: str, attempt: int) -> str:
    """The per-attempt Modal sandbox name (unique in the app, so a retried create cannot make a twin)."""
    name = f"{run_id}-{task_id}-a{attempt}"
    if _NAME_RE.match(name) and not name.startswith("ap-"):
        return name
    digest = hashlib.sha256(f"{run_id}/{task_id}".encode()).hexdigest()[:40]
    return f"as-{digest}-a{attempt}"


class ModalSandboxBackend:
    """Sandboxes as Modal Sandboxes in one named app."""

    name = "modal"
    delivery = "bundle"  # the hub goes in and the work comes out as bundles, through the filesystem API

    def __init__(
        self,
        config: ModalSandboxConfig | None = None,
        modal_module: Any = None,
        *,
        admission: AdmissionController | None = None,
        image: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config or ModalSandboxConfig()
        self.modal = modal_module if modal_module is not None else importlib.import_module("modal")
        self.admission = admission or AdmissionController.shared(
            self.config.create_concurrency, self.config.create_rate
        )
        self._sleep = sleep
        self._image = image
        self._app: Any = None
        self._live: dict[str, Any] = {}
        self._lock = threading.Lock()
        exc = self.modal.exception
        self._retryable = (exc.ResourceExhaustedError, exc.ConnectionError, exc.ServiceError)
        self._gone = (exc.NotFoundError, exc.SandboxTerminatedError)

    # -- lifecycle -------------------------------------------------------------------------------

    def create(self, *, run_id: str, task_id: str, attempt: int, env: dict[str, str]) -> SandboxHandle:
        """Create (or, if this attempt's sandbox already runs, reach) the task's sandbox."""
        check_id("run_id", run_id)
        check_id("task_id", task_id)
        name = sandbox_name(run_id, task_id, int(attempt))
        tags = {TAG_RUN: run_id, TAG_TASK: task_id, TAG_ATTEMPT: str(int(attempt)),
                TAG_CREATED: str(int(time.time()))}
        secrets = [self.modal.Secret.from_name(n) for n in self.config.secret_names]
        if env:  # as an ephemeral secret: never in the create request's plain arguments or logs
            secrets.append(self.modal.Secret.from_dict({str(k): str(v) for k, v in env.items()}))
        app, image = self._app_and_image()
        c = self.config
        with self.admission:
            try:
                sb = self._call("create", self.modal.Sandbox.create, app=app, image=image, name=name, tags=tags,
                                timeout=c.timeout_s, cpu=c.cpu, memory=c.memory_mb, secrets=secrets,
                                workdir=c.workdir, block_network=c.block_network, error=SandboxCreateError,
                                gone=False)
            except self.modal.exception.AlreadyExistsError:
                sb = self._call("from_name", self.modal.Sandbox.from_name, c.app_name, name,
                                error=SandboxCreateError, gone=False)
        try:
            self._call("mkdir", sb.filesystem.make_directory, c.workdir, create_parents=True)
        except self.modal.exception.SandboxFilesystemPathAlreadyExistsError:
            pass
        with self._lock:
            self._live[sb.object_id] = sb
        return self._handle(sb, run_id, task_id, int(attempt), name)

    def attach(self, sandbox_id: str) -> SandboxHandle | None:
        """The handle of a running sandbox (e.g. after a worker crash), or None if it is gone."""
        try:
            sb = self._sandbox(sandbox_id)
            if self._call("poll", sb.poll) is not None:
                return None
            tags = self._call("get_tags", sb.get_tags)
        except SandboxGone:
            return None
        attempt = int(tags.get(TAG_ATTEMPT, "0") or 0)
        run_id, task_id = tags.get(TAG_RUN, ""), tags.get(TAG_TASK, "")
        return self._handle(sb, run_id, task_id, attempt, sandbox_name(run_id, task_id, attempt))

    def terminate(self, sb_or_id: SandboxHandle | str) -> None:
        """Terminate the sandbox; one already gone is fine."""
        sid = sb_or_id.id if isinstance(sb_or_id, SandboxHandle) else sb_or_id
        try:
            sb = self._sandbox(sid)
            self._call("terminate", sb.terminate)
        except SandboxGone:
            pass
        with self._lock:
            self._live.pop(sid, None)

    def list(self, run_id: str | None = None) -> list[SandboxInfo]:
        """Running sandboxes of this run (or of every run) in the app, found by their tags."""
        app, _ = self._app_and_image(image=False)
        tags = {TAG_RUN: check_id("run_id", run_id)} if run_id else None
        found = self._call("list", lambda: list(self.modal.Sandbox.list(app_id=app.app_id, tags=tags)), gone=False)
        infos = []
        for sb in found:
            try:
                t = self._call("get_tags", sb.get_tags)
            except SandboxGone:
                continue
            if TAG_RUN not in t:
                continue
            created = t.get(TAG_CREATED, "")
            when = datetime.fromtimestamp(int(created), UTC) if created.isdigit() else None
            infos.append(SandboxInfo(id=sb.object_id, run_id=t[TAG_RUN], task_id=t.get(TAG_TASK, ""),
                                     created_at=when, alive=True))
        return sorted(infos, key=lambda info: info.id)

    # -- files and commands ----------------------------------------------------------------------

    def prepare_repo(self, sb: SandboxHandle, hub: str) -> None:
        """Put the hub's branches into the sandbox as a bundle; the runner clones from it (no hub access needed)."""
        with tempfile.TemporaryDirectory(prefix="agentswarm-hub-") as tmp:
            bundle = bundle_of_branches(hub, Path(tmp) / REPO_BUNDLE_NAME)
            self.put_file(sb, REPO_BUNDLE_NAME, bundle.read_bytes())

    def put_file(self, sb: SandboxHandle, path: str, data: bytes) -> None:
        """Write a file under the sandbox's workdir through the sandbox filesystem API."""
        target = posixpath.join(sb.workdir, check_relpath(path))
        self._call("write_bytes", self._sandbox(sb.id).filesystem.write_bytes, bytes(data), target)

    def get_file(self, sb: SandboxHandle, path: str) -> bytes | None:
        """Read a file under the sandbox's workdir; None if absent."""
        target = posixpath.join(sb.workdir, check_relpath(path))
        exc = self.modal.exception
        try:
            return self._call("read_bytes", self._sandbox(sb.id).filesystem.read_bytes, target)
        except (exc.SandboxFilesystemNotFoundError, exc.SandboxFilesystemIsADirectoryError):
            return None

    def read_range(self, sb: SandboxHandle, path: str, offset: int, limit: int) -> bytes | None:
        """At most `limit` bytes from `offset` of a regular file under the workdir; None if absent or not one."""
        target = posixpath.join(sb.workdir, check_relpath(path))
        if offset < 0 or limit < 0:
            raise ValueError(f"bad ranged read of {path!r}: from {offset}, {limit} bytes")
        box = self._sandbox(sb.id)
        proc = self._call("exec", box.exec, "python", "-I", "-c", RANGE_READER, target, str(int(offset)),
                          str(int(limit)), timeout=READ_TIMEOUT_S, workdir=sb.workdir, text=False)
        data = bytearray()
        try:
            for chunk in proc.stdout:
                data += chunk[: limit - len(data)]
                if len(data) >= limit:
                    break
            code = proc.wait()
        except self._gone as e:
            raise SandboxGone(f"{sb.id}: {e}") from e
        if code == NOT_A_FILE:
            return None
        if code != 0:
            raise SandboxError(f"modal read_range {path!r}: the reader exited {code}")
        return bytes(data)

    def exec(self, sb: SandboxHandle, argv: builtins.list[str], *, timeout_s: float,  # `list` is a method here
             network: bool = False) -> ExecResult:
        """Run argv in the workdir; Modal kills it at the limit and reports code -1 (timed_out=True)."""
        if not argv:
            raise ValueError("argv must not be empty")
        box = self._sandbox(sb.id)
        started = time.monotonic()
        proc = self._call("exec", box.exec, *argv, timeout=max(1, math.ceil(timeout_s)), workdir=sb.workdir,
                          text=False)
        out, err = HeadTail(self.config.output_cap_bytes), HeadTail(self.config.output_cap_bytes)
        drain_err = threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True)
        drain_err.start()
        try:
            _drain(proc.stdout, out)
            code = proc.wait()
        except self._gone as e:
            raise SandboxGone(f"{sb.id}: {e}") from e
        finally:
            drain_err.join(timeout=10)
        return ExecResult(exit_code=code, stdout=out.text(), stderr=err.text(), timed_out=code == -1,
                          duration_s=time.monotonic() - started)

    # -- helpers ---------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, error: type[SandboxError] = SandboxError,
              gone: bool = True, **kwargs: Any) -> Any:
        """Call the SDK, retrying rate-limit and transient errors with exponential backoff and jitter."""
        for attempt in range(self.config.max_retries + 1):
            try:
                return fn(*args, **kwargs)
            except self._retryable as e:
                if attempt == self.config.max_retries:
                    raise error(f"modal {what}: still refused after {attempt} retries: {e}") from e
                delay = min(self.config.backoff_max_s, self.config.backoff_s * 2**attempt)
                self._sleep(delay * (0.5 + random.random() / 2))
            except self._gone as e:
                if not gone:
                    raise
                raise SandboxGone(f"modal {what}: {e}") from e
        raise AssertionError("unreachable")

    def _sandbox(self, sandbox_id: str) -> Any:
        with self._lock:
            sb = self._live.get(sandbox_id)
        if sb is None:
            sb = self._call("from_id", self.modal.Sandbox.from_id, sandbox_id)
            with self._lock:
                self._live[sandbox_id] = sb
        return sb

    def _app_and_image(self, *, image: bool = True) -> tuple[Any, Any]:
        with self._lock:
            if self._app is None:
                self._app = self._call("lookup", self.modal.App.lookup, self.config.app_name,
                                       create_if_missing=True, gone=False)
            if image and self._image is None:
                self._image = worker_image(self.modal, self.config.image_python)
            return self._app, self._image

    def _handle(self, sb: Any, run_id: str, task_id: str, attempt: int, name: str) -> SandboxHandle:
        return SandboxHandle(id=sb.object_id, run_id=run_id, task_id=task_id, backend=self.name,
                             workdir=self.config.workdir,
                             meta={"attempt": attempt, "name": name, "app_name": self.config.app_name})


def _drain(stream: Any, sink: HeadTail) -> None:
    for chunk in stream:
        sink.feed(chunk)
