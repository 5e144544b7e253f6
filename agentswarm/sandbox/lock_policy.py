"""Only registry packages are installed: a commit whose manifests name anything else is refused before any install.

A git dependency makes npm run `git` (and the dependency's `prepare` script, `--ignore-scripts` or
not); a `file:` or `link:` one installs whatever the tree points at; a URL tarball names a host the
install sandbox cannot reach anyway. So `package.json` and the lock files, read from the hub (never
from a checkout), may name only packages of the registry: a semver range, a dist-tag, an `npm:`
alias of one, and in package-lock.json a `resolved` URL on the registry's host (or on
registry.npmjs.org, which npm rewrites to the configured registry). Anything else is refused with a
one-line reason that names the file, the dependency and the spec. A manifest that is not valid JSON
is not judged here: npm cannot install from it either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from agentswarm.sandbox.registry_proxy import endpoint

NPMJS = ("registry.npmjs.org", 443)
DEP_FIELDS = ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies")
_GIT = ("git+", "git:", "github:", "gitlab:", "bitbucket:", "gist:")
_LOCAL = ("file:", "link:", "portal:", "workspace:")
_PATH = ("./", "../", "/", "~/", ".\\", "..\\")
# yarn.lock and pnpm-lock.yaml are not parsed: these markers of a non-registry source are enough to refuse.
_TEXT_LOCK = re.compile(r"git\+|git://|github:|gitlab:|bitbucket:|codeload\.github\.com|file:|link:|portal:")


def refusal(files: dict[str, bytes], registry: str) -> str | None:
    """Why these manifests (name -> content) cannot be installed, in one line; None if they name only registry packages."""
    allowed = {endpoint(registry)[1:], NPMJS}
    for name in ("package.json", "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml"):
        if name not in files:
            continue
        found = _in_text_lock(files[name]) if name.endswith((".lock", ".yaml")) else _in_json(name, files[name], allowed)
        if found:
            where, spec, kind = found
            return (f"cannot run: {name}: {where} is {kind} dependency ({_shown(spec)}); only packages of the "
                    f"registry {registry} are installed (git, file, link and URL dependencies are refused)")
    return None


def _in_json(name: str, data: bytes, allowed: set[tuple[str, int]]) -> tuple[str, str, str] | None:
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    entries = _manifest_specs(doc) if name == "package.json" else _lock_specs(doc)
    for where, spec, resolved in entries:
        kind = _kind(spec, allowed, resolved)
        if kind:
            return where, spec, kind
    return None


def _manifest_specs(doc: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str, bool]]:
    """(where, spec, is a resolved URL) of each dependency a package.json (or a lock's root entry) names."""
    for field in DEP_FIELDS:
        deps = doc.get(field)
        if isinstance(deps, dict):
            for dep, spec in deps.items():
                yield f"{prefix}{field}.{dep}", str(spec), False
    yield from _overrides(doc.get("overrides"), f"{prefix}overrides")


def _overrides(value: Any, where: str) -> Iterator[tuple[str, str, bool]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _overrides(inner, f"{where}.{key}")
    elif isinstance(value, str) and not value.startswith("$"):  # "$name": the version of a direct dependency
        yield where, value, False


def _lock_specs(doc: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """Every version, resolved URL and link of a package-lock.json (v1 `dependencies`, v2/v3 `packages`)."""
    packages = doc.get("packages")
    if isinstance(packages, dict):
        for key, entry in packages.items():
            if not isinstance(entry, dict):
                continue
            if key == "":
                yield from _manifest_specs(entry, "the root's ")
                continue
            yield from _entry(key, entry)
    yield from _v1(doc.get("dependencies"), "")


def _v1(deps: Any, parent: str) -> Iterator[tuple[str, str, bool]]:
    if not isinstance(deps, dict):
        return
    for dep, entry in deps.items():
        if isinstance(entry, dict):
            yield from _entry(f"{parent}{dep}", entry)
            yield from _v1(entry.get("dependencies"), f"{parent}{dep} > ")


def _entry(where: str, entry: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    if entry.get("link"):
        yield where, f"link:{entry.get('resolved', '')}", False
    if isinstance(entry.get("version"), str):
        yield where, entry["version"], False
    if isinstance(entry.get("resolved"), str):
        yield where, entry["resolved"], True


def _kind(spec: str, allowed: set[tuple[str, int]], resolved: bool) -> str | None:
    """'a git' / 'a local' / 'a URL' when spec is not a registry package, else None."""
    text = spec.strip()
    low = text.lower()
    if low.startswith("npm:"):  # an alias: npm:<name>@<range>
        _name, _, rest = text[4:].lstrip("@").partition("@")
        return _kind(rest, allowed, False) if rest else None
    if low.startswith(_GIT):
        return "a git"
    if low.startswith(_LOCAL) or low.startswith(_PATH) or low in (".", ".."):
        return "a local (file/link)"
    if low.startswith(("http:", "https:")):
        try:
            return None if resolved and endpoint(text)[1:] in allowed else "a URL"
        except ValueError:  # a port that is not a number
            return "a URL"
    if "://" in low or "/" in low or ":" in low:  # user/repo is GitHub; any other scheme is not the registry
        return "a git" if "/" in low and "://" not in low and ":" not in low else "a non-registry"
    return None


def _in_text_lock(data: bytes) -> tuple[str, str, str] | None:
    text = data.decode("utf-8", "replace")
    for number, line in enumerate(text.splitlines(), 1):
        if _TEXT_LOCK.search(line):
            return f"line {number}", line.strip(), "a non-registry"
    return None


def _shown(value: str, limit: int = 160) -> str:
    """The value on one line, control characters replaced, at most `limit` characters."""
    clean = "".join(c if c.isprintable() else "?" for c in value)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"
