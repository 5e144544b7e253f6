"""A blame is confirmed only when it fails on the commit every run and never on its parent."""

from __future__ import annotations

import pytest

from agentswarm.config import load_settings
from agentswarm.reconcile.bisect import Bisection
from agentswarm.reconcile.confirm import confirm
from agentswarm.sandbox.factory import check_backend_for
from tests.reconcile.hubs import main_of, make_hub, push_commits

pytestmark = pytest.mark.bwrap

CHECK = "python3 check.py"
NAMED = ("import pathlib, sys\n"
         "if pathlib.Path('skip.txt').exists(): sys.exit(127)\n"
         "bad = sorted(p.stem for p in pathlib.Path('.').glob('*.txt') if p.read_text() == 'BROKEN')\n"
         "for name in bad: print(f' FAIL  src/{name}.test.ts > breaks')\n"
         "sys.exit(1 if bad else 0)\n")


def _settings(hub, **kw):
    return load_settings(**{"hub_path": hub, "sandbox_root": hub.parent / "sandboxes", "reconcile_install": "",
                            "reconcile_page": False, "reconcile_confirm_runs": 2, **kw})


def _blame(good: str, sha: str, marks: list[str]) -> Bisection:
    return Bisection(good=good, bad=sha, first_bad=sha, marks=marks)


def test_a_real_break_is_confirmed_with_its_output(tmp_path):
    hub = make_hub(tmp_path, {"check.py": NAMED})
    good = main_of(hub)
    shas = push_commits(tmp_path, hub, [{"a.txt": "ok"}, {"b.txt": "BROKEN"}])
    conf = confirm(_settings(hub), _blame(good, shas[1], ["src/b.test.ts > breaks"]), [CHECK])
    assert conf.ok and conf.marks == ["src/b.test.ts > breaks"] and conf.parent == shas[0], conf.summary()
    assert conf.runs == 4 and conf.flaky == [] and "FAIL  src/b.test.ts > breaks" in conf.output
    assert check_backend_for(_settings(hub)).list("reconcile") == []


def test_a_blame_whose_parent_fails_too_is_not_confirmed(tmp_path):
    hub = make_hub(tmp_path, {"check.py": NAMED})
    good = main_of(hub)
    shas = push_commits(tmp_path, hub, [{"b.txt": "BROKEN"}, {"a.txt": "ok"}])  # the break is one commit earlier
    conf = confirm(_settings(hub), _blame(good, shas[1], ["src/b.test.ts > breaks"]), [CHECK])
    assert not conf.ok and conf.marks == [] and "on its parent too" in conf.reason, conf.summary()
    assert conf.flaky == ["src/b.test.ts > breaks"]  # it passed on a tree it failed on: flaky, never a revert


def test_only_the_marks_that_reproduce_are_confirmed(tmp_path):
    hub = make_hub(tmp_path, {"check.py": NAMED})
    good = main_of(hub)
    shas = push_commits(tmp_path, hub, [{"a.txt": "BROKEN"}, {"b.txt": "BROKEN"}])
    marks = ["src/a.test.ts > breaks", "src/b.test.ts > breaks", "src/c.ts("]
    conf = confirm(_settings(hub), _blame(good, shas[1], marks), [CHECK])
    assert conf.ok and conf.marks == ["src/b.test.ts > breaks"], conf.summary()
    assert conf.flaky == ["src/a.test.ts > breaks"]  # a tsc file that did not reproduce is not a flaky test


def test_without_marks_any_failure_must_reproduce_and_a_commit_that_cannot_run_is_not_blamed(tmp_path):
    hub = make_hub(tmp_path, {"check.py": NAMED})
    good = main_of(hub)
    shas = push_commits(tmp_path, hub, [{"a.txt": "ok"}, {"b.txt": "BROKEN"}, {"skip.txt": "x"}])
    assert confirm(_settings(hub), _blame(good, shas[1], []), [CHECK]).ok
    conf = confirm(_settings(hub), _blame(good, shas[2], []), [CHECK])
    assert not conf.ok and "could not run" in conf.reason and conf.flaky == [], conf.summary()
