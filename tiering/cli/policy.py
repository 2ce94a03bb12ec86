"""Lifecycle commands: policy check, plan, why, apply, pin, unpin, pins, report, runs.

Thin: parse, call :mod:`tiering.lifecycle.nightly`, print.
"""

from __future__ import annotations

import datetime as dt
import threading

import click

from tiering.cli.context import Context, pass_ctx, stop_on_signals
from tiering.cli.output import emit_json, json_option, table
from tiering.config import format_size
from tiering.errors import UsageError

policy_option = click.option("--policy", "policy_path", default=None, metavar="FILE",
                             help="Policy file (default: the config's `policy:`, else the shipped default).")
at_option = click.option("--at", "at", default=None, metavar="DATE",
                         help="Plan as if it were this date/time (UTC), e.g. 2027-01-01.")


def _parse_at(value: str | None) -> dt.datetime | None:
    """``--at 2027-01-01`` or a full ISO timestamp; naive means UTC."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--at expects a date like 2027-01-01 or 2027-01-01T02:00:00, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@click.group()
def policy() -> None:
    """Policy files: check them before they run."""


@policy.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--tiers/--no-tiers", "against_tiers", default=None,
              help="Check the tiers it names against the config (default: when a config file is found).")
@pass_ctx
def policy_check(c: Context, files: tuple[str, ...], against_tiers: bool | None) -> None:
    """Validate policy FILES; each error names the file, the rule and the field.

    Tier names are checked against the config's tiers unless --no-tiers is given or no config file is found.
    """
    from tiering.config import find_config_path
    from tiering.lifecycle.criteria import check_policy_against_tiers
    from tiering.lifecycle.inputs import TierFacts
    from tiering.lifecycle.model import load_policy

    tiers: list[TierFacts] | None = None
    if against_tiers or (against_tiers is None and find_config_path(c.config_path).is_file()):
        config = c.config()
        tiers = [TierFacts(name, t.rank, t.capacity, 0, archive=bool(t.archive))
                 for name, t in config.tiers.items()]
    for f in files:
        p = load_policy(f)
        if tiers is not None:
            check_policy_against_tiers(p, tiers)
        unchecked = "" if tiers is not None else "; tier names not checked: no config file"
        click.echo(f"{f}: OK ({len(p.rules)} rules, half-life {p.heat_half_life_days:g} days{unchecked})")


@click.command()
@policy_option
@at_option
@json_option
@pass_ctx
def plan(c: Context, policy_path: str | None, at: str | None, json_out: bool) -> None:
    """Dry run: every move the policy wants now, with its rule, reason and bytes; totals per tier."""
    from tiering.lifecycle.nightly import load_active_policy, make_plan

    app = c.app()
    p = make_plan(app, policy=load_active_policy(app, policy_path), now=_parse_at(at))
    if json_out:
        emit_json(p.to_json())
        return
    if not p.moves:
        click.echo("nothing to move")
    else:
        table(["DATASET", "FROM", "TO", "SIZE", "RULE", "REASON"],
               [[m.label, m.from_tier, m.to_tier, format_size(m.size_bytes), m.rule, m.reason] for m in p.moves])
    if p.skipped_for_budget:
        click.echo(f"\n{len(p.skipped_for_budget)} more moves wait for the budget "
                   f"(max {format_size(p.max_bytes) if p.max_bytes else '-'}, {p.max_datasets or '-'} datasets)")
    click.echo("")
    table(["TIER", "USED NOW", "AFTER", "IN", "OUT", "MOVES IN", "MOVES OUT"],
           [[t.name, format_size(t.used_bytes_before), format_size(t.used_bytes_after), format_size(t.bytes_in),
             format_size(t.bytes_out), t.moves_in, t.moves_out] for t in p.tiers])
    if p.window:
        click.echo(f"\nwindow {p.window}: {'open' if p.window_open else 'closed'} now")
    for note in p.notes:
        click.echo(f"note: {note}")


@click.command()
@click.argument("label")
@policy_option
@at_option
@json_option
@pass_ctx
def why(c: Context, label: str, policy_path: str | None, at: str | None, json_out: bool) -> None:
    """Why NAME[@VERSION] moves or stays: the rule that matched or what blocked it, and when it is next eligible."""
    from tiering.lifecycle.nightly import load_active_policy
    from tiering.lifecycle.nightly import why as do_why

    app = c.app()
    text, decision = do_why(app, label, policy=load_active_policy(app, policy_path), now=_parse_at(at))
    if json_out:
        emit_json(decision)
    else:
        click.echo(text)


@click.command()
@policy_option
@at_option
@click.option("--ignore-window", is_flag=True, help="Run even outside the policy's time window.")
@json_option
@pass_ctx
def apply(c: Context, policy_path: str | None, at: str | None, ignore_window: bool, json_out: bool) -> None:
    """Run the nightly cycle now: resume, plan, and move within the budget and window (what the scheduler runs)."""
    from tiering.catalog.locks import exclusive
    from tiering.lifecycle.nightly import load_active_policy, nightly_cycle

    app = c.app()
    policy = load_active_policy(app, policy_path)
    stop = threading.Event()
    with exclusive(app, "planner"), stop_on_signals(stop):
        result = nightly_cycle(app, policy=policy, now=_parse_at(at), ignore_window=ignore_window, stop=stop)
    if json_out:
        emit_json(result)
    else:
        click.echo(f"policy run {result.run_id}: {result.state}; planned {result.planned}, done {result.done}, "
                   f"failed {result.failed}, moved {format_size(result.bytes_moved)}"
                   + (f"; {result.note}" if result.note else ""))
        for m in result.moves:
            click.echo(f"  {m['state']:7} {m['dataset']} {m['from']} -> {m['to']} ({m['rule']})"
                       + (f": {m['error']}" if m["error"] else ""))
    if result.failed:
        raise SystemExit(7)


@click.command()
@click.argument("label")
@click.option("--tier", required=True, help="Keep it on this tier or a hotter one.")
@click.option("--until", "until", required=True, metavar="DATE", help="Until this date (UTC), e.g. 2027-01-01.")
@click.option("--reason", default="", help="Why, for the next person who wonders.")
@json_option
@pass_ctx
def pin(c: Context, label: str, tier: str, until: str, reason: str, json_out: bool) -> None:
    """Pin NAME[@VERSION] on TIER (or hotter) until a date: policies will not move it below."""
    from tiering.lifecycle.pins import pin as do_pin

    until_at = _parse_at(until)
    assert until_at is not None
    row = do_pin(c.app(), label, tier=tier, until=until_at, reason=reason)
    if json_out:
        emit_json(row)
    else:
        click.echo(f"pinned {row.dataset} on {row.tier} or hotter until {row.until[:10]}")
        from tiering.lifecycle.pins import pin_is_above

        if pin_is_above(c.app(), row):
            click.echo(f"note: {row.dataset} is on {row.current_tier} now; a pin only stops it from going lower. "
                       f"Bring it up with `tiering move {row.dataset} --to {row.tier}`", err=True)


@click.command()
@click.argument("label")
@click.option("--tier", default=None, help="Only the pin on this tier.")
@pass_ctx
def unpin(c: Context, label: str, tier: str | None) -> None:
    """Remove the pins of NAME[@VERSION]."""
    from tiering.lifecycle.pins import unpin as do_unpin

    n = do_unpin(c.app(), label, tier=tier)
    click.echo(f"removed {n} pin(s)")


@click.command()
@json_option
@pass_ctx
def pins(c: Context, json_out: bool) -> None:
    """List pins."""
    from tiering.lifecycle.pins import list_pins

    rows = list_pins(c.app())
    if json_out:
        emit_json(rows)
    else:
        table(["DATASET", "TIER", "UNTIL", "REASON", "BY"],
               [[r.dataset, r.tier, r.until[:10], r.reason, r.actor] for r in rows])


@click.command()
@policy_option
@json_option
@pass_ctx
def report(c: Context, policy_path: str | None, json_out: bool) -> None:
    """Per tier: datasets, bytes, capacity used, cost per month, and a heat histogram."""
    from tiering.lifecycle.nightly import load_active_policy
    from tiering.lifecycle.report import report as do_report

    app = c.app()
    r = do_report(app, policy=load_active_policy(app, policy_path))
    if json_out:
        emit_json(r)
        return
    table(["TIER", "DATASETS", "USED", "CAPACITY", "USED %", "$/MONTH", "HEAT HISTOGRAM (datasets)"],
           [[t["name"], t["datasets"], format_size(t["used_bytes"]),
             format_size(t["capacity_bytes"]) if t["capacity_bytes"] else "unbounded",
             f"{t['used_pct']:.1f}" if t["used_pct"] is not None else "-", f"{t['cost_per_month']:.2f}",
             " ".join(f"{k}:{v}" for k, v in t["heat_histogram"].items())] for t in r["tiers"]])
    click.echo(f"\n{r['datasets']} datasets, ${r['cost_per_month']:.2f} per month; "
               f"heat half-life {r['heat_half_life_days']:g} days")


@click.command()
@click.option("--limit", default=20, show_default=True)
@json_option
@pass_ctx
def runs(c: Context, limit: int, json_out: bool) -> None:
    """Recent policy runs (nightly and `apply`)."""
    from tiering.lifecycle.nightly import policy_runs

    rows = policy_runs(c.app(), limit=limit)
    if json_out:
        emit_json(rows)
        return
    table(["RUN", "KEY", "STARTED", "STATE", "PLANNED", "DONE", "FAILED", "MOVED"],
           [[r["id"], r["run_key"] or "-", r["started_at"][:19], r["state"], r["planned"], r["done"], r["failed"],
             format_size(r["bytes_moved"])] for r in rows])
