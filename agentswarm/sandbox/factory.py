"""One factory from settings to a sandbox backend (SANDBOX_BACKEND and its typed config)."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from agentswarm.config import SandboxBackendName
from agentswarm.sandbox import SandboxBackend, get_backend
from agentswarm.sandbox.local import LocalSandboxBackend

if TYPE_CHECKING:
    from agentswarm.config import Settings


def backend_config(settings: Settings) -> tuple[str, dict[str, Any]]:
    """SANDBOX_BACKEND and its typed config's fields, from settings."""
    name = settings.sandbox_backend.value
    concurrency, rate = settings.sandbox_admission
    common = {"create_concurrency": concurrency, "create_rate": rate}
    if name == "local":
        return name, {**common, "root": settings.sandbox_root.resolve(),
                      "isolation": settings.sandbox_isolation.value, "uid": settings.sandbox_uid,
                      "registry": settings.npm_registry,
                      "pids_max": settings.sandbox_pids_max or None, "cgroup_memory_mb": settings.sandbox_memory_mb,
                      "cgroup_cpus": settings.sandbox_cpu, "disk_mb": settings.sandbox_disk_mb or None}
    return name, {**common, "app_name": settings.modal_app_name, "timeout_s": settings.worker_timeout,
                  "cpu": settings.sandbox_cpu, "memory_mb": settings.sandbox_memory_mb}


@functools.lru_cache(maxsize=4)
def _backend(name: str, config_json: str) -> SandboxBackend:
    return get_backend(name, json.loads(config_json))


def check_backend_for(settings: Settings) -> LocalSandboxBackend:
    """The local backend the reconciler's checks run in (whatever SANDBOX_BACKEND is): they use this machine's cache."""
    if settings.sandbox_backend is not SandboxBackendName.local:
        settings = settings.model_copy(update={"sandbox_backend": SandboxBackendName.local})
    backend = backend_for(settings)
    if not isinstance(backend, LocalSandboxBackend):
        raise TypeError(f"checks need the local backend, got {backend.name}")
    return backend


def backend_for(settings: Settings) -> SandboxBackend:
    """One backend per process and configuration, so its admission control covers every thread."""
    name, cfg = backend_config(settings)
    return _backend(name, json.dumps(cfg, default=str, sort_keys=True))
