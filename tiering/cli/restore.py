"""Restore commands:

\b
  tiering restore NAME[@VERSION] --to hot --days 7 [--priority high|normal|low] [--wait] [--json]
  tiering restore cancel ID
  tiering restores [--all] [--dispatch] [--sweep] [--json]

and the ``--restore --wait`` path of ``tiering resolve`` (:func:`restore_for_resolve`). Thin: parse, call
:mod:`tiering.restore.requests`, print.
"""

from __future__ import annotations

import threading
from typing import Any

import click

from tiering.app import App
from tiering.cli.context import Context, pass_ctx, stop_on_signals
from tiering.cli.output import emit_json, json_option, progress_display, show_progress, table
from tiering.config import format_size
from tiering.errors import DatasetArchived, UsageError
from tiering.restore.dispatch import dispatch_restores, restore_and_wait
from tiering.restore.requests import (
    DEFAULT_DAYS,
    PENDING,
    RestoreView,
    cancel_restore,
    format_duration,
    list_restores,
    request_restore,
)
from tiering.restore.sweep import sweep_expired

#: exit code of ``restore --wait`` when the restore failed (a copy error), as ``tiering move`` does
EXIT_FAILED = 7
#: exit code when ``--wait`` gave up while the restore carries on (EX_TEMPFAIL)
EXIT_STILL_RUNNING = 75


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "-"


def _hottest(app: App) -> str:
    return app.config.tiers_by_rank()[0]


def _describe(v: RestoreView) -> str:
    base = f"restore request {v.id}: {v.dataset} -> {v.target}, {format_size(v.bytes_total)}, priority {v.priority}"
    if v.state == "ready":
        return f"{base}: ready until {_when(v.expires_at)}" + (f" ({v.note})" if v.note else "")
    if v.state == "failed":
        return f"{base}: failed: {v.last_error}"
    if v.state in PENDING:
        eta = f", ETA {format_duration(v.eta_seconds)}" if v.eta_seconds is not None else ""
        return f"{base}: {v.state}, {v.progress:.0%} done{eta}" + (f" ({v.note})" if v.note else "")
    return f"{base}: {v.state}"


def _run_and_wait(
    app: App, label: str, *, to: str, days: int, priority: str, timeout: float | None, show: bool
) -> RestoreView:
    stop = threading.Event()
    with stop_on_signals(stop), progress_display(f"restore {label} -> {to}", show) as prog:
        return restore_and_wait(app, label, to=to, days=days, priority=priority, progress=prog, stop=stop,
                                max_wait_seconds=timeout if timeout is not None else 7 * 86400.0)


@click.command("restore")
@click.argument("args", nargs=-1, required=True, metavar="NAME[@VERSION] | cancel ID")
@click.option("--to", "to", default=None, metavar="TIER", help="Tier to make it readable on (default: the hottest).")
@click.option("--days", default=DEFAULT_DAYS, show_default=True, type=click.IntRange(min=1),
              help="Keep the restored copy this many days after it is ready.")
@click.option("--priority", type=click.Choice(["high", "normal", "low"]), default="normal", show_default=True,
              help="Queue order; on a Glacier tier also the retrieval tier (Expedited, Standard, Bulk).")
@click.option("--wait", is_flag=True, help="Run the restore now (not on the next dispatch) and wait until it is ready.")
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="With --wait: stop waiting after this long (the restore carries on).")
@json_option
@click.option("--progress/--no-progress", default=None,
              help="Draw a progress bar on stderr with --wait (default: when it is a terminal).")
@pass_ctx
def restore(
    c: Context, args: tuple[str, ...], to: str | None, days: int, priority: str, wait: bool, timeout: float | None,
    json_out: bool, progress: bool | None,
) -> None:
    """Make an archived dataset readable on a faster tier for some days, or cancel such a request.

    \b
    Requests for the same dataset and tier share one copy; the later expiry wins. The copy is staged: the
    archive stays the master, and `tiering restores --sweep` (the scheduler) removes the copy once it expires.
    \b
    Examples:
      tiering restore imagenet-mini@2024-01 --to hot --days 7
      tiering restore imagenet-mini@2024-01 --to hot --days 7 --priority high --wait
      tiering restore cancel 12
    """
    app = c.app()
    if args[0] == "cancel" and len(args) == 2:
        if not args[1].isdigit():
            raise UsageError(f"usage: tiering restore cancel ID (an id from `tiering restores`), got {args[1]!r}")
        view = cancel_restore(app, int(args[1]))
        if json_out:
            emit_json(view)
        else:
            click.echo(f"cancelled restore request {view.id} of {view.dataset} -> {view.target}")
        return
    if len(args) != 1:
        raise UsageError("usage: tiering restore NAME[@VERSION] [--to TIER] [--days N] [--wait], "
                         "or tiering restore cancel ID")
    target = to or _hottest(app)
    if wait:
        view = _run_and_wait(app, args[0], to=target, days=days, priority=priority, timeout=timeout,
                             show=show_progress(json_out, progress))
    else:
        view = request_restore(app, args[0], to=target, days=days, priority=priority)
    if json_out:
        emit_json(view)
    else:
        click.echo(_describe(view))
        if view.state == "queued":
            click.echo("the dispatcher takes it on its next run (`tiering restores --dispatch` runs it now); "
                       "`tiering restores` shows progress", err=True)
    if view.state == "failed":
        raise SystemExit(EXIT_FAILED)
    if wait and view.state in PENDING:
        click.echo("still running; `tiering restores` shows progress", err=True)
        raise SystemExit(EXIT_STILL_RUNNING)


@click.command("restores")
@click.option("--all", "include_finished", is_flag=True, help="Also expired, cancelled and failed requests.")
@click.option("--dispatch", is_flag=True, help="First serve queued requests now, as the scheduler does.")
@click.option("--sweep", is_flag=True, help="First remove staged copies whose expiry has passed.")
@json_option
@pass_ctx
def restores(c: Context, include_finished: bool, dispatch: bool, sweep: bool, json_out: bool) -> None:
    """The restore queue: id, dataset, target, who, priority, state, size, progress, ETA, expiry."""
    app = c.app()
    if sweep:
        swept = sweep_expired(app)
        for gone in swept.removed:
            click.echo(f"expired: {gone['dataset']} on {gone['tier']}: {gone['replicas']} copies, "
                       f"{format_size(int(str(gone['bytes'])))} freed", err=True)
    if dispatch:
        for g in dispatch_restores(app).groups:
            click.echo(f"dispatched {g.dataset} -> {g.target}: {g.state}" + (f" ({g.error})" if g.error else ""),
                       err=True)
    rows = list_restores(app, include_finished=include_finished)
    if json_out:
        emit_json(rows)
        return
    if not rows:
        click.echo("no restore requests" + ("" if include_finished else " under way (--all shows finished ones)"))
        return
    table(
        ["ID", "DATASET", "TO", "WHO", "PRIORITY", "STATE", "SIZE", "PROGRESS", "ETA", "EXPIRES", "NOTE"],
        [[r.id, r.dataset, r.target, r.requested_by, r.priority, r.state, format_size(r.bytes_total),
          f"{r.progress:.0%}", format_duration(r.eta_seconds) if r.state in PENDING else "-", _when(r.expires_at),
          (r.last_error or r.note or "")[:80]] for r in rows],
    )


def restore_for_resolve(c: Context, label: str, *, to: str | None, days: int, wait: bool) -> None:
    """``tiering resolve --restore``: file (and with ``wait`` run) a restore of an archived dataset.

    Returns once the dataset is readable on the target; otherwise raises ``DatasetArchived`` saying which
    request was filed, or exits like ``tiering restore --wait`` when the restore failed or is still running.
    """
    app = c.app()
    target = to or _hottest(app)
    if wait:
        view = _run_and_wait(app, label, to=target, days=days, priority="normal", timeout=None,
                             show=show_progress(False, None))
    else:
        view = request_restore(app, label, to=target, days=days)
    if view.state == "ready":
        return
    if view.state == "failed":
        click.echo(f"error: {_describe(view)}", err=True)
        raise SystemExit(EXIT_FAILED)
    raise DatasetArchived(view.dataset, f"restore request {view.id} to {view.target} is {view.state}; "
                                        f"`tiering restores` shows it, add --wait to wait for it")
