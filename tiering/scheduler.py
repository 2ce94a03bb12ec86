"""The long-running scheduler: nightly tiering on a cron, the restore dispatcher and the expiry sweeper.

One leader at a time: every scheduler process tries to take the ``scheduler`` lock (a PostgreSQL advisory
lock, or a file lock with SQLite) and only the holder schedules work; the others wait on standby and take
over when the leader's process dies. A leader checks its lock every ``lock_check_seconds``: once it is gone
(its connection terminated, the server restarted) the leader stops scheduling, tells the work under way to
stop at its next checkpoint, and goes back to standby. Each term in office carries a fencing token (the
leader epoch in the catalog, raised when a leader takes office, see :mod:`tiering.catalog.leader`): the
policy runs and jobs a leader creates are written only while its epoch is current, so a deposed leader that
has not noticed yet is refused by the catalog.

Each nightly run carries a run key (``nightly:YYYY-MM-DD``) that the catalog keeps unique, so no night runs
twice even across a leader change; a run skipped outside the policy's window gives its key back. ``--now``
runs once more right away with a key of its own (``manual:<UTC time>``), in the process that is the leader
when it starts (a standby that takes over later does not repeat it).

SIGTERM or SIGINT: no new move starts, the moves under way finish their current copies, the run is
recorded as interrupted (``tiering resume`` or the next run completes it), and the process exits 0.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from tiering.app import App
from tiering.catalog.leader import LeaderFence, take_office
from tiering.catalog.locks import ProcessLock
from tiering.errors import ConfigError, TieringError
from tiering.lifecycle.nightly import CycleResult, load_active_policy, nightly_cycle, schedule_timezone

log = logging.getLogger(__name__)

LEADER_LOCK = "scheduler"
#: seconds between two checks that the leader still holds its lock
LOCK_CHECK_SECONDS = 3.0


def cron_trigger(app: App) -> CronTrigger:
    expr = app.config.schedule.nightly
    try:
        return CronTrigger.from_crontab(expr, timezone=schedule_timezone(app))
    except ValueError as exc:
        raise ConfigError(f"schedule.nightly: {expr!r} is not a cron expression (e.g. '0 2 * * *'): {exc}") from None


def nightly_key(app: App, now: dt.datetime) -> str:
    """The run key of the night ``now`` falls in, in the schedule's time zone."""
    return f"nightly:{now.astimezone(schedule_timezone(app)).date().isoformat()}"


def manual_key(now: dt.datetime) -> str:
    """The run key of a run asked for by hand (``--now``): never a night's key."""
    return f"manual:{now.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"


class Scheduler:
    """Leader election plus the APScheduler jobs. ``run()`` blocks until ``stop()`` or a signal."""

    def __init__(
        self,
        app: App,
        *,
        policy_path: str | None = None,
        run_now: bool = False,
        standby_poll_seconds: float = 10.0,
        lock_check_seconds: float = LOCK_CHECK_SECONDS,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.app = app
        self.policy_path = policy_path
        self.run_now = run_now
        self.standby_poll_seconds = standby_poll_seconds
        self.lock_check_seconds = lock_check_seconds
        self.echo = echo
        self.stopping = threading.Event()
        self.lock = ProcessLock(app, LEADER_LOCK)
        self.results: list[CycleResult] = []
        #: the current term's fence; None while on standby
        self.fence: LeaderFence | None = None
        #: set when the current term ends (a stop, or the lock lost): the work under way stops at a checkpoint
        self.term_over = threading.Event()
        self._scheduler: BlockingScheduler | None = None
        self._scheduler_lock = threading.Lock()
        # fail on a bad policy or cron now, not at 02:00
        load_active_policy(app, policy_path)
        self.trigger = cron_trigger(app)

    def stop(self, *_: Any) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.echo("stopping: moves under way finish their current copies; the rest resumes next run")
        self._end_term()

    def _end_term(self) -> None:
        self.term_over.set()
        with self._scheduler_lock:
            sched, self._scheduler = self._scheduler, None
        if sched is not None:
            threading.Thread(target=sched.shutdown, kwargs={"wait": True}, daemon=True).start()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> None:
        """Stand by until leader, lead until the lock is lost or a stop, and again, until a stop."""
        first_try = True
        while not self.stopping.is_set():
            if not self.lock.acquire():
                first_try = False
                self.echo(f"standby: another scheduler is the leader; retrying every {self.standby_poll_seconds:g} s")
                self.stopping.wait(self.standby_poll_seconds)
                continue
            try:
                self._lead(run_now=self.run_now and first_try)
            finally:
                self.fence = None
                self.lock.release()
            first_try = False

    def _lead(self, *, run_now: bool) -> None:
        """One term in office: take the epoch, schedule, and return when the term is over."""
        self.term_over = threading.Event()
        with self.app.catalog.session() as s:
            self.fence = take_office(s, LEADER_LOCK, holder=f"{socket.gethostname()}:{os.getpid()}",
                                     now=self.app.now())
        self.echo(f"leader: epoch {self.fence.epoch}; scheduling nightly tiering "
                  f"({self.app.config.schedule.nightly}, next "
                  f"{self.trigger.get_next_fire_time(None, dt.datetime.now(dt.UTC))})")
        if self.run_now and not run_now:
            self.echo("leader: --now was for the leader at start; not run again on taking over")
        watchdog = threading.Thread(target=self._watch_lock, args=(self.term_over,), daemon=True,
                                    name="tiering-leader-watch")
        sched = BlockingScheduler(timezone=dt.UTC)
        sched.add_job(self.nightly, self.trigger, id="nightly", coalesce=True, max_instances=1,
                      misfire_grace_time=3600)
        if run_now:
            sched.add_job(self.manual_run, "date", id="manual-now", max_instances=1)
        restore = _restore_module()
        if restore is not None:
            every = self.app.config.schedule.restore_every_seconds
            sched.add_job(self.dispatch_restores, "interval", seconds=every, id="restores", coalesce=True,
                          max_instances=1)
            sched.add_job(self.sweep_expired, "interval", minutes=10, id="expiry", coalesce=True,
                          max_instances=1)
        with self._scheduler_lock:
            if self.term_over.is_set():
                return
            self._scheduler = sched
        watchdog.start()
        try:
            sched.start()
        finally:
            self.term_over.set()
            watchdog.join(timeout=self.lock_check_seconds + 5)

    def _watch_lock(self, term_over: threading.Event) -> None:
        while not term_over.wait(self.lock_check_seconds):
            if not self.lock.check():
                epoch = self.fence.epoch if self.fence is not None else "?"
                self.echo(f"lost the leader lock (epoch {epoch}): stepping down; work under way stops at its "
                          f"next checkpoint")
                self._end_term()
                return

    def nightly(self) -> None:
        """The cron's run: the night's key, once per night."""
        now = self.app.now()
        self._cycle(now, nightly_key(self.app, now))

    def manual_run(self) -> None:
        """``--now``: a run with a key of its own, which never takes (nor spends) the night's key."""
        now = self.app.now()
        self._cycle(now, manual_key(now))

    def _cycle(self, now: dt.datetime, key: str) -> None:
        if self.term_over.is_set():
            return
        try:
            policy = load_active_policy(self.app, self.policy_path)
            result = nightly_cycle(self.app, policy=policy, now=now, run_key=key, stop=self.term_over,
                                   fence=self.fence)
        except TieringError as exc:
            self.echo(f"run {key} failed: {exc}")
            log.warning("run %s failed: %s", key, exc)
            return
        self.results.append(result)
        self.echo(f"run {key}: {result.state}; planned {result.planned}, done {result.done}, "
                  f"failed {result.failed}, {result.bytes_moved} bytes moved"
                  + (f" ({result.note})" if result.note else ""))

    def dispatch_restores(self) -> None:
        restore = _restore_module()
        if restore is None or self.term_over.is_set():
            return
        try:
            restore.dispatch.dispatch_restores(self.app, now=self.app.now(), stop=self.term_over, fence=self.fence)
        except TieringError as exc:
            log.warning("restore dispatcher: %s", exc)

    def sweep_expired(self) -> None:
        restore = _restore_module()
        if restore is None or self.term_over.is_set():
            return
        try:
            restore.sweep.sweep_expired(self.app, now=self.app.now())
        except TieringError as exc:
            log.warning("expiry sweeper: %s", exc)


def _restore_module() -> Any:
    try:
        import tiering.restore.dispatch
        import tiering.restore.sweep
    except ModuleNotFoundError:
        return None
    return tiering.restore
