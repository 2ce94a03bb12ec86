"""The ``tiering`` command line: thin. Parse, call a use case in :mod:`tiering.datasets`, print.

Every :class:`~tiering.errors.TieringError` becomes one line on stderr and its exit code; ``--json``
prints machine-readable output on stdout. Set ``TIERING_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import gc
import json
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from tiering import __version__
from tiering.app import App
from tiering.catalog.db import describe_db_error
from tiering.config import Config, backend_identity, find_config_path, format_size, load_config
from tiering.errors import CatalogError, TieringError, UsageError
from tiering.transfer.copier import GIVE_UP_GRACE_SECONDS, Progress

log = logging.getLogger("tiering")


# ------------------------------------------------------------------------------------------ plumbing


class Context:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._app: App | None = None

    def config(self) -> Config:
        return load_config(self.config_path)

    def app(self, *, accept_changes: tuple[str, ...] = ()) -> App:
        if self._app is None:
            self._app = App.open(self.config(), accept_changes=accept_changes)
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


pass_ctx = click.make_pass_decorator(Context)


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        for prop in ("free_bytes", "cost_per_month", "ok"):
            if hasattr(type(obj), prop) and isinstance(getattr(type(obj), prop), property):
                out[prop] = _jsonable(getattr(obj, prop))
        return out
    if isinstance(obj, list | tuple):
        return [_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return obj


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(_jsonable(obj), indent=2, sort_keys=False))


@contextlib.contextmanager
def progress_display(label: str, enabled: bool) -> Iterator[Progress]:
    """A Progress the use case fills, drawn as a bar with bytes/s and ETA on stderr while it runs."""
    progress = Progress()
    if not enabled:
        yield progress
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as RichProgress

    console = Console(stderr=True)
    bar = RichProgress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
        TransferSpeedColumn(), TextColumn("{task.fields[files]}"), TimeRemainingColumn(),
        console=console, transient=False, refresh_per_second=5,
    )
    stop = threading.Event()
    with bar:
        task = bar.add_task(label, total=None, files="")

        def refresh() -> None:
            while not stop.wait(0.2):
                bar.update(
                    task, total=progress.total_bytes or None, completed=progress.done_bytes,
                    files=f"{progress.done_objects}/{progress.total_objects} files",
                )

        t = threading.Thread(target=refresh, daemon=True)
        t.start()
        try:
            yield progress
        finally:
            stop.set()
            t.join()
            bar.update(task, total=progress.total_bytes or 1, completed=progress.done_bytes,
                       files=f"{progress.done_objects}/{progress.total_objects} files")


def _show_progress(json_out: bool, flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return not json_out and sys.stderr.isatty()


def _parse_tags(tags: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for t in tags:
        k, sep, v = t.partition("=")
        if not sep or not k:
            raise UsageError(f"--tag expects KEY=VALUE, got {t!r}")
        out[k.strip()] = v.strip()
    return out


json_option = click.option("--json", "json_out", is_flag=True, help="Print machine-readable JSON on stdout.")
progress_option = click.option(
    "--progress/--no-progress", default=None, help="Draw a progress bar on stderr (default: when it is a terminal)."
)


# ------------------------------------------------------------------------------------------ commands


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "--config", "config_path", envvar="TIERING_CONFIG", metavar="PATH",
    help="Config file (default: ./tiering.yaml, or $TIERING_CONFIG).",
)
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
@click.version_option(__version__, prog_name="tiering")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Tiered storage lifecycle for ML data: hot NVMe, warm NAS, cold tape, behind S3.

    Register datasets and models in a catalog, see where they live, and move them between tiers with
    verified, crash-safe copies (copy, verify, commit, and only then delete the source).

    \b
    Start here:
      tiering demo                      the whole story on local directories, no server needed
      tiering init                      write tiering.yaml and create the catalog
      tiering register ./data --name imagenet-mini --version 2024-01 --tier hot
      tiering ls                        what is registered, and where
      tiering move imagenet-mini@2024-01 --to warm
    """
    from tiering.logs import setup_logging

    setup_logging(verbose)
    ctx.obj = Context(config_path)
    ctx.call_on_close(ctx.obj.close)


@cli.command()
@click.option("--catalog", default=None, metavar="URL",
              help="Catalog URL (default sqlite:///tiering.db; e.g. postgresql+psycopg://user@host/db).")
@click.option("--tiers-dir", default=None, metavar="DIR",
              help="With no existing config: make local directory tiers hot/warm/cold under DIR (default ./tiers).")
@pass_ctx
def init(c: Context, catalog: str | None, tiers_dir: str | None) -> None:
    """Write tiering.yaml (if missing) and create or upgrade the catalog schema.

    With no config file yet, a starter config with three local directory tiers is written; edit it to
    point the tiers at your S3 endpoints (see the README for an S3 example).
    """
    from tiering.workspace import init_workspace

    path = find_config_path(c.config_path)
    result = init_workspace(path, catalog=catalog, tiers_dir=tiers_dir)
    click.echo(result)


@cli.command()
@pass_ctx
def migrate(c: Context) -> None:
    """Upgrade the catalog schema to this version (safe to run again)."""
    from tiering.catalog.db import create_catalog_engine, redact_url, schema_status
    from tiering.catalog.db import migrate as run_migrate

    config = c.config()
    engine = create_catalog_engine(config.catalog_url())
    run_migrate(engine)
    current, _ = schema_status(engine)
    click.echo(f"catalog {redact_url(config.catalog_url())} is at schema {current}")
    engine.dispose()


@cli.command()
@click.option("--accept-change", "accept", multiple=True, metavar="TIER",
              help="TIER's backend changed in the config and its data is there now: record the new place.")
@json_option
@pass_ctx
def tiers(c: Context, accept: tuple[str, ...], json_out: bool) -> None:
    """List tiers: rank, backend, capacity, used, free, cost per month.

    Every command refuses to run while a tier that holds data points at another place than the catalog
    recorded; after moving the data to the new place, `tiering tiers --accept-change TIER` records it.
    """
    from tiering.datasets import tier_usage

    app = c.app(accept_changes=accept)
    for name in accept:
        click.echo(f"tier {name}: the catalog now records its data at "
                   f"{backend_identity(name, app.config.tier(name))}", err=True)
    rows = tier_usage(app)
    if json_out:
        emit_json(rows)
        return
    _table(
        ["TIER", "RANK", "BACKEND", "ARCHIVE", "DATASETS", "CAPACITY", "USED", "FREE", "$/TiB-MO", "$/MONTH"],
        [
            [r.name, r.rank, r.backend, r.archive or "-", r.datasets,
             format_size(r.capacity_bytes) if r.capacity_bytes is not None else "unbounded",
             format_size(r.used_bytes), format_size(r.free_bytes) if r.free_bytes is not None else "-",
             f"{r.cost_per_tib_month:g}", f"{r.cost_per_month:.2f}"]
            for r in rows
        ],
    )


@cli.command()
@click.argument("source")
@click.option("--name", required=True, help="Dataset or model name (letters, digits, . _ + -).")
@click.option("--version", "version", required=True, help="Version label, e.g. 2024-01 or v3.")
@click.option("--kind", type=click.Choice(["dataset", "model"]), default="dataset", show_default=True)
@click.option("--tier", default=None, help="Tier to upload to (default: the hottest).")
@click.option("--owner", default="", help="Owner (team or person).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A tag; repeat for more.")
@click.option("--adopt", is_flag=True,
              help="SOURCE is an s3:// or file:// prefix already inside a tier: register in place, no copy.")
@click.option("--follow-links", is_flag=True,
              help="Register what symbolic links point to (even outside SOURCE) instead of the links themselves.")
@json_option
@progress_option
@pass_ctx
def register(
    c: Context, source: str, name: str, version: str, kind: str, tier: str | None, owner: str,
    tags: tuple[str, ...], adopt: bool, follow_links: bool, json_out: bool, progress: bool | None,
) -> None:
    """Register SOURCE (a local directory or file, or with --adopt an existing prefix) as NAME@VERSION.

    \b
    Examples:
      tiering register ./imagenet-mini --name imagenet-mini --version 2024-01 --tier hot --tag team=vision
      tiering register s3://warm-bucket/models/fraud/v3/ --name fraud --version v3 --kind model --adopt
    """
    from tiering.registration import register as do_register

    app = c.app()
    with progress_display(f"register {name}@{version}", _show_progress(json_out, progress)) as prog:
        result = do_register(app, source, name=name, version=version, kind=kind, tier=tier, owner=owner,
                             tags=_parse_tags(tags), adopt=adopt, progress=prog, follow_links=follow_links)
    if json_out:
        emit_json(result)
    elif result.already_registered:
        click.echo(f"{result.label} is already registered with identical content (on {result.tier}); nothing to do")
    else:
        how = "adopted in place on" if result.adopted else "registered on"
        click.echo(f"{result.label} {how} {result.tier}: {result.members} files, {format_size(result.bytes)}, "
                   f"content xxh3-128 {result.content_digest}")


@cli.command("ls")
@click.option("--tier", default=None, help="Only datasets whose home is this tier.")
@click.option("--kind", type=click.Choice(["dataset", "model"]), default=None)
@click.option("--name", default=None, help="Only versions of this name.")
@json_option
@pass_ctx
def ls_cmd(c: Context, tier: str | None, kind: str | None, name: str | None, json_out: bool) -> None:
    """List registered datasets and models with their home tier."""
    from tiering.datasets import list_datasets

    rows = list_datasets(c.app(), tier=tier, kind=kind, name=name)
    if json_out:
        emit_json(rows)
        return
    if not rows:
        click.echo("no datasets registered (see `tiering register --help`)")
        return
    _table(
        ["DATASET", "KIND", "TIER", "STATE", "FILES", "SIZE", "LAST READ", "TAGS"],
        [[r.label, r.kind, r.tier, r.state, r.members, format_size(r.bytes), (r.last_access_at or "never")[:19],
          ",".join(f"{k}={v}" for k, v in sorted(r.tags.items()))] for r in rows],
    )


@cli.command()
@click.argument("args", nargs=-1, required=True)
@click.option("--out", type=click.Path(dir_okay=False, writable=True), default=None,
              help="With `show member`: write the member's bytes to FILE (through a temporary file that becomes "
                   "FILE only once the bytes verify, removed otherwise), or '-' for stdout (held in memory and "
                   "verified before the first byte is written; members over 256 MiB are refused: use a FILE).")
@click.option("--members", "member_limit", default=20, show_default=True, help="How many members to list.")
@json_option
@pass_ctx
def show(c: Context, args: tuple[str, ...], out: str | None, member_limit: int, json_out: bool) -> None:
    """Show one dataset (NAME[@VERSION]), or read one member: `show member NAME@VERSION PATH --out FILE`.

    For a dataset: files, bytes, home tier, replicas per tier and state, digests, move jobs and history.
    """
    from tiering.datasets import read_member, save_member
    from tiering.datasets import show as do_show

    app = c.app()
    if args[0] == "member":
        if len(args) != 3:
            raise UsageError("usage: tiering show member NAME@VERSION PATH --out FILE")
        if out is None:
            raise UsageError("give --out FILE (or --out - for stdout) to read a member")
        if out == "-":
            read_member(app, args[1], args[2], sys.stdout.buffer, verify_first=True)
        else:
            n = save_member(app, args[1], args[2], out)
            click.echo(f"wrote {n} bytes to {out} (xxh3-128 verified)", err=True)
        return
    if len(args) != 1:
        raise UsageError("usage: tiering show NAME[@VERSION]")
    d = do_show(app, args[0], member_limit=member_limit)
    if json_out:
        emit_json(d)
        return
    r = d.dataset
    click.echo(f"{r.label}  ({r.kind}, owner {r.owner or '-'}, state {r.state})")
    click.echo(f"  home tier    {r.tier}{'  (adopted in place)' if d.adopted else ''}")
    click.echo(f"  files        {r.members}   size {format_size(r.bytes)} ({r.bytes} bytes)")
    click.echo(f"  content      xxh3-128 {d.content_digest}")
    click.echo(f"  tags         {', '.join(f'{k}={v}' for k, v in sorted(r.tags.items())) or '-'}")
    click.echo(f"  registered   {r.created_at[:19]}   last read {(r.last_access_at or 'never')[:19]}   "
               f"reads (30 d) {d.reads_30d}")
    click.echo("  replicas     " + "; ".join(
        f"{t}: " + ", ".join(f"{n} {st}" for st, n in sorted(states.items())) for t, states in d.replicas.items()
    ))
    if d.jobs:
        click.echo("  move jobs")
        for j in d.jobs:
            err = f"  error: {j['error']}" if j["error"] else ""
            click.echo(f"    #{j['id']} {j['purpose']} {j['state']} ({j['reason']}){err}")
    click.echo("  members" + (f" (first {len(d.members)})" if len(d.members) < r.members else ""))
    for m in d.members:
        click.echo(f"    {m['path']}  {m['size']} B  {m['xxh3_128']}")
    click.echo("  history")
    for h in d.history:
        arrow = f" {h['from'] or ''}->{h['to'] or ''}" if h["from"] or h["to"] else ""
        click.echo(f"    {h['at'][:19]}  {h['action']}{arrow}  {format_size(h['bytes'])}  {h['result']}"
                   f"  by {h['actor']}")


@cli.command()
@click.argument("label")
@click.option("--no-record", is_flag=True, help="Do not count this as a read.")
@click.option("--restore", "restore_", is_flag=True,
              help="If it is archived, request a restore (to --to, for --days); with --wait, run it and resolve.")
@click.option("--wait", is_flag=True, help="With --restore: wait until the restored copy is readable.")
@click.option("--to", "restore_to", default=None, metavar="TIER",
              help="With --restore: target tier (default: hottest).")
@click.option("--days", "restore_days", default=7, show_default=True, type=click.IntRange(min=1),
              help="With --restore: keep the restored copy this many days.")
@json_option
@pass_ctx
def resolve(
    c: Context, label: str, no_record: bool, restore_: bool, wait: bool, restore_to: str | None,
    restore_days: int, json_out: bool,
) -> None:
    """Where to read NAME[@VERSION] now (endpoint, bucket and prefix, or a path). Counts as a read.

    An archived dataset is readable only once restored: `--restore --wait` restores it, then resolves.
    """
    from tiering.datasets import resolve as do_resolve
    from tiering.errors import DatasetArchived

    try:
        r = do_resolve(c.app(), label, record=not no_record)
    except DatasetArchived:
        if not restore_:
            raise
        from tiering.cli.restore import restore_for_resolve

        restore_for_resolve(c, label, to=restore_to, days=restore_days, wait=wait)
        r = do_resolve(c.app(), label, record=not no_record)
    if json_out:
        emit_json(r)
        return
    click.echo(f"{r.label} is on {r.tier}: {r.url}")
    if r.endpoint:
        click.echo(f"  endpoint {r.endpoint}  bucket {r.bucket}  prefix {r.prefix}")
    if r.path:
        click.echo(f"  path {r.path}")


@cli.command()
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
    with _interrupt_sets(stop), progress_display(f"move {label} -> {to}", _show_progress(json_out, progress)) as p:
        outcome = do_move(app, label, to=to, dry_run=dry_run, progress=p, stop=stop)
    _print_outcome(outcome, json_out)


def _print_outcome(outcome: Any, json_out: bool) -> None:
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


@contextlib.contextmanager
def _interrupt_sets(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C / SIGTERM: stop starting new copies, give those under way a short grace, and leave the job
    resumable. Second: abort."""
    import signal

    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        STOP_REQUESTED.set()
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        click.echo(f"\nstopping: copies under way get {GIVE_UP_GRACE_SECONDS:g} s to finish, the rest is left "
                   f"for `tiering resume`", err=True)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


@cli.command()
@json_option
@progress_option
@pass_ctx
def resume(c: Context, json_out: bool, progress: bool | None) -> None:
    """Finish every interrupted move job (after a crash, a kill or Ctrl-C)."""
    from tiering.datasets import resume as do_resume

    with progress_display("resume", _show_progress(json_out, progress)) as p:
        outcomes = do_resume(c.app(), progress=p)
    if json_out:
        emit_json(outcomes)
        return
    if not outcomes:
        click.echo("no unfinished move jobs")
    for o in outcomes:
        click.echo(f"job {o.job_id} {o.dataset} {o.src_tier} -> {o.dst_tier}: {o.state}"
                   + (f" ({o.error})" if o.error else ""))


@cli.command()
@click.argument("label")
@click.option("--tier", default=None, help="Only check replicas on this tier.")
@json_option
@progress_option
@pass_ctx
def verify(c: Context, label: str, tier: str | None, json_out: bool, progress: bool | None) -> None:
    """Re-read every copy of NAME[@VERSION] and compare size and xxh3-128 with the catalog."""
    from tiering.datasets import verify as do_verify

    with progress_display(f"verify {label}", _show_progress(json_out, progress)) as p:
        report = do_verify(c.app(), label, tier=tier, progress=p)
    if json_out:
        emit_json(report)
    else:
        status = "OK" if report.ok else f"{len(report.problems)} PROBLEM(S)"
        click.echo(f"{report.label}: {report.replicas_checked} copies checked, "
                   f"{format_size(report.bytes_read)} read: {status}")
        for line in _grouped_problems(report.problems):
            click.echo(f"  {line}")
    if not report.ok:
        raise SystemExit(7)


def _grouped_problems(problems: list[Any]) -> list[str]:
    """One line per (tier, problem, reason) with a count and the first copy as an example: a tier that
    is down is one line, not one per copy (``--json`` lists every problem)."""
    groups: dict[tuple[str, str, str], list[Any]] = {}
    for p in problems:
        groups.setdefault((p.tier, p.problem, p.reason or p.problem), []).append(p)
    lines = []
    for (tier, problem, reason), items in groups.items():
        first = items[0]
        where = f"{first.tier}:{first.key}" + (f" ({first.path})" if first.path else "")
        if len(items) == 1:
            lines.append(f"{problem}: {where} {first.detail}".rstrip())
            continue
        why = f" ({reason})" if reason != problem else ""
        lines.append(f"{problem}{why} on {tier}: {len(items)} copies, first {where}: {first.detail} "
                     "(--json lists all)")
    return lines


@cli.command()
@click.option("--tier", default=None, help="Only this tier (default: every tier).")
@click.option("--fix", is_flag=True,
              help="Delete orphan objects and abort unfinished uploads older than --older-than.")
@click.option("--deep", is_flag=True, help="Also read every trusted copy and compare its xxh3-128 (reads all bytes).")
@click.option("--older-than", "older_than", default="1h", show_default=True, metavar="DURATION",
              help="With --fix: leave anything younger than this (e.g. 0, 90s, 30m, 1h, 2d).")
@json_option
@progress_option
@pass_ctx
def scrub(c: Context, tier: str | None, fix: bool, deep: bool, older_than: str, json_out: bool,
          progress: bool | None) -> None:
    """Compare the catalog with what the tiers hold; with --fix, remove what no dataset owns.

    \b
    Reports: orphan objects (under dataset layout prefixes and adopted prefixes, owned by no replica),
    unfinished multipart uploads (S3 tiers), replicas whose object is missing or has another size
    (--deep: another digest), datasets stuck registering or moving, jobs no live lease drives.
    --fix removes only orphans and uploads older than --older-than that no running step writes;
    it never deletes an object the catalog names, so never a verified copy.
    \b
    Exit status: 0 clean; 1 findings remain unfixed; other codes as for every command.
    """
    from tiering.scrub import parse_duration
    from tiering.scrub import scrub as do_scrub

    grace = parse_duration(older_than)
    show = _show_progress(json_out, progress)
    on_phase = (lambda line: click.echo(line, err=True)) if show else None
    with progress_display("scrub --deep", show and deep) as p:
        report = do_scrub(c.app(), tier=tier, fix=fix, deep=deep, older_than=grace, progress=p, on_phase=on_phase)
    if json_out:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        shown = report.findings[:SCRUB_LINES]
        for f in shown:
            click.echo(f"  {f.line()}")
        if len(report.findings) > len(shown):
            click.echo(f"  ... and {len(report.findings) - len(shown)} more (--json lists them all)")
        click.echo(report.summary())
    if not report.ok:
        raise SystemExit(1)


#: findings printed one per line by `tiering scrub` (all of them with --json)
SCRUB_LINES = 200


@cli.command()
@click.option("--dir", "workdir", default=None, metavar="DIR", help="Keep the demo workspace in DIR.")
def demo(workdir: str | None) -> None:
    """Run the whole story on local directory tiers in a throwaway workspace (no server needed)."""
    from tiering.demo import run_demo

    run_demo(workdir, echo=click.echo)


# ------------------------------------------------------------------------------------------ output


def _table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(x) for x in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in cells:
        click.echo("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip())


def _register_extensions() -> None:
    """Commands that live beside their use cases (policy, restore, scheduler) add themselves here."""
    import importlib

    for module in ("tiering.cli.policy", "tiering.cli.restore"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        register_fn: Callable[[click.Group], None] = mod.register_commands
        register_fn(cli)


_register_extensions()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turn our errors into one line and an exit code."""
    try:
        rv = cli.main(args=argv, prog_name="tiering", standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except TieringError as exc:
        if os.environ.get("TIERING_DEBUG"):
            traceback.print_exc()  # the traceback is added; the exit code stays the error's
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted; `tiering resume` finishes any move that was under way", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except SQLAlchemyError as exc:
        # a database error no use case translated: one line, without the SQL text or its parameters
        if os.environ.get("TIERING_DEBUG"):
            raise
        click.echo(f"error: catalog error: {describe_db_error(exc)}", err=True)
        sys.exit(CatalogError.exit_code)
    except Exception as exc:
        if os.environ.get("TIERING_DEBUG"):
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc} (set TIERING_DEBUG=1 for a traceback)", err=True)
        sys.exit(70)


#: set by the first Ctrl-C / SIGTERM of a command: the process then exits without joining abandoned copies
STOP_REQUESTED = threading.Event()


def entry() -> None:
    """The ``tiering`` command (and ``python -m tiering``): :func:`main`, then a quick exit.

    Every exit handler runs (logging flushes, thread pools join) and the output is flushed; what is
    skipped is the interpreter tearing down the objects of every module it loaded, ~0.1 s of each
    command. Only when no other non-daemon thread is left, else the exit is the ordinary one.

    Before the command runs, the objects of the modules loaded so far leave the cyclic garbage collector's
    care (``gc.freeze``: they live as long as the process) and its youngest generation is collected every
    10,000 allocations instead of 700: a copy of 5,000 small objects spent ~0.25 s of CPU in collections
    that found next to nothing, ~0.1 s now.
    """
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    try:
        main()
        code = 0
    except SystemExit as exc:
        if not isinstance(exc.code, int | None):
            raise  # sys.exit("message"): let the interpreter print it
        code = exc.code or 0
    # after a stop, copies abandoned while blocked on an endpoint are not waited for: their work is redone
    if not STOP_REQUESTED.is_set() and any(
        t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()
    ):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that went away, a closed stream
            stream.flush()
    os._exit(code)
