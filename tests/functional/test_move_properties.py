"""Property: any sequence of register / move / interrupted move / resume keeps every member readable.

An interruption is a :class:`SimulatedCrash` (a BaseException, so nothing catches it on the way up)
raised by a fault-injecting backend at a random operation: inside an upload, a read-back, a manifest
write or a source delete. The crashed worker's leases are then left to expire on a fixed clock, and a new
worker resumes. After every step each member has a copy whose bytes hash to the catalog digest.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import uuid
from pathlib import Path
from typing import Any

from helpers import FixedClock, check_invariant, make_tree, open_app, workspace_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiering import datasets, registration
from tiering.storage.base import Backend, delete_each
from tiering.storage.memory import MemoryBackend

TIERS = ("hot", "warm", "cold")


class SimulatedCrash(BaseException):
    """Stands for a kill -9: not an Exception, so no handler on the way up swallows it."""


class CrashAfter:
    """Backend wrapper raising SimulatedCrash on the n-th put/open_read/delete while armed."""

    def __init__(self, inner: Backend, budget: dict[str, int | None]) -> None:
        self.inner = inner
        self.url = inner.url
        self.budget = budget

    def _tick(self) -> None:
        left = self.budget["left"]
        if left is None:
            return
        if left <= 0:
            self.budget["left"] = None
            raise SimulatedCrash()
        self.budget["left"] = left - 1

    def put(self, key: str, body: Any, **kw: Any) -> bool:
        self._tick()
        return self.inner.put(key, body, **kw)

    def open_read(self, key: str, **kw: Any) -> Any:
        self._tick()
        return self.inner.open_read(key, **kw)

    def delete(self, key: str) -> None:
        self._tick()
        self.inner.delete(key)

    def delete_many(self, keys: Any) -> Any:
        return delete_each(self, keys)  # a crash may come between any two keys

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("register"), st.integers(0, 2), st.sampled_from(TIERS)),
        st.tuples(st.just("move"), st.integers(0, 2), st.sampled_from(TIERS)),
        st.tuples(st.just("crash_move"), st.integers(0, 2), st.sampled_from(TIERS), st.integers(0, 25)),
        st.tuples(st.just("resume")),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_any_sequence_of_moves_crashes_and_resumes_keeps_every_member_verified(sequence: list[tuple[Any, ...]]) -> None:
    run = uuid.uuid4().hex[:8]
    budget: dict[str, int | None] = {"left": None}
    clock = FixedClock(dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        tiers = {n: {"rank": r, "backend": f"memory://{run}-{n}"} for r, n in enumerate(TIERS)}
        data = workspace_config(tmp_path, tiers=tiers, transfer={"workers": 2, "lease_seconds": 60})
        app = open_app(data, clock=clock, backend_wrapper=lambda _t, b: CrashAfter(b, budget))
        registered: set[int] = set()
        try:
            for op in sequence:
                kind = op[0]
                clock.advance(minutes=5)
                if kind == "register":
                    _, i, tier = op
                    src = tmp_path / f"src{i}"
                    if not src.exists():
                        make_tree(src, 4, seed=i, max_size=3000)
                    registration.register(app, str(src), name=f"d{i}", version="1", tier=tier)
                    registered.add(i)
                elif kind in ("move", "crash_move") and op[1] in registered:
                    label, tier = f"d{op[1]}@1", op[2]
                    if datasets.resolve(app, label, record=False).tier == tier:
                        continue
                    if kind == "crash_move":
                        budget["left"] = op[3]
                    try:
                        datasets.move(app, label, to=tier)
                    except SimulatedCrash:
                        pass
                    except Exception as exc:  # an unfinished job from an earlier crash blocks a new move
                        assert "unfinished move job" in str(exc), exc
                    finally:
                        budget["left"] = None
                elif kind == "resume":
                    clock.advance(minutes=2)  # past the crashed worker's lease
                    datasets.resume(app)
                report = check_invariant(app, allow_stray=True)
                assert report.problems == [], (op, report.problems)
            clock.advance(minutes=2)
            datasets.resume(app)
            final = check_invariant(app)
            assert final.problems == [], final.problems
        finally:
            app.close()
            for n in TIERS:
                MemoryBackend(f"{run}-{n}")._objects.clear()
