"""Sandbox backends behind one small interface, chosen by a short name (SANDBOX_BACKEND)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentswarm.sandbox.admission import AdmissionController
from agentswarm.sandbox.base import (
    ExecResult,
    SandboxBackend,
    SandboxCreateError,
    SandboxError,
    SandboxGone,
    SandboxHandle,
    SandboxInfo,
)

if TYPE_CHECKING:  # pydantic stays out of the import path used inside slim Modal images
    from pydantic import BaseModel

# name -> (module, backend class, config class); imported lazily: `modal` is slow to import.
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "local": ("agentswarm.sandbox.local", "LocalSandboxBackend", "LocalSandboxConfig"),
    "modal": ("agentswarm.sandbox.modal_backend", "ModalSandboxBackend", "ModalSandboxConfig"),
}

__all__ = [
    "AdmissionController",
    "ExecResult",
    "SandboxBackend",
    "SandboxCreateError",
    "SandboxError",
    "SandboxGone",
    "SandboxHandle",
    "SandboxInfo",
    "backend_names",
    "get_backend",
]


def backend_names() -> list[str]:
    """The short names get_backend() accepts."""
    return sorted(_REGISTRY)


def _lookup(name: str) -> tuple[type, type[BaseModel]]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown sandbox backend {name!r} (SANDBOX_BACKEND): choose one of {backend_names()}")
    module_name, backend_cls, config_cls = _REGISTRY[name]
    module = importlib.import_module(module_name)
    return getattr(module, backend_cls), getattr(module, config_cls)


def get_backend(name: str, config: dict[str, Any] | BaseModel | None = None, **kwargs: Any) -> SandboxBackend:
    """Build the backend registered as `name` from its typed config (or a dict of its fields)."""
    backend_cls, config_cls = _lookup(name)
    if config is None:
        config = config_cls()
    elif isinstance(config, dict):
        config = config_cls.model_validate(config)
    elif not isinstance(config, config_cls):
        raise TypeError(f"backend {name!r} takes a {config_cls.__name__}, not a {type(config).__name__}")
    return backend_cls(config, **kwargs)
