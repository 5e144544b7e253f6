"""A scratch working tree that follows the hub's `main`, for the reconciler's build and tests.

Invariants: clone, fetch, checkout, clean and rev-parse all go through the git layer (minimal
environment, hooks off: a post-checkout hook in the clone never runs). The scratch directory
is opened at exactly its own path, so a workdir nested in another repository is never
mistaken for it. `node_modules` survives the clean; everything else matches the hub's ref.
"""

from __future__ import annotations

from pathlib import Path

from agentswarm.git.repo import GitError, open_repo, run_git


def checkout_main(hub: str, workdir: Path, ref: str = "main") -> str:
    """Bring `workdir` to exactly the hub's `ref` (node_modules kept); return its sha."""
    workdir = Path(workdir).resolve()
    if not (workdir / ".git").exists():
        workdir.parent.mkdir(parents=True, exist_ok=True)
        proc = run_git("clone", "--quiet", "--no-checkout", "--", str(hub), str(workdir))
        if proc.returncode != 0:
            raise GitError(f"git clone {hub} failed: {proc.stderr.strip()}")
    repo = open_repo(workdir)
    repo.out("fetch", "--quiet", "--force", "origin", f"+refs/heads/{ref}:refs/remotes/origin/{ref}")
    repo.out("checkout", "--quiet", "--force", "--detach", f"origin/{ref}")
    repo.out("clean", "-ffdxq", "-e", "node_modules")
    return repo.out("rev-parse", "HEAD")
