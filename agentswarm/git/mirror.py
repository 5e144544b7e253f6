"""A gate worker's local copy of the hub: commits fetched by sha from the hub served over HTTP (`git.serve`).

`fetch_shas(url, token, mirror, shas)` makes `mirror` a bare repository if it is none yet and fetches
the commits it lacks. Each fetched sha gets a ref, `refs/fetched/<sha>`, so that no gc in the mirror
drops a dangling commit before the worker is done with it (the worker deletes the refs it no longer needs).

Invariants:
- The token travels in an `Authorization: Bearer` header given to git through the environment
  (GIT_CONFIG_KEY_n, http.extraHeader): never in argv, the mirror's config, a URL or an error message.
- Only http(s) URLs without credentials in them; shas are full hex ids (no option can be smuggled in).
- git runs through the layer (allow-listed environment, hooks off) with no credential helper, no
  redirects, no protocol but http(s), no automatic gc, and no prompt.
- Callers in several threads or processes may fetch into one mirror at once: a file lock beside it
  (`<mirror>.lock`) serialises creation and fetches; what another caller fetched meanwhile is not fetched twice.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from agentswarm.git.repo import GitError, SwarmRepo, init_bare, open_repo
from agentswarm.scrubbing import scrub

FETCHED_PREFIX = "refs/fetched/"
FETCH_TIMEOUT_S = 600.0
_FULL_SHA = re.compile(r"(?:[0-9a-f]{40}|[0-9a-f]{64})")
# What every fetch from a served hub runs with (at command-line precedence, after core.hooksPath).
SAFE_FETCH_CONFIG = {
    "credential.helper": "", "core.askPass": "",  # no helper or program is asked for, or told, anything
    "protocol.allow": "never", "protocol.http.allow": "always", "protocol.https.allow": "always",
    "http.followRedirects": "false",  # the header goes to the host named, nowhere else
    "gc.auto": "0", "maintenance.auto": "false", "fetch.writeCommitGraph": "false",
    "core.fsmonitor": "false", "submodule.recurse": "false", "fetch.recurseSubmodules": "false",
}


def check_url(url: str) -> str:
    """`url` if it is an http(s) URL with a host and no credentials in it; GitError otherwise."""
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # a bad port raises here
    except ValueError:
        host = None
    if host is None or parts.scheme not in ("http", "https"):
        raise GitError("the hub's URL must be http(s)://HOST[:PORT]/hub.git (GATE_HUB_URL)")
    if "@" in parts.netloc:
        raise GitError("the hub's URL must not hold credentials: the token goes in GATE_HUB_TOKEN")
    return url


def fetch_shas(url: str, token: str, mirror: Path, shas: list[str]) -> None:
    """Make every commit of `shas` present in the bare repository `mirror` (created if missing), fetched
    from the hub served at `url` with `token`. GitError (naming the url, never the token) on failure."""
    check_url(url)
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise GitError("the hub's token (GATE_HUB_TOKEN) is empty or holds whitespace or control characters")
    wanted = list(dict.fromkeys(s.strip().lower() for s in shas))
    bad = [s for s in wanted if not _FULL_SHA.fullmatch(s)]
    if bad:
        raise GitError(f"not full commit ids: {', '.join(repr(s[:80]) for s in bad[:5])}")
    mirror = Path(mirror).resolve()
    if not wanted and mirror.is_dir():
        return
    with _locked(mirror):
        if not (mirror / "HEAD").is_file():
            mirror.mkdir(parents=True, exist_ok=True)
            init_bare(mirror)
        repo = open_repo(mirror)
        missing = _absent(repo, wanted)
        if not missing:
            return
        config = {**SAFE_FETCH_CONFIG, "http.extraHeader": f"Authorization: Bearer {token}"}
        refspecs = [f"{s}:{FETCHED_PREFIX}{s}" for s in missing]
        result = repo.run("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
                          "--end-of-options", url, *refspecs, config=config, timeout=FETCH_TIMEOUT_S)
        if result.returncode != 0:
            reason = scrub(result.stderr.strip(), [token])
            if "could not read Username" in reason or "Authentication failed" in reason:
                reason = "the hub refused the token (HTTP 401: GATE_HUB_TOKEN must be the hub's HUB_SERVE_TOKEN)"
            raise GitError(f"fetching {len(missing)} commit(s) from the hub at {url} failed: {reason[-600:]}")
        still = _absent(repo, missing)
        if still:
            raise GitError(f"the hub at {url} did not send {', '.join(s[:12] for s in still)}")


def _absent(repo: SwarmRepo, shas: list[str]) -> list[str]:
    """The shas of which `repo` has no object."""
    if not shas:
        return []
    result = repo.run("cat-file", "--batch-check=%(objectname) %(objecttype)",
                      input="".join(f"{s}\n" for s in shas).encode())
    if result.returncode != 0:
        raise GitError(f"git cat-file failed in {repo.git_dir}: {result.stderr.strip()}")
    lines = [line.split() for line in result.stdout.decode().splitlines()]
    present = {words[0] for words in lines if len(words) == 2 and words[1] != "missing"}
    return [s for s in shas if s not in present]


@contextmanager
def _locked(mirror: Path) -> Iterator[None]:
    """An exclusive lock on `<mirror>.lock` (flock: threads and processes alike, each open file its own)."""
    mirror.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(mirror.parent / f"{mirror.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
