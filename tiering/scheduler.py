"""The long-running scheduler: nightly tiering on a cron, the restore dispatcher and the expiry sweeper.

One leader at a time: every scheduler process tries to take the ``scheduler`` lock (a PostgreSQL advisory
lock, or a file lock with SQLite) and only the holder schedules work; the others wait on standby and take
over when the leader's process dies. Each nightly run also carries a run key (``nightly:YYYY-MM-DD``) that
the catalog keeps unique, so no night runs twice even across a leader change.

SIGTERM or SIGINT: no new move starts, the moves under way finish their current copies, the run is
recorded as interrupted (``tiering resume`` or the next run completes it), and the process exits 0.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from tiering.app import App
from tiering.errors import ConfigError, TieringError
from tiering.lifecycle import CycleResult, load_active_policy, nightly_cycle, schedule_timezone
from tiering.locks import ProcessLock

log = logging.getLogger(__name__)

LEADER_LOCK = "scheduler"


def cron_trigger(app: App) -> CronTrigger:
    expr = app.config.schedule.nightly
    try:
        return CronTrigger.from_crontab(expr, timezone=schedule_timezone(app))
    except ValueError as exc:
        raise ConfigError(f"schedule.nightly: {expr!r} is not a cron expression (e.g. '0 2 * * *'): {exc}") from None


class Scheduler:
    """Leader election plus the APScheduler jobs. ``run()`` blocks until ``stop()`` or a signal."""

    def __init__(
        self,
        app: App,
        *,
        policy_path: str | None = None,
        run_now: bool = False,
        standby_poll_seconds: float = 10.0,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.app = app
        self.policy_path = policy_path
        self.run_now = run_now
        self.standby_poll_seconds = standby_poll_seconds
        self.echo = echo
        self.stopping = threading.Event()
        self.lock = ProcessLock(app, LEADER_LOCK)
        self.results: list[CycleResult] = []
        self._scheduler: BlockingScheduler | None = None
        # fail on a bad policy or cron now, not at 02:00
        load_active_policy(app, policy_path)
        self.trigger = cron_trigger(app)

    def stop(self, *_: Any) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.echo("stopping: moves under way finish their current copies; the rest resumes next run")
        if self._scheduler is not None:
            threading.Thread(target=self._scheduler.shutdown, kwargs={"wait": True}, daemon=True).start()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> None:
        while not self.lock.acquire():
            self.echo(f"standby: another scheduler is the leader; retrying every {self.standby_poll_seconds:g} s")
            if self.stopping.wait(self.standby_poll_seconds):
                return
        self.echo("leader: scheduling nightly tiering " f"({self.app.config.schedule.nightly}, next "
                  f"{self.trigger.get_next_fire_time(None, dt.datetime.now(dt.UTC))})")
        try:
            if self.stopping.is_set():
                return
            sched = BlockingScheduler(timezone=dt.UTC)
            self._scheduler = sched
            sched.add_job(self.nightly, self.trigger, id="nightly", coalesce=True, max_instances=1,
                          misfire_grace_time=3600)
            if self.run_now:
                sched.add_job(self.nightly, "date", id="nightly-now", max_instances=1)
            restore = _restore_module()
            if restore is not None:
                every = self.app.config.schedule.restore_every_seconds
                sched.add_job(self.dispatch_restores, "interval", seconds=every, id="restores", coalesce=True,
                              max_instances=1)
                sched.add_job(self.sweep_expired, "interval", minutes=10, id="expiry", coalesce=True,
                              max_instances=1)
            if self.stopping.is_set():
                return
            sched.start()
        finally:
            self.lock.release()

    def nightly(self) -> None:
        now = self.app.now()
        key = f"nightly:{now.astimezone(schedule_timezone(self.app)).date().isoformat()}"
        try:
            policy = load_active_policy(self.app, self.policy_path)
            result = nightly_cycle(self.app, policy=policy, now=now, run_key=key, stop=self.stopping)
        except TieringError as exc:
            self.echo(f"nightly run failed: {exc}")
            log.exception("nightly run failed")
            return
        self.results.append(result)
        self.echo(f"nightly run {key}: {result.state}; planned {result.planned}, done {result.done}, "
                  f"failed {result.failed}, {result.bytes_moved} bytes moved"
                  + (f" ({result.note})" if result.note else ""))

    def dispatch_restores(self) -> None:
        restore = _restore_module()
        if restore is None or self.stopping.is_set():
            return
        try:
            restore.dispatch_restores(self.app, now=self.app.now())
        except TieringError as exc:
            log.warning("restore dispatcher: %s", exc)

    def sweep_expired(self) -> None:
        restore = _restore_module()
        if restore is None or self.stopping.is_set():
            return
        try:
            restore.sweep_expired(self.app, now=self.app.now())
        except TieringError as exc:
            log.warning("expiry sweeper: %s", exc)


def _restore_module() -> Any:
    try:
        import tiering.restore as restore
    except ModuleNotFoundError:
        return None
    if not hasattr(restore, "dispatch_restores"):
        return None
    return restore
