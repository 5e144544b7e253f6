"""Contract tests: everything the Modal backend calls exists, with those arguments, in the installed `modal`."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import modal
import modal.exception
import pytest
from modal.container_process import ContainerProcess
from modal.io_streams import StreamReader
from modal.sandbox.sandbox import SandboxFilesystem
from modal_fake import World, make_fake_modal

from agentswarm.sandbox.admission import AdmissionController
from agentswarm.sandbox.modal_backend import ModalSandboxBackend, ModalSandboxConfig
from agentswarm.sandbox.modal_image import worker_image

REPO = Path(__file__).resolve().parents[2]
_SELF = object()
# Fake call name -> (real callable, whether it is an instance method that takes self).
REAL = {
    "App.lookup": (modal.App.lookup, False),
    "Secret.from_name": (modal.Secret.from_name, False),
    "Secret.from_dict": (modal.Secret.from_dict, False),
    "Image.debian_slim": (modal.Image.debian_slim, False),
    "Sandbox.create": (modal.Sandbox.create, False),
    "Sandbox.from_id": (modal.Sandbox.from_id, False),
    "Sandbox.from_name": (modal.Sandbox.from_name, False),
    "Sandbox.list": (modal.Sandbox.list, False),
    "Sandbox.exec": (modal.Sandbox.exec, True),
    "Sandbox.terminate": (modal.Sandbox.terminate, True),
    "Sandbox.poll": (modal.Sandbox.poll, True),
    "Sandbox.get_tags": (modal.Sandbox.get_tags, True),
    "SandboxFilesystem.make_directory": (SandboxFilesystem.make_directory, True),
    "SandboxFilesystem.write_bytes": (SandboxFilesystem.write_bytes, True),
    "SandboxFilesystem.read_bytes": (SandboxFilesystem.read_bytes, True),
    "ContainerProcess.wait": (ContainerProcess.wait, True),
    **{f"Image.{m}": (getattr(modal.Image, m), True)
       for m in ("apt_install", "run_commands", "pip_install", "env", "add_local_python_source", "add_local_dir")},
}


def run_full_flow(world: World) -> None:
    """Every code path of the backend that touches the SDK, against the recording fake."""
    fake = make_fake_modal(world)
    backend = ModalSandboxBackend(ModalSandboxConfig(), fake, admission=AdmissionController(2, 1000.0),
                                  sleep=lambda s: None)
    world.fail_next["Sandbox.create"] = [modal.exception.ResourceExhaustedError("slow down")]
    sb = backend.create(run_id="r", task_id="t", attempt=1, env={"LLM_API_KEY": "k"})
    backend.create(run_id="r", task_id="t", attempt=1, env={})  # name collision -> from_name
    backend.put_file(sb, "task.json", b"{}")
    backend.get_file(sb, "task.json")
    backend.get_file(sb, "missing")
    backend.read_range(sb, "task.json", 1, 1)
    backend.read_range(sb, "missing", 0, 10)
    backend.exec(sb, ["sleep", "5"], timeout_s=1)
    other = ModalSandboxBackend(ModalSandboxConfig(), fake, admission=AdmissionController(2, 1000.0))
    other.list("r")
    other.list()
    other.attach(sb.id)
    other.terminate(sb.id)
    other.terminate(sb.id)


def test_every_recorded_call_binds_to_the_installed_sdk() -> None:
    world = World()
    run_full_flow(world)
    used = {name for name, _, _ in world.calls}
    assert used <= set(REAL), f"add these to REAL: {used - set(REAL)}"
    assert {"Sandbox.create", "Sandbox.from_name", "Sandbox.from_id", "Sandbox.list", "Sandbox.exec",
            "Sandbox.terminate", "SandboxFilesystem.write_bytes", "SandboxFilesystem.read_bytes"} <= used
    for name, args, kwargs in world.calls:
        real, is_method = REAL[name]
        signature = inspect.signature(real)
        try:
            signature.bind(*((_SELF,) if is_method else ()), *args, **kwargs)
        except TypeError as exc:
            pytest.fail(f"{name}{args!r:.80} {kwargs} does not fit modal {modal.__version__}: {exc}")


def test_the_fake_accepts_nothing_the_real_sdk_refuses() -> None:
    fake = make_fake_modal(World())
    pairs = [(fake.Sandbox.create, modal.Sandbox.create), (fake.Sandbox.from_id, modal.Sandbox.from_id),
             (fake.Sandbox.from_name, modal.Sandbox.from_name), (fake.Sandbox.list, modal.Sandbox.list),
             (fake.App.lookup, modal.App.lookup), (fake.Secret.from_name, modal.Secret.from_name),
             (fake.Secret.from_dict, modal.Secret.from_dict)]
    for fake_fn, real_fn in pairs:
        fake_params = inspect.signature(fake_fn).parameters
        real_params = inspect.signature(real_fn).parameters
        assert set(fake_params) <= set(real_params), (fake_fn, set(fake_params) - set(real_params))
        for name, param in fake_params.items():
            assert param.kind == real_params[name].kind, (fake_fn, name)


def test_attributes_and_errors_the_backend_relies_on() -> None:
    assert isinstance(inspect.getattr_static(modal.Sandbox, "filesystem"), property)
    assert isinstance(inspect.getattr_static(modal.Sandbox, "object_id"), property)
    assert isinstance(inspect.getattr_static(modal.App, "app_id"), property)
    for stream in ("stdout", "stderr"):
        assert isinstance(inspect.getattr_static(ContainerProcess, stream), property)
    assert hasattr(StreamReader, "__iter__")  # `for chunk in proc.stdout`
    for error in ("ResourceExhaustedError", "ConnectionError", "ServiceError", "NotFoundError",
                  "SandboxTerminatedError", "AlreadyExistsError", "SandboxFilesystemPathAlreadyExistsError",
                  "SandboxFilesystemNotFoundError", "SandboxFilesystemIsADirectoryError"):
        assert issubclass(getattr(modal.exception, error), Exception), error
    # The old file API is gone in 1.x; the backend must not depend on it.
    assert not hasattr(modal.Sandbox, "open")


def test_the_worker_image_builds_with_the_real_sdk() -> None:
    image = worker_image(modal, "3.11")  # lazy: defines the layers without contacting Modal
    assert isinstance(image, modal.Image)


def test_infra_image_module_defines_an_app_with_a_local_entrypoint() -> None:
    spec = importlib.util.spec_from_file_location("sandbox_image", REPO / "infra" / "sandbox_image.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.app, modal.App) and isinstance(module.image, modal.Image)
    assert isinstance(module.versions, modal.Function) and type(module.main).__name__ == "LocalEntrypoint"
