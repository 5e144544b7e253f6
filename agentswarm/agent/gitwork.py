"""Git inside the sandbox, through the git CLI: clone, branch from the base, commit, push, and measure.

Standard library only (GitPython is not in the slim image). A GIT_TOKEN is handed to git through an
askpass script that reads it from the environment, so it is never written to .git/config or argv.
Every git process is CPU on the swarm's busiest path, so an attempt starts as few as it can: the
config is written as a file, the checkout is one command, and a commit, its sha and its history are
read with one `rev-list --parents` (which also tells whether the base is still an ancestor).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from agentswarm.agent.contract import GitMeasure
from agentswarm.scrubbing import scrub, secrets_from_env

COMMITTER_NAME = "AgentSwarm Worker"
COMMITTER_EMAIL = "worker@agentswarm.local"
ASKPASS_SCRIPT = """#!/bin/sh
case "$1" in
  Username*|username*) echo "x-access-token" ;;
  *) printf '%s\\n' "$GIT_TOKEN" ;;
esac
"""
# Settings every runner git command uses: no hooks planted by the agent, no credential store, no signing,
# no automatic gc (the repository is thrown away with the sandbox).
# (git drops these variables for a local push's receive-pack, so the hub's own hooks still run.)
_CONFIG = {"core.hooksPath": "/dev/null", "core.fsmonitor": "false", "credential.helper": "",
           "commit.gpgSign": "false", "maintenance.auto": "false", "gc.auto": "0"}
_FULL_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
CLONE_ATTEMPTS = 3  # a failed clone is retried within the attempt, from scratch


class GitError(Exception):
    """A git command failed; the message carries its (scrubbed) stderr."""


def write_askpass(directory: str | Path) -> Path:
    """Write the askpass script (which holds no secret) into `directory`; returns its path."""
    path = Path(directory) / "git-askpass.sh"
    path.write_text(ASKPASS_SCRIPT)
    path.chmod(stat.S_IRWXU)
    return path


class Git:
    """Runs git in one repository with a fixed, secret-free configuration and a timeout."""

    def __init__(self, repo: str | Path, *, token: str | None = None, scratch: str | Path | None = None,
                 timeout_s: float = 300.0) -> None:
        self.repo = Path(repo)
        self.timeout_s = timeout_s
        self._secrets = ([token] if token else []) + secrets_from_env()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", LC_ALL="C",
                   GIT_CONFIG_COUNT=str(len(_CONFIG)))
        for i, (key, value) in enumerate(_CONFIG.items()):
            env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
        if token:
            scratch_dir = Path(scratch) if scratch else Path(tempfile.mkdtemp(prefix="agentswarm-git-"))
            env.update(GIT_TOKEN=token, GIT_ASKPASS=str(write_askpass(scratch_dir)))
        self.env = env

    def __call__(self, *args: str, check: bool = True, timeout_s: float | None = None,
                 cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run `git <args>`; GitError (scrubbed) on a non-zero exit when `check`."""
        try:
            proc = subprocess.run(["git", *args], cwd=cwd or self.repo, env=self.env, capture_output=True,
                                  text=True, errors="replace", timeout=timeout_s or self.timeout_s,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise GitError(f"git {self._show(args)}: no answer within {timeout_s or self.timeout_s:g}s") from None
        if check and proc.returncode != 0:
            raise GitError(f"git {self._show(args)} failed (exit {proc.returncode}): "
                           f"{scrub(proc.stderr.strip(), self._secrets)[-1500:]}")
        return proc

    def raw(self, *args: str, input: bytes = b"") -> bytes:
        """Stdout of `git <args>` as bytes (paths exactly as git wrote them), stdin from `input`; GitError on failure."""
        try:
            proc = subprocess.run(["git", *args], cwd=self.repo, env=self.env, input=input, capture_output=True,
                                  timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise GitError(f"git {self._show(args)}: no answer within {self.timeout_s:g}s") from None
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise GitError(f"git {self._show(args)} failed (exit {proc.returncode}): {scrub(err, self._secrets)[-1500:]}")
        return proc.stdout

    def out(self, *args: str, timeout_s: float | None = None) -> str:
        """Stdout of `git <args>`, stripped."""
        return self(*args, timeout_s=timeout_s).stdout.strip()

    def _show(self, args: tuple[str, ...]) -> str:
        return scrub(" ".join(args), self._secrets)[:300]

    # -- the runner's steps --------------------------------------------------------------------

    def clone(self, url: str, *, attempts: int = CLONE_ATTEMPTS, pause_s: float = 0.5) -> None:
        """Clone `url` into the repository directory (which must not exist or be empty), retried from scratch.

        A hub on this machine is cloned with `--no-local`, through upload-pack, never by copying or
        hard-linking its object directory: that copy races with pushes landing in the hub (git's
        `tmp_objdir-incoming-*` quarantine appears and vanishes under it).
        """
        self.repo.parent.mkdir(parents=True, exist_ok=True)
        local = "://" not in url and ":" not in url.split("/", 1)[0] and not Path(url).is_file()  # a path, not scp-style
        args = ["clone", "--no-checkout", "--quiet", *(["--no-local"] if local else []), url, str(self.repo)]
        for attempt in range(1, attempts + 1):
            try:
                self(*args, cwd=self.repo.parent)
                return
            except GitError:
                if attempt == attempts:
                    raise
                shutil.rmtree(self.repo, ignore_errors=True)
                time.sleep(pause_s * attempt)

    def configure_identity(self) -> None:
        """The committer every runner commit carries."""
        self("config", "user.name", COMMITTER_NAME)
        self("config", "user.email", COMMITTER_EMAIL)

    def reset_config(self, url: str) -> None:
        """Rewrite .git/config from scratch (origin and the committer), dropping anything the agent planted there.

        Written as a file, not with `git config` (four processes fewer); replaced, never written through a link.
        """
        write_config(self.repo / ".git", url)

    def has_commit(self, sha: str) -> bool:
        """True if `sha` names a commit in this repository."""
        return self("cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode == 0

    def checkout_branch(self, branch: str, base_sha: str) -> str:
        """Create (or reset) `branch` at `base_sha` and check it out; returns the full base sha.

        A full sha already in the repository (the usual case) costs one git process.
        """
        if _FULL_SHA.match(base_sha) and self("checkout", "--quiet", "--force", "-B", branch, f"{base_sha}^{{commit}}",
                                              check=False).returncode == 0:
            return base_sha
        if not self.has_commit(base_sha):
            self("fetch", "--quiet", "origin", base_sha, check=False)
        if not self.has_commit(base_sha):
            raise GitError(f"base commit {base_sha} is not in the repository")
        full = self.out("rev-parse", f"{base_sha}^{{commit}}")
        self("checkout", "--quiet", "--force", "-B", branch, full)
        return full

    def dirty(self) -> bool:
        """True if the working tree has changes (including untracked files not ignored)."""
        return bool(self.out("status", "--porcelain", "--untracked-files=all"))

    def commit_all(self, message: str, *, read_head: bool = True) -> str | None:
        """Stage everything and commit it; the new sha (with read_head=False: "HEAD", the sha left to `history`),
        or None if there was nothing to commit.

        Only the paths `git status` reports are staged. A plain `add --all` re-adds every file checked
        out in the same second as the index was written (git cannot trust their stat data), and each
        re-add of an object the hub already has writes a private copy of it, because the hub's objects
        are read-only here (git's freshening of the existing object fails): the whole tree compressed
        again at every fast attempt.
        """
        listed = self.raw("status", "--porcelain", "-z", "--untracked-files=all", "--no-renames")
        paths = [entry[3:] for entry in listed.split(b"\0") if len(entry) > 3]
        if not paths:
            return None
        self.raw("--literal-pathspecs", "add", "--all", "--pathspec-from-file=-", "--pathspec-file-nul",
                 input=b"\0".join(paths) + b"\0")
        done = self("commit", "--quiet", "--no-verify", "-m", message, check=False)
        if done.returncode == 0:
            return self.out("rev-parse", "HEAD") if read_head else "HEAD"
        if self("diff", "--cached", "--quiet", check=False).returncode == 0:
            return None  # nothing staged: git commit refused an empty commit
        raise GitError(f"git commit failed (exit {done.returncode}): "
                       f"{scrub((done.stderr or done.stdout).strip(), self._secrets)[-1500:]}")

    def is_ancestor(self, older: str, newer: str) -> bool:
        """True if `older` is an ancestor of (or equal to) `newer`."""
        return self("merge-base", "--is-ancestor", older, newer, check=False).returncode == 0

    def commits_since(self, base: str, head: str) -> list[str] | None:
        """The commits of base..head, oldest first; None if `base` (a full sha) is not an ancestor of head."""
        return descendants(self.out("rev-list", "--reverse", "--parents", f"{base}..{head}"), base, head)

    def history(self, base: str) -> tuple[list[str] | None, str]:
        """(commits of base..HEAD oldest first, or None if `base` is not an ancestor of HEAD; HEAD's full sha).

        One git process when HEAD is past the base: HEAD is the listed commit no other listed commit has as
        a parent (each of the others has a child on its path from HEAD); `rev-parse` only when none is listed.
        """
        listed = self.out("rev-list", "--reverse", "--parents", f"{base}..HEAD")
        rows = [line.split() for line in listed.splitlines() if line.strip()]
        parents = {p for row in rows for p in row[1:]}
        tips = [row[0] for row in rows if row[0] not in parents]
        head = tips[0] if len(tips) == 1 else self.out("rev-parse", "HEAD")
        return descendants(listed, base, head), head

    def measure(self, base: str, head: str | None = None, commits: list[str] | None = None, *,
                numstat: bool = True) -> GitMeasure:
        """Commits, head, files and line counts of base..head (default HEAD), from git itself.

        numstat=False leaves files and lines out (one git process fewer): for a bundle the orchestrator
        measures what it takes in, and replaces every measured field.
        """
        head = head or self.out("rev-parse", "HEAD")
        if commits is None:
            commits = self.out("rev-list", "--reverse", f"{base}..{head}").split()
        raw = self("diff", "--numstat", "-z", "--no-renames", base, head).stdout if commits and numstat else ""
        return GitMeasure.from_numstat(commits, head, raw)

    def push_branch(self, branch: str) -> str:
        """Push HEAD to origin's `branch` only; a rejected non-fast-forward is retried once with a lease."""
        ref = f"refs/heads/{branch}"
        first = self("push", "--quiet", "--no-verify", "origin", f"HEAD:{ref}", check=False)
        if first.returncode == 0:
            return "pushed"
        err = first.stderr
        if not re.search(r"non-fast-forward|fetch first|stale info", err):
            raise GitError(f"git push failed (exit {first.returncode}): {scrub(err.strip(), self._secrets)[-1500:]}")
        # An earlier attempt of this task left the branch: replace it, and only if it is still what we saw.
        listed = self.out("ls-remote", "origin", ref).split()
        expect = listed[0] if listed else ""
        self("push", "--quiet", "--no-verify", f"--force-with-lease={ref}:{expect}", "origin", f"HEAD:{ref}")
        return "force-pushed over an earlier attempt"


def descendants(rev_list_parents: str, base: str, head: str) -> list[str] | None:
    """Commits from `rev-list --reverse --parents base..head` output; None unless base is an ancestor of head.

    base is an ancestor of head exactly when head is base or some listed commit has base as a parent
    (the commit after base on any path from head to it is reachable from head and not from base).
    """
    rows = [line.split() for line in rev_list_parents.splitlines() if line.strip()]
    if head != base and not any(base in row[1:] for row in rows):
        return None
    return [row[0] for row in rows]


def _config_value(value: str) -> str:
    """A value for a git config file, quoted so that nothing in it can start a new key or section."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def write_config(git_dir: Path, url: str) -> None:
    """.git/config from scratch: a plain repository, origin at url, the runner's committer; atomically replaced."""
    text = ("[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n"
            f'[remote "origin"]\n\turl = {_config_value(url)}\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n'
            f"[user]\n\tname = {COMMITTER_NAME}\n\temail = {COMMITTER_EMAIL}\n")
    tmp = git_dir / f".config.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    with open(tmp, "x") as f:
        f.write(text)
    os.replace(tmp, git_dir / "config")
