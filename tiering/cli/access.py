"""``tiering access import``: count the reads in S3/MinIO logs."""

from __future__ import annotations

import sys

import click

from tiering.cli.context import Context, pass_ctx
from tiering.cli.output import emit_json, json_option
from tiering.errors import UsageError


@click.group()
def access() -> None:
    """Access tracking: import reads from S3/MinIO logs."""


@access.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--format", "fmt", required=True,
              type=click.Choice(["s3-access-log", "minio-audit", "s3-event", "jsonl"]),
              help="s3-access-log: S3 server access log; minio-audit: MinIO audit webhook JSON lines; "
                   "s3-event: bucket-notification JSON, one document a line; "
                   "jsonl: {bucket,key,at} or {dataset,at}.")
@json_option
@pass_ctx
def access_import(c: Context, file: str, fmt: str, json_out: bool) -> None:
    """Count the reads in FILE ('-' for stdin). HEAD, LIST, writes and errors are not reads."""
    from tiering.access.ingest import ingest_access

    app = c.app()
    try:
        fh = sys.stdin if file == "-" else open(file, encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None
    try:
        result = ingest_access(app, fh, fmt)
    finally:
        if fh is not sys.stdin:
            fh.close()
    if json_out:
        emit_json(result)
        return
    rate = result.lines / result.seconds if result.seconds else 0
    click.echo(f"{result.lines} lines: {result.events} reads ({result.counted} matched {result.datasets} datasets, "
               f"{result.unmatched} unmatched), {result.skipped_non_read} not reads, {result.malformed} malformed; "
               f"{rate:,.0f} lines/s")
    for m in result.malformed_examples[:5]:
        click.echo(f"  line {m['line']}: {m['reason']}: {m['excerpt']}", err=True)
