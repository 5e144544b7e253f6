"""Steering a run and its tasks: start/stop, add, cancel, list, show, retry, pause, resume, logs."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import click

from agentswarm.ops.cli.base import _ago, _settings, cli


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
    from agentswarm.control.status import latest_run
    from agentswarm.control.steering import stop_run
    from agentswarm.db.session import session_scope

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
    from agentswarm.control.steering import add_task as add
    from agentswarm.db.session import session_scope

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
    from agentswarm.control.steering import cancel_task
    from agentswarm.control.taskview import find_task
    from agentswarm.db.session import session_scope

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

    from agentswarm.control.status import find_run, task_list
    from agentswarm.db.models import TaskKind, TaskStatus
    from agentswarm.db.session import session_scope

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
    from datetime import UTC

    if not iso:
        return "?"
    return _ago((datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds())


@cli.command()
@click.argument("task_ref")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(task_ref: str, as_json: bool) -> None:
    """One task in full: attempts, handoffs, merge attempts and the gate's results, events, its transcript."""
    import json

    from agentswarm.control.taskview import find_task, show_task
    from agentswarm.db.session import session_scope

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
    from agentswarm.control.steering import retry_task
    from agentswarm.control.taskview import find_task
    from agentswarm.db.session import session_scope

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
    from agentswarm.control.steering import pause_run
    from agentswarm.db.session import session_scope

    with session_scope() as db:
        run, changed = pause_run(db, run_id, reason)
    click.echo(f"run {run.id} paused: work in flight finishes, nothing new starts until `agentswarm resume`"
               if changed else f"run {run.id} was already paused")


@cli.command()
@click.option("--run", "run_id", default=None, help="A run id (default: the active run).")
def resume(run_id: str | None) -> None:
    """Let a paused run go on: held tasks are sent and planning starts again."""
    from agentswarm.control.steering import resume_run
    from agentswarm.db.session import session_scope

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
    from agentswarm.control.taskview import follow_transcript

    for line in follow_transcript(task_ref, attempt=attempt, follow=follow, raw=raw, interval_s=interval):
        click.echo(line)
