"""The gate's checks as the runner runs them on its own branch (presubmit), and the rules both sides share.

Standard library only: this module runs inside sandboxes. Which commands run is decided by
`plan_commands` for presubmit here and for the merge queue's gate alike: the usual commands with
`{files}` replaced by the changed files, or the full commands when a config, lock or shared file
changed. A command that cannot run at all (exit 127: the tool is missing) makes the check
unavailable rather than failed, so a machine without the toolchain never bounces every branch.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentswarm.agent.contract import GATE_SLOT_PATH, SLOT_HEADER, PresubmitSpec

OUTPUT_TAIL = 6000  # characters of a failing check's output kept for the agent and the record
FILES = "{files}"
TSCONFIG = "{tsconfig}"
TESTS = "{tests}"
QUARANTINED = "{quarantined}"  # the gate's flags leaving quarantined flaky tests out (see lifecycle.flaky)
TEST_FILE = re.compile(r"\.(?:test|spec)\.[cm]?[jt]sx?$")
NARROWED_TSCONFIG = "agentswarm-presubmit.tsconfig.json"  # written under .git/: never part of the work
TS_SOURCE = re.compile(r"\.(?:ts|tsx|mts|cts)$")
NOT_FOUND = 127
PRESUBMIT_FAILED = "Error: presubmit failed"
CHECK_ENV = {"CI": "true", "NO_COLOR": "1", "FORCE_COLOR": "0"}  # plain output: read by people and by failing_tests
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # the start of the tool result an agent sees when its branch fails
_VITEST_FAIL = re.compile(r"^\s*(?:FAIL|×|✗)\s+(\S+\.(?:test|spec)\.[cm]?[jt]sx?)(?:\s+>\s+(.+?))?\s*$", re.M)


def needs_full(changed: list[str], full_paths: list[str]) -> bool:
    """True when a changed path matches a full-suite pattern (by whole path or by file name)."""
    return any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p.rsplit("/", 1)[-1], pat)
               for p in changed for pat in full_paths)


def plan_commands(commands: list[str], full_commands: list[str], full_paths: list[str], files: list[str],
                  *, force_full: bool = False, quarantined: str = "") -> tuple[list[str], bool]:
    """The shell commands to run for these changed files, and whether they are the full ones.

    `quarantined` replaces `{quarantined}` (the flags that leave quarantined tests out; "" for none).
    """
    if full_commands and (force_full or needs_full(files, full_paths)):
        return [c.replace(QUARANTINED, quarantined) for c in full_commands], True
    quoted = " ".join(shlex.quote(f) for f in files)
    return [c.replace(FILES, quoted).replace(QUARANTINED, quarantined) for c in commands], False


def failing_tests(output: str) -> list[str]:
    """The failing test names ("file > suite > test", or the file) vitest printed, in order, once each."""
    seen: list[str] = []
    for m in _VITEST_FAIL.finditer(_ANSI.sub("", output)):
        name = m.group(1) + (f" > {m.group(2)}" if m.group(2) else "")
        if name not in seen:
            seen.append(name)
    return seen


@dataclass
class CommandRun:
    command: str
    exit_code: int
    duration_s: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclass
class CheckRun:
    """One run of the checks on one tree: ok, failed, or unavailable (a tool is missing)."""

    tree: str
    full: bool
    commands: list[CommandRun] = field(default_factory=list)
    output: str = ""  # the failing command's output tail ("" when everything passed)
    seconds: float = 0.0

    @property
    def unavailable(self) -> bool:
        return any(c.exit_code == NOT_FOUND for c in self.commands)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.commands)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ok=self.ok, unavailable=self.unavailable)
        return data

    def feedback(self) -> str:
        """What the agent is told when its branch fails."""
        failed = next((c for c in self.commands if not c.ok), None)
        why = "timed out" if failed and failed.timed_out else f"exit {failed.exit_code}" if failed else "failed"
        return (f"{PRESUBMIT_FAILED}: `{failed.command if failed else '?'}` ({why}). Your branch must pass the "
                "gate's checks before it can land; fix the cause (do not weaken types or delete tests) and "
                f"call finish again.\n\n{self.output}")


@contextmanager
def gate_slot(socket_path: str, token: str, wait_s: float) -> Iterator[bool]:
    """Hold a presubmit slot from the orchestrator's gate while the block runs (True if one was granted).

    The gate answers when a slot is free and frees it when this connection closes. Without an
    answer (no gate, an error, a refusal) the checks run anyway: the slot paces, it does not guard.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    granted = False
    try:
        sock.settimeout(wait_s)
        sock.connect(socket_path)
        sock.sendall(f"POST {GATE_SLOT_PATH} HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Length: 0\r\n\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        head = reply.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
        granted = head.startswith("http/1.1 200") and f"\r\n{SLOT_HEADER.lower()}: granted" in head
    except OSError:
        granted = False
    try:
        yield granted
    finally:
        sock.close()


class Presubmit:
    """Runs the checks on the working tree of a checkout (uncommitted changes included), once per tree."""

    def __init__(self, repo: Path, base: str, spec: PresubmitSpec, env: dict[str, str] | None = None,
                 slot: Callable[[], AbstractContextManager[bool]] | None = None) -> None:
        self.repo, self.base, self.spec, self.slot = repo, base, spec, slot
        self.env = env if env is not None else dict(os.environ)
        self.runs: list[CheckRun] = []
        self._installed = False

    @property
    def enabled(self) -> bool:
        return bool(self.spec.commands or self.spec.full_commands)

    def _git(self, *args: str, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run(["git", *args], cwd=self.repo, capture_output=True, text=True, timeout=120,
                              env={**os.environ, **(env or {})})
        if proc.returncode != 0:
            raise RuntimeError(f"git {args[0]}: {proc.stderr.strip()[:300]}")
        return proc.stdout

    def tree_and_files(self) -> tuple[str, list[str]]:
        """The tree of the working directory (through a scratch index) and the files changed since base."""
        with tempfile.TemporaryDirectory(prefix="presubmit-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self._git("read-tree", "HEAD", env=env)
            self._git("add", "-A", ".", env=env)
            tree = self._git("write-tree", env=env).strip()
            names = self._git("diff", "--cached", "--name-only", "--no-renames", "--diff-filter=d", "-z",
                              self.base, env=env)
        return tree, sorted(n for n in names.split("\0") if n)

    def _narrow_tsconfig(self, commands: list[str], files: list[str]) -> list[str]:
        """Replace {tsconfig} by the project's tsconfig.json narrowed to the changed TypeScript sources.

        tsc then checks those files and everything they import, not the whole program: the merge
        queue's gate runs the whole program. Test files are left to the gate too: importing the
        test framework's types costs tsc about a CPU-second, most of a presubmit's type check. With
        no source change (or no tsconfig.json) the command is dropped.
        """
        if not any(TSCONFIG in c for c in commands):
            return commands
        sources = [f for f in files if TS_SOURCE.search(f) and not f.endswith(".d.ts") and not TEST_FILE.search(f)]
        if not sources or not (self.repo / "tsconfig.json").is_file():
            return [c for c in commands if TSCONFIG not in c]
        path = self.repo / ".git" / NARROWED_TSCONFIG
        path.write_text(json.dumps({"extends": "../tsconfig.json", "include": [f"../{f}" for f in sources]}))
        return [c.replace(TSCONFIG, shlex.quote(str(path))) for c in commands]

    def _own_tests(self, commands: list[str], files: list[str]) -> list[str]:
        """Replace {tests} by the branch's own tests: changed test files, and the sibling test of a changed source.

        Cheaper than `vitest related` (which reads every test file to find importers); the merge
        queue's gate runs the related tests. With no such test the command is dropped.
        """
        if not any(TESTS in c for c in commands):
            return commands
        tests = {f for f in files if TEST_FILE.search(f)}
        for f in files:
            stem, dot, ext = f.rpartition(".")
            if dot and not TEST_FILE.search(f) and TS_SOURCE.search(f):
                tests |= {t for t in (f"{stem}.test.{ext}", f"{stem}.spec.{ext}") if (self.repo / t).is_file()}
        if not tests:
            return [c for c in commands if TESTS not in c]
        quoted = " ".join(shlex.quote(t) for t in sorted(tests))
        return [c.replace(TESTS, quoted) for c in commands]

    def _install(self) -> None:
        if self._installed or not self.spec.install or (self.repo / "node_modules").exists():
            return
        self._installed = True
        subprocess.run(["sh", "-c", self.spec.install], cwd=self.repo, env=self.env, capture_output=True,
                       timeout=self.spec.timeout_s)

    def check(self) -> CheckRun:
        """Run the checks on the current tree (a tree already checked gives its earlier run)."""
        tree, files = self.tree_and_files()
        for done in self.runs:
            if done.tree == tree:
                return done
        commands, full = plan_commands(self.spec.commands, self.spec.full_commands, self.spec.full_paths, files)
        commands = self._own_tests(self._narrow_tsconfig(commands, files), files)
        run = CheckRun(tree=tree, full=full)
        with self.slot() if self.slot else nullcontext(False):
            self._run(run, commands)
        self.runs.append(run)
        return run

    def _run(self, run: CheckRun, commands: list[str]) -> None:
        started = time.monotonic()
        try:
            self._install()
        except subprocess.TimeoutExpired:
            pass  # the commands then say what is missing
        for command in commands:
            left = self.spec.timeout_s - (time.monotonic() - started)
            t0 = time.monotonic()
            try:
                proc = subprocess.run(["sh", "-c", command], cwd=self.repo, env=self.env, capture_output=True,
                                      text=True, errors="replace", timeout=max(1.0, left))
                code, out, timed_out = proc.returncode, proc.stdout + proc.stderr, False
            except subprocess.TimeoutExpired as exc:
                code, timed_out = -1, True
                out = _text(exc.stdout) + _text(exc.stderr) + f"\n[timed out after {left:.0f}s]"
            run.commands.append(CommandRun(command, code, round(time.monotonic() - t0, 2), timed_out))
            if code != 0 or timed_out:
                run.output = f"$ {command}\n{out.strip()}"[-OUTPUT_TAIL:]
                break
        run.seconds = round(time.monotonic() - started, 2)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
