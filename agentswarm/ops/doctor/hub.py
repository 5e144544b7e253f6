"""The hub and its hook: git is recent enough, the hub (or what will become it) is sound, the hook refuses main.

The hook is tested by running it with the lines a push would feed it (a push to main must be refused, one to
`swarm/<id>` taken); nothing is pushed to the hub. Without a hub yet (a fresh clone), a scratch hub is made
from TARGET_REPO_PATH exactly as `agentswarm init` would, and its hook is tested instead; the install step
then installs the target's dependencies from that scratch hub.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from agentswarm.git.hub import PRE_RECEIVE, HubError, create_hub, foreign_hooks, main_sha
from agentswarm.git.repo import GitError, require_git, run_git

ZERO = "0" * 40
SOME = "1" * 40
REINSTALL = "`agentswarm init` reinstalls the hook"


def hook_refuses_main(hub: Path) -> str | None:
    """None when the hub's pre-receive hook refuses main and takes swarm/<id>; else what went wrong."""
    hook = hub / "hooks" / "pre-receive"
    if not hook.is_file():
        return "no pre-receive hook"
    if hook.read_text(errors="replace") != PRE_RECEIVE:
        return "the pre-receive hook is not the one agentswarm installs"
    if not os.access(hook, os.X_OK):
        return "the pre-receive hook is not executable (git would skip it)"
    env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}
    try:
        main = subprocess.run([str(hook)], input=f"{ZERO} {SOME} refs/heads/main\n", capture_output=True,
                              text=True, timeout=30, env=env, cwd=hub)
        swarm = subprocess.run([str(hook)], input=f"{ZERO} {SOME} refs/heads/swarm/doctor\n", capture_output=True,
                               text=True, timeout=30, env=env, cwd=hub)
    except (OSError, subprocess.TimeoutExpired) as exc:  # e.g. a filesystem mounted noexec
        return f"the hook does not run ({exc})"
    if main.returncode == 0:
        return "the hook let a push to main through"
    if swarm.returncode != 0:
        return f"the hook refused a swarm/ branch ({swarm.stderr.strip()[:200]})"
    return None


def without_credentials(url: str) -> str:
    """https://user:token@host/path as https://host/path; other forms as they are."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rsplit('@', 1)[-1]}{slash}{path}"


def check_hub(ladder: Any) -> None:
    """git's version, then the hub: remote (reachable, has main) or local (main, our hook only, hook works)."""
    s = ladder.settings
    try:
        version = ".".join(map(str, require_git()))
    except GitError as exc:
        ladder.fail("hub", str(exc), "install git >= 2.38 (Debian: apt-get install git)")
        return
    if s.git_repo_url.strip():
        _remote_hub(ladder, s.git_repo_url.strip(), version)
        return
    hub = Path(s.hub_path).resolve()
    if (hub / "HEAD").exists():
        _local_hub(ladder, hub, version)
    else:
        _future_hub(ladder, hub, Path(s.target_repo_path).resolve(), version)


def _local_hub(ladder: Any, hub: Path, version: str) -> None:
    sha = main_sha(hub)
    if sha is None:
        ladder.fail("hub", f"{hub} has no main", f"move it aside and run `agentswarm init` (HUB_PATH={hub})")
        return
    foreign = foreign_hooks(hub)
    if foreign:
        ladder.fail("hub", f"{hub}: {', '.join(foreign)} not installed by agentswarm (would run on pushes)",
                    "inspect and remove them, then `agentswarm init`")
        return
    problem = hook_refuses_main(hub)
    if problem:
        ladder.fail("hub", f"{hub}: {problem}", REINSTALL)
        return
    ladder.facts["hub"] = hub
    ladder.ok("hub", f"{hub} main {sha[:12]}; the pre-receive hook refuses pushes to main (git {version})")


def _future_hub(ladder: Any, hub: Path, target: Path, version: str) -> None:
    if not target.is_dir():
        ladder.fail("hub", f"no hub at {hub} and TARGET_REPO_PATH {target} is not a directory",
                    "point TARGET_REPO_PATH at the product's repository (default ./target-repo)")
        return
    hub.parent.mkdir(parents=True, exist_ok=True)  # beside where the hub will be: same disk, same mount options
    scratch = Path(ladder.resources.enter_context(tempfile.TemporaryDirectory(prefix=".doctor-hub-", dir=hub.parent)))
    try:
        sha = create_hub(scratch / "hub.git", target)
    except HubError as exc:
        ladder.fail("hub", f"a hub cannot be made from {target}: {exc}", "fix the error above in TARGET_REPO_PATH")
        return
    problem = hook_refuses_main(scratch / "hub.git")
    if problem:
        ladder.fail("hub", f"a scratch hub made from {target}: {problem}", "check that the disk allows executables")
        return
    ladder.facts["hub"] = scratch / "hub.git"
    ladder.ok("hub", f"not created yet: `make swarm` makes {hub} from {target}; a scratch hub made from it "
              f"(main {sha[:12]}) refuses pushes to main (git {version})")


def _remote_hub(ladder: Any, url: str, version: str) -> None:
    shown = without_credentials(url)
    proc = run_git("ls-remote", "--", url, "refs/heads/main")
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        ladder.fail("hub", f"GIT_REPO_URL {shown}: git ls-remote failed ({why})",
                    "check the URL and GIT_TOKEN, and that this machine reaches it")
        return
    head = proc.stdout.decode().split()
    if not head:
        ladder.fail("hub", f"GIT_REPO_URL {shown} has no main branch", "push the product's first commit to main")
        return
    mirror = Path(ladder.settings.hub_path).resolve()
    if (mirror / "HEAD").exists():
        ladder.facts["hub"] = mirror
    ladder.ok("hub", f"remote {shown} main {head[0][:12]} (protect main on the server: only the merge queue "
              f"may move it; git {version})")
