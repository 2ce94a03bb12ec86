"""Long-running commands: the webhook (serve) and the scheduler."""

from __future__ import annotations

import datetime as dt
import os

import click

from tiering.cli.context import Context, pass_ctx
from tiering.cli.policy import policy_option
from tiering.errors import UsageError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--token-env", default=None, metavar="VAR",
              help="Read the bearer token from env var VAR (default: the config's webhook.token_file or "
                   "webhook.token_env, TIERING_WEBHOOK_TOKEN).")
@click.option("--insecure-no-auth", is_flag=True,
              help="Serve without a token: anyone who can connect may post reads and steer tiering.")
@pass_ctx
def serve(c: Context, host: str, port: int, token_env: str | None, insecure_no_auth: bool) -> None:
    """HTTP endpoint for S3/MinIO bucket notifications: POST /v1/events/s3 counts object reads.

    Every POST needs 'Authorization: Bearer <token>'; the token is never given on the command line.
    """
    from tiering.access.webhook import NO_TOKEN_HINT
    from tiering.access.webhook import serve as do_serve

    if token_env:
        token = os.environ.get(token_env, "").strip() or None
        if token is None:
            raise UsageError(f"--token-env {token_env}: the variable is not set")
    else:
        config = c.config()
        secret = config.webhook.resolve_token(config)
        token = secret.reveal() if secret is not None else None
    if token is None and not insecure_no_auth:
        raise UsageError(NO_TOKEN_HINT)
    do_serve(c.app(), host=host, port=port, token=token, insecure_no_auth=insecure_no_auth, echo=click.echo)


@click.command()
@policy_option
@click.option("--now", "run_now", is_flag=True,
              help="Also run the cycle once right away under a key of its own (if leader at start).")
@click.option("--standby-poll", default=10.0, show_default=True, help="Seconds between leadership attempts.")
@pass_ctx
def scheduler(c: Context, policy_path: str | None, run_now: bool, standby_poll: float) -> None:
    """Run forever: nightly tiering on the config's cron, restores and expiry; one leader at a time.

    Start one on each machine: only the leader works; a standby takes over when the leader dies.
    SIGTERM finishes the copies under way and exits cleanly.
    """
    from tiering.scheduler import Scheduler

    s = Scheduler(c.app(), policy_path=policy_path, run_now=run_now, standby_poll_seconds=standby_poll,
                  echo=_echo_stamped)
    s.install_signal_handlers()
    s.run()
    _echo_stamped("scheduler stopped")


def _echo_stamped(msg: str) -> None:
    """A scheduler line on stderr, stamped with the UTC time: it runs for days, its lines are a log."""
    click.echo(f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} {msg}", err=True)
