"""An in-memory fake of the part of the `modal` SDK the Modal backend uses.

It raises the real `modal.exception` classes, records every call as
("Class.method", args, kwargs) so the contract tests can bind each recorded call
against the installed SDK's signatures, and lets a test script failures.
"""

from __future__ import annotations

import itertools
import threading
import types
from collections.abc import Callable

import modal.exception as real_exceptions

from agentswarm.sandbox.modal_backend import NOT_A_FILE, RANGE_READER

ExecHandler = Callable[["FakeSandbox", list[str], int | None, str | None], tuple[int, bytes, bytes]]


class World:
    """The fake cloud: apps, running sandboxes, scripted failures, and the call log."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.fail_next: dict[str, list[Exception]] = {}
        self.exec_handler: ExecHandler = default_exec
        self.lock = threading.Lock()
        self._ids = itertools.count(1)

    def record(self, name: str, args: tuple, kwargs: dict) -> None:
        with self.lock:
            self.calls.append((name, args, kwargs))
            queued = self.fail_next.get(name)
            error = queued.pop(0) if queued else None
        if error is not None:
            raise error

    def called(self, name: str) -> list[tuple[tuple, dict]]:
        return [(a, k) for n, a, k in self.calls if n == name]

    def new_id(self) -> str:
        return f"sb-fake{next(self._ids):06d}"


def default_exec(sb: FakeSandbox, argv: list[str], timeout: int | None, workdir: str | None):
    """A tiny shell: `sleep N` (timing out like Modal: code -1), `echo ...`, `cat FILE`, `exit N`, and the
    backend's ranged reader (`python -I -c RANGE_READER PATH OFFSET LIMIT`)."""
    if argv[:4] == ["python", "-I", "-c", RANGE_READER]:
        path, offset, limit = argv[4], int(argv[5]), int(argv[6])
        if path not in sb.files:
            return NOT_A_FILE, b"", b""
        return 0, sb.files[path][offset : offset + limit], b""
    if argv[0] == "sleep":
        return (-1, b"", b"") if timeout is not None and float(argv[1]) > timeout else (0, b"", b"")
    if argv[0] == "echo":
        return 0, (" ".join(argv[1:]) + "\n").encode(), b""
    if argv[0] == "cat":
        path = argv[1] if argv[1].startswith("/") else f"{workdir}/{argv[1]}"
        return (0, sb.files[path], b"") if path in sb.files else (1, b"", b"No such file\n")
    if argv[0] == "exit":
        return int(argv[1]), b"", b""
    return 127, b"", f"{argv[0]}: not found\n".encode()


class FakeStream:
    def __init__(self, data: bytes, chunk: int = 7) -> None:
        self._chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]

    def __iter__(self):
        return iter(self._chunks)


class FakeProcess:
    def __init__(self, world: World, code: int, out: bytes, err: bytes) -> None:
        self._world, self._code = world, code
        self.stdout, self.stderr = FakeStream(out), FakeStream(err)

    def wait(self) -> int:
        self._world.record("ContainerProcess.wait", (), {})
        return self._code


class FakeFilesystem:
    def __init__(self, sb: FakeSandbox) -> None:
        self._sb = sb

    def make_directory(self, remote_path: str, *, create_parents: bool = True) -> None:
        self._sb.check("SandboxFilesystem.make_directory", (remote_path,), {"create_parents": create_parents})
        if remote_path in self._sb.dirs:
            raise real_exceptions.SandboxFilesystemPathAlreadyExistsError(remote_path)
        self._sb.dirs.add(remote_path)

    def write_bytes(self, data: bytes, remote_path: str) -> None:
        self._sb.check("SandboxFilesystem.write_bytes", (data, remote_path), {})
        if not remote_path.startswith("/"):
            raise real_exceptions.InvalidError("remote_path must be absolute")
        self._sb.files[remote_path] = bytes(data)

    def read_bytes(self, remote_path: str) -> bytes:
        self._sb.check("SandboxFilesystem.read_bytes", (remote_path,), {})
        if remote_path in self._sb.dirs:
            raise real_exceptions.SandboxFilesystemIsADirectoryError(remote_path)
        if remote_path not in self._sb.files:
            raise real_exceptions.SandboxFilesystemNotFoundError(remote_path)
        return self._sb.files[remote_path]


class FakeSandbox:
    def __init__(self, world: World, app_id: str, name: str | None, tags: dict[str, str], kwargs: dict) -> None:
        self._world = world
        self.object_id = world.new_id()
        self.app_id, self.name, self.tags, self.create_kwargs = app_id, name, dict(tags), kwargs
        self.files: dict[str, bytes] = {}
        self.dirs: set[str] = {"/"}
        self.returncode: int | None = None

    def check(self, name: str, args: tuple, kwargs: dict) -> None:
        self._world.record(name, args, kwargs)
        if self.returncode is not None:
            raise real_exceptions.SandboxTerminatedError(f"{self.object_id} terminated")

    @property
    def filesystem(self) -> FakeFilesystem:
        return FakeFilesystem(self)

    def exec(self, *args: str, timeout: int | None = None, workdir: str | None = None, text: bool = True):
        self.check("Sandbox.exec", args, {"timeout": timeout, "workdir": workdir, "text": text})
        assert not text, "the backend reads bytes"
        code, out, err = self._world.exec_handler(self, list(args), timeout, workdir)
        return FakeProcess(self._world, code, out, err)

    def terminate(self, *, wait: bool = False):
        self._world.record("Sandbox.terminate", (), {"wait": wait} if wait else {})
        self.returncode = 137 if self.returncode is None else self.returncode
        with self._world.lock:
            self._world.sandboxes.pop(self.object_id, None)

    def poll(self) -> int | None:
        self._world.record("Sandbox.poll", (), {})
        return self.returncode

    def get_tags(self) -> dict[str, str]:
        self._world.record("Sandbox.get_tags", (), {})
        return dict(self.tags)


def make_fake_modal(world: World) -> types.SimpleNamespace:
    """A module-like namespace with App, Secret, Image, Sandbox and the real exception module."""

    class FakeApp:
        def __init__(self, name: str) -> None:
            self.name, self.app_id = name, f"ap-fake-{name}"

        @staticmethod
        def lookup(name: str, *, client=None, environment_name=None, create_if_missing: bool = False):
            world.record("App.lookup", (name,), {"create_if_missing": create_if_missing})
            return FakeApp(name)

    class FakeSecret:
        def __init__(self, source: str, env: dict | None = None) -> None:
            self.source, self.env = source, env or {}

        @staticmethod
        def from_name(name: str, *, environment_name=None, required_keys=(), client=None):
            world.record("Secret.from_name", (name,), {})
            return FakeSecret(name)

        @staticmethod
        def from_dict(env_dict: dict | None = None):
            world.record("Secret.from_dict", (env_dict,), {})
            return FakeSecret("<dict>", env_dict)

    class FakeImage:
        def __init__(self, steps: list) -> None:
            self.steps = steps

        @staticmethod
        def debian_slim(python_version: str | None = None, force_build: bool = False):
            world.record("Image.debian_slim", (), {"python_version": python_version})
            return FakeImage([("debian_slim", python_version)])

        def __getattr__(self, method: str):
            if method not in {"apt_install", "run_commands", "pip_install", "env", "add_local_python_source", "add_local_dir"}:
                raise AttributeError(method)

            def step(*args, **kwargs):
                world.record(f"Image.{method}", args, kwargs)
                return FakeImage([*self.steps, (method, args, kwargs)])

            return step

    class Sandbox:
        @staticmethod
        def create(*args: str, app=None, name=None, tags=None, image=None, secrets=None, timeout=300,
                   workdir=None, cpu=None, memory=None, block_network=False):
            kwargs = {"app": app, "name": name, "tags": tags, "image": image, "secrets": secrets,
                      "timeout": timeout, "workdir": workdir, "cpu": cpu, "memory": memory,
                      "block_network": block_network}
            world.record("Sandbox.create", args, kwargs)
            with world.lock:
                if name and any(s.app_id == app.app_id and s.name == name for s in world.sandboxes.values()):
                    raise real_exceptions.AlreadyExistsError(f"sandbox {name!r} already exists")
                sb = FakeSandbox(world, app.app_id, name, tags or {}, kwargs)
                world.sandboxes[sb.object_id] = sb
            return sb

        @staticmethod
        def from_id(sandbox_id: str, client=None):
            world.record("Sandbox.from_id", (sandbox_id,), {})
            with world.lock:
                if sandbox_id not in world.sandboxes:
                    raise real_exceptions.NotFoundError(f"sandbox {sandbox_id} not found")
                return world.sandboxes[sandbox_id]

        @staticmethod
        def from_name(app_name: str, name: str, *, environment_name=None, include_terminated=False, client=None):
            world.record("Sandbox.from_name", (app_name, name), {})
            with world.lock:
                for sb in world.sandboxes.values():
                    if sb.app_id == f"ap-fake-{app_name}" and sb.name == name:
                        return sb
            raise real_exceptions.NotFoundError(f"sandbox {name!r} not found")

        @staticmethod
        def list(*, app_id=None, tags=None, client=None):
            world.record("Sandbox.list", (), {"app_id": app_id, "tags": tags})
            with world.lock:
                found = [sb for sb in world.sandboxes.values()
                         if (app_id is None or sb.app_id == app_id)
                         and all(sb.tags.get(k) == v for k, v in (tags or {}).items())]
            yield from found

    return types.SimpleNamespace(App=FakeApp, Secret=FakeSecret, Image=FakeImage, Sandbox=Sandbox,
                                 exception=real_exceptions)
