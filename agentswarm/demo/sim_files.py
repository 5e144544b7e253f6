"""Deterministic, plausible file contents the simulated worker writes (TypeScript, vitest, the odd asset)."""

from __future__ import annotations

import json
import posixpath
import re
import shlex

SHARED_PATH = "src/sim-shared.ts"  # the file a `shared` fault edits outside the task's scope
# The page's entry module (index.html loads it): a feature in whose scope it is gets a line added to it, never
# a generic module in its place, which would leave the page "booting" for good and main red at the page check.
ENTRY_PATHS = frozenset({"src/index.ts"})


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z][a-z0-9]*|[0-9]+", text) or ["module"]


def camel(text: str) -> str:
    """'chunk-mesher' -> 'chunkMesher' (a valid identifier)."""
    words = _words(text)
    name = words[0].lower() + "".join(w.capitalize() for w in words[1:])
    return name if name[0].isalpha() else "m" + name


def pascal(text: str) -> str:
    """'chunk-mesher' -> 'ChunkMesher'."""
    name = camel(text)
    return name[0].upper() + name[1:]


def _stem(path: str) -> str:
    base = posixpath.basename(path)
    for suffix in (".test.ts", ".spec.ts", ".test.tsx", ".ts", ".tsx", ".js", ".mjs"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base.split(".")[0]


def _ts_source(path: str, title: str) -> str:
    fn, ty = camel(_stem(path)), pascal(_stem(path))
    quoted = json.dumps(title)
    return (
        f"// {title}\n"
        f"// Written by the AgentSwarm simulator; a real model writes the real thing.\n\n"
        f"export interface {ty}Options {{\n"
        f"  enabled: boolean;\n"
        f"  scale: number;\n"
        f"}}\n\n"
        f"export const {fn}Title = {quoted};\n\n"
        f"export function {fn}(options: {ty}Options = {{ enabled: true, scale: 1 }}): number {{\n"
        f"  if (!options.enabled) {{\n"
        f"    return 0;\n"
        f"  }}\n"
        f"  return Math.max(0, options.scale) * {fn}Title.length;\n"
        f"}}\n"
    )


def _ts_test(path: str, title: str, scope: list[str]) -> str:
    stem = _stem(path)
    sibling = posixpath.join(posixpath.dirname(path), stem + ".ts")
    quoted = json.dumps(title)
    if sibling in scope:
        fn = camel(stem)
        return (
            'import { describe, expect, it } from "vitest";\n'
            f'import {{ {fn}, {fn}Title }} from "./{stem}";\n\n'
            f"describe({quoted}, () => {{\n"
            f'  it("returns 0 when disabled", () => {{\n'
            f"    expect({fn}({{ enabled: false, scale: 2 }})).toBe(0);\n"
            f"  }});\n\n"
            f'  it("scales with the options", () => {{\n'
            f"    expect({fn}({{ enabled: true, scale: 2 }})).toBe(2 * {fn}Title.length);\n"
            f"  }});\n"
            f"}});\n"
        )
    return (
        'import { describe, expect, it } from "vitest";\n\n'
        f"describe({quoted}, () => {{\n"
        f'  it("has a title", () => {{\n'
        f"    expect({quoted}.length).toBeGreaterThan(0);\n"
        f"  }});\n"
        f"}});\n"
    )


def file_content(path: str, title: str, scope: list[str]) -> str:
    """Content for `path` that mentions the task title; same inputs, same bytes."""
    if re.search(r"\.(test|spec)\.tsx?$", path):
        return _ts_test(path, title, scope)
    if path.endswith((".ts", ".tsx", ".js", ".mjs")):
        return _ts_source(path, title)
    if path.endswith(".json"):
        return json.dumps({"title": title, "generatedBy": "agentswarm-simulator"}, indent=2) + "\n"
    if path.endswith(".md"):
        return f"# {title}\n\nNotes written by the AgentSwarm simulator.\n"
    if path.endswith((".css", ".glsl", ".vert", ".frag")):
        return f"/* {title} */\n"
    if path.endswith(".html"):
        return f"<!-- {title} -->\n<div></div>\n"
    return f"{title}\n"


def is_test_path(path: str) -> bool:
    """A vitest file: *.test.ts(x) or *.spec.ts(x)."""
    return re.search(r"\.(test|spec)\.tsx?$", path) is not None


def is_ts_source(path: str) -> bool:
    """A TypeScript source the simulator writes as a module (not a test, not a declaration file)."""
    return path.endswith((".ts", ".tsx")) and not path.endswith(".d.ts") and not is_test_path(path)


def fault_target(kind: str, scope: list[str]) -> str | None:
    """The file in scope a fault of this kind goes into (SHARED_PATH for `shared`), or None when none fits."""
    if kind in ("type", "semantic"):
        return next((p for p in scope if is_ts_source(p) and p not in ENTRY_PATHS), None)
    if kind in ("test", "flaky"):
        return next((p for p in scope if is_test_path(p)), None)
    if kind == "shared":
        return SHARED_PATH if scope else None
    return None


def pair_key(base_sha: str | None, task_id: str) -> str:
    """Which semantic faults clash: those of branches started from the same main (else none: the task's id)."""
    key = base_sha or f"task-{task_id}"
    return re.sub(r"[^A-Za-z0-9]", "_", key)[:12]


def fault_snippet(kind: str, path: str, title: str, task_id: str, pair: str | None = None) -> str:
    """The text a fault of this kind appends to `path` as file_content wrote it.

    type: fails tsc (TS2322); test: a test that always fails; flaky: a test that fails about 30% of runs;
    semantic: a global declaration that compiles alone but clashes (TS2717) with that of another task of
    the same `pair` (branches started from the same main: concurrent ones), and with no other.
    """
    quoted = json.dumps(title)
    if kind == "type":
        return f"\nexport const {camel(_stem(path))}Checked: number = {quoted};\n"
    if kind == "test":
        name = json.dumps(f"counts the letters of {title}")
        return (f"\nit({name}, () => {{\n"
                f"  expect({quoted}.length).toBe({quoted}.length + 1);\n"
                f"}});\n")
    if kind == "flaky":
        name = json.dumps(f"flaky: {title} settles in time")
        return (f"\nit({name}, () => {{\n"
                f"  expect(Math.random()).toBeGreaterThanOrEqual(0.3);\n"
                f"}});\n")
    if kind == "semantic":
        return (f"\ndeclare global {{\n"
                f"  interface SimSwarmShared_{pair or pair_key(None, task_id)} {{\n"
                f"    owner: {json.dumps(task_id)};\n"
                f"  }}\n"
                f"}}\n")
    raise ValueError(f"no file snippet for fault kind {kind!r}")


def shared_line(task_id: str, title: str) -> str:
    """The line a `shared` fault appends to SHARED_PATH: valid TypeScript, unique to the task."""
    return f"export const sim_{re.sub(r'[^A-Za-z0-9_]', '_', task_id)} = {json.dumps(title)};"


def shared_add_command(task_id: str, title: str) -> str:
    """The shell command (run by sh in the repository root) that appends the task's line to SHARED_PATH."""
    folder = posixpath.dirname(SHARED_PATH)
    return f"mkdir -p {folder} && printf '%s\\n' {shlex.quote(shared_line(task_id, title))} >> {SHARED_PATH}"


def entry_line(path: str, title: str) -> str:
    """The line the simulated worker adds to an entry module (valid TypeScript, unique to the file's feature)."""
    return f"export const {camel(_stem(path))}Feature = {json.dumps(title)};"


def entry_add_command(path: str, title: str) -> str:
    """The shell command that adds `entry_line` to the entry module at `path` once (a later turn runs it again),
    keeping what boots the page."""
    line, where = shlex.quote(entry_line(path, title)), shlex.quote(path)
    return f"grep -qxF -- {line} {where} 2>/dev/null || printf '\\n%s\\n' {line} >> {where}"


def shared_undo_command() -> str:
    """The shell command that puts SHARED_PATH back as the branch's base has it (or removes it)."""
    return f"git checkout HEAD -- {SHARED_PATH} 2>/dev/null || rm -f {SHARED_PATH}"
