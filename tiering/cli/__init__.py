"""The ``tiering`` command line: thin. Parse, call a use case, print.

The group and its entry points live here; the commands live one module per noun (datasets, moves, restore,
policy, access, serve) and are added to the group below. They import from :mod:`tiering.cli.context` and
:mod:`tiering.cli.output`, never from this module, so nothing imports in a circle.

Every :class:`~tiering.errors.TieringError` becomes one line on stderr and its exit code; ``--json``
prints machine-readable output on stdout. Set ``TIERING_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import traceback

import click
from sqlalchemy.exc import SQLAlchemyError

from tiering import __version__
from tiering.catalog.db import describe_db_error
from tiering.cli import access, datasets, moves, policy, restore, serve
from tiering.cli.context import STOP_REQUESTED, Context
from tiering.errors import CatalogError, TieringError

__all__ = ["Context", "cli", "entry", "main"]


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


for _command in (
    datasets.init, datasets.migrate, datasets.tiers, datasets.register, datasets.ls_cmd, datasets.show,
    datasets.resolve, datasets.verify, datasets.scrub, datasets.demo,
    moves.move, moves.resume,
    restore.restore, restore.restores,
    policy.policy, policy.plan, policy.why, policy.apply, policy.pin, policy.unpin, policy.pins, policy.report,
    policy.runs,
    access.access,
    serve.serve, serve.scheduler,
):
    cli.add_command(_command)


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


def entry() -> None:
    """The ``tiering`` command (and ``python -m tiering``): :func:`main`, and its exit code."""
    _tune_garbage_collector()
    try:
        main()
    except SystemExit as exc:
        if STOP_REQUESTED.is_set() and isinstance(exc.code, int | None):
            _exit_leaving_abandoned_copies(exc.code or 0)
        raise


def _tune_garbage_collector() -> None:
    """Keep the cyclic collector off the objects of the modules loaded so far (they live as long as the
    process) and run it less often: a command makes many small objects that are freed by reference counting,
    and collections over them found next to nothing while costing CPU (measured in bench/)."""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def _exit_leaving_abandoned_copies(code: int) -> None:
    """After Ctrl-C / SIGTERM, exit without joining the copy threads the stop abandoned.

    A copy blocked on an endpoint that stopped answering holds its worker thread until the request times
    out (30 s by default), and the interpreter joins every pool thread at exit: the stop would take that long
    (tests/integration/test_deadlines.py wants seconds). Their work is redone by ``tiering resume``. Exit
    handlers run and the output is flushed first; only the join of those threads is skipped.
    """
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that went away, a closed stream
            stream.flush()
    os._exit(code)
