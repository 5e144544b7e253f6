"""`tsc` started from a V8 startup snapshot: the target's own TypeScript, its library files already parsed.

A type check of one changed file costs `tsc` about 1.5 CPU-seconds on two cores, two thirds of it
loading the compiler and parsing lib.dom.d.ts & co.; every presubmit, gate and reconciler check pays
it again. Once per lock file (and node binary), `tsc_snapshot.js` (this package's code) loads the
installed `typescript` and parses and binds the library files and the typings the project imports,
in a sandbox with no network and no secret, and node writes that heap as a snapshot blob. The
dependency cache then gets, beside `node_modules`, an overlay `node_modules-tsc-<node>` of links into
it whose `.bin/tsc` starts node from the blob: `node_modules/.bin/tsc --noEmit ...` (the checks'
commands, an agent's `npx tsc`) prints the same diagnostics and exits with the same code, for about a
third of the CPU. The blob is made by the lock file's own packages and used only inside sandboxes that
would run those same packages; a cached file is used only when its text is the text that was parsed.

Any failure (no typescript installed, an old node, a build that errs or outgrows MAX_BLOB_BYTES)
leaves a note beside the cache and the plain `tsc`: a check waits for a build in progress at most
BUILD_WAIT_S, and never fails because of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import shlex
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from agentswarm.sandbox.base import SandboxError, SandboxHandle
from agentswarm.sandbox.local import LocalSandboxBackend

log = logging.getLogger(__name__)

BUILDER = Path(__file__).with_name("tsc_snapshot.js")
MAX_BLOB_BYTES = 512 * 1024 * 1024
BUILD_TIMEOUT_S = 300.0
BUILD_WAIT_S = 120.0  # how long a check waits for a build another thread or process is making
TYPESCRIPT = Path("typescript/lib/typescript.js")
OVERLAY = "node_modules-tsc-"  # + the node's id


@functools.lru_cache(maxsize=4)
def _identity(node: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(f"{node}\0{size}\0{mtime_ns}".encode()).hexdigest()[:12]


def node_binary() -> tuple[str, str] | None:
    """(the real path of the node on PATH, a short id of that exact binary); None without node.

    A snapshot runs only on the node that made it: a node upgraded in place gets a new id, so a new blob.
    """
    found = shutil.which("node")
    if not found:
        return None
    real = os.path.realpath(found)
    try:
        st = os.stat(real)
    except OSError:
        return None
    return real, _identity(real, st.st_size, st.st_mtime_ns)


def overlay_of(modules: Path, node_id: str) -> Path:
    """Where the node_modules whose `.bin/tsc` starts from the snapshot lives: beside `modules`."""
    return modules.parent / f"{OVERLAY}{node_id}"


def blob_of(modules: Path, node_id: str) -> Path:
    return modules.parent / f"tsc-{node_id}.blob"


def note_of(modules: Path, node_id: str) -> Path:
    """Why no snapshot could be built for this lock file and node (kept: not tried again)."""
    return modules.parent / f"tsc-{node_id}.failed"


def fast_modules(modules: Path) -> Path | None:
    """The overlay for this node if it is built, else None (the plain node_modules serves)."""
    node = node_binary()
    if node is None:
        return None
    overlay = overlay_of(modules, node[1])
    return overlay if (overlay / ".bin" / "tsc").is_file() else None


def wanted(modules: Path) -> bool:
    """True when no overlay and no failure note exist yet for this lock file and node."""
    node = node_binary()
    if node is None or not (modules / TYPESCRIPT).is_file():
        return False
    return fast_modules(modules) is None and not note_of(modules, node[1]).exists()


def describe(modules: Path) -> str:
    """One line for `agentswarm doctor`: which tsc the checks of this node_modules start."""
    if modules.name.startswith(OVERLAY):
        return f"tsc starts from a snapshot ({blob_of(modules, modules.name.removeprefix(OVERLAY)).name})"
    node = node_binary()
    note = note_of(modules, node[1]) if node else None
    if note is not None and note.exists():
        return f"the plain tsc (no snapshot: {note.read_text().strip().splitlines()[0][:200]})"
    return "the plain tsc"


@contextlib.contextmanager
def _build_lock(modules: Path, wait_s: float) -> Iterator[bool]:
    """One build per lock file across processes; the others wait up to wait_s, then go on (False)."""
    deadline = time.monotonic() + wait_s
    with open(modules.parent / ".tsc-snapshot.lock", "a+b") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.2)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(backend: LocalSandboxBackend, sb: SandboxHandle, modules: Path, *, repo: str = "repo",
          timeout_s: float = BUILD_TIMEOUT_S, wait_s: float = BUILD_WAIT_S) -> Path | None:
    """Build the snapshot in `sb`, whose checkout (`repo`) has `modules` attached; the overlay, or None.

    The checkout's tsconfig.json picks which library files and typings are parsed ahead (its sources
    are read to find them, and are not kept). Never raises for a failed build: it leaves a note.
    """
    node = node_binary()
    if node is None or not (modules / TYPESCRIPT).is_file():
        return None
    node_path, node_id = node
    with _build_lock(modules, wait_s) as mine:  # another process building it: wait, then use theirs
        if not mine or fast_modules(modules) is not None or note_of(modules, node_id).exists():
            return fast_modules(modules)
        try:
            return _build(backend, sb, modules, repo, node_path, node_id, timeout_s)
        except (OSError, SandboxError, ValueError) as exc:
            _fail(modules, node_id, f"{type(exc).__name__}: {exc}")
            return None


def _build(backend: LocalSandboxBackend, sb: SandboxHandle, modules: Path, repo: str, node_path: str,
           node_id: str, timeout_s: float) -> Path | None:
    out = Path(sb.workdir) / "tsc.blob"
    tsconfig = Path(sb.workdir) / repo / "tsconfig.json"
    # The path as the sandboxes see it (bound at that path), not resolved: the deps root may be reached
    # through a link, and its target is not in the sandbox.
    env = {"AGENTSWARM_TS": os.path.abspath(modules / TYPESCRIPT)}
    if tsconfig.is_file() and not tsconfig.is_symlink():
        env["AGENTSWARM_TSCONFIG"] = str(tsconfig)
    exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in env.items())
    res = backend.exec(sb, ["sh", "-c", f"cd {shlex.quote(repo)} && {exports}exec {shlex.quote(node_path)} --snapshot-blob "
                            f"{shlex.quote(str(out))} --build-snapshot {shlex.quote(str(BUILDER))}"], timeout_s=timeout_s)
    if res.exit_code != 0 or res.timed_out:
        tail = (res.stdout + res.stderr).strip()[-1500:]
        _fail(modules, node_id, f"the build exited {res.exit_code}{' (timed out)' if res.timed_out else ''}: {tail}")
        return None
    blob = blob_of(modules, node_id)
    _copy_out(out, blob)
    overlay = _make_overlay(modules, node_path, node_id, blob)
    built = _report(res.stdout)
    log.info("tsc snapshot for %s: typescript %s, %s files parsed ahead, %d MB", modules.parent.name[:12],
             built.get("typescript", "?"), built.get("warmed", "?"), blob.stat().st_size >> 20)
    return overlay


def _report(stdout: str) -> dict[str, object]:
    for line in reversed(stdout.strip().splitlines()):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict):
            return found
    return {}


def _copy_out(out: Path, blob: Path) -> None:
    """Copy the sandbox's blob into the cache as a file of ours: never through a link, never too large."""
    fd = os.open(out, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or st.st_size > MAX_BLOB_BYTES:
            raise ValueError(f"the snapshot is not a regular file of 1 B to {MAX_BLOB_BYTES >> 20} MB")
        tmp = blob.with_name(f".{blob.name}.{os.getpid()}")
        with open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.chmod(tmp, 0o644)
        os.replace(tmp, blob)


def _make_overlay(modules: Path, node_path: str, node_id: str, blob: Path) -> Path:
    """node_modules-tsc-<node>: a link to each entry of `modules`, and a .bin whose tsc starts from the blob."""
    overlay = overlay_of(modules, node_id)
    staging = overlay.with_name(f".{overlay.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / ".bin").mkdir(parents=True)
    for entry in sorted(modules.iterdir()):
        if entry.name != ".bin":
            (staging / entry.name).symlink_to(entry)
    bins = modules / ".bin"
    if bins.is_dir():
        for entry in sorted(bins.iterdir()):
            if entry.name != "tsc":
                (staging / ".bin" / entry.name).symlink_to(entry)
    shim = staging / ".bin" / "tsc"
    shim.write_text(f"#!/bin/sh\n# tsc from a startup snapshot (agentswarm/sandbox/tsc_fast.py); the plain one: "
                    f"{modules / '.bin' / 'tsc'}\nexec {shlex.quote(node_path)} --snapshot-blob {shlex.quote(str(blob))} "
                    f"-- \"$@\"\n")
    shim.chmod(0o755)
    try:
        os.replace(staging, overlay)
    except OSError:  # another process made it first
        shutil.rmtree(staging, ignore_errors=True)
    return overlay


def _fail(modules: Path, node_id: str, why: str) -> None:
    log.warning("tsc snapshot not built for %s (the plain tsc serves): %s", modules.parent.name[:12], why[:300])
    with contextlib.suppress(OSError):
        note_of(modules, node_id).write_text(why + "\n")
