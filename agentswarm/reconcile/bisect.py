"""Which commit of main broke it: `git bisect run` with the failing checks, inside a sandbox.

Between the last sha the reconciler saw green and the red one, `git bisect start --first-parent`
walks main's own history (each landing, not the commits inside a merged branch) and a step script
runs the checks that failed at each commit it picks: exit 0 good, 1 bad, 125 skip (the commit's
check cannot run: a missing tool, dependencies that would not install), 255 stop (the step cap,
RECONCILE_BISECT_MAX_STEPS, reached). Everything runs in one check sandbox with no network and no
secret, like every check: the orchestrator only writes the script and reads the logs back.

With several breaks on main, the first bad commit may be one already reverted: each step therefore
looks for this red's own failure (its failing tests, the files tsc errs in: `signatures`) and calls
a commit that fails some other way good for this search.

Dependencies can differ along the range: the lock digest is computed for each commit that changed
a manifest, each distinct one is installed once into the shared cache (a networked sandbox, as
always), bound read-only, and the step script links the right one into node_modules per commit.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentswarm.agent.checks import failing_tests
from agentswarm.config import Settings
from agentswarm.git.repo import open_repo
from agentswarm.reconcile.checks import CHECK_RUN
from agentswarm.reconcile.page import PAGE_COMMAND, PAGE_SCRIPT, SCRIPT_PATH, page_command
from agentswarm.sandbox.base import SandboxHandle
from agentswarm.sandbox.deps import (
    LOCK_FILES,
    checkout,
    deps_mount,
    deps_root,
    ensure_deps,
    lock_digest,
    run_in,
)
from agentswarm.sandbox.factory import check_backend_for
from agentswarm.sandbox.local import LocalSandboxBackend

_TSC_ERROR = re.compile(r"^\s*(\S+\.(?:ts|tsx|mts|cts))\(\d+,\d+\): error TS\d+", re.M)
_VITEST_RUN = re.compile(r"(^|[\s/])vitest\s+run(\s|$)")  # `vitest run ...` (not related, not watch)
_FIRST_BAD = re.compile(r"^([0-9a-f]{40,64}) is the first bad commit", re.M)
_ONLY_SKIPPED = re.compile(r"only 'skip'ped commits left to test.*?could be any of:\n((?:[0-9a-f]{40,64}\n)+)", re.S)
LOG_CAP = 20_000
CANNOT_INSTALL = "-"
NO_DEPS = "none"


@dataclass
class Bisection:
    """The outcome of one bisection: the first bad commit, or why none was found."""

    good: str
    bad: str
    first_bad: str | None = None
    steps: int = 0
    reason: str = ""  # why it is inconclusive
    candidates: list[str] = field(default_factory=list)  # skipped commits the break may be in
    output: str = ""  # the failing checks' output at the first bad commit
    marks: list[str] = field(default_factory=list)  # the red's marks this break explains
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"good": self.good, "bad": self.bad, "first_bad": self.first_bad, "steps": self.steps,
                "reason": self.reason, "candidates": self.candidates, "marks": self.marks[:20],
                "seconds": self.seconds}


def signatures(output: str) -> list[str]:
    """What identifies this red in a check's output: the failing tests' names, and the files tsc errs in.

    A bisection step with signatures calls a commit bad only when its failure shows one of them, so
    an earlier break that is already reverted (or a different one) does not hide the break at hand.
    A red without any (a failing build, the page) is bisected on the failure alone.
    """
    return list(dict.fromkeys([*failing_tests(output), *tsc_error_files(output)]))


def narrowed(commands: list[str], marks: list[str]) -> list[str]:
    """The failing commands as each bisection step runs them: a vitest run only over the failing tests' files.

    A step then costs the few test files this red is about, not the whole suite (tens of seconds on a
    loaded two-core machine). `--passWithNoTests`: at a commit before a test file existed, vitest finds
    nothing and says so, which the signatures already treat as good.
    """
    files = sorted({m.split(" > ", 1)[0] for m in marks if " > " in m})
    if not files:
        return list(commands)
    quoted = " ".join(shlex.quote(f) for f in files)
    return [f"{c} --passWithNoTests {quoted}" if _VITEST_RUN.search(c) else c for c in commands]


def tsc_error_files(output: str) -> list[str]:
    """`path(` for each file tsc reports an error in: how its error lines start, whatever the line moved to."""
    return list(dict.fromkeys(f"{m.group(1)}(" for m in _TSC_ERROR.finditer(output)))


def step_script(commands: list[str], max_steps: int, timeout_s: float, *, with_signatures: bool = False) -> str:
    """The `git bisect run` step: deps linked for HEAD, the commands in order, the tree cleaned after."""
    runs = "\n".join(
        f"if [ $verdict -eq 0 ]; then\n"
        f"  printf '$ %s\\n' {shlex.quote(c)} >> \"$log\"\n"
        f"  timeout -k 5 {int(timeout_s)} sh -c {shlex.quote(c)} >> \"$log\" 2>&1; rc=$?\n"
        f"  if [ $rc -eq 127 ]; then verdict=125; elif [ $rc -ne 0 ]; then verdict=1; fi\n"
        f"fi" for c in commands)
    if with_signatures:  # failed, but not with this red's failure: another break, good for this search
        runs += '\nif [ $verdict -eq 1 ] && ! grep -qF -f "$dir/signatures" "$log"; then verdict=0; fi'
    return f"""set -u
dir=../bisect
n=$(cat "$dir/steps" 2>/dev/null)
case "$n" in ''|*[!0-9]*) n=0 ;; esac
n=$((n + 1))
echo "$n" > "$dir/steps"
if [ "$n" -gt {max_steps} ]; then echo "agentswarm: bisection stopped after {max_steps} steps" >&2; exit 255; fi
sha=$(git rev-parse HEAD)
mkdir -p "$dir/logs"
log="$dir/logs/$sha.log"
: > "$log"
deps=$(sed -n "s/^$sha //p" "$dir/deps")
rm -rf node_modules
case "$deps" in
  ""|{NO_DEPS}) ;;
  {CANNOT_INSTALL}) echo "the dependencies of $sha could not be installed" >> "$log"; exit 125 ;;
  *) mkdir node_modules
     for e in "$deps"/* "$deps"/.[!.]*; do [ -e "$e" ] && ln -s "$e" node_modules/; done ;;
esac
verdict=0
{runs}
git reset -q --hard && git clean -ffdxq
exit $verdict
"""


def _deps_by_commit(backend: LocalSandboxBackend, settings: Settings, hub: str, good: str,
                    shas: list[str]) -> dict[str, str]:
    """For each commit of the range: the node_modules it needs (a cache path), NO_DEPS, or CANNOT_INSTALL."""
    install = settings.reconcile_install
    if not install:
        return {}
    repo = open_repo(hub)
    changed = set(repo.out("rev-list", "--first-parent", f"{good}..{shas[-1]}", "--",
                           *LOCK_FILES, "package.json").split())
    digest_at, digest = {}, lock_digest(hub, good)
    for sha in shas:
        if sha in changed:
            digest = lock_digest(hub, sha)
        digest_at[sha] = digest
    first_with: dict[str, str] = {}
    for sha, d in digest_at.items():
        if d:
            first_with.setdefault(d, sha)
    modules: dict[str, str] = {}
    for d, sha in first_with.items():
        path, result = ensure_deps(backend, hub, sha, install, deps_root(settings.hub_path),
                                   settings.reconcile_timeout_s, run_id=CHECK_RUN, tsc_snapshot=settings.tsc_snapshot)
        modules[d] = str(path) if path is not None else CANNOT_INSTALL
    return {sha: modules[d] if d else NO_DEPS for sha, d in digest_at.items()}


def find_first_bad(settings: Settings, good: str, bad: str, commands: list[str], *,
                   marks: list[str] | None = None) -> Bisection:
    """The first bad commit of good..bad for `commands` (see `find_culprits`)."""
    return find_culprits(settings, good, bad, commands, marks=marks, most=1)[0]


def find_culprits(settings: Settings, good: str, bad: str, commands: list[str], *,
                  marks: list[str] | None = None, most: int = 5) -> list[Bisection]:
    """Bisect good..bad (main's first-parent history) with `commands`, once per break; never raises for a failed check.

    `marks`: what identifies the red at `bad` in a check's output (`signatures`); a step whose failure
    shows none of them is good for the search. None or []: any failure is bad, one search. With marks,
    the marks the first bad commit's output shows are its break; the rest are searched for again from
    there (it is good for them), up to `most` searches, all in one sandbox: several breaks on main
    are found in one tick.
    """
    hub = str(settings.hub_path.resolve())
    shas = open_repo(hub).out("rev-list", "--first-parent", "--reverse", f"{good}..{bad}").split()
    if not shas:
        return [Bisection(good=good, bad=bad, reason=f"{bad[:12]} does not descend from {good[:12]}")]
    if len(shas) == 1:  # one landing between green and red: it is the culprit (its output is the red check's)
        return [Bisection(good=good, bad=bad, first_bad=shas[0], marks=list(marks or []))]
    backend = check_backend_for(settings)
    deps = _deps_by_commit(backend, settings, hub, good, shas)
    sb = checkout(backend, hub, bad, f"bisect-{bad[:12]}", run_id=CHECK_RUN)
    found: list[Bisection] = []
    try:
        for path in sorted({deps_mount(Path(p)) for p in deps.values() if p not in (NO_DEPS, CANNOT_INSTALL)}):
            backend.add_readonly(sb, path)
        backend.put_file(sb, SCRIPT_PATH, PAGE_SCRIPT.encode())
        commands = [page_command(settings.reconcile_timeout_s) if c == PAGE_COMMAND else c for c in commands]
        backend.put_file(sb, "bisect/deps", "".join(f"{s} {p}\n" for s, p in deps.items()).encode())
        left, lo = list(marks or []), good
        while len(found) < most:
            bis = _search(backend, sb, settings, lo, bad, commands, left)
            found.append(bis)
            if not bis.first_bad or not left or bis.first_bad == bad:
                break
            bis.marks = [m for m in left if m in bis.output]
            left = [m for m in left if m not in bis.marks]
            if not bis.marks or not left:
                break
            lo = bis.first_bad  # good for the marks still unexplained
    finally:
        backend.terminate(sb)
    return found


def _search(backend: LocalSandboxBackend, sb: SandboxHandle, settings: Settings, good: str, bad: str,
            commands: list[str], marks: list[str]) -> Bisection:
    """One `git bisect run` of good..bad in the bisection sandbox, looking for `marks` (or any failure)."""
    started = time.monotonic()
    out = Bisection(good=good, bad=bad, marks=list(marks))
    backend.put_file(sb, "bisect/steps", b"0")
    backend.put_file(sb, "bisect/signatures", "".join(f"{m}\n" for m in marks).encode())
    backend.put_file(sb, "bisect/step.sh", step_script(commands, settings.reconcile_bisect_max_steps,
                                                         settings.reconcile_timeout_s,
                                                         with_signatures=bool(marks)).encode())
    res = run_in(backend, sb, f"git bisect reset --quiet >/dev/null 2>&1; git checkout --quiet --force {bad} && "
                 f"git bisect start --first-parent {bad} {good} >/dev/null && git bisect run sh ../bisect/step.sh",
                 settings.reconcile_timeout_s * 3)
    _read_outcome(out, res.output, res.timed_out, settings.reconcile_bisect_max_steps)
    # Tested code ran in this sandbox and could write anything it can reach: read it as untrusted.
    steps = (backend.get_file(sb, "bisect/steps") or b"").strip()
    out.steps = int(steps) if steps.isdigit() and len(steps) < 6 else 0
    in_range = set(open_repo(str(settings.hub_path.resolve())).out(
        "rev-list", "--first-parent", f"{good}..{bad}").split())
    if out.first_bad and out.first_bad not in in_range:
        out.reason, out.first_bad = f"git bisect named {out.first_bad[:12]}, which is not in the range", None
    out.candidates = [c for c in out.candidates if c in in_range]
    if out.first_bad:
        log = backend.get_file(sb, f"bisect/logs/{out.first_bad}.log")
        out.output = (log or b"").decode(errors="replace")[-LOG_CAP:]
    out.seconds = round(time.monotonic() - started, 2)
    return out


def _read_outcome(out: Bisection, text: str, timed_out: bool, max_steps: int) -> None:
    found = _FIRST_BAD.search(text)
    if found:
        out.first_bad = found.group(1)
        return
    skipped = _ONLY_SKIPPED.search(text)
    if skipped:
        out.candidates = skipped.group(1).split()
        out.reason = f"the break is in one of {len(out.candidates)} commits whose checks could not run"
    elif timed_out:
        out.reason = "the bisection ran out of time"
    elif f"stopped after {max_steps} steps" in text:
        out.reason = f"more than RECONCILE_BISECT_MAX_STEPS={max_steps} steps were needed"
    else:
        out.reason = f"git bisect gave no answer: {text.strip()[-300:]}"
