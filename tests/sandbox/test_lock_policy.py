"""Only registry packages are installed: manifests naming git, file, link or URL dependencies are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentswarm.sandbox.deps import remove_package_config
from agentswarm.sandbox.lock_policy import refusal

NPMJS = "https://registry.npmjs.org/"
MIRROR = "http://127.0.0.1:4873/"
TARGET = Path(__file__).resolve().parents[2] / "target-repo"


def _lock(packages: dict) -> dict[str, bytes]:
    return {"package-lock.json": json.dumps({"lockfileVersion": 3, "packages": packages}).encode()}


def _manifest(deps: dict, field: str = "dependencies") -> dict[str, bytes]:
    return {"package.json": json.dumps({"name": "p", field: deps}).encode()}


def test_registry_packages_pass():
    files = {"package.json": (TARGET / "package.json").read_bytes(),
             "package-lock.json": (TARGET / "package-lock.json").read_bytes()}
    assert refusal(files, NPMJS) is None  # VoxelCraft's own manifests
    assert refusal(files, MIRROR) is None  # npm rewrites registry.npmjs.org URLs to the configured registry
    fine = {"a": "^1.2.3", "b": "latest", "c": "1.x || >=2.5.0", "d": "npm:@scope/real@^2", "e": "*", "f": ""}
    assert refusal(_manifest(fine), NPMJS) is None
    mirror = _lock({"node_modules/a": {"version": "1.0.0", "resolved": f"{MIRROR}a/-/a-1.0.0.tgz"}})
    assert refusal(mirror, MIRROR) is None
    assert refusal({"package-lock.json": b"v1", "package.json": b"{"}, NPMJS) is None  # npm cannot use them either


@pytest.mark.parametrize(("files", "names"), [
    (_manifest({"x": "github:evil/x"}), ["package.json", "dependencies.x", "git"]),
    (_manifest({"x": "evil/x#main"}, "devDependencies"), ["devDependencies.x", "git"]),
    (_manifest({"x": "git+ssh://git@host/x.git"}, "optionalDependencies"), ["optionalDependencies.x", "git"]),
    (_manifest({"x": "file:../x"}), ["local"]),
    (_manifest({"x": "../x"}), ["local"]),
    (_manifest({"x": "link:./x"}), ["local"]),
    (_manifest({"x": "https://registry.npmjs.org/x/-/x-1.tgz"}), ["URL"]),  # a tarball URL, even on the registry
    (_manifest({"x": "npm:y@github:evil/y"}), ["git"]),
    ({"package.json": json.dumps({"overrides": {"a": {"b": "git://h/b.git"}}}).encode()}, ["overrides.a.b"]),
    (_lock({"node_modules/x": {"version": "git+https://h/x.git#abc", "resolved": "git+https://h/x.git#abc"}}),
     ["package-lock.json", "node_modules/x", "git"]),
    (_lock({"node_modules/x": {"resolved": "packages/x", "link": True}}), ["node_modules/x", "local"]),
    (_lock({"node_modules/x": {"version": "1.0.0", "resolved": "https://evil.example/x.tgz"}}), ["URL"]),
    (_lock({"node_modules/x": {"version": "1.0.0", "resolved": "https://registry.npmjs.org:8443/x.tgz"}}), ["URL"]),
    (_lock({"": {"dependencies": {"x": "file:x"}}}), ["the root's dependencies.x"]),
    ({"package-lock.json": json.dumps({"lockfileVersion": 1, "dependencies": {"a": {"version": "1.0.0", "dependencies": {
        "b": {"version": "github:e/b#ff"}}}}}).encode()}, ["a > b", "git"]),
    ({"yarn.lock": b'a@^1:\n  version "1.0.0"\n\nb@e/b:\n  resolved "https://codeload.github.com/e/b/tar.gz/ff"\n'},
     ["yarn.lock", "line 5"]),
    ({"pnpm-lock.yaml": b"packages:\n  x@link:../x:\n    resolution: {directory: ../x}\n"}, ["pnpm-lock.yaml"]),
])
def test_non_registry_dependencies_are_refused_in_one_line(files, names):
    reason = refusal(files, NPMJS)
    assert reason is not None and reason.startswith("cannot run: ") and "\n" not in reason
    assert all(name in reason for name in names), reason


def test_a_hostile_spec_cannot_break_the_line_or_flood_it():
    reason = refusal(_manifest({"x": "github:e/x\n\x1b[31mfake line" + "y" * 5000}), NPMJS)
    assert reason is not None and "\n" not in reason and "\x1b" not in reason and len(reason) < 500


def test_the_trees_package_manager_config_is_removed(tmp_path):
    repo = tmp_path / "repo"
    for path in (".npmrc", "sub/.npmrc", "sub/deep/.yarnrc.yml", ".yarnrc", ".pnpmfile.cjs", "keep/npmrc", ".git/.npmrc"):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text("x")
    (repo / "linked").mkdir()
    (repo / "linked" / ".npmrc").symlink_to("/etc/passwd")
    removed = remove_package_config(repo)
    assert sorted(removed) == [".npmrc", ".pnpmfile.cjs", ".yarnrc", "linked/.npmrc", "sub/.npmrc", "sub/deep/.yarnrc.yml"]
    assert (repo / "keep/npmrc").exists() and (repo / ".git/.npmrc").exists() and Path("/etc/passwd").exists()
