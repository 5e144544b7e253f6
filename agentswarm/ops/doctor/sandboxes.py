"""The sandbox backend: one real sandbox that runs `git --version` and the runner's `--version`.

Local: bubblewrap can isolate (unless SANDBOX_ISOLATION=none), then one sandbox of the run's backend;
the line says which per-sandbox limits (cgroup, disk quota) hold here and why the others do not.
Modal: the SDK, a token, Modal's API in reach, the app, the worker image built, then one sandbox made
with the run's own backend configuration (its named secrets included). Each Modal step waits on the one
before; without a token the rest are skipped, saying so. Every cloud call is bounded in time.
"""

from __future__ import annotations

import importlib
import os
import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from agentswarm.config import SandboxBackendName
from agentswarm.ops.services import check_sandboxes
from agentswarm.sandbox.base import SandboxError
from agentswarm.sandbox.factory import backend_config, check_backend_for
from agentswarm.sandbox.isolation import INSTALL_HINT

RUNNER_VERSION = ["-m", "agentswarm.agent.runner", "--version"]
API_TIMEOUT_S = 10
LOOKUP_TIMEOUT_S = 90
IMAGE_TIMEOUT_S = 30 * 60  # the first build installs Node, pnpm and git: minutes
TOKEN_FIX = "run `modal token new` (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET)"


def bounded(fn: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """fn() in a daemon thread; TimeoutError naming `what` if it has not returned in time (the call is left)."""
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001  (handed to the caller)
            box["error"] = exc

    thread = threading.Thread(target=go, name=f"doctor-{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"{what}: no answer in {timeout_s:.0f}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _probe(backend: Any, python: str) -> str:
    """git's and the runner's versions from inside one fresh sandbox, which is always terminated."""
    sb = backend.create(run_id="doctor", task_id=f"probe-{os.getpid()}", attempt=1, env={})
    try:
        found = []
        for argv in (["git", "--version"], [python, *RUNNER_VERSION]):
            res = backend.exec(sb, argv, timeout_s=120)
            text = (res.stdout.strip() or res.stderr.strip()).splitlines()
            if res.exit_code != 0:
                raise SandboxError(f"`{' '.join(argv)}` exited {res.exit_code} in the sandbox: "
                                   f"{(text[-1] if text else '')[:200]}")
            found.append(text[0] if text else "?")
        return "; ".join(found)
    finally:
        backend.terminate(sb)


def check_backend(ladder: Any) -> None:
    """The configured backend, local or Modal."""
    if ladder.settings.sandbox_backend is SandboxBackendName.local:
        _local(ladder)
    else:
        _modal(ladder)


def _local(ladder: Any) -> None:
    s = ladder.settings
    try:
        how = check_sandboxes(s)
        backend = check_backend_for(s)  # the run's own (cached) local backend, typed as such
        backend.terminate(f"doctor/probe-{os.getpid()}-a1")  # left by a doctor killed mid-probe
        inside = _probe(backend, backend.config.python)
    except SandboxError as exc:
        ladder.fail("sandbox", str(exc), f"{INSTALL_HINT}, or set SANDBOX_ISOLATION=none to run agents unisolated")
        return
    ladder.ok("sandbox", f"{how}; {backend.limits}; inside one: {inside}")


def _modal(ladder: Any) -> None:
    try:
        modal = ladder.modal_module or importlib.import_module("modal")
    except ImportError as exc:
        ladder.fail("modal sdk", f"the `modal` package does not import ({exc})", "pip install 'modal>=1.0'")
        return
    ladder.ok("modal sdk", f"modal {getattr(modal, '__version__', '?')}")
    config = modal.config.config
    source = "MODAL_TOKEN_ID/MODAL_TOKEN_SECRET" if os.environ.get("MODAL_TOKEN_ID") else "~/.modal.toml"
    if not (config.get("token_id") and config.get("token_secret")):
        ladder.fail("modal token", "no Modal token: neither MODAL_TOKEN_ID and MODAL_TOKEN_SECRET nor a profile in "
                    "~/.modal.toml", TOKEN_FIX)
    else:
        ladder.ok("modal token", f"set ({source}; checked by the next steps)")
    if not ladder.needs("modal api", "modal token"):
        for name in ("modal app", "modal image", "sandbox"):
            ladder.skip(name, "no Modal token")
        return
    server = str(config.get("server_url"))
    if not _api_in_reach(ladder, server):
        for name in ("modal app", "modal image", "sandbox"):
            ladder.skip(name, "Modal's API is out of reach")
        return
    app = _app(ladder, modal)
    image = _image(ladder, modal, app) if ladder.needs("modal image", "modal app") else None
    if ladder.needs("sandbox", "modal image"):
        _modal_sandbox(ladder, modal, image)


def _api_in_reach(ladder: Any, server: str) -> bool:
    parts = urlsplit(server)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=API_TIMEOUT_S):
            pass
    except OSError as exc:
        ladder.fail("modal api", f"Modal's API at {host}:{port} is out of reach ({exc})",
                    "check this machine's network, proxy or firewall (MODAL_SERVER_URL if set)")
        return False
    ladder.ok("modal api", f"{host}:{port} in reach")
    return True


def _app(ladder: Any, modal: Any) -> Any:
    name = ladder.settings.modal_app_name
    try:
        app = bounded(lambda: modal.App.lookup(name, create_if_missing=True), LOOKUP_TIMEOUT_S, "modal app lookup")
    except modal.exception.AuthError as exc:
        ladder.fail("modal app", f"Modal refused the token ({exc})", TOKEN_FIX)
        return None
    except (modal.exception.Error, TimeoutError, OSError) as exc:
        ladder.fail("modal app", f"App.lookup({name!r}) failed: {exc}", "check Modal's status and MODAL_APP_NAME")
        return None
    ladder.ok("modal app", f"{name} ({app.app_id})")
    return app


def _image(ladder: Any, modal: Any, app: Any) -> Any:
    from agentswarm.sandbox.modal_image import worker_image

    try:
        image = bounded(lambda: worker_image(modal, "3.11").build(app), IMAGE_TIMEOUT_S, "building the worker image")
    except (modal.exception.Error, TimeoutError, OSError) as exc:
        ladder.fail("modal image", f"the worker image did not build: {exc}",
                    "`modal run infra/sandbox_image.py` builds it with its log and lists the tools found")
        return None
    ladder.ok("modal image", f"the worker image is built ({getattr(image, 'object_id', '?')})")
    return image


def _modal_sandbox(ladder: Any, modal: Any, image: Any) -> None:
    from agentswarm.sandbox.admission import AdmissionController
    from agentswarm.sandbox.modal_backend import ModalSandboxBackend, ModalSandboxConfig

    _, cfg = backend_config(ladder.settings)
    config = ModalSandboxConfig(**{**cfg, "timeout_s": 600, "max_retries": 2, "backoff_s": 1.0})
    backend = ModalSandboxBackend(config, modal, admission=AdmissionController(1, 5.0), image=image)
    try:
        inside = bounded(lambda: _probe(backend, "python"), 600, "the probe sandbox")
    except modal.exception.NotFoundError as exc:
        ladder.fail("sandbox", f"Modal sandbox: {exc}", f"create the named secrets {config.secret_names} "
                    "(`modal secret create agentswarm-llm LLM_API_KEY=...`)")
        return
    except (SandboxError, modal.exception.Error, TimeoutError) as exc:
        ladder.fail("sandbox", f"Modal sandbox: {exc}", "see the error; `modal app logs` shows the sandbox's side")
        return
    ladder.ok("sandbox", f"modal app {config.app_name}; inside one: {inside}")
