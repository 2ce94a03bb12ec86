"""CLI commands of the lifecycle: policy check, plan, why, apply, pin, report, access import, serve, scheduler."""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading

import click

from tiering.config import format_size
from tiering.errors import UsageError


def _parse_at(value: str | None) -> dt.datetime | None:
    """``--at 2027-01-01`` or a full ISO timestamp; naive means UTC."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--at expects a date like 2027-01-01 or 2027-01-01T02:00:00, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def register_commands(cli: click.Group) -> None:  # noqa: C901 - one place that lists the commands
    from tiering.cli import Context, _table, emit_json, json_option, pass_ctx

    policy_option = click.option("--policy", "policy_path", default=None, metavar="FILE",
                                 help="Policy file (default: the config's `policy:`, else the shipped default).")
    at_option = click.option("--at", "at", default=None, metavar="DATE",
                             help="Plan as if it were this date/time (UTC), e.g. 2027-01-01.")

    @cli.group()
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

    @cli.command()
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
            _table(["DATASET", "FROM", "TO", "SIZE", "RULE", "REASON"],
                   [[m.label, m.from_tier, m.to_tier, format_size(m.size_bytes), m.rule, m.reason] for m in p.moves])
        if p.skipped_for_budget:
            click.echo(f"\n{len(p.skipped_for_budget)} more moves wait for the budget "
                       f"(max {format_size(p.max_bytes) if p.max_bytes else '-'}, {p.max_datasets or '-'} datasets)")
        click.echo("")
        _table(["TIER", "USED NOW", "AFTER", "IN", "OUT", "MOVES IN", "MOVES OUT"],
               [[t.name, format_size(t.used_bytes_before), format_size(t.used_bytes_after), format_size(t.bytes_in),
                 format_size(t.bytes_out), t.moves_in, t.moves_out] for t in p.tiers])
        if p.window:
            click.echo(f"\nwindow {p.window}: {'open' if p.window_open else 'closed'} now")
        for note in p.notes:
            click.echo(f"note: {note}")

    @cli.command()
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

    @cli.command()
    @policy_option
    @at_option
    @click.option("--ignore-window", is_flag=True, help="Run even outside the policy's time window.")
    @json_option
    @pass_ctx
    def apply(c: Context, policy_path: str | None, at: str | None, ignore_window: bool, json_out: bool) -> None:
        """Run the nightly cycle now: resume, plan, and move within the budget and window (what the scheduler runs)."""
        from tiering.catalog.locks import exclusive
        from tiering.cli import _interrupt_sets
        from tiering.lifecycle.nightly import load_active_policy, nightly_cycle

        app = c.app()
        policy = load_active_policy(app, policy_path)
        stop = threading.Event()
        with exclusive(app, "planner"), _interrupt_sets(stop):
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

    @cli.command()
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

    @cli.command()
    @click.argument("label")
    @click.option("--tier", default=None, help="Only the pin on this tier.")
    @pass_ctx
    def unpin(c: Context, label: str, tier: str | None) -> None:
        """Remove the pins of NAME[@VERSION]."""
        from tiering.lifecycle.pins import unpin as do_unpin

        n = do_unpin(c.app(), label, tier=tier)
        click.echo(f"removed {n} pin(s)")

    @cli.command()
    @json_option
    @pass_ctx
    def pins(c: Context, json_out: bool) -> None:
        """List pins."""
        from tiering.lifecycle.pins import list_pins

        rows = list_pins(c.app())
        if json_out:
            emit_json(rows)
        else:
            _table(["DATASET", "TIER", "UNTIL", "REASON", "BY"],
                   [[r.dataset, r.tier, r.until[:10], r.reason, r.actor] for r in rows])

    @cli.command()
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
        _table(["TIER", "DATASETS", "USED", "CAPACITY", "USED %", "$/MONTH", "HEAT HISTOGRAM (datasets)"],
               [[t["name"], t["datasets"], format_size(t["used_bytes"]),
                 format_size(t["capacity_bytes"]) if t["capacity_bytes"] else "unbounded",
                 f"{t['used_pct']:.1f}" if t["used_pct"] is not None else "-", f"{t['cost_per_month']:.2f}",
                 " ".join(f"{k}:{v}" for k, v in t["heat_histogram"].items())] for t in r["tiers"]])
        click.echo(f"\n{r['datasets']} datasets, ${r['cost_per_month']:.2f} per month; "
                   f"heat half-life {r['heat_half_life_days']:g} days")

    @cli.command()
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
        _table(["RUN", "KEY", "STARTED", "STATE", "PLANNED", "DONE", "FAILED", "MOVED"],
               [[r["id"], r["run_key"] or "-", r["started_at"][:19], r["state"], r["planned"], r["done"], r["failed"],
                 format_size(r["bytes_moved"])] for r in rows])

    @cli.group()
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

    @cli.command()
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

    @cli.command()
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

        def echo(msg: str) -> None:
            click.echo(f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} {msg}", err=True)

        s = Scheduler(c.app(), policy_path=policy_path, run_now=run_now, standby_poll_seconds=standby_poll, echo=echo)
        s.install_signal_handlers()
        s.run()
        echo("scheduler stopped")

