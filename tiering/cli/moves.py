"""Move commands: move (copy, verify, commit, delete the source) and resume."""

from __future__ import annotations

import threading
from typing import Any

import click

from tiering.cli.context import Context, pass_ctx, stop_on_signals
from tiering.cli.output import emit_json, json_option, progress_display, progress_option, show_progress
from tiering.config import format_size


@click.command()
@click.argument("label")
@click.option("--to", "to", required=True, help="Destination tier.")
@click.option("--dry-run", is_flag=True, help="Say what would move; move nothing.")
@json_option
@progress_option
@pass_ctx
def move(c: Context, label: str, to: str, dry_run: bool, json_out: bool, progress: bool | None) -> None:
    """Move NAME[@VERSION] to another tier: copy, verify, commit, then delete the source.

    Interrupted or crashed moves are finished by `tiering resume`; the source is never deleted before
    the destination is verified and the catalog committed.
    """
    from tiering.datasets import move as do_move

    app = c.app()
    stop = threading.Event()
    with stop_on_signals(stop), progress_display(f"move {label} -> {to}", show_progress(json_out, progress)) as p:
        outcome = do_move(app, label, to=to, dry_run=dry_run, progress=p, stop=stop)
    print_outcome(outcome, json_out)


def print_outcome(outcome: Any, json_out: bool) -> None:
    if json_out:
        emit_json(outcome)
    elif outcome.state == "dry-run":
        click.echo(f"would move {outcome.dataset}: {outcome.src_tier} -> {outcome.dst_tier}, "
                   f"{outcome.members} files, {format_size(outcome.bytes)}")
    elif outcome.state == "done":
        rate = outcome.bytes / outcome.seconds / 1e6 if outcome.seconds > 0 else 0.0
        click.echo(f"moved {outcome.dataset}: {outcome.src_tier} -> {outcome.dst_tier}, {outcome.members} files, "
                   f"{format_size(outcome.bytes)} in {outcome.seconds:.1f} s ({rate:.0f} MB/s), verified")
    else:
        click.echo(f"move job {outcome.job_id} of {outcome.dataset} is {outcome.state}"
                   + (f": {outcome.error}" if outcome.error else ""))
    if outcome.state == "failed":
        raise SystemExit(7)
    if outcome.state in ("running", "committed"):
        click.echo("run `tiering resume` to finish it", err=True)
        raise SystemExit(75)



@click.command()
@json_option
@progress_option
@pass_ctx
def resume(c: Context, json_out: bool, progress: bool | None) -> None:
    """Finish every interrupted move job (after a crash, a kill or Ctrl-C)."""
    from tiering.datasets import resume as do_resume

    with progress_display("resume", show_progress(json_out, progress)) as p:
        outcomes = do_resume(c.app(), progress=p)
    if json_out:
        emit_json(outcomes)
        return
    if not outcomes:
        click.echo("no unfinished move jobs")
    for o in outcomes:
        click.echo(f"job {o.job_id} {o.dataset} {o.src_tier} -> {o.dst_tier}: {o.state}"
                   + (f" ({o.error})" if o.error else ""))
