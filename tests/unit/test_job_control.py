"""The per-job control: one stop signal with a caller's stop joined in, and cleanups run once, newest first."""

from __future__ import annotations

import threading
import time

import pytest

from tiering.transfer.control import JobControl, as_control, end_thread


def test_cleanups_run_in_reverse_order_of_registration_and_only_once() -> None:
    control = JobControl()
    ran: list[str] = []
    for name in ("claims", "sync", "heartbeat"):
        control.add_cleanup(ran.append, name)
    control.run_cleanups()
    control.run_cleanups()
    assert ran == ["heartbeat", "sync", "claims"]


def test_a_failing_cleanup_does_not_keep_the_others_from_running_and_its_error_is_raised_after() -> None:
    control = JobControl()
    ran: list[str] = []

    def broken() -> None:
        ran.append("broken")
        raise OSError("disk gone")

    control.add_cleanup(ran.append, "first")
    control.add_cleanup(broken)
    control.add_cleanup(ran.append, "last")
    with pytest.raises(OSError, match="disk gone"):
        control.run_cleanups()
    assert ran == ["last", "broken", "first"]


def test_a_callers_stop_event_stops_the_job_and_ends_its_wait() -> None:
    external = threading.Event()
    control = JobControl(external, None)
    assert not control.stopped and not control.cancelled
    threading.Timer(0.05, external.set).start()
    started = time.monotonic()
    assert control.wait(5.0)
    assert time.monotonic() - started < 2.0
    assert control.stopped and control.cancelled and control.is_set()


def test_stopping_the_job_itself_is_not_a_callers_cancel_and_keeps_the_first_reason() -> None:
    control = JobControl(threading.Event())
    assert not control.wait(0.01)
    control.stop(ValueError("lease lost"))
    control.stop(ValueError("later"))
    assert control.stopped and not control.cancelled
    assert str(control.exception) == "lease lost"


def test_an_event_given_where_a_control_is_taken_is_joined_into_a_new_control() -> None:
    event = threading.Event()
    control = as_control(event)
    assert as_control(control) is control
    assert not control.stopped
    event.set()
    assert control.stopped


def test_a_helper_thread_registered_as_a_cleanup_has_ended_when_the_cleanups_return() -> None:
    control = JobControl()
    done = threading.Event()
    worker = threading.Thread(target=done.wait, daemon=True)
    worker.start()
    control.add_cleanup(end_thread, done, worker)
    control.run_cleanups()
    assert not worker.is_alive()
