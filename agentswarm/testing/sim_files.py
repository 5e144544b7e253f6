"""Deterministic, plausible file contents the simulated worker writes (TypeScript, vitest, the odd asset)."""

from __future__ import annotations

import json
import posixpath
import re


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
        f"  return Math.max(0, options.scale) * {len(title)};\n"
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
            f'import {{ {fn} }} from "./{stem}";\n\n'
            f"describe({quoted}, () => {{\n"
            f'  it("returns 0 when disabled", () => {{\n'
            f"    expect({fn}({{ enabled: false, scale: 2 }})).toBe(0);\n"
            f"  }});\n\n"
            f'  it("scales with the options", () => {{\n'
            f"    expect({fn}({{ enabled: true, scale: 2 }})).toBe(2 * {len(title)});\n"
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
