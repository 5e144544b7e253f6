"""The reconciler's checks of `main`, each in an isolated sandbox: agent-written code never runs on the host.

Dependencies come from the shared cache (`agentswarm.sandbox.deps`): installed once per lock file
in a sandbox with no secret whose only way out is the registry proxy, then bound read-only into each check's sandbox, which has
no network at all. Checks use the local backend (bubblewrap unless SANDBOX_ISOLATION=none)
whatever SANDBOX_BACKEND says: they need the cache on this machine.

After the commands, when they passed and the build left a `dist/index.html`, the built game is
loaded in headless Chromium inside the same sandbox (`reconcile.page`): the page must boot, and
its screenshot is kept for the dashboard. When asked (`keep_dist`), the built dist/ of a page that passed is
copied out of the sandbox into a staging directory (`reconcile.previews.stage_dist`, which refuses links and
caps sizes) before the sandbox goes; the caller keeps it as a preview or discards it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from agentswarm.config import Settings
from agentswarm.reconcile.page import page_check
from agentswarm.reconcile.previews import PreviewRefused, previews_root, stage_dist
from agentswarm.sandbox.deps import CheckResult, attach_deps, checkout, deps_root, ensure_deps, run_in
from agentswarm.sandbox.factory import check_backend_for
from agentswarm.sandbox.local import LocalSandboxBackend

__all__ = ["CheckResult", "MainRun", "run_checks", "check_main", "CHECK_RUN"]
CHECK_RUN = "reconcile"  # the pseudo run id of check sandboxes
BUILT_PAGE = "repo/dist/index.html"


@dataclass
class MainRun:
    """The checks of one commit: each command's result in order, and the page's screenshot if one was taken."""

    sha: str
    install: CheckResult | None = None  # the dependency install, when one ran for this check
    results: list[CheckResult] = field(default_factory=list)  # the commands, then the page check
    screenshot: bytes | None = None
    dist: Path | None = None  # the staged copy of dist/ (the caller owns it: keep it or discard it)
    dist_refused: str = ""  # why dist/ was not copied out, when it was asked for and refused
    seconds: float = 0.0

    @property
    def all(self) -> list[CheckResult]:
        return ([self.install] if self.install else []) + self.results


def run_checks(backend: LocalSandboxBackend, hub: str, sha: str, install: str, commands: list[str],
               timeout_s: float, deps_root: Path, *, page: bool = False, tsc_snapshot: bool = False) -> list[CheckResult]:
    """Install (once per lock file), then every command against sha; stop at a failed install."""
    return _run(backend, hub, sha, install, commands, timeout_s, deps_root, page=page, tsc_snapshot=tsc_snapshot).all


def _run(backend: LocalSandboxBackend, hub: str, sha: str, install: str, commands: list[str], timeout_s: float,
         root: Path, *, page: bool, keep_dist: tuple[Path, int] | None = None, tsc_snapshot: bool = False) -> MainRun:
    started = time.monotonic()
    out = MainRun(sha)
    modules, installed = ensure_deps(backend, hub, sha, install, root, timeout_s, run_id=CHECK_RUN,
                                     tsc_snapshot=tsc_snapshot)
    if installed is not None:
        out.install = installed
        if not installed.ok:
            out.seconds = round(time.monotonic() - started, 2)
            return out
    sb = checkout(backend, hub, sha, f"check-{sha[:12]}", run_id=CHECK_RUN)
    try:
        if modules is not None:
            attach_deps(backend, sb, modules)
        for command in commands:  # all of them: a red main's report names every check it fails
            out.results.append(run_in(backend, sb, command, timeout_s))
        if all(r.ok for r in out.results):
            if page and backend.get_file(sb, BUILT_PAGE) is not None:
                result, png = page_check(backend, sb, timeout_s)
                out.results.append(result)
                out.screenshot = png if result.ok else None
                if result.ok and keep_dist is not None:
                    try:
                        out.dist = stage_dist(Path(sb.workdir), "repo/dist", keep_dist[0], max_bytes=keep_dist[1])
                    except PreviewRefused as exc:
                        out.dist_refused = str(exc)
    finally:
        backend.terminate(sb)
    out.seconds = round(time.monotonic() - started, 2)
    return out


def check_main(settings: Settings, sha: str, commands: list[str] | None = None, *, page: bool | None = None,
               keep_dist: bool = False) -> MainRun:
    """The reconciler's commands (or `commands`) on sha in a fresh sandbox, then the page check if asked, and
    with `keep_dist` (and previews kept) a staged copy of the dist/ it loaded."""
    stage = (previews_root(settings.hub_path), settings.reconcile_preview_max_mb << 20) \
        if keep_dist and settings.reconcile_previews_keep else None
    return _run(check_backend_for(settings), str(settings.hub_path.resolve()), sha, settings.reconcile_install,
                settings.reconcile_commands if commands is None else commands, settings.reconcile_timeout_s,
                deps_root(settings.hub_path), page=settings.reconcile_page if page is None else page, keep_dist=stage,
                tsc_snapshot=settings.tsc_snapshot)
