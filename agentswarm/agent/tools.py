"""The built-in agent's tools, each confined to the repository root, and their OpenAI function schemas."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentswarm.agent.shell import run_capped

FINISH_STATUSES = ("complete", "blocked", "failed")
SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", "dist", "build"}
READ_CAP = 64 * 1024
MAX_LIST = 500
MAX_MATCHES = 200
SEARCH_FILE_CAP = 2 * 1024 * 1024


class ToolError(Exception):
    """A tool call the model got wrong; the message goes back to the model."""


@dataclass
class Finish:
    """The model called finish."""

    status: str
    summary: str


def _fn(name: str, description: str, props: dict[str, Any], required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": props, "required": required, "additionalProperties": False}}}


_S = {"type": "string"}
_I = {"type": "integer"}
TOOL_SCHEMAS: list[dict] = [
    _fn("read_file", "Read a text file, or lines start_line..end_line of it (1-based, inclusive).",
        {"path": _S, "start_line": _I, "end_line": _I}, ["path"]),
    _fn("write_file", "Create or replace a whole file.", {"path": _S, "content": _S}, ["path", "content"]),
    _fn("edit_file", "Replace the exact text `old`, which must occur exactly once in the file, with `new`.",
        {"path": _S, "old": _S, "new": _S}, ["path", "old", "new"]),
    _fn("list_files", "List the files under a directory (default: the repository root), recursively.",
        {"path": _S}, []),
    _fn("search", "Search file contents for a regular expression; prints path:line:text.",
        {"pattern": _S, "path": _S}, ["pattern"]),
    _fn("run", "Run a shell command in the repository root; returns the exit code and the (capped) output.",
        {"command": _S, "timeout_s": _I}, ["command"]),
    _fn("finish", "End the task, once, as the last action.",
        {"status": {"type": "string", "enum": list(FINISH_STATUSES)}, "summary": _S}, ["status", "summary"]),
]
_SCHEMA_BY_NAME = {s["function"]["name"]: s["function"]["parameters"] for s in TOOL_SCHEMAS}
_TYPES = {"string": str, "integer": int}


def check_arguments(name: str, args: dict) -> dict:
    """Validate arguments against the tool's schema; ToolError names what is wrong."""
    schema = _SCHEMA_BY_NAME.get(name)
    if schema is None:
        raise ToolError(f"unknown tool {name!r}; the tools are {', '.join(_SCHEMA_BY_NAME)}")
    missing = [k for k in schema["required"] if k not in args]
    if missing:
        raise ToolError(f"{name}: missing argument(s) {', '.join(missing)}")
    unknown = sorted(set(args) - set(schema["properties"]))
    if unknown:
        raise ToolError(f"{name}: unknown argument(s) {', '.join(unknown)}; it takes {', '.join(schema['properties'])}")
    out = {}
    for key, value in args.items():
        want = _TYPES[schema["properties"][key]["type"]]
        if want is int and isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)  # models often quote numbers
        if value is None and key not in schema["required"]:
            continue
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ToolError(f"{name}: argument {key!r} must be a {schema['properties'][key]['type']}, "
                            f"got {type(value).__name__}")
        out[key] = value
    return out


class Toolbox:
    """The tools over one repository checkout."""

    def __init__(self, root: str | Path, *, run_env: dict[str, str], run_timeout_s: float = 120.0,
                 run_max_timeout_s: float = 900.0, output_cap: int = 32 * 1024) -> None:
        self.root = Path(root).resolve()
        self.run_env = run_env
        self.run_timeout_s = run_timeout_s
        self.run_max_timeout_s = run_max_timeout_s
        self.output_cap = output_cap
        self.rg = shutil.which("rg")

    def call(self, name: str, args: dict, *, time_left_s: float | None = None) -> str | Finish:
        """Run one tool; the text result for the model, or Finish. Raises ToolError for the model's mistakes."""
        args = check_arguments(name, args)
        if name == "finish":
            if args["status"] not in FINISH_STATUSES:
                raise ToolError(f"finish: status must be one of {', '.join(FINISH_STATUSES)}, got {args['status']!r}")
            return Finish(args["status"], args["summary"])
        if name == "run":
            return self.run(args["command"], args.get("timeout_s"), time_left_s)
        return getattr(self, name)(**args)

    # -- paths ---------------------------------------------------------------------------------

    def resolve(self, path: str, *, write: bool = False) -> Path:
        """The absolute path for a repository-relative one; ToolError if it leads outside (or into .git on write)."""
        if not path or not path.strip():
            raise ToolError("path is empty; give a path relative to the repository root")
        raw = path.strip()
        if raw.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", raw):
            raise ToolError(f"{path!r} is absolute; paths must be relative to the repository root")
        if ".." in re.split(r"[\\/]+", raw):
            raise ToolError(f"{path!r} contains '..'; paths must stay inside the repository")
        target = (self.root / raw).resolve()
        if target != self.root and self.root not in target.parents:
            raise ToolError(f"{path!r} leads outside the repository (through a symbolic link); refused")
        rel = target.relative_to(self.root)
        if write and rel.parts and rel.parts[0] == ".git":
            raise ToolError(f"{path!r} is inside .git; the runner owns git, write your files elsewhere")
        return target

    def _rel(self, p: Path) -> str:
        return p.relative_to(self.root).as_posix() or "."

    # -- file tools ----------------------------------------------------------------------------

    def read_file(self, path: str, start_line: int | None = None, end_line: int | None = None) -> str:
        """Read a file or a 1-based inclusive line range of it."""
        target = self.resolve(path)
        if not target.is_file():
            raise ToolError(f"{path!r} is not a file" + (" (it is a directory)" if target.is_dir() else ""))
        with open(target, encoding="utf-8", errors="replace") as fh:
            lines = fh.read(READ_CAP * 64).splitlines(keepends=True)
        total = len(lines)
        start = max(1, start_line or 1)
        end = min(total, end_line or total)
        if total and start > total:
            raise ToolError(f"{path}: start_line {start} is past the end ({total} lines)")
        text = "".join(lines[start - 1:end])
        note = ""
        if len(text) > READ_CAP:
            text = text[:READ_CAP]
            note = f"\n[... cut at {READ_CAP} chars: read a smaller line range ...]"
        return f"{self._rel(target)} (lines {start}-{end} of {total})\n{text}{note}"

    def write_file(self, path: str, content: str) -> str:
        """Create or replace a whole file."""
        target = self.resolve(path, write=True)
        if target.is_dir():
            raise ToolError(f"{path!r} is a directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        return f"wrote {self._rel(target)} ({len(content.encode())} bytes, {content.count(chr(10))} lines)"

    def edit_file(self, path: str, old: str, new: str) -> str:
        """Replace the one occurrence of `old` with `new`."""
        target = self.resolve(path, write=True)
        if not target.is_file():
            raise ToolError(f"{path!r} does not exist; use write_file to create it")
        if not old:
            raise ToolError("edit_file: `old` is empty; give the exact text to replace")
        text = target.read_text(encoding="utf-8")
        count = text.count(old)
        if count == 0:
            raise ToolError(f"edit_file: `old` was not found in {path}; read the file and copy the text exactly")
        if count > 1:
            raise ToolError(f"edit_file: `old` occurs {count} times in {path}; include more context to make it unique")
        target.write_text(text.replace(old, new, 1), encoding="utf-8")
        return f"edited {self._rel(target)}: replaced {old.count(chr(10)) + 1} line(s) with {new.count(chr(10)) + 1}"

    def list_files(self, path: str = ".") -> str:
        """Recursive listing (skipping .git, node_modules and build output), capped."""
        base = self.resolve(path or ".")
        if not base.is_dir():
            raise ToolError(f"{path!r} is not a directory")
        out: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            skipped = sorted(d for d in dirnames if d in SKIP_DIRS and d != ".git")
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            here = Path(dirpath)
            out += [self._rel(here / d) + "/ (skipped)" for d in skipped]
            out += [self._rel(here / f) for f in sorted(filenames)]
            if len(out) > MAX_LIST:
                return "\n".join(out[:MAX_LIST]) + f"\n[... more than {MAX_LIST} entries: list a subdirectory ...]"
        return "\n".join(out) if out else f"{self._rel(base)} is empty"

    def search(self, pattern: str, path: str = ".") -> str:
        """Regular-expression search: ripgrep when present, else Python."""
        base = self.resolve(path or ".")
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolError(f"search: bad regular expression {pattern!r}: {exc}") from None
        if self.rg:
            proc = subprocess.run([self.rg, "--line-number", "--no-heading", "--color", "never", "--max-count", "50",
                                   "-e", pattern, "--", str(base)], cwd=self.root, capture_output=True, text=True,
                                  errors="replace", timeout=60)
            if proc.returncode > 1:
                raise ToolError(f"search failed: {proc.stderr.strip()[:500]}")
            lines = [ln.replace(str(self.root) + os.sep, "", 1) for ln in proc.stdout.splitlines()]
        else:
            lines = self._py_search(regex, base)
        if not lines:
            return f"no match for {pattern!r}"
        more = f"\n[... {len(lines) - MAX_MATCHES} more matches ...]" if len(lines) > MAX_MATCHES else ""
        return "\n".join(ln[:300] for ln in lines[:MAX_MATCHES]) + more

    def _py_search(self, regex: re.Pattern, base: Path) -> list[str]:
        files = [base] if base.is_file() else (
            Path(d) / f for d, dirs, fs in os.walk(base) if not dirs.__setitem__(
                slice(None), sorted(x for x in dirs if x not in SKIP_DIRS)) for f in sorted(fs))
        out: list[str] = []
        for f in files:
            try:
                if f.is_symlink() or f.stat().st_size > SEARCH_FILE_CAP:
                    continue
                data = f.read_bytes()
            except OSError:
                continue
            if b"\0" in data[:8192]:
                continue
            for no, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
                if regex.search(line):
                    out.append(f"{self._rel(f)}:{no}:{line}")
                    if len(out) > MAX_MATCHES:
                        return out
        return out

    # -- shell ---------------------------------------------------------------------------------

    def run(self, command: str, timeout_s: int | None = None, time_left_s: float | None = None) -> str:
        """Run a shell command in the repository root with a time limit; capped output."""
        if not command.strip():
            raise ToolError("run: command is empty")
        limit = float(timeout_s) if timeout_s and timeout_s > 0 else self.run_timeout_s
        limit = min(limit, self.run_max_timeout_s)
        if time_left_s is not None:
            limit = max(1.0, min(limit, time_left_s))
        res = run_capped(command, cwd=str(self.root), timeout_s=limit, env=self.run_env, cap_bytes=self.output_cap)
        head = (f"timed out after {limit:g}s (process group killed)" if res.timed_out
                else f"exit code {res.exit_code}")
        if res.dropped_bytes:
            head += f"; output {res.total_bytes} bytes, middle {res.dropped_bytes} bytes cut"
        return f"{head}\n{res.output}"
