"""The `agentswarm` command."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agentswarm.errors import SwarmError

if TYPE_CHECKING:
    from agentswarm.config import Settings


def _settings() -> Settings:
    from agentswarm.config import get_settings

    return get_settings()


@click.group()
def cli() -> None:
    """AgentSwarm: a massively parallel autonomous coding system."""
    from agentswarm.errors import ConfigError
    from agentswarm.logs import configure_cli

    try:
        configure_cli(_settings().log_format.value)
    except ConfigError:
        pass  # the command itself reads the settings and says what is wrong


@cli.command()
@click.option("--services/--no-services", default=True, help="Start Redis/Postgres if they are down.")
def check(services: bool) -> None:
    """Validate the settings and make sure Redis and Postgres answer."""
    from agentswarm.db.session import check_database
    from agentswarm.ops.services import (
        check_gate,
        check_reconciler,
        check_sandboxes,
        ensure_postgres,
        ensure_redis,
    )

    s = _settings()
    if services:
        click.echo(f"redis: {ensure_redis(s.given_redis_url, s.service_secrets_dir)}")
        click.echo(f"postgres: {ensure_postgres(s.database_admin_url)}")
    check_database(s.database_url)
    click.echo(f"sandboxes: {check_sandboxes(s)}")
    click.echo(f"gate: {check_gate(s)}")
    click.echo(f"reconciler: {check_reconciler(s)}")
    mode = "demo (built-in simulator)" if s.demo_mode else s.llm_base_url
    click.echo(f"settings ok: model {s.llm_model} at {mode}, {s.max_workers} workers, "
               f"sandbox {s.sandbox_backend.value}, merge {s.merge_strategy.value}")


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Create or migrate the schema (running it twice changes nothing)."""
    from agentswarm.db.migrate import upgrade
    from agentswarm.db.session import check_database

    s = _settings()
    check_database(s.database_url)
    upgrade(s.database_url, revision)
    click.echo(f"database at {revision}")


@db.command("current")
def db_current() -> None:
    """Show the schema revision."""
    from agentswarm.db.migrate import current

    current(_settings().database_url)


@cli.command("llm-check")
def llm_check() -> None:
    """Probe the configured endpoint: models, a chat, and a tool call (what a swarm relies on)."""
    from agentswarm.llm.factory import client_from_settings
    from agentswarm.ops.llm_check import check_endpoint

    s = _settings()
    if s.demo_mode:
        raise click.ClickException("LLM_BASE_URL is not set (demo mode uses the built-in simulator)")
    report = check_endpoint(client_from_settings(s), s.llm_model)
    for line in report.lines:
        click.echo(f"{'ok  ' if line.ok else 'FAIL'} {line.name:<11} {line.detail}")
    if not report.ok:
        raise SystemExit(1)


@cli.command()
@click.option("--smoke", is_flag=True, help="Then one real task from plan to merged, in a scratch run on a scratch hub.")
@click.option("--smoke-timeout", default=600.0, show_default=True, type=click.FloatRange(30, 7200),
              help="Seconds the smoke run may take.")
def doctor(smoke: bool, smoke_timeout: float) -> None:
    """The checks before a run, one line each with the fix: services, schema, hub, Node, sandboxes, endpoints."""
    from agentswarm.ops.doctor import run_doctor

    if not run_doctor(smoke=smoke, echo=click.echo, smoke_timeout_s=smoke_timeout):
        raise SystemExit(1)


@cli.command("fake-llm")
@click.option("--port", default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--latency", default=0.0, envvar="SIM_LATENCY_S", show_envvar=True,
              type=click.FloatRange(0, 600), help="Seconds added to every reply (demo mode: SIM_LATENCY_S).")
def fake_llm(port: int, host: str, latency: float) -> None:
    """Serve the OpenAI-compatible fake LLM (the swarm simulator) until Ctrl-C.

    SIM_FAULTS (kind:rate,...) and SIM_FAULT_ATTEMPTS in the environment make its worker break branches.
    """
    from agentswarm.testing.fake_llm import serve_forever
    from agentswarm.testing.sim_faults import faults_from_env

    try:
        faults, attempts = faults_from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"fake LLM at http://{host}:{port}/v1 (Ctrl-C to stop)")
    serve_forever(port=port, host=host, latency_s=latency, sim_faults=faults, sim_fault_attempts=attempts)


@cli.command()
def init() -> None:
    """Create the local hub from TARGET_REPO_PATH (unless GIT_REPO_URL is set) and load FEATURES.json."""
    from agentswarm.db.session import session_scope
    from agentswarm.git.hub import prepare_hub
    from agentswarm.lifecycle.features import sync_features

    s = _settings()
    url, sha = prepare_hub(s.git_repo_url or None, s.hub_path, s.target_repo_path)
    click.echo(f"hub {url} at main {sha[:12] if sha else '?'}")
    features = s.target_repo_path / "FEATURES.json"
    if features.exists():
        with session_scope() as db:
            n = sync_features(db, features)
        click.echo(f"features: {n} loaded from {features}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """The current run: tasks by state, merges, the gate, main's health, tokens, dollars, and the latest events."""
    import json

    from agentswarm.db.session import session_scope
    from agentswarm.ops.status import (
        blocked_state,
        cost_lines,
        costs,
        gate_state,
        latest_run,
        main_state,
        recent_events,
        run_summary,
    )

    settings = _settings()
    with session_scope() as db:
        run = latest_run(db)
        if run is None:
            click.echo("no run yet: start one with `make swarm` or `agentswarm run start`")
            return
        summary, events = run_summary(db, run), recent_events(db, run.id, 15)
        gate = gate_state(db, run, settings)
        main = main_state(db, run, settings)
        blocked = blocked_state(db, run)
        cost = costs(db, run, settings)
    if as_json:
        click.echo(json.dumps({**summary, "gate": gate, "main": main, "blocked": blocked, "costs": cost,
                               "events": events}, indent=2))
        return
    paused = ", paused: nothing new starts until `agentswarm resume`" if summary["paused_at"] else ""
    click.echo(f"run {summary['run']} ({summary['status']}{paused}{', demo' if summary['demo'] else ''})"
               + (f" stopped: {summary['stop_reason']}" if summary["stop_reason"] else ""))
    click.echo("tasks:  " + ", ".join(f"{k} {v}" for k, v in sorted(summary["tasks"].items())) or "none")
    click.echo("merges: " + (", ".join(f"{k} {v}" for k, v in sorted(summary["merges"].items())) or "none")
               + f"; {summary['merged_last_hour']} in the last hour")
    for line in _gate_lines(gate):
        click.echo(line)
    for line in _main_lines(main):
        click.echo(line)
    for line in _blocked_lines(blocked, settings.run_stuck_grace_s):
        click.echo(line)
    llm = summary["llm"]
    click.echo(f"llm:    {llm['calls']} calls, {llm['prompt_tokens'] + llm['completion_tokens']} tokens, "
               f"${llm['cost_usd']:.4f}")
    for line in cost_lines(cost):
        click.echo(line)
    for e in events:
        click.echo(f"  {e['at']} {e['kind']:<18} {e['task'] or '':<12} {e['message'][:90]}")


def _blocked_lines(blocked: dict, grace_s: int) -> list[str]:
    """The blocked block of `agentswarm status`: what failed for good, what waits on it, and a stuck run's end."""
    lines = [f"blocked: {blocked['blocked']} feature{'s' if blocked['blocked'] != 1 else ''} wait on "
             f"{blocked['failed_for_good']} that failed for good"] if blocked["failed_for_good"] else []
    for root in blocked["features"]:
        line = f"  {root['feature']} {(root['reason'] or 'failed for good')[:160]}"
        if root["blocks"]:
            line += f" · blocks {', '.join(root['blocks'][:8])}" + (
                f" +{len(root['blocks']) - 8}" if len(root["blocks"]) > 8 else "")
        if root["retry"]:
            line += f" · `agentswarm retry {root['retry']}`"
        lines.append(line)
    stuck = blocked["stuck"]
    if stuck:
        since = datetime.fromisoformat(stuck["since"])
        lines.append(f"stuck:  {stuck['reason'][:200]}")
        lines.append(f"        since {since.strftime('%H:%M:%S')}; the run stops at "
                     f"{(since + timedelta(seconds=grace_s)).strftime('%H:%M:%S')} unless a person acts")
    return lines


def _gate_lines(gate: dict, culprits: int = 3) -> list[str]:
    """The gate block of `agentswarm status`: one summary line, then the newest culprits."""
    if gate["mode"] == "off":
        return ["gate:   off (main moves to whatever merges cleanly)"]
    t = gate["in_test"]
    now = (f"testing batch {t['batch_id'][:6]}… ({t['batch_size'] or t['size']} branches, {t['stage']}) "
           f"for {t['batch_seconds']:.0f}s" if t else "idle")
    green = f"main last green {gate['last_green'][:10]}" if gate["last_green"] else "nothing landed through the gate yet"
    lines = [f"gate:   {gate['mode']}, presubmit {'on' if gate['presubmit'] else 'off'} — {now} · {green} · "
             f"{gate['batches']} batches ({gate['red_batches']} red), {gate['runs']} gate runs in "
             f"{gate['run_seconds']:.0f}s · {gate['culprits']} culprits, {gate['flaky']} flaky, "
             f"{gate['presubmit_caught']} caught by presubmit"]
    for c in gate["recent_culprits"][:culprits]:
        at = c["at"][11:19] if c["at"] else "?"
        lines.append(f"  culprit {at} {c['task']} {c['branch']}: {c['why'][:90]}"
                     + (f" ({c['title'][:40]})" if c["title"] else ""))
    return lines


def _ago(seconds: float | None) -> str:
    """12s, 3m05s, 2h10m."""
    if seconds is None:
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _main_lines(main: dict, quarantined: int = 5) -> list[str]:
    """The main block of `agentswarm status`: main's verdict and health, the quarantined tests, the newest red."""
    h, now = main["health"], main["main"]
    if now is None:
        return [f"main:   not checked yet (the reconciler checks every {_ago(main['interval_s'])}; "
                "`agentswarm reconcile` asks for a check now)"]
    head = f"main:   {now['result']} {now['sha'][:10]} (checked {_ago(now['age_s'])} ago"
    head += f", red for {_ago(h['red_for_s'])})" if h["red_for_s"] is not None else ")"
    parts = [head]
    if h["shas_checked"]:
        parts.append(f"{main['shas_green']}/{h['shas_checked']} shas green ({h['green_share']:.0%})")
    ttg = h["time_to_green_s"]
    if ttg["spells"]:
        parts.append(f"time to green p50 {_ago(ttg['p50'])} p95 {_ago(ttg['p95'])}")
    r = h["reverts"]
    if r["made"]:
        parts.append(f"{r['made']} revert{'s' if r['made'] != 1 else ''} ({r['landed']} landed"
                     + (f", {r['failed']} failed)" if r["failed"] else ")"))
    if h["culprits_by_kind"]:
        parts.append("culprits " + ", ".join(f"{k} {n}" for k, n in h["culprits_by_kind"].items()))
    f = main["flaky"]
    if f["observed"] or f["quarantined"] or f["released"]:
        parts.append(f"flaky {f['observed']} observed, {f['quarantined']} quarantined, {f['released']} released")
    lines = [" · ".join(parts)]
    for q in main["quarantined"][:quarantined]:
        lines.append(f"  quarantined: {q['name'][:100]} ({q['observations']} observation"
                     f"{'s' if q['observations'] != 1 else ''}, {q['passes_in_row']}/{q['release_after']} passes "
                     "to release" + (f", fix task {q['fix_task']})" if q["fix_task"] else ")"))
    if len(main["quarantined"]) > quarantined:
        lines.append(f"  … {f['quarantined'] - quarantined} more quarantined")
    red = main["last_red"]
    if red:
        at = red["at"][11:19] if red["at"] else "?"
        line = f"  last red {red['sha'][:10]} at {at}: {(red['why'] or 'checks failed')[:80]}"
        if red["failing_tests"]:
            more = red["failing_count"] - 1
            line += f" ({red['failing_tests'][0][:60]}" + (f" +{more})" if more > 0 else ")")
        if red["culprit_task"] or red["culprit_sha"]:
            line += f" · culprit {red['culprit_task'] or '?'} ({(red['culprit_sha'] or '?')[:10]})"
        if red["revert_task"]:
            state = "landed" if red["revert_landed"] else red["revert_status"] or "?"
            line += f" · revert {red['revert_task']} ({state})"
        elif red["action"] == "fix":
            line += " · fix tasks asked for"
        elif red["bisect_reason"]:
            line += f" · no revert: {red['bisect_reason'][:60]}"
        lines.append(line)
    return lines


@cli.command()
def features() -> None:
    """Feature progress by category."""
    from agentswarm.db.session import session_scope
    from agentswarm.ops.status import feature_progress

    with session_scope() as db:
        progress = feature_progress(db)
    if not progress:
        click.echo("no features loaded: run `agentswarm init`")
        return
    total = {"done": 0, "all": 0}
    for category, counts in progress.items():
        n = sum(counts.values())
        done = counts.get("done", 0)
        total["done"] += done
        total["all"] += n
        bar = "#" * round(20 * done / n) if n else ""
        click.echo(f"{category:<12} {done:>3}/{n:<3} [{bar:<20}] "
                   + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "done"))
    click.echo(f"{'total':<12} {total['done']:>3}/{total['all']}")


@cli.group()
def run() -> None:
    """Start or stop a run."""


@run.command("start")
def run_start() -> None:
    """Start a run (or show the one already active)."""
    from agentswarm.db.session import session_scope
    from agentswarm.lifecycle.runs import start_run

    with session_scope() as db:
        r = start_run(db, _settings())
        click.echo(f"run {r.id} active")


@run.command("stop")
@click.option("--reason", default="stopped by a person")
def run_stop(reason: str) -> None:
    """Stop the active run: no new work is planned; tasks in flight finish."""
    from agentswarm.db.session import session_scope
    from agentswarm.ops.status import latest_run
    from agentswarm.ops.steering import stop_run

    with session_scope() as db:
        r = latest_run(db)
        if r is None or r.status != "active":
            click.echo("no active run")
            return
        stop_run(db, r.id, reason)
        click.echo(f"run {r.id} stopped: {reason}")


@cli.command("add-task")
@click.argument("description")
@click.option("--scope", multiple=True, help="A path the task may touch (repeatable).")
@click.option("--priority", default=3, type=click.IntRange(1, 10), show_default=True, help="1 is the most urgent.")
@click.option("--kind", type=click.Choice(["manual", "fix"]), default="manual", show_default=True)
@click.option("--key", default=None, help="Adding again with the same key returns the first task, not a twin.")
@click.option("--title", default="")
@click.option("--run", "run_id", default=None, help="A run id (default: the active run).")
@click.option("--feature", "features", multiple=True,
              help="A feature the task is for (repeatable): done when it lands; what waits on it is unblocked.")
def add_task(description: str, scope: tuple[str, ...], priority: int, kind: str, key: str | None, title: str,
             run_id: str | None, features: tuple[str, ...]) -> None:
    """Inject a task into the active run (steer the swarm by hand); `celery call agentswarm.add_task` does the same."""
    from agentswarm.db.session import session_scope
    from agentswarm.ops.steering import add_task as add

    with session_scope() as db:
        task, created = add(db, _settings(), description, list(scope), priority, title, run_id, kind=kind, key=key,
                            features=list(features))
        line = (f"task {task.id} added ({task.kind}, priority {task.priority})" if created
                else f"task {task.id} already added with key {key} ({task.kind}, {task.status})")
    click.echo(line)


@cli.command("cancel-task")
@click.argument("task_ref")
def cancel(task_ref: str) -> None:
    """Cancel a pending or blocked task (an id or a unique prefix of one)."""
    from agentswarm.db.session import session_scope
    from agentswarm.ops.steering import cancel_task
    from agentswarm.ops.taskview import find_task

    with session_scope() as db:
        task = cancel_task(db, find_task(db, task_ref).id)
    click.echo(f"task {task.id} cancelled")


@cli.command()
@click.option("--state", "states", multiple=True, help="Only tasks in this state (repeatable): "
              "pending, assigned, running, complete, failed, blocked, cancelled.")
@click.option("--kind", "kinds", multiple=True, help="Only this kind (repeatable): feature, fix, conflict, manual, revert.")
@click.option("--limit", default=30, show_default=True, type=click.IntRange(1, 500))
@click.option("--run", "run_id", default=None, help="A run id (default: the active or latest run).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tasks(states: tuple[str, ...], kinds: tuple[str, ...], limit: int, run_id: str | None, as_json: bool) -> None:
    """List a run's tasks, most recently changed first."""
    import json

    from agentswarm.db.models import TaskKind, TaskStatus
    from agentswarm.db.session import session_scope
    from agentswarm.ops.status import find_run, task_list

    _check_choices("state", states, TaskStatus)
    _check_choices("kind", kinds, TaskKind)
    with session_scope() as db:
        run = find_run(db, run_id)
        if run is None:
            raise click.ClickException(f"no run {run_id}" if run_id else "no run yet")
        rows = task_list(db, run.id, list(states) or None, limit, list(kinds) or None)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo(f"run {run.id}: no task" + (" matches" if states or kinds else " yet"))
        return
    click.echo(f"{'id':<12} {'state':<9} {'kind':<8} {'pri':>3} {'att':>5} {'age':>6}  title")
    for r in rows:
        click.echo(f"{r['id']:<12} {r['status']:<9} {r['kind']:<8} {r['priority']:>3} "
                   f"{r['attempts']:>2}/{r['max_attempts']:<2} {_age(r['updated_at']):>6}  {(r['title'] or '')[:80]}")


def _check_choices(name: str, given: tuple[str, ...], enum: type[StrEnum]) -> None:
    known = [m.value for m in enum]
    for value in given:
        if value not in known:
            raise click.BadParameter(f"{value!r} is not one of {', '.join(known)}", param_hint=f"--{name}")


def _age(iso: str | None) -> str:
    from datetime import UTC, datetime

    if not iso:
        return "?"
    return _ago((datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds())


@cli.command()
@click.argument("task_ref")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(task_ref: str, as_json: bool) -> None:
    """One task in full: attempts, handoffs, merge attempts and the gate's results, events, its transcript."""
    import json

    from agentswarm.db.session import session_scope
    from agentswarm.ops.taskview import find_task, show_task

    with session_scope() as db:
        d = show_task(db, find_task(db, task_ref))
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
        return
    for line in _show_lines(d):
        click.echo(line)


def _show_lines(d: dict) -> list[str]:
    """`agentswarm show` as text."""
    lines = [f"task {d['id']} · {d['kind']} · {d['status']} · priority {d['priority']} · attempt "
             f"{d['attempts']}/{d['max_attempts']} · run {d['run']}",
             f"  title:   {d['title']}", f"  branch:  {d['branch']} (base {(d['base_sha'] or '?')[:10]})",
             f"  scope:   {', '.join(d['scope']) or '(none)'}"]
    for label, key in (("parent", "parent"), ("made for", "origin"), ("key", "request_key")):
        if d.get(key):
            lines.append(f"  {label + ':':<8} {d[key]}")
    if d.get("feature_ids"):
        lines.append(f"  features: {', '.join(d['feature_ids'])}")
    lines.append(f"  created {d['created_at'] or '?'}, started {d['started_at'] or '-'}, "
                 f"finished {d['finished_at'] or '-'}")
    if d.get("error"):
        lines.append(f"  error:   {_one_line(d['error'], 200)}")
    if d.get("summary"):
        lines.append(f"  summary: {_one_line(d['summary'], 200)}")
    lines.append("description:")
    lines.extend("  " + ln for ln in (d.get("description") or "").strip().splitlines()[:12])
    lines.append(f"attempts ({len(d['handoffs'])} handed off):" if d["handoffs"] else "attempts: none handed off yet")
    for h in d["handoffs"]:
        lines.append(f"  #{h['attempt']} {h['status']:<8} {len(h['commits'])} commits, {len(h['files_changed'])} files "
                     f"+{h['insertions']}/-{h['deletions']}, {h['llm_calls']} llm calls, "
                     f"{h['prompt_tokens'] + h['completion_tokens']} tokens, {h['duration_s']:.0f}s"
                     + (f" — {_one_line(h['error'], 120)}" if h.get("error") else ""))
    lines.append(f"merge attempts ({len(d['merges'])}):" if d["merges"] else "merge attempts: none")
    for m in d["merges"]:
        line = f"  {m['status']:<9} {m['strategy']}"
        if m.get("batch"):
            line += f" batch {m['batch'][:6]} #{m['position']}"
        if m.get("main_after"):
            line += f" main {(m['main_before'] or '?')[:8]}..{m['main_after'][:8]}"
        if m.get("conflict_files"):
            line += f" conflicts: {', '.join(m['conflict_files'][:5])}"
        if m.get("error"):
            line += f" — {_one_line(m['error'], 100)}"
        lines.append(line)
        g = m.get("gate")
        if g:
            lines.append(f"    gate {g['result']}" + (f" ({g['seconds']:.0f}s)" if g.get("seconds") else "")
                         + (" · flaky seen" if g.get("flaky") else "") + (f" — {g['why']}" if g.get("why") else ""))
            lines.extend(f"      exit {c['exit']}{' (timed out)' if c['timed_out'] else ''}: {c['command']}"
                         for c in g["commands"])
            lines.extend(f"      failing: {t}" for t in g["tests"][:5])
    tr = d["transcript"]
    if tr["attempt"] is not None:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(tr["kinds"].items()))
        lines.append(f"transcript of attempt {tr['attempt']}{' (live: the attempt is running)' if tr['live'] else ''}:"
                     f" {tr['steps']} steps ({kinds or 'none yet'}); `agentswarm logs {d['id']}` shows them")
        lines.extend("  " + s for s in tr["last"])
    lines.append(f"events (latest {len(d['events'])}):")
    lines.extend(f"  {(e['at'] or '')[11:19]} {e['kind']:<20} {_one_line(e['message'], 110)}" for e in d["events"])
    return lines


def _one_line(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@cli.command()
@click.argument("task_ref")
@click.option("--reason", default="retried by a person")
def retry(task_ref: str, reason: str) -> None:
    """Send a failed or blocked task back to pending, with a fresh allowance of attempts."""
    from agentswarm.db.session import session_scope
    from agentswarm.ops.steering import retry_task
    from agentswarm.ops.taskview import find_task

    with session_scope() as db:
        task = retry_task(db, _settings(), find_task(db, task_ref).id, reason)
        line = (f"task {task.id} pending again (attempt {task.attempts + 1} of up to {task.max_attempts}"
                + (", sent to a worker)" if task.enqueued_at else ", waiting for a free slot, its scope or a resume)"))
    click.echo(line)


@cli.command()
@click.option("--reason", default="paused by a person")
@click.option("--run", "run_id", default=None, help="A run id (default: the active run).")
def pause(reason: str, run_id: str | None) -> None:
    """Hold the run: nothing new is sent to workers or planned; work in flight finishes and merges."""
    from agentswarm.db.session import session_scope
    from agentswarm.ops.steering import pause_run

    with session_scope() as db:
        run, changed = pause_run(db, run_id, reason)
    click.echo(f"run {run.id} paused: work in flight finishes, nothing new starts until `agentswarm resume`"
               if changed else f"run {run.id} was already paused")


@cli.command()
@click.option("--run", "run_id", default=None, help="A run id (default: the active run).")
def resume(run_id: str | None) -> None:
    """Let a paused run go on: held tasks are sent and planning starts again."""
    from agentswarm.db.session import session_scope
    from agentswarm.ops.steering import resume_run

    with session_scope() as db:
        run, sent = resume_run(db, run_id)
    click.echo(f"run {run.id} running: {len(sent)} waiting task{'s' if len(sent) != 1 else ''} sent")


@cli.command()
@click.argument("task_ref")
@click.option("--attempt", type=click.IntRange(1), default=None, help="Default: the latest attempt.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing steps as the agent takes them, until the task ends.")
@click.option("--raw", is_flag=True, help="The JSONL lines as stored.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.1, 60), help="Seconds between polls.")
def logs(task_ref: str, attempt: int | None, follow: bool, raw: bool, interval: float) -> None:
    """An agent's transcript: every step, live while the attempt runs (`--follow`)."""
    from agentswarm.ops.taskview import follow_transcript

    for line in follow_transcript(task_ref, attempt=attempt, follow=follow, raw=raw, interval_s=interval):
        click.echo(line)


@cli.command()
@click.option("--now", is_flag=True, help="Run the checks here and wait for them, instead of asking the reconcile worker.")
@click.option("--force", is_flag=True, help="Check main again even if this sha was checked already.")
def reconcile(now: bool, force: bool) -> None:
    """Check main now: the slow checks, and a revert or fix tasks if it is red."""
    import json

    if not now:
        from agentswarm.ops.steering import request_reconcile

        request_reconcile(force=force)
        click.echo("reconcile requested: the reconcile worker checks main next (`agentswarm status` shows the result)")
        return
    from agentswarm.reconcile.tick import reconcile_tick

    click.echo(json.dumps(reconcile_tick(_settings(), force=force), indent=2, default=str))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="Default: DASHBOARD_PORT (8080).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Without AGENTSWARM_DASHBOARD_TOKEN: the token kept in this file (a random one is written "
              "there on first start).")
def dashboard(host: str, port: int | None, token_file: Path | None) -> None:
    """Serve the live web dashboard."""
    import os

    from agentswarm.dashboard import serve
    from agentswarm.dashboard.app import TOKEN_ENV, token_from_file

    if token_file is not None and not os.environ.get(TOKEN_ENV, "").strip():
        os.environ[TOKEN_ENV] = token_from_file(token_file)
        click.echo(f"dashboard token: in {token_file} (the page asks for it once per tab)")
    s = _settings()
    serve(host, port or s.dashboard_port, s)  # prints where it listens; refuses off loopback without a token


@cli.command()
def prepare() -> None:
    """What `swarm` does before it starts the processes: services checked, schema migrated, hub made, features
    loaded, a run active (the one already active, if any), and main's first check asked for. Safe to repeat."""
    from agentswarm.ops.swarm import prepare as prepare_swarm
    from agentswarm.queue.names import RECONCILE_TICK
    from agentswarm.queue.send import send_tick

    run_id = prepare_swarm(_settings())
    send_tick(RECONCILE_TICK)
    click.echo(f"run {run_id} active")


@cli.command()
def swarm() -> None:
    """Run a whole swarm (what `make swarm` does); demo mode when no LLM_BASE_URL is set."""
    from agentswarm.ops.swarm import launch

    launch(_settings())


def main(argv: list[str] | None = None) -> None:
    """Entry point: expected failures print one line and exit 2, never a traceback."""
    try:
        cli.main(args=argv, prog_name="agentswarm", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SwarmError as exc:
        click.echo(f"agentswarm: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:
        line = _database_error_line(exc)
        if line is None:
            raise
        click.echo(f"agentswarm: {line}", err=True)
        sys.exit(2)


def _database_error_line(exc: BaseException) -> str | None:
    """One line for a database that is missing, down or without its schema (any verb); None for anything else."""
    from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

    from agentswarm.agent.scrubbing import scrub, secrets_from_env

    if not isinstance(exc, DBAPIError):
        return None
    text = str(exc.orig if exc.orig is not None else exc).strip()
    reason = scrub(text.splitlines()[0] if text else type(exc).__name__, secrets_from_env())[:300]
    if isinstance(exc, OperationalError):
        return f"DATABASE_URL: cannot reach Postgres ({reason})"
    if isinstance(exc, ProgrammingError) and "does not exist" in reason:
        return f"DATABASE_URL: the database has no schema yet ({reason}); run `agentswarm db upgrade`"
    return f"DATABASE_URL: database error ({reason})"


if __name__ == "__main__":
    main()
