"""One job's control: a stop signal and the cleanups of what the job made.

As s3transfer's ``TransferCoordinator``: the code that makes a resource (a started thread, an open
batched sync, claimed steps) registers how to undo it right there with :meth:`JobControl.add_cleanup`,
and the job's end runs them all once, newest first, with :meth:`JobControl.run_cleanups`. A caller's stop
(Ctrl-C, SIGTERM, a scheduler shutting down) is joined in, so code under the job asks one object whether
to stop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: how often :meth:`JobControl.wait` looks at a caller's stop event (it cannot block on two events at once)
_POLL_SECONDS = 0.1


class JobControl:
    """Stop signal and failure cleanups of one job; thread-safe.

    ``external``: a caller's stop events (``None`` entries are ignored); any of them being set stops the
    job as :meth:`stop` does. :meth:`is_set` is :attr:`stopped`, so a JobControl stands where an
    ``Event`` was read.
    """

    def __init__(self, *external: threading.Event | None) -> None:
        self._stop = threading.Event()
        self._external = tuple(e for e in external if e is not None)
        self._lock = threading.Lock()
        self._cleanups: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._exception: BaseException | None = None

    def stop(self, exception: BaseException | None = None) -> None:
        """Stop the job; ``exception`` (the first one given) says why, for :attr:`exception`."""
        with self._lock:
            if exception is not None and self._exception is None:
                self._exception = exception
        self._stop.set()

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called or a caller's stop event is set."""
        return self._stop.is_set() or any(e.is_set() for e in self._external)

    def is_set(self) -> bool:
        """The same as :attr:`stopped`: code that reads a ``threading.Event`` reads a JobControl too."""
        return self.stopped

    @property
    def cancelled(self) -> bool:
        """True when a caller's stop event is set (as opposed to the job stopping itself)."""
        return any(e.is_set() for e in self._external)

    @property
    def exception(self) -> BaseException | None:
        """The exception given to :meth:`stop`, if any."""
        return self._exception

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the job to stop; returns :attr:`stopped`."""
        if not self._external:
            return self._stop.wait(seconds)
        deadline = time.monotonic() + seconds
        while not self.stopped:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._stop.wait(min(left, _POLL_SECONDS))
        return True

    def add_cleanup(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` at the job's end; register it where the resource it undoes is made."""
        with self._lock:
            self._cleanups.append((fn, args))

    def run_cleanups(self) -> None:
        """Run every registered cleanup once, the last registered first.

        A cleanup that raises does not keep the others from running; the first exception is raised after
        all have run. Cleanups registered later run at the next call.
        """
        with self._lock:
            cleanups, self._cleanups = self._cleanups, []
        first: BaseException | None = None
        for fn, args in reversed(cleanups):
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - the others still run; the first is raised below
                log.debug("cleanup %r failed: %s", fn, exc)
                first = exc if first is None else first
        if first is not None:
            raise first


def end_thread(done: threading.Event, thread: threading.Thread, *, timeout: float = 5.0) -> None:
    """Tell a helper thread (a lease renewer, a heartbeat) to end by setting ``done``, and join it."""
    done.set()
    thread.join(timeout=timeout)


def as_control(stop: JobControl | threading.Event | None) -> JobControl:
    """``stop`` as a JobControl: itself, or a new one joining the event in."""
    return stop if isinstance(stop, JobControl) else JobControl(stop)
