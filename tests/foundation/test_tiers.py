"""The test tiers: e2e marks whole swarms and every test that starts Celery workers, and make test-fast
leaves them out (tests/support/tiers.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.env import ROOT
from tests.support.tiers import INTEGRATION, SWARM_FILES, TESTS

FAST = "not e2e and not slow and not browser and not integration"


def collected(marker: str, *paths: str) -> list[str]:
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                        "-m", marker, *paths], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 5), r.stdout + r.stderr
    return [line for line in r.stdout.splitlines() if "::" in line]


def test_e2e_holds_the_swarms_and_the_worker_tests_and_fast_holds_neither():
    files = ("tests/e2e/test_swarm.py", "tests/queue/test_app.py", "tests/foundation/test_import_graph.py")
    e2e = collected("e2e", *files)
    assert any(t.startswith("tests/e2e/test_swarm.py::") for t in e2e)
    workers = {t.split("::")[1] for t in e2e if t.startswith("tests/queue/test_app.py::")}
    assert workers == {"test_mixed_priorities_are_consumed_most_urgent_first",  # the celery_worker tests
                       "test_celery_call_without_priority_goes_last"}
    assert not any(t.startswith("tests/foundation/") for t in e2e)
    fast = collected(FAST, *files)
    assert not set(fast) & set(e2e)
    assert "tests/queue/test_app.py::test_priority_mapping_is_inverted_and_clamped" in fast
    assert any(t.startswith("tests/foundation/test_import_graph.py::") for t in fast)


def test_integration_takes_a_listed_file_and_a_listed_test_out_of_the_fast_tier():
    fast = collected(FAST, "tests/merge/test_merge_bench.py", "tests/llm/test_sim_faults.py")
    assert fast and not any(t.startswith("tests/merge/test_merge_bench.py::") for t in fast)
    assert not any("against_the_real_toolchain" in t for t in fast)
    assert collected("integration", "tests/llm/test_sim_faults.py") == [
        "tests/llm/test_sim_faults.py::test_simulated_features_and_faults_against_the_real_toolchain"]


def test_the_listed_files_exist():
    for entry in SWARM_FILES | INTEGRATION:
        name, _, test = entry.partition("::")
        assert (TESTS / name).is_file(), f"tests/support/tiers.py names {name}, which is not a file"
        assert not test or f"def {test}(" in (TESTS / name).read_text(), f"{entry}: no such test"
