"""Dataset commands: init, migrate, tiers, register, ls, show, resolve, verify, scrub, demo.

Thin: parse, call a use case in :mod:`tiering.datasets` (or scrub, workspace, demo), print.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from tiering.cli.context import Context, pass_ctx
from tiering.cli.output import emit_json, json_option, progress_display, progress_option, show_progress, table
from tiering.cli.restore import restore_for_resolve
from tiering.config import backend_identity, find_config_path, format_size
from tiering.errors import UsageError

#: findings printed one per line by `tiering scrub` (all of them with --json)
SCRUB_LINES = 200


def _parse_tags(tags: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for t in tags:
        k, sep, v = t.partition("=")
        if not sep or not k:
            raise UsageError(f"--tag expects KEY=VALUE, got {t!r}")
        out[k.strip()] = v.strip()
    return out


@click.command()
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


@click.command()
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


@click.command()
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
    table(
        ["TIER", "RANK", "BACKEND", "ARCHIVE", "DATASETS", "CAPACITY", "USED", "FREE", "$/TiB-MO", "$/MONTH"],
        [
            [r.name, r.rank, r.backend, r.archive or "-", r.datasets,
             format_size(r.capacity_bytes) if r.capacity_bytes is not None else "unbounded",
             format_size(r.used_bytes), format_size(r.free_bytes) if r.free_bytes is not None else "-",
             f"{r.cost_per_tib_month:g}", f"{r.cost_per_month:.2f}"]
            for r in rows
        ],
    )


@click.command()
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
    with progress_display(f"register {name}@{version}", show_progress(json_out, progress)) as prog:
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


@click.command("ls")
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
    table(
        ["DATASET", "KIND", "TIER", "STATE", "FILES", "SIZE", "LAST READ", "TAGS"],
        [[r.label, r.kind, r.tier, r.state, r.members, format_size(r.bytes), (r.last_access_at or "never")[:19],
          ",".join(f"{k}={v}" for k, v in sorted(r.tags.items()))] for r in rows],
    )


@click.command()
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


@click.command()
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



@click.command()
@click.argument("label")
@click.option("--tier", default=None, help="Only check replicas on this tier.")
@json_option
@progress_option
@pass_ctx
def verify(c: Context, label: str, tier: str | None, json_out: bool, progress: bool | None) -> None:
    """Re-read every copy of NAME[@VERSION] and compare size and xxh3-128 with the catalog."""
    from tiering.datasets import verify as do_verify

    with progress_display(f"verify {label}", show_progress(json_out, progress)) as p:
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


@click.command()
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
    show = show_progress(json_out, progress)
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


@click.command()
@click.option("--dir", "workdir", default=None, metavar="DIR", help="Keep the demo workspace in DIR.")
def demo(workdir: str | None) -> None:
    """Run the whole story on local directory tiers in a throwaway workspace (no server needed)."""
    from tiering.demo import run_demo

    run_demo(workdir, echo=click.echo)

