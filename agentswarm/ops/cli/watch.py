"""Watching a run: status, features, a check of main."""

from __future__ import annotations

from datetime import datetime, timedelta

import click

from agentswarm.ops.cli.base import _ago, _settings, cli


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """The current run: tasks by state, merges, the gate, main's health, tokens, dollars, and the latest events."""
    import json

    from agentswarm.control.status import (
        blocked_state,
        cost_lines,
        costs,
        gate_state,
        latest_run,
        main_state,
        recent_events,
        run_summary,
    )
    from agentswarm.db.session import session_scope

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


def _gate_lines(gate: dict, culprits: int = 3, in_flight: int = 8) -> list[str]:
    """The gate block of `agentswarm status`: one summary line, the runs in flight, then the newest culprits."""
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
    flight = gate.get("in_flight") or []
    if flight or gate.get("speculation_wasted") or gate.get("capacity_per_hour"):
        cap = gate.get("capacity_per_hour")
        lines.append(f"  in flight {len(flight)} run(s), up to {gate['parallel']} lanes ({gate['runner']}) · "
                     f"speculation wasted {gate['speculation_wasted']} run(s) · capacity "
                     + (f"~{cap:,} landings/h at today's run time and batch size" if cap else "not measured yet"))
    for r in flight[:in_flight]:
        where = f"lane {r['lane']}" if r["lane"] is not None else r["stage"]
        lines.append(f"  {where:<8} {r['state']:<8} {r['branches']} branch(es) {r['sha'][:8]} on {r['base'][:8]} "
                     f"batch {r['batch'][:6]} · {r['worker'] or 'no worker yet'} · {r['age_s']:.0f}s"
                     + (f" · attempt {r['attempts']}" if r["attempts"] > 1 else ""))
    for c in gate["recent_culprits"][:culprits]:
        at = c["at"][11:19] if c["at"] else "?"
        lines.append(f"  culprit {at} {c['task']} {c['branch']}: {c['why'][:90]}"
                     + (f" ({c['title'][:40]})" if c["title"] else ""))
    return lines


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
    from agentswarm.control.status import feature_progress
    from agentswarm.db.session import session_scope

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


@cli.command()
@click.option("--now", is_flag=True, help="Run the checks here and wait for them, instead of asking the reconcile worker.")
@click.option("--force", is_flag=True, help="Check main again even if this sha was checked already.")
def reconcile(now: bool, force: bool) -> None:
    """Check main now: the slow checks, and a revert or fix tasks if it is red."""
    import json

    if not now:
        from agentswarm.control.steering import request_reconcile

        request_reconcile(force=force)
        click.echo("reconcile requested: the reconcile worker checks main next (`agentswarm status` shows the result)")
        return
    from agentswarm.reconcile.tick import reconcile_tick

    click.echo(json.dumps(reconcile_tick(_settings(), force=force), indent=2, default=str))
