"""The test tiers: which tests `make test-fast` leaves out, decided in one place.

`slow`: the SLOW suites, run by `make test-slow` only. `e2e`: everything under tests/e2e and every test that starts Celery workers or a swarm (it asks for one of
WORKER_FIXTURES, or its file is in SWARM_FILES). `integration`: files whose tests each start servers,
sandboxes or toolchains and take seconds apiece (INTEGRATION, chosen from `--durations`). Both run
in `make test`; `make test-fast` runs `-m 'not e2e and not slow and not browser and not integration'`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent

# Fixtures that start real Celery workers, or a whole swarm on them.
WORKER_FIXTURES = frozenset({"celery_worker", "swarm", "gated"})

# Files that start a swarm's processes without those fixtures (a subprocess runs the worker or supervisord).
SWARM_FILES = frozenset({"ops/test_doctor_smoke.py"})

# Seconds-long tests (servers, bubblewrap sandboxes, node toolchains, subprocess CLIs, real timeouts), kept out
# of `make test-fast`: whole files, or `file::test` for one test of a file that is otherwise quick. Chosen from
# `--durations=0`: files whose tests take 0.8 s or more each on a loaded two-core machine, then single tests that
# wait out a real timeout (a second or more each).
INTEGRATION = frozenset({
    "agent/test_builtin.py::test_a_timeout_is_retried",
    "agent/test_checks.py::test_a_slow_command_is_stopped_at_the_timeout",
    "agent/test_gitwork.py::test_errors_are_scrubbed_of_the_token",
    "agent/test_tools.py::test_command_that_exits_but_leaves_a_child_holding_the_pipe",
    "agent/test_tools.py::test_run_that_never_ends_is_killed_with_its_whole_group",
    "dashboard/test_access.py::test_a_silent_connection_is_closed_by_the_read_timeout",
    "llm/test_llm_client.py::test_rate_limit_retry_after_is_waited_out",
    "llm/test_llm_client.py::test_timeouts_are_retried_like_a_5xx",
    "llm/test_llm_client.py::test_timeouts_give_up_after_the_retries",
    "llm/test_llm_client.py::test_a_body_that_stalls_mid_read_times_out_and_is_retried",
    "llm/test_llm_client.py::test_hang_times_out_within_about_the_timeout",
    "llm/test_llm_client.py::test_a_stream_that_stalls_half_way_times_out",
    "reconcile/test_checks.py::test_command_killed_at_limit_with_its_children",
    "sandbox/test_sandbox_local.py::test_timeout_kills_the_whole_group",
    "sandbox/test_sandbox_local.py::test_concurrent_creates_of_one_attempt_make_one_sandbox",
    "agent/test_external.py", "agent/test_runner.py",
    "foundation/test_config.py::test_a_missing_database_is_one_line_in_every_verb",
    "foundation/test_config.py::test_undecodable_and_infinite_values_stop_the_cli_with_one_line",
    "foundation/test_db.py", "foundation/test_tiers.py",
    "infra/test_deploy_glm5.py",
    "lifecycle/test_dispatch.py", "lifecycle/test_hub_replaced.py", "lifecycle/test_scrubbed_storage.py",
    "llm/test_router.py", "llm/test_sim_faults.py::test_simulated_features_and_faults_against_the_real_toolchain",
    "merge/test_concurrent_merges.py", "merge/test_crash_landing.py", "merge/test_gate_batch.py",
    "merge/test_gated_bench_scoring.py", "merge/test_merge_bench.py", "merge/test_speculation.py",
    "monitor/test_monitor.py",
    "ops/test_compose.py", "ops/test_doctor.py", "ops/test_doctor_modal.py", "ops/test_status_blocked.py",
    "ops/test_steering_verbs.py", "ops/test_supervision.py",
    "planning/test_plan_requests.py", "planning/test_planner.py", "planning/test_planner_replies.py",
    "planning/test_secrets.py", "planning/test_stuck_runs.py", "planning/test_subplanner.py",
    "reconcile/test_bisect.py", "reconcile/test_reconciler.py", "reconcile/test_revert_flow.py",
    "sandbox/test_procs.py", "sandbox/test_shared_objects.py", "sandbox/test_tsc_fast.py",
    "security/test_isolation.py",
    "target/test_stub_app.py",
    "test_json_logs.py",
    "work/test_live_steps_running.py", "work/test_live_steps_external.py",
    # Each starts a private Postgres or Redis, a whole `prepare`, or fresh sandboxes per run and per step.
    "merge/test_gate_hang.py", "ops/test_secured_swarm.py", "ops/test_secured_services.py", "ops/test_run_demo.py",
    "reconcile/test_flaky_reds.py", "reconcile/test_confirm.py", "reconcile/test_checks.py",
    "security/test_hostile_gate.py", "security/test_hostile_bisect.py", "security/test_hostile_model_gate.py",
    "security/test_hostile_install.py", "dashboard/test_preview.py",
})


# The longest suites that repeat what a default test already shows (restarts and chaos at every step, a
# second worker killed, the full toolchain under every fault): `make test-slow` runs them, so that
# `make test` stays under fifteen minutes on two cores. Chosen from CI's `--durations=25`.
SLOW = frozenset({
    "e2e/test_chaos.py", "e2e/test_restarts.py",
    "e2e/test_make_swarm.py::test_swarm_restarts_sigkilled_workers_and_still_finishes",
    "e2e/test_reconcile.py",
    "e2e/test_gate.py::test_a_semantic_pair_lands_the_first_and_blames_the_later_naming_the_first",
    "e2e/test_gate.py::test_without_presubmit_the_queue_sends_a_type_error_back_to_its_author_who_lands_it_next",
    "llm/test_sim_faults.py::test_simulated_features_and_faults_against_the_real_toolchain",
    "merge/test_merge_queue.py::test_two_merge_workers_lose_nothing_and_main_only_moves_forward",
    "reconcile/test_revert_flow.py::test_a_reconciler_killed_mid_bisection_leaves_nothing_half_done_and_the_next_tick_finishes",
    "sandbox/test_tsc_fast.py::test_the_snapshot_tsc_says_what_the_plain_tsc_says",
    "e2e/test_preview.py",
    "e2e/test_gate.py::test_presubmit_shows_the_agent_its_type_error_and_it_fixes_it_within_the_attempt",
    "e2e/test_gate.py::test_a_merge_worker_killed_mid_gate_never_moves_main_to_an_untested_tree",
    "e2e/test_gate.py::test_a_red_that_does_not_reproduce_is_recorded_flaky_and_does_not_block",
    "e2e/test_steering.py::test_bad_calls_fail_in_one_line_and_unknown_ids_warn",
    "e2e/test_work.py::test_killed_worker_task_runs_again_once_with_one_branch",
    "e2e/test_endpoints.py",
    "e2e/test_history_run.py",
    "e2e/test_external_agents.py::test_external_agent_fixes_its_type_error_from_the_presubmit_feedback",
    "reconcile/test_page.py::test_a_page_whose_script_never_boots_is_red_soon_after_it_loaded_not_at_the_limit",
    "merge/test_concurrent_merges.py::test_two_unlocked_workers_lose_nothing_and_main_only_moves_forward",
})


def _where(item: pytest.Item) -> str:
    return Path(str(item.path)).resolve().relative_to(TESTS).as_posix()


def tier_markers(item: pytest.Item) -> list[pytest.MarkDecorator]:
    """The tier markers an item gets besides the ones its file declares."""
    where = _where(item)
    fixtures = set(getattr(item, "fixturenames", ()))
    marks = []
    if where.startswith("e2e/") or where in SWARM_FILES or fixtures & WORKER_FIXTURES:
        marks.append(pytest.mark.e2e)
    named = f"{where}::{getattr(item, 'originalname', item.name)}"
    if where in INTEGRATION or named in INTEGRATION:
        marks.append(pytest.mark.integration)
    if where in SLOW or named in SLOW:
        marks.append(pytest.mark.slow)
    return marks


def mark_tiers(items: list[pytest.Item]) -> None:
    for item in items:
        for mark in tier_markers(item):
            item.add_marker(mark)
