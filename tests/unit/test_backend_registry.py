"""A backend kind is its own module plus one ``register_scheme`` call: a dict-backed kind defined here, in the
test suite, is opened, registered into and moved to through the normal App without any other change."""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import pytest
from helpers import check_invariant, make_tree, open_app, read_all, workspace_config

from tiering import datasets, registration
from tiering.config import TierConfig, TransferConfig
from tiering.errors import BackendError, ConfigError, ObjectNotFound
from tiering.storage import Backend, open_backend, register_scheme
from tiering.storage.base import Location, ObjectInfo, ReadStream, check_key, delete_each
from tiering.storage.registry import registered_schemes, unregister_scheme


class ToyBackend:
    """Objects in a dict shared by every ``toy://NAME`` backend of one NAME."""

    stores: dict[str, dict[str, tuple[bytes, dict[str, str]]]] = {}
    lock = threading.Lock()

    def __init__(self, name: str) -> None:
        self.url = f"toy://{name}"
        with self.lock:
            self.objects = self.stores.setdefault(name, {})

    def put(
        self, key: str, body: BinaryIO | ReadStream, *, size: int | None = None,
        metadata: Mapping[str, str] | None = None, content_xxh3: str | None = None,
    ) -> bool:
        data = body.read()
        with self.lock:
            self.objects[check_key(key)] = (data, dict(metadata or {}))
        return False  # nothing checked here: the copier reads the copy back

    def open_read(self, key: str, *, offset: int = 0, length: int | None = None) -> ReadStream:
        data = self._get(key)[0]
        return io.BytesIO(data[offset:] if length is None else data[offset:offset + length])

    def head(self, key: str) -> ObjectInfo:
        data, meta = self._get(key)
        return ObjectInfo(key=key, size=len(data), metadata=meta)

    def _get(self, key: str) -> tuple[bytes, dict[str, str]]:
        with self.lock:
            found = self.objects.get(check_key(key))
        if found is None:
            raise ObjectNotFound(key, backend=self.url)
        return found

    def delete(self, key: str) -> None:
        with self.lock:
            self.objects.pop(check_key(key), None)

    def delete_many(self, keys: Sequence[str]) -> dict[str, BackendError]:
        return delete_each(self, keys)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self.lock:
            items = sorted((k, len(v[0])) for k, v in self.objects.items() if k.startswith(prefix))
        for key, size in items:
            yield ObjectInfo(key=key, size=size)

    def abort_incomplete(self, prefix: str = "") -> int:
        return 0

    def locate(self, key: str) -> Location:
        return Location(kind="toy", url=f"{self.url}/{key}", key=key)

    def close(self) -> None:
        pass


def open_toy(name: str, tier: TierConfig, transfer: TransferConfig) -> Backend:
    return ToyBackend(tier.backend[len("toy://"):] or name)


@pytest.fixture
def toy_scheme() -> Iterator[None]:
    register_scheme("toy", open_toy)
    yield
    unregister_scheme("toy")


def test_a_tier_of_a_kind_registered_by_the_test_suite_takes_a_registration_and_a_move(
    toy_scheme: None, tmp_path: Path
) -> None:
    store = f"toy-{uuid.uuid4().hex[:8]}"
    tiers = {
        "hot": {"rank": 0, "backend": (tmp_path / "tiers" / "hot").as_uri()},
        "cold": {"rank": 1, "backend": f"toy://{store}"},
    }
    files = make_tree(tmp_path / "src", 12, seed=5)
    app = open_app(workspace_config(tmp_path, tiers=tiers))
    try:
        assert isinstance(app.backend("cold"), ToyBackend)
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
        outcome = datasets.move(app, "d@1", to="cold")
        assert outcome.state == "done"
        assert datasets.resolve(app, "d@1").tier == "cold"
        cold = app.backend("cold")
        for rel, data in files.items():
            assert read_all(cold, f"dataset/d/1/{rel}") == data
        assert [i.key for i in app.backend("hot").list("dataset/")] == []
        assert check_invariant(app).problems == []
    finally:
        app.close()
        ToyBackend.stores.pop(store, None)


def test_a_scheme_no_kind_registered_is_refused_by_the_config_and_by_open_backend(tmp_path: Path) -> None:
    assert "toy" not in registered_schemes()
    with pytest.raises(ConfigError, match="expected a URL starting with one of file://, memory://, s3://"):
        open_app(workspace_config(tmp_path, tiers={"cold": {"rank": 0, "backend": "toy://x"}}))
    tier = TierConfig.model_construct(backend="toy://x")
    with pytest.raises(ValueError, match="unsupported backend URL"):
        open_backend("cold", tier, TransferConfig())
