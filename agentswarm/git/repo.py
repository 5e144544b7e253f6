"""The orchestrator's git layer: GitPython repository handles whose every git call is confined.

Invariants (every git process the orchestrator starts goes through `SafeGit`: `call` runs a
command to completion, `execute` is GitPython's entry and builds on it):
- An allow-listed environment, never `os.environ`: DATABASE_URL, REDIS_URL, LLM_API_KEY,
  GIT_TOKEN and the like never reach git, a hook, an alias or a credential helper.
- Hooks are off: `core.hooksPath=/dev/null` at command-line precedence (GIT_CONFIG_COUNT),
  so a hook planted in the hub (reference-transaction, post-update, ...) never runs on the
  orchestrator's behalf; pushes from agents still meet the hub's own pre-receive hook. The
  setting outranks system, global and repository config (including a hooksPath planted in the
  hub's config); only an explicit `-c` in a call's own argument list could override it.
- Explicit location: a handle's calls carry GIT_DIR (and GIT_WORK_TREE when not bare), and
  `open_repo` never searches parent directories, so a path that is not itself a repository is
  refused instead of resolving to an enclosing one.
- One error type: `GitError` (a failed command raises `GitCommandFailed`, which is both a
  GitError and GitPython's GitCommandError); `GitVersionError` for a missing or old git.
- Handles are cached per absolute path and safe to share between threads (`execute` keeps
  no per-call state on the instance; GitPython's `git(...)` option form is not used).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

# GitPython probes for git when imported and raises ImportError without it; our own check
# (`require_git`) says what to install in one line instead.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

from git import Repo  # noqa: E402
from git.cmd import Git  # noqa: E402
from git.db import GitCmdObjectDB  # noqa: E402
from git.exc import GitCommandError, InvalidGitRepositoryError, NoSuchPathError  # noqa: E402

from agentswarm.errors import SwarmError  # noqa: E402

MIN_GIT_VERSION = (2, 38)  # `git merge-tree --write-tree`
ZERO_SHA = "0" * 40
# /dev/null rather than an empty 0700 directory: it exists on every POSIX system, needs no
# creation or cleanup, and nothing can ever be planted in it (`/dev/null/<hook>` is ENOTDIR,
# which git treats as "no such hook"), whereas a directory could later be written into.
HOOKS_PATH = os.devnull
# What git may inherit: finding programs and the home config, ssh/https transport to a remote
# hub (agent socket, ssh command, proxies, CA bundles). Nothing else, in particular no secrets
# and no GIT_DIR-like variables pointing at another repository.
PASS_ENV = ("PATH", "HOME", "TMPDIR", "TZ", "USER", "LOGNAME", "SSH_AUTH_SOCK", "GIT_SSH", "GIT_SSH_COMMAND",
            "GIT_SSH_VARIANT", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy",
            "https_proxy", "no_proxy", "all_proxy", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH", "SSL_CERT_FILE",
            "SSL_CERT_DIR", "CURL_CA_BUNDLE")
_FIXED_ENV = {"LC_ALL": "C", "LANGUAGE": "C", "GIT_TERMINAL_PROMPT": "0",
              "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.hooksPath", "GIT_CONFIG_VALUE_0": HOOKS_PATH}


class GitError(SwarmError):
    """A git command failed unexpectedly, or a path is not a usable repository."""


class GitVersionError(GitError):
    """git is missing, or older than MIN_GIT_VERSION."""


class GitCommandFailed(GitError, GitCommandError):
    """A command run with exceptions on exited non-zero (GitPython code catching GitCommandError sees it too)."""


class GitResult(NamedTuple):
    """One finished command: exit status, raw stdout, stderr as text."""

    returncode: int
    stdout: bytes
    stderr: str


def git_env(extra: Mapping[str, str] | None = None, location: Mapping[str, str] | None = None,
            config: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of one git call: allow-listed variables, caller extras, then the fixed safety settings.

    `config`: settings at command-line precedence after `core.hooksPath` (GIT_CONFIG_KEY_1...), for values
    that must stay out of argv and the repository's config file (a token's header).
    """
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    if extra:
        env.update(extra)
    env.update(_FIXED_ENV)
    for i, (key, value) in enumerate((config or {}).items(), start=1):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
        env["GIT_CONFIG_COUNT"] = str(i + 1)
    if location:
        env.update(location)
    return env


class SafeGit(Git):
    """`git.cmd.Git` whose `execute` runs with `git_env` and an explicit repository location.

    Supports what the layer uses of GitPython's execute: with_extended_output, with_exceptions,
    stdout_as_string, istream (bytes, a file or PIPE), env extras, strip_newline_in_stdout,
    kill_after_timeout, with_stdout and as_process. Shell strings, output streams and
    universal_newlines are refused.
    """

    def __init__(self, working_dir: str | os.PathLike[str] | None = None, *,
                 git_dir: str | os.PathLike[str] | None = None, work_tree: str | os.PathLike[str] | None = None):
        super().__init__(working_dir)
        self._location: dict[str, str] = {}
        if git_dir is not None:
            self._location["GIT_DIR"] = os.fspath(git_dir)
            if work_tree is not None:
                self._location["GIT_WORK_TREE"] = os.fspath(work_tree)
        else:  # no repository of ours: never discover one above the working directory either
            self._location["GIT_CEILING_DIRECTORIES"] = os.fspath(working_dir or os.sep)
        self._cwd = os.fspath(work_tree or git_dir or working_dir or os.sep)

    def execute(self, command: str | Sequence[Any], istream: Any = None, with_extended_output: bool = False,
                with_exceptions: bool = True, as_process: bool = False, output_stream: Any = None,
                stdout_as_string: bool = True, kill_after_timeout: float | None = None, with_stdout: bool = True,
                universal_newlines: bool = False, shell: bool | None = None, env: Mapping[str, str] | None = None,
                max_chunk_size: int = 0, strip_newline_in_stdout: bool = True, **subprocess_kwargs: Any) -> Any:
        if isinstance(command, str | bytes) or shell or output_stream is not None or universal_newlines \
                or subprocess_kwargs:
            raise GitError("the git layer runs argument lists only, without shell, output_stream, "
                           f"universal_newlines or extra Popen options: {command!r}")
        argv = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in command]
        if as_process:
            stdin = subprocess.DEVNULL if istream is None else istream
            proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE if with_stdout else subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=git_env(env, self._location), cwd=self._cwd)
            return self.AutoInterrupt(proc, argv)
        if istream is not None and not isinstance(istream, bytes | bytearray):
            istream = istream.read()  # a file GitPython hands over: git reads it whole anyway
        result = self.call(argv, input=istream, env=env, timeout=kill_after_timeout, with_stdout=with_stdout,
                           strip_newline=strip_newline_in_stdout)
        if with_exceptions and result.returncode != 0:
            raise GitCommandFailed(argv, result.returncode, result.stderr, result.stdout)
        stdout_value: str | bytes = result.stdout.decode("utf-8", "replace") if stdout_as_string else result.stdout
        if with_extended_output:
            return result.returncode, stdout_value, result.stderr
        return stdout_value

    def call(self, argv: list[str], *, input: bytes | None = None, env: Mapping[str, str] | None = None,
             timeout: float | None = None, with_stdout: bool = True, strip_newline: bool = False,
             config: Mapping[str, str] | None = None) -> GitResult:
        """Run one git argument list here with the layer's environment; never raises for a non-zero exit."""
        try:
            done = subprocess.run(argv, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                                  stdout=subprocess.PIPE if with_stdout else subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=git_env(env, self._location, config),
                                  cwd=self._cwd, timeout=timeout)
            status, out, err = done.returncode, done.stdout or b"", done.stderr
        except FileNotFoundError as exc:
            raise GitVersionError(f"cannot run {argv[0]!r} in {self._cwd}: {exc}") from exc
        except subprocess.TimeoutExpired as exc:  # the child was killed; GitPython reports it the same way
            status, out = -9, exc.stdout or b""
            err = f"Timeout: the command {' '.join(argv)!r} did not complete in {timeout:g} secs.".encode()
        if strip_newline and out.endswith(b"\n"):
            out = out[:-1]
        return GitResult(status, out, err.decode("utf-8", "replace").removesuffix("\n"))

    def popen(self, argv: list[str], *, env: Mapping[str, str] | None = None,
              config: Mapping[str, str] | None = None, stderr: Any = subprocess.PIPE) -> subprocess.Popen[bytes]:
        """Start one git argument list here with the layer's environment, stdin and stdout piped (a server's
        streaming child, e.g. upload-pack); the caller writes, reads and waits."""
        try:
            return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                    env=git_env(env, self._location, config), cwd=self._cwd)
        except FileNotFoundError as exc:
            raise GitVersionError(f"cannot run {argv[0]!r} in {self._cwd}: {exc}") from exc


class SwarmRepo(Repo):
    """A `git.Repo` opened at exactly one path (no parent search), with a SafeGit bound to its location."""

    GitCommandWrapperType = SafeGit

    def __init__(self, path: str):
        super().__init__(path, search_parent_directories=False)
        # Recompute what GitPython may have taken from GIT_WORK_TREE / GIT_COMMON_DIR /
        # GIT_OBJECT_DIRECTORY in os.environ: the handle depends on the path alone.
        common = Path(self.git_dir, "commondir")
        self._common_dir = os.path.join(self.git_dir, common.read_text().strip()) if common.is_file() else ""
        if self._bare:
            self._working_tree_dir = None
        elif os.path.exists(os.path.join(path, ".git")):
            self._working_tree_dir = path
        else:
            self._working_tree_dir = os.path.dirname(self.git_dir)
        self.working_dir = self._working_tree_dir or self.common_dir
        self.safe_git = SafeGit(self.working_dir, git_dir=self.git_dir, work_tree=self._working_tree_dir)
        self.git = self.safe_git
        self.odb = GitCmdObjectDB(os.path.join(self.common_dir, "objects"), self.git)

    def run(self, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None,
            config: Mapping[str, str] | None = None, timeout: float | None = None) -> GitResult:
        """Run one git command (an argument list, no kwargs transforms); the caller reads the status."""
        return self.safe_git.call(["git", *args], input=input, env=env, config=config, timeout=timeout)

    def out(self, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None) -> str:
        """Run one git command that must succeed; its stripped stdout."""
        proc = self.run(*args, input=input, env=env)
        if proc.returncode != 0:
            raise GitError(f"git {' '.join(args[:2])} failed ({proc.returncode}) in {self.git_dir}: "
                           f"{proc.stderr.strip()}")
        return proc.stdout.decode().strip()


GitRepo = SwarmRepo  # the name callers used before the layer moved to GitPython
_unbound = SafeGit()  # for commands that create a repository (init, clone) or need none (version)


def run_git(*args: str, cwd: str | os.PathLike[str] | None = None) -> GitResult:
    """A git command outside any repository handle (init, clone, version): same environment and hooks rules."""
    git = SafeGit(cwd) if cwd is not None else _unbound
    return git.call(["git", *args])


@functools.cache
def git_version() -> tuple[int, int, int]:
    """The installed git's version, e.g. (2, 39, 5)."""
    out = run_git("version").stdout.decode(errors="replace")
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    if not match:
        raise GitVersionError(f"cannot parse the output of `git version`: {out.strip()!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


@functools.cache
def require_git() -> tuple[int, int, int]:
    """Raise GitVersionError unless git >= 2.38 is installed; checked once per process."""
    version = git_version()
    if version[:2] < MIN_GIT_VERSION:
        have = ".".join(map(str, version))
        raise GitVersionError(f"git {have} is too old: the merge queue needs git >= 2.38 "
                              "(`git merge-tree --write-tree`)")
    return version


@functools.lru_cache(maxsize=64)
def _open(path: str) -> SwarmRepo:
    if not os.path.isdir(path):
        raise GitError(f"{path}: no such directory")
    try:
        return SwarmRepo(path)
    except (InvalidGitRepositoryError, NoSuchPathError) as exc:
        raise GitError(f"{path} is not a git repository") from exc


_open_lock = threading.Lock()


def open_repo(repo_path: str | os.PathLike[str] | SwarmRepo) -> SwarmRepo:
    """The repository at exactly repo_path (bare, or a clone's top level); GitError if there is none."""
    if isinstance(repo_path, SwarmRepo):
        return repo_path
    key = os.path.abspath(repo_path)
    with _open_lock:  # one handle per path even when many threads ask at once
        return _open(key)  # lru_cache keeps successes only


def init_bare(path: str | os.PathLike[str], initial_branch: str = "main") -> Path:
    """Create an empty bare repository at path (for hubs, tests and benchmarks)."""
    path = Path(path).resolve()
    proc = run_git("init", "--bare", "--quiet", f"--initial-branch={initial_branch}", str(path))
    if proc.returncode != 0:
        raise GitError(f"git init {path} failed: {proc.stderr.strip()}")
    return path
