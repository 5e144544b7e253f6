"""tsc from a startup snapshot (TSC_SNAPSHOT): built once per lock file in a sandbox, the same output and
exit code as the plain tsc on every command line the checks and agents use, and never trusted blindly.

Real VoxelCraft dependencies (`npm ci` from the registry once per session), real bubblewrap sandboxes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from agentswarm.sandbox import tsc_fast
from agentswarm.sandbox.deps import attach_deps, checkout, ensure_deps, run_in
from agentswarm.sandbox.local import LocalSandboxBackend, LocalSandboxConfig
from tests.reconcile.hubs import hub_from, main_of

pytestmark = [pytest.mark.bwrap,
              pytest.mark.skipif(shutil.which("npm") is None, reason="needs node and npm (nodejs, npm)")]

TARGET = Path(__file__).resolve().parents[2] / "target-repo"
INSTALL = "npm ci --ignore-scripts --no-audit --no-fund"
BAD = ('export const x: number = "s";\nexport function g(w: Window) { return w.innerWidth + nope; }\n'
       "const unused = document.createElement('canvas').getContext('webgl2');\n")


@pytest.fixture(scope="session")
def voxel(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(hub, deps root, the overlay node_modules) of VoxelCraft's lock file, installed and snapshotted once."""
    base = tmp_path_factory.mktemp("tscfast")
    src = base / "src"
    shutil.copytree(TARGET, src, ignore=shutil.ignore_patterns("node_modules", "dist", ".vite"))
    (src / "src" / "flat").mkdir()
    (src / "src" / "flat" / "ok.ts").write_text("export const ok = (a: number): number => a * 2;\n")
    (src / "src" / "flat" / "bad.ts").write_text(BAD)
    (src / "narrow.json").write_text(json.dumps({"extends": "./tsconfig.json", "include": ["src/flat/ok.ts"]}))
    (src / "narrow-bad.json").write_text(json.dumps({"extends": "./tsconfig.json", "include": ["src/flat/*.ts"]}))
    hub = hub_from(src, base)
    backend = LocalSandboxBackend(LocalSandboxConfig(root=base / "sandboxes", isolation="bwrap"))
    modules, installed = ensure_deps(backend, str(hub), main_of(hub), INSTALL, base / "deps", 600,
                                     tsc_snapshot=True)
    assert installed is not None and installed.ok, installed and installed.output
    assert modules is not None and modules.name.startswith("node_modules-tsc-"), modules
    return hub, base / "deps", modules


def _sandbox(tmp_path: Path, hub: Path, modules: Path) -> tuple[LocalSandboxBackend, object]:
    backend = LocalSandboxBackend(LocalSandboxConfig(root=tmp_path / "sandboxes", isolation="bwrap"))
    sb = checkout(backend, str(hub), main_of(hub), "check", run_id="tscfast")
    attach_deps(backend, sb, modules)
    return backend, sb


COMMAND_LINES = ["--noEmit -p narrow.json", "--noEmit -p narrow-bad.json", "--noEmit -p narrow-bad.json --pretty",
                 "--noEmit", "--noEmit -p .", "-p missing.json", "--noEmit -p narrow-bad.json --strict false",
                 "--noEmit --listFilesOnly -p narrow.json", "--version", "--noEmit --showConfig -p narrow.json",
                 "-b narrow.json", "--noEmit src/flat/ok.ts"]


def test_the_snapshot_tsc_says_what_the_plain_tsc_says(voxel, tmp_path) -> None:
    hub, _, modules = voxel
    backend, sb = _sandbox(tmp_path, hub, modules)
    plain = modules.parent / "node_modules" / ".bin" / "tsc"
    shim = (modules / ".bin" / "tsc").read_text()
    assert "--snapshot-blob" in shim and Path(shim.split("--snapshot-blob ")[1].split()[0].strip("'")).is_file()
    try:
        for args in COMMAND_LINES:
            fast = run_in(backend, sb, f"node_modules/.bin/tsc {args}", 120)
            slow = run_in(backend, sb, f"{plain} {args}", 120)
            assert (fast.exit_code, fast.output) == (slow.exit_code, slow.output), args
            assert not fast.timed_out
        bad = run_in(backend, sb, "node_modules/.bin/tsc --noEmit -p narrow-bad.json", 120)
        assert bad.exit_code == 2 and "TS2322" in bad.output and "TS2304" in bad.output  # it does check
        npx = run_in(backend, sb, "npx --no-install tsc --noEmit -p narrow-bad.json", 120)  # an agent's way
        assert npx.exit_code == 2 and "TS2322" in npx.output
    finally:
        backend.terminate(sb)


def test_a_cached_file_whose_text_changed_is_parsed_again(voxel, tmp_path) -> None:
    # The cache keeps parsed library files; if one differs from what was parsed (here: edited on the
    # host, as a reinstall or a tampered cache would), the check must see the new text, not the old.
    hub, _, modules = voxel
    lib = (modules / "typescript").resolve() / "lib" / "lib.es5.d.ts"
    text = lib.read_text()
    backend, sb = _sandbox(tmp_path, hub, modules)
    backend.put_file(sb, "repo/src/flat/uses.ts", b"export const y: number = INJECTED_BY_THE_TEST;\n")
    backend.put_file(sb, "repo/uses.json", json.dumps({"extends": "./tsconfig.json",
                                                        "include": ["src/flat/uses.ts"]}).encode())
    try:
        before = run_in(backend, sb, "node_modules/.bin/tsc --noEmit -p uses.json", 120)
        assert before.exit_code == 2 and "INJECTED_BY_THE_TEST" in before.output
        lib.write_text(text + "\ndeclare var INJECTED_BY_THE_TEST: number;\n")
        after = run_in(backend, sb, "node_modules/.bin/tsc --noEmit -p uses.json", 120)
        assert after.exit_code == 0, after.output
    finally:
        lib.write_text(text)
        backend.terminate(sb)


def test_off_gives_the_plain_node_modules(voxel, tmp_path) -> None:
    hub, deps, modules = voxel
    backend = LocalSandboxBackend(LocalSandboxConfig(root=tmp_path / "sandboxes", isolation="bwrap"))
    plain, installed = ensure_deps(backend, str(hub), main_of(hub), INSTALL, deps, 600, tsc_snapshot=False)
    assert installed is None and plain == modules.parent / "node_modules"
    again, _ = ensure_deps(backend, str(hub), main_of(hub), INSTALL, deps, 600, tsc_snapshot=True)
    assert again == modules  # built once: the second ask finds it


def _fake_cache(tmp_path: Path, typescript_js: str) -> tuple[LocalSandboxBackend, object, Path]:
    modules = tmp_path / "deps" / "digest" / "node_modules"
    (modules / "typescript" / "lib").mkdir(parents=True)
    (modules / "typescript" / "lib" / "typescript.js").write_text(typescript_js)
    (modules / ".bin").mkdir()
    src = tmp_path / "repo-src"
    src.mkdir()
    (src / "tsconfig.json").write_text("{}")
    hub = hub_from(src, tmp_path)
    backend = LocalSandboxBackend(LocalSandboxConfig(root=tmp_path / "sandboxes", isolation="bwrap"))
    sb = checkout(backend, str(hub), main_of(hub), "build", run_id="tscfast")
    attach_deps(backend, sb, modules)
    return backend, sb, modules


def test_a_build_that_fails_leaves_a_note_and_the_plain_tsc(tmp_path) -> None:
    backend, sb, modules = _fake_cache(tmp_path, "throw new Error('this typescript does not load');\n")
    try:
        assert tsc_fast.wanted(modules)
        assert tsc_fast.build(backend, sb, modules) is None
    finally:
        backend.terminate(sb)
    notes = list(modules.parent.glob("tsc-*.failed"))
    assert len(notes) == 1 and "does not load" in notes[0].read_text()
    assert tsc_fast.fast_modules(modules) is None and not tsc_fast.wanted(modules)  # not tried again
    assert not list(modules.parent.glob("tsc-*.blob"))


def test_a_planted_link_instead_of_the_blob_is_not_followed(tmp_path) -> None:
    # The compiler's code runs during the build: a hostile package could leave a link where the
    # snapshot should be, pointing at a host file, and exit 0. The orchestrator must not copy it.
    secret = tmp_path / "host-secret"
    secret.write_text("sk-not-for-the-cache")
    hostile = (f"require('fs').symlinkSync({json.dumps(str(secret))}, require('path').resolve('../tsc.blob'));\n"
               "process.exit(0);\n")
    backend, sb, modules = _fake_cache(tmp_path, hostile)
    try:
        assert tsc_fast.build(backend, sb, modules) is None
    finally:
        backend.terminate(sb)
    assert not list(modules.parent.glob("tsc-*.blob")) and tsc_fast.fast_modules(modules) is None
    assert "sk-not-for-the-cache" not in "".join(p.read_text() for p in modules.parent.glob("tsc-*.failed"))


def test_no_typescript_means_no_build(tmp_path) -> None:
    modules = tmp_path / "deps" / "d" / "node_modules"
    modules.mkdir(parents=True)
    assert not tsc_fast.wanted(modules) and tsc_fast.fast_modules(modules) is None


def test_the_shim_names_this_node(voxel) -> None:
    _, _, modules = voxel
    node = tsc_fast.node_binary()
    assert node is not None and modules.name == f"node_modules-tsc-{node[1]}"
    shim = (modules / ".bin" / "tsc").read_text()
    assert shim.startswith("#!/bin/sh\n") and node[0] in shim
    out = subprocess.run([str(modules / ".bin" / "tsc"), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("Version ")


FAKE_TS_INSTALL = ("mkdir -p node_modules/typescript/lib node_modules/.bin && "
                   "echo 'module.exports = { version: \"0-fake\" };' > node_modules/typescript/lib/typescript.js && "
                   "sleep 1")


def test_concurrent_checks_of_a_new_lock_file_all_get_the_snapshot(tmp_path) -> None:
    # 100 slots start at once on a fresh cache: each must wait for the one build (install, then the lazy
    # build after the overlay is gone), not start the plain tsc while it runs.
    import threading

    src = tmp_path / "src"
    src.mkdir()
    (src / "package.json").write_text("{}")
    (src / "package-lock.json").write_text("{}")
    hub = hub_from(src, tmp_path)
    backend = LocalSandboxBackend(LocalSandboxConfig(root=tmp_path / "sandboxes", isolation="bwrap"))
    (tmp_path / "shared-deps").mkdir()
    (tmp_path / "deps").symlink_to(tmp_path / "shared-deps")  # a deps root reached through a link

    def wave() -> list[Path | None]:
        got: list[Path | None] = []
        threads = [threading.Thread(target=lambda: got.append(ensure_deps(
            backend, str(hub), main_of(hub), FAKE_TS_INSTALL, tmp_path / "deps", 120, tsc_snapshot=True)[0]))
            for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return got

    first = wave()
    assert len(first) == 6 and len(set(first)) == 1 and first[0] is not None, first
    assert first[0].name.startswith("node_modules-tsc-")
    shutil.rmtree(first[0])
    for blob in first[0].parent.glob("tsc-*.blob"):
        blob.unlink()
    second = wave()
    assert set(second) == {first[0]} and (first[0] / ".bin" / "tsc").is_file()
    assert len(list(first[0].parent.glob("tsc-*.blob"))) == 1 and backend.list() == []
