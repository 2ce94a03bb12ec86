"""What the commands print: JSON on stdout, plain tables, and a progress bar on stderr."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import threading
from collections.abc import Iterator
from typing import Any

import click

from tiering.transfer.copier import Progress

json_option = click.option("--json", "json_out", is_flag=True, help="Print machine-readable JSON on stdout.")
progress_option = click.option(
    "--progress/--no-progress", default=None, help="Draw a progress bar on stderr (default: when it is a terminal)."
)


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



def show_progress(json_out: bool, flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return not json_out and sys.stderr.isatty()



def table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(x) for x in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in cells:
        click.echo("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip())
