"""A failing commit that tries to steer the reconciler's bisection: the real culprit is still named.

The culprit's check script, whenever it runs, attacks everything a bisection driver could keep near
the tested tree: it rewrites `../bisect/step.sh` (every later step "bad"), resets the steps counter,
blanks the signatures, writes fake logs naming an innocent commit for every sha, plants a
post-checkout hook and a `core.hooksPath` in `$HOME/.gitconfig` (each later checkout breaks the
tree), and leaves markers in `$HOME`, `$TMPDIR`, `/tmp` and `..`. A run that finds a marker left by
an earlier run passes, to hide the culprit. Each bisection step must start from a tree nothing
tested has touched and be judged from outside: the first bad commit is the culprit, its output is
its own.
"""

from __future__ import annotations

import pytest

from agentswarm.config import load_settings
from agentswarm.reconcile.bisect import find_culprits, find_first_bad
from agentswarm.sandbox.factory import check_backend_for
from tests.reconcile.hubs import git, main_of, make_hub

pytestmark = pytest.mark.bwrap

CHECK = "python3 check.py"
HONEST = ("import pathlib, sys\n"
          "bad = sorted(p.stem for p in pathlib.Path('.').glob('*.txt') if p.read_text() == 'BROKEN')\n"
          "for name in bad: print(f' FAIL  src/{name}.test.ts > breaks')\n"
          "sys.exit(1 if bad else 0)\n")
HOSTILE = r'''import os, pathlib, subprocess, sys
here = pathlib.Path('.').resolve()
places = [pathlib.Path(os.environ.get('HOME', '/nonexistent')), pathlib.Path(os.environ.get('TMPDIR', '/tmp')),
          pathlib.Path('/tmp'), here.parent]
if any((p / 'agentswarm-planted').exists() for p in places):
    print('a marker from an earlier run: pretending to pass')
    sys.exit(0)
for p in places:
    try:
        (p / 'agentswarm-planted').write_text('x')
    except OSError:
        pass
shas = subprocess.run(['git', 'rev-list', '--all'], capture_output=True, text=True).stdout.split()
innocent = shas[-2] if len(shas) > 1 else ''
bis = here.parent / 'bisect'
try:
    bis.mkdir(exist_ok=True)
    (bis / 'step.sh').write_text('exit 1\n')
    (bis / 'steps').write_text('0')
    (bis / 'signatures').write_text('\n')
    (bis / 'logs').mkdir(exist_ok=True)
    for sha in shas:
        (bis / 'logs' / f'{sha}.log').write_text(f' FAIL  src/innocent.test.ts > breaks\n{innocent} is the first bad commit\n')
except OSError:
    pass
hook = "#!/bin/sh\necho BROKEN > zz.txt\n"
try:
    hooks = here / '.git' / 'hooks'
    hooks.mkdir(exist_ok=True)
    (hooks / 'post-checkout').write_text(hook)
    (hooks / 'post-checkout').chmod(0o755)
    home_hooks = pathlib.Path(os.environ['HOME']) / 'hooks'
    home_hooks.mkdir(exist_ok=True)
    (home_hooks / 'post-checkout').write_text(hook)
    (home_hooks / 'post-checkout').chmod(0o755)
    (pathlib.Path(os.environ['HOME']) / '.gitconfig').write_text(f'[core]\n\thooksPath = {home_hooks}\n')
except (OSError, KeyError):
    pass
print(f'{innocent} is the first bad commit')
bad = sorted(p.stem for p in pathlib.Path('.').glob('*.txt') if p.read_text().strip() == 'BROKEN')
for name in bad: print(f' FAIL  src/{name}.test.ts > breaks')
sys.exit(1 if bad else 0)
'''


def _settings(hub, **kw):
    return load_settings(**{"hub_path": hub, "sandbox_root": hub.parent / "sandboxes", "reconcile_install": "",
                            "reconcile_page": False, **kw})


def _history(tmp_path, hub, culprit_at: int, count: int) -> list[str]:
    """count landings on main, each adding a fine file; the one at culprit_at also breaks and turns hostile."""
    clone = tmp_path / "clone"
    git("clone", "-q", str(hub), str(clone), cwd=tmp_path)
    shas = []
    for i in range(count):
        (clone / f"f{i}.txt").write_text("fine")
        if i == culprit_at:
            (clone / "culprit.txt").write_text("BROKEN")
            (clone / "check.py").write_text(HOSTILE)
        git("add", "-A", ".", cwd=clone)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", f"c{i}", cwd=clone)
        shas.append(git("rev-parse", "HEAD", cwd=clone))
    git("push", "-q", "origin", "main", cwd=clone)
    return shas


@pytest.mark.parametrize("with_marks", [False, True])
def test_a_failing_commit_cannot_steer_the_bisection_onto_an_innocent_one(tmp_path, with_marks):
    hub = make_hub(tmp_path, {"check.py": HONEST})
    good = main_of(hub)
    shas = _history(tmp_path, hub, culprit_at=2, count=8)  # the hostile code runs from the very first step
    marks = ["src/culprit.test.ts > breaks"] if with_marks else None
    settings = _settings(hub)
    [bis] = find_culprits(settings, good, shas[-1], [CHECK], marks=marks, most=1)
    assert bis.first_bad == shas[2], bis.summary()
    assert "innocent" not in bis.output and "FAIL  src/culprit.test.ts > breaks" in bis.output
    assert "pretending to pass" not in bis.output and "zz.test.ts" not in bis.output
    assert 1 <= bis.steps <= settings.reconcile_bisect_max_steps
    assert check_backend_for(settings).list("reconcile") == []  # every step's sandbox is gone
    assert not (hub / "hooks" / "post-checkout").exists()


def test_a_hostile_culprit_right_after_the_green_sha_is_still_the_one_named(tmp_path):
    hub = make_hub(tmp_path, {"check.py": HONEST})
    good = main_of(hub)
    shas = _history(tmp_path, hub, culprit_at=0, count=6)
    assert find_first_bad(_settings(hub), good, shas[-1], [CHECK]).first_bad == shas[0]
