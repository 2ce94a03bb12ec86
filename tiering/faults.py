"""Named crash points, for fault tests that kill a real process at a chosen step.

``TIERING_CRASH_AT=after_verify`` (or ``after_verify:3`` for the third time the point is reached) makes the
process SIGKILL itself there: no cleanup, no ``finally``, exactly like a power cut or the OOM killer.
Unset, a crash point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import threading

#: every named point, in the order a move reaches them
CRASH_POINTS = (
    "after_plan",  # job and steps written, no byte moved
    "during_copy",  # inside a member's upload, part of its bytes sent
    "after_copy",  # a member's bytes written, not yet recorded as verified
    "after_verify",  # some steps verified, others not yet copied
    "before_commit",  # every step verified, catalog still points at the source
    "after_commit",  # catalog points at the destination, source not deleted
    "during_delete",  # some source copies deleted
    "after_delete",  # all source copies deleted, job not yet marked done
    "restore_after_copy",  # a restore copied bytes, request not yet ready
)
#: points of a registration (not a move's)
REGISTER_CRASH_POINTS = (
    "register_after_upload",  # every member uploaded, no manifest, the dataset row still "registering"
)

_counts: dict[str, int] = {}
_lock = threading.Lock()


def _target() -> tuple[str, int] | None:
    spec = os.environ.get("TIERING_CRASH_AT")
    if not spec:
        return None
    name, _, nth = spec.partition(":")
    return name, int(nth) if nth else 1


def crash_point(name: str) -> None:
    """SIGKILL this process if ``TIERING_CRASH_AT`` names this point (and its count is reached)."""
    target = _target()
    if target is None or target[0] != name:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        hit = _counts[name] == target[1]
    if hit:
        os.kill(os.getpid(), signal.SIGKILL)


def crash_armed(name: str) -> bool:
    target = _target()
    return target is not None and target[0] == name
