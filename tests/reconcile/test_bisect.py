"""The orchestrator's bisection, a fresh sandbox per run: the first bad landing, skips, the cap, deps per commit."""

from __future__ import annotations

import pytest

from agentswarm.config import load_settings
from agentswarm.reconcile.bisect import find_culprits, find_first_bad, narrowed, signatures
from agentswarm.sandbox.factory import check_backend_for
from tests.reconcile.hubs import main_of, make_hub, push_commits

pytestmark = pytest.mark.bwrap

CHECK = "python3 check.py"
CHECKER = ("import pathlib, sys\n"
           "if pathlib.Path('skip.txt').exists(): sys.exit(127)\n"
           "bad = [p.name for p in pathlib.Path('.').glob('*.txt') if p.read_text() == 'BROKEN']\n"
           "print('bad:', bad)\n"
           "sys.exit(1 if bad else 0)\n")

# Like CHECKER, but each broken file fails as a named test, as vitest prints it: bisection's signatures.
NAMED_CHECKER = ("import pathlib, sys\n"
                 "bad = sorted(p.stem for p in pathlib.Path('.').glob('*.txt') if p.read_text() == 'BROKEN')\n"
                 "for name in bad: print(f' FAIL  {name}.test.ts > breaks')\n"
                 "sys.exit(1 if bad else 0)\n")


def backend_of(hub):
    return check_backend_for(_settings(hub))


def _settings(hub, **kw):
    return load_settings(**{"hub_path": hub, "sandbox_root": hub.parent / "sandboxes", "reconcile_install": "", "reconcile_page": False, **kw})


def test_finds_the_first_bad_commit_with_the_output_there(tmp_path):
    hub = make_hub(tmp_path, {"check.py": CHECKER})
    good = main_of(hub)
    shas = push_commits(tmp_path, hub, [{f"f{i}.txt": "BROKEN" if i == 9 else "ok"} for i in range(16)])
    bis = find_first_bad(_settings(hub), good, shas[-1], [CHECK])
    assert bis.first_bad == shas[9], bis.summary()
    assert 3 <= bis.steps <= 6 and "bad: ['f9.txt']" in bis.output and "$ python3 check.py" in bis.output


def test_a_commit_whose_check_cannot_run_is_skipped(tmp_path):
    hub = make_hub(tmp_path, {"check.py": CHECKER})
    good = main_of(hub)
    plan: list[dict[str, str | None]] = [{"a.txt": "ok"}, {"skip.txt": "x"}, {"b.txt": "BROKEN"},
                                         {"skip.txt": None}, {"c.txt": "ok"}]
    shas = push_commits(tmp_path, hub, plan)
    bis = find_first_bad(_settings(hub), good, shas[-1], [CHECK])
    # b.txt broke it at shas[2], but shas[1] and shas[2] cannot run: git names the candidates, no guess is made
    assert bis.first_bad is None and set(bis.candidates) >= {shas[2]} and "could not run" in bis.reason


def test_the_step_cap_stops_a_long_bisection(tmp_path):
    hub = make_hub(tmp_path, {"check.py": CHECKER})
    good = main_of(hub)
    shas = push_commits(tmp_path, hub, [{f"f{i}.txt": "BROKEN" if i == 30 else "ok"} for i in range(32)])
    bis = find_first_bad(_settings(hub, reconcile_bisect_max_steps=2), good, shas[-1], [CHECK])
    assert bis.first_bad is None and "RECONCILE_BISECT_MAX_STEPS=2" in bis.reason and bis.steps == 2


def test_each_commit_gets_the_dependencies_of_its_own_lock_file(tmp_path):
    install = "mkdir -p node_modules/dep && cp package-lock.json node_modules/dep/version"
    checker = ("import pathlib, sys\n"
               "v = pathlib.Path('node_modules/dep/version').read_text().strip()\n"
               "print('dep', v)\n"
               "sys.exit(1 if v == 'v2' else 0)\n")
    hub = make_hub(tmp_path, {"check.py": checker, "package-lock.json": "v1", "package.json": "{}"})
    good = main_of(hub)
    shas = push_commits(tmp_path, hub, [{"a.txt": "1"}, {"b.txt": "2"}, {"package-lock.json": "v2"}, {"c.txt": "3"}])
    settings = _settings(hub, reconcile_install=install)
    bis = find_first_bad(settings, good, shas[-1], [CHECK])
    assert bis.first_bad == shas[2] and "dep v2" in bis.output, bis.summary()


def test_one_landing_between_green_and_red_needs_no_search(tmp_path):
    hub = make_hub(tmp_path, {"check.py": CHECKER})
    good = main_of(hub)
    [bad] = push_commits(tmp_path, hub, [{"x.txt": "BROKEN"}])
    bis = find_first_bad(_settings(hub), good, bad, [CHECK])
    assert bis.first_bad == bad and bis.steps == 0


def test_a_break_already_reverted_does_not_hide_the_one_at_hand(tmp_path):
    hub = make_hub(tmp_path, {"check.py": NAMED_CHECKER})
    good = main_of(hub)
    plan: list[dict[str, str | None]] = [{"a.txt": "BROKEN"}, {"x.txt": "ok"}, {"b.txt": "BROKEN"},
                                         {"a.txt": None}, {"y.txt": "ok"}]  # a broke it, b broke it, a reverted
    shas = push_commits(tmp_path, hub, plan)
    marks = signatures("$ python3 check.py\n FAIL  b.test.ts > breaks\n")
    bis = find_first_bad(_settings(hub), good, shas[-1], [CHECK], marks=marks)
    assert bis.first_bad == shas[2], bis.summary()
    assert find_first_bad(_settings(hub), good, shas[-1], [CHECK]).first_bad == shas[0]  # without: the old break


def test_signatures_are_failing_tests_and_the_files_tsc_errs_in():
    out = ("src/a.ts(3,7): error TS2322: Type 'string' is not assignable to type 'number'.\n"
           "src/a.ts(9,1): error TS2304: Cannot find name 'x'.\n"
           " FAIL  src/b.test.ts > suite > adds\n")
    assert signatures(out) == ["src/b.test.ts > suite > adds", "src/a.ts("]
    assert signatures("vite build failed: Could not resolve ./x.css") == []


def test_every_break_on_main_is_found_in_one_sandbox(tmp_path):
    hub = make_hub(tmp_path, {"check.py": NAMED_CHECKER})
    good = main_of(hub)
    plan: list[dict[str, str | None]] = [{"x.txt": "ok"}, {"a.txt": "BROKEN"}, {"y.txt": "ok"}, {"z.txt": "ok"},
                                         {"b.txt": "BROKEN"}, {"w.txt": "ok"}]
    shas = push_commits(tmp_path, hub, plan)
    marks = ["a.test.ts > breaks", "b.test.ts > breaks"]
    found = find_culprits(_settings(hub), good, shas[-1], [CHECK], marks=marks)
    assert [(b.first_bad, b.marks) for b in found] == [(shas[1], marks[:1]), (shas[4], marks[1:])]
    assert found[1].good == shas[1] and "b.test.ts > breaks" in found[1].output
    assert found[1].steps <= found[0].steps  # the second search judges the steps already run again
    assert backend_of(hub).list("reconcile") == []  # every run's sandbox is removed after it


def test_a_step_runs_only_the_failing_tests_files():
    marks = ["src/b.test.ts > suite > adds", "src/a.test.ts > x", "src/a.test.ts > y", "src/c.ts("]
    commands = ["node_modules/.bin/tsc --noEmit", "node_modules/.bin/vitest run --pool=vmThreads", "npm test",
                "node_modules/.bin/vitest related --run x.ts"]
    assert narrowed(commands, marks) == [
        "node_modules/.bin/tsc --noEmit",
        "node_modules/.bin/vitest run --pool=vmThreads --passWithNoTests src/a.test.ts src/b.test.ts",
        "npm test", "node_modules/.bin/vitest related --run x.ts"]
    assert narrowed(commands, ["src/c.ts("]) == commands


def test_each_run_starts_from_a_tree_no_earlier_run_touched(tmp_path):
    """A check that leaves something behind (in the tree, $HOME, $TMPDIR, beside the repo) and passes when it
    finds it: every run sees a fresh sandbox, so the break is found where it is."""
    leaves = ("import os, pathlib, sys\n"
              "spots = [pathlib.Path(os.environ['HOME']), pathlib.Path(os.environ['TMPDIR']), pathlib.Path('..'),"
              " pathlib.Path('.')]\n"
              "if any((p / 'left').exists() for p in spots): print('seen'); sys.exit(0)\n"
              "for p in spots: (p / 'left').write_text('x')\n"
              "sys.exit(1 if pathlib.Path('x.txt').exists() else 0)\n")
    hub = make_hub(tmp_path, {"check.py": leaves})
    good = main_of(hub)
    shas = push_commits(tmp_path, hub, [{"a.txt": "1"}, {"x.txt": "BROKEN"}, {"b.txt": "2"}, {"c.txt": "3"}])
    bis = find_first_bad(_settings(hub), good, shas[-1], [CHECK])
    assert bis.first_bad == shas[1] and bis.steps >= 1 and "seen" not in bis.output, bis.summary()


def test_a_test_that_fails_in_one_run_and_passes_in_another_is_dropped_not_blamed(tmp_path):
    coin = ("import pathlib, random, sys\n"
            "bad = [p.stem for p in pathlib.Path('.').glob('*.txt') if p.read_text() == 'BROKEN']\n"
            "if pathlib.Path('coin.txt').exists() and random.random() < 0.5: bad.append('coin')\n"
            "for name in bad: print(f' FAIL  src/{name}.test.ts > breaks')\n"
            "sys.exit(1 if bad else 0)\n")
    hub = make_hub(tmp_path, {"check.py": coin})
    good = main_of(hub)
    shas = push_commits(tmp_path, hub, [{"coin.txt": "x"}] + [{f"f{i}.txt": "ok"} for i in range(6)])
    # Every step after coin.txt runs the flaky test 5 times: it shows both ways with near certainty (1 - 2 * 0.5^5
    # per step), and then it is flaky for this search, which has nothing left to look for.
    bis = find_first_bad(_settings(hub, reconcile_bisect_runs=5), good, shas[-1], [CHECK],
                         marks=["src/coin.test.ts > breaks"])
    if bis.first_bad is None:
        assert bis.flaky == ["src/coin.test.ts > breaks"] and "flaky" in bis.reason, bis.summary()
    else:  # every step's runs agreed by chance (at most 3 steps: < 0.2% of runs); it found the coin's commit
        assert bis.first_bad == shas[0]
